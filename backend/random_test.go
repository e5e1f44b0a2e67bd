package backend

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tally counts committed operations by the event counters they move.
type tally map[string]int64

func (t tally) merge(o tally) {
	for k, v := range o {
		t[k] += v
	}
}

// randomWorker runs random operations on one queue, like one client of the
// proxy: autocommit calls, and transaction blocks that commit or roll back.
// Effects are applied only once the work committed, as the proxy does.
type randomWorker struct {
	tb   *testBundle
	id   int
	rng  *rand.Rand
	held []string // subjects this worker picked and may resolve
	seq  int
}

// op runs one random operation on db and returns its effects and tally.
// held is updated in place.
func (w *randomWorker) op(ctx context.Context, db DB) (Effects, tally, error) {
	s := w.tb.store
	t := tally{}
	switch r := w.rng.IntN(100); {
	case r < 28: // push
		w.seq++
		subject := "w" + strconv.Itoa(w.id) + "-" + strconv.Itoa(w.seq)
		if w.rng.IntN(20) == 0 && w.seq > 1 {
			subject = "w" + strconv.Itoa(w.id) + "-" + strconv.Itoa(w.seq-1) // a duplicate
		}
		next := NowMinus("1 second")
		switch w.rng.IntN(10) {
		case 0, 1, 2:
			next = NowPlus(strconv.Itoa(w.rng.IntN(300)) + " milliseconds")
		case 3:
			next = NowPlus("1 hour")
		}
		r, err := s.DocPush(ctx, db, DocPushParams{Queue: "q", Subject: subject, NextIteration: next, Payload: `{"w":` + strconv.Itoa(w.id) + `}`})
		t[MetricEnt] += int64(r.QueuedDocs)
		return r.Effects, t, err
	case r < 50: // pick
		lock := "5m"
		if w.rng.IntN(8) == 0 {
			lock = "150 milliseconds" // left to expire: an orphan, or dead
		}
		r, err := s.DocPick(ctx, db, DocPickParams{Queue: "q", Limit: ptr(int32(1 + w.rng.IntN(3))), Duration: &lock})
		for _, d := range r.Docs {
			if lock == "5m" {
				w.held = append(w.held, d.Subject)
			}
		}
		t[MetricPkd] += int64(len(r.Docs))
		return r.Effects, t, err
	case r < 55: // a counter read, flushing in autocommit
		_, err := s.MetricGetCommon(ctx, db, QueueParams{Queue: "q"})
		return nil, t, err
	}
	if len(w.held) == 0 {
		return nil, t, nil
	}
	i := w.rng.IntN(len(w.held))
	subject := w.held[i]
	w.held = append(w.held[:i], w.held[i+1:]...)
	switch r := w.rng.IntN(100); {
	case r < 35:
		r, err := s.DocComplete(ctx, db, DocCompleteParams{Queue: "q", Subject: subject})
		if r.AffectedRows != nil {
			t[MetricPrc] += int64(*r.AffectedRows)
			t["complete"] += int64(*r.AffectedRows)
		}
		return r.Effects, t, err
	case r < 60:
		r, err := s.DocReject(ctx, db, DocRejectParams{Queue: "q", Subject: subject, Message: "no", Details: "{}"})
		t[MetricPrc] += int64(r.AffectedRows)
		t[MetricRej] += int64(r.AffectedRows)
		t[MetricErr] += int64(r.AffectedRows)
		return r.Effects, t, err
	case r < 70:
		r, err := s.DocKill(ctx, db, DocCompleteParams{Queue: "q", Subject: subject})
		if r.AffectedRows != nil {
			t[MetricPrc] += int64(*r.AffectedRows)
			t["kill"] += int64(*r.AffectedRows)
		}
		return r.Effects, t, err
	case r < 90:
		next := NowMinus("1 second")
		if w.rng.IntN(2) == 0 {
			next = NowPlus(strconv.Itoa(w.rng.IntN(300)) + " milliseconds")
		}
		r, err := s.DocReschedule(ctx, db, DocRescheduleParams{Queue: "q", Subject: subject, NextIteration: next})
		t[MetricPrc] += int64(r.AffectedRows)
		t[MetricRes] += int64(r.AffectedRows)
		return r.Effects, t, err
	default:
		r, err := s.DocDrop(ctx, db, DocDropParams{Queue: "q", Subject: subject})
		t[MetricPrc] += int64(r.AffectedRows)
		t[MetricDrp] += int64(r.AffectedRows)
		return r.Effects, t, err
	}
}

// TestRandomizedCounters runs 10,000 random operations from concurrent
// workers (autocommit calls and transactions that commit or roll back)
// while the Maintainer's passes and metric flushes run alongside, then
// checks that the counters agree with the documents and with the committed
// operations.
func TestRandomizedCounters(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "q")
	_, err := tb.store.QueueSetMaxAttempts(tb.ctx, tb.db, QueueSetMaxAttemptsParams{Queue: "q", MaxAttempts: 3})
	require.NoError(t, err)
	m := tb.store.Metrics()
	mt, err := NewMaintainer(MaintainerConfig{Pool: tb.pool, Store: tb.store})
	require.NoError(t, err)

	const workers, opsPerWorker = 4, 2500
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	var (
		mu       sync.Mutex
		expected = tally{}
	)
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { // maintenance passes
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			r, err := mt.RunPass(tb.ctx)
			if err != nil {
				t.Errorf("pass: %v", err)
				return
			}
			mu.Lock()
			expected[MetricOrp] += r.Rescheduled + r.Killed
			expected[MetricErr] += r.Rescheduled + r.Killed
			expected["dead"] += r.Killed
			mu.Unlock()
		}
	}()
	go func() { // flushes, as every proxy's maintainer does
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(7 * time.Millisecond):
			}
			if err := m.Flush(tb.ctx, tb.db); err != nil {
				t.Errorf("flush: %v", err)
				return
			}
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var rolledBack, committedTx, aborted int64
	for id := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &randomWorker{tb: tb, id: id, rng: rand.New(rand.NewPCG(seed, uint64(id)))}
			for n := 0; n < opsPerWorker; {
				if w.rng.IntN(100) >= 15 {
					e, tl, err := w.op(tb.ctx, tb.db)
					n++
					if err != nil {
						errs <- err
						return
					}
					m.Apply(e)
					mu.Lock()
					expected.merge(tl)
					mu.Unlock()
					continue
				}
				// A transaction block of 1 to 4 operations that commits or
				// rolls back; its effects are applied only if it committed.
				rollback := w.rng.IntN(2) == 0
				heldBefore := append([]string(nil), w.held...)
				var effects Effects
				tl := tally{}
				k := 1 + w.rng.IntN(4)
				n += k
				err := tb.db.Atomic(tb.ctx, func(tx DB) error {
					for range k {
						e, t1, err := w.op(tb.ctx, tx)
						if err != nil {
							return err
						}
						effects = append(effects, e...)
						tl.merge(t1)
					}
					if rollback {
						return errRollback
					}
					return nil
				})
				switch {
				case err == nil:
					m.Apply(effects)
					mu.Lock()
					expected.merge(tl)
					committedTx++
					mu.Unlock()
				case errors.Is(err, errRollback) || caught(err):
					// Rolled back (a deadlock between two transactions is
					// possible and rolls back too).
					w.held = heldBefore
					mu.Lock()
					if errors.Is(err, errRollback) {
						rolledBack++
					} else {
						aborted++
					}
					mu.Unlock()
				default:
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	t.Logf("transactions: %d committed, %d rolled back, %d aborted; tally %v", committedTx, rolledBack, aborted, expected)
	require.NotZero(t, rolledBack)
	require.NotZero(t, expected[MetricOrp], "some locks expired")

	// Documents by status, as Postgres counts them.
	counts := map[string]int64{MetricCnt: 0, MetricPln: 0, MetricPnd: 0, MetricAct: 0, MetricCpl: 0, MetricKll: 0}
	rows, err := tb.pool.Query(tb.ctx, "SELECT status, count(*) FROM fetchq_data.q__docs GROUP BY status")
	require.NoError(t, err)
	for rows.Next() {
		var status int
		var n int64
		require.NoError(t, rows.Scan(&status, &n))
		counts[MetricCnt] += n
		counts[map[int]string{0: MetricPln, 1: MetricPnd, 2: MetricAct, 3: MetricCpl, -1: MetricKll}[status]] = n
	}
	require.NoError(t, rows.Err())
	require.Equal(t, expected["complete"], counts[MetricCpl])

	// The event counters, as committed.
	events := map[string]int64{
		MetricEnt: expected[MetricEnt], MetricPkd: expected[MetricPkd], MetricPrc: expected[MetricPrc],
		MetricRes: expected[MetricRes], MetricRej: expected[MetricRej], MetricDrp: expected[MetricDrp],
		MetricErr: expected[MetricErr], MetricOrp: expected[MetricOrp],
		MetricCpl: expected["complete"],
	}
	want := map[string]int64{}
	for k, v := range counts {
		want[k] = v
	}
	for k, v := range events {
		want[k] = v
	}
	want["v0"] = counts[MetricCnt]

	check := func(s *Store, db DB) {
		t.Helper()
		for metric, n := range want {
			r, err := s.MetricGet(tb.ctx, db, MetricParams{Queue: "q", Metric: metric})
			require.NoError(t, err)
			require.Equal(t, n, r.CurrentValue, "metric_get %s", metric)
		}
		c, err := s.MetricGetCommon(tb.ctx, db, QueueParams{Queue: "q"})
		require.NoError(t, err)
		all, err := s.MetricGetAll(tb.ctx, db)
		require.NoError(t, err)
		require.Len(t, all.Queues, 1)
		for _, got := range []CommonMetrics{c, all.Queues[0].CommonMetrics} {
			for metric, p := range map[string]*int64{
				"cnt": got.Cnt, "pnd": got.Pnd, "pln": got.Pln, "act": got.Act, "cpl": got.Cpl, "kll": got.Kll,
				"ent": got.Ent, "drp": got.Drp, "pkd": got.Pkd, "prc": got.Prc, "res": got.Res, "rej": got.Rej, "orp": got.Orp, "err": got.Err,
			} {
				require.NotNil(t, p, metric)
				require.Equal(t, want[metric], *p, "metric_get_common/all %s", metric)
			}
		}
		comp, err := s.MetricCompute(tb.ctx, db, QueueParams{Queue: "q"})
		require.NoError(t, err)
		require.Equal(t, StatusCounts{Cnt: counts[MetricCnt], Pln: counts[MetricPln], Pnd: counts[MetricPnd], Act: counts[MetricAct], Cpl: counts[MetricCpl], Kll: counts[MetricKll]}, comp)
	}
	// Inside a transaction (pending deltas added, nothing written) ...
	require.ErrorIs(t, tb.db.Atomic(tb.ctx, func(tx DB) error { check(tb.store, tx); return errRollback }), errRollback)
	// ... in autocommit (flushed first) ...
	check(tb.store, tb.db)
	// ... and from another process after a clean stop.
	mt.Stop()
	require.NoError(t, m.Flush(tb.ctx, tb.db))
	check(New(Config{}), tb.db)
}
