package backend

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFlushDoesNotWaitForeverOnATransaction: a transaction that reset a
// queue's counters (holding their rows) and then reads them completes,
// though an autocommit read of another session started a flush meanwhile
// that needs those rows: the flush gives up after its lock timeout (its
// deltas stay pending) instead of holding, for as long as the
// transaction lasts, the lock the transaction's read waits for.
func TestFlushDoesNotWaitForeverOnATransaction(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "q")
	r, err := tb.store.DocPush(tb.ctx, tb.db, DocPushParams{Queue: "q", Subject: "a", NextIteration: Now(), Payload: "{}"})
	require.NoError(t, err)
	tb.store.Metrics().Apply(r.Effects) // pending deltas for q

	resetDone, readerStarted := make(chan struct{}), make(chan struct{})
	txDone, readDone := make(chan error, 1), make(chan error, 1)
	go func() {
		txDone <- tb.db.Atomic(tb.ctx, func(tx DB) error {
			if _, err := tb.store.MetricReset(tb.ctx, tx, QueueParams{Queue: "q"}); err != nil {
				return err
			}
			close(resetDone)
			<-readerStarted
			time.Sleep(300 * time.Millisecond) // the reader's flush now waits on the reset's rows
			_, err := tb.store.MetricGet(tb.ctx, tx, MetricParams{Queue: "q", Metric: "cnt"})
			return err
		})
	}()
	<-resetDone
	go func() {
		close(readerStarted)
		_, err := tb.store.MetricGet(tb.ctx, tb.db, MetricParams{Queue: "q", Metric: "pnd"})
		readDone <- err
	}()
	for name, done := range map[string]chan error{"transaction": txDone, "reader": readDone} {
		select {
		case err := <-done:
			require.NoError(t, err, name)
		case <-time.After(15 * time.Second):
			t.Fatalf("the %s is still blocked: the flush holds the metrics lock while it waits on the transaction's rows", name)
		}
	}
}
