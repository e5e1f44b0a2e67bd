package faults

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/internal/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// TestSigtermUnderLoad: the proxy gets SIGTERM while pgx workers and raw
// protocol clients (simple-protocol calls and 4 MB forwarded results) run
// and one client is inside a transaction, in the middle of a statement;
// the queue's table is locked at that moment, so that every worker's call
// is in flight, and released 300 ms after the signal.
// The transaction finishes: its statement returns, its complete and COMMIT
// succeed, and only then does the proxy exit, with status 0. A forwarded
// statement in flight in autocommit returns its result, and so do the
// intercepted calls in flight. Every client
// sees whole results, or a FATAL 57P01 (or a closed connection, or a
// refused one once the listener is closed) between messages: no half
// message, no other error, no hang. No document was held twice, every
// complete a client was told of happened.
func TestSigtermUnderLoad(t *testing.T) {
	t.Parallel()
	const lock = 5 * time.Second
	n := size(4000, 20_000)

	db := pgtest.NewDB(t)
	p := newProxy(t, "proxy", db.ConnString(""), "--shutdown-timeout", "20s")
	dsn := p.dsn(db.Name)
	initFetchq(t, dsn, "q")
	initFetchq(t, dsn, "tq") // the transaction's own queue: its locks must not be in the way
	pool := db.Pool(t)

	r := newRun("q", lock, 2, dsn)
	ctx, cancel := context.WithCancel(context.Background())
	defer r.wait()
	defer cancel()
	require.NoError(t, r.push(ctx, dsn, n, 1000))
	r.start(ctx, 16)
	r.startRaw(ctx, 4, p.addr, db.Name)

	// Under load.
	for r.tr.nCompleted.Load() < int64(n/10) {
		time.Sleep(10 * time.Millisecond)
	}

	// A client in a transaction, in a statement when SIGTERM comes.
	tctx, tcancel := context.WithTimeout(context.Background(), time.Minute)
	defer tcancel()
	txConn := connectT(t, dsn)
	var txSubject string
	var txLockEnd time.Time
	var pushed int
	require.NoError(t, txConn.QueryRow(tctx, "SELECT * FROM fetchq.doc_push('tq', 'tdoc')").Scan(&pushed))
	require.Equal(t, 1, pushed)
	tx, err := txConn.Begin(tctx)
	require.NoError(t, err)
	require.NoError(t, tx.QueryRow(tctx, "SELECT subject, next_iteration FROM fetchq.doc_pick('tq', 0, 1, $1)", lock.String()).Scan(&txSubject, &txLockEnd))
	slept := make(chan error, 1)
	go func() {
		_, err := tx.Exec(tctx, "SELECT pg_sleep(3)")
		slept <- err
	}()
	// And a client in autocommit, in a forwarded statement.
	sleeper := connectT(t, dsn)
	slept2 := make(chan error, 1)
	go func() {
		_, err := sleeper.Exec(tctx, "SELECT pg_sleep(3.1)")
		slept2 <- err
	}()

	// The statements running.
	require.Eventually(t, func() bool {
		var k int
		err := pool.QueryRow(tctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(3%)' AND state = 'active'").Scan(&k)
		return err == nil && k == 2
	}, 10*time.Second, 10*time.Millisecond, "the transaction's statement is running")
	// Hold the queue's table so that the workers' calls are all in
	// flight (waiting for the lock) when SIGTERM comes; release it after.
	lockConn, err := pool.Acquire(tctx)
	require.NoError(t, err)
	defer lockConn.Release()
	lockTx, err := lockConn.Begin(tctx)
	require.NoError(t, err)
	_, err = lockTx.Exec(tctx, "LOCK TABLE fetchq_data.q__docs IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var k int
		err := pool.QueryRow(tctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()").Scan(&k)
		return err == nil && k > 0
	}, 10*time.Second, 10*time.Millisecond, "calls wait for the locked table")
	time.Sleep(100 * time.Millisecond) // let more calls queue up behind it
	before := r.tr.nCompleted.Load()
	beforePicks := r.tr.nPicks.Load()
	sigterm := time.Now()
	require.NoError(t, p.signal(syscall.SIGTERM))
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, lockTx.Commit(tctx))

	// The transaction goes on to its end.
	require.NoError(t, <-slept, "the statement in flight at SIGTERM completes")
	var affected int
	require.NoError(t, tx.QueryRow(tctx, "SELECT * FROM fetchq.doc_complete('tq', $1)", txSubject).Scan(&affected))
	require.Equal(t, 1, affected)
	require.NoError(t, tx.Commit(tctx), "the transaction open at SIGTERM commits")
	committed := time.Now()

	// Then the session is ended the way Postgres ends it.
	for until := time.Now().Add(5 * time.Second); ; {
		// It may still answer a statement or two before the shutdown
		// gets to it.
		if _, err = txConn.Exec(tctx, "SELECT 1"); err != nil {
			break
		}
		require.True(t, time.Now().Before(until), "the session is not closed once its transaction is over")
		time.Sleep(5 * time.Millisecond)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		require.Equal(t, "57P01", pgErr.Code)
	} else {
		class, clean := classify(err)
		require.True(t, clean, "closing the idle session: %v (%s)", err, class)
	}

	require.NoError(t, p.wait(30*time.Second), "the proxy exits with status 0 after SIGTERM")
	exited := time.Now()
	cancel()
	r.wait()
	require.True(t, exited.After(committed), "the proxy waited for the transaction")
	answered := r.tr.nCompleted.Load() + r.tr.nPicks.Load() - before - beforePicks
	require.Positive(t, answered, "the intercepted calls waiting for the table at SIGTERM were answered (errors: %s)", r.tr.errorSummary())
	require.NoError(t, <-slept2, "the autocommit statement in flight at SIGTERM completes")

	require.Empty(t, r.tr.bad, "clients got unclean errors or answers (errors by class: %s)", r.tr.errorSummary())
	// The only server error a client may see is the shutdown's.
	for class := range strings.SplitSeq(r.tr.errorSummary(), "; ") {
		if strings.Contains(class, "SQLSTATE") || strings.Contains(class, "FATAL") || strings.Contains(class, "ERROR") {
			require.Contains(t, class, "57P01", "an error other than admin_shutdown during a graceful shutdown: %s", class)
			require.NotContains(t, class, " then ", "a FATAL followed by more messages: %s", class)
		}
	}
	rp := checkDeliveries(t, pool, r)
	var status int
	require.NoError(t, pool.QueryRow(tctx, "SELECT status FROM fetchq_data.tq__docs WHERE subject = $1", txSubject).Scan(&status))
	require.Equal(t, 3, status, "the transaction's complete is in the database")
	t.Logf("SIGTERM under load: exit %v after the signal (the open transaction committed after %v; %d picked or completed documents answered to calls in flight); %s; errors seen by clients: %s",
		exited.Sub(sigterm).Round(time.Millisecond), committed.Sub(sigterm).Round(time.Millisecond), answered, rp, r.tr.errorSummary())
}
