package proxy_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"
)

// backendPID returns the pid of the upstream backend serving c.
func backendPID(t *testing.T, c *pgconn.PgConn) string {
	t.Helper()
	res, err := c.Exec(context.Background(), "SELECT pg_backend_pid()").ReadAll()
	require.NoError(t, err)
	return string(res[0].Rows[0][0])
}

// TestUpstreamFatal: when Postgres ends a connection (a FATAL such as
// pg_terminate_backend's 57P01), the client sees what it would see
// directly: the FATAL, then the connection closes, nothing in between or
// after. A service-pool connection ending under a batched call is not the
// client's connection: the call fails with an ERROR of the same code and
// the session goes on.
func TestUpstreamFatal(t *testing.T) {
	t.Parallel()
	b, m, _ := setupFull(t)
	conn := fetchqConn(t, b, "uf")
	m.Stop() // its passes would wait for the locked table too
	ctx := ctxT(t, time.Minute)
	_, err := conn.Exec(ctx, "SELECT * FROM fetchq.doc_push('uf', 'a', 0, 0, NOW() - INTERVAL '1 second', '{}')")
	require.NoError(t, err)
	admin := b.db.Pool(t)
	terminate := func(pid string) {
		t.Helper()
		var ok bool
		require.NoError(t, admin.QueryRow(ctx, "SELECT pg_terminate_backend($1::int)", pid).Scan(&ok))
		require.True(t, ok)
	}
	lockDocs := func() func() {
		t.Helper()
		tx, err := admin.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "LOCK TABLE fetchq_data.uf__docs IN ACCESS EXCLUSIVE MODE")
		require.NoError(t, err)
		return func() { _ = tx.Rollback(context.Background()) }
	}
	// waiter returns the pid of a backend other than the locker waiting
	// for the documents table.
	waiter := func() string {
		t.Helper()
		var pid string
		require.Eventually(t, func() bool {
			err := admin.QueryRow(ctx, "SELECT pid::text FROM pg_locks WHERE relation = 'fetchq_data.uf__docs'::regclass AND NOT granted LIMIT 1").Scan(&pid)
			return err == nil
		}, 10*time.Second, 10*time.Millisecond)
		return pid
	}
	query := func(hc *pgconn.HijackedConn, sql string) {
		t.Helper()
		hc.Frontend.Send(&pgproto3.Query{String: sql})
		require.NoError(t, hc.Frontend.Flush())
	}

	t.Run("idle", func(t *testing.T) {
		c := connect(t, b.proxyDSN("", ""))
		pid := backendPID(t, c)
		hc, err := c.Hijack()
		require.NoError(t, err)
		defer hc.Conn.Close()
		terminate(pid)
		requireClosedWith(t, hc, "57P01", "idle session")
	})

	t.Run("call on the client's connection", func(t *testing.T) {
		c := connect(t, b.proxyDSN("", ""))
		pid := backendPID(t, c)
		hc, err := c.Hijack()
		require.NoError(t, err)
		defer hc.Conn.Close()
		unlock := lockDocs()
		defer unlock()
		// In a transaction block the call runs on the client's own
		// connection.
		query(hc, "BEGIN; SELECT * FROM fetchq.doc_pick('uf', 0, 1, '5m')")
		require.Equal(t, pid, waiter())
		terminate(pid)
		msgs := []pgproto3.BackendMessage{}
		_ = hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			m, err := hc.Frontend.Receive()
			if err != nil {
				break
			}
			if e, ok := m.(*pgproto3.ErrorResponse); ok {
				require.Equal(t, "FATAL", e.Severity)
				require.Equal(t, "57P01", e.Code, e.Message)
				// Nothing may follow a FATAL.
				_, err := hc.Frontend.Receive()
				require.Error(t, err, "a message after the FATAL")
				return
			}
			msgs = append(msgs, m)
			require.Less(t, len(msgs), 10, "no FATAL: %#v", msgs)
		}
		t.Fatalf("the connection closed without a FATAL after %#v", msgs)
	})

	t.Run("batched call on the service pool", func(t *testing.T) {
		c := connect(t, b.proxyDSN("", ""))
		own := backendPID(t, c)
		hc, err := c.Hijack()
		require.NoError(t, err)
		defer hc.Conn.Close()
		unlock := lockDocs()
		defer unlock()
		query(hc, "SELECT * FROM fetchq.doc_pick('uf', 0, 1, '5m')")
		pid := waiter()
		require.NotEqual(t, own, pid, "the batched call runs on the service pool")
		terminate(pid)
		ex := receive(t, hc.Conn, hc.Frontend, 1)
		require.Len(t, ex.errs, 1, "%+v", ex)
		require.Equal(t, "ERROR", ex.errs[0].Severity)
		require.Equal(t, "57P01", ex.errs[0].Code)
		require.False(t, ex.closed)
		unlock()
		// The session goes on.
		query(hc, "SELECT subject FROM fetchq.doc_pick('uf', 0, 1, '5m')")
		ex = receive(t, hc.Conn, hc.Frontend, 1)
		require.Empty(t, ex.errs)
		require.Equal(t, "TDCZ", ex.types, "one document picked")
		var status int
		require.NoError(t, admin.QueryRow(ctx, "SELECT status FROM fetchq_data.uf__docs WHERE subject = 'a'").Scan(&status))
		require.Equal(t, 2, status)
	})
}
