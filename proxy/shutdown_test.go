package proxy_test

import (
	"context"
	"testing"
	"time"

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
