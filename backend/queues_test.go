package backend

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// listener is a connection LISTENing on channels.
type listener struct {
	conn *pgx.Conn
}

func (tb *testBundle) listen(t *testing.T, channels ...string) *listener {
	t.Helper()
	conn, err := pgx.ConnectConfig(tb.ctx, tb.pool.Config().ConnConfig.Copy())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	for _, ch := range channels {
		_, err := conn.Exec(tb.ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize())
		require.NoError(t, err)
	}
	return &listener{conn: conn}
}

// drain returns the notifications that arrive until none has for a while.
func (l *listener) drain(t *testing.T) []*pgconn.Notification {
	t.Helper()
	var out []*pgconn.Notification
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		n, err := l.conn.WaitForNotification(ctx)
		cancel()
		if err != nil {
			require.True(t, errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err), "waiting for notifications: %v", err)
			return out
		}
		out = append(out, n)
	}
}

// notes renders notifications as "channel: payload".
func notes(ns []*pgconn.Notification) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Channel + ": " + n.Payload
	}
	return out
}

func TestQueueCreate(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	l := tb.listen(t, "fetchq_queue_create", "fetchq_on_change")

	r, err := tb.store.QueueCreate(tb.ctx, tb.db, QueueParams{Queue: "foo"})
	require.NoError(t, err)
	require.True(t, r.WasCreated)
	require.Equal(t, int32(1), *r.QueueID)

	// After init + queue_create('foo') the jobs table holds ids 1..5 (spec §1.5).
	rows, err := tb.pool.Query(tb.ctx, "SELECT id, task, queue, settings::text, attempts, iterations, last_iteration IS NULL, payload::text FROM fetchq.jobs ORDER BY id")
	require.NoError(t, err)
	type job struct {
		ID               int
		Task, Queue, Set string
		Attempts         int
		Iterations       int64
		NoLast           bool
		Payload          string
	}
	jobs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[job])
	require.NoError(t, err)
	require.Len(t, jobs, 5)
	wantSettings := map[string]string{
		"lgp": `{"delay":"3s","duration":"5m"}`,
		"mnt": `{"delay":"100ms","duration":"1m","limit":500}`,
		"sts": `{"delay":"5m","duration":"5m"}`,
		"cmp": `{"delay":"10m","duration":"5m"}`,
		"drp": `{"delay":"10m","duration":"5m"}`,
	}
	for i, task := range []string{"lgp", "mnt", "sts", "cmp", "drp"} {
		j := jobs[i]
		require.Equal(t, i+1, j.ID)
		require.Equal(t, task, j.Task)
		require.JSONEq(t, wantSettings[task], j.Set)
		require.Zero(t, j.Attempts)
		require.Zero(t, j.Iterations)
		require.True(t, j.NoLast)
		require.Equal(t, "{}", j.Payload)
		if task == "lgp" {
			require.Equal(t, "*", j.Queue)
		} else {
			require.Equal(t, "foo", j.Queue)
		}
	}

	// The registry row and its defaults.
	var active bool
	var version, maxAttempts int
	var retention, metricsRetention, config string
	require.NoError(t, tb.pool.QueryRow(tb.ctx, "SELECT is_active, current_version, max_attempts, logs_retention, metrics_retention::text, config::text FROM fetchq.queues WHERE name = 'foo' AND created_at IS NOT NULL").
		Scan(&active, &version, &maxAttempts, &retention, &metricsRetention, &config))
	require.True(t, active)
	require.Zero(t, version)
	require.Equal(t, 5, maxAttempts)
	require.Equal(t, "24h", retention)
	require.Equal(t, "[]", metricsRetention)
	require.Equal(t, "{}", config)

	ns := l.drain(t)
	require.Len(t, ns, 2)
	require.Equal(t, "fetchq_on_change", ns[0].Channel)
	var change struct {
		Timestamp string          `json:"timestamp"`
		Operation string          `json:"operation"`
		Schema    string          `json:"schema"`
		Table     string          `json:"table"`
		NewData   map[string]any  `json:"new_data"`
		OldData   json.RawMessage `json:"old_data"`
	}
	require.NoError(t, json.Unmarshal([]byte(ns[0].Payload), &change))
	require.NotEmpty(t, change.Timestamp)
	require.Equal(t, "INSERT", change.Operation)
	require.Equal(t, "fetchq", change.Schema)
	require.Equal(t, "queues", change.Table)
	require.Equal(t, "foo", change.NewData["name"])
	require.Equal(t, "null", string(change.OldData))
	require.Equal(t, "fetchq_queue_create: foo", notes(ns)[1])

	// Existing queue, in any case: (false, its id), nothing changed.
	for _, name := range []string{"foo", "FOO", "Foo"} {
		r, err = tb.store.QueueCreate(tb.ctx, tb.db, QueueParams{Queue: name})
		require.NoError(t, err)
		require.False(t, r.WasCreated)
		require.Equal(t, int32(1), *r.QueueID, name)
	}
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.queues"))
	require.Equal(t, 5, tb.count(t, "SELECT count(*) FROM fetchq.jobs"))
	require.Empty(t, l.drain(t))
}

func TestQueueCreateNames(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	name40 := strings.Repeat("q", 40)
	for _, tt := range []struct {
		name    string
		created bool
		table   string
	}{
		{name40, true, name40},
		{strings.Repeat("q", 41), false, ""},
		{"Bar", true, "bar"},
		{"_x1", true, "_x1"},
		{"a-b", false, ""},
		{"1abc", false, ""},
		{"", false, ""},
		{"a b", false, ""},
		{"d'oh", false, ""},
		{`x"; DROP TABLE fetchq.queues; --`, false, ""},
		{"ü", false, ""},
	} {
		r, err := tb.store.QueueCreate(tb.ctx, tb.db, QueueParams{Queue: tt.name})
		require.NoError(t, err, tt.name)
		require.Equal(t, tt.created, r.WasCreated, tt.name)
		if !tt.created {
			require.Nil(t, r.QueueID, "no phantom id for %q", tt.name)
			continue
		}
		require.NotNil(t, r.QueueID)
		require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.queues WHERE name = $1 AND id = $2", tt.table, *r.QueueID), tt.name)
		require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM pg_tables WHERE schemaname = 'fetchq_data' AND tablename = $1", tt.table+"__docs"))
		require.Equal(t, 4, tb.count(t, "SELECT count(*) FROM fetchq.jobs WHERE queue = $1", tt.table))
	}
	// Only the valid queues are registered: no phantom rows, no gaps but
	// those of valid names.
	require.Equal(t, 3, tb.count(t, "SELECT count(*) FROM fetchq.queues"))

	// Mixed case works end to end: push, pick and metrics use the folded name.
	tb.push(t, "BAR", "s1", 0, 0, Now(), "{}")
	docs := tb.pick(t, "Bar", 1)
	require.Equal(t, []string{"s1"}, subjects(docs))

	// Tables without a registry row are not adopted.
	_, err := tb.pool.Exec(tb.ctx, "DELETE FROM fetchq.queues WHERE name = 'bar'")
	require.NoError(t, err)
	r, err := tb.store.QueueCreate(tb.ctx, tb.db, QueueParams{Queue: "bar"})
	require.NoError(t, err)
	require.Equal(t, QueueCreateResult{}, r)
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq.queues WHERE name = 'bar'"))

	// A registry row without tables gets its tables, keeping its id.
	_, err = tb.pool.Exec(tb.ctx, "INSERT INTO fetchq.queues (id, name, created_at, max_attempts) VALUES (100, 'orphan', now(), 3)")
	require.NoError(t, err)
	r, err = tb.store.QueueCreate(tb.ctx, tb.db, QueueParams{Queue: "orphan"})
	require.NoError(t, err)
	require.True(t, r.WasCreated)
	require.Equal(t, int32(100), *r.QueueID)
	require.Contains(t, strings.Join(tb.indexesOf(t, "fetchq_data", "orphan__docs"), "\n"), "(attempts < 3)")
}

func TestQueueDrop(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "keep")
	id := tb.createQueue(t, "foo")
	tb.push(t, "foo", "s1", 0, 0, Now(), "{}")
	_, err := tb.pool.Exec(tb.ctx, `INSERT INTO fetchq.metrics (queue, metric, value) VALUES ('foo', 'cnt', 1), ('keep', 'cnt', 1);
		INSERT INTO fetchq.metrics_writes (queue, metric, increment) VALUES ('foo', 'cnt', 1), ('keep', 'cnt', 1)`)
	require.NoError(t, err)
	l := tb.listen(t, "fetchq_queue_drop", "fetchq_on_change")

	r, err := tb.store.QueueDrop(tb.ctx, tb.db, QueueParams{Queue: "FOO"})
	require.NoError(t, err)
	require.Equal(t, QueueDropResult{WasDropped: true, QueueID: &id, Effects: Effects{{Kind: EffectReset, Queue: "foo"}}}, r)

	for _, table := range []string{"fetchq.queues WHERE name", "fetchq.jobs WHERE queue", "fetchq.metrics WHERE queue", "fetchq.metrics_writes WHERE queue"} {
		require.Zero(t, tb.count(t, "SELECT count(*) FROM "+table+" = 'foo'"), table)
		require.NotZero(t, tb.count(t, "SELECT count(*) FROM "+table+" = 'keep'"), table)
	}
	require.Zero(t, tb.count(t, "SELECT count(*) FROM pg_tables WHERE schemaname = 'fetchq_data' AND tablename LIKE 'foo\\_\\_%'"))
	ns := notes(l.drain(t))
	require.Len(t, ns, 2)
	require.Contains(t, ns[0], `"operation":"DELETE"`)
	require.Contains(t, ns[0], `"new_data":null`)
	require.Equal(t, "fetchq_queue_drop: foo", ns[1])

	// Nonexistent, invalid: (false, NULL), nothing notified.
	for _, name := range []string{"foo", "nope", "a-b"} {
		r, err = tb.store.QueueDrop(tb.ctx, tb.db, QueueParams{Queue: name})
		require.NoError(t, err)
		require.Equal(t, QueueDropResult{}, r)
	}
	require.Empty(t, l.drain(t))

	// Through Invoke: the record (was_dropped, queue_id).
	res, err := tb.store.Invoke(tb.ctx, tb.db, "queue_drop(varchar)", []Value{{Text: "keep"}})
	require.NoError(t, err)
	require.Equal(t, []string{"was_dropped", "queue_id"}, res.Columns)
	require.Equal(t, [][][]byte{{[]byte("t"), []byte("1")}}, res.Rows)
	res, err = tb.store.Invoke(tb.ctx, tb.db, "queue_drop(varchar)", []Value{{Text: "keep"}})
	require.NoError(t, err)
	require.Equal(t, [][][]byte{{[]byte("f"), nil}}, res.Rows)
}

func TestQueueGetID(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	id := tb.createQueue(t, "foo")
	r, err := tb.store.QueueGetID(tb.ctx, tb.db, QueueParams{Queue: "Foo"})
	require.NoError(t, err)
	require.Equal(t, int64(id), r.QueueID)

	// A missing queue is registered (only the registry row).
	r, err = tb.store.QueueGetID(tb.ctx, tb.db, QueueParams{Queue: "bar"})
	require.NoError(t, err)
	require.Equal(t, int64(id)+1, r.QueueID)
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.queues WHERE name = 'bar' AND created_at IS NOT NULL"))
	r2, err := tb.store.QueueGetID(tb.ctx, tb.db, QueueParams{Queue: "bar"})
	require.NoError(t, err)
	require.Equal(t, r, r2)

	_, err = tb.store.QueueGetID(tb.ctx, tb.db, QueueParams{Queue: "a-b"})
	require.ErrorIs(t, err, ErrInvalidQueueName)
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "42602", e.SQLState())

	res, err := tb.store.Invoke(tb.ctx, tb.db, "queue_get_id(varchar)", []Value{{Text: "bar"}})
	require.NoError(t, err)
	require.Equal(t, []string{"queue_id"}, res.Columns)
	require.Equal(t, "2", string(res.Rows[0][0]))
}

func TestQueueIndexes(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	indexes := func() []string {
		var names []string
		for _, s := range tb.indexesOf(t, "fetchq_data", "foo__docs") {
			names = append(names, s[:strings.IndexByte(s, ':')])
		}
		return names
	}
	all := []string{"fetchq_foo_for_dod_idx", "fetchq_foo_for_orp_idx", "fetchq_foo_for_pick_0_idx", "fetchq_foo_for_pnd_idx", "fetchq_foo_for_ups_idx", "foo__docs_pkey"}
	require.Equal(t, all, indexes())

	// queue_create_indexes_01: drop -> 1 index, create -> 6.
	d, err := tb.store.QueueDropIndexes(tb.ctx, tb.db, QueueParams{Queue: "foo"})
	require.NoError(t, err)
	require.True(t, d.WasDropped)
	require.Equal(t, []string{"foo__docs_pkey"}, indexes())
	c, err := tb.store.QueueCreateIndexesFromSettings(tb.ctx, tb.db, QueueParams{Queue: "foo"})
	require.NoError(t, err)
	require.True(t, c.WasCreated)
	require.Equal(t, all, indexes())

	// The three-argument form adds the pick index of another version.
	c3, err := tb.store.QueueCreateIndexes(tb.ctx, tb.db, QueueCreateIndexesParams{Queue: "foo", Version: 2, MaxAttempts: 3})
	require.NoError(t, err)
	require.True(t, c3.WasCreated)
	require.Contains(t, indexes(), "fetchq_foo_for_pick_2_idx")
	require.Len(t, indexes(), 7)

	// Nonexistent queue: 3-arg false, 1-arg true, drop true.
	c3, err = tb.store.QueueCreateIndexes(tb.ctx, tb.db, QueueCreateIndexesParams{Queue: "nope", MaxAttempts: 5})
	require.NoError(t, err)
	require.False(t, c3.WasCreated)
	c, err = tb.store.QueueCreateIndexesFromSettings(tb.ctx, tb.db, QueueParams{Queue: "nope"})
	require.NoError(t, err)
	require.True(t, c.WasCreated)
	d, err = tb.store.QueueDropIndexes(tb.ctx, tb.db, QueueParams{Queue: "nope"})
	require.NoError(t, err)
	require.True(t, d.WasDropped)
	d, err = tb.store.QueueDropIndexes(tb.ctx, tb.db, QueueParams{Queue: "a-b"})
	require.NoError(t, err)
	require.True(t, d.WasDropped, "an invalid name is a nonexistent queue")
}

func TestQueueSettings(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")

	r, err := tb.store.QueueSetMaxAttempts(tb.ctx, tb.db, QueueSetMaxAttemptsParams{Queue: "foo", MaxAttempts: 3})
	require.NoError(t, err)
	require.Equal(t, QueueSettingResult{AffectedRows: 1, WasReindexed: true}, r)
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.queues WHERE name = 'foo' AND max_attempts = 3"))
	idx := strings.Join(tb.indexesOf(t, "fetchq_data", "foo__docs"), "\n")
	require.Contains(t, idx, "(attempts < 3)")
	require.Contains(t, idx, "(attempts >= 3)")
	require.NotContains(t, idx, "5)")

	r, err = tb.store.QueueSetCurrentVersion(tb.ctx, tb.db, QueueSetCurrentVersionParams{Queue: "foo", Version: 1})
	require.NoError(t, err)
	require.Equal(t, QueueSettingResult{AffectedRows: 1, WasReindexed: true}, r)
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.queues WHERE name = 'foo' AND current_version = 1"))
	idx = strings.Join(tb.indexesOf(t, "fetchq_data", "foo__docs"), "\n")
	require.Contains(t, idx, "fetchq_foo_for_pick_1_idx")
	require.Contains(t, idx, "fetchq_foo_for_pick_0_idx", "the old pick index stays")

	// queue_drop_version: current -> false, other -> true and the index goes.
	dv, err := tb.store.QueueDropVersion(tb.ctx, tb.db, QueueDropVersionParams{Queue: "foo", Version: 1})
	require.NoError(t, err)
	require.False(t, dv.WasDropped)
	dv, err = tb.store.QueueDropVersion(tb.ctx, tb.db, QueueDropVersionParams{Queue: "foo", Version: 0})
	require.NoError(t, err)
	require.True(t, dv.WasDropped)
	require.NotContains(t, strings.Join(tb.indexesOf(t, "fetchq_data", "foo__docs"), "\n"), "fetchq_foo_for_pick_0_idx")
	dv, err = tb.store.QueueDropVersion(tb.ctx, tb.db, QueueDropVersionParams{Queue: "nope", Version: 0})
	require.NoError(t, err)
	require.True(t, dv.WasDropped)

	dv, err = tb.store.QueueDropVersion(tb.ctx, tb.db, QueueDropVersionParams{Queue: "a-b", Version: 0})
	require.NoError(t, err)
	require.True(t, dv.WasDropped)

	// Nonexistent queue, an invalid name included: (0, true).
	r, err = tb.store.QueueSetMaxAttempts(tb.ctx, tb.db, QueueSetMaxAttemptsParams{Queue: "nope", MaxAttempts: 3})
	require.NoError(t, err)
	require.Equal(t, QueueSettingResult{WasReindexed: true}, r)
	r, err = tb.store.QueueSetCurrentVersion(tb.ctx, tb.db, QueueSetCurrentVersionParams{Queue: "a-b", Version: 3})
	require.NoError(t, err)
	require.Equal(t, QueueSettingResult{WasReindexed: true}, r)
	r, err = tb.store.QueueSetMaxAttempts(tb.ctx, tb.db, QueueSetMaxAttemptsParams{Queue: "q; DROP TABLE x", MaxAttempts: 3})
	require.NoError(t, err)
	require.Equal(t, QueueSettingResult{WasReindexed: true}, r)

	// Retention settings.
	lr, err := tb.store.QueueSetLogsRetention(tb.ctx, tb.db, QueueSetRetentionParams{Queue: "foo", Retention: "1h"})
	require.NoError(t, err)
	require.EqualValues(t, 1, lr.AffectedRows)
	for _, p := range []QueueSetRetentionParams{
		{Queue: "foo", Retention: strings.Repeat("1", 26)},
		{Queue: "nope", Retention: "1h"},
		{Queue: "a-b", Retention: "1h"},
	} {
		lr, err = tb.store.QueueSetLogsRetention(tb.ctx, tb.db, p)
		require.NoError(t, err)
		require.Zero(t, lr.AffectedRows, p)
	}
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.queues WHERE logs_retention = '1h'"))

	mr, err := tb.store.QueueSetMetricsRetention(tb.ctx, tb.db, QueueSetRetentionParams{Queue: "foo", Retention: `[{"from":"1d","to":"1h","retain":"minute"}]`})
	require.NoError(t, err)
	require.EqualValues(t, 1, mr.AffectedRows)
	require.Equal(t, 1, tb.count(t, `SELECT count(*) FROM fetchq.queues WHERE metrics_retention = '[{"from":"1d","to":"1h","retain":"minute"}]'`))
	mr, err = tb.store.QueueSetMetricsRetention(tb.ctx, tb.db, QueueSetRetentionParams{Queue: "foo", Retention: "nope"})
	require.NoError(t, err)
	require.Zero(t, mr.AffectedRows)

	// Through Invoke, with NULL.
	res, err := tb.store.Invoke(tb.ctx, tb.db, "queue_set_max_attempts(varchar,integer)", []Value{{Text: "foo"}, {Null: true}})
	require.NoError(t, err)
	require.Equal(t, []string{"affected_rows", "was_reindexed"}, res.Columns)
	require.Equal(t, [][][]byte{{[]byte("0"), []byte("f")}}, res.Rows)
}

func TestQueueStatus(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	tb.createQueue(t, "bar")
	_, err := tb.pool.Exec(tb.ctx, "UPDATE fetchq.queues SET is_active = false WHERE name = 'bar'")
	require.NoError(t, err)

	r, err := tb.store.QueueStatus(tb.ctx, tb.db, QueueStatusParams{})
	require.NoError(t, err)
	require.Equal(t, []QueueStatus{{1, "foo", true}, {2, "bar", false}}, r.Queues)
	r, err = tb.store.QueueStatus(tb.ctx, tb.db, QueueStatusParams{Queue: ptr("BAR")})
	require.NoError(t, err)
	require.Equal(t, []QueueStatus{{2, "bar", false}}, r.Queues)
	r, err = tb.store.QueueStatus(tb.ctx, tb.db, QueueStatusParams{Queue: ptr("nope")})
	require.NoError(t, err)
	require.Empty(t, r.Queues)

	res, err := tb.store.Invoke(tb.ctx, tb.db, "queue_status()", nil)
	require.NoError(t, err)
	require.Equal(t, []string{"id", "name", "is_active"}, res.Columns)
	require.Equal(t, [][][]byte{{[]byte("1"), []byte("foo"), []byte("t")}, {[]byte("2"), []byte("bar"), []byte("f")}}, res.Rows)
	res, err = tb.store.Invoke(tb.ctx, tb.db, "queue_status(varchar)", []Value{{Text: "nope"}})
	require.NoError(t, err)
	require.NotNil(t, res.Rows)
	require.Empty(t, res.Rows)
}

func TestQueueTruncate(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	for _, q := range []string{"foo", "bar"} {
		tb.createQueue(t, q)
		tb.push(t, q, "s1", 0, 0, Now(), "{}")
		tb.push(t, q, "s2", 0, 0, NowPlus("1h"), "{}")
		_, err := tb.store.LogError(tb.ctx, tb.db, LogErrorParams{Queue: q, Subject: "s1", Message: "m", Details: "{}"})
		require.NoError(t, err)
		for _, sql := range []string{
			`INSERT INTO fetchq_data.` + q + `__metrics (metric, value) VALUES ('cnt', 2)`,
			`INSERT INTO fetchq.metrics (queue, metric, value) VALUES ($1, 'ent', 2), ($1, 'cnt', 2)`,
			`UPDATE fetchq.jobs SET iterations = 3, attempts = 1, last_iteration = now() WHERE queue = $1`,
		} {
			var args []any
			if strings.Contains(sql, "$1") {
				args = []any{q}
			}
			_, err = tb.pool.Exec(tb.ctx, sql, args...)
			require.NoError(t, err)
		}
	}
	metrics := func(q string) []string {
		rows, err := tb.pool.Query(tb.ctx, "SELECT metric || '=' || value FROM fetchq.metrics WHERE queue = $1 ORDER BY id", q)
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	zeroGauges := []string{"cnt=0", "pln=0", "pnd=0", "act=0", "cpl=0", "kll=0"}

	r, err := tb.store.QueueTruncate(tb.ctx, tb.db, QueueTruncateParams{Queue: "foo"})
	require.NoError(t, err)
	require.Equal(t, SuccessResult{Success: true, Effects: Effects{{Kind: EffectReset, Queue: "foo"}}}, r)
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs"))
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__logs"), "logs untouched")
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__metrics"), "snapshots untouched")
	require.Equal(t, 4, tb.count(t, "SELECT count(*) FROM fetchq.jobs WHERE queue = 'foo' AND iterations = 3"), "jobs untouched")
	require.Equal(t, zeroGauges, metrics("foo"))
	require.Equal(t, []string{"ent=2", "cnt=2"}, metrics("bar"), "other queues untouched")

	r, err = tb.store.QueueTruncate(tb.ctx, tb.db, QueueTruncateParams{Queue: "bar", Empty: true})
	require.NoError(t, err)
	require.True(t, r.Success)
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq_data.bar__docs"))
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq_data.bar__logs"))
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq_data.bar__metrics"))
	require.Equal(t, 4, tb.count(t, "SELECT count(*) FROM fetchq.jobs WHERE queue = 'bar' AND iterations = 0 AND attempts = 0 AND last_iteration IS NULL"))
	require.Equal(t, zeroGauges, metrics("bar"))

	// Nonexistent queue: 42P01 with the relation name.
	for _, name := range []string{"nope", "a-b"} {
		_, err = tb.store.QueueTruncate(tb.ctx, tb.db, QueueTruncateParams{Queue: name})
		requireUndefinedTable(t, err, name)
	}

	// truncate_all(true) empties everything and resets all gauges.
	tb.push(t, "foo", "s3", 0, 0, Now(), "{}")
	_, err = tb.pool.Exec(tb.ctx, "INSERT INTO fetchq.metrics (queue, metric, value) VALUES ('gone', 'cnt', 9); INSERT INTO fetchq.metrics_writes (queue, metric, increment) VALUES ('foo', 'cnt', 1)")
	require.NoError(t, err)
	r, err = tb.store.QueueTruncateAll(tb.ctx, tb.db, QueueTruncateAllParams{Empty: true, WithEmptyArg: true})
	require.NoError(t, err)
	require.Equal(t, SuccessResult{Success: true, Effects: Effects{{Kind: EffectResetAll}}}, r)
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs"))
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__logs"))
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq.metrics_writes"))
	require.Equal(t, zeroGauges, metrics("foo"))
	require.Equal(t, zeroGauges, metrics("bar"))
	require.Empty(t, metrics("gone"))
	require.Equal(t, 1, tb.count(t, "SELECT min(id) FROM fetchq.metrics"), "identity restarted")

	// truncate_all() without the argument resets per queue.
	tb.push(t, "bar", "s4", 0, 0, Now(), "{}")
	res, err := tb.store.Invoke(tb.ctx, tb.db, "queue_truncate_all()", nil)
	require.NoError(t, err)
	require.Equal(t, [][][]byte{{[]byte("t")}}, res.Rows)
	require.Equal(t, Effects{{Kind: EffectReset, Queue: "foo"}, {Kind: EffectReset, Queue: "bar"}}, res.Effects)
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq_data.bar__docs"))
}

// requireUndefinedTable asserts the 42P01 error of a missing queue.
func requireUndefinedTable(t *testing.T, err error, queue string) {
	t.Helper()
	require.Error(t, err)
	var code, msg string
	var pg *pgconn.PgError
	var own *Error
	switch {
	case errors.As(err, &pg):
		code, msg = pg.Code, pg.Message
	case errors.As(err, &own):
		code, msg = own.Code, own.Message
		require.ErrorIs(t, err, ErrQueueNotFound)
	default:
		t.Fatalf("unexpected error type %T: %v", err, err)
	}
	require.Equal(t, "42P01", code)
	require.Equal(t, `relation "fetchq_data.`+strings.ToLower(queue)+`__docs" does not exist`, msg)
}

func TestQueueNotify(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	l := tb.listen(t, "fetchq__foo__pnd", "fetchq__foo__pln", "fetchq__foo__act", "fetchq__foo__cpl", "fetchq__foo__kll")

	// Disabled by default.
	tb.push(t, "foo", "quiet", 0, 0, Now(), "{}")
	require.Empty(t, l.drain(t))

	for range 2 { // enabling twice replaces the triggers
		r, err := tb.store.QueueEnableNotify(tb.ctx, tb.db, QueueParams{Queue: "FOO"})
		require.NoError(t, err)
		require.True(t, r.Success)
	}
	require.Equal(t, 2, tb.count(t, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'fetchq_data.foo__docs'::regclass AND tgname IN ('fetchq__foo__trg_notify_insert', 'fetchq__foo__trg_notify_update')"))

	tb.push(t, "foo", "now", 0, 1, Now(), "{}")
	tb.push(t, "foo", "later", 0, 0, NowPlus("1 hour"), "{}")
	require.Equal(t, []string{"fetchq__foo__pnd: now", "fetchq__foo__pln: later"}, notes(l.drain(t)))

	docs := tb.pick(t, "foo", 1)
	require.Equal(t, []string{"now"}, subjects(docs))
	c, err := tb.store.DocComplete(tb.ctx, tb.db, DocCompleteParams{Queue: "foo", Subject: "now"})
	require.NoError(t, err)
	require.EqualValues(t, 1, *c.AffectedRows)
	require.Equal(t, []string{"fetchq__foo__act: now", "fetchq__foo__cpl: now"}, notes(l.drain(t)))

	// A rolled back operation notifies nothing.
	err = tb.db.Atomic(tb.ctx, func(db DB) error {
		_, err := tb.store.DocPush(tb.ctx, db, DocPushParams{Queue: "foo", Subject: "rb", NextIteration: Now(), Payload: "{}"})
		require.NoError(t, err)
		return errors.New("roll back")
	})
	require.Error(t, err)
	require.Empty(t, l.drain(t))

	d, err := tb.store.QueueDisableNotify(tb.ctx, tb.db, QueueParams{Queue: "foo"})
	require.NoError(t, err)
	require.True(t, d.Success)
	require.Zero(t, tb.count(t, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'fetchq_data.foo__docs'::regclass AND NOT tgisinternal"))
	tb.push(t, "foo", "quiet2", 0, 0, Now(), "{}")
	require.Empty(t, l.drain(t))

	// Nonexistent queues: enable fails, disable succeeds.
	_, err = tb.store.QueueEnableNotify(tb.ctx, tb.db, QueueParams{Queue: "nope"})
	requireUndefinedTable(t, err, "nope")
	_, err = tb.store.QueueEnableNotify(tb.ctx, tb.db, QueueParams{Queue: "a-b"})
	requireUndefinedTable(t, err, "a-b")
	for _, q := range []string{"nope", "a-b"} {
		d, err = tb.store.QueueDisableNotify(tb.ctx, tb.db, QueueParams{Queue: q})
		require.NoError(t, err)
		require.True(t, d.Success)
	}
}
