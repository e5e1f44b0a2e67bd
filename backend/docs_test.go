package backend

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

func TestDocPush(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")

	for _, tt := range []struct {
		name    string
		subject string
		next    Time
		status  int32
		metric  string
	}{
		{"future is planned", "future", NowPlus("1 minute"), 0, "pln"},
		{"past is pending", "past", NowMinus("1 minute"), 1, "pnd"},
		{"now is pending (inclusive)", "now", Now(), 1, "pnd"},
		{"literal", "literal", TimeAt("2030-01-01 00:00+00"), 0, "pln"},
		{"epoch", "epoch", TimeEpochSeconds("0.5"), 1, "pnd"},
	} {
		r, err := tb.store.DocPush(tb.ctx, tb.db, DocPushParams{Queue: "foo", Subject: tt.subject, Version: 3, Priority: 7, NextIteration: tt.next, Payload: `{"a":1}`})
		require.NoError(t, err, tt.name)
		require.Equal(t, PushResult{QueuedDocs: 1, Effects: adds("foo", "ent", 1, "cnt", 1, "v3", 1, tt.metric, 1)}, r, tt.name)
		d := tb.mustDoc(t, "foo", tt.subject)
		require.Equal(t, tt.status, d.Status, tt.name)
		require.EqualValues(t, 3, d.Version)
		require.EqualValues(t, 7, d.Priority)
		require.Zero(t, d.Attempts)
		require.Zero(t, d.Iterations)
		require.Nil(t, d.LastIteration)
		require.Nil(t, d.LockUpgrade)
		require.NotNil(t, d.CreatedAt)
		require.JSONEq(t, `{"a":1}`, *d.Payload)
	}
	require.Equal(t, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), tb.mustDoc(t, "foo", "literal").NextIteration.UTC())
	require.Equal(t, time.Unix(0, 5e8).UTC(), tb.mustDoc(t, "foo", "epoch").NextIteration.UTC())
	// created_at and next_iteration are the same now() for a Now() push.
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs WHERE subject = 'now' AND next_iteration = created_at"))

	// Duplicate subject: 0, nothing changed, no effects.
	r, err := tb.store.DocPush(tb.ctx, tb.db, DocPushParams{Queue: "foo", Subject: "past", NextIteration: Now(), Payload: `{"b":2}`})
	require.NoError(t, err)
	require.Equal(t, PushResult{}, r)
	require.JSONEq(t, `{"a":1}`, *tb.mustDoc(t, "foo", "past").Payload)

	// Nonexistent or invalid queue: 0.
	for _, q := range []string{"nope", "a-b", ""} {
		r, err = tb.store.DocPush(tb.ctx, tb.db, DocPushParams{Queue: q, Subject: "s", NextIteration: Now(), Payload: "{}"})
		require.NoError(t, err)
		require.Equal(t, PushResult{}, r)
	}
	// NULL next_iteration: 0.
	r, err = tb.store.DocPush(tb.ctx, tb.db, DocPushParams{Queue: "foo", Subject: "null", Payload: "{}"})
	require.NoError(t, err)
	require.Equal(t, PushResult{}, r)

	// Subject length: 50 characters (runes) fit, 51 raise P0001.
	tb.push(t, "foo", strings.Repeat("x", 50), 0, 0, Now(), "{}")
	tb.push(t, "foo", strings.Repeat("é", 50), 0, 0, Now(), "{}")
	_, err = tb.store.DocPush(tb.ctx, tb.db, DocPushParams{Queue: "foo", Subject: strings.Repeat("x", 51), NextIteration: Now(), Payload: "{}"})
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "P0001", e.SQLState())
	require.Equal(t, "The subject exceeds 50 characters limit", e.Message)
	// ... unless the queue does not exist (the insert fails first).
	r, err = tb.store.DocPush(tb.ctx, tb.db, DocPushParams{Queue: "nope", Subject: strings.Repeat("x", 51), NextIteration: Now(), Payload: "{}"})
	require.NoError(t, err)
	require.Zero(t, r.QueuedDocs)

	// Argument errors propagate like the extension's argument coercion.
	_, err = tb.store.DocPush(tb.ctx, tb.db, DocPushParams{Queue: "foo", Subject: "badjson", NextIteration: Now(), Payload: `{"a":`})
	require.ErrorAs(t, err, &e)
	require.Equal(t, "22P02", e.Code)
	require.ErrorIs(t, err, ErrInvalidArgument)
	for _, next := range []Time{TimeAt("not a time"), NowPlus("not an interval"), TimeEpochSeconds("x")} {
		_, err = tb.store.DocPush(tb.ctx, tb.db, DocPushParams{Queue: "foo", Subject: "badtime", NextIteration: next, Payload: "{}"})
		var pg *pgconn.PgError
		require.ErrorAs(t, err, &pg, "%+v", next)
		require.Contains(t, []string{"22007", "22P02"}, pg.Code)
	}
	_, ok := tb.getDoc(t, "foo", "badtime")
	require.False(t, ok)
}

func TestDocPayloads(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	for i, tt := range []struct {
		name, payload, want string
	}{
		{"node client quote convention", `{"a":"it''s"}`, `{"a": "it's"}`},
		{"lone quote stored as is", `{"a":"it's"}`, `{"a": "it's"}`},
		{"quote in key", `{"it''s":1}`, `{"it's": 1}`},
		{"unicode", `{"u":"héllo ✓ 日本 🎉"}`, `{"u": "héllo ✓ 日本 🎉"}`},
		{"escapes", `{"e":"line\nbreak \"q\" \\ \u00e9"}`, `{"e": "line\nbreak \"q\" \\ é"}`},
		{"nested", `{"a":{"b":[1,2.50,{"c":null,"d":true}]},"z":[]}`, `{"a": {"b": [1, 2.50, {"c": null, "d": true}]}, "z": []}`},
		{"sql looking text", `{"x":"'); DROP TABLE fetchq.queues; --"}`, `{"x": "'); DROP TABLE fetchq.queues; --"}`},
		{"array", `[1,"two"]`, `[1, "two"]`},
		{"scalar", `"just a string"`, `"just a string"`},
	} {
		subject := "s" + string(rune('a'+i))
		tb.push(t, "foo", subject, 0, 0, Now(), tt.payload)
		require.Equal(t, tt.want, *tb.mustDoc(t, "foo", subject).Payload, tt.name)
	}
	// Subjects with quotes and unicode are stored as they are.
	for _, s := range []string{"it's", `say "hi"`, "ünï 日本", "a'; DELETE FROM fetchq.queues; --"} {
		tb.push(t, "foo", s, 0, 0, Now(), "{}")
		tb.mustDoc(t, "foo", s)
	}
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.queues"))
}

func TestDocPushMany(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")

	// The Node client's pushMany string (spec §4.2) after SQL decoding.
	data := `( 'a1', 0, '{"a":1}', {DATA}), ('a2', 2, '{"q":"it''s"}', {DATA} )`
	r, err := tb.store.DocPushMany(tb.ctx, tb.db, DocPushManyParams{Queue: "foo", Version: 1, NextIteration: NowMinus("1ms"), Data: data})
	require.NoError(t, err)
	require.Equal(t, PushResult{QueuedDocs: 2, Effects: adds("foo", "ent", 2, "cnt", 2, "v1", 2, "pnd", 2)}, r)
	a1, a2 := tb.mustDoc(t, "foo", "a1"), tb.mustDoc(t, "foo", "a2")
	require.Equal(t, docRow{Subject: "a1", Version: 1, Priority: 0, Status: 1, Payload: ptr(`{"a": 1}`)},
		docRow{Subject: a1.Subject, Version: a1.Version, Priority: a1.Priority, Status: a1.Status, Payload: a1.Payload})
	require.EqualValues(t, 2, a2.Priority)
	require.Equal(t, `{"q": "it's"}`, *a2.Payload, "parsed once, like SQL")
	require.Equal(t, a1.NextIteration, a2.NextIteration)
	require.Nil(t, a1.LockUpgrade)

	// Existing subjects are skipped; future documents are planned.
	r, err = tb.store.DocPushMany(tb.ctx, tb.db, DocPushManyParams{Queue: "foo", Version: 0, NextIteration: NowPlus("1h"), Data: `('a1', 0, '{}', {DATA}), ('a3', 0, '{}', {DATA}), ('a3', 1, '{}', {DATA})`})
	require.NoError(t, err)
	require.Equal(t, PushResult{QueuedDocs: 1, Effects: adds("foo", "ent", 1, "cnt", 1, "v0", 1, "pln", 1)}, r)
	require.EqualValues(t, 0, tb.mustDoc(t, "foo", "a3").Status)

	// Failures: 0 and nothing inserted; the data is never executed.
	for _, tt := range []struct{ name, data string }{
		{"injection", `('x1', 0, '{}', {DATA}); DELETE FROM fetchq.queues; --`},
		{"expression", `('x2', 1+1, '{}', {DATA})`},
		{"missing DATA", `('x3', 0, '{}')`},
		{"bad json", `('x4', 0, '{', {DATA})`},
		{"subject too long", `('x5', 0, '{}', {DATA}), ('` + strings.Repeat("y", 51) + `', 0, '{}', {DATA})`},
		{"empty", ``},
	} {
		r, err = tb.store.DocPushMany(tb.ctx, tb.db, DocPushManyParams{Queue: "foo", NextIteration: Now(), Data: tt.data})
		require.NoError(t, err, tt.name)
		require.Equal(t, PushResult{}, r, tt.name)
	}
	require.Equal(t, 3, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs"))
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.queues"))

	// Nonexistent queue: 0.
	r, err = tb.store.DocPushMany(tb.ctx, tb.db, DocPushManyParams{Queue: "nope", NextIteration: Now(), Data: `('z', 0, '{}', {DATA})`})
	require.NoError(t, err)
	require.Equal(t, PushResult{}, r)

	// The literal call shape doc_push('q', 0, NOW(), '...') through Invoke.
	res, err := tb.store.Invoke(tb.ctx, tb.db, "doc_push(varchar,integer,timestamptz,varchar)",
		[]Value{{Text: "foo"}, {Text: "0"}, {Now: true}, {Text: `('b1', 0, '{}', {DATA})`}})
	require.NoError(t, err)
	require.Equal(t, [][][]byte{{[]byte("1")}}, res.Rows)
}

func TestParsePushData(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want []PushDoc
	}{
		{`('a', 0, '{}', {DATA})`, []PushDoc{{"a", 0, "{}"}}},
		{"\n ( 'a' ,-5,'{\"x\":\"it''s\"}' , {DATA} ) ,\t('b''c', +7, '[]', {DATA})  ", []PushDoc{{"a", -5, `{"x":"it's"}`}, {"b'c", 7, "[]"}}},
		{`('', 2147483647, 'null', {DATA})`, []PushDoc{{"", 2147483647, "null"}}},
	} {
		got, err := ParsePushData(tt.in)
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, got, tt.in)
	}
	for _, in := range []string{
		``, `()`, `('a', 0, '{}')`, `('a', 0, '{}', {DATA}`, `('a', 0, '{}', {DATA}),`,
		`('a', 0, '{}', {DATA}) ('b', 0, '{}', {DATA})`, `('a, 0, '{}', {DATA})`,
		`(E'a', 0, '{}', {DATA})`, `('a', '0', '{}', {DATA})`, `('a', 0, '{}'::jsonb, {DATA})`,
		`('a', 1.5, '{}', {DATA})`, `('a', 2147483648, '{}', {DATA})`, `('a', NULL, '{}', {DATA})`,
		`('a', 0, '{}', {data})`, `('a', 0, '{}', {DATA}); SELECT 1`,
	} {
		_, err := ParsePushData(in)
		var e *Error
		require.ErrorAs(t, err, &e, in)
		require.Equal(t, "22P02", e.Code, in)
	}
}

func TestDocAppend(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	seen := map[string]bool{}
	for range 5 {
		r, err := tb.store.DocAppend(tb.ctx, tb.db, DocAppendParams{Queue: "foo", Payload: `{"a":"it''s"}`, Version: 1, Priority: 2})
		require.NoError(t, err)
		require.NotNil(t, r.Subject)
		require.Len(t, *r.Subject, 36)
		require.False(t, seen[*r.Subject])
		seen[*r.Subject] = true
		require.Equal(t, adds("foo", "ent", 1, "cnt", 1, "v1", 1, "pnd", 1), r.Effects)
		d := tb.mustDoc(t, "foo", *r.Subject)
		require.EqualValues(t, 1, d.Status)
		require.EqualValues(t, 1, d.Version)
		require.EqualValues(t, 2, d.Priority)
		require.Equal(t, `{"a": "it's"}`, *d.Payload)
		require.Equal(t, *d.CreatedAt, *d.NextIteration)
	}
	r, err := tb.store.DocAppend(tb.ctx, tb.db, DocAppendParams{Queue: "nope", Payload: "{}"})
	require.NoError(t, err)
	require.Equal(t, AppendResult{}, r)

	res, err := tb.store.Invoke(tb.ctx, tb.db, "doc_append(varchar,jsonb)", []Value{{Text: "foo"}, {Text: "{}"}})
	require.NoError(t, err)
	require.Equal(t, []string{"subject"}, res.Columns)
	require.Len(t, res.Rows[0][0], 36)
	res, err = tb.store.Invoke(tb.ctx, tb.db, "doc_append(varchar,jsonb)", []Value{{Text: "nope"}, {Text: "{}"}})
	require.NoError(t, err)
	require.Equal(t, [][][]byte{{nil}}, res.Rows)
}

func TestDocUpsert(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	up := func(subject string, priority int32, next Time, payload string) UpsertResult {
		t.Helper()
		r, err := tb.store.DocUpsert(tb.ctx, tb.db, DocPushParams{Queue: "foo", Subject: subject, Version: 1, Priority: priority, NextIteration: next, Payload: payload})
		require.NoError(t, err)
		return r
	}

	require.Equal(t, UpsertResult{QueuedDocs: 1, Effects: adds("foo", "ent", 1, "cnt", 1, "v1", 1, "pln", 1)}, up("s1", 1, NowPlus("1h"), `{"v":1}`))
	// Update: priority, payload, next_iteration change; version and status stay.
	require.Equal(t, UpsertResult{UpdatedDocs: 1}, up("s1", 9, NowMinus("1h"), `{"v":"it''s"}`))
	d := tb.mustDoc(t, "foo", "s1")
	require.EqualValues(t, 9, d.Priority)
	require.EqualValues(t, 0, d.Status, "a planned doc moved to the past stays planned")
	require.EqualValues(t, 1, d.Version)
	require.Equal(t, `{"v": "it's"}`, *d.Payload)
	require.True(t, d.NextIteration.Before(time.Now()))

	// Active documents are not updated; killed ones are, keeping status -1.
	up("s2", 0, Now(), "{}")
	res, err := tb.store.DocPick(tb.ctx, tb.db, DocPickParams{Queue: "foo", Version: 1, Limit: ptr(int32(1)), Duration: ptr("5m")})
	require.NoError(t, err)
	require.Equal(t, []string{"s2"}, subjects(res.Docs))
	require.Equal(t, UpsertResult{}, up("s2", 5, Now(), `{"x":1}`))
	_, err = tb.store.DocKill(tb.ctx, tb.db, DocCompleteParams{Queue: "foo", Subject: "s2"})
	require.NoError(t, err)
	require.Equal(t, UpsertResult{UpdatedDocs: 1}, up("s2", 5, Now(), `{"x":1}`))
	require.EqualValues(t, -1, tb.mustDoc(t, "foo", "s2").Status)

	// Oversize subject and nonexistent queue: (0, 0), no error.
	require.Equal(t, UpsertResult{}, up(strings.Repeat("x", 51), 0, Now(), "{}"))
	r, err := tb.store.DocUpsert(tb.ctx, tb.db, DocPushParams{Queue: "nope", Subject: "s", NextIteration: Now(), Payload: "{}"})
	require.NoError(t, err)
	require.Equal(t, UpsertResult{}, r)
}

func TestDocPickOrder(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")

	// doc_pick_01: same priority, older next_iteration first.
	tb.push(t, "foo", "a1", 0, 0, NowMinus("1s"), "{}")
	tb.push(t, "foo", "a2", 0, 0, NowMinus("2s"), "{}")
	require.Equal(t, []string{"a2"}, subjects(tb.pick(t, "foo", 1)))
	require.Equal(t, []string{"a1"}, subjects(tb.pick(t, "foo", 1)))

	// doc_pick_02: higher priority first.
	tb.push(t, "foo", "b1", 0, 1, NowMinus("1s"), "{}")
	tb.push(t, "foo", "b2", 0, 0, NowMinus("1s"), "{}")
	require.Equal(t, []string{"b1"}, subjects(tb.pick(t, "foo", 1)))
	require.Equal(t, []string{"b2"}, subjects(tb.pick(t, "foo", 1)))

	// Ten documents: the five picked are the first five in priority
	// order, returned in that order.
	for _, d := range []struct {
		s    string
		prio int32
		ago  string
	}{
		{"c0", 0, "10s"}, {"c1", 5, "1s"}, {"c2", 5, "3s"}, {"c3", 1, "9s"}, {"c4", 9, "1s"},
		{"c5", 0, "20s"}, {"c6", 5, "2s"}, {"c7", 2, "1s"}, {"c8", -1, "30s"}, {"c9", 1, "10s"},
	} {
		tb.push(t, "foo", d.s, 0, d.prio, NowMinus(d.ago), `{"s":"`+d.s+`"}`)
	}
	tb.push(t, "foo", "future", 0, 100, NowPlus("1h"), "{}")
	tb.push(t, "foo", "v1", 1, 100, Now(), "{}")

	docs := tb.pick(t, "foo", 5)
	require.Equal(t, []string{"c4", "c2", "c6", "c1", "c7"}, subjects(docs))
	for _, d := range docs {
		require.EqualValues(t, 1, d.Attempts)
		require.JSONEq(t, `{"s":"`+d.Subject+`"}`, d.Payload)
		require.True(t, d.NextIteration.Valid)
		next, err := d.NextIteration.Time()
		require.NoError(t, err)
		require.WithinDuration(t, time.Now().Add(5*time.Minute), next, time.Minute)
		require.EqualValues(t, 2, tb.mustDoc(t, "foo", d.Subject).Status)
	}
	// No limit (NULL) picks the rest of version 0, still in order; not the
	// future one, not version 1.
	r, err := tb.store.DocPick(tb.ctx, tb.db, DocPickParams{Queue: "foo", Duration: ptr("5m")})
	require.NoError(t, err)
	require.Equal(t, []string{"c9", "c3", "c5", "c0", "c8"}, subjects(r.Docs))
	require.Equal(t, adds("foo", "pkd", 5, "act", 5, "pnd", -5), r.Effects)
	r, err = tb.store.DocPick(tb.ctx, tb.db, DocPickParams{Queue: "foo", Version: 1, Limit: ptr(int32(10)), Duration: ptr("5m")})
	require.NoError(t, err)
	require.Equal(t, []string{"v1"}, subjects(r.Docs))
	require.Empty(t, tb.pick(t, "foo", 10))
}

func TestDocPickEdgeCases(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	tb.push(t, "foo", "s1", 0, 0, Now(), `{"a":1}`)
	tb.push(t, "foo", "s2", 0, 0, Now(), "{}")

	for _, p := range []DocPickParams{
		{Queue: "foo", Limit: ptr(int32(0)), Duration: ptr("5m")},
		{Queue: "foo", Limit: ptr(int32(-1)), Duration: ptr("5m")},
		{Queue: "foo", Limit: ptr(int32(1)), Duration: ptr("not an interval")},
		{Queue: "foo", Version: 7, Limit: ptr(int32(1)), Duration: ptr("5m")},
		{Queue: "nope", Limit: ptr(int32(1)), Duration: ptr("5m")},
		{Queue: "a-b", Limit: ptr(int32(1)), Duration: ptr("5m")},
	} {
		r, err := tb.store.DocPick(tb.ctx, tb.db, p)
		require.NoError(t, err, "%+v", p)
		require.Empty(t, r.Docs)
		require.Empty(t, r.Effects)
	}
	require.Equal(t, 2, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs WHERE status = 1 AND attempts = 0"), "failed picks change nothing")

	// NULL duration: next_iteration NULL.
	r, err := tb.store.DocPick(tb.ctx, tb.db, DocPickParams{Queue: "foo", Limit: ptr(int32(1))})
	require.NoError(t, err)
	require.Len(t, r.Docs, 1)
	require.False(t, r.Docs[0].NextIteration.Valid)
	require.Nil(t, tb.mustDoc(t, "foo", r.Docs[0].Subject).NextIteration)

	// Push and pick in one transaction: next_iteration = now() is pickable.
	err = tb.db.Atomic(tb.ctx, func(db DB) error {
		_, err := tb.store.DocPush(tb.ctx, db, DocPushParams{Queue: "foo", Subject: "same-tx", NextIteration: Now(), Payload: "{}"})
		require.NoError(t, err)
		r, err := tb.store.DocPick(tb.ctx, db, DocPickParams{Queue: "foo", Limit: ptr(int32(5)), Duration: ptr("1m")})
		require.NoError(t, err)
		require.Contains(t, subjects(r.Docs), "same-tx")
		return nil
	})
	require.NoError(t, err)
}

func TestDocPickInvoke(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	for _, s := range []string{"a", "b", "c", "d"} {
		tb.push(t, "foo", s, 0, 0, Now(), `{"s":"`+s+`"}`)
	}

	// doc_pick(q, '5'): a 5-second lock, one document.
	res, err := tb.store.Invoke(tb.ctx, tb.db, "doc_pick(varchar,varchar)", []Value{{Text: "foo"}, {Text: "5"}})
	require.NoError(t, err)
	require.Equal(t, []string{"subject", "payload", "version", "priority", "attempts", "iterations", "created_at", "last_iteration", "next_iteration", "lock_upgrade"}, res.Columns)
	require.Len(t, res.Rows, 1)
	row := res.Rows[0]
	require.Equal(t, "a", string(row[0]))
	require.Equal(t, `{"s": "a"}`, string(row[1]))
	require.Equal(t, []string{"0", "0", "1", "0"}, []string{string(row[2]), string(row[3]), string(row[4]), string(row[5])})
	require.NotNil(t, row[6])
	require.Nil(t, row[7])
	require.Nil(t, row[9])
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs WHERE subject = 'a' AND next_iteration - created_at BETWEEN interval '5s' AND interval '1 minute'"))
	require.Equal(t, adds("foo", "pkd", 1, "act", 1, "pnd", -1), res.Effects)

	// The timestamps print as Postgres prints them (text format).
	var want string
	require.NoError(t, tb.pool.QueryRow(tb.ctx, "SELECT created_at::text FROM fetchq_data.foo__docs WHERE subject = 'a'").Scan(&want))
	require.Equal(t, want, string(row[6]))

	// doc_pick(q, 2): two documents, '5m'; doc_pick(q): one.
	res, err = tb.store.Invoke(tb.ctx, tb.db, "doc_pick(varchar,integer)", []Value{{Text: "foo"}, {Text: "2"}})
	require.NoError(t, err)
	require.Len(t, res.Rows, 2)
	res, err = tb.store.Invoke(tb.ctx, tb.db, "doc_pick(varchar)", []Value{{Text: "foo"}})
	require.NoError(t, err)
	require.Len(t, res.Rows, 1)
	require.Equal(t, "d", string(res.Rows[0][0]))
	require.Equal(t, 3, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs WHERE next_iteration - now() > interval '4 minutes'"))

	// Empty results are an empty set, never an error.
	for _, args := range [][]Value{
		{{Text: "nope"}, {Text: "0"}, {Text: "1"}, {Text: "5m"}},
		{{Text: "foo"}, {Null: true}, {Text: "1"}, {Text: "5m"}},
		{{Null: true}, {Text: "0"}, {Text: "1"}, {Text: "5m"}},
	} {
		res, err = tb.store.Invoke(tb.ctx, tb.db, "doc_pick(varchar,integer,integer,varchar)", args)
		require.NoError(t, err)
		require.NotNil(t, res.Rows)
		require.Empty(t, res.Rows)
	}
}

func TestDocReschedule(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	for _, s := range []string{"past", "now", "future", "payload", "idle"} {
		tb.push(t, "foo", s, 0, 0, NowMinus("1s"), `{"old":true}`)
	}
	require.Len(t, tb.pick(t, "foo", 4), 4)

	for _, tt := range []struct {
		subject string
		next    Time
		payload *string
		status  int32
		metric  string
	}{
		{"past", NowMinus("1 hour"), nil, 1, "pnd"},
		{"now", Now(), nil, 1, "pnd"},
		{"future", NowPlus("1 hour"), nil, 0, "pln"},
		{"payload", NowPlus("1 hour"), ptr(`{"new":"it''s"}`), 0, "pln"},
	} {
		r, err := tb.store.DocReschedule(tb.ctx, tb.db, DocRescheduleParams{Queue: "foo", Subject: tt.subject, NextIteration: tt.next, Payload: tt.payload})
		require.NoError(t, err)
		require.Equal(t, DocResult{AffectedRows: 1, Effects: adds("foo", "prc", 1, "res", 1, "act", -1, tt.metric, 1)}, r, tt.subject)
		d := tb.mustDoc(t, "foo", tt.subject)
		require.Equal(t, tt.status, d.Status)
		require.Zero(t, d.Attempts)
		require.EqualValues(t, 1, d.Iterations)
		require.NotNil(t, d.LastIteration)
	}
	require.Equal(t, `{"new": "it's"}`, *tb.mustDoc(t, "foo", "payload").Payload)
	require.Equal(t, `{"old": true}`, *tb.mustDoc(t, "foo", "future").Payload)

	// Only active documents: the pending "idle" and the rescheduled ones give 0.
	for _, s := range []string{"idle", "past", "missing"} {
		r, err := tb.store.DocReschedule(tb.ctx, tb.db, DocRescheduleParams{Queue: "foo", Subject: s, NextIteration: Now()})
		require.NoError(t, err)
		require.Equal(t, DocResult{}, r)
	}

	// doc_reschedule_03: rescheduled to the past/now is pickable in the same transaction.
	err := tb.db.Atomic(tb.ctx, func(db DB) error {
		_, err := tb.store.DocPush(tb.ctx, db, DocPushParams{Queue: "foo", Subject: "tx", NextIteration: Now(), Payload: "{}"})
		require.NoError(t, err)
		r, err := tb.store.DocPick(tb.ctx, db, DocPickParams{Queue: "foo", Limit: ptr(int32(10)), Duration: ptr("5m")})
		require.NoError(t, err)
		require.NotEmpty(t, r.Docs)
		for _, d := range r.Docs {
			rr, err := tb.store.DocReschedule(tb.ctx, db, DocRescheduleParams{Queue: "foo", Subject: d.Subject, NextIteration: Now()})
			require.NoError(t, err)
			require.EqualValues(t, 1, rr.AffectedRows)
		}
		r2, err := tb.store.DocPick(tb.ctx, db, DocPickParams{Queue: "foo", Limit: ptr(int32(10)), Duration: ptr("5m")})
		require.NoError(t, err)
		require.ElementsMatch(t, subjects(r.Docs), subjects(r2.Docs))
		return nil
	})
	require.NoError(t, err)

	// Errors propagate: nonexistent queue, NULL time.
	_, err = tb.store.DocReschedule(tb.ctx, tb.db, DocRescheduleParams{Queue: "nope", Subject: "s", NextIteration: Now()})
	requireUndefinedTable(t, err, "nope")
	_, err = tb.store.DocReschedule(tb.ctx, tb.db, DocRescheduleParams{Queue: "Bad-Name", Subject: "s", NextIteration: Now()})
	requireUndefinedTable(t, err, "bad-name")
	_, err = tb.store.DocReschedule(tb.ctx, tb.db, DocRescheduleParams{Queue: "foo", Subject: "s"})
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "22004", e.Code)
}

func TestDocReject(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	for _, s := range []string{"r1", "r2", "r3", "r4", "idle"} {
		tb.push(t, "foo", s, 0, 0, NowMinus("1s"), "{}")
	}
	require.Len(t, tb.pick(t, "foo", 4), 4)
	before := tb.mustDoc(t, "foo", "r1")

	// doc_reject_01: status 1, iterations 1, next_iteration (the lock) kept,
	// attempts kept, a log row with ref_id NULL.
	r, err := tb.store.DocReject(tb.ctx, tb.db, DocRejectParams{Queue: "foo", Subject: "r1", Message: "foo", Details: `{"e":"it''s"}`})
	require.NoError(t, err)
	require.Equal(t, DocResult{AffectedRows: 1, Effects: adds("foo", "prc", 1, "err", 1, "rej", 1, "act", -1, "pnd", 1)}, r)
	d := tb.mustDoc(t, "foo", "r1")
	require.EqualValues(t, 1, d.Status)
	require.EqualValues(t, 1, d.Iterations)
	require.EqualValues(t, 1, d.Attempts)
	require.Equal(t, before.NextIteration, d.NextIteration)
	require.NotNil(t, d.LastIteration)
	require.Nil(t, d.LockUpgrade)
	require.Equal(t, 1, tb.count(t, `SELECT count(*) FROM fetchq_data.foo__logs WHERE subject = 'r1' AND message = 'foo' AND details = '{"e":"it''s"}' AND ref_id IS NULL AND created_at IS NOT NULL`))
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs WHERE subject = 'r1' AND next_iteration >= now() + interval '4 minutes'"),
		"not pickable until the old lock expires")

	// doc_reject_02: ref_id stored.
	r, err = tb.store.DocReject(tb.ctx, tb.db, DocRejectParams{Queue: "foo", Subject: "r2", Message: "m", Details: "{}", RefID: ptr("xxx")})
	require.NoError(t, err)
	require.EqualValues(t, 1, r.AffectedRows)
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__logs WHERE subject = 'r2' AND ref_id = 'xxx'"))

	// The reject succeeds without a log row when the log cannot be written.
	r, err = tb.store.DocReject(tb.ctx, tb.db, DocRejectParams{Queue: "foo", Subject: "r3", Message: strings.Repeat("m", 256), Details: "{}"})
	require.NoError(t, err)
	require.EqualValues(t, 1, r.AffectedRows)
	r, err = tb.store.DocReject(tb.ctx, tb.db, DocRejectParams{Queue: "foo", Subject: "r4", Message: "no details"})
	require.NoError(t, err)
	require.EqualValues(t, 1, r.AffectedRows)
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__logs WHERE subject IN ('r3', 'r4')"))

	// Not active or unknown: 0.
	for _, s := range []string{"idle", "r1", "missing"} {
		r, err = tb.store.DocReject(tb.ctx, tb.db, DocRejectParams{Queue: "foo", Subject: s, Message: "m", Details: "{}"})
		require.NoError(t, err)
		require.Equal(t, DocResult{}, r)
	}
	_, err = tb.store.DocReject(tb.ctx, tb.db, DocRejectParams{Queue: "nope", Subject: "s", Message: "m", Details: "{}"})
	requireUndefinedTable(t, err, "nope")
}

// TestMaxAttempts: a document dies on its max_attempts-th failure.
func TestMaxAttempts(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	tb.push(t, "foo", "s", 0, 0, Now(), "{}")
	lock := "0 seconds" // the lock expires at once, so a reject is pickable again

	for attempt := 1; attempt <= 5; attempt++ {
		r, err := tb.store.DocPick(tb.ctx, tb.db, DocPickParams{Queue: "foo", Limit: ptr(int32(1)), Duration: &lock})
		require.NoError(t, err)
		require.Equal(t, []string{"s"}, subjects(r.Docs), "attempt %d", attempt)
		require.EqualValues(t, attempt, r.Docs[0].Attempts)
		rj, err := tb.store.DocReject(tb.ctx, tb.db, DocRejectParams{Queue: "foo", Subject: "s", Message: "fail", Details: "{}"})
		require.NoError(t, err)
		want := "pnd"
		if attempt == 5 {
			want = "kll"
		}
		require.Equal(t, adds("foo", "prc", 1, "err", 1, "rej", 1, "act", -1, want, 1), rj.Effects, "attempt %d", attempt)
	}
	d := tb.mustDoc(t, "foo", "s")
	require.EqualValues(t, -1, d.Status)
	require.EqualValues(t, 5, d.Iterations)
	require.Equal(t, 5, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__logs"))

	// doc_reject_03: max_attempts 1 kills on the first reject.
	_, err := tb.store.QueueSetMaxAttempts(tb.ctx, tb.db, QueueSetMaxAttemptsParams{Queue: "foo", MaxAttempts: 1})
	require.NoError(t, err)
	tb.push(t, "foo", "t", 0, 0, Now(), "{}")
	require.Len(t, tb.pick(t, "foo", 1), 1)
	_, err = tb.store.DocReject(tb.ctx, tb.db, DocRejectParams{Queue: "foo", Subject: "t", Message: "fail", Details: "{}"})
	require.NoError(t, err)
	require.EqualValues(t, -1, tb.mustDoc(t, "foo", "t").Status)
}

func TestDocCompleteKillDrop(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	for _, s := range []string{"c", "cp", "k", "kp", "d", "idle"} {
		tb.push(t, "foo", s, 4, 0, NowMinus("1s"), `{"old":1}`)
	}
	r, err := tb.store.DocPick(tb.ctx, tb.db, DocPickParams{Queue: "foo", Version: 4, Limit: ptr(int32(5)), Duration: ptr("5m")})
	require.NoError(t, err)
	require.Len(t, r.Docs, 5)
	locks := map[string]*time.Time{}
	for _, s := range subjects(r.Docs) {
		locks[s] = tb.mustDoc(t, "foo", s).NextIteration
	}
	far := time.Date(2970, 1, 1, 0, 0, 0, 0, time.UTC)

	c, err := tb.store.DocComplete(tb.ctx, tb.db, DocCompleteParams{Queue: "foo", Subject: "c"})
	require.NoError(t, err)
	require.Equal(t, DocCompleteResult{AffectedRows: ptr(int32(1)), Effects: adds("foo", "prc", 1, "cpl", 1, "act", -1)}, c)
	d := tb.mustDoc(t, "foo", "c")
	require.EqualValues(t, 3, d.Status)
	require.Zero(t, d.Attempts)
	require.EqualValues(t, 1, d.Iterations)
	require.Equal(t, far, d.NextIteration.UTC())
	require.NotNil(t, d.LastIteration)
	require.Equal(t, `{"old": 1}`, *d.Payload)

	c, err = tb.store.DocComplete(tb.ctx, tb.db, DocCompleteParams{Queue: "foo", Subject: "cp", Payload: ptr(`{"done":"it''s"}`)})
	require.NoError(t, err)
	require.EqualValues(t, 1, *c.AffectedRows)
	require.Equal(t, `{"done": "it's"}`, *tb.mustDoc(t, "foo", "cp").Payload)

	c, err = tb.store.DocKill(tb.ctx, tb.db, DocCompleteParams{Queue: "foo", Subject: "k"})
	require.NoError(t, err)
	require.Equal(t, DocCompleteResult{AffectedRows: ptr(int32(1)), Effects: adds("foo", "prc", 1, "kll", 1, "act", -1)}, c)
	d = tb.mustDoc(t, "foo", "k")
	require.EqualValues(t, -1, d.Status)
	require.Zero(t, d.Attempts)
	require.EqualValues(t, 1, d.Iterations)
	require.Equal(t, *locks["k"], *d.NextIteration, "kill keeps next_iteration")
	c, err = tb.store.DocKill(tb.ctx, tb.db, DocCompleteParams{Queue: "foo", Subject: "kp", Payload: ptr(`{"k":1}`)})
	require.NoError(t, err)
	require.EqualValues(t, 1, *c.AffectedRows)
	require.Equal(t, `{"k": 1}`, *tb.mustDoc(t, "foo", "kp").Payload)

	dr, err := tb.store.DocDrop(tb.ctx, tb.db, DocDropParams{Queue: "foo", Subject: "d"})
	require.NoError(t, err)
	require.Equal(t, DocResult{AffectedRows: 1, Effects: adds("foo", "prc", 1, "drp", 1, "act", -1, "cnt", -1, "v4", -1)}, dr)
	_, ok := tb.getDoc(t, "foo", "d")
	require.False(t, ok)

	// Only active documents.
	for _, s := range []string{"idle", "c", "k", "missing"} {
		c, err = tb.store.DocComplete(tb.ctx, tb.db, DocCompleteParams{Queue: "foo", Subject: s})
		require.NoError(t, err)
		require.Equal(t, DocCompleteResult{AffectedRows: ptr(int32(0))}, c)
		c, err = tb.store.DocKill(tb.ctx, tb.db, DocCompleteParams{Queue: "foo", Subject: s})
		require.NoError(t, err)
		require.Equal(t, DocCompleteResult{AffectedRows: ptr(int32(0))}, c)
		dr, err = tb.store.DocDrop(tb.ctx, tb.db, DocDropParams{Queue: "foo", Subject: s})
		require.NoError(t, err)
		require.Equal(t, DocResult{}, dr)
	}
	require.EqualValues(t, 1, tb.mustDoc(t, "foo", "idle").Status)

	// Nonexistent queue: complete/kill NULL, drop raises.
	for _, q := range []string{"nope", "a-b"} {
		c, err = tb.store.DocComplete(tb.ctx, tb.db, DocCompleteParams{Queue: q, Subject: "s"})
		require.NoError(t, err)
		require.Nil(t, c.AffectedRows)
		c, err = tb.store.DocKill(tb.ctx, tb.db, DocCompleteParams{Queue: q, Subject: "s", Payload: ptr("{}")})
		require.NoError(t, err)
		require.Nil(t, c.AffectedRows)
		_, err = tb.store.DocDrop(tb.ctx, tb.db, DocDropParams{Queue: q, Subject: "s"})
		requireUndefinedTable(t, err, q)
	}
	res, err := tb.store.Invoke(tb.ctx, tb.db, "doc_complete(varchar,varchar,jsonb)", []Value{{Text: "nope"}, {Text: "s"}, {Text: "{}"}})
	require.NoError(t, err)
	require.Equal(t, []string{"affected_rows"}, res.Columns)
	require.Equal(t, [][][]byte{{nil}}, res.Rows)
}

// TestAtomicRollback: BEGIN; push; pick; ROLLBACK leaves no trace.
func TestAtomicRollback(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	tb.push(t, "foo", "kept", 0, 0, Now(), "{}")
	errRollback := errors.New("roll back")
	err := tb.db.Atomic(tb.ctx, func(db DB) error {
		r, err := tb.store.DocPush(tb.ctx, db, DocPushParams{Queue: "foo", Subject: "gone", NextIteration: Now(), Payload: "{}"})
		require.NoError(t, err)
		require.EqualValues(t, 1, r.QueuedDocs)
		p, err := tb.store.DocPick(tb.ctx, db, DocPickParams{Queue: "foo", Limit: ptr(int32(5)), Duration: ptr("5m")})
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"kept", "gone"}, subjects(p.Docs))
		return errRollback
	})
	require.ErrorIs(t, err, errRollback)
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs"))
	d := tb.mustDoc(t, "foo", "kept")
	require.EqualValues(t, 1, d.Status)
	require.Zero(t, d.Attempts)
}

// TestCatchAllInsideTransaction: a catch-all failure inside a client's
// transaction (not autocommit: Atomic uses a SAVEPOINT) returns its failure
// value and leaves the transaction usable.
func TestCatchAllInsideTransaction(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")
	err := tb.db.Atomic(tb.ctx, func(db DB) error {
		for _, q := range []string{"nope", "foo"} { // nope fails first
			r, err := tb.store.DocPush(tb.ctx, db, DocPushParams{Queue: q, Subject: "dup", NextIteration: Now(), Payload: "{}"})
			require.NoError(t, err)
			require.Equal(t, q == "foo", r.QueuedDocs == 1, q)
		}
		r, err := tb.store.DocPush(tb.ctx, db, DocPushParams{Queue: "foo", Subject: "dup", NextIteration: Now(), Payload: "{}"})
		require.NoError(t, err)
		require.Zero(t, r.QueuedDocs)
		c, err := tb.store.DocComplete(tb.ctx, db, DocCompleteParams{Queue: "nope", Subject: "x"})
		require.NoError(t, err)
		require.Nil(t, c.AffectedRows)
		p, err := tb.store.DocPick(tb.ctx, db, DocPickParams{Queue: "foo", Limit: ptr(int32(1)), Duration: ptr("bad interval")})
		require.NoError(t, err)
		require.Empty(t, p.Docs)
		u, err := tb.store.DocUpsert(tb.ctx, db, DocPushParams{Queue: "foo", Subject: strings.Repeat("x", 60), NextIteration: Now(), Payload: "{}"})
		require.NoError(t, err)
		require.Equal(t, UpsertResult{}, u)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__docs WHERE subject = 'dup'"))
}

// TestPushManyNullPayload: push-many stores a JSON null payload as the
// jsonb null, as the single push and 4.0.2 do, not as SQL NULL.
func TestPushManyNullPayload(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "pn")
	r, err := tb.store.DocPushMany(tb.ctx, tb.db, DocPushManyParams{Queue: "pn", NextIteration: Now(), Data: `('a', 0, 'null', {DATA}), ('b', 0, '{"k": null}', {DATA})`})
	require.NoError(t, err)
	require.Equal(t, int64(2), int64(r.QueuedDocs))
	rows, err := tb.pool.Query(tb.ctx, "SELECT subject, payload IS NULL, payload::text FROM fetchq_data.pn__docs ORDER BY subject")
	require.NoError(t, err)
	var got []string
	for rows.Next() {
		var s, text string
		var isNull bool
		require.NoError(t, rows.Scan(&s, &isNull, &text))
		require.False(t, isNull, s)
		got = append(got, s+" "+text)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"a null", `b {"k": null}`}, got)
}
