package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// callTimeout bounds one call of a worker. A call that takes longer is a
// hang, which the tests report as a failure: a client must get an answer or
// a closed connection, never silence.
const callTimeout = 20 * time.Second

// pick is one delivery of a document: who got it and until when it is
// theirs (the lock end, next_iteration as doc_pick returned it, computed by
// the database clock).
type pick struct {
	worker  int
	lockEnd time.Time
}

// tracker records what the workers of a run saw. It is safe for concurrent
// use.
type tracker struct {
	lock time.Duration // the lock every pick takes

	mu        sync.Mutex
	picks     map[string][]pick
	completed map[string]int // successful completes (affected_rows 1) per subject
	errs      map[string]int // errors by class
	bad       []string       // errors that are not clean: hangs, garbled messages

	nPicks, nCompleted, nReconnects atomic.Int64
	nLostLock                       atomic.Int64 // completes that found the document no longer held
	lastOK                          atomic.Int64 // unix nanoseconds of the latest successful complete
}

func newTracker(lock time.Duration) *tracker {
	return &tracker{lock: lock, picks: make(map[string][]pick), completed: make(map[string]int), errs: make(map[string]int)}
}

func (tr *tracker) picked(worker int, subject string, lockEnd time.Time) {
	tr.nPicks.Add(1)
	tr.mu.Lock()
	tr.picks[subject] = append(tr.picks[subject], pick{worker: worker, lockEnd: lockEnd})
	tr.mu.Unlock()
}

func (tr *tracker) completedOK(subject string) {
	tr.nCompleted.Add(1)
	tr.lastOK.Store(time.Now().UnixNano())
	tr.mu.Lock()
	tr.completed[subject]++
	tr.mu.Unlock()
}

// firstOKAfter waits up to d for a successful complete after t0 and returns
// how long after t0 it came; ok is false if none came.
func (tr *tracker) firstOKAfter(t0 time.Time, d time.Duration) (time.Duration, bool) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if last := time.Unix(0, tr.lastOK.Load()); last.After(t0) {
			return last.Sub(t0), true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, false
}

// failed records an error a worker got. Clean errors (an ErrorResponse with
// a SQLSTATE, a closed connection, a refused connection) are counted by
// class; the others are kept for the test to report.
func (tr *tracker) failed(op string, err error) {
	class, clean := classify(err)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.errs[op+": "+class]++
	if !clean && len(tr.bad) < 20 {
		tr.bad = append(tr.bad, fmt.Sprintf("%s: %v", op, err))
	}
}

// badf records a misbehaviour that is not an error of the driver.
func (tr *tracker) badf(format string, args ...any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.bad) < 20 {
		tr.bad = append(tr.bad, fmt.Sprintf(format, args...))
	}
}

func (tr *tracker) errorSummary() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(tr.errs)) {
		fmt.Fprintf(&b, "%s x%d; ", k, tr.errs[k])
	}
	return b.String()
}

func (tr *tracker) errCount(prefix string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for k, v := range tr.errs {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

// classify names an error and says whether it is clean: a server error with
// a SQLSTATE, or a connection that was closed or refused. A timeout (a hang)
// or anything else (a garbled message) is not.
func classify(err error) (class string, clean bool) {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		return "SQLSTATE " + pgErr.Code, pgErr.Code != ""
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		return "timeout", false
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused", true
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed):
		// pgx reports any end of stream as an unexpected EOF, between
		// messages or not; the raw clients tell the two apart.
		return "connection closed", true
	}
	return "other", false
}

// run describes a workload: workers that pick and complete documents of
// one queue through proxies.
type run struct {
	queue   string
	lock    string   // doc_pick's lock duration, e.g. "2s"
	limit   int      // documents per pick
	dsns    []string // worker i connects to dsns[i % len(dsns)]
	tr      *tracker
	pause   time.Duration // idle time after an empty pick
	workers sync.WaitGroup
}

func newRun(queue string, lock time.Duration, limit int, dsns ...string) *run {
	return &run{
		queue: queue, lock: lock.String(), limit: limit, dsns: dsns,
		tr: newTracker(lock), pause: 20 * time.Millisecond,
	}
}

// start starts n workers; they stop when ctx ends. wait waits for them.
func (r *run) start(ctx context.Context, n int) {
	for i := range n {
		r.workers.Add(1)
		go func() {
			defer r.workers.Done()
			r.worker(ctx, i, r.dsns[i%len(r.dsns)])
		}()
	}
}

func (r *run) wait() { r.workers.Wait() }

// worker picks and completes until ctx ends, reconnecting after any error.
func (r *run) worker(ctx context.Context, id int, dsn string) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	for ctx.Err() == nil {
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			c, err := pgx.Connect(cctx, dsn)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					r.tr.failed("connect", err)
					sleep(ctx, 20*time.Millisecond+rand.N(30*time.Millisecond))
				}
				continue
			}
			r.tr.nReconnects.Add(1)
			conn = c
		}
		if !r.round(ctx, conn, id) {
			closeConn(conn)
			conn = nil
		}
	}
}

// round picks up to limit documents and completes each. It returns false
// when the connection must be dropped.
func (r *run) round(ctx context.Context, conn *pgx.Conn, id int) bool {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	rows, err := conn.Query(cctx, "SELECT subject, next_iteration FROM fetchq.doc_pick($1, 0, $2, $3)", r.queue, r.limit, r.lock)
	var subjects []string
	if err == nil {
		var subject string
		var lockEnd time.Time
		_, err = pgx.ForEachRow(rows, []any{&subject, &lockEnd}, func() error {
			r.tr.picked(id, subject, lockEnd)
			subjects = append(subjects, subject)
			return nil
		})
	}
	if err != nil {
		if ctx.Err() == nil {
			r.tr.failed("pick", err)
		}
		return false
	}
	if len(subjects) == 0 {
		sleep(ctx, r.pause)
		return true
	}
	for _, s := range subjects {
		var n *int32
		err := conn.QueryRow(cctx, "SELECT * FROM fetchq.doc_complete($1, $2)", r.queue, s).Scan(&n)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				r.tr.failed("complete", err)
			}
			return false
		case n == nil:
			// The catch-all NULL: an error was swallowed.
			r.tr.badf("doc_complete(%s) returned NULL", s)
		case *n == 1:
			r.tr.completedOK(s)
		default:
			// The lock expired before the complete and the document was
			// requeued (or completed by the late complete of a former
			// holder): no longer ours.
			r.tr.nLostLock.Add(1)
		}
	}
	return true
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// subject names document i.
func subject(i int) string { return fmt.Sprintf("d%07d", i) }

// push pushes documents 0..n-1 through dsn in batches, with the push-many
// form of doc_push, retrying a batch (on a new connection) until it
// succeeds: pushing an existing subject is a no-op, so a batch whose answer
// was lost can be pushed again. It returns when all are pushed or ctx ends.
func (r *run) push(ctx context.Context, dsn string, n, batch int) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	var data strings.Builder
	for from := 0; from < n; {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			c, err := pgx.Connect(cctx, dsn)
			cancel()
			if err != nil {
				r.tr.failed("push connect", err)
				sleep(ctx, 50*time.Millisecond)
				continue
			}
			conn = c
		}
		to := min(from+batch, n)
		data.Reset()
		for i := from; i < to; i++ {
			if i > from {
				data.WriteString(", ")
			}
			fmt.Fprintf(&data, "('%s', 0, '{}', {DATA})", subject(i))
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		var queued int
		err := conn.QueryRow(cctx, "SELECT * FROM fetchq.doc_push($1, 0, NOW(), $2)", r.queue, data.String()).Scan(&queued)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				r.tr.failed("push", err)
			}
			closeConn(conn)
			conn = nil
			continue
		}
		from = to
	}
	return nil
}

// counts returns the number of documents of queue and of completed ones,
// read straight from Postgres.
func counts(ctx context.Context, pool *pgxpool.Pool, queue string) (total, done int, err error) {
	err = pool.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE status = 3) FROM "+
		pgx.Identifier{"fetchq_data", queue + "__docs"}.Sanitize()).Scan(&total, &done)
	return total, done, err
}

// waitCompleted polls Postgres until n documents of queue are completed,
// calling tick with the count after each poll (for a test to inject faults
// as the run progresses). It fails the test after timeout.
func waitCompleted(t *testing.T, pool *pgxpool.Pool, queue string, n int, timeout time.Duration, r *run, tick func(done int)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var done int
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, d, err := counts(ctx, pool, queue)
		cancel()
		if err == nil {
			done = d
			if done >= n {
				return
			}
		}
		if tick != nil {
			tick(done)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v only %d of %d documents are completed (picks %d, completes %d, errors: %s)",
				timeout, done, n, r.tr.nPicks.Load(), r.tr.nCompleted.Load(), r.tr.errorSummary())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// report is what verify found, for the test log.
type report struct {
	docs, picks, repicked, completes, lostLock, reconnects int
	pickedDocs                                             int
}

func (rp report) String() string {
	return fmt.Sprintf("documents %d, picks %d (documents picked more than once: %d), successful completes %d, completes after the lock was lost %d, connections %d",
		rp.docs, rp.picks, rp.repicked, rp.completes, rp.lostLock, rp.reconnects)
}

// verify checks the end state of a run against Postgres, read directly:
//   - exactly n documents, all completed (nothing lost), each completed once
//     (iterations = 1);
//   - every error a worker got was clean;
//   - and what checkDeliveries checks.
func verify(t *testing.T, pool *pgxpool.Pool, r *run, n int) report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.Empty(t, r.tr.bad, "workers got unclean errors or answers (errors by class: %s)", r.tr.errorSummary())
	total, done, err := counts(ctx, pool, r.queue)
	require.NoError(t, err)
	require.Equal(t, n, total, "documents in the queue")
	require.Equal(t, n, done, "completed documents: %d lost", n-done)
	rp := checkDeliveries(t, pool, r)
	rp.docs = n
	require.Equal(t, n, rp.pickedDocs, "documents picked")
	require.LessOrEqual(t, rp.completes, n)
	return rp
}

// checkDeliveries checks the picks and completes the workers saw against
// the documents in Postgres:
//   - no two picks of a document overlap: each pick's lock starts (lock end
//     minus the lock duration, database clock) no earlier than the previous
//     pick's lock ends;
//   - no document was picked after the transaction that completed it
//     began (its last_iteration, the now() of that transaction), and a completed document was completed once
//     (iterations = 1);
//   - every successful complete a worker saw is a completed document, and
//     no document was reported completed twice.
func checkDeliveries(t *testing.T, pool *pgxpool.Pool, r *run) report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tr := r.tr
	rows, err := pool.Query(ctx, "SELECT subject, status, last_iteration, iterations FROM "+
		pgx.Identifier{"fetchq_data", r.queue + "__docs"}.Sanitize())
	require.NoError(t, err)
	type doc struct {
		status      int
		completedAt time.Time
	}
	docs := make(map[string]doc)
	var subj string
	var status int
	var last *time.Time
	var iterations int64
	_, err = pgx.ForEachRow(rows, []any{&subj, &status, &last, &iterations}, func() error {
		d := doc{status: status}
		if status == 3 {
			if iterations != 1 || last == nil {
				return fmt.Errorf("completed document %s has iterations %d, want 1 (completed once)", subj, iterations)
			}
			d.completedAt = *last
		}
		docs[subj] = d
		return nil
	})
	require.NoError(t, err)

	tr.mu.Lock()
	defer tr.mu.Unlock()
	rp := report{completes: int(tr.nCompleted.Load()), lostLock: int(tr.nLostLock.Load()), reconnects: int(tr.nReconnects.Load()), pickedDocs: len(tr.picks)}
	var problems []string
	problem := func(format string, args ...any) {
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	for s, ps := range tr.picks {
		rp.picks += len(ps)
		if len(ps) > 1 {
			rp.repicked++
		}
		slices.SortFunc(ps, func(a, b pick) int { return a.lockEnd.Compare(b.lockEnd) })
		d, ok := docs[s]
		if !ok {
			problem("document %s was picked but is not in the queue", s)
			continue
		}
		for i, p := range ps {
			start := p.lockEnd.Add(-tr.lock)
			if i > 0 && start.Before(ps[i-1].lockEnd) {
				problem("document %s: worker %d picked it at %s while worker %d held it until %s",
					s, p.worker, start.Format(time.RFC3339Nano), ps[i-1].worker, ps[i-1].lockEnd.Format(time.RFC3339Nano))
			}
			// Equal only when the pick and the complete ran in one
			// transaction (one now()).
			if d.status == 3 && start.After(d.completedAt) {
				problem("document %s: worker %d picked it at %s, after it was completed at %s",
					s, p.worker, start.Format(time.RFC3339Nano), d.completedAt.Format(time.RFC3339Nano))
			}
		}
	}
	for s, c := range tr.completed {
		if c > 1 {
			problem("document %s was reported completed %d times", s, c)
		}
		if docs[s].status != 3 {
			problem("document %s was reported completed but has status %d", s, docs[s].status)
		}
	}
	require.Empty(t, problems, "double deliveries, deliveries after completion or completes that did not happen")
	return rp
}
