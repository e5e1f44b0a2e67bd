package backend

import (
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConcurrentPick: 32 workers picking from 10,000 documents get each
// document exactly once (FOR UPDATE SKIP LOCKED).
func TestConcurrentPick(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")

	const total, workers = 10000, 32
	tb.pushPending(t, "foo", total, func(i int) string {
		return "('doc" + strconv.Itoa(i) + "', " + strconv.Itoa(i%7) + `, '{"i":` + strconv.Itoa(i) + `}', {DATA})`
	})

	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		picked = make(map[string]int, total)
		errs   = make(chan error, workers)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			limit := int32(1 + w%8)
			for {
				res, err := tb.store.DocPick(tb.ctx, tb.db, DocPickParams{Queue: "foo", Limit: &limit, Duration: ptr("5m")})
				if err != nil {
					errs <- err
					return
				}
				if len(res.Docs) == 0 {
					return
				}
				// Each batch comes in pick order.
				for i := 1; i < len(res.Docs); i++ {
					if res.Docs[i-1].Priority < res.Docs[i].Priority {
						errs <- &Error{Code: "XX000", Message: "batch out of priority order"}
						return
					}
				}
				mu.Lock()
				for _, d := range res.Docs {
					picked[d.Subject]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	requirePickedOnce(t, errs, picked, total)
	require.Equal(t, total, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs WHERE status = 2 AND attempts = 1"))
}

// requirePickedOnce fails the test on any error the workers sent on errs
// (which it closes) and unless picked counts each of n documents once.
func requirePickedOnce(t *testing.T, errs chan error, picked map[string]int, n int) {
	t.Helper()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, picked, n)
	for s, c := range picked {
		require.Equal(t, 1, c, "document %s picked %d times", s, c)
	}
}
