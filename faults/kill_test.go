package faults

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestKillProxyRepeatedly: while 32 workers pick and complete N documents
// (pushed during the run through the proxy), the proxy is killed with
// SIGKILL several times and started again on the same address. Workers
// reconnect. Every document ends up completed, none is lost, no two workers
// hold one within its lock, none is delivered after its completion.
func TestKillProxyRepeatedly(t *testing.T) {
	t.Parallel()
	n := size(6000, 100_000)
	kills := size(3, 12)
	const workers = 32
	const lock = 2 * time.Second

	db := pgtest.NewDB(t)
	p := newProxy(t, "proxy", db.ConnString(""))
	dsn := p.dsn(db.Name)
	initFetchq(t, dsn, "q")
	pool := db.Pool(t)

	began := time.Now()
	r := newRun("q", lock, 4, dsn)
	ctx, cancel := context.WithCancel(context.Background())
	defer r.wait()
	defer cancel()
	pushed := make(chan error, 1)
	go func() { pushed <- r.push(ctx, dsn, n, 1000) }()
	r.start(ctx, workers)

	// Kill at evenly spaced points of progress; the last well before the
	// end, so that the documents its victims held come back and finish.
	var restarts []time.Duration
	next := 1
	waitCompleted(t, pool, "q", n, size(3*time.Minute, 30*time.Minute), r, func(done int) {
		if next > kills || done < next*n/(kills+1) {
			return
		}
		next++
		p.kill()
		time.Sleep(rand.N(200 * time.Millisecond))
		t0 := time.Now()
		p.start()
		restarts = append(restarts, time.Since(t0))
	})
	require.NoError(t, <-pushed)
	cancel()
	r.wait()
	require.Equal(t, kills, next-1, "kills injected")

	rp := verify(t, pool, r, n)
	t.Logf("kill -9 x%d (restart to accepting: %v); %s; errors seen by workers: %s; wall time %v",
		kills, restarts, rp, r.tr.errorSummary(), time.Since(began).Round(time.Millisecond))
	// Each kill cut connections off: the workers saw it and reconnected.
	require.Greater(t, rp.reconnects, workers, "workers reconnected after the kills")
}
