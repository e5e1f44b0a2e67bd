package backend

import "errors"

// Error is an error this package raises itself, with the SQLSTATE a client
// should see (https://www.postgresql.org/docs/current/errcodes-appendix.html).
// Errors that come from Postgres are *pgconn.PgError and pass through
// unchanged; both satisfy interface{ SQLState() string }.
type Error struct {
	// Code is the SQLSTATE, e.g. "22P02".
	Code string
	// Message is the primary message, worded like Postgres' own.
	Message string
	// Detail is an optional secondary message.
	Detail string
	// Hint is an optional suggestion.
	Hint string

	// kind is the sentinel errors.Is matches, or nil.
	kind error
}

// Error returns the message with its SQLSTATE.
func (e *Error) Error() string {
	return e.Message + " (SQLSTATE " + e.Code + ")"
}

// SQLState returns the SQLSTATE code, like pgconn.PgError.SQLState.
func (e *Error) SQLState() string { return e.Code }

// Is reports whether e is an instance of the sentinel target, e.g.
// errors.Is(err, ErrQueueNotFound).
func (e *Error) Is(target error) bool { return e.kind != nil && target == e.kind }

// Sentinels matched by errors.Is on the *Error values this package returns.
var (
	// ErrQueueNotFound matches the 42P01 error a raising function (doc_reschedule,
	// doc_reject, doc_drop, queue_top, queue_truncate, queue_enable_notify, ...)
	// returns for a queue name that cannot exist. When the name is valid but the
	// tables are missing, Postgres itself reports 42P01 (a *pgconn.PgError).
	ErrQueueNotFound = errors.New("backend: queue not found")

	// ErrInvalidQueueName matches the 42602 error of queue_get_id for a name
	// that is not a valid queue name.
	ErrInvalidQueueName = errors.New("backend: invalid queue name")

	// ErrUnknownOverload matches the 42883 error of Invoke for an overload ID
	// that is not in Overloads, or a call with the wrong number of arguments.
	ErrUnknownOverload = errors.New("backend: unknown function overload")

	// ErrInvalidArgument matches the errors Invoke and the operations return
	// for argument text the Postgres type would reject (22P02, 22003) and for
	// NULL where a value is required (22004).
	ErrInvalidArgument = errors.New("backend: invalid argument")
)

// SQLSTATE codes used by this package.
const (
	codeUndefinedTable       = "42P01"
	codeInvalidColumnRef     = "42P10"
	codeInvalidName          = "42602"
	codeUndefinedFunction    = "42883"
	codeDatatypeMismatch     = "42804"
	codeInvalidText          = "22P02"
	codeOutOfRange           = "22003"
	codeNullNotAllowed       = "22004"
	codeStringTooLong        = "22001"
	codeRaiseException       = "P0001"
	codeInsufficientPrivs    = "42501"
	codeQueryCanceled        = "57014"
	codeInvalidParameterVal  = "22023"
	codeInvalidDatetimeFmt   = "22007"
	codeDatetimeOverflow     = "22008"
	codeInvalidTZDisplace    = "22009"
	codeInvalidIntervalField = "22015"
)

// errSubjectTooLong is doc_push's re-raised 22001 (spec §2.3).
func errSubjectTooLong() *Error {
	return &Error{Code: codeRaiseException, Message: "The subject exceeds 50 characters limit"}
}

// errNoQueue is the error raising functions return for a queue name that
// cannot exist: what Postgres says for a missing docs table.
func errNoQueue(name, suffix string) *Error {
	return &Error{
		Code:    codeUndefinedTable,
		Message: `relation "fetchq_data.` + name + suffix + `" does not exist`,
		kind:    ErrQueueNotFound,
	}
}

// errNull is the error of a raising function called with NULL where it needs
// a value.
func errNull(fn, param string) *Error {
	return &Error{
		Code:    codeNullNotAllowed,
		Message: "fetchq." + fn + ": argument " + param + " must not be NULL",
		kind:    ErrInvalidArgument,
	}
}

// errInvalidJSON is the error Postgres raises for text that is not JSON.
func errInvalidJSON(detail string) *Error {
	return &Error{
		Code:    codeInvalidText,
		Message: "invalid input syntax for type json",
		Detail:  detail,
		kind:    ErrInvalidArgument,
	}
}

// errInvalidInput is Postgres' message for text a type's input function
// rejects.
func errInvalidInput(typ, text string) *Error {
	return &Error{
		Code:    codeInvalidText,
		Message: "invalid input syntax for type " + typ + `: "` + text + `"`,
		kind:    ErrInvalidArgument,
	}
}
