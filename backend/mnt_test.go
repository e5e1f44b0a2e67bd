package backend

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// expire moves an active document's lock into the past.
func (tb *testBundle) expire(t *testing.T, q, subject string) {
	t.Helper()
	_, err := tb.pool.Exec(tb.ctx, "UPDATE fetchq_data."+q+"__docs SET next_iteration = now() - interval '1 hour' WHERE subject = $1", subject)
	require.NoError(t, err)
}

var (
	past   = Value{Now: true, Negative: true, Interval: "1 second"}
	future = Value{Now: true, Interval: "1 hour"}
)

func TestMntSteps(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")

	// mnt_make_pending_01: one overdue planned document (upsert moves a
	// planned document into the past without changing its status).
	tb.invoke(t, "doc_push(varchar,varchar)", "foo", "a")
	tb.invoke(t, "doc_push(varchar,varchar,jsonb,timestamptz)", "foo", "b", "{}", future)
	tb.invoke(t, "doc_push(varchar,varchar,jsonb,timestamptz)", "foo", "c", "{}", future)
	tb.invoke(t, "doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)", "foo", "b", "0", "0", past, "{}")
	require.EqualValues(t, 0, tb.mustDoc(t, "foo", "b").Status)
	res := tb.invoke(t, "mnt_make_pending(varchar,integer)", "foo", "100")
	require.Equal(t, r1("1"), res.Rows)
	require.Equal(t, adds("foo", "pnd", 1, "pln", -1), res.Effects)
	require.EqualValues(t, 1, tb.mustDoc(t, "foo", "b").Status)
	v, _ := tb.metric(t, "foo", "pnd")
	require.Equal(t, int64(2), v)

	// A document due exactly now() is promoted (4.0.2: strictly before).
	err := tb.db.Atomic(tb.ctx, func(db DB) error {
		_, err := tb.store.DocUpsert(tb.ctx, db, DocPushParams{Queue: "foo", Subject: "c", NextIteration: Now(), Payload: "{}"})
		require.NoError(t, err)
		r, err := tb.store.MntMakePending(tb.ctx, db, MntQueueParams{Queue: "foo", Limit: 10})
		require.NoError(t, err)
		require.Equal(t, ptr(int32(1)), r.AffectedRows)
		return errRollback
	})
	require.ErrorIs(t, err, errRollback)

	// mnt_reschedule_orphans_01: an expired lock is requeued, attempts kept.
	require.Len(t, tb.invoke(t, "doc_pick(varchar,integer)", "foo", "2").Rows, 2)
	tb.expire(t, "foo", "a")
	res = tb.invoke(t, "mnt_reschedule_orphans(varchar,integer)", "foo", "100")
	require.Equal(t, r1("1"), res.Rows)
	require.Equal(t, adds("foo", "err", 1, "orp", 1, "pnd", 1, "act", -1), res.Effects)
	d := tb.mustDoc(t, "foo", "a")
	require.EqualValues(t, 1, d.Status)
	require.EqualValues(t, 1, d.Attempts)
	require.Equal(t, r1("0"), tb.invoke(t, "mnt_mark_dead(varchar,integer)", "foo", "100").Rows)

	// mnt_reschedule_orphans_02 / mnt_mark_dead_02: with max_attempts 1 an
	// expired lock is not an orphan, it is dead.
	tb.invoke(t, "queue_set_max_attempts(varchar,integer)", "foo", "1")
	tb.expire(t, "foo", "b")
	require.Equal(t, r1("0"), tb.invoke(t, "mnt_reschedule_orphans(varchar,integer)", "foo", "100").Rows)
	v, ok := tb.metric(t, "foo", "err")
	require.True(t, ok)
	require.Equal(t, int64(1), v)
	res = tb.invoke(t, "mnt_mark_dead(varchar,integer)", "foo", "100")
	require.Equal(t, r1("1"), res.Rows)
	require.Equal(t, adds("foo", "err", 1, "orp", 1, "kll", 1, "act", -1), res.Effects)
	require.EqualValues(t, -1, tb.mustDoc(t, "foo", "b").Status)

	// Limits: 0 changes nothing; a negative limit fails like LIMIT.
	tb.invoke(t, "doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)", "foo", "c", "0", "0", past, "{}")
	require.Equal(t, r1("0"), tb.invoke(t, "mnt_make_pending(varchar,integer)", "foo", "0").Rows)
	require.Equal(t, "2201W", tb.invokeErr(t, "mnt_make_pending(varchar,integer)", "foo", "-1"))
	require.Equal(t, r1("<nil>"), tb.invoke(t, "mnt_reschedule_orphans(varchar,integer)", "foo", "-1").Rows)
	require.Equal(t, "22004", tb.invokeErr(t, "mnt_make_pending(varchar,integer)", "foo", nil))

	// Spec §2.9: a nonexistent queue.
	require.Equal(t, "42P01", tb.invokeErr(t, "mnt_make_pending(varchar,integer)", "nope", "10"))
	require.Equal(t, r1("<nil>"), tb.invoke(t, "mnt_reschedule_orphans(varchar,integer)", "nope", "10").Rows)
	require.Equal(t, r1("<nil>"), tb.invoke(t, "mnt_mark_dead(varchar,integer)", "nope", "10").Rows)
	require.Equal(t, "42P01", tb.invokeErr(t, "mnt_run(varchar,integer)", "nope", "10"))

	// The counters agree with the documents.
	requireGaugesMatch(t, tb, "foo")
}

func TestMntRun(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	tb.createQueue(t, "bar")
	tb.invoke(t, "queue_set_max_attempts(varchar,integer)", "foo", "2")
	for _, s := range []string{"a", "b", "c"} {
		tb.invoke(t, "doc_push(varchar,varchar)", "foo", s)
	}
	tb.invoke(t, "doc_pick(varchar,integer)", "foo", "2") // a, b: attempts 1
	tb.expire(t, "foo", "a")
	tb.invoke(t, "mnt_run(varchar,integer)", "foo", "10") // a requeued
	tb.invoke(t, "doc_pick(varchar)", "foo")              // a again: attempts 2
	tb.expire(t, "foo", "a")
	tb.expire(t, "foo", "b")
	for _, s := range []string{"p1", "p2", "p3"} {
		tb.invoke(t, "doc_push(varchar,varchar,jsonb,timestamptz)", "foo", s, "{}", future)
		tb.invoke(t, "doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)", "foo", s, "0", "0", past, "{}")
	}
	tb.invoke(t, "doc_push(varchar,varchar,jsonb,timestamptz)", "bar", "q1", "{}", future)
	tb.invoke(t, "doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)", "bar", "q1", "0", "0", past, "{}")

	// Order of the columns: activated, rescheduled, killed; each step up to
	// the limit.
	res := tb.invoke(t, "mnt_run(varchar,integer)", "foo", "2")
	require.Equal(t, []string{"activated_count", "rescheduled_count", "killed_count"}, res.Columns)
	require.Equal(t, r1("2", "1", "1"), res.Rows)
	require.Equal(t, append(append(adds("foo", "err", 1, "orp", 1, "kll", 1, "act", -1), adds("foo", "err", 1, "orp", 1, "pnd", 1, "act", -1)...),
		adds("foo", "pnd", 2, "pln", -2)...), res.Effects)
	require.EqualValues(t, -1, tb.mustDoc(t, "foo", "a").Status)
	require.EqualValues(t, 1, tb.mustDoc(t, "foo", "b").Status)

	res = tb.invoke(t, "mnt_run_all(integer)", "10")
	require.Equal(t, [][]string{{"foo", "1", "0", "0"}, {"bar", "1", "0", "0"}}, rowsText(res.Rows))
	require.Equal(t, append(adds("foo", "pnd", 1, "pln", -1), adds("bar", "pnd", 1, "pln", -1)...), res.Effects)
	requireGaugesMatch(t, tb, "foo")
	requireGaugesMatch(t, tb, "bar")

	// As in 4.0.2 one broken queue fails mnt_run_all (the Maintainer
	// isolates it instead).
	_, err := tb.pool.Exec(tb.ctx, "DROP TABLE fetchq_data.bar__docs")
	require.NoError(t, err)
	require.Equal(t, "42P01", tb.invokeErr(t, "mnt_run_all(integer)", "10"))
}

// jobRow reads a jobs row.
func (tb *testBundle) jobRow(t *testing.T, id int) Job {
	t.Helper()
	rows, _, err := queryRows(tb.ctx, tb.db, "SELECT id, task, queue, attempts, iterations, next_iteration, last_iteration, settings, payload FROM fetchq.jobs WHERE id = $1::int", args{id})
	require.NoError(t, err)
	require.Len(t, rows, 1)
	return jobFromRow(rows[0])
}

// dueIn returns how long after the database's now() a job is due.
func (tb *testBundle) dueIn(t *testing.T, id int) time.Duration {
	t.Helper()
	var secs float64
	require.NoError(t, tb.pool.QueryRow(tb.ctx, "SELECT extract(epoch FROM next_iteration - now()) FROM fetchq.jobs WHERE id = $1", id).Scan(&secs))
	return time.Duration(secs * float64(time.Second))
}

func TestMntJobs(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo") // jobs 2 mnt, 3 sts, 4 cmp, 5 drp; 1 is lgp

	// mnt_job_pick: the oldest due jobs, claimed.
	res := tb.invoke(t, "mnt_job_pick(varchar,integer)", "5m", "2")
	require.Equal(t, jobColumns, res.Columns)
	require.Len(t, res.Rows, 2)
	lgp, mnt := jobFromRow(res.Rows[0]), jobFromRow(res.Rows[1])
	require.Equal(t, []string{"lgp", "*"}, []string{lgp.Task, lgp.Queue})
	require.Equal(t, []string{"mnt", "foo"}, []string{mnt.Task, mnt.Queue})
	require.EqualValues(t, 1, mnt.Attempts)
	require.Zero(t, mnt.Iterations)
	require.False(t, mnt.LastIteration.Valid)
	require.JSONEq(t, `{"delay":"100ms","duration":"1m","limit":500}`, mnt.Settings)
	require.Equal(t, "{}", mnt.Payload)
	require.InDelta(t, (5 * time.Minute).Seconds(), tb.dueIn(t, 2).Seconds(), 5)

	// mnt_job_reschedule_01 (and last_iteration, never written by 4.0.2).
	require.Equal(t, r1("t"), tb.invoke(t, "mnt_job_reschedule(integer,varchar)", "2", "1h").Rows)
	j := tb.jobRow(t, 2)
	require.EqualValues(t, 0, j.Attempts)
	require.EqualValues(t, 1, j.Iterations)
	require.True(t, j.LastIteration.Valid)
	require.InDelta(t, time.Hour.Seconds(), tb.dueIn(t, 2).Seconds(), 5)
	require.Equal(t, r1("t"), tb.invoke(t, "mnt_job_reschedule(integer,varchar)", "999", "1h").Rows, "no such job: still true")
	require.Equal(t, r1("f"), tb.invoke(t, "mnt_job_reschedule(integer,varchar)", "2", "soon").Rows)
	require.Equal(t, r1("f"), tb.invoke(t, "mnt_job_reschedule(integer,varchar)", "2", nil).Rows)

	// mnt_job_run_01: with jobs due, mnt_job_run() runs exactly one: sts
	// (lgp and mnt are claimed or rescheduled), a snapshot.
	require.Equal(t, r1("t", "1"), tb.invoke(t, "mnt_job_run()").Rows)
	j = tb.jobRow(t, 3)
	require.Equal(t, "sts", j.Task)
	require.EqualValues(t, 1, j.Iterations)
	require.EqualValues(t, 0, j.Attempts)
	require.InDelta(t, (5 * time.Minute).Seconds(), tb.dueIn(t, 3).Seconds(), 5)
	// cmp and drp.
	require.Equal(t, r1("t", "2"), tb.invoke(t, "mnt_job_run(integer)", "10").Rows)
	require.InDelta(t, (10 * time.Minute).Seconds(), tb.dueIn(t, 5).Seconds(), 5)
	require.Equal(t, r1("t", "0"), tb.invoke(t, "mnt_job_run(varchar,integer)", "1s", "10").Rows, "nothing due")
	require.Equal(t, r1("f", "0"), tb.invoke(t, "mnt_job_run(varchar,integer)", "no such interval", "10").Rows)
	require.Equal(t, r1("f", "0"), tb.invoke(t, "mnt_job_run(varchar,integer)", nil, "10").Rows)

	// A mnt job due runs mnt_run with the job's limit.
	_, err := tb.pool.Exec(tb.ctx, `UPDATE fetchq.jobs SET next_iteration = now() - interval '1s', settings = '{"limit": "2", "delay": "2h"}' WHERE id = 2`)
	require.NoError(t, err)
	for _, s := range []string{"a", "b", "c"} {
		tb.invoke(t, "doc_push(varchar,varchar,jsonb,timestamptz)", "foo", s, "{}", future)
		tb.invoke(t, "doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)", "foo", s, "0", "0", past, "{}")
	}
	res = tb.invoke(t, "mnt_job_run(integer)", "10")
	require.Equal(t, r1("t", "1"), res.Rows)
	require.Equal(t, adds("foo", "pnd", 2, "pln", -2), res.Effects)
	require.InDelta(t, (2 * time.Hour).Seconds(), tb.dueIn(t, 2).Seconds(), 5)

	// A poison job (its queue's tables are gone) fails alone: its work is
	// undone, it stays claimed until the lock expires, the others run.
	tb.createQueue(t, "gone") // jobs 6..9
	_, err = tb.pool.Exec(tb.ctx, `DROP TABLE fetchq_data.gone__docs;
		UPDATE fetchq.jobs SET next_iteration = now() - interval '1h' WHERE task = 'mnt' AND queue = 'gone';
		UPDATE fetchq.jobs SET next_iteration = now() - interval '1s' WHERE id = 2;
		UPDATE fetchq.jobs SET next_iteration = now() + interval '1h' WHERE queue = 'gone' AND task <> 'mnt'`)
	require.NoError(t, err)
	res = tb.invoke(t, "mnt_job_run(integer)", "10")
	require.Equal(t, r1("f", "1"), res.Rows)
	require.Equal(t, adds("foo", "pnd", 1, "pln", -1), res.Effects)
	j = tb.jobRow(t, 6)
	require.Equal(t, "mnt", j.Task)
	require.EqualValues(t, 1, j.Attempts)
	require.Zero(t, j.Iterations)
	require.InDelta(t, (5 * time.Minute).Seconds(), tb.dueIn(t, 6).Seconds(), 5)
	requireGaugesMatch(t, tb, "foo")
}

// TestMnt pins mnt(): every per-queue job is forced due and run (the
// seeded lgp job, older, takes one of the slots, spec §3.3), then the log
// is packed.
func TestMnt(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	tb.createQueue(t, "bar")
	for _, q := range []string{"foo", "bar"} {
		tb.invoke(t, "doc_push(varchar,varchar)", q, "a") // 4 effects each, pending
	}
	tb.invoke(t, "doc_push(varchar,varchar,jsonb,timestamptz)", "foo", "later", "{}", future)
	tb.invoke(t, "doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)", "foo", "later", "0", "0", past, "{}")
	tb.invoke(t, "metric_log_increment(varchar,varchar,integer)", "foo", "custom", "3")

	res := tb.invoke(t, "mnt()")
	require.Equal(t, []string{"processed", "packed"}, res.Columns)
	// 8 slots: lgp and 7 of the 8 per-queue jobs (bar's drp, the last by
	// id, waits). lgp, first, packed the metric_log row; the final pack
	// flushes the 12 effects pending (4 for each push).
	require.Equal(t, r1("8", "12"), res.Rows)
	require.Equal(t, adds("foo", "pnd", 1, "pln", -1), res.Effects, "foo's mnt job promoted later")
	require.EqualValues(t, 1, tb.jobRow(t, 1).Iterations, "lgp ran")
	require.EqualValues(t, 0, tb.jobRow(t, 9).Iterations, "bar's drp waits")
	require.Equal(t, 7, tb.count(t, "SELECT count(*) FROM fetchq.jobs WHERE queue <> '*' AND iterations = 1 AND last_iteration IS NOT NULL"))
	// sts snapshots foo's counters as the job saw them: custom (packed by
	// lgp in the same transaction) and the pending ent, cnt, v0, pnd, pln.
	require.Equal(t, 6, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__metrics"))
	require.Equal(t, 4, tb.count(t, "SELECT count(*) FROM fetchq_data.bar__metrics"))
	v, _ := tb.metric(t, "foo", "custom")
	require.Equal(t, int64(3), v)

	// Run again with lgp not due: exactly the 8 per-queue jobs.
	_, err := tb.pool.Exec(tb.ctx, "UPDATE fetchq.jobs SET next_iteration = now() + interval '1h' WHERE task = 'lgp'")
	require.NoError(t, err)
	res = tb.invoke(t, "mnt(varchar)", "1m")
	require.Equal(t, r1("8", "0"), res.Rows)
	require.EqualValues(t, 1, tb.jobRow(t, 9).Iterations)
	requireGaugesMatch(t, tb, "foo")
	requireGaugesMatch(t, tb, "bar")
}

// requireGaugesMatch checks that metric_get_common's gauges equal the
// documents counted by status.
func requireGaugesMatch(t *testing.T, tb *testBundle, q string) {
	t.Helper()
	c, err := tb.store.MetricCompute(tb.ctx, tb.db, QueueParams{Queue: q})
	require.NoError(t, err)
	m, err := tb.store.MetricGetCommon(tb.ctx, tb.db, QueueParams{Queue: q})
	require.NoError(t, err)
	val := func(p *int64) int64 {
		if p == nil {
			return 0
		}
		return *p
	}
	require.Equal(t,
		map[string]int64{"cnt": c.Cnt, "pln": c.Pln, "pnd": c.Pnd, "act": c.Act, "cpl": c.Cpl, "kll": c.Kll},
		map[string]int64{"cnt": val(m.Cnt), "pln": val(m.Pln), "pnd": val(m.Pnd), "act": val(m.Act), "cpl": val(m.Cpl), "kll": val(m.Kll)},
		"gauges of %s", q)
}
