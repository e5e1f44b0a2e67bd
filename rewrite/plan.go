package rewrite

// This file is the contract between rewrite and its callers: the Plan value
// that says what a statement text asks for. No pg_query type appears here.

// Plan is what one statement text (one Query message, or one Parse) asks the
// proxy to do. Plans are immutable and shared through the Rewriter's cache:
// callers must not modify them.
type Plan struct {
	// Statements holds the text's statements in order. A text with no
	// statement (empty, only comments or semicolons) has none.
	Statements []Statement

	// HasCall reports whether any statement is a Fetchq call (or has an
	// Err). When false the whole text can be forwarded unchanged.
	HasCall bool

	// ParamTypes are the type OIDs of $1..$N as Postgres would infer them
	// for the Fetchq call (from the resolved overload's argument types), for
	// ParameterDescription. Index 0 is $1. Nil when there is no call or no
	// parameter. A $n cast in the call ($1::int) has the cast's type;
	// with RewriteWithParamTypes a declared type is kept as declared.
	// Parameters only exist in the extended protocol: a simple Query whose
	// Plan has ParamTypes must fail as Postgres fails it (42P02, "there is
	// no parameter $1").
	ParamTypes []uint32
}

// Statement is one statement of a Plan.
type Statement struct {
	// SQL is the statement's own text, without the trailing semicolon, as
	// it appeared in the input (comments inside it kept, surrounding
	// whitespace trimmed). Forwarded statements are sent as this text.
	// It may end with a -- comment: append a newline before joining
	// anything after it.
	SQL string

	// Call is the Fetchq call the statement makes, or nil when the
	// statement is to be forwarded unchanged (or when Err is set).
	Call *Call

	// TxControl reports a transaction-control statement (BEGIN, START
	// TRANSACTION, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE,
	// PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED), forwarded as is: a
	// caller must not wrap a text holding one in a transaction of its own.
	TxControl bool

	// Err, when non-nil, is the *Error running this statement must report
	// (a Fetchq call that cannot be honoured, no matching overload, ...).
	// As in Postgres, the statements before it run first.
	Err error
}

// Call is a resolved call of one Fetchq function overload.
type Call struct {
	// Func is the catalog entry of the overload Postgres would pick.
	Func *Function

	// Args has one entry per argument of Func, in declaration order.
	Args []Arg

	// Columns are the result columns the statement returns, in order, with
	// the names the client sees (aliases applied). For
	// `SELECT * FROM fetchq.f(...)` they are all of Func.Out. For
	// `SELECT fetchq.f(...)` there is one column named after the function
	// (or its alias): Source -1 and, when Func has several output columns,
	// Composite true (the value is a record like "(t,1)", type OID 2249).
	// `SELECT FROM fetchq.f(...)` has none.
	Columns []OutputColumn
}

// OutputColumn is one column of a Call's result.
type OutputColumn struct {
	Name string
	// Source is the index in Func.Out of the value, or -1 for the whole
	// row (a Composite column, or the single value of a scalar function
	// called in the select list).
	Source    int
	TypeOID   uint32
	Composite bool
}

// ArgKind says where an argument's value comes from.
type ArgKind int

const (
	// ArgConst is a literal (possibly cast): Text holds its value as
	// Postgres would decode the literal (quotes removed, '' collapsed,
	// E-string escapes applied), e.g. "5m", "42", `{"a":1}`.
	ArgConst ArgKind = iota
	// ArgNull is SQL NULL (possibly cast).
	ArgNull
	// ArgParam is a bind parameter: Param is its 1-based number.
	ArgParam
	// ArgNow is the transaction timestamp NOW() (also CURRENT_TIMESTAMP,
	// now(), transaction_timestamp()), optionally plus or minus an interval:
	// Text holds the interval literal ("" for none), Negative the sign.
	ArgNow
	// ArgEpoch is to_timestamp(<constant numeric expression>): Text holds
	// the number of seconds since the Unix epoch as a decimal string, as
	// the Node client sends for JavaScript dates.
	ArgEpoch
)

// Arg is one argument of a Call.
type Arg struct {
	Kind     ArgKind
	Text     string
	Param    int
	Negative bool
}

// Type is a Postgres type the catalog uses, by OID.
type Type uint32

// Type OIDs used by Fetchq function signatures.
const (
	TypeBool        Type = 16
	TypeInt8        Type = 20
	TypeInt4        Type = 23
	TypeText        Type = 25
	TypeJSONB       Type = 3802
	TypeVarchar     Type = 1043
	TypeTimestamptz Type = 1184
	TypeUUID        Type = 2950
	TypeRecord      Type = 2249
	TypeVoid        Type = 2278
)

// ReturnKind says how a function returns its output columns.
type ReturnKind int

const (
	// ReturnScalar: a single OUT parameter; one row, one value.
	ReturnScalar ReturnKind = iota
	// ReturnRecord: several OUT parameters; exactly one row.
	ReturnRecord
	// ReturnSet: RETURNS SETOF / TABLE; zero or more rows.
	ReturnSet
)

// Param is one declared argument of a Function.
type Param struct {
	Name string
	Type Type
}

// Column is one output column of a Function.
type Column struct {
	Name string
	Type Type
}

// Function is one overload of a Fetchq function, as Fetchq 4.0.2 declares
// it.
type Function struct {
	// Name is the function name without schema, e.g. "doc_pick".
	Name string
	// ID names the overload uniquely, e.g. "doc_pick(varchar,integer,integer,varchar)".
	ID      string
	Args    []Param
	Out     []Column
	Returns ReturnKind
}
