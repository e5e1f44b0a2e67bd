package backend

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// errRollback makes a test's Atomic roll back.
var errRollback = errors.New("test: roll back")

// invoke calls an overload through Invoke, requires success and the
// overload's columns, and applies the result's effects to the Store's
// Metrics as the proxy does after an autocommit call.
func (tb *testBundle) invoke(t *testing.T, id string, args ...any) *Result {
	t.Helper()
	res, err := tb.store.Invoke(tb.ctx, tb.db, id, v(args...))
	require.NoError(t, err, id)
	require.Equal(t, Columns(id), res.Columns, id)
	tb.store.Metrics().Apply(res.Effects)
	return res
}

// invokeErr calls an overload through Invoke and returns its error's
// SQLSTATE ("" for none).
func (tb *testBundle) invokeErr(t *testing.T, id string, args ...any) string {
	t.Helper()
	_, err := tb.store.Invoke(tb.ctx, tb.db, id, v(args...))
	require.Error(t, err, id)
	if code := pgCode(err); code != "" {
		return code
	}
	var e *Error
	require.ErrorAs(t, err, &e)
	return e.Code
}

// metric reads one counter with metric_get(q, m): value and existence.
func (tb *testBundle) metric(t *testing.T, q, m string) (int64, bool) {
	t.Helper()
	r, err := tb.store.MetricGet(tb.ctx, tb.db, MetricParams{Queue: q, Metric: m})
	require.NoError(t, err)
	return r.CurrentValue, r.DoesExist
}

// rowsText renders result rows as strings, "<nil>" for NULL.
func rowsText(rs [][][]byte) [][]string {
	out := make([][]string, len(rs))
	for i, r := range rs {
		out[i] = make([]string, len(r))
		for j, v := range r {
			if v == nil {
				out[i][j] = "<nil>"
			} else {
				out[i][j] = string(v)
			}
		}
	}
	return out
}

func TestMetricSetIncrement(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	// Verified in 4.0.2: 5 (created) -> 10 (not created).
	require.Equal(t, r1("5", "t"), tb.invoke(t, "metric_increment(varchar,varchar,integer)", "foo", "cnt", "5").Rows)
	require.Equal(t, r1("10", "f"), tb.invoke(t, "metric_increment(varchar,varchar,integer)", "foo", "cnt", "5").Rows)
	// metric_get_01: set/increment arithmetic.
	require.Equal(t, r1("5", "f"), tb.invoke(t, "metric_set(varchar,varchar,integer)", "foo", "cnt", "5").Rows)
	require.Equal(t, r1("3", "t"), tb.invoke(t, "metric_set(varchar,varchar,integer)", "foo", "pnd", "3").Rows)
	require.Equal(t, r1("15", "f"), tb.invoke(t, "metric_increment(varchar,varchar,integer)", "foo", "cnt", "10").Rows)
	require.Equal(t, r1("12", "f"), tb.invoke(t, "metric_increment(varchar,varchar,integer)", "FOO", "cnt", "-3").Rows)
	res := tb.invoke(t, "metric_get(varchar,varchar)", "foo", "cnt")
	require.Equal(t, "12", string(res.Rows[0][0]))
	require.NotNil(t, res.Rows[0][1], "last_update")
	require.Equal(t, "t", string(res.Rows[0][2]))

	// metric_get_02: 40-character queue names.
	long := strings.Repeat("q", 40)
	tb.invoke(t, "metric_log_increment(varchar,varchar,integer)", long, "cnt", "10")
	tb.invoke(t, "metric_log_set(varchar,varchar,integer)", long, "cnt", "2")
	tb.store.Metrics().Apply(adds(long, "cnt", 1))
	tb.invoke(t, "metric_log_pack()")
	require.Equal(t, "13", string(tb.invoke(t, "metric_get(varchar,varchar)", long, "cnt").Rows[0][0]))

	// One row per counter, whatever happened.
	require.Equal(t, 3, tb.count(t, "SELECT count(*) FROM fetchq.metrics"))
	// NULL arguments of these raising functions.
	require.Equal(t, "22004", tb.invokeErr(t, "metric_set(varchar,varchar,integer)", "foo", "cnt", nil))
	require.Equal(t, "22004", tb.invokeErr(t, "metric_increment(varchar,varchar,integer)", nil, "cnt", "1"))
}

func TestMetricGetDefaults(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")

	// A counter never written: (0, NULL, false), never NULL.
	require.Equal(t, r1("0", "<nil>", "f"), tb.invoke(t, "metric_get(varchar,varchar)", "foo", "nope").Rows)
	require.Equal(t, r1("0", "<nil>", "f"), tb.invoke(t, "metric_get(varchar,varchar)", nil, "cnt").Rows)
	require.Empty(t, tb.invoke(t, "metric_get(varchar)", "foo").Rows)
	require.Empty(t, tb.invoke(t, "metric_get(varchar)", "nope").Rows)
	require.Equal(t, r1("0", "f"), tb.invoke(t, "metric_get_total(varchar)", "cnt").Rows)
	allNull := r1("<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>")
	require.Equal(t, allNull, tb.invoke(t, "metric_get_common(varchar)", "foo").Rows)
	require.Equal(t, allNull, tb.invoke(t, "metric_get_common(varchar)", "unknown").Rows, "unknown queue: one all-NULL row")
	require.Equal(t, allNull, tb.invoke(t, "metric_get_common(varchar)", nil).Rows)
}

func TestMetricGetList(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	// metric_get_03: rows ordered by name, bigint values.
	for _, m := range []string{"pnd", "cnt", "v0", "act"} {
		tb.invoke(t, "metric_set(varchar,varchar,integer)", "foo", m, "1")
	}
	tb.invoke(t, "metric_set(varchar,varchar,integer)", "bar", "cnt", "7")
	res := tb.invoke(t, "metric_get(varchar)", "foo")
	require.Equal(t, []string{"metric", "current_value", "last_update"}, res.Columns)
	var names []string
	for _, r := range res.Rows {
		names = append(names, string(r[0]))
		require.Equal(t, "1", string(r[1]))
		require.NotNil(t, r[2])
	}
	require.Equal(t, []string{"act", "cnt", "pnd", "v0"}, names)

	// 64-bit counters: beyond 2^31 through deltas, through the log and the
	// total over queues.
	tb.store.Metrics().Apply(Effects{{Kind: EffectAdd, Queue: "foo", Metric: "ent", Delta: 3_000_000_000}})
	require.Equal(t, "3000000000", string(tb.invoke(t, "metric_get(varchar,varchar)", "foo", "ent").Rows[0][0]))
	tb.invoke(t, "metric_log_increment(varchar,varchar,integer)", "foo", "ent", "2000000000")
	tb.invoke(t, "metric_log_increment(varchar,varchar,integer)", "foo", "ent", "2000000000")
	require.Equal(t, r1("2"), tb.invoke(t, "metric_log_pack()").Rows)
	v, ok := tb.metric(t, "foo", "ent")
	require.True(t, ok)
	require.Equal(t, int64(7_000_000_000), v)
	require.Equal(t, r1("8", "t"), tb.invoke(t, "metric_get_total(varchar)", "cnt").Rows, "sum over queues")
	tb.invoke(t, "metric_increment(varchar,varchar,integer)", "bar", "ent", "2147483647")
	require.Equal(t, r1("9147483647", "t"), tb.invoke(t, "metric_get_total(varchar)", "ent").Rows)
}

func TestMetricLogPack(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	// metric_get_01: +10, -5, then a reset to 99: the reset applies first,
	// then every increment of the pack, including the earlier ones.
	require.Equal(t, r1("1"), tb.invoke(t, "metric_log_increment(varchar,varchar,integer)", "foo", "cnt", "10").Rows)
	require.Equal(t, r1("1"), tb.invoke(t, "metric_log_decrement(varchar,varchar,integer)", "foo", "cnt", "5").Rows)
	require.Equal(t, r1("1"), tb.invoke(t, "metric_log_set(varchar,varchar,integer)", "foo", "cnt", "99").Rows)
	require.Equal(t, r1("0", "<nil>", "f"), tb.invoke(t, "metric_get(varchar,varchar)", "foo", "cnt").Rows, "reads lag until a pack")
	require.Equal(t, r1("3"), tb.invoke(t, "metric_log_pack()").Rows)
	v, _ := tb.metric(t, "foo", "cnt")
	require.Equal(t, int64(104), v)
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq.metrics_writes"))

	// Zero writes nothing; NULL writes an empty row the pack consumes.
	require.Equal(t, r1("0"), tb.invoke(t, "metric_log_increment(varchar,varchar,integer)", "foo", "cnt", "0").Rows)
	require.Equal(t, r1("0"), tb.invoke(t, "metric_log_decrement(varchar,varchar,integer)", "foo", "cnt", "0").Rows)
	require.Equal(t, r1("1"), tb.invoke(t, "metric_log_increment(varchar,varchar,integer)", "foo", "cnt", nil).Rows)
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.metrics_writes WHERE increment IS NULL AND reset IS NULL"))

	// metric_log_pack_01: a future-dated write waits; reset 10 +5 -2 -> 13.
	tb.invoke(t, "metric_log_set(varchar,varchar,integer)", "foo", "pnd", "10")
	tb.invoke(t, "metric_log_increment(varchar,varchar,integer)", "foo", "pnd", "5")
	tb.invoke(t, "metric_log_decrement(varchar,varchar,integer)", "foo", "pnd", "2")
	_, err := tb.pool.Exec(tb.ctx, "INSERT INTO fetchq.metrics_writes (created_at, queue, metric, increment) VALUES (now() + interval '1 hour', 'foo', 'pnd', 100)")
	require.NoError(t, err)
	require.Equal(t, r1("4"), tb.invoke(t, "metric_log_pack()").Rows, "3 writes and the NULL row; the future one waits")
	v, _ = tb.metric(t, "foo", "pnd")
	require.Equal(t, int64(13), v)
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.metrics_writes"))
	v, _ = tb.metric(t, "foo", "cnt")
	require.Equal(t, int64(104), v, "a NULL increment changes nothing")

	// The pack also flushes this process's deltas and counts them as the
	// metrics_writes rows 4.0.2 would have logged.
	tb.store.Metrics().Apply(adds("foo", "ent", 1, "cnt", 1, "v0", 1, "pnd", 1))
	require.Equal(t, r1("4"), tb.invoke(t, "metric_log_pack()").Rows)
	_, pending := tb.store.Metrics().Pending("foo", "ent")
	require.False(t, pending)
	v, _ = tb.metric(t, "foo", "pnd")
	require.Equal(t, int64(14), v)

	require.Equal(t, "22004", tb.invokeErr(t, "metric_log_set(varchar,varchar,integer)", nil, "cnt", "1"))
}

// TestMetricLogPackConcurrent: concurrent packs consume each write once
// (4.0.2 double counted).
func TestMetricLogPackConcurrent(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	const writers, writes = 4, 200
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for w := range writers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range writes {
				if _, err := tb.store.MetricLogIncrement(tb.ctx, tb.db, MetricLogParams{Queue: "foo", Metric: "m" + strconv.Itoa(i%3), Value: ptr(int64(w + 1))}); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range writes / 10 {
				if _, err := tb.store.MetricLogPack(tb.ctx, tb.db); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	_, err := tb.store.MetricLogPack(tb.ctx, tb.db)
	require.NoError(t, err)
	var total int64
	for i := range 3 {
		v, _ := tb.metric(t, "foo", "m"+strconv.Itoa(i))
		total += v
	}
	require.Equal(t, int64(writes*(1+2+3+4)), total)
	require.Equal(t, 3, tb.count(t, "SELECT count(*) FROM fetchq.metrics"))
}

func TestMetricGetCommonAndAll(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	tb.createQueue(t, "bar")

	// metric_get_common_01: the 14 counters set to 1..14 sum to 105.
	for i, m := range commonMetrics {
		tb.invoke(t, "metric_set(varchar,varchar,integer)", "foo", m, strconv.Itoa(i+1))
	}
	c, err := tb.store.MetricGetCommon(tb.ctx, tb.db, QueueParams{Queue: "foo"})
	require.NoError(t, err)
	var sum int64
	for _, p := range []*int64{c.Cnt, c.Pnd, c.Pln, c.Act, c.Cpl, c.Kll, c.Ent, c.Drp, c.Pkd, c.Prc, c.Res, c.Rej, c.Orp, c.Err} {
		require.NotNil(t, p)
		sum += *p
	}
	require.Equal(t, int64(105), sum)
	require.Equal(t, int64(8), *c.Drp)

	// Never-written counters are NULL; pending deltas count.
	tb.store.Metrics().Apply(adds("bar", "ent", 2, "cnt", 2, "drp", 1))
	res := tb.invoke(t, "metric_get_common(varchar)", "bar")
	require.Equal(t, [][]string{{"2", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "2", "1", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>"}}, rowsText(res.Rows))

	// metric_get_all_01: one row per queue, by id; drp filled in (always
	// NULL in 4.0.2).
	res = tb.invoke(t, "metric_get_all()")
	require.Equal(t, [][]string{
		{"foo", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14"},
		{"bar", "2", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "2", "1", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>", "<nil>"},
	}, rowsText(res.Rows))
	all, err := tb.store.MetricGetAll(tb.ctx, tb.db)
	require.NoError(t, err)
	require.Len(t, all.Queues, 2)
	require.Equal(t, int64(1), *all.Queues[1].Drp)
}

// TestMetricComputeReset pins metric_compute_01 and metric_reset_01, with
// act fixed.
func TestMetricComputeReset(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	tb.createQueue(t, "bar")
	for i := range 6 {
		tb.invoke(t, "doc_push(varchar,varchar,integer,integer,timestamptz,jsonb)", "foo", "a"+strconv.Itoa(i), "0", "0", Value{Now: true, Negative: true, Interval: "1s"}, "{}")
	}
	require.Len(t, tb.invoke(t, "doc_pick(varchar,integer,integer,varchar)", "foo", "0", "6", "5m").Rows, 6)
	tb.invoke(t, "doc_reschedule(varchar,varchar,timestamptz)", "foo", "a0", Value{Now: true, Interval: "1 hour"})
	tb.invoke(t, "doc_reject(varchar,varchar,varchar,jsonb)", "foo", "a1", "no", "{}")
	tb.invoke(t, "doc_complete(varchar,varchar)", "foo", "a2")
	tb.invoke(t, "doc_kill(varchar,varchar)", "foo", "a3")
	tb.invoke(t, "doc_drop(varchar,varchar)", "foo", "a4")
	// a5 stays active: 4.0.2 reported act 0.

	res := tb.invoke(t, "metric_compute(varchar)", "foo")
	require.Equal(t, []string{"cnt", "pln", "pnd", "act", "kll", "cpl"}, res.Columns)
	require.Equal(t, r1("5", "1", "1", "1", "1", "1"), res.Rows)
	require.Empty(t, res.Effects)
	require.Equal(t, [][]string{{"foo", "5", "1", "1", "1", "1", "1"}, {"bar", "0", "0", "0", "0", "0", "0"}},
		rowsText(tb.invoke(t, "metric_compute_all()").Rows))

	// The deltas agree with the counts.
	c, err := tb.store.MetricGetCommon(tb.ctx, tb.db, QueueParams{Queue: "foo"})
	require.NoError(t, err)
	require.Equal(t, []int64{5, 1, 1, 1, 1, 1}, []int64{*c.Cnt, *c.Pln, *c.Pnd, *c.Act, *c.Kll, *c.Cpl})

	// Reset: gauges recounted, every other counter gone, pending deltas
	// dropped.
	_, err = tb.pool.Exec(tb.ctx, "UPDATE fetchq.metrics SET value = 42 WHERE metric = 'pnd'")
	require.NoError(t, err)
	tb.store.Metrics().Apply(adds("foo", "cnt", 100))
	tb.invoke(t, "metric_log_increment(varchar,varchar,integer)", "foo", "cnt", "7")
	res = tb.invoke(t, "metric_reset(varchar)", "foo")
	require.Equal(t, []string{"cnt", "pln", "pnd", "act", "cpl", "kll"}, res.Columns)
	require.Equal(t, r1("5", "1", "1", "1", "1", "1"), res.Rows)
	require.Equal(t, Effects{{Kind: EffectReset, Queue: "foo"}}, res.Effects)
	_, pending := tb.store.Metrics().Pending("foo", "cnt")
	require.False(t, pending)
	list, err := tb.store.MetricList(tb.ctx, tb.db, QueueParams{Queue: "foo"})
	require.NoError(t, err)
	got := map[string]int64{}
	for _, m := range list.Metrics {
		got[m.Metric] = m.CurrentValue
	}
	require.Equal(t, map[string]int64{"cnt": 5, "pln": 1, "pnd": 1, "act": 1, "cpl": 1, "kll": 1}, got)
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq.metrics_writes"))

	res = tb.invoke(t, "metric_reset_all()")
	require.Equal(t, [][]string{{"foo", "5", "1", "1", "1", "1", "1"}, {"bar", "0", "0", "0", "0", "0", "0"}}, rowsText(res.Rows))
	require.Equal(t, Effects{{Kind: EffectReset, Queue: "foo"}, {Kind: EffectReset, Queue: "bar"}}, res.Effects)

	// Nonexistent queue: errors (spec §2.9).
	require.Equal(t, "42P01", tb.invokeErr(t, "metric_compute(varchar)", "nope"))
	require.Equal(t, "42P01", tb.invokeErr(t, "metric_reset(varchar)", "nope"))
	require.Equal(t, "42P01", tb.invokeErr(t, "metric_compute(varchar)", "a-b"))
}

func TestMetricSnap(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	tb.invoke(t, "doc_push(varchar,varchar)", "foo", "a")
	tb.invoke(t, "doc_pick(varchar)", "foo")
	snaps := func() [][]string {
		rows, err := tb.pool.Query(tb.ctx, "SELECT metric, value::text FROM fetchq_data.foo__metrics ORDER BY id")
		require.NoError(t, err)
		defer rows.Close()
		var out [][]string
		for rows.Next() {
			var m, v string
			require.NoError(t, rows.Scan(&m, &v))
			out = append(out, []string{m, v})
		}
		return out
	}

	// metric_snap_02: a full snapshot writes exactly 6 rows (pnd went +1 -1
	// and exists with 0).
	require.Equal(t, r1("t", "6"), tb.invoke(t, "metric_snap(varchar)", "foo").Rows)
	require.Equal(t, [][]string{{"act", "1"}, {"cnt", "1"}, {"ent", "1"}, {"pkd", "1"}, {"pnd", "0"}, {"v0", "1"}}, snaps())
	_, err := tb.pool.Exec(tb.ctx, "TRUNCATE fetchq_data.foo__metrics")
	require.NoError(t, err)

	// metric_snap_01 and an unknown metric (a row with 0 is written).
	require.Equal(t, r1("t", "1"), tb.invoke(t, "metric_snap(varchar,varchar)", "foo", "cnt").Rows)
	require.Equal(t, r1("t", "1"), tb.invoke(t, "metric_snap(varchar,varchar)", "foo", "nope").Rows)
	// metric_snap_03: the jsonb whitelist.
	require.Equal(t, r1("t", "2"), tb.invoke(t, "metric_snap(varchar,jsonb)", "foo", `["cnt","act"]`).Rows)
	require.Equal(t, [][]string{{"cnt", "1"}, {"nope", "0"}, {"act", "1"}, {"cnt", "1"}}, snaps())

	// Catch-all: (false, NULL).
	require.Equal(t, r1("f", "<nil>"), tb.invoke(t, "metric_snap(varchar)", "nope").Rows)
	require.Equal(t, r1("f", "<nil>"), tb.invoke(t, "metric_snap(varchar,varchar)", "foo", nil).Rows)
	require.Equal(t, r1("t", "0"), tb.invoke(t, "metric_snap(varchar,jsonb)", "foo", nil).Rows)
	require.Equal(t, r1("f", "<nil>"), tb.invoke(t, "metric_snap(varchar)", nil).Rows)
}

// TestMetricsReadsInTransaction: inside a transaction the reads add the
// pending deltas without writing them (a flush there would be lost on
// rollback); in autocommit they flush first.
func TestMetricsReadsInTransaction(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	m := tb.store.Metrics()
	m.Apply(adds("foo", "cnt", 3, "pnd", 3))
	err := tb.db.Atomic(tb.ctx, func(db DB) error {
		r, err := tb.store.MetricGet(tb.ctx, db, MetricParams{Queue: "foo", Metric: "cnt"})
		require.NoError(t, err)
		require.Equal(t, MetricGetResult{CurrentValue: 3, LastUpdate: r.LastUpdate, DoesExist: true}, r)
		require.True(t, r.LastUpdate.Valid)
		c, err := tb.store.MetricGetCommon(tb.ctx, db, QueueParams{Queue: "foo"})
		require.NoError(t, err)
		require.Equal(t, int64(3), *c.Pnd)
		return errRollback
	})
	require.ErrorIs(t, err, errRollback)
	d, ok := m.Pending("foo", "cnt")
	require.True(t, ok, "still pending")
	require.Equal(t, int64(3), d)
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq.metrics"))

	v, _ := tb.metric(t, "foo", "cnt")
	require.Equal(t, int64(3), v)
	_, ok = m.Pending("foo", "cnt")
	require.False(t, ok, "flushed by the autocommit read")
	require.Equal(t, 2, tb.count(t, "SELECT count(*) FROM fetchq.metrics WHERE queue = 'foo'"))
}

// TestMetricsFlush: deltas reach fetchq.metrics in one upsert, survive a
// failed flush, and a missing unique key is created on the way.
func TestMetricsFlush(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	m := NewMetrics()
	m.Apply(adds("foo", "cnt", 2, "pnd", 1, "pnd", -1))
	require.NoError(t, m.Flush(tb.ctx, tb.db))
	require.Equal(t, 2, tb.count(t, "SELECT count(*) FROM fetchq.metrics"))
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.metrics WHERE metric = 'pnd' AND value = 0"), "+1 -1 creates the row")
	require.NoError(t, m.Flush(tb.ctx, tb.db), "nothing pending")

	// A failing flush keeps the deltas, merged with those applied later.
	_, err := tb.pool.Exec(tb.ctx, "ALTER TABLE fetchq.metrics RENAME TO metrics_away")
	require.NoError(t, err)
	m.Apply(adds("foo", "cnt", 5))
	require.Error(t, m.Flush(tb.ctx, tb.db))
	m.Apply(adds("foo", "cnt", 1, "ent", 1))
	d, _ := m.Pending("foo", "cnt")
	require.Equal(t, int64(6), d)
	_, err = tb.pool.Exec(tb.ctx, "ALTER TABLE fetchq.metrics_away RENAME TO metrics")
	require.NoError(t, err)

	// A database without the unique key (an older schema, with duplicates).
	_, err = tb.pool.Exec(tb.ctx, `DROP INDEX fetchq.__fetchq_metrics_queue_metric_idx;
		INSERT INTO fetchq.metrics (queue, metric, value) VALUES ('foo', 'cnt', 10), ('bar', 'x', 1)`)
	require.NoError(t, err)
	require.NoError(t, m.Flush(tb.ctx, tb.db))
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM pg_indexes WHERE indexname = '__fetchq_metrics_queue_metric_idx'"))
	s2 := New(Config{})
	for metric, want := range map[string]int64{"cnt": 2 + 10 + 6, "pnd": 0, "ent": 1} {
		r, err := s2.MetricGet(tb.ctx, tb.db, MetricParams{Queue: "foo", Metric: metric})
		require.NoError(t, err)
		require.Equal(t, want, r.CurrentValue, metric)
	}
	require.Equal(t, 4, tb.count(t, "SELECT count(*) FROM fetchq.metrics"))

	// Resets drop pending deltas.
	m.Apply(adds("foo", "cnt", 1))
	m.Apply(adds("bar", "cnt", 1))
	m.Apply(Effects{{Kind: EffectReset, Queue: "foo"}})
	_, ok := m.Pending("foo", "cnt")
	require.False(t, ok)
	_, ok = m.Pending("bar", "cnt")
	require.True(t, ok)
	m.Apply(Effects{{Kind: EffectResetAll}})
	_, ok = m.Pending("bar", "cnt")
	require.False(t, ok)
}

// TestMetricsFlushSurvivesStop: counters applied to a maintainer's Metrics
// are in the database after a clean Stop, where a new process reads them.
func TestMetricsFlushSurvivesStop(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	m1 := NewMetrics()
	s1 := New(Config{Metrics: m1})
	mt, err := NewMaintainer(MaintainerConfig{Pool: tb.pool, Store: s1, FlushInterval: time.Hour})
	require.NoError(t, err)
	require.NoError(t, mt.Start(tb.ctx))
	r, err := s1.DocPush(tb.ctx, tb.db, DocPushParams{Queue: "foo", Subject: "a", NextIteration: Now(), Payload: "{}"})
	require.NoError(t, err)
	m1.Apply(r.Effects)
	m1.Apply(adds("foo", "ent", 41))
	mt.Stop()
	mt.Stop()
	_, ok := m1.Pending("foo", "ent")
	require.False(t, ok, "flushed by Stop")

	s2 := New(Config{})
	c, err := s2.MetricGetCommon(tb.ctx, tb.db, QueueParams{Queue: "foo"})
	require.NoError(t, err)
	require.Equal(t, int64(42), *c.Ent)
	require.Equal(t, int64(1), *c.Cnt)
	require.Equal(t, int64(1), *c.Pnd)
	require.Nil(t, c.Pln)
}

// TestMetricsKeyMigration: init() merges duplicate counters of an older
// database before adding the unique key.
func TestMetricsKeyMigration(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `DROP INDEX fetchq.__fetchq_metrics_queue_metric_idx;
		INSERT INTO fetchq.metrics (queue, metric, value, updated_at) VALUES
		('foo', 'cnt', 1, now() - interval '1h'), ('foo', 'cnt', 2, now()), ('foo', 'pnd', 5, NULL), ('bar', 'cnt', 3, NULL)`)
	require.NoError(t, err)
	_, err = tb.store.Init(tb.ctx, tb.db)
	require.NoError(t, err)
	var id, value int64
	require.NoError(t, tb.pool.QueryRow(tb.ctx, "SELECT id, value FROM fetchq.metrics WHERE queue = 'foo' AND metric = 'cnt'").Scan(&id, &value))
	require.Equal(t, int64(1), id, "the lowest id is kept")
	require.Equal(t, int64(3), value, "values summed")
	require.Equal(t, 3, tb.count(t, "SELECT count(*) FROM fetchq.metrics"))
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM pg_indexes WHERE indexname = '__fetchq_metrics_queue_metric_idx'"))
}
