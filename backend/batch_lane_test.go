package backend

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// laneFixture is a queue with three active documents (z, good, bad) and
// two pending ones (p1, p2), and a Batcher whose next round is held up:
// z's complete waits for a row lock, so the calls started meanwhile make
// the round after it.
type laneFixture struct {
	tb   *testBundle
	b    *Batcher
	cz   *Call
	free func()
}

func newLaneFixture(t *testing.T, q string, setupSQL ...string) *laneFixture {
	tb := setup(t)
	tb.createQueue(t, q)
	ctx := tb.ctx
	for _, s := range []string{"z", "good", "bad"} {
		_, err := tb.store.Invoke(ctx, tb.db, "doc_push(varchar,varchar)", []Value{{Text: q}, {Text: s}})
		require.NoError(t, err)
	}
	require.Len(t, tb.pick(t, q, 3), 3)
	for _, s := range []string{"p1", "p2"} {
		_, err := tb.store.Invoke(ctx, tb.db, "doc_push(varchar,varchar)", []Value{{Text: q}, {Text: s}})
		require.NoError(t, err)
	}
	for _, sql := range setupSQL {
		_, err := tb.pool.Exec(ctx, sql)
		require.NoError(t, err)
	}
	b := NewBatcher(BatcherConfig{Pool: tb.pool, Store: tb.store})
	lock, err := tb.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = lock.Exec(ctx, "SELECT 1 FROM fetchq_data."+q+"__docs WHERE subject = 'z' FOR UPDATE")
	require.NoError(t, err)
	cz, ok := b.Prepare("doc_complete(varchar,varchar)", []Value{{Text: q}, {Text: "z"}})
	require.True(t, ok)
	cz.Start()
	time.Sleep(200 * time.Millisecond)
	return &laneFixture{tb: tb, b: b, cz: cz, free: func() { require.NoError(t, lock.Rollback(ctx)) }}
}

func (f *laneFixture) start(t *testing.T, id string, args ...Value) *Call {
	c, ok := f.b.Prepare(id, args)
	require.True(t, ok)
	c.Start()
	return c
}

// requireDone waits for the round that was held back and the calls' of
// it: z's complete and good's each answer 1, the pick its two documents.
func (f *laneFixture) requireDone(t *testing.T, pick, good *Call) {
	for name, c := range map[string]*Call{"z": f.cz, "good": good} {
		res, err := c.Wait(f.tb.ctx)
		require.NoError(t, err, name)
		require.Equal(t, [][][]byte{{[]byte("1")}}, res.Rows, name)
	}
	res, err := pick.Wait(f.tb.ctx)
	require.NoError(t, err)
	require.Len(t, res.Rows, 2)
	require.ElementsMatch(t, []string{"p1", "p2"}, []string{string(res.Rows[0][0]), string(res.Rows[1][0])})
}

// TestLaneRound: the picks and completes of a queue started while a round
// runs make one round: one transaction for both statements.
func TestLaneRound(t *testing.T) {
	t.Parallel()
	f := newLaneFixture(t, "ln")
	pick := f.start(t, "doc_pick(varchar,integer,integer,varchar)", Value{Text: "ln"}, Value{Text: "0"}, Value{Text: "2"}, Value{Text: "5m"})
	good := f.start(t, "doc_complete(varchar,varchar)", Value{Text: "ln"}, Value{Text: "good"})
	f.free()

	f.requireDone(t, pick, good)
	calls, batches := f.b.Stats()
	require.Equal(t, [2]int64{3, 2}, [2]int64{calls, batches}, "z's round, then one round of the pick and the complete")
	require.Equal(t, map[string]int{"z": 3, "good": 3, "bad": 2, "p1": 2, "p2": 2}, f.tb.statuses(t, "ln"))
}

// TestLaneRoundFailsApart: a round Postgres refuses (a constraint fails a
// complete) wrote nothing; its statements then run on their own, and each
// call gets what it gets alone: the picks their documents, the other
// completes theirs, the refused complete its own answer.
func TestLaneRoundFailsApart(t *testing.T) {
	t.Parallel()
	f := newLaneFixture(t, "lf", `ALTER TABLE fetchq_data.lf__docs ADD CONSTRAINT no_bad CHECK (payload IS NULL OR NOT payload ? 'bad')`)
	pick := f.start(t, "doc_pick(varchar,integer,integer,varchar)", Value{Text: "lf"}, Value{Text: "0"}, Value{Text: "2"}, Value{Text: "5m"})
	badArgs := []Value{{Text: "lf"}, {Text: "bad"}, {Text: `{"bad": 1}`}}
	bad := f.start(t, "doc_complete(varchar,varchar,jsonb)", badArgs...)
	good := f.start(t, "doc_complete(varchar,varchar)", Value{Text: "lf"}, Value{Text: "good"})
	f.free()

	f.requireDone(t, pick, good)
	got, err := bad.Wait(f.tb.ctx)
	require.NoError(t, err)
	alone, err := f.tb.store.Invoke(f.tb.ctx, f.tb.db, "doc_complete(varchar,varchar,jsonb)", badArgs)
	require.NoError(t, err)
	require.Equal(t, alone.Rows, got.Rows, "the refused call gets what it gets alone")
	require.Equal(t, map[string]int{"z": 3, "good": 3, "bad": 2, "p1": 2, "p2": 2}, f.tb.statuses(t, "lf"))
}

// TestLaneCallKeys: a lane's round runs its completes and kills before its
// picks, so a pipelining caller must not take a pick and a later complete
// of one queue as calls that keep their order: they, and picks of another
// lock duration, have different keys; calls of one statement share one.
func TestLaneCallKeys(t *testing.T) {
	tb := setup(t)
	b := NewBatcher(BatcherConfig{Pool: tb.pool, Store: tb.store})
	key := func(id string, args ...string) any {
		vals := make([]Value, len(args))
		for i, a := range args {
			vals[i] = Value{Text: a}
		}
		c, ok := b.Prepare(id, vals)
		require.True(t, ok, "%s %v", id, args)
		return c.Key()
	}
	const pick = "doc_pick(varchar,integer,integer,varchar)"
	pick5m := key(pick, "q", "0", "1", "5m")
	complete := key("doc_complete(varchar,varchar)", "q", "a")
	kill := key("doc_kill(varchar,varchar)", "q", "a")
	require.Equal(t, pick5m, key(pick, "q", "0", "3", "5m"), "picks of one statement")
	require.Equal(t, complete, key("doc_complete(varchar,varchar)", "q", "b"), "completes of one statement")
	require.NotEqual(t, pick5m, complete)
	require.NotEqual(t, pick5m, kill)
	require.NotEqual(t, complete, kill)
	require.NotEqual(t, pick5m, key(pick, "q", "0", "1", "10m"))
	require.NotEqual(t, pick5m, key(pick, "q", "1", "1", "5m"))
	require.NotEqual(t, complete, key("doc_complete(varchar,varchar)", "r", "a"))
}
