package faults

import (
	"context"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestAbandonedPick: a worker picks a document and dies (its TCP connection
// drops, no Terminate, no complete). Nobody else gets the document within
// its lock; after the lock it comes back with the attempt counted; after
// max_attempts (3 here) abandoned picks the maintainer kills it (status
// -1) and it is never delivered again. A worker that dies inside a
// transaction loses its pick with the transaction: the document is
// pickable again at once, its attempt not counted.
func TestAbandonedPick(t *testing.T) {
	t.Parallel()
	const maxAttempts = 3
	const lock = time.Second

	db := pgtest.NewDB(t)
	p := newProxy(t, "proxy", db.ConnString(""))
	dsn := p.dsn(db.Name)
	initFetchq(t, dsn, "ab")
	pool := db.Pool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	admin := connectT(t, dsn)
	var affected int
	var reindexed bool
	require.NoError(t, admin.QueryRow(ctx, "SELECT * FROM fetchq.queue_set_max_attempts('ab', $1)", maxAttempts).Scan(&affected, &reindexed))
	require.Equal(t, 1, affected)
	var queued int
	require.NoError(t, admin.QueryRow(ctx, "SELECT * FROM fetchq.doc_push('ab', 'doc')").Scan(&queued))
	require.Equal(t, 1, queued)

	probe := connectT(t, dsn)
	var prevEnd time.Time
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		worker, err := pgx.Connect(ctx, dsn)
		require.NoError(t, err)
		var subject string
		var attempts int
		var lockEnd time.Time
		until := time.Now().Add(lock + 5*time.Second)
		for {
			err := worker.QueryRow(ctx, "SELECT subject, attempts, next_iteration FROM fetchq.doc_pick('ab', 0, 1, $1)", lock.String()).
				Scan(&subject, &attempts, &lockEnd)
			if err == nil {
				break
			}
			require.ErrorIs(t, err, pgx.ErrNoRows)
			require.True(t, time.Now().Before(until), "attempt %d: the abandoned document did not come back after its lock", attempt)
			time.Sleep(20 * time.Millisecond)
		}
		require.Equal(t, "doc", subject)
		require.Equal(t, attempt, attempts, "each abandoned pick counts as an attempt")
		if attempt > 1 {
			require.False(t, lockEnd.Add(-lock).Before(prevEnd), "attempt %d picked at %v, before the previous lock ended at %v", attempt, lockEnd.Add(-lock), prevEnd)
		}
		prevEnd = lockEnd

		// Held: nobody else gets it.
		rows, err := probe.Query(ctx, "SELECT subject FROM fetchq.doc_pick('ab', 0, 1, '1s')")
		require.NoError(t, err)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Empty(t, got, "attempt %d: a held document is not delivered to another worker", attempt)

		die(worker)
	}

	// The third lock expires: the document is dead, not requeued. Probe
	// through the proxy meanwhile: it must never be delivered again.
	deadline := prevEnd.Add(lock + 3*time.Second)
	status := 2
	for time.Now().Before(deadline) && status != -1 {
		rows, err := probe.Query(ctx, "SELECT subject FROM fetchq.doc_pick('ab', 0, 1, '1s')")
		require.NoError(t, err)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Empty(t, got, "a document at max_attempts is not delivered again")
		require.NoError(t, pool.QueryRow(ctx, "SELECT status, attempts FROM fetchq_data.ab__docs WHERE subject = 'doc'").Scan(&status, &queued))
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, -1, status, "the document is killed after %d abandoned picks", maxAttempts)
	require.Equal(t, maxAttempts, queued, "its attempts stay counted")

	// A pick inside a transaction dies with the transaction.
	require.NoError(t, admin.QueryRow(ctx, "SELECT * FROM fetchq.doc_push('ab', 'tx')").Scan(&queued))
	worker, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	tx, err := worker.Begin(ctx)
	require.NoError(t, err)
	var subject string
	require.NoError(t, tx.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('ab', 0, 1, '1h')").Scan(&subject))
	require.Equal(t, "tx", subject)
	died := time.Now()
	die(worker)
	var attempts int
	for until := time.Now().Add(5 * time.Second); ; {
		err := probe.QueryRow(ctx, "SELECT subject, attempts FROM fetchq.doc_pick('ab', 0, 1, '1h')").Scan(&subject, &attempts)
		if err == nil {
			break
		}
		require.ErrorIs(t, err, pgx.ErrNoRows)
		require.True(t, time.Now().Before(until), "a pick rolled back with its dead worker's transaction is not pickable again")
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, "tx", subject)
	require.Equal(t, 1, attempts, "the rolled-back pick did not count")
	t.Logf("abandoned picks: killed after %d attempts; a transaction's pick came back %v after its worker died",
		maxAttempts, time.Since(died).Round(time.Millisecond))
}

// die drops a client's TCP connection without a Terminate message, as a
// crashed worker does.
func die(c *pgx.Conn) {
	_ = c.PgConn().Conn().Close()
	closeConn(c)
}

// connectT opens a connection closed when the test ends.
func connectT(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { closeConn(c) })
	return c
}
