package rewrite

import "errors"

// Error is an error Postgres would report for a statement text, or the
// proxy's own refusal of a Fetchq call it cannot honour. It carries a
// SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html)
// so the proxy can send it as an ErrorResponse: it implements
// interface{ SQLState() string }.
//
// The codes used are:
//
//   - 0A000 feature_not_supported: a Fetchq function called in a shape the
//     proxy cannot run (in a CTE, a join, a WHERE clause, EXPLAIN, a DO
//     block...), with a Hint showing the supported form;
//   - 42883 undefined_function and 42725 ambiguous_function: overload
//     resolution failed, with Postgres' own messages;
//   - 42601 syntax_error: the text does not parse (errors.Is(err,
//     ErrSyntax) reports it), and a few grammar-level refusals;
//   - 22021, 22P02, 22003, 22007, 22008, 22012, 22023, 42P02, 42P08,
//     42P18, 42702, 42703, 42P01, 42P10, 42846, 54001, 54023: the data and
//     semantic errors Postgres raises for the same text. Postgres raises
//     some of them (division by zero, out of range) only when it runs the
//     statement; the rewriter reports them when planning, without a
//     Position, as Postgres does.
//
// Errors are shared through the Rewriter's cache: do not modify them.
type Error struct {
	// Code is the SQLSTATE, e.g. "0A000".
	Code string
	// Message is the primary message, worded as Postgres words its own.
	Message string
	// Detail is an optional secondary message.
	Detail string
	// Hint optionally suggests what to write instead.
	Hint string
	// Position is the 1-based character (not byte) offset in the whole
	// statement text the error refers to, or 0, as in an ErrorResponse.
	Position int

	syntax bool
}

// ErrSyntax is matched by errors.Is for an *Error saying that the text
// does not parse. A proxy that prefers Postgres' own syntax errors may
// forward such a text instead of reporting the Error.
var ErrSyntax = errors.New("rewrite: syntax error")

// Error formats the error like pgconn.PgError does.
func (e *Error) Error() string {
	return "ERROR: " + e.Message + " (SQLSTATE " + e.Code + ")"
}

// SQLState returns the error's SQLSTATE code.
func (e *Error) SQLState() string { return e.Code }

// Is reports whether target is ErrSyntax and e is a syntax error.
func (e *Error) Is(target error) bool { return target == ErrSyntax && e.syntax }
