package backend

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBatchedCompletesRunAloneWhenTheBatchFails: a complete whose payload
// a constraint refuses fails its batch; every call of that batch then
// runs alone and gets what it gets alone: the others complete their
// documents.
func TestBatchedCompletesRunAloneWhenTheBatchFails(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "rc")
	b := NewBatcher(BatcherConfig{Pool: tb.pool, Store: tb.store})
	ctx := tb.ctx
	for _, s := range []string{"z", "good", "bad"} {
		_, err := tb.store.Invoke(ctx, tb.db, "doc_push(varchar,varchar)", []Value{{Text: "rc"}, {Text: s}})
		require.NoError(t, err)
	}
	require.Len(t, tb.pick(t, "rc", 3), 3)
	_, err := tb.pool.Exec(ctx, `ALTER TABLE fetchq_data.rc__docs ADD CONSTRAINT no_bad CHECK (payload IS NULL OR NOT payload ? 'bad')`)
	require.NoError(t, err)

	// z's batch waits for a row lock; bad and good gather meanwhile and
	// make the next batch, which the constraint fails.
	lock, err := tb.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = lock.Exec(ctx, "SELECT 1 FROM fetchq_data.rc__docs WHERE subject = 'z' FOR UPDATE")
	require.NoError(t, err)
	cz, ok := b.Prepare("doc_complete(varchar,varchar)", []Value{{Text: "rc"}, {Text: "z"}})
	require.True(t, ok)
	cz.Start()
	time.Sleep(200 * time.Millisecond)
	badArgs := []Value{{Text: "rc"}, {Text: "bad"}, {Text: `{"bad": 1}`}}
	cb, ok := b.Prepare("doc_complete(varchar,varchar,jsonb)", badArgs)
	require.True(t, ok)
	cb.Start()
	cg, ok := b.Prepare("doc_complete(varchar,varchar)", []Value{{Text: "rc"}, {Text: "good"}})
	require.True(t, ok)
	cg.Start()
	require.NoError(t, lock.Rollback(ctx))

	for name, c := range map[string]*Call{"z": cz, "good": cg} {
		res, err := c.Wait(ctx)
		require.NoError(t, err, name)
		require.Equal(t, [][][]byte{{[]byte("1")}}, res.Rows, name)
		require.NotEmpty(t, res.Effects, name)
	}
	bad, err := cb.Wait(ctx)
	require.NoError(t, err)
	alone, err := tb.store.Invoke(ctx, tb.db, "doc_complete(varchar,varchar,jsonb)", badArgs)
	require.NoError(t, err)
	require.Equal(t, alone.Rows, bad.Rows, "the refused call gets what it gets alone")

	require.Equal(t, map[string]int{"z": 3, "good": 3, "bad": 2}, tb.statuses(t, "rc"))
}

// TestBatchTimeoutAnswersAtOnce: a batch that runs out of time (a table
// lock held elsewhere) answers every call of it with an error at once:
// its calls are not run again one by one, each waiting out the timeout
// again, and the next batch starts.
func TestBatchTimeoutAnswersAtOnce(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "st")
	const timeout, held, calls = time.Second, 8 * time.Second, 6
	b := NewBatcher(BatcherConfig{Pool: tb.pool, Store: tb.store, Timeout: timeout})
	lock, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	_, err = lock.Exec(tb.ctx, "LOCK TABLE fetchq_data.st__docs IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)
	start := time.Now()
	released := time.AfterFunc(held, func() { _ = lock.Rollback(context.Background()) })
	t.Cleanup(func() { released.Stop(); _ = lock.Rollback(context.Background()) })
	var wg sync.WaitGroup
	errs := make([]error, calls)
	took := make([]time.Duration, calls)
	for i := range calls {
		wg.Go(func() {
			_, errs[i] = b.Invoke(tb.ctx, pushID, pushArgs("st", "s"+strconv.Itoa(i), 0, 0, Value{Now: true}, "{}"))
			took[i] = time.Since(start)
		})
		if i == 0 {
			time.Sleep(100 * time.Millisecond) // the first leads a batch alone
		}
	}
	wg.Wait()
	for i, err := range errs {
		require.Less(t, took[i], held, "call %d waited for the lock's release (all: %v)", i, took)
		require.Error(t, err, "call %d, answered after %v", i, took[i])
	}
	released.Stop()
	require.NoError(t, lock.Rollback(tb.ctx))
	var n int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, "SELECT count(*) FROM fetchq_data.st__docs").Scan(&n))
	require.Zero(t, n, "a push that failed was written")
}

// TestInvokeOutlivesItsContext: a call whose caller's context ends while
// its batch runs still gets the batch's outcome, with its counter
// effects, so that they can be applied.
func TestInvokeOutlivesItsContext(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "oc")
	b := NewBatcher(BatcherConfig{Pool: tb.pool, Store: tb.store})
	lock, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	_, err = lock.Exec(tb.ctx, "LOCK TABLE fetchq_data.oc__docs IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(tb.ctx, 200*time.Millisecond)
	defer cancel()
	go func() {
		time.Sleep(600 * time.Millisecond)
		_ = lock.Rollback(tb.ctx)
	}()
	res, err := b.Invoke(ctx, pushID, pushArgs("oc", "s1", 0, 0, Value{Now: true}, "{}"))
	require.NoError(t, err)
	require.Equal(t, [][][]byte{{[]byte("1")}}, res.Rows)
	require.NotEmpty(t, res.Effects)
}

// TestBatchablePickDurations: a pick batches only with a lock duration of
// a fixed length: a day or a month depends on the session's TimeZone,
// which the client may set differently from the service pool's.
func TestBatchablePickDurations(t *testing.T) {
	t.Parallel()
	b := &Batcher{}
	pick4 := "doc_pick(varchar,integer,integer,varchar)"
	pick2d := "doc_pick(varchar,varchar)"
	for dur, want := range map[string]bool{"5m": true, "90 seconds": true, "1 hour 30 min": true, "1 day": false, "2 weeks": false, "1 mon": false, "": false, "-5m": false} {
		require.Equal(t, want, b.Batchable(pick4, []Value{{Text: "q"}, {Text: "0"}, {Text: "1"}, {Text: dur}}), "%q", dur)
		require.Equal(t, want, b.Batchable(pick2d, []Value{{Text: "q"}, {Text: dur}}), "%q", dur)
	}
	require.True(t, b.Batchable(pick4, []Value{{Text: "q"}, {Text: "0"}, {Text: "1"}, {Null: true}}))
	require.True(t, b.Batchable("doc_pick(varchar,integer)", []Value{{Text: "q"}, {Text: "3"}}))
	require.True(t, b.Batchable("doc_pick(varchar)", []Value{{Text: "q"}}))
}
