package faults

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/fetchq/fetchq-proxy/internal/pgserver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// resumeWithin is how soon after Postgres accepts connections again the
// workers must be completing documents again.
const resumeWithin = 5 * time.Second

// TestPostgresRestart: a dedicated Postgres is stopped and started again
// while workers (pgx clients and raw protocol clients) pick and complete
// documents through one proxy that keeps running: first a fast shutdown,
// then an immediate one (a crash, recovered at the next start). Clients get
// clean errors only (an ErrorResponse with a SQLSTATE, or a connection
// closed between messages; never a hang or half a message) and reconnect;
// work resumes within 5 s of Postgres being back; the maintenance leader
// is back too (documents whose holders lost their connection come back
// after their lock); every document ends up completed, none lost, none
// held twice within a lock.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	n := size(5000, 50_000)
	restarts := size(2, 6)
	const lock = 2 * time.Second

	srv, opts := dedicatedServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Cleanup(func() { _ = srv.StopImmediate() }) // the last one started
	upstream := srv.ConnString(pgserver.SuperUser, "postgres")
	pool, err := pgxpool.New(ctx, upstream)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	p := newProxy(t, "proxy", upstream)
	dsn := p.dsn("postgres")
	initFetchq(t, dsn, "q")

	began := time.Now()
	r := newRun("q", lock, 4, dsn)
	wctx, stop := context.WithCancel(context.Background())
	defer r.wait()
	defer stop()
	pushed := make(chan error, 1)
	go func() { pushed <- r.push(wctx, dsn, n, 500) }()
	r.start(wctx, 24)
	r.startRaw(wctx, 4, p.addr, "postgres")

	var resumes []time.Duration
	next := 1
	waitCompleted(t, pool, "q", n, size(3*time.Minute, 20*time.Minute), r, func(done int) {
		if next > restarts || done < next*n/(restarts+1) {
			return
		}
		immediate := next%2 == 0
		next++
		if immediate {
			require.NoError(t, srv.StopImmediate())
		} else {
			require.NoError(t, srv.Stop())
		}
		// Down long enough for every worker to notice and fail to
		// reconnect at least once.
		time.Sleep(500 * time.Millisecond)
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		srv, err = pgserver.Start(sctx, opts)
		require.NoError(t, err)
		up := time.Now()
		resumed, ok := r.tr.firstOKAfter(up, 3*resumeWithin)
		require.True(t, ok, "no document completed within %v of Postgres being back (errors: %s)", 3*resumeWithin, r.tr.errorSummary())
		require.Less(t, resumed, resumeWithin, "work resumed %v after Postgres was back", resumed)
		resumes = append(resumes, resumed)

		// The maintainer's leader connection was lost with the server:
		// one proxy (ours) must lead again.
		require.Eventually(t, func() bool {
			return leaders(t, pool) == 1
		}, resumeWithin, 50*time.Millisecond, "a maintenance leader holds the advisory lock after the restart")
	})
	require.NoError(t, <-pushed)
	stop()
	r.wait()
	require.Equal(t, restarts, next-1, "restarts injected")
	require.True(t, p.running(), "the proxy kept running through the restarts")

	rp := verify(t, pool, r, n)
	t.Logf("Postgres restarts x%d (fast and immediate in turn); work resumed after %v; %s; errors seen by clients: %s; wall time %v",
		restarts, resumes, rp, r.tr.errorSummary(), time.Since(began).Round(time.Millisecond))
	require.Positive(t, r.tr.errCount("raw "), "the raw clients saw the restarts")
	require.Positive(t, rp.repicked, "documents held when Postgres went down came back after their lock")
}

// dedicatedServer starts a Postgres of the test's own, which it may stop,
// crash and start again without disturbing the package's shared server. It
// is stopped and removed when the test ends. opts starts it again on the
// same data directory and socket.
func dedicatedServer(t *testing.T) (*pgserver.Server, pgserver.Options) {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "fqr") // short: the socket lives in it
	require.NoError(t, err)
	// Fast (no fsync: the machine does not crash, only Postgres), but
	// synchronous_commit on: with it off, an immediate shutdown loses
	// transactions whose commit was already acknowledged, and with them
	// completes and picks the workers were told about (a document then
	// shows as completed twice, or held by two workers).
	opts := pgserver.Options{DataDir: dir, Fast: true, Settings: map[string]string{
		"max_connections": "200", "synchronous_commit": "on",
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := pgserver.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = srv.StopImmediate()
		_ = os.RemoveAll(dir)
	})
	return srv, opts
}

// leaders counts the sessions holding the maintainers' advisory lock in
// pool's database, sampled from pg_locks. A bigint key shows as classid
// (high 32 bits) and objid (low 32 bits) with objsubid 1.
func leaders(t *testing.T, pool *pgxpool.Pool) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n int
	key := uint64(backend.DefaultMaintainerLockKey)
	err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1`, int64(key>>32), int64(key&0xffffffff)).Scan(&n)
	if err != nil {
		return -1
	}
	return n
}
