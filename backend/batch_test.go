package backend

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func pushArgs(q, subject string, version, priority int, next Value, payload string) []Value {
	return []Value{{Text: q}, {Text: subject}, {Text: strconv.Itoa(version)}, {Text: strconv.Itoa(priority)}, next, {Text: payload}}
}

// errCode returns err's SQLSTATE and message, from a Postgres error or
// one of the backend's own.
func errCode(err error) (string, string) {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code, pg.Message
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code, e.Message
	}
	return "", err.Error()
}

// TestBatchedPushes: concurrent pushes of one queue share statements and
// each gets what it would have got alone: a subject pushed by many calls is
// queued once, a payload the jsonb input refuses or an epoch to_timestamp
// refuses fails only its own call (with the error the call gets alone),
// the status follows next_iteration, and the effects are the inserted rows'.
func TestBatchedPushes(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "bp")
	b := NewBatcher(BatcherConfig{Pool: tb.pool, Store: tb.store})

	now := Value{Now: true}
	future := Value{Epoch: true, Text: "4102444800"} // 2100-01-01
	badJSON := `{"a":`
	badEpoch := Value{Epoch: true, Text: "1e300"}

	// What the failing calls get alone.
	_, aloneJSON := tb.store.Invoke(tb.ctx, tb.db, pushID, pushArgs("bp", "alone1", 0, 0, now, badJSON))
	require.Error(t, aloneJSON)
	_, aloneEpoch := tb.store.Invoke(tb.ctx, tb.db, pushID, pushArgs("bp", "alone2", 0, 0, badEpoch, "{}"))
	require.Error(t, aloneEpoch)

	type call struct {
		args []Value
		res  *Result
		err  error
	}
	var calls []*call
	for i := range 200 {
		s := "u" + strconv.Itoa(i)
		next := now
		if i%3 == 0 {
			next = future
		}
		calls = append(calls, &call{args: pushArgs("bp", s, i%4, i%5, next, `{"i":`+strconv.Itoa(i)+`,"q":"it''s"}`)})
		if i%10 == 0 {
			calls = append(calls, &call{args: pushArgs("BP", "dup", 1, 0, now, "{}")})
		}
		if i%50 == 7 {
			calls = append(calls, &call{args: pushArgs("bp", "badjson"+s, 0, 0, now, badJSON)})
			calls = append(calls, &call{args: pushArgs("bp", "badepoch"+s, 0, 0, badEpoch, "{}")})
		}
	}
	require.True(t, b.Batchable(pushID, calls[0].args))
	require.False(t, b.Batchable(pushID, pushArgs("bp", "x", 0, 0, Value{Now: true, Interval: "1 day"}, "{}")),
		"an interval depends on the session's TimeZone")
	require.False(t, b.Batchable(pushID, pushArgs("bp", "x", 0, 0, Value{Text: "2030-01-01"}, "{}")))
	require.False(t, b.Batchable(pushID, pushArgs("bp", "x", 0, 0, now, `{"a":"\u0000"}`)),
		"jsonb text Postgres must check (on the client's connection) is not batched")

	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c.res, c.err = b.Invoke(tb.ctx, pushID, c.args)
		}()
	}
	close(start)
	wg.Wait()

	dups := 0
	var effects Effects
	for _, c := range calls {
		subject := c.args[1].Text
		switch {
		case subject == "dup":
			require.NoError(t, c.err)
			n, _ := strconv.Atoi(string(c.res.Rows[0][0]))
			dups += n
		case c.args[5].Text == badJSON:
			gc, gm := errCode(c.err)
			wc, wm := errCode(aloneJSON)
			require.Equal(t, wc+" "+wm, gc+" "+gm, subject)
			continue
		case c.args[4].Text == "1e300":
			gc, gm := errCode(c.err)
			wc, wm := errCode(aloneEpoch)
			require.Equal(t, wc+" "+wm, gc+" "+gm, subject)
			continue
		default:
			require.NoError(t, c.err, subject)
			require.Equal(t, [][][]byte{{[]byte("1")}}, c.res.Rows, subject)
		}
		effects = append(effects, c.res.Effects...)
	}
	require.Equal(t, 1, dups, "a subject pushed by many calls is queued once")
	require.Equal(t, 201, tb.count(t, "SELECT count(*) FROM fetchq_data.bp__docs"))
	require.Equal(t, 67, tb.count(t, "SELECT count(*) FROM fetchq_data.bp__docs WHERE status = 0 AND next_iteration = '2100-01-01 00:00:00+00'"))
	require.Equal(t, 134, tb.count(t, "SELECT count(*) FROM fetchq_data.bp__docs WHERE status = 1"))
	require.Equal(t, 1, tb.count(t, `SELECT count(*) FROM fetchq_data.bp__docs WHERE subject = 'u5' AND version = 1 AND priority = 0 AND payload = ('{"i":5,"q":"it'||chr(39)||'s"}')::jsonb`),
		"version, priority and the de-doubled payload are stored")

	got := map[string]int64{}
	for _, e := range effects {
		got[e.Queue+"/"+e.Metric] += e.Delta
	}
	require.Equal(t, map[string]int64{
		"bp/ent": 201, "bp/cnt": 201, "bp/pnd": 134, "bp/pln": 67,
		"bp/v0": 50, "bp/v1": 51, "bp/v2": 50, "bp/v3": 50,
	}, got)
	calls64, batches := b.Stats()
	t.Logf("%d pushes in %d statements", calls64, batches)
	require.Less(t, batches, calls64, "concurrent pushes were never coalesced")
}

// TestBatcherInFlight: with several batches of a key allowed at once,
// concurrent picks still get each document exactly once and every
// complete lands, and no call is left waiting.
func TestBatcherInFlight(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "inf")
	const docs, workers = 2000, 32
	tb.pushPending(t, "inf", docs, func(i int) string { return "('d" + strconv.Itoa(i) + "', 0, '{}', {DATA})" })

	b := NewBatcher(BatcherConfig{Pool: tb.pool, Store: tb.store, MaxInFlight: 3})
	const pickID, completeID = "doc_pick(varchar,integer,integer,varchar)", "doc_complete(varchar,varchar)"
	var mu sync.Mutex
	picked := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				res, err := b.Invoke(tb.ctx, pickID, []Value{{Text: "inf"}, {Text: "0"}, {Text: "1"}, {Text: "5m"}})
				if err != nil {
					errs <- err
					return
				}
				if len(res.Rows) == 0 {
					return
				}
				subject := string(res.Rows[0][0])
				mu.Lock()
				picked[subject]++
				mu.Unlock()
				res, err = b.Invoke(tb.ctx, completeID, []Value{{Text: "inf"}, {Text: subject}})
				if err != nil {
					errs <- err
					return
				}
				if string(res.Rows[0][0]) != "1" {
					errs <- &Error{Code: "XX000", Message: "complete of " + subject + " affected " + string(res.Rows[0][0])}
					return
				}
			}
		}()
	}
	wg.Wait()
	requirePickedOnce(t, errs, picked, docs)
	require.Equal(t, docs, tb.count(t, "SELECT count(*) FROM fetchq_data.inf__docs WHERE status = 3"))
	calls, batches := b.Stats()
	t.Logf("%d calls in %d statements", calls, batches)
	require.Less(t, batches, calls)
}

// TestBatcherPreparedStatementsFollowQueue: the Batcher's statements are
// prepared once per pool connection; a queue dropped and created again
// (new tables of the same names) is picked, completed and pushed to as
// before, on the same connections.
func TestBatcherPreparedStatementsFollowQueue(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	b := NewBatcher(BatcherConfig{Pool: tb.pool, Store: tb.store})
	for round := range 3 {
		tb.createQueue(t, "prep")
		for i := range 3 {
			res, err := b.Invoke(tb.ctx, pushID, pushArgs("prep", "s"+strconv.Itoa(i), 0, 0, Value{Now: true}, "{}"))
			require.NoError(t, err, "round %d", round)
			require.Equal(t, "1", string(res.Rows[0][0]))
		}
		res, err := b.Invoke(tb.ctx, "doc_pick(varchar,integer,integer,varchar)",
			[]Value{{Text: "prep"}, {Text: "0"}, {Text: "3"}, {Text: "5m"}})
		require.NoError(t, err, "round %d", round)
		require.Len(t, res.Rows, 3, "round %d", round)
		for _, row := range res.Rows {
			res, err := b.Invoke(tb.ctx, "doc_complete(varchar,varchar)", []Value{{Text: "prep"}, {Text: string(row[0])}})
			require.NoError(t, err)
			require.Equal(t, "1", string(res.Rows[0][0]))
		}
		require.Equal(t, 3, tb.count(t, "SELECT count(*) FROM fetchq_data.prep__docs WHERE status = 3"))
		_, err = tb.store.QueueDrop(tb.ctx, tb.db, QueueParams{Queue: "prep"})
		require.NoError(t, err)
	}
	// The statements were prepared: Postgres lists them on the pool's
	// connections.
	prepared := 0
	for _, c := range tb.pool.AcquireAllIdle(tb.ctx) {
		var n int
		require.NoError(t, c.QueryRow(tb.ctx, "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%prep__docs%' AND statement NOT LIKE 'SELECT%'",
			pgx.QueryExecModeSimpleProtocol).Scan(&n))
		prepared += n
		c.Release()
	}
	require.Positive(t, prepared)
}

// TestBatchedCompletePayloads: a batched doc_complete stores its payload
// as the call alone does, the JSON null included (jsonb 'null', not SQL
// NULL).
func TestBatchedCompletePayloads(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "cp")
	b := NewBatcher(BatcherConfig{Pool: tb.pool, Store: tb.store})
	payloads := []string{`null`, `{"a": 1}`, `[]`, `"s"`, `0`}
	tb.pushPending(t, "cp", len(payloads), func(i int) string { return "('s" + strconv.Itoa(i) + "', 0, '{}', {DATA})" })
	docs := tb.pick(t, "cp", int32(len(payloads)))
	require.Len(t, docs, len(payloads))
	var wg sync.WaitGroup
	for i, p := range payloads {
		wg.Go(func() {
			res, err := b.Invoke(tb.ctx, "doc_complete(varchar,varchar,jsonb)", []Value{{Text: "cp"}, {Text: "s" + strconv.Itoa(i)}, {Text: p}})
			if assert.NoError(t, err) {
				assert.Equal(t, "1", string(res.Rows[0][0]))
			}
		})
	}
	wg.Wait()
	for i, p := range payloads {
		var got string
		var isNull bool
		require.NoError(t, tb.pool.QueryRow(tb.ctx, "SELECT payload IS NULL, coalesce(payload::text, '') FROM fetchq_data.cp__docs WHERE subject = $1",
			"s"+strconv.Itoa(i)).Scan(&isNull, &got))
		require.False(t, isNull, "payload %s became SQL NULL", p)
		var want string
		require.NoError(t, tb.pool.QueryRow(tb.ctx, "SELECT $1::jsonb::text", p).Scan(&want))
		require.Equal(t, want, got)
	}
}

// TestBatchedPickPlannedOnce: the batch pick statement keeps a generic
// plan on its pool connection (Postgres plans it five times, then never
// again), and a batch locks exactly the documents it takes, in pick order,
// whatever the candidates' bound.
func TestBatchedPickPlannedOnce(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "once")
	// Priorities 0..39: pick order is subject p39, p38, ...
	tb.pushPending(t, "once", 40, func(i int) string { return fmt.Sprintf("('p%02d', %d, '{}', {DATA})", i, i) })
	cfg := tb.pool.Config()
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(tb.ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	b := NewBatcher(BatcherConfig{Pool: pool, Store: tb.store, MaxPick: 500})
	want := 39
	for batch := range 12 {
		res, err := b.Invoke(tb.ctx, "doc_pick(varchar,integer,integer,varchar)",
			[]Value{{Text: "once"}, {Text: "0"}, {Text: "3"}, {Text: "5m"}})
		require.NoError(t, err)
		require.Len(t, res.Rows, 3, "batch %d", batch)
		for _, row := range res.Rows {
			if want >= 0 {
				require.Equal(t, fmt.Sprintf("p%02d", want), string(row[0]))
			}
			want--
		}
		require.Equal(t, 3*(batch+1), tb.count(t, "SELECT count(*) FROM fetchq_data.once__docs WHERE status = 2"), "locked after batch %d", batch)
	}
	c, err := pool.Acquire(tb.ctx)
	require.NoError(t, err)
	defer c.Release()
	var generic, custom int
	require.NoError(t, c.QueryRow(tb.ctx, "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%LIMIT (SELECT $1::int)%'",
		pgx.QueryExecModeSimpleProtocol).Scan(&generic, &custom))
	require.Equal(t, 5, custom, "custom plans")
	require.Equal(t, 7, generic, "executions of the generic plan")
}
