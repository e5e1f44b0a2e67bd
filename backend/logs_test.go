package backend

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLogError(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")

	r, err := tb.store.LogError(tb.ctx, tb.db, LogErrorParams{Queue: "foo", Subject: "s1", Message: "it's broken", Details: `{"d":"it''s"}`})
	require.NoError(t, err)
	require.True(t, r.QueuedLogs)
	r, err = tb.store.LogError(tb.ctx, tb.db, LogErrorParams{Queue: "FOO", Subject: "s1", Message: "m2", Details: "{}", RefID: ptr("null")})
	require.NoError(t, err)
	require.True(t, r.QueuedLogs)
	require.Equal(t, 1, tb.count(t, `SELECT count(*) FROM fetchq_data.foo__logs WHERE id = 1 AND subject = 's1' AND message = 'it''s broken' AND details = '{"d":"it''s"}' AND ref_id IS NULL AND created_at IS NOT NULL`))
	require.Equal(t, 1, tb.count(t, `SELECT count(*) FROM fetchq_data.foo__logs WHERE id = 2 AND ref_id = 'null'`))

	for _, p := range []LogErrorParams{
		{Queue: "nope", Subject: "s", Message: "m", Details: "{}"},
		{Queue: "a-b", Subject: "s", Message: "m", Details: "{}"},
		{Queue: "foo", Subject: "s", Message: strings.Repeat("m", 256), Details: "{}"},
		{Queue: "foo", Subject: strings.Repeat("s", 51), Message: "m", Details: "{}"},
		{Queue: "foo", Subject: "s", Message: "m"}, // NULL details
	} {
		r, err = tb.store.LogError(tb.ctx, tb.db, p)
		require.NoError(t, err)
		require.False(t, r.QueuedLogs)
	}
	require.Equal(t, 2, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__logs"))

	// Invoke: NULL details -> false, NULL subject and message -> ''.
	res, err := tb.store.Invoke(tb.ctx, tb.db, "log_error(varchar,varchar,varchar,jsonb,varchar)", []Value{{Text: "foo"}, {Text: "s"}, {Text: "m"}, {Null: true}, {Text: "r"}})
	require.NoError(t, err)
	require.Equal(t, []string{"queued_logs"}, res.Columns)
	require.Equal(t, [][][]byte{{[]byte("f")}}, res.Rows)
	res, err = tb.store.Invoke(tb.ctx, tb.db, "log_error(varchar,varchar,varchar,jsonb)", []Value{{Text: "foo"}, {Null: true}, {Null: true}, {Text: "{}"}})
	require.NoError(t, err)
	require.Equal(t, [][][]byte{{[]byte("t")}}, res.Rows)
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__logs WHERE subject = '' AND message = ''"))
}

func TestQueueDropLogs(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	reset := func() {
		t.Helper()
		_, err := tb.pool.Exec(tb.ctx, `TRUNCATE fetchq_data.foo__logs;
			INSERT INTO fetchq_data.foo__logs (created_at, subject, message) VALUES (now(), 'a', 'm'), (now() - interval '1 day', 'b', 'm'), (now() - interval '2 days', 'c', 'm')`)
		require.NoError(t, err)
	}
	drop := func(p QueueDropLogsParams) int32 {
		t.Helper()
		r, err := tb.store.QueueDropLogs(tb.ctx, tb.db, p)
		require.NoError(t, err)
		return r.AffectedRows
	}
	// queue_drop_logs_01: the row exactly 24 hours old stays (strict <).
	// The three rows and the DELETE must share now(): one transaction.
	err := tb.db.Atomic(tb.ctx, func(db DB) error {
		_, err := db.Query(tb.ctx, `INSERT INTO fetchq_data.foo__logs (created_at, subject, message) VALUES (now(), 'a', 'm'), (now() - interval '1 day', 'b', 'm'), (now() - interval '2 days', 'c', 'm')`, nil, noScan)
		require.NoError(t, err)
		r, err := tb.store.QueueDropLogs(tb.ctx, db, QueueDropLogsParams{Queue: "foo", Retention: "24 hours"})
		require.NoError(t, err)
		require.EqualValues(t, 1, r.AffectedRows)
		r, err = tb.store.QueueDropLogs(tb.ctx, db, QueueDropLogsParams{Queue: "foo", Before: NowMinus("24 hours")})
		require.NoError(t, err)
		require.EqualValues(t, 0, r.AffectedRows)
		return nil
	})
	require.NoError(t, err)

	// queue_drop_logs_02: timestamp form.
	reset()
	require.EqualValues(t, 1, drop(QueueDropLogsParams{Queue: "foo", Before: NowMinus("36 hours")}))
	// queue_drop_logs_03: the queue's setting ('24h' by default, '1h' set).
	reset()
	require.EqualValues(t, 2, drop(QueueDropLogsParams{Queue: "foo", FromSettings: true}))
	reset()
	_, err = tb.store.QueueSetLogsRetention(tb.ctx, tb.db, QueueSetRetentionParams{Queue: "foo", Retention: "1h"})
	require.NoError(t, err)
	require.EqualValues(t, 2, drop(QueueDropLogsParams{Queue: "foo", FromSettings: true}))

	// Failures: 0.
	reset()
	for _, p := range []QueueDropLogsParams{
		{Queue: "foo", Retention: "nonsense"},
		{Queue: "nope", Retention: "1h"},
		{Queue: "nope", FromSettings: true},
		{Queue: "a-b", Before: Now()},
	} {
		require.Zero(t, drop(p), "%+v", p)
	}
	require.Equal(t, 3, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__logs"))

	res, err := tb.store.Invoke(tb.ctx, tb.db, "queue_drop_logs(varchar,timestamptz)", []Value{{Text: "foo"}, {Now: true, Interval: "36 hours", Negative: true}})
	require.NoError(t, err)
	require.Equal(t, [][][]byte{{[]byte("1")}}, res.Rows)
}

func TestQueueDropMetrics(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	// Snapshots 2-3 days old, every 10 minutes, plus recent ones.
	_, err := tb.pool.Exec(tb.ctx, `INSERT INTO fetchq_data.foo__metrics (created_at, metric, value)
		SELECT date_trunc('hour', now()) - interval '3 days' + n * interval '10 minutes', 'cnt', n FROM generate_series(0, 143) n;
		INSERT INTO fetchq_data.foo__metrics (created_at, metric, value) SELECT now() - n * interval '1 minute', 'cnt', n FROM generate_series(0, 9) n`)
	require.NoError(t, err)

	// Keep one per hour between 4 days and 1 day ago: 144 rows in 24 hourly
	// buckets -> 120 removed; the recent ones stay.
	r, err := tb.store.QueueDropMetrics(tb.ctx, tb.db, QueueDropMetricsParams{Queue: "foo", Config: `[{"from":"4 days","to":"1 day","retain":"hour"}]`})
	require.NoError(t, err)
	require.EqualValues(t, 120, r.RemovedRows)
	require.Equal(t, 34, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__metrics"))

	// From the queue's setting ('[]' by default: nothing).
	r, err = tb.store.QueueDropMetrics(tb.ctx, tb.db, QueueDropMetricsParams{Queue: "foo", FromSettings: true})
	require.NoError(t, err)
	require.Zero(t, r.RemovedRows)
	_, err = tb.store.QueueSetMetricsRetention(tb.ctx, tb.db, QueueSetRetentionParams{Queue: "foo", Retention: `[{"from":"4 days","to":"1 day","retain":"day"}]`})
	require.NoError(t, err)
	r, err = tb.store.QueueDropMetrics(tb.ctx, tb.db, QueueDropMetricsParams{Queue: "foo", FromSettings: true})
	require.NoError(t, err)
	require.Greater(t, r.RemovedRows, int32(0))

	// Failures: 0.
	for _, p := range []QueueDropMetricsParams{
		{Queue: "nope", Config: `[{"from":"4 days","to":"1 day","retain":"hour"}]`},
		{Queue: "foo", Config: `{"not":"an array"}`},
		{Queue: "foo", Config: `[{"from":"bad","to":"1 day","retain":"hour"}]`},
		{Queue: "a-b", FromSettings: true},
	} {
		r, err = tb.store.QueueDropMetrics(tb.ctx, tb.db, p)
		require.NoError(t, err)
		require.Zero(t, r.RemovedRows, "%+v", p)
	}
}

func TestUtilsTSRetain(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	// utils_ts_retain_01.
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE fetchq_data.test_utils_ts_retain (id SERIAL PRIMARY KEY, created_at TIMESTAMP WITH TIME ZONE);
		INSERT INTO fetchq_data.test_utils_ts_retain (created_at) VALUES
		('2010-10-01 12:00:00'), ('2010-10-01 12:00:10'), ('2010-10-01 12:00:30'),
		('2010-10-01 12:01:00'), ('2010-10-01 12:01:10'), ('2010-10-01 12:01:30'),
		('2010-11-01 12:00:00'), ('2010-11-01 12:20:00'), ('2010-11-01 12:40:00'),
		('2010-11-01 13:00:00'), ('2010-11-01 13:20:00'), ('2010-11-01 13:40:00'),
		('20120-11-01 13:40:00'), ('20120-11-01 13:40:01'), ('20120-11-01 13:40:02'), ('20120-11-01 13:40:03')`)
	require.NoError(t, err)
	r, err := tb.store.UtilsTSRetain(tb.ctx, tb.db, UtilsTSRetainParams{Table: "fetchq_data.test_utils_ts_retain", Field: "created_at", Retain: "minute", Start: TimeAt("2010-10-01 11:00:00"), End: TimeAt("2010-10-01 13:00:00")})
	require.NoError(t, err)
	require.EqualValues(t, 4, r.RemovedRows)
	res, err := tb.store.Invoke(tb.ctx, tb.db, "utils_ts_retain(varchar,varchar,varchar,timestamptz,timestamptz)",
		[]Value{{Text: `FETCHQ_DATA."test_utils_ts_retain"`}, {Text: "created_at"}, {Text: "hour"}, {Text: "2010-11-01 00:00:00"}, {Text: "2010-11-30 11:59:00"}})
	require.NoError(t, err)
	require.Equal(t, []string{"removed_rows"}, res.Columns)
	require.Equal(t, [][][]byte{{[]byte("4")}}, res.Rows)
	require.Equal(t, 8, tb.count(t, "SELECT count(*) FROM fetchq_data.test_utils_ts_retain"))
	// The latest row of each bucket is kept.
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq_data.test_utils_ts_retain WHERE created_at = '2010-10-01 12:00:30'"))

	for _, p := range []UtilsTSRetainParams{
		{Table: "x; DROP TABLE y", Field: "created_at", Retain: "hour", Start: Now(), End: Now()},
		{Table: "fetchq_data.test_utils_ts_retain", Field: "created_at) OR (true", Retain: "hour", Start: Now(), End: Now()},
		{Table: "fetchq_data.test_utils_ts_retain", Field: "created_at", Retain: "hour", End: Now()},
	} {
		_, err = tb.store.UtilsTSRetain(tb.ctx, tb.db, p)
		require.Error(t, err)
	}
	_, err = tb.store.UtilsTSRetain(tb.ctx, tb.db, UtilsTSRetainParams{Table: "nope", Field: "created_at", Retain: "hour", Start: Now(), End: Now()})
	require.Error(t, err)
}

func TestParseQualifiedName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][]string{
		"foo":                {"foo"},
		"Fetchq_Data.Foo":    {"fetchq_data", "foo"},
		`"Mixed"."x""y"`:     {"Mixed", `x"y`},
		`db.s.t`:             {"db", "s", "t"},
		"a$1":                {"a$1"},
		"ünï":                {"ünï"},
		"a.b.c.d":            nil,
		"":                   nil,
		"a.":                 nil,
		"1a":                 nil,
		`"unterminated`:      nil,
		`""`:                 nil,
		"a b":                nil,
		"a;drop":             nil,
		`fetchq_data."x"suf`: nil,
	} {
		got, ok := parseQualifiedName(in)
		if want == nil {
			require.False(t, ok, in)
			continue
		}
		require.True(t, ok, in)
		require.Equal(t, want, []string(got), in)
	}
}

func TestQueueTop(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	// queue_top_01.
	for i, v := range []int32{0, 0, 0, 1, 1, 1} {
		tb.push(t, "foo", "a"+string(rune('1'+i)), v, 0, NowPlus("1m"), "{}")
	}
	top := func(version int32, limit *int32, offset int32) []string {
		t.Helper()
		r, err := tb.store.QueueTop(tb.ctx, tb.db, QueueTopParams{Queue: "foo", Version: version, Limit: limit, Offset: offset})
		require.NoError(t, err)
		return subjects(r.Docs)
	}
	require.Len(t, top(0, ptr(int32(3)), 0), 3)
	require.Len(t, top(1, ptr(int32(2)), 0), 2)
	require.Equal(t, []string{"a5"}, top(1, ptr(int32(1)), 1))
	require.Equal(t, []string{"a4", "a5", "a6"}, top(1, nil, 0))

	// Ordered like doc_pick, any status.
	tb.push(t, "foo", "hi", 1, 10, NowPlus("2m"), "{}")
	require.Equal(t, []string{"hi", "a4"}, top(1, ptr(int32(2)), 0))

	_, err := tb.store.QueueTop(tb.ctx, tb.db, QueueTopParams{Queue: "nope", Limit: ptr(int32(1))})
	requireUndefinedTable(t, err, "nope")

	res, err := tb.store.Invoke(tb.ctx, tb.db, "queue_top(varchar,integer,integer,integer)", []Value{{Text: "foo"}, {Text: "1"}, {Null: true}, {Null: true}})
	require.NoError(t, err)
	require.Len(t, res.Rows, 4)
	require.Equal(t, docColumns, res.Columns)
}

func TestTrace(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	// trace_01.
	for _, q := range []string{"q1", "q2", "q3", "a1", "a2"} {
		tb.createQueue(t, q)
	}
	tb.push(t, "q1", "d1", 0, 0, NowMinus("1ms"), `{"a":1}`)
	require.Len(t, tb.pick(t, "q1", 1), 1)
	_, err := tb.store.LogError(tb.ctx, tb.db, LogErrorParams{Queue: "q1", Subject: "d1", Message: "just a log", Details: "{}"})
	require.NoError(t, err)
	tb.push(t, "q2", "d1", 0, 0, NowMinus("1ms"), `{"a":1}`)
	require.Len(t, tb.pick(t, "q2", 1), 1)
	_, err = tb.store.DocComplete(tb.ctx, tb.db, DocCompleteParams{Queue: "q2", Subject: "d1"})
	require.NoError(t, err)
	tb.push(t, "q3", "d1", 0, 0, NowMinus("1ms"), `{"a":1}`)
	require.Len(t, tb.pick(t, "q3", 1), 1)
	_, err = tb.store.DocReject(tb.ctx, tb.db, DocRejectParams{Queue: "q3", Subject: "d1", Message: "error message", Details: `{"a":1}`, RefID: ptr("refId")})
	require.NoError(t, err)

	r, err := tb.store.Trace(tb.ctx, tb.db, TraceParams{Subject: "d1"})
	require.NoError(t, err)
	type step struct {
		Step              int32
		Queue, Type, Info string
	}
	var got []step
	for _, s := range r.Steps {
		got = append(got, step{s.Step, s.Queue, s.Type, s.Info})
		require.True(t, s.CreatedAt.Valid)
		var details map[string]any
		require.NoError(t, json.Unmarshal([]byte(s.Details), &details))
		require.Equal(t, "d1", details["subject"])
	}
	require.Equal(t, []step{
		{1, "q1", "document", "status: 2; attempts: 1; iterations: 0"},
		{2, "q1", "error", "just a log"},
		{3, "q2", "document", "status: 3; attempts: 0; iterations: 1"},
		{4, "q3", "document", "status: 1; attempts: 1; iterations: 1"},
		{5, "q3", "error", "error message"},
	}, got)

	res, err := tb.store.Invoke(tb.ctx, tb.db, "trace(varchar,varchar)", []Value{{Text: "d1"}, {Text: "desc"}})
	require.NoError(t, err)
	require.Equal(t, []string{"step", "created_at", "queue", "type", "info", "details"}, res.Columns)
	require.Len(t, res.Rows, 5)
	require.Equal(t, "5", string(res.Rows[0][0]))
	require.Equal(t, "1", string(res.Rows[4][0]))

	_, err = tb.store.Trace(tb.ctx, tb.db, TraceParams{Subject: "d1", Order: "ASC; DROP TABLE x"})
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "22023", e.Code)
}
