package backend

import (
	"context"
	"strings"
)

// The metric_* functions (spec §2.4, §3.4). Counters live in fetchq.metrics,
// one row per (queue, metric) under a unique key; the document operations
// report their changes as Effects, which the proxy keeps in a [Metrics]
// until it flushes them, instead of logging rows to fetchq.metrics_writes.
// The log functions (metric_log_set, _increment, _decrement) and
// metric_log_pack keep the extension's log semantics for clients that use
// them directly. Values are 64-bit everywhere; the functions whose 4.0.2
// result column is integer print the 64-bit value there.
//
// Queue names are folded to lower case, as everywhere in this package; the
// functions that only touch fetchq.metrics and fetchq.metrics_writes accept
// any name, like 4.0.2 (the columns are varchar(40)).

// commonMetrics are the 14 counters of metric_get_common, in column order.
var commonMetrics = []string{
	MetricCnt, MetricPnd, MetricPln, MetricAct, MetricCpl, MetricKll, MetricEnt,
	MetricDrp, MetricPkd, MetricPrc, MetricRes, MetricRej, MetricOrp, MetricErr,
}

// commonSelect aggregates the counters of view c into commonMetrics columns.
var commonSelect = func() string {
	parts := make([]string, len(commonMetrics))
	for i, m := range commonMetrics {
		parts[i] = "max(c.value) FILTER (WHERE c.metric = '" + m + "')"
	}
	return strings.Join(parts, ", ")
}()

// counterFilter selects counters: of one queue and/or one metric, or all.
type counterFilter struct {
	queue, metric *string
}

func (f counterFilter) match(k metricKey) bool {
	return (f.queue == nil || k.queue == *f.queue) && (f.metric == nil || k.metric == *f.metric)
}

// isAutocommit reports whether db runs each statement as its own
// transaction.
func isAutocommit(db DB) bool {
	ac, ok := db.(Autocommitter)
	return ok && ac.Autocommit()
}

// withCounters runs fn with a CTE prefix ("WITH ... c AS (...) ") whose
// view c(queue, metric, value, updated_at) holds the fetchq.metrics rows
// that f selects with this process's pending deltas added (counters that
// only have a delta included, updated now()), and, inside a transaction,
// those of the transaction itself (WithTxEffects). In autocommit it first
// flushes the deltas to db (a failure is logged and the deltas are added
// instead); inside a transaction it never writes, because a flush there is
// lost if the transaction rolls back. No flush runs while fn does, so a
// delta is counted exactly once. fn adds its own parameters to a.
//
// In a REPEATABLE READ or SERIALIZABLE transaction, deltas flushed after its
// snapshot was taken are not seen.
func (s *Store) withCounters(ctx context.Context, db DB, f counterFilter, fn func(cte string, a *args) error) error {
	m := s.metrics
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	var tx Effects
	if isAutocommit(db) {
		if _, err := m.flushLocked(ctx, db); err != nil {
			s.logger.DebugContext(ctx, "fetchq: flushing metric deltas before a read failed; reading with the deltas added", "error", err)
		}
	} else {
		tx = txEffects(ctx)
	}
	var a args
	var where []string
	if f.queue != nil {
		where = append(where, "queue = "+a.add(*f.queue)+"::text")
	}
	if f.metric != nil {
		where = append(where, "metric = "+a.add(*f.metric)+"::text")
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	cte := "WITH p AS (SELECT x.q, x.m, x.v FROM jsonb_to_recordset(" + a.add(encodePending(m.snapshot(f.match, tx))) +
		"::jsonb) AS x(q text, m text, v bigint))," +
		" t AS (SELECT queue, metric, value, updated_at FROM fetchq.metrics" + cond + ")," +
		" c AS (SELECT COALESCE(t.queue, p.q) AS queue, COALESCE(t.metric, p.m) AS metric," +
		" COALESCE(t.value, 0) + COALESCE(p.v, 0) AS value," +
		" CASE WHEN p.q IS NULL THEN t.updated_at ELSE now() END AS updated_at" +
		" FROM t FULL JOIN p ON p.q = t.queue AND p.m = t.metric) "
	return fn(cte, &a)
}

// MetricParams name one counter: fetchq.metric_get(q, metric).
type MetricParams struct {
	// Queue is folded to lower case; any name is accepted.
	Queue string
	// Metric is the counter's name, case-sensitive (e.g. "cnt", "v0").
	Metric string
}

// MetricSetParams are the arguments of fetchq.metric_set(q, metric, value)
// and fetchq.metric_increment(q, metric, value).
type MetricSetParams struct {
	Queue  string
	Metric string
	// Value is the new value (metric_set) or the increment
	// (metric_increment). The SQL argument is integer; the counter is
	// bigint.
	Value int64
}

// MetricSetResult is the result of metric_set and metric_increment.
type MetricSetResult struct {
	// CurrentValue is the value of the fetchq.metrics row after the call.
	// Pending deltas of this process are not included: they are added at
	// the next flush, as unpacked writes are by 4.0.2's next pack.
	CurrentValue int64
	// WasCreated is true when the row did not exist.
	WasCreated bool
}

// MetricSet is fetchq.metric_set(q, metric, value): it sets the counter's
// fetchq.metrics row to Value, creating it if missing, in one upsert
// (concurrent calls cannot create duplicate rows, unlike 4.0.2). Errors
// propagate.
func (s *Store) MetricSet(ctx context.Context, db DB, p MetricSetParams) (MetricSetResult, error) {
	return s.upsertCounter(ctx, db, p, "EXCLUDED.value")
}

// MetricIncrement is fetchq.metric_increment(q, metric, value): it adds
// Value to the counter's fetchq.metrics row, creating it with Value if
// missing, in one upsert. Errors propagate.
func (s *Store) MetricIncrement(ctx context.Context, db DB, p MetricSetParams) (MetricSetResult, error) {
	return s.upsertCounter(ctx, db, p, "m.value + EXCLUDED.value")
}

func (s *Store) upsertCounter(ctx context.Context, db DB, p MetricSetParams, set string) (MetricSetResult, error) {
	// xmax is 0 only in a row version this statement inserted.
	row, err := queryRow(ctx, db, `INSERT INTO fetchq.metrics AS m (queue, metric, value, updated_at) VALUES ($1::text, $2::text, $3::bigint, now())
ON CONFLICT (queue, metric) DO UPDATE SET value = `+set+`, updated_at = now() RETURNING m.value, m.xmax = 0`,
		args{foldASCII(p.Queue), p.Metric, p.Value})
	if err != nil {
		return MetricSetResult{}, err
	}
	return MetricSetResult{CurrentValue: textInt64(row[0]), WasCreated: textBool(row[1])}, nil
}

// MetricLogParams are the arguments of fetchq.metric_log_set,
// metric_log_increment and metric_log_decrement (q, metric, value).
type MetricLogParams struct {
	Queue  string
	Metric string
	// Value is the reset value or the increment; nil (SQL NULL) logs a row
	// with neither, which metric_log_pack consumes without effect.
	Value *int64
}

// MetricLogSet is fetchq.metric_log_set(q, metric, value): it appends a
// reset row (created_at now()) to fetchq.metrics_writes, applied by the
// next metric_log_pack, and returns 1. Errors propagate.
func (s *Store) MetricLogSet(ctx context.Context, db DB, p MetricLogParams) (AffectedRowsResult, error) {
	return s.logWrite(ctx, db, p, "reset", 1)
}

// MetricLogIncrement is fetchq.metric_log_increment(q, metric, value): it
// appends an increment row to fetchq.metrics_writes and returns 1, or
// writes nothing and returns 0 when Value is 0. Errors propagate.
func (s *Store) MetricLogIncrement(ctx context.Context, db DB, p MetricLogParams) (AffectedRowsResult, error) {
	return s.logWrite(ctx, db, p, "increment", 1)
}

// MetricLogDecrement is fetchq.metric_log_decrement(q, metric, value): an
// increment row of -Value (none for 0).
func (s *Store) MetricLogDecrement(ctx context.Context, db DB, p MetricLogParams) (AffectedRowsResult, error) {
	return s.logWrite(ctx, db, p, "increment", -1)
}

func (s *Store) logWrite(ctx context.Context, db DB, p MetricLogParams, column string, sign int64) (AffectedRowsResult, error) {
	var value any
	if p.Value != nil {
		if column == "increment" && *p.Value == 0 {
			return AffectedRowsResult{}, nil
		}
		value = sign * *p.Value
	}
	_, err := exec(ctx, db, "INSERT INTO fetchq.metrics_writes (created_at, queue, metric, "+column+") VALUES (now(), $1::text, $2::text, $3::bigint)",
		args{foldASCII(p.Queue), p.Metric, value})
	if err != nil {
		return AffectedRowsResult{}, err
	}
	return AffectedRowsResult{AffectedRows: 1}, nil
}

// packSQL consumes the fetchq.metrics_writes rows created up to now() and
// applies them: per counter, the latest reset (if any) plus the sum of all
// its increments, including those logged before the reset (spec §3.4).
// DELETE ... RETURNING makes it safe to run concurrently: a row is consumed
// by exactly one pack (a second one waits for the first's row locks and
// then skips the rows it deleted). Counters with a reset and counters
// without are upserted by two statements on disjoint keys.
const packSQL = `WITH w AS (DELETE FROM fetchq.metrics_writes WHERE created_at <= now() RETURNING queue, metric, increment, reset, created_at),
a AS (SELECT queue, metric, count(*) AS n, sum(increment) AS i,
             (array_agg(reset ORDER BY created_at DESC) FILTER (WHERE reset IS NOT NULL))[1] AS r
      FROM w GROUP BY queue, metric),
s AS (INSERT INTO fetchq.metrics AS m (queue, metric, value, updated_at)
      SELECT queue, metric, r + COALESCE(i, 0), now() FROM a WHERE r IS NOT NULL ORDER BY queue, metric
      ON CONFLICT (queue, metric) DO UPDATE SET value = EXCLUDED.value, updated_at = now()),
u AS (INSERT INTO fetchq.metrics AS m (queue, metric, value, updated_at)
      SELECT queue, metric, i, now() FROM a WHERE r IS NULL AND i IS NOT NULL ORDER BY queue, metric
      ON CONFLICT (queue, metric) DO UPDATE SET value = m.value + EXCLUDED.value, updated_at = now())
SELECT COALESCE(sum(n), 0) FROM a`

// MetricLogPackResult is the result of fetchq.metric_log_pack().
type MetricLogPackResult struct {
	// AffectedRows counts the counter writes consumed: fetchq.metrics_writes
	// rows (including rows with neither increment nor reset) plus, when
	// the pending deltas were flushed, the operation effects they summed,
	// each the equivalent of one metrics_writes row in 4.0.2.
	AffectedRows int64
}

// MetricLogPack is fetchq.metric_log_pack(): it applies and deletes the
// fetchq.metrics_writes rows created up to now() (rows dated in the future
// wait), in one statement that concurrent packs cannot double count, and,
// when db autocommits, then flushes this process's pending deltas (inside a
// transaction they are left to the next flush). Errors propagate; a failed
// flush is logged and its deltas stay pending.
func (s *Store) MetricLogPack(ctx context.Context, db DB) (MetricLogPackResult, error) {
	row, err := queryRow(ctx, db, packSQL, nil)
	if err != nil {
		return MetricLogPackResult{}, err
	}
	n := textInt64(row[0])
	if isAutocommit(db) {
		s.metrics.flushMu.Lock()
		writes, err := s.metrics.flushLocked(ctx, db)
		s.metrics.flushMu.Unlock()
		if err != nil {
			s.logger.WarnContext(ctx, "fetchq.metric_log_pack: flushing metric deltas failed; they stay pending", "error", err)
		}
		n += writes
	}
	return MetricLogPackResult{AffectedRows: n}, nil
}

// MetricGetResult is the result of fetchq.metric_get(q, metric).
type MetricGetResult struct {
	// CurrentValue is the counter, 0 when it does not exist.
	CurrentValue int64
	// LastUpdate is when the counter last changed (NULL when it does not
	// exist).
	LastUpdate Timestamp
	// DoesExist is false for a counter never written.
	DoesExist bool
}

// MetricGet is fetchq.metric_get(q, metric): the counter with this
// process's pending delta, or (0, NULL, false) when it was never written.
// Errors propagate.
func (s *Store) MetricGet(ctx context.Context, db DB, p MetricParams) (MetricGetResult, error) {
	row, err := s.metricGetRow(ctx, db, p)
	if err != nil {
		return MetricGetResult{}, err
	}
	return MetricGetResult{CurrentValue: textInt64(row[0]), LastUpdate: timestamp(row[1]), DoesExist: textBool(row[2])}, nil
}

func (s *Store) metricGetRow(ctx context.Context, db DB, p MetricParams) ([][]byte, error) {
	q := foldASCII(p.Queue)
	var row [][]byte
	err := s.withCounters(ctx, db, counterFilter{queue: &q, metric: &p.Metric}, func(cte string, a *args) error {
		var err error
		row, err = queryRow(ctx, db, cte+"SELECT value, updated_at, true FROM c", *a)
		return err
	})
	if err != nil {
		return nil, err
	}
	if row == nil {
		row = [][]byte{intText(0), nil, boolText(false)}
	}
	return row, nil
}

// MetricValue is one counter of a queue.
type MetricValue struct {
	// Metric is the counter's name.
	Metric string
	// CurrentValue includes this process's pending delta.
	CurrentValue int64
	// LastUpdate is the row's updated_at (now() for a pending change).
	LastUpdate Timestamp
}

// MetricListResult is the result of fetchq.metric_get(q).
type MetricListResult struct {
	// Metrics are ordered by name.
	Metrics []MetricValue
}

// MetricList is fetchq.metric_get(q): every counter of the queue with this
// process's pending deltas, ordered by name (in the database's collation).
// An unknown queue has none. Errors propagate.
func (s *Store) MetricList(ctx context.Context, db DB, p QueueParams) (MetricListResult, error) {
	rows, err := s.metricListRows(ctx, db, p)
	if err != nil {
		return MetricListResult{}, err
	}
	out := make([]MetricValue, len(rows))
	for i, r := range rows {
		out[i] = MetricValue{Metric: string(r[0]), CurrentValue: textInt64(r[1]), LastUpdate: timestamp(r[2])}
	}
	return MetricListResult{Metrics: out}, nil
}

func (s *Store) metricListRows(ctx context.Context, db DB, p QueueParams) ([][][]byte, error) {
	q := foldASCII(p.Queue)
	var rows [][][]byte
	err := s.withCounters(ctx, db, counterFilter{queue: &q}, func(cte string, a *args) error {
		var err error
		rows, _, err = queryRows(ctx, db, cte+"SELECT metric, value, updated_at FROM c ORDER BY metric", *a)
		return err
	})
	return rows, err
}

// MetricGetTotalParams are the arguments of fetchq.metric_get_total(metric).
type MetricGetTotalParams struct {
	Metric string
}

// MetricGetTotalResult is the result of fetchq.metric_get_total.
type MetricGetTotalResult struct {
	// CurrentValue is the sum of the counter over all queues, 0 if none.
	CurrentValue int64
	// DoesExist is true when some queue has the counter.
	DoesExist bool
}

// MetricGetTotal is fetchq.metric_get_total(metric): the sum of the
// counter over every queue that has it, with this process's pending
// deltas. 4.0.2 read a table that no longer exists and always failed.
// Errors propagate.
func (s *Store) MetricGetTotal(ctx context.Context, db DB, p MetricGetTotalParams) (MetricGetTotalResult, error) {
	row, err := s.metricTotalRow(ctx, db, p)
	if err != nil {
		return MetricGetTotalResult{}, err
	}
	return MetricGetTotalResult{CurrentValue: textInt64(row[0]), DoesExist: textBool(row[1])}, nil
}

func (s *Store) metricTotalRow(ctx context.Context, db DB, p MetricGetTotalParams) ([][]byte, error) {
	var row [][]byte
	err := s.withCounters(ctx, db, counterFilter{metric: &p.Metric}, func(cte string, a *args) error {
		var err error
		row, err = queryRow(ctx, db, cte+"SELECT COALESCE(sum(value), 0), count(*) > 0 FROM c", *a)
		return err
	})
	return row, err
}

// CommonMetrics are the 14 common counters of a queue (spec §1.9); nil is a
// counter never written (SQL NULL).
type CommonMetrics struct {
	Cnt, Pnd, Pln, Act, Cpl, Kll, Ent, Drp, Pkd, Prc, Res, Rej, Orp, Err *int64
}

// commonFromRow decodes the 14 columns of commonSelect.
func commonFromRow(r [][]byte) CommonMetrics {
	v := func(i int) *int64 {
		if r[i] == nil {
			return nil
		}
		return ptr(textInt64(r[i]))
	}
	return CommonMetrics{
		Cnt: v(0), Pnd: v(1), Pln: v(2), Act: v(3), Cpl: v(4), Kll: v(5), Ent: v(6),
		Drp: v(7), Pkd: v(8), Prc: v(9), Res: v(10), Rej: v(11), Orp: v(12), Err: v(13),
	}
}

// MetricGetCommon is fetchq.metric_get_common(q): the queue's common
// counters with this process's pending deltas; counters never written are
// NULL, and an unknown queue gives a row of NULLs. Errors propagate.
func (s *Store) MetricGetCommon(ctx context.Context, db DB, p QueueParams) (CommonMetrics, error) {
	row, err := s.metricCommonRow(ctx, db, p)
	if err != nil {
		return CommonMetrics{}, err
	}
	return commonFromRow(row), nil
}

func (s *Store) metricCommonRow(ctx context.Context, db DB, p QueueParams) ([][]byte, error) {
	q := foldASCII(p.Queue)
	var row [][]byte
	err := s.withCounters(ctx, db, counterFilter{queue: &q}, func(cte string, a *args) error {
		var err error
		row, err = queryRow(ctx, db, cte+"SELECT "+commonSelect+" FROM c", *a)
		return err
	})
	return row, err
}

// QueueMetrics are the common counters of one registered queue.
type QueueMetrics struct {
	// Queue is the name as registered.
	Queue string
	CommonMetrics
}

// MetricGetAllResult is the result of fetchq.metric_get_all().
type MetricGetAllResult struct {
	// Queues are the counters of every registered queue, by id.
	Queues []QueueMetrics
}

// MetricGetAll is fetchq.metric_get_all(): metric_get_common for every
// registry row, by id. Unlike 4.0.2, whose drp column was always NULL, drp
// is filled in. Errors propagate.
func (s *Store) MetricGetAll(ctx context.Context, db DB) (MetricGetAllResult, error) {
	rows, err := s.metricAllRows(ctx, db)
	if err != nil {
		return MetricGetAllResult{}, err
	}
	out := make([]QueueMetrics, len(rows))
	for i, r := range rows {
		out[i] = QueueMetrics{Queue: string(r[0]), CommonMetrics: commonFromRow(r[1:])}
	}
	return MetricGetAllResult{Queues: out}, nil
}

func (s *Store) metricAllRows(ctx context.Context, db DB) ([][][]byte, error) {
	var rows [][][]byte
	err := s.withCounters(ctx, db, counterFilter{}, func(cte string, a *args) error {
		var err error
		rows, _, err = queryRows(ctx, db, cte+"SELECT r.name, "+commonSelect+
			" FROM fetchq.queues r LEFT JOIN c ON c.queue = r.name GROUP BY r.id ORDER BY r.id", *a)
		return err
	})
	return rows, err
}

// StatusCounts are the documents of a queue by status, counted.
type StatusCounts struct {
	Cnt int64 // all documents
	Pln int64 // status 0
	Pnd int64 // status 1
	Act int64 // status 2
	Cpl int64 // status 3
	Kll int64 // status -1
}

// QueueCounts are the status counts of one registered queue.
type QueueCounts struct {
	// Queue is the name as registered.
	Queue string
	StatusCounts
}

// countSQL returns the statement counting the documents of q by status:
// cnt, pln, pnd, act, cpl, kll.
func countSQL(q queue) string {
	return "SELECT count(*), count(*) FILTER (WHERE status = 0), count(*) FILTER (WHERE status = 1)," +
		" count(*) FILTER (WHERE status = 2), count(*) FILTER (WHERE status = 3), count(*) FILTER (WHERE status = -1) FROM " + q.docs()
}

// countDocs counts the documents of q by status.
func countDocs(ctx context.Context, db DB, q queue) (StatusCounts, error) {
	row, err := queryRow(ctx, db, countSQL(q), nil)
	if err != nil {
		return StatusCounts{}, err
	}
	return StatusCounts{
		Cnt: textInt64(row[0]), Pln: textInt64(row[1]), Pnd: textInt64(row[2]),
		Act: textInt64(row[3]), Cpl: textInt64(row[4]), Kll: textInt64(row[5]),
	}, nil
}

// MetricCompute is fetchq.metric_compute(q): the queue's documents counted
// by status (exact as of the statement's snapshot). 4.0.2 never counted
// act (always 0); here it is the number of active documents. Errors
// propagate: a nonexistent queue fails with 42P01.
func (s *Store) MetricCompute(ctx context.Context, db DB, p QueueParams) (StatusCounts, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return StatusCounts{}, errNoQueue(q.name, "__docs")
	}
	return countDocs(ctx, db, q)
}

// MetricComputeAllResult is the result of fetchq.metric_compute_all() and
// fetchq.metric_reset_all().
type MetricComputeAllResult struct {
	// Queues are the counts of every registered queue, by id.
	Queues []QueueCounts
	// Effects are EffectReset of every queue (metric_reset_all only).
	Effects Effects
}

// MetricComputeAll is fetchq.metric_compute_all(): MetricCompute for every
// registry row, by id. Errors propagate: a registered queue without tables
// fails the call.
func (s *Store) MetricComputeAll(ctx context.Context, db DB) (MetricComputeAllResult, error) {
	var res MetricComputeAllResult
	err := forEachQueue(ctx, db, func(name string, q queue) error {
		c, err := countDocs(ctx, db, q)
		res.Queues = append(res.Queues, QueueCounts{Queue: name, StatusCounts: c})
		return err
	})
	if err != nil {
		return MetricComputeAllResult{}, err
	}
	return res, nil
}

// forEachQueue calls fn for every registry row, by id, with the name as
// stored and the parsed queue; a name that cannot be a queue fails with
// 42P01 like its missing tables would.
func forEachQueue(ctx context.Context, db DB, fn func(name string, q queue) error) error {
	names, _, err := queryRows(ctx, db, "SELECT name FROM fetchq.queues ORDER BY id", nil)
	if err != nil {
		return err
	}
	for _, n := range names {
		q, ok := parseQueue(string(n[0]))
		if !ok {
			return errNoQueue(q.name, "__docs")
		}
		if err := fn(string(n[0]), q); err != nil {
			return err
		}
	}
	return nil
}

// MetricResetResult is the result of fetchq.metric_reset(q).
type MetricResetResult struct {
	// Counts are the recounted gauges, now stored.
	Counts StatusCounts
	// Effects is an EffectReset of the queue: pending deltas predate the
	// recount.
	Effects Effects
}

// MetricReset is fetchq.metric_reset(q): in one transaction it deletes the
// queue's fetchq.metrics and fetchq.metrics_writes rows, counts its
// documents and stores the six gauges (cnt, pln, pnd, act, cpl, kll) with
// those counts, which it returns. As in 4.0.2 every other counter (ent,
// pkd, prc, v<N>, ...) is gone afterwards; unlike 4.0.2, act is the real
// number of active documents. Errors propagate: a nonexistent queue fails
// with 42P01.
//
// With several proxies, deltas another proxy has not flushed yet are added
// after the reset, so gauges can be off by that proxy's last flush
// interval of work; metric_compute is always exact.
func (s *Store) MetricReset(ctx context.Context, db DB, p QueueParams) (MetricResetResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return MetricResetResult{}, errNoQueue(q.name, "__docs")
	}
	var c StatusCounts
	err := db.Atomic(ctx, func(db DB) error {
		var err error
		c, err = resetQueueCounters(ctx, db, q)
		return err
	})
	if err != nil {
		return MetricResetResult{}, err
	}
	return MetricResetResult{Counts: c, Effects: Effects{{Kind: EffectReset, Queue: q.name}}}, nil
}

// resetQueueCounters counts q's documents and replaces its counters with
// the six gauges.
func resetQueueCounters(ctx context.Context, db DB, q queue) (StatusCounts, error) {
	c, err := countDocs(ctx, db, q)
	if err != nil {
		return StatusCounts{}, err
	}
	if err := deleteCounters(ctx, db, q.name); err != nil {
		return StatusCounts{}, err
	}
	_, err = exec(ctx, db, `INSERT INTO fetchq.metrics (queue, metric, value, updated_at)
SELECT $1::text, g.metric, g.value, now() FROM (VALUES (1, 'cnt', $2::bigint), (2, 'pln', $3::bigint), (3, 'pnd', $4::bigint),
(4, 'act', $5::bigint), (5, 'cpl', $6::bigint), (6, 'kll', $7::bigint)) AS g(n, metric, value) ORDER BY g.n`,
		args{q.name, c.Cnt, c.Pln, c.Pnd, c.Act, c.Cpl, c.Kll})
	return c, err
}

// MetricResetAll is fetchq.metric_reset_all(): MetricReset for every
// registry row, by id, in one transaction. Errors propagate: one failing
// queue fails the call.
func (s *Store) MetricResetAll(ctx context.Context, db DB) (MetricComputeAllResult, error) {
	var res MetricComputeAllResult
	err := db.Atomic(ctx, func(db DB) error {
		res = MetricComputeAllResult{}
		return forEachQueue(ctx, db, func(name string, q queue) error {
			c, err := resetQueueCounters(ctx, db, q)
			res.Queues = append(res.Queues, QueueCounts{Queue: name, StatusCounts: c})
			res.Effects = append(res.Effects, Effect{Kind: EffectReset, Queue: q.name})
			return err
		})
	})
	if err != nil {
		return MetricComputeAllResult{}, err
	}
	return res, nil
}

// MetricSnapParams are the arguments of the three forms of
// fetchq.metric_snap: (q) snapshots every counter of the queue, (q, metric)
// one, (q, whitelist jsonb) those named in a JSON array.
type MetricSnapParams struct {
	Queue string
	// Metric selects the (q, metric) form when not nil: one row with the
	// counter's value, 0 if it was never written.
	Metric *string
	// Whitelist selects the (q, jsonb) form when not nil: the JSON text of
	// an array of metric names; counters not named are skipped.
	Whitelist *string
}

// MetricSnapResult is the result of fetchq.metric_snap.
type MetricSnapResult struct {
	// Success is false when the snapshot failed.
	Success bool
	// Inserts is the number of rows written, nil (NULL) on failure.
	Inserts *int32
}

// MetricSnap is fetchq.metric_snap: it appends the queue's current
// counters (with this process's pending deltas) to its history table
// fetchq_data.<q>__metrics (metric, value, created_at now()). Catch-all: a
// nonexistent queue or any failure gives (false, NULL).
func (s *Store) MetricSnap(ctx context.Context, db DB, p MetricSnapParams) (MetricSnapResult, error) {
	if p.Whitelist != nil {
		if err := checkJSON(*p.Whitelist); err != nil {
			return MetricSnapResult{}, err
		}
	}
	q, ok := parseQueue(p.Queue)
	if !ok {
		return MetricSnapResult{}, nil
	}
	f := counterFilter{queue: &q.name}
	if p.Metric != nil {
		f.metric = p.Metric
	}
	var n int64
	err := s.withCounters(ctx, db, f, func(cte string, a *args) error {
		var sql string
		switch {
		case p.Metric != nil:
			sql = cte + "INSERT INTO " + q.metrics() + " (metric, value) SELECT " + a.add(*p.Metric) + "::text, COALESCE((SELECT value FROM c), 0)"
		case p.Whitelist != nil:
			sql = cte + "INSERT INTO " + q.metrics() + " (metric, value) SELECT metric, value FROM c WHERE " + a.add(*p.Whitelist) + "::jsonb ? metric ORDER BY metric"
		default:
			sql = cte + "INSERT INTO " + q.metrics() + " (metric, value) SELECT metric, value FROM c ORDER BY metric"
		}
		return contain(ctx, db, func(db DB) error {
			tag, err := exec(ctx, db, sql, *a)
			n = tag.RowsAffected()
			return err
		})
	})
	if err != nil {
		if s.swallow(ctx, "metric_snap", err) {
			return MetricSnapResult{}, nil
		}
		return MetricSnapResult{}, err
	}
	return MetricSnapResult{Success: true, Inserts: ptr(int32(n))}, nil
}
