// Package rewrite decides, for one statement text a client sends, which
// statements are calls of Fetchq functions that the proxy runs itself and
// which are forwarded to Postgres unchanged. It is pure: SQL text in, a
// Plan value out. It never talks to a database, and it is the only package
// that imports pg_query_go (Postgres' own parser, through cgo); no
// pg_query type crosses its API.
//
// # Pipeline
//
// (*Rewriter).Rewrite takes the whole string of a Query message (or of a
// Parse message) and goes through these steps:
//
//  1. Pre-filter. A text that does not contain "fetchq" in any letter case
//     cannot call a Fetchq function: it gets a shared Plan with HasCall
//     false, without parsing and without allocating. The caller forwards
//     the whole text. (A call written only through search_path, such as
//     SET search_path = fetchq; SELECT doc_pick('q'), is forwarded too and
//     fails in Postgres: the functions do not exist there.)
//  2. Cache. Plans, and errors, are kept in an LRU keyed by the text. A hit
//     costs a map lookup under a mutex and allocates nothing. A miss tries
//     the shape cache (shape.go): texts that differ only in bare literal
//     arguments, as clients that splice values write them, share one plan,
//     found with Postgres' scanner rather than its parser.
//  3. Parse. pg_query parses the text exactly as Postgres 16 does; a
//     syntax error is reported for the whole text (42601), since Postgres
//     parses a whole Query message before running any of it. Statements
//     are split with the parser's stmt_location/stmt_len, so each keeps
//     its original text (comments included).
//  4. Classify each statement:
//     - no call of a fetchq.* function anywhere in its tree: forwarded
//     (Statement.Call nil). That covers SELECTs and DML on fetchq.queues,
//     fetchq.jobs, fetchq_data.*, NOTIFY fetchq__q__pnd, and DDL that names
//     Fetchq functions without calling them (CREATE/DROP FUNCTION fetchq.x,
//     the extension's own script);
//     - one of the supported shapes (below): a Call;
//     - any other statement calling a fetchq.* function, or a DO block or
//     function body (outside the fetchq schema) whose text calls one: a
//     0A000 Error with a hint showing the supported form. The functions do
//     not exist in the database, so forwarding would only fail later, or,
//     if a real Fetchq extension is installed there, silently run the
//     other implementation.
//  5. Evaluate arguments and resolve the overload the way Postgres does
//     (resolve.go), then coerce every argument to its parameter's type
//     (untyped literals are checked by the type's input rules for
//     integers and booleans; untyped $n take the parameter's type).
//  6. Compute the output columns the client sees and the types of the
//     parameters $1..$N (Plan.ParamTypes, for ParameterDescription).
//
// # Supported shapes
//
//	SELECT * FROM fetchq.f(args)
//	SELECT fetchq.f(args) [[AS] alias]
//	SELECT col, x.col AS c, x.*, * FROM fetchq.f(args) [AS] x[(colaliases)]
//	SELECT FROM fetchq.f(args)
//
// with schema and function names quoted or not (unquoted names fold to
// lower case, as in Postgres), comments and whitespace anywhere, and an
// optional trailing semicolon. Arguments may be string literals (standard,
// E'...', U&'...', dollar-quoted), numeric literals, true/false, NULL, $n,
// casts of those ('{}'::jsonb, CAST(x AS int), '5m'::varchar(10),
// $1::int), NOW(), CURRENT_TIMESTAMP or transaction_timestamp() optionally
// plus or minus an interval literal, to_timestamp(<numeric constant
// expression>) folded exactly (ArgEpoch), and constant arithmetic on
// numbers. Everything else (columns, subqueries, other functions) is
// refused with 0A000.
//
// # Errors
//
// Errors are *Error values carrying a SQLSTATE; see its documentation and
// that of Rewrite for which errors reject the whole text and which belong
// to one statement (Statement.Err).
//
// # Concurrency
//
// A Rewriter is safe for concurrent use; Plans, Calls and Functions are
// immutable and shared.
package rewrite
