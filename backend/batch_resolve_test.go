package backend

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBatchedReschedulesAndRejects: reschedules and rejects started one
// after the other join one batch and each gets what it gets alone, run in
// the same order on a twin queue: results, effects, the documents' state
// and the log rows, in order; a subject named twice is resolved once; a
// batch holding a call Postgres refuses runs every call alone.
func TestBatchedReschedulesAndRejects(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	b := NewBatcher(BatcherConfig{Pool: tb.pool, Store: tb.store})
	const docs = 12
	for _, q := range []string{"ra", "rb"} {
		tb.createQueue(t, q)
		tb.pushPending(t, q, docs, func(i int) string { return "('s" + strconv.Itoa(i) + "', 0, '{\"old\": 1}', {DATA})" })
		require.Len(t, tb.pick(t, q, docs), docs)
		// s10 and s11 have used their attempts: a reject kills them.
		_, err := tb.pool.Exec(tb.ctx, "UPDATE fetchq_data."+q+"__docs SET attempts = 5 WHERE subject IN ('s10', 's11')")
		require.NoError(t, err)
	}
	type call struct {
		id   string
		args func(q string) []Value
	}
	str := func(s string) Value { return Value{Text: s} }
	null := Value{Null: true}
	resched := func(subject string, next Value, payload ...string) call {
		if len(payload) == 0 {
			return call{"doc_reschedule(varchar,varchar,timestamptz)", func(q string) []Value { return []Value{str(q), str(subject), next} }}
		}
		return call{"doc_reschedule(varchar,varchar,timestamptz,jsonb)", func(q string) []Value { return []Value{str(q), str(subject), next, str(payload[0])} }}
	}
	reject := func(subject string, message, details Value, refID ...Value) call {
		if len(refID) == 0 {
			return call{"doc_reject(varchar,varchar,varchar,jsonb)", func(q string) []Value { return []Value{str(q), str(subject), message, details} }}
		}
		return call{"doc_reject(varchar,varchar,varchar,jsonb,varchar)", func(q string) []Value { return []Value{str(q), str(subject), message, details, refID[0]} }}
	}
	long := fmt.Sprintf("%0300d", 7)
	groups := [][]call{
		{ // one batch
			resched("s0", Value{Now: true}),
			resched("s1", Value{Now: true, Interval: "1h"}, `{"a": 1}`),
			resched("s2", Value{Now: true, Interval: "90 minutes", Negative: true}, `null`),
			resched("s3", Value{Epoch: true, Text: "4102444800"}),
			resched("s0", Value{Now: true}), // already rescheduled: 0
			resched("nope", Value{Now: true}),
			reject("s4", str("boom"), str(`{"d": 1}`)),
			reject("s5", null, str(`{"d": 2}`), str("ref-5")),
			reject("s6", str(long), str(`{}`)), // too long for the log: no row
			reject("s7", str("no details"), null),
			reject("s10", str("last"), str(`null`), null), // killed
			reject("s4", str("again"), str(`{}`)),         // already rejected: 0
		},
		{ // a batch Postgres refuses (an epoch out of range): all alone
			resched("s8", Value{Now: true}),
			resched("s9", Value{Epoch: true, Text: "1e300"}),
			reject("s11", str("x"), str(`{"k": true}`)),
		},
		{ // a subject named twice, the second time with a time Postgres
			// refuses: alone the second call fails, so the batch must too
			resched("s0", Value{Now: true}),
			resched("s0", Value{Epoch: true, Text: "1e300"}),
			resched("s0", Value{Now: true, Interval: "99999999999999 hours"}),
		},
		{ // a time Postgres refuses for a subject that is not there: an
			// error alone too
			resched("s1", Value{Now: true}),
			resched("nope", Value{Epoch: true, Text: "-1e300"}),
		},
	}
	calls0, batches0 := b.Stats()
	for gi, group := range groups {
		// Alone, in order, on ra.
		want := make([]*Result, len(group))
		wantErr := make([]error, len(group))
		for i, c := range group {
			want[i], wantErr[i] = tb.store.Invoke(tb.ctx, tb.db, c.id, c.args("ra"))
		}
		// Batched, started in the same order, on rb.
		started := make([]*Call, len(group))
		for i, c := range group {
			args := c.args("rb")
			require.True(t, b.Batchable(c.id, args), "group %d call %d", gi, i)
			call, ok := b.Prepare(c.id, args)
			require.True(t, ok, "group %d call %d", gi, i)
			call.Start()
			started[i] = call
		}
		for i, call := range started {
			res, err := call.Wait(tb.ctx)
			if wantErr[i] != nil {
				require.Error(t, err, "group %d call %d", gi, i)
				wc, wm := errCode(wantErr[i])
				gc, gm := errCode(err)
				require.Equal(t, wc, gc, "group %d call %d", gi, i)
				require.Equal(t, wm, gm, "group %d call %d", gi, i)
				continue
			}
			require.NoError(t, err, "group %d call %d", gi, i)
			require.Equal(t, want[i].Rows, res.Rows, "group %d call %d", gi, i)
			require.Equal(t, fmt.Sprint(want[i].Effects), fmt.Sprint(renameQueue(res.Effects, "rb", "ra")), "group %d call %d", gi, i)
		}
	}
	calls1, batches1 := b.Stats()
	require.EqualValues(t, len(groups[0])+len(groups[1])+len(groups[2])+len(groups[3]), calls1-calls0)
	require.LessOrEqual(t, batches1-batches0, int64(10), "the calls were not batched together")

	// The documents and the log rows are the same.
	state := func(q string) []string {
		return tb.rowStrings(t, "SELECT subject, status, attempts, iterations, coalesce(payload::text, 'NULL'),"+
			" next_iteration > now() + interval '1 minute', next_iteration < now() - interval '1 minute', last_iteration IS NOT NULL"+
			" FROM fetchq_data."+q+"__docs ORDER BY subject")
	}
	require.Equal(t, state("ra"), state("rb"))
	logs := func(q string) []string {
		return tb.rowStrings(t, "SELECT subject, message, coalesce(details::text, 'NULL'), coalesce(ref_id, 'NULL') FROM fetchq_data."+q+"__logs ORDER BY id")
	}
	require.Equal(t, logs("ra"), logs("rb"))
	require.NotEmpty(t, logs("rb"))
}

// renameQueue returns e with the queue name from replaced by to.
func renameQueue(e Effects, from, to string) Effects {
	out := make(Effects, len(e))
	for i, x := range e {
		if x.Queue == from {
			x.Queue = to
		}
		out[i] = x
	}
	return out
}

// rowStrings runs sql and returns its rows, each printed as one string.
func (tb *testBundle) rowStrings(t *testing.T, sql string) []string {
	t.Helper()
	rows, err := tb.pool.Query(tb.ctx, sql)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		require.NoError(t, err)
		out = append(out, fmt.Sprint(vals))
	}
	require.NoError(t, rows.Err())
	return out
}
