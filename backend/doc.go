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
//     (index predicates on version and max_attempts), and so does the
//     Batcher's pick statement, whose predicate must name the version as
//     its pick index does to be planned once (see pickBatchSQL). Values
//     containing quotes are stored as they are.
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
//     the real index names, metric_get_total sums the counter over all
//     queues, metric_get_all fills drp, metric_compute and metric_reset
//     count act.
//   - Counters are 64-bit end to end (4.0.2 passed them through integer);
//     the functions whose result column is integer print the 64-bit value.
//     fetchq.metrics has a unique (queue, metric) key (init() merges
//     existing duplicates, summing them), every counter write is an upsert
//     on it, and metric_log_pack consumes each fetchq.metrics_writes row
//     exactly once even when packs run concurrently.
//   - Maintenance never waits for workers (FOR UPDATE SKIP LOCKED),
//     mnt_make_pending promotes documents due at now() (<=, like push and
//     pick), mnt_run runs its three steps as one statement, and mnt_job_run
//     runs each job in a savepoint: a failing job is logged and retried
//     after its claim expires instead of rolling back the call and
//     stalling all maintenance. Job runs set jobs.last_iteration.
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
// # Arguments and privileges
//
// [Store.Invoke] converts argument text as the extension's parameter types
// would: integers and booleans in Go, with Postgres' messages; jsonb text
// by a single Go scan that vouches for plain JSON (nearly every payload,
// no extra statement) and otherwise by Postgres' own jsonb input on the
// call's connection, so a refused payload gets exactly Postgres' SQLSTATE
// and message. Postgres checks USAGE on schema fetchq before it runs any
// function of the extension; Invoke runs that check itself where the call
// would otherwise answer without a statement (info(), an invalid queue
// name, a NULL argument) or fail on an argument.
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
// of the specification's §2.8 table, for the caller to apply to a [Metrics]
// once the transaction has committed (and to drop if it rolled back). A
// Metrics keeps one 64-bit delta per (queue, metric) in memory; the
// [Maintainer] flushes them into fetchq.metrics with one upsert every
// FlushInterval (1s) and when it stops. A clean shutdown therefore loses
// nothing; a crash loses the deltas applied since the last flush, at most
// one flush interval of event counters (the gauges can be recounted with
// metric_reset; metric_compute always counts the documents).
//
// The metric_* reads of a Store (metric_get, metric_get_common,
// metric_get_all, metric_get_total, metric_snap) include the pending deltas
// of the Store's Metrics: in autocommit they flush first, inside a client's
// transaction they add the deltas to what they read without writing. So
// counters are exact for the work committed through this process, with no
// pack needed, and the work of other proxies is visible once they flushed
// (within a second). The operations that reset counters the way
// metric_reset does (metric_reset, queue_truncate, queue_truncate_all,
// queue_drop, destroy) write fetchq.metrics themselves and report an
// [EffectReset], which discards the pending deltas of the queue.
//
// The log functions (metric_log_set, _increment, _decrement) keep 4.0.2's
// model for the clients that use them: rows in fetchq.metrics_writes that
// metric_log_pack applies (resets, then every increment; rows dated in the
// future wait). metric_log_pack also flushes the pending deltas and counts
// them in its result as the rows 4.0.2 would have logged.
//
// # Maintenance
//
// A [Maintainer] runs in every proxy. The proxies elect a leader with a
// session advisory lock (pg_try_advisory_lock) held on a dedicated
// connection; when the leader's connection dies Postgres releases the lock
// and another maintainer takes it within LeaderRetry (1s). Every Interval
// (250ms) the leader runs a pass: for each registered queue, one statement
// marks expired locks at max_attempts dead, requeues the other expired
// locks (their attempt stays counted) and makes due planned documents
// pending, limited by the queue's mnt job settings.limit; a failing queue
// is logged and skipped. Then the due lgp, sts, drp and cmp jobs of
// fetchq.jobs run, each in its own transaction, and the jobs rows are
// updated as mnt_job_run would, so clients that schedule their own daemons
// from fetchq.jobs keep working (their mnt_job_run calls, intercepted,
// share the same code). The mnt_* functions are available for clients that
// call them; nobody needs to.
//
// # Notifications
//
// queue_create and queue_drop emit fetchq_queue_create / fetchq_queue_drop
// with pg_notify in their transaction. The fetchq_on_change trigger on
// fetchq.queues and the per-queue docs triggers installed by
// queue_enable_notify (channels fetchq__<q>__<event>) are real database
// triggers; PostgreSQL delivers their notifications on commit, including
// the fetchq__<q>__pnd of a document the Maintainer makes pending.
//
// See https://www.postgresql.org/docs/current/sql-notify.html and
// https://www.postgresql.org/docs/current/functions-datetime.html#FUNCTIONS-DATETIME-CURRENT.
package backend
