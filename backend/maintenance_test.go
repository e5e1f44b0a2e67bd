package backend

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// maintainer returns a Maintainer on tb's pool and Store, stopped when the
// test ends.
func (tb *testBundle) maintainer(t *testing.T, cfg MaintainerConfig) *Maintainer {
	t.Helper()
	cfg.Pool = tb.pool
	if cfg.Store == nil {
		cfg.Store = tb.store
	}
	if cfg.Logger == nil {
		cfg.Logger = tb.store.logger
	}
	m, err := NewMaintainer(cfg)
	require.NoError(t, err)
	t.Cleanup(m.Stop)
	return m
}

func TestMaintainerConfig(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	_, err := NewMaintainer(MaintainerConfig{})
	require.ErrorContains(t, err, "Pool is required")
	_, err = NewMaintainer(MaintainerConfig{Pool: tb.pool, Interval: -time.Second})
	require.ErrorContains(t, err, "Interval must not be negative")
	_, err = NewMaintainer(MaintainerConfig{Pool: tb.pool, Store: tb.store, Metrics: NewMetrics()})
	require.ErrorContains(t, err, "must be the Store's Metrics")

	m, err := NewMaintainer(MaintainerConfig{Pool: tb.pool})
	require.NoError(t, err)
	cfg := m.Config()
	require.Equal(t, DefaultMaintainInterval, cfg.Interval)
	require.Equal(t, DefaultPassTimeout, cfg.PassTimeout)
	require.Equal(t, DefaultLeaderRetry, cfg.LeaderRetry)
	require.Equal(t, DefaultFlushInterval, cfg.FlushInterval)
	require.Equal(t, DefaultMaintainerLockKey, cfg.LockKey)
	require.NotNil(t, cfg.Store)
	require.Same(t, cfg.Store.Metrics(), cfg.Metrics)
	require.Equal(t, 250*time.Millisecond, cfg.Interval)

	// Stop before Start, twice; Start twice; restart after Stop.
	m.Stop()
	m.Stop()
	require.NoError(t, m.Start(tb.ctx))
	require.NoError(t, m.Start(tb.ctx))
	require.Eventually(t, m.IsLeader, 5*time.Second, 10*time.Millisecond)
	m.Stop()
	require.False(t, m.IsLeader())
	m.Stop()
	require.NoError(t, m.Start(tb.ctx))
	require.Eventually(t, m.IsLeader, 5*time.Second, 10*time.Millisecond)
	m.Stop()

	canceled, cancel := context.WithCancel(tb.ctx)
	cancel()
	require.Error(t, m.Start(canceled))

	// Cancelling Start's context stops it too.
	ctx, cancel := context.WithCancel(tb.ctx)
	require.NoError(t, m.Start(ctx))
	require.Eventually(t, m.IsLeader, 5*time.Second, 10*time.Millisecond)
	cancel()
	require.Eventually(t, func() bool { return !m.IsLeader() }, 5*time.Second, 10*time.Millisecond)
	m.Stop()
}

// TestMaintainerPromotesPlanned: a document due in 1s is pickable within
// 2s with a running Maintainer and nobody calling mnt.
func TestMaintainerPromotesPlanned(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	m := tb.maintainer(t, MaintainerConfig{})
	require.NoError(t, m.Start(tb.ctx))

	pushed := time.Now()
	r, err := tb.store.DocPush(tb.ctx, tb.db, DocPushParams{Queue: "foo", Subject: "a", NextIteration: NowPlus("1 second"), Payload: "{}"})
	require.NoError(t, err)
	require.EqualValues(t, 1, r.QueuedDocs)
	tb.store.Metrics().Apply(r.Effects)
	require.EqualValues(t, 0, tb.mustDoc(t, "foo", "a").Status)

	var picked []Doc
	for len(picked) == 0 && time.Since(pushed) < 3*time.Second {
		res, err := tb.store.DocPick(tb.ctx, tb.db, DocPickParams{Queue: "foo", Limit: ptr(int32(1)), Duration: ptr("5m")})
		require.NoError(t, err)
		tb.store.Metrics().Apply(res.Effects)
		picked = res.Docs
		if len(picked) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	elapsed := time.Since(pushed)
	require.Len(t, picked, 1, "not pickable after %v", elapsed)
	require.Less(t, elapsed, 2*time.Second)
	require.GreaterOrEqual(t, elapsed, 900*time.Millisecond, "not before it is due")
	requireGaugesMatch(t, tb, "foo")
}

// TestMaintainerOrphansAndDead: a document picked with a 1s lock and never
// resolved is pickable again after about a second, with the attempt
// counted, and killed once max_attempts is reached.
func TestMaintainerOrphansAndDead(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	_, err := tb.store.QueueSetMaxAttempts(tb.ctx, tb.db, QueueSetMaxAttemptsParams{Queue: "foo", MaxAttempts: 2})
	require.NoError(t, err)
	m := tb.maintainer(t, MaintainerConfig{})
	require.NoError(t, m.Start(tb.ctx))
	tb.invoke(t, "doc_push(varchar,varchar)", "foo", "a")

	pick := func() []Doc {
		res, err := tb.store.DocPick(tb.ctx, tb.db, DocPickParams{Queue: "foo", Limit: ptr(int32(1)), Duration: ptr("1s")})
		require.NoError(t, err)
		tb.store.Metrics().Apply(res.Effects)
		return res.Docs
	}
	first := pick()
	require.Len(t, first, 1)
	require.EqualValues(t, 1, first[0].Attempts)
	start := time.Now()
	var again []Doc
	for len(again) == 0 && time.Since(start) < 5*time.Second {
		time.Sleep(20 * time.Millisecond)
		again = pick()
	}
	require.Len(t, again, 1)
	elapsed := time.Since(start)
	require.GreaterOrEqual(t, elapsed, time.Second, "not before the lock expired")
	require.Less(t, elapsed, 2500*time.Millisecond)
	require.EqualValues(t, 2, again[0].Attempts, "the abandoned attempt counts")

	// Second lock expires with attempts = max_attempts: killed.
	require.Eventually(t, func() bool {
		d, _ := tb.getDoc(t, "foo", "a")
		return d.Status == -1
	}, 5*time.Second, 20*time.Millisecond)
	require.EqualValues(t, 2, tb.mustDoc(t, "foo", "a").Attempts)
	require.Empty(t, pick())

	// Counters: one orphan, one dead mark, both errors.
	require.Eventually(t, func() bool { v, _ := tb.metric(t, "foo", "kll"); return v == 1 }, 5*time.Second, 20*time.Millisecond)
	for metric, want := range map[string]int64{"err": 2, "orp": 2, "pkd": 2, "kll": 1, "act": 0, "pnd": 0} {
		v, _ := tb.metric(t, "foo", metric)
		require.Equal(t, want, v, metric)
	}
	requireGaugesMatch(t, tb, "foo")
}

// lockHolder returns the backend pid holding the advisory lock key (bigint
// form) in the test's database, or 0.
func (tb *testBundle) lockHolder(t *testing.T, key int64) int {
	t.Helper()
	var pid int
	err := tb.pool.QueryRow(tb.ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND classid::bigint = $1 AND objid::bigint = $2`, key>>32, key&0xffffffff).Scan(&pid)
	if err == pgx.ErrNoRows {
		return 0
	}
	require.NoError(t, err)
	return pid
}

// TestMaintainerLeaderElection: maintainers on one database, as proxies:
// one leads and only it runs passes; when the leader's proxy dies (its
// connections vanish) or stops, another takes over within seconds.
func TestMaintainerLeaderElection(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	const key = 4242
	cfg := func() MaintainerConfig {
		return MaintainerConfig{Store: New(Config{Logger: tb.store.logger}), Interval: 50 * time.Millisecond, LeaderRetry: 200 * time.Millisecond, LockKey: key}
	}
	// m1 has a pool of its own, so that its "host" can vanish.
	poolA, err := pgxpool.New(tb.ctx, tb.pool.Config().ConnString())
	require.NoError(t, err)
	t.Cleanup(poolA.Close)
	c1 := cfg()
	c1.Pool = poolA
	m1, err := NewMaintainer(c1)
	require.NoError(t, err)
	t.Cleanup(m1.Stop)
	m2 := tb.maintainer(t, cfg())
	require.NoError(t, m1.Start(tb.ctx))
	require.Eventually(t, m1.IsLeader, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, m2.Start(tb.ctx))

	// Steady state: exactly one leader, and only it runs passes.
	before := m1.Passes()
	for range 20 {
		require.True(t, m1.IsLeader())
		require.False(t, m2.IsLeader())
		time.Sleep(50 * time.Millisecond)
	}
	require.Zero(t, m2.Passes(), "the follower never runs a pass")
	passes := m1.Passes() - before
	require.Greater(t, passes, int64(5), "about one pass per interval")
	require.Less(t, passes, int64(25))

	// The leader's passes promote due documents.
	for i := range 5 {
		tb.invoke(t, "doc_push(varchar,varchar,jsonb,timestamptz)", "foo", "p"+strconv.Itoa(i), "{}", Value{Now: true, Interval: "200 milliseconds"})
	}
	require.Eventually(t, func() bool {
		return tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs WHERE status = 1") == 5
	}, 5*time.Second, 20*time.Millisecond)
	// Its periodic flush, once the pass that promoted them (committed, as
	// the test just saw) has also applied its effects.
	require.Eventually(t, func() bool {
		if err := m1.metrics.Flush(tb.ctx, tb.db); err != nil {
			return false
		}
		m, err := tb.store.MetricGetCommon(tb.ctx, tb.db, QueueParams{Queue: "foo"})
		return err == nil && m.Pnd != nil && *m.Pnd == 5
	}, 5*time.Second, 20*time.Millisecond, "m1 applied and flushed the effects of its promotions")

	// m1's proxy dies: its pool is gone and its lock connection killed.
	pid := tb.lockHolder(t, key)
	require.NotZero(t, pid)
	poolA.Close()
	_, err = tb.pool.Exec(tb.ctx, "SELECT pg_terminate_backend($1)", pid)
	require.NoError(t, err)
	killed := time.Now()
	require.Eventually(t, m2.IsLeader, 5*time.Second, 10*time.Millisecond)
	require.Less(t, time.Since(killed), 3*time.Second)
	require.Eventually(t, func() bool { return !m1.IsLeader() }, 5*time.Second, 10*time.Millisecond, "the dead leader notices when it can")
	m1.Stop()
	newPid := tb.lockHolder(t, key)
	require.NotZero(t, newPid)
	require.NotEqual(t, pid, newPid)

	// A third maintainer follows; stopping the leader hands over to it.
	m3 := tb.maintainer(t, cfg())
	require.NoError(t, m3.Start(tb.ctx))
	time.Sleep(500 * time.Millisecond)
	require.False(t, m3.IsLeader())
	require.Zero(t, m3.Passes())
	m2.Stop()
	stopped := time.Now()
	require.Eventually(t, m3.IsLeader, 5*time.Second, 10*time.Millisecond)
	require.Less(t, time.Since(stopped), 3*time.Second)
	m3.Stop()

	// Each maintainer applied the effects of its own passes and flushed
	// them; with the pushes' effects, the counters match the documents:
	// every promotion counted once.
	require.NoError(t, tb.store.Metrics().Flush(tb.ctx, tb.db))
	requireGaugesMatch(t, tb, "foo")
}

// TestMaintainerNotifies: a LISTEN on fetchq__<q>__pnd receives the subject
// when the Maintainer makes a planned document pending.
func TestMaintainerNotifies(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	tb.invoke(t, "queue_enable_notify(varchar)", "foo")

	conn, err := pgx.ConnectConfig(tb.ctx, tb.pool.Config().ConnConfig)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	_, err = conn.Exec(tb.ctx, "LISTEN fetchq__foo__pnd")
	require.NoError(t, err)

	tb.invoke(t, "doc_push(varchar,varchar,jsonb,timestamptz)", "foo", "a", "{}", Value{Now: true, Interval: "300 milliseconds"})
	m := tb.maintainer(t, MaintainerConfig{})
	require.NoError(t, m.Start(tb.ctx))

	ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(ctx)
	require.NoError(t, err)
	require.Equal(t, "fetchq__foo__pnd", n.Channel)
	require.Equal(t, "a", n.Payload)
	require.EqualValues(t, 1, tb.mustDoc(t, "foo", "a").Status)
}

// TestMaintainerBadQueue: a queue whose tables are gone is logged and
// skipped; the others are maintained.
func TestMaintainerBadQueue(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "bad")
	tb.createQueue(t, "good")
	_, err := tb.pool.Exec(tb.ctx, "DROP TABLE fetchq_data.bad__docs")
	require.NoError(t, err)
	tb.invoke(t, "doc_push(varchar,varchar,jsonb,timestamptz)", "good", "a", "{}", future)
	tb.invoke(t, "doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)", "good", "a", "0", "0", past, "{}")
	m := tb.maintainer(t, MaintainerConfig{})

	for range 2 {
		res, err := m.RunPass(tb.ctx)
		require.NoError(t, err)
		require.Equal(t, 1, res.Queues)
		require.Equal(t, 1, res.FailedQueues)
	}
	require.EqualValues(t, 1, tb.mustDoc(t, "good", "a").Status)
	requireGaugesMatch(t, tb, "good")
	// The bad queue's mnt job is left alone; its other jobs ran (their
	// functions swallow the missing tables, as in 4.0.2).
	require.Zero(t, tb.count(t, "SELECT iterations FROM fetchq.jobs WHERE queue = 'bad' AND task = 'mnt'"))
	require.Equal(t, 3, tb.count(t, "SELECT count(*) FROM fetchq.jobs WHERE queue = 'bad' AND task <> 'mnt' AND iterations = 1"))
}

// TestMaintainerJobs: a pass runs the due jobs of fetchq.jobs as the
// extension's clients configure them and records each run in the table.
func TestMaintainerJobs(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	m := tb.maintainer(t, MaintainerConfig{})

	// Retention settings and data for drp; a log write for lgp.
	_, err := tb.pool.Exec(tb.ctx, `UPDATE fetchq.queues SET logs_retention = '1h', metrics_retention = '[{"from":"30d","to":"1d","retain":"day"}]';
		INSERT INTO fetchq_data.foo__logs (created_at, subject, message) VALUES (now() - interval '2 hours', 's', 'old'), (now(), 's', 'new');
		INSERT INTO fetchq_data.foo__metrics (created_at, metric, value) VALUES
			(date_trunc('day', now()) - interval '2 days' + interval '1 hour', 'cnt', 1),
			(date_trunc('day', now()) - interval '2 days' + interval '2 hours', 'cnt', 2);
		INSERT INTO fetchq.metrics_writes (created_at, queue, metric, increment) VALUES (now(), 'foo', 'x', 5)`)
	require.NoError(t, err)
	tb.invoke(t, "doc_push(varchar,varchar)", "foo", "a")

	res, err := m.RunPass(tb.ctx)
	require.NoError(t, err)
	require.Equal(t, 4, res.Jobs, "lgp, sts, cmp, drp")
	require.Zero(t, res.FailedJobs)
	// Every job ran once (mnt through the queue step) and is due again
	// after its delay.
	require.Equal(t, 5, tb.count(t, "SELECT count(*) FROM fetchq.jobs WHERE iterations = 1 AND attempts = 0 AND last_iteration IS NOT NULL"))
	for id, delay := range map[int]time.Duration{1: 3 * time.Second, 2: 100 * time.Millisecond, 3: 5 * time.Minute, 4: 10 * time.Minute, 5: 10 * time.Minute} {
		require.InDelta(t, delay.Seconds(), tb.dueIn(t, id).Seconds(), 2, "job %d", id)
	}
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__logs"), "drp: logs retention")
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__metrics WHERE created_at < now() - interval '1 day'"), "drp: metrics retention")
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq.metrics_writes"), "lgp")
	v, _ := tb.metric(t, "foo", "x")
	require.Equal(t, int64(5), v)
	// sts ran after lgp (each job commits on its own): x is in the snapshot.
	require.Equal(t, 5, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__metrics WHERE created_at >= now() - interval '1 minute'"), "sts: ent cnt v0 pnd x")

	res, err = m.RunPass(tb.ctx)
	require.NoError(t, err)
	require.Zero(t, res.Jobs, "nothing due")

	// The mnt job's settings.limit is the batch size; a pass goes back to
	// a queue with a full batch up to 20 times.
	_, err = tb.pool.Exec(tb.ctx, `UPDATE fetchq.jobs SET settings = '{"delay":"100ms","duration":"1m","limit":2}' WHERE task = 'mnt'`)
	require.NoError(t, err)
	for i := range 45 {
		s := "p" + strconv.Itoa(i)
		tb.invoke(t, "doc_push(varchar,varchar,jsonb,timestamptz)", "foo", s, "{}", future)
		tb.invoke(t, "doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)", "foo", s, "0", "0", past, "{}")
	}
	res, err = m.RunPass(tb.ctx)
	require.NoError(t, err)
	require.Equal(t, int64(40), res.Activated)
	require.Equal(t, 5, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs WHERE status = 0"))
	res, err = m.RunPass(tb.ctx)
	require.NoError(t, err)
	require.Equal(t, int64(5), res.Activated)
	requireGaugesMatch(t, tb, "foo")
}
