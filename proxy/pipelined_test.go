package proxy_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// pipeCall is one statement of a pipeline, sent with its own Sync.
type pipeCall struct {
	sql    string
	params []string
}

// pipeResult is what the client received for a pipeCall.
type pipeResult struct {
	rows [][]string
	err  error
}

// runPipeline sends calls as one pipeline, each statement followed by its
// own Sync (each its own transaction), before reading any answer, and
// returns the answers in order.
func runPipeline(t *testing.T, ctx context.Context, conn *pgconn.PgConn, calls []pipeCall) []pipeResult {
	t.Helper()
	p := conn.StartPipeline(ctx)
	for _, c := range calls {
		params := make([][]byte, len(c.params))
		for i, v := range c.params {
			params[i] = []byte(v)
		}
		p.SendQueryParams(c.sql, params, nil, nil, nil)
		p.SendPipelineSync()
	}
	require.NoError(t, p.Flush())
	out := make([]pipeResult, len(calls))
	for i := range calls {
		res, err := p.GetResults()
		if err != nil {
			out[i].err = err
		} else {
			rr, ok := res.(*pgconn.ResultReader)
			require.True(t, ok, "call %d: got %T", i, res)
			r := rr.Read()
			out[i].err = r.Err
			for _, row := range r.Rows {
				vals := make([]string, len(row))
				for j, v := range row {
					vals[j] = string(v)
				}
				out[i].rows = append(out[i].rows, vals)
			}
		}
		res, err = p.GetResults()
		require.NoError(t, err, "call %d: sync", i)
		_, ok := res.(*pgconn.PipelineSync)
		require.True(t, ok, "call %d: got %T, want the Sync's answer", i, res)
	}
	require.NoError(t, p.Close())
	return out
}

// TestPipelinedCalls: calls a client pipelines, each with its own Sync,
// are batched together and answered in order with what each would have
// got alone; what follows a call sees its effects.
func TestPipelinedCalls(t *testing.T) {
	t.Parallel()
	b, _, batcher := setupFull(t)
	conn := fetchqConn(t, b, "pipe", "pipe2")
	ctx := ctxT(t, time.Minute)

	const n = 200
	push := make([]pipeCall, n)
	for i := range push {
		push[i] = pipeCall{"SELECT queued_docs FROM fetchq.doc_push('pipe', $1, 0, 0, NOW(), '{}')", []string{fmt.Sprintf("d%03d", i)}}
	}
	// The same subject twice in one pipeline: the first push inserts it.
	push = append(push, pipeCall{"SELECT queued_docs FROM fetchq.doc_push('pipe', $1, 0, 0, NOW(), '{}')", []string{"d000"}})
	calls0, batches0 := batcher.Stats()
	res := runPipeline(t, ctx, conn.PgConn(), push)
	for i, r := range res {
		require.NoError(t, r.err, "push %d", i)
		want := "1"
		if i == n {
			want = "0"
		}
		require.Equal(t, [][]string{{want}}, r.rows, "push %d", i)
	}
	calls1, batches1 := batcher.Stats()
	require.EqualValues(t, n+1, calls1-calls0, "every push went through the batcher")
	require.Less(t, batches1-batches0, int64(n/4), "pipelined pushes were not batched together")
	t.Logf("%d pipelined pushes in %d batches", calls1-calls0, batches1-batches0)

	rows, err := conn.Query(ctx, "SELECT subject FROM fetchq.doc_pick('pipe', 0, $1, '5m')", n)
	require.NoError(t, err)
	picked, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Len(t, picked, n)
	calls1, batches1 = batcher.Stats()

	complete := make([]pipeCall, 0, n+2)
	for _, s := range picked {
		complete = append(complete, pipeCall{"SELECT affected_rows FROM fetchq.doc_complete('pipe', $1)", []string{s}})
	}
	complete = append(complete,
		pipeCall{"SELECT affected_rows FROM fetchq.doc_complete('pipe', $1)", []string{picked[0]}},
		// A forwarded statement after the calls sees all of them.
		pipeCall{"SELECT count(*) FROM fetchq_data.pipe__docs WHERE status = 3", nil})
	res = runPipeline(t, ctx, conn.PgConn(), complete)
	for i, r := range res[:n] {
		require.NoError(t, r.err, "complete %d", i)
		require.Equal(t, [][]string{{"1"}}, r.rows, "complete %d (%s)", i, picked[i])
	}
	require.NoError(t, res[n].err)
	require.Equal(t, [][]string{{"0"}}, res[n].rows, "a document completed twice")
	require.NoError(t, res[n+1].err)
	require.Equal(t, [][]string{{fmt.Sprint(n)}}, res[n+1].rows)
	calls2, batches2 := batcher.Stats()
	require.EqualValues(t, n+1, calls2-calls1)
	require.Less(t, batches2-batches1, int64(n/4), "pipelined completes were not batched together")
	t.Logf("%d pipelined completes in %d batches", calls2-calls1, batches2-batches1)

	// Calls of different kinds in one pipeline see each other's effects,
	// in order: push, pick, complete, then a read of the document.
	for round := range 20 {
		subj := fmt.Sprintf("x%02d", round)
		res = runPipeline(t, ctx, conn.PgConn(), []pipeCall{
			{"SELECT queued_docs FROM fetchq.doc_push('pipe2', $1, 0, 0, NOW(), '{}')", []string{subj}},
			{"SELECT subject FROM fetchq.doc_pick('pipe2', 0, 1, '5m')", nil},
			{"SELECT affected_rows FROM fetchq.doc_complete('pipe2', $1)", []string{subj}},
			{"SELECT affected_rows FROM fetchq.doc_complete('pipe2', $1)", []string{subj}},
			{"SELECT status, iterations FROM fetchq_data.pipe2__docs WHERE subject = $1", []string{subj}},
		})
		for i, r := range res {
			require.NoError(t, r.err, "round %d call %d", round, i)
		}
		require.Equal(t, [][]string{{"1"}}, res[0].rows, "round %d push", round)
		require.Equal(t, [][]string{{subj}}, res[1].rows, "round %d pick", round)
		require.Equal(t, [][]string{{"1"}}, res[2].rows, "round %d complete", round)
		require.Equal(t, [][]string{{"0"}}, res[3].rows, "round %d second complete", round)
		require.Equal(t, [][]string{{"3", "1"}}, res[4].rows, "round %d document", round)
	}

	// An error in one pipelined call is that call's alone.
	res = runPipeline(t, ctx, conn.PgConn(), []pipeCall{
		{"SELECT queued_docs FROM fetchq.doc_push('pipe2', $1, 0, 0, NOW(), '{}')", []string{"e1"}},
		{"SELECT queued_docs FROM fetchq.doc_push('pipe2', $1, 0, 0, NOW(), '{\"a\": 1e999999}')", []string{"e2"}},
		{"SELECT queued_docs FROM fetchq.doc_push('pipe2', $1, 0, 0, NOW(), '{}')", []string{"e3"}},
	})
	require.NoError(t, res[0].err)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, res[1].err, &pgErr)
	require.Equal(t, "22003", pgErr.Code)
	require.NoError(t, res[2].err)
	require.Equal(t, [][]string{{"1"}}, res[2].rows)
	var count int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM fetchq_data.pipe2__docs WHERE subject IN ('e1', 'e2', 'e3')").Scan(&count))
	require.Equal(t, 2, count)
}

// TestPipelinedCallsBeyondLimit: a pipeline longer than the proxy keeps in
// flight per session is answered whole and in order; a client that leaves
// with calls in flight ends its session cleanly.
func TestPipelinedCallsBeyondLimit(t *testing.T) {
	t.Parallel()
	b, _, batcher := setupFull(t)
	conn := fetchqConn(t, b, "pipel")
	ctx := ctxT(t, time.Minute)

	const n = 3000 // more than the proxy's per-session limit (1024)
	calls := make([]pipeCall, n)
	for i := range calls {
		calls[i] = pipeCall{"SELECT queued_docs FROM fetchq.doc_push('pipel', $1, 0, 0, NOW(), '{}')", []string{fmt.Sprintf("d%05d", i)}}
	}
	calls0, batches0 := batcher.Stats()
	res := runPipeline(t, ctx, conn.PgConn(), calls)
	for i, r := range res {
		require.NoError(t, r.err, "push %d", i)
		require.Equal(t, [][]string{{"1"}}, r.rows, "push %d", i)
	}
	calls1, batches1 := batcher.Stats()
	require.EqualValues(t, n, calls1-calls0)
	t.Logf("%d pipelined pushes in %d batches", calls1-calls0, batches1-batches0)
	var count int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM fetchq_data.pipel__docs").Scan(&count))
	require.Equal(t, n, count)

	// A client that sends a pipeline and leaves without reading.
	leaver, err := pgconn.Connect(ctx, b.proxyDSN("", ""))
	require.NoError(t, err)
	p := leaver.StartPipeline(ctx)
	for i := range 500 {
		p.SendQueryParams("SELECT queued_docs FROM fetchq.doc_push('pipel', $1, 0, 0, NOW(), '{}')",
			[][]byte{[]byte(fmt.Sprintf("l%03d", i))}, nil, nil, nil)
		p.SendPipelineSync()
	}
	require.NoError(t, p.Flush())
	require.NoError(t, leaver.Conn().Close())

	// The proxy goes on serving; what it read of the pipeline took effect
	// once, nothing else (the count settles).
	last, all, distinct := -1, 0, 0
	require.Eventually(t, func() bool {
		if err := conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT subject) FROM fetchq_data.pipel__docs WHERE subject LIKE 'l%'").Scan(&all, &distinct); err != nil {
			return false
		}
		settled := all == last
		last = all
		return settled
	}, 10*time.Second, 200*time.Millisecond)
	require.Equal(t, all, distinct)
	require.LessOrEqual(t, all, 500)
	t.Logf("the client that left had %d of its 500 pushes taken", all)
	res = runPipeline(t, ctx, conn.PgConn(), calls[:3])
	for i, r := range res {
		require.NoError(t, r.err)
		require.Equal(t, [][]string{{"0"}}, r.rows, "push %d of a subject already queued", i)
	}
}

// TestPipelinedReschedulesAndRejects: the Node client's reschedule and
// reject texts, pipelined, are batched and take effect as alone.
func TestPipelinedReschedulesAndRejects(t *testing.T) {
	t.Parallel()
	b, _, batcher := setupFull(t)
	conn := fetchqConn(t, b, "piper")
	ctx := ctxT(t, time.Minute)
	const n = 40
	push := make([]pipeCall, n)
	for i := range push {
		push[i] = pipeCall{"SELECT queued_docs FROM fetchq.doc_push('piper', $1, 0, 0, NOW(), '{}')", []string{fmt.Sprintf("d%02d", i)}}
	}
	for i, r := range runPipeline(t, ctx, conn.PgConn(), push) {
		require.NoError(t, r.err, "push %d", i)
	}
	rows, err := conn.Query(ctx, "SELECT subject FROM fetchq.doc_pick('piper', 0, $1, '5m')", n)
	require.NoError(t, err)
	picked := 0
	for rows.Next() {
		picked++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, n, picked)

	calls := make([]pipeCall, 0, n)
	for i := range n / 2 {
		calls = append(calls, pipeCall{"SELECT * FROM fetchq.doc_reschedule( 'piper', $1, NOW() + INTERVAL '1h' , '{\"a\":1}' )", []string{fmt.Sprintf("d%02d", i)}})
	}
	for i := n / 2; i < n; i++ {
		calls = append(calls, pipeCall{"SELECT * FROM fetchq.doc_reject( 'piper', $1, 'worker exception', '{\"message\":\"x\"}' , '*' )", []string{fmt.Sprintf("d%02d", i)}})
	}
	calls0, batches0 := batcher.Stats()
	for i, r := range runPipeline(t, ctx, conn.PgConn(), calls) {
		require.NoError(t, r.err, "call %d", i)
		require.Equal(t, [][]string{{"1"}}, r.rows, "call %d", i)
	}
	calls1, batches1 := batcher.Stats()
	require.EqualValues(t, n, calls1-calls0, "every call went through the batcher")
	require.Less(t, batches1-batches0, int64(n/4))
	var planned, pending, logs int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FILTER (WHERE status = 0 AND next_iteration > now() + interval '59 minutes' AND payload = '{\"a\": 1}'),"+
		" count(*) FILTER (WHERE status = 1) FROM fetchq_data.piper__docs").Scan(&planned, &pending))
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM fetchq_data.piper__logs WHERE message = 'worker exception' AND ref_id = '*'").Scan(&logs))
	require.Equal(t, []int{n / 2, n / 2, n / 2}, []int{planned, pending, logs})
}

// TestPipelinedPickThenComplete: a pipelined complete of the document the
// pick before it gets sees that pick, even when both would fall in one
// group-commit round (whose completes run before its picks): the lane's
// current round is held on a row lock while the pipeline arrives.
func TestPipelinedPickThenComplete(t *testing.T) {
	t.Parallel()
	b, _, _ := setupFull(t)
	conn := fetchqConn(t, b, "ppc")
	ctx := ctxT(t, time.Minute)
	for _, s := range []string{"held", "next"} {
		_, err := conn.Exec(ctx, "SELECT * FROM fetchq.doc_push('ppc', $1, 0, 0, NOW() - interval '1 minute', '{}')", s)
		require.NoError(t, err)
	}
	var first string
	require.NoError(t, conn.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('ppc', 0, 1, '5m')").Scan(&first))
	require.Equal(t, "held", first, "the older document first")

	// A transaction elsewhere holds the active document's row: another
	// client's complete of it leads a round that waits for the lock.
	lock, err := b.db.Pool(t).Begin(ctx)
	require.NoError(t, err)
	release := sync.OnceFunc(func() { _ = lock.Rollback(context.Background()) })
	defer release()
	_, err = lock.Exec(ctx, "SELECT 1 FROM fetchq_data.ppc__docs WHERE subject = 'held' FOR UPDATE")
	require.NoError(t, err)
	other := fetchqConn(t, b)
	heldDone := make(chan error, 1)
	go func() {
		var n int
		heldDone <- other.QueryRow(ctx, "SELECT affected_rows FROM fetchq.doc_complete('ppc', 'held')").Scan(&n)
	}()
	time.Sleep(200 * time.Millisecond)

	// The pipeline arrives while that round waits; the lock goes soon
	// after it was read.
	go func() {
		time.Sleep(300 * time.Millisecond)
		release()
	}()
	res := runPipeline(t, ctx, conn.PgConn(), []pipeCall{
		{"SELECT subject FROM fetchq.doc_pick('ppc', 0, 1, '5m')", nil},
		{"SELECT affected_rows FROM fetchq.doc_complete('ppc', $1)", []string{"next"}},
	})
	require.NoError(t, <-heldDone)
	require.NoError(t, res[0].err)
	require.Equal(t, [][]string{{"next"}}, res[0].rows)
	require.NoError(t, res[1].err)
	require.Equal(t, [][]string{{"1"}}, res[1].rows, "the complete after the pick completes what it picked")
}

// TestPipelinedMatchesSequential: random pipelines of pushes, picks,
// completes, kills, reschedules and rejects on one queue (batched) get,
// call by call, the answers the same calls get one at a time, each in a
// transaction block (on the client's own connection), on a twin queue,
// and leave the same documents; so do the calls one at a time in
// autocommit (each a batch of one) on a third. Priorities are distinct,
// so every pick has one right answer.
func TestPipelinedMatchesSequential(t *testing.T) {
	t.Parallel()
	b, _, _ := setupFull(t)
	ctx := ctxT(t, 2*time.Minute)
	for seed := range int64(24) {
		piped, alone, auto := fmt.Sprintf("pms%d", seed), fmt.Sprintf("pma%d", seed), fmt.Sprintf("pmb%d", seed)
		conn := fetchqConn(t, b, piped, alone, auto)
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		subjects := []string{"a", "b", "c", "d", "e", "f"}
		for i, s := range subjects {
			for _, q := range []string{piped, alone, auto} {
				_, err := conn.Exec(ctx, "SELECT * FROM fetchq.doc_push($1, $2, 0, $3, NOW() - interval '1 minute', '{}')", q, s, 100+i)
				require.NoError(t, err)
			}
		}
		// Calls with queue $1 and, for all but a pick, subject $2.
		type call struct{ sql, subject string }
		var calls []call
		for i := range 16 {
			s := subjects[rng.IntN(len(subjects))]
			switch rng.IntN(6) {
			case 4:
				// Back to pending (now) or planned (in an hour).
				when := []string{"NOW()", "NOW() + interval '1 hour'"}[rng.IntN(2)]
				calls = append(calls, call{"SELECT affected_rows FROM fetchq.doc_reschedule($1, $2, " + when + ")", s})
			case 5:
				calls = append(calls, call{"SELECT affected_rows FROM fetchq.doc_reject($1, $2, 'no', '{}')", s})
			case 0:
				calls = append(calls, call{"SELECT subject FROM fetchq.doc_pick($1, 0, 1, '5m')", ""})
			case 1:
				calls = append(calls, call{"SELECT affected_rows FROM fetchq.doc_complete($1, $2)", s})
			case 2:
				calls = append(calls, call{"SELECT affected_rows FROM fetchq.doc_kill($1, $2)", s})
			default:
				// A new subject or one that exists (answers 0), with its own
				// priority.
				if rng.IntN(2) == 0 {
					s = fmt.Sprintf("n%d", i)
				}
				calls = append(calls, call{fmt.Sprintf("SELECT queued_docs FROM fetchq.doc_push($1, $2, 0, %d, NOW() - interval '1 minute', '{}')", 200+i), s})
			}
		}
		pipe := make([]pipeCall, len(calls))
		for i, c := range calls {
			pipe[i] = pipeCall{c.sql, []string{piped}}
			if c.subject != "" {
				pipe[i].params = append(pipe[i].params, c.subject)
			}
		}
		res := runPipeline(t, ctx, conn.PgConn(), pipe)
		for i, c := range calls {
			args := func(q string) []any {
				if c.subject != "" {
					return []any{q, c.subject}
				}
				return []any{q}
			}
			// Alone and in a transaction block: on the client's own
			// connection, not through the Batcher.
			var want []string
			require.NoError(t, pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, c.sql, args(alone)...)
				if err != nil {
					return err
				}
				want, err = pgx.CollectRows(rows, pgx.RowTo[string])
				return err
			}))
			msg := fmt.Sprintf("seed %d call %d %s %s", seed, i, c.sql, c.subject)
			require.NoError(t, res[i].err, msg)
			got := []string{}
			for _, r := range res[i].rows {
				got = append(got, r[0])
			}
			require.Equal(t, want, got, "pipelined: "+msg)
			// Alone in autocommit: a batch of one.
			rows, err := conn.Query(ctx, c.sql, args(auto)...)
			require.NoError(t, err)
			got, err = pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(t, err)
			require.Equal(t, want, got, "autocommit: "+msg)
		}
		docs := func(q string) [][]any {
			rows, err := conn.Query(ctx, "SELECT subject, status, attempts, iterations, next_iteration > NOW() + interval '30 minutes' FROM fetchq_data."+q+"__docs ORDER BY subject")
			require.NoError(t, err)
			out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
			require.NoError(t, err)
			return out
		}
		require.Equal(t, docs(alone), docs(piped), "seed %d documents, pipelined", seed)
		require.Equal(t, docs(alone), docs(auto), "seed %d documents, autocommit", seed)
	}
}
