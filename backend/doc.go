// Package backend is the Postgres side of fetchq-proxy: it runs the Fetchq
// 4.0.2 queue functions (fetchq.doc_push, fetchq.doc_pick, ...) in Go
// against plain tables in the upstream Postgres, where the original is a
// PL/pgSQL extension. No extension is installed upstream; the only server-side
// code is three small trigger functions that deliver notifications.
//
// # Layers
//
//   - [DB] is the seam: where an operation's statements run (the proxy's
//     service pool through [PoolDB], or a client's own upstream connection).
//   - [Store] holds the operations, one method per Fetchq function family,
//     each taking a context, a DB and a …Params struct and returning a typed
//     result. [Store.Invoke] dispatches a resolved overload ID (see
//     [Overloads]) with its arguments as the proxy received them and returns
//     the rows the extension would return, in text format.
//   - schema.go and the embedded sql/ files create the system tables
//     (fetchq.queues, fetchq.jobs, fetchq.metrics, fetchq.metrics_writes) and
//     the per-queue tables fetchq_data.<q>__docs, __logs and __metrics with
//     the same names, columns, types, defaults and indexes as Fetchq 4.0.2, so
//     clients and consoles that read or update those tables keep working.
//
// # Faithful, except where the original is broken
//
// Results, field effects and return conventions follow the behavioural
// specification (shared/fetchq-spec.md, sections 2 and 7). Deviations, all
// allowed by that document's "may improve" list, are:
//
//   - No value is spliced into SQL text. Values travel as $n parameters;
//     table and index names are built only from validated queue names and
//     quoted with pgx.Identifier. DDL statements, which cannot take
//     parameters, additionally contain int32 values rendered by strconv
//     (index predicates on version and max_attempts). Values containing
//     quotes are stored as they are.
//   - Queue names are folded to lower case (ASCII) and must then match
//     ^[a-z_][a-z0-9_]{0,39}$. `Bar` and `bar` are the same queue everywhere:
//     tables, registry row, jobs, metrics and notification channels.
//     A name that cannot be valid behaves like a queue that does not exist.
//   - JSON payload and details arguments are de-doubled once (each pair
//     of single quotes becomes one) before they are stored, which is what
//     the extension's double parsing does to the Node client's quoting
//     convention; see [DedoubleQuotes].
//   - The push-many form of doc_push parses its VALUES list itself instead
//     of executing it (see [ParsePushData]).
//   - doc_pick returns its rows in pick order (priority DESC, next_iteration
//     ASC, attempts ASC, subject ASC); queue_top and queue_status are
//     ordered too.
//   - queue_create never returns the id of a rolled-back registry row.
//   - init() is idempotent; see [Store.Init] for its return value.
//   - Broken functions work: queue_set_metrics_retention updates the queue,
//     queue_drop_metrics applies the retention rules, index maintenance uses
//     the real index names.
//   - A catch-all function (one that returns 0, NULL or false on error in
//     the extension) still reports insufficient_privilege (42501) and
//     query_canceled (57014) as errors, and never swallows connection
//     failures. A role without rights on a queue's tables gets 42501 on every
//     path.
//   - A NULL argument where a value is required makes a catch-all function
//     return its failure value and a raising function fail with 22004
//     (null_value_not_allowed) instead of a syntax error. Where 4.0.2 gives
//     NULL a working meaning it is kept: doc_pick's limit (no limit) and
//     duration (next_iteration NULL), the boolean of queue_truncate
//     (false), the subject and message of log_error and doc_reject (stored
//     as empty strings), doc_reject's details (no log row). Invoke applies
//     these rules; the Params types document the typed equivalents.
//
// # Transactions
//
// Every operation that issues more than one statement runs them inside
// [DB.Atomic], so a failure leaves nothing half-done. Catch-all functions
// always run inside Atomic (a SAVEPOINT on a client's connection), so their
// failure leaves a client's transaction usable, exactly like the PL/pgSQL
// sub-transaction of the original; a single-statement catch-all skips Atomic
// when the DB reports [Autocommitter] (each statement is its own
// transaction, nothing to undo). now() is PostgreSQL's transaction
// timestamp: time arguments ([Time]) are evaluated inside the operation's
// statements, so every call in one transaction sees the same now(), as with
// the extension.
//
// # Metrics
//
// Operations do not write fetchq.metrics_writes rows (a row per counter per
// operation is the extension's main cost). Each mutating operation reports
// the counter changes it made as [Effects] in its result, exactly the writes
// of the specification's §2.8 table, for a caller to apply once the
// transaction has committed. The operations that reset counters the way
// metric_reset does (queue_truncate, queue_truncate_all) write the zeroed
// gauges to fetchq.metrics themselves and report an [EffectReset]; so do
// queue_drop and destroy, which delete a queue's counters.
//
// # Notifications
//
// queue_create and queue_drop emit fetchq_queue_create / fetchq_queue_drop
// with pg_notify in their transaction. The fetchq_on_change trigger on
// fetchq.queues and the per-queue docs triggers installed by
// queue_enable_notify (channels fetchq__<q>__<event>) are real database
// triggers; PostgreSQL delivers their notifications on commit.
//
// See https://www.postgresql.org/docs/current/sql-notify.html and
// https://www.postgresql.org/docs/current/functions-datetime.html#FUNCTIONS-DATETIME-CURRENT.
package backend
