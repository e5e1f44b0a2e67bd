package proxy_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// TestShutdownDrains: Shutdown closes idle sessions at once (57P01), lets a
// session in a transaction commit, then closes it too.
func TestShutdownDrains(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, time.Minute)
	_, err := b.db.Pool(t).Exec(ctx, "CREATE TABLE drained (x int)")
	require.NoError(t, err)

	idle := connect(t, b.proxyDSN("", ""))
	busy := connect(t, b.proxyDSN("", ""))
	_, err = busy.Exec(ctx, "BEGIN; INSERT INTO drained VALUES (1)").ReadAll()
	require.NoError(t, err)
	require.Equal(t, byte('T'), busy.TxStatus())

	shutdown := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shutdown <- b.srv.Shutdown(sctx)
	}()

	// The idle session is told why and closed (it may still run a query
	// or two before the shutdown goroutine gets to it).
	require.Eventually(t, func() bool {
		_, err = idle.Exec(ctx, "SELECT 1").ReadAll()
		return err != nil
	}, 10*time.Second, 10*time.Millisecond)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "57P01", pgErr.Code)

	// New connections are refused.
	time.Sleep(100 * time.Millisecond)
	_, err = pgconn.Connect(ctx, b.proxyDSN("", ""))
	require.Error(t, err)

	// The busy session finishes its transaction.
	_, err = busy.Exec(ctx, "INSERT INTO drained VALUES (2); COMMIT").ReadAll()
	require.NoError(t, err)
	require.NoError(t, <-shutdown)

	var n int
	require.NoError(t, b.db.Pool(t).QueryRow(ctx, "SELECT count(*) FROM drained").Scan(&n))
	require.Equal(t, 2, n)
}

// TestShutdownTimeoutClosesBusy: a session still in a transaction when the
// shutdown context ends is closed, and its transaction rolls back.
func TestShutdownTimeoutClosesBusy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, time.Minute)
	_, err := b.db.Pool(t).Exec(ctx, "CREATE TABLE abandoned (x int)")
	require.NoError(t, err)
	busy := connect(t, b.proxyDSN("", ""))
	_, err = busy.Exec(ctx, "BEGIN; INSERT INTO abandoned VALUES (1)").ReadAll()
	require.NoError(t, err)

	sctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, b.srv.Shutdown(sctx), context.DeadlineExceeded)
	_, err = busy.Exec(ctx, "COMMIT").ReadAll()
	require.Error(t, err)

	require.Eventually(t, func() bool {
		var n int
		err := b.db.Pool(t).QueryRow(ctx, "SELECT count(*) FROM abandoned").Scan(&n)
		return err == nil && n == 0
	}, 10*time.Second, 50*time.Millisecond)
}

// TestShutdownWaitsForCalls: a session whose only work in flight is an
// intercepted call (nothing forwarded: batched on the service pool, or run
// by the proxy on the client's connection) is busy, not idle: Shutdown
// lets the call finish and the client gets its answer before the 57P01.
func TestShutdownWaitsForCalls(t *testing.T) {
	t.Parallel()
	b, _, _ := setupFull(t)
	conn := fetchqConn(t, b, "sd")
	ctx := ctxT(t, time.Minute)
	for _, s := range []string{"a", "b"} {
		_, err := conn.Exec(ctx, "SELECT * FROM fetchq.doc_push('sd', $1, 0, 0, NOW() - INTERVAL '1 second', '{}')", s)
		require.NoError(t, err)
	}

	// Hold the documents table so that calls wait for it.
	locker, err := b.db.Pool(t).Begin(ctx)
	require.NoError(t, err)
	defer locker.Rollback(context.Background())
	_, err = locker.Exec(ctx, "LOCK TABLE fetchq_data.sd__docs IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)

	type answer struct {
		subject string
		err     error
	}
	answers := make(chan answer, 2)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		c, err := pgx.Connect(ctx, b.proxyDSN("", ""))
		require.NoError(t, err)
		defer c.Close(context.Background())
		go func() {
			var a answer
			a.err = c.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('sd', 0, 1, '5m')", mode).Scan(&a.subject)
			answers <- a
		}()
	}
	// Both calls wait for the lock.
	require.Eventually(t, func() bool {
		var n int
		err := b.db.Pool(t).QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE relation = 'fetchq_data.sd__docs'::regclass AND NOT granted").Scan(&n)
		return err == nil && n >= 1
	}, 10*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond)

	shutdown := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shutdown <- b.srv.Shutdown(sctx)
	}()
	time.Sleep(300 * time.Millisecond) // Shutdown would have closed them by now
	require.NoError(t, locker.Rollback(ctx))

	got := map[string]bool{}
	for range 2 {
		a := <-answers
		require.NoError(t, a.err, "a call in flight at shutdown gets its answer")
		got[a.subject] = true
	}
	require.Equal(t, map[string]bool{"a": true, "b": true}, got)
	require.NoError(t, <-shutdown)
}
