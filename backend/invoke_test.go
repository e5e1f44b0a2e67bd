package backend

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// v builds constant argument Values: nil is NULL.
func v(texts ...any) []Value {
	out := make([]Value, len(texts))
	for i, x := range texts {
		switch x := x.(type) {
		case nil:
			out[i] = Value{Null: true}
		case string:
			out[i] = Value{Text: x}
		case Value:
			out[i] = x
		default:
			panic(x)
		}
	}
	return out
}

// r1 is a one-row result of text values ("<nil>" is NULL).
func r1(vals ...string) [][][]byte {
	row := make([][]byte, len(vals))
	for i, s := range vals {
		if s != "<nil>" {
			row[i] = []byte(s)
		}
	}
	return [][][]byte{row}
}

var now = Value{Now: true}

func TestOverloads(t *testing.T) {
	t.Parallel()
	ids := Overloads()
	require.True(t, slices.IsSorted(ids))
	require.Len(t, ids, 86) // every callable routine of the 4.0.2 build, every overload
	for _, id := range []string{
		"info()", "init()", "destroy_with_terrible_consequences()", "upgrade__310__320()", "upgrade__320__330()",
		"queue_get_id(varchar)", "queue_create(varchar)", "queue_drop(varchar)",
		"queue_create_indexes(varchar,integer,integer)", "queue_create_indexes(varchar)", "queue_drop_indexes(varchar)",
		"queue_set_max_attempts(varchar,integer)", "queue_set_current_version(varchar,integer)", "queue_drop_version(varchar,integer)",
		"queue_set_logs_retention(varchar,varchar)", "queue_set_metrics_retention(varchar,varchar)",
		"queue_drop_logs(varchar,varchar)", "queue_drop_logs(varchar,timestamptz)", "queue_drop_logs(varchar)",
		"queue_drop_metrics(varchar,jsonb)", "queue_drop_metrics(varchar)",
		"queue_top(varchar,integer,integer,integer)", "queue_status()", "queue_status(varchar)",
		"queue_truncate(varchar)", "queue_truncate(varchar,boolean)", "queue_truncate_all()", "queue_truncate_all(boolean)",
		"queue_enable_notify(varchar)", "queue_disable_notify(varchar)",
		"doc_push(varchar,varchar,integer,integer,timestamptz,jsonb)", "doc_push(varchar,varchar)", "doc_push(varchar,varchar,jsonb)",
		"doc_push(varchar,varchar,jsonb,timestamptz)", "doc_push(varchar,integer,timestamptz,varchar)",
		"doc_append(varchar,jsonb,integer,integer)", "doc_append(varchar,jsonb)",
		"doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)",
		"doc_pick(varchar,integer,integer,varchar)", "doc_pick(varchar,varchar)", "doc_pick(varchar)", "doc_pick(varchar,integer)",
		"doc_reschedule(varchar,varchar,timestamptz)", "doc_reschedule(varchar,varchar,timestamptz,jsonb)",
		"doc_reject(varchar,varchar,varchar,jsonb)", "doc_reject(varchar,varchar,varchar,jsonb,varchar)",
		"doc_complete(varchar,varchar)", "doc_complete(varchar,varchar,jsonb)",
		"doc_kill(varchar,varchar)", "doc_kill(varchar,varchar,jsonb)", "doc_drop(varchar,varchar)",
		"log_error(varchar,varchar,varchar,jsonb)", "log_error(varchar,varchar,varchar,jsonb,varchar)",
		"trace(varchar)", "trace(varchar,varchar)", "utils_ts_retain(varchar,varchar,varchar,timestamptz,timestamptz)",
		"metric_set(varchar,varchar,integer)", "metric_increment(varchar,varchar,integer)",
		"metric_log_set(varchar,varchar,integer)", "metric_log_increment(varchar,varchar,integer)",
		"metric_log_decrement(varchar,varchar,integer)", "metric_log_pack()",
		"metric_get(varchar,varchar)", "metric_get(varchar)", "metric_get_total(varchar)", "metric_get_common(varchar)",
		"metric_get_all()", "metric_compute(varchar)", "metric_compute_all()", "metric_reset(varchar)", "metric_reset_all()",
		"metric_snap(varchar)", "metric_snap(varchar,varchar)", "metric_snap(varchar,jsonb)",
		"mnt_make_pending(varchar,integer)", "mnt_reschedule_orphans(varchar,integer)", "mnt_mark_dead(varchar,integer)",
		"mnt_run(varchar,integer)", "mnt_run_all(integer)", "mnt_job_pick(varchar,integer)", "mnt_job_reschedule(integer,varchar)",
		"mnt_job_run(varchar,integer)", "mnt_job_run(integer)", "mnt_job_run()", "mnt(varchar)", "mnt()",
	} {
		require.Contains(t, ids, id)
	}
	for _, id := range ids {
		require.NotEmpty(t, Columns(id), id)
	}
	require.Nil(t, Columns("nope()"))
}

func TestInvokeArgumentErrors(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	s, db := tb.store, tb.db
	for _, tt := range []struct {
		id      string
		args    []Value
		code    string
		message string
	}{
		{"nope()", nil, "42883", "function fetchq.nope() does not exist"},
		{"doc_pick(varchar)", nil, "42883", ""},
		{"doc_pick(varchar,integer)", v("q", "abc"), "22P02", `invalid input syntax for type integer: "abc"`},
		{"doc_pick(varchar,integer)", v("q", "1.5"), "22P02", `invalid input syntax for type integer: "1.5"`},
		{"doc_pick(varchar,integer)", v("q", ""), "22P02", `invalid input syntax for type integer: ""`},
		{"doc_pick(varchar,integer)", v("q", "3000000000"), "22003", `value "3000000000" is out of range for type integer`},
		{"doc_pick(varchar,integer)", v("q", "+-1"), "22P02", ""},
		{"queue_truncate(varchar,boolean)", v("q", "maybe"), "22P02", `invalid input syntax for type boolean: "maybe"`},
		{"queue_truncate(varchar,boolean)", v("q", "o"), "22P02", ""},
		{"doc_push(varchar,varchar)", []Value{{Text: "q"}, now}, "42804", ""},
	} {
		_, err := s.Invoke(t.Context(), db, tt.id, tt.args)
		var e *Error
		require.ErrorAs(t, err, &e, tt.id)
		require.Equal(t, tt.code, e.SQLState(), "%s %v", tt.id, err)
		if tt.message != "" {
			require.Equal(t, tt.message, e.Message)
		}
	}

	// jsonb text that is not plain JSON is checked by Postgres' jsonb
	// input, whatever the queue: its SQLSTATE and message.
	for _, tt := range []struct {
		id, payload, code, message string
	}{
		{"doc_push(varchar,varchar,jsonb)", "{nope", "22P02", "invalid input syntax for type json"},
		{"doc_push(varchar,varchar,jsonb)", "", "22P02", "invalid input syntax for type json"},
		{"doc_push(varchar,varchar,jsonb)", `"\u0000"`, "22P05", "unsupported Unicode escape sequence"},
		{"doc_append(varchar,jsonb)", `{"n":1e999999}`, "22003", "value overflows numeric format"},
		{"doc_complete(varchar,varchar,jsonb)", `["\ud800"]`, "22P02", "invalid input syntax for type json"},
		{"log_error(varchar,varchar,varchar,jsonb)", strings.Repeat("[", 20000) + strings.Repeat("]", 20000), "54001", "stack depth limit exceeded"},
	} {
		for _, q := range []any{"q", "a-b", nil} {
			args := v(q, "s", "m", tt.payload)
			if tt.id == "doc_append(varchar,jsonb)" {
				args = v(q, tt.payload)
			} else if tt.id != "log_error(varchar,varchar,varchar,jsonb)" {
				args = v(q, "s", tt.payload)
			}
			_, err := s.Invoke(t.Context(), db, tt.id, args)
			var pg *pgconn.PgError
			require.ErrorAs(t, err, &pg, "%s %q", tt.id, tt.payload)
			require.Equal(t, tt.code, pg.Code, "%s %q", tt.id, tt.payload)
			require.Equal(t, tt.message, pg.Message)
		}
	}
	// Valid JSON that is not plain is stored.
	res, err := s.Invoke(t.Context(), db, "queue_create(varchar)", v("q"))
	require.NoError(t, err)
	require.Equal(t, "t", string(res.Rows[0][0]))
	deep := strings.Repeat("[", 1000) + strings.Repeat("]", 1000)
	for i, p := range []string{deep, `{"n":1e1000}`, `"\ud83d\ude00"`, `"\u00e9"`} {
		res, err := s.Invoke(t.Context(), db, "doc_push(varchar,varchar,jsonb)", v("q", "s"+strconv.Itoa(i), p))
		require.NoError(t, err, p)
		require.Equal(t, r1("1"), res.Rows, p)
	}
}

func TestScanJSON(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in           string
		valid, plain bool
	}{
		{`{}`, true, true},
		{` [1, -2.5e+10, "a\"b", true, false, null, {"k": []}] `, true, true},
		{`"\ud83d\ude00"`, true, true},
		{`"\u00e9\u0041"`, true, true},
		{`0`, true, true},
		{`1e0999`, true, true},
		{`1e1000`, true, false},
		{`"\u0000"`, true, false},
		{`"\ud800"`, true, false},
		{`"\ud800x"`, true, false},
		{`"\udc00"`, true, false},
		{`"\ud800\u0041"`, true, false},
		{strings.Repeat("[", 64) + strings.Repeat("]", 64), true, true},
		{strings.Repeat("[", 65) + strings.Repeat("]", 65), true, false},
		{strings.Repeat("[", 20000) + strings.Repeat("]", 20000), true, false},
		{"1" + strings.Repeat("0", 100), true, false},
		{"\"\xff\"", true, false},
		{"", false, false},
		{" ", false, false},
		{"{", false, false},
		{`{"a":}`, false, false},
		{`{"a" 1}`, false, false},
		{`{1:1}`, false, false},
		{`[1,]`, false, false},
		{`[1 2]`, false, false},
		{`{"a":1}}`, false, false},
		{`{"a":1,}`, false, false},
		{"01", false, false},
		{"1.", false, false},
		{".5", false, false},
		{"+1", false, false},
		{"-", false, false},
		{"1e", false, false},
		{"1e+", false, false},
		{"NaN", false, false},
		{"tru", false, false},
		{"nul", false, false},
		{"'a'", false, false},
		{`"\x"`, false, false},
		{`"\u00"`, false, false},
		{`"\u00g0"`, false, false},
		{"\"\t\"", false, false},
		{"\"a", false, false},
		{"[}", false, false},
		{"{]", false, false},
		{"\x00", false, false},
	} {
		valid, plain := scanJSON(tt.in)
		require.Equal(t, tt.valid, valid, "valid %q", tt.in)
		require.Equal(t, tt.plain, plain, "plain %q", tt.in)
		if len(tt.in) < 10000 {
			require.Equal(t, json.Valid([]byte(tt.in)), valid, "json.Valid %q", tt.in)
		}
	}
}

func FuzzScanJSON(f *testing.F) {
	for _, s := range []string{`{}`, `[1,"a",{"b":null}]`, `"\ud800\udc00"`, `1e5`, `{"a":[true,false]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		valid, plain := scanJSON(s)
		if strings.Count(s, "[")+strings.Count(s, "{") < 10000 && valid != json.Valid([]byte(s)) {
			t.Fatalf("scanJSON(%q) valid = %v, json.Valid says %v", s, valid, !valid)
		}
		if plain && !valid {
			t.Fatalf("scanJSON(%q) plain but not valid", s)
		}
	})
}

func TestParseArgs(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"42": 42, " 42 ": 42, "+7": 7, "-2147483648": -2147483648, "007": 7} {
		n, err := parseInt(in, argInteger)
		require.NoError(t, err, in)
		require.Equal(t, want, n)
	}
	for in, want := range map[string]bool{
		"t": true, "TRUE": true, " tr ": true, "yes": true, "y": true, "on": true, "1": true,
		"f": false, "False": false, "n": false, "no": false, "off": false, "of": false, "0": false,
	} {
		b, err := parseBool(in)
		require.NoError(t, err, in)
		require.Equal(t, want, b, in)
	}
}

func TestNormalizeQueueName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		"foo": true, "FOO": true, "_": true, "a1_b2": true, strings.Repeat("a", 40): true,
		"": false, "1a": false, "a-b": false, "a b": false, strings.Repeat("a", 41): false, "é": false, "a.b": false,
	} {
		got, ok := NormalizeQueueName(in)
		require.Equal(t, want, ok, in)
		if ok {
			require.Equal(t, strings.ToLower(in), got)
		}
	}
}

// TestInvokeNonexistentQueue pins spec §2.9 through Invoke.
func TestInvokeNonexistentQueue(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	empty := [][][]byte{}
	for _, tt := range []struct {
		id   string
		args []Value
		want [][][]byte // nil: an error
	}{
		{"doc_push(varchar,varchar,integer,integer,timestamptz,jsonb)", v("nope", "s", "0", "0", now, "{}"), r1("0")},
		{"doc_push(varchar,varchar)", v("nope", "s"), r1("0")},
		{"doc_push(varchar,varchar,jsonb)", v("nope", "s", "{}"), r1("0")},
		{"doc_push(varchar,varchar,jsonb,timestamptz)", v("nope", "s", "{}", now), r1("0")},
		{"doc_push(varchar,integer,timestamptz,varchar)", v("nope", "0", now, "('s', 0, '{}', {DATA})"), r1("0")},
		{"doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)", v("nope", "s", "0", "0", now, "{}"), r1("0", "0")},
		{"doc_append(varchar,jsonb,integer,integer)", v("nope", "{}", "0", "0"), r1("<nil>")},
		{"doc_append(varchar,jsonb)", v("nope", "{}"), r1("<nil>")},
		{"doc_pick(varchar,integer,integer,varchar)", v("nope", "0", "1", "5m"), empty},
		{"doc_pick(varchar,varchar)", v("nope", "5m"), empty},
		{"doc_pick(varchar)", v("nope"), empty},
		{"doc_pick(varchar,integer)", v("nope", "3"), empty},
		{"doc_complete(varchar,varchar)", v("nope", "s"), r1("<nil>")},
		{"doc_complete(varchar,varchar,jsonb)", v("nope", "s", "{}"), r1("<nil>")},
		{"doc_kill(varchar,varchar)", v("nope", "s"), r1("<nil>")},
		{"doc_kill(varchar,varchar,jsonb)", v("nope", "s", "{}"), r1("<nil>")},
		{"doc_reschedule(varchar,varchar,timestamptz)", v("nope", "s", now), nil},
		{"doc_reschedule(varchar,varchar,timestamptz,jsonb)", v("nope", "s", now, "{}"), nil},
		{"doc_reject(varchar,varchar,varchar,jsonb)", v("nope", "s", "m", "{}"), nil},
		{"doc_reject(varchar,varchar,varchar,jsonb,varchar)", v("nope", "s", "m", "{}", "r"), nil},
		{"doc_drop(varchar,varchar)", v("nope", "s"), nil},
		{"log_error(varchar,varchar,varchar,jsonb)", v("nope", "s", "m", "{}"), r1("f")},
		{"log_error(varchar,varchar,varchar,jsonb,varchar)", v("nope", "s", "m", "{}", "r"), r1("f")},
		{"queue_top(varchar,integer,integer,integer)", v("nope", "0", "1", "0"), nil},
		{"queue_truncate(varchar)", v("nope"), nil},
		{"queue_truncate(varchar,boolean)", v("nope", "true"), nil},
		{"queue_enable_notify(varchar)", v("nope"), nil},
		{"queue_create(varchar)", v("a-b"), r1("f", "<nil>")},
		{"queue_create(varchar)", v(strings.Repeat("x", 41)), r1("f", "<nil>")},
		{"queue_drop(varchar)", v("nope"), r1("f", "<nil>")},
		{"queue_status(varchar)", v("nope"), empty},
		{"queue_set_max_attempts(varchar,integer)", v("nope", "3"), r1("0", "t")},
		{"queue_set_current_version(varchar,integer)", v("nope", "3"), r1("0", "t")},
		{"queue_set_logs_retention(varchar,varchar)", v("nope", "1h"), r1("0")},
		{"queue_set_metrics_retention(varchar,varchar)", v("nope", "[]"), r1("0")},
		{"queue_drop_logs(varchar,varchar)", v("nope", "1h"), r1("0")},
		{"queue_drop_logs(varchar,timestamptz)", v("nope", now), r1("0")},
		{"queue_drop_logs(varchar)", v("nope"), r1("0")},
		{"queue_drop_metrics(varchar,jsonb)", v("nope", `[{"from":"1d","to":"1h","retain":"hour"}]`), r1("0")},
		{"queue_drop_metrics(varchar)", v("nope"), r1("0")},
		{"queue_drop_version(varchar,integer)", v("nope", "1"), r1("t")},
		{"queue_drop_indexes(varchar)", v("nope"), r1("t")},
		{"queue_create_indexes(varchar)", v("nope"), r1("t")},
		{"queue_create_indexes(varchar,integer,integer)", v("nope", "0", "5"), r1("f")},
		{"queue_disable_notify(varchar)", v("nope"), r1("t")},
	} {
		res, err := tb.store.Invoke(tb.ctx, tb.db, tt.id, tt.args)
		if tt.want == nil {
			requireUndefinedTable(t, err, "nope")
			continue
		}
		require.NoError(t, err, tt.id)
		require.Equal(t, tt.want, res.Rows, tt.id)
		require.Equal(t, Columns(tt.id), res.Columns)
		require.Empty(t, res.Effects, tt.id)
	}
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq.queues"), "nothing registered")
}

func TestInvokeDocs(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	inv := func(id string, args ...any) *Result {
		t.Helper()
		res, err := tb.store.Invoke(tb.ctx, tb.db, id, v(args...))
		require.NoError(t, err, id)
		require.Equal(t, Columns(id), res.Columns)
		return res
	}
	require.Equal(t, r1("4.0.2"), inv("info()").Rows)
	require.Equal(t, r1("t"), inv("upgrade__310__320()").Rows)
	require.Equal(t, r1("t"), inv("upgrade__320__330()").Rows)
	require.Equal(t, r1("f"), inv("init()").Rows)
	require.Equal(t, r1("t", "1"), inv("queue_create(varchar)", "Foo").Rows)

	// The short doc_push forms.
	res := inv("doc_push(varchar,varchar)", "foo", "short")
	require.Equal(t, r1("1"), res.Rows)
	require.Equal(t, adds("foo", "ent", 1, "cnt", 1, "v0", 1, "pnd", 1), res.Effects)
	d := tb.mustDoc(t, "foo", "short")
	require.Equal(t, "{}", *d.Payload)
	require.EqualValues(t, 1, d.Status)
	require.Equal(t, r1("1"), inv("doc_push(varchar,varchar,jsonb)", "foo", "payload", `{"a":"it''s"}`).Rows)
	require.Equal(t, `{"a": "it's"}`, *tb.mustDoc(t, "foo", "payload").Payload)
	res = inv("doc_push(varchar,varchar,jsonb,timestamptz)", "foo", "later", "{}", Value{Now: true, Interval: "1 hour"})
	require.Equal(t, adds("foo", "ent", 1, "cnt", 1, "v0", 1, "pln", 1), res.Effects)
	require.Equal(t, r1("1"), inv("doc_push(varchar,varchar,integer,integer,timestamptz,jsonb)", "foo", "epoch", "2", "3", Value{Epoch: true, Text: "1700000000.123"}, "{}").Rows)
	d = tb.mustDoc(t, "foo", "epoch")
	require.EqualValues(t, 2, d.Version)
	require.EqualValues(t, 3, d.Priority)
	require.Equal(t, int64(1700000000123), d.NextIteration.UnixMilli())
	require.Equal(t, r1("1"), inv("doc_push(varchar,varchar,integer,integer,timestamptz,jsonb)", "foo", "lit", "0", "0", "2030-01-01 00:00", "{}").Rows)

	// NULL arguments: 0.
	for _, args := range [][]any{
		{nil, "s", "0", "0", now, "{}"}, {"foo", nil, "0", "0", now, "{}"}, {"foo", "n1", nil, "0", now, "{}"},
		{"foo", "n2", "0", nil, now, "{}"}, {"foo", "n3", "0", "0", nil, "{}"}, {"foo", "n4", "0", "0", now, nil},
	} {
		require.Equal(t, r1("0"), inv("doc_push(varchar,varchar,integer,integer,timestamptz,jsonb)", args...).Rows)
	}

	// The 51-character subject.
	_, err := tb.store.Invoke(tb.ctx, tb.db, "doc_push(varchar,varchar)", v("foo", strings.Repeat("s", 51)))
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "P0001", e.Code)
	require.Equal(t, "The subject exceeds 50 characters limit", e.Message)

	// Upsert, pick, resolve.
	require.Equal(t, r1("0", "1"), inv("doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)", "foo", "later", "0", "5", now, "{}").Rows)
	picked := inv("doc_pick(varchar,integer,integer,varchar)", "foo", "0", nil, "5m")
	require.Len(t, picked.Rows, 2) // short and payload; later is still planned
	require.Equal(t, "short", string(picked.Rows[0][0]))
	require.Equal(t, r1("1"), inv("doc_complete(varchar,varchar,jsonb)", "foo", "short", `{"ok":true}`).Rows)
	require.Equal(t, r1("0"), inv("doc_complete(varchar,varchar)", "foo", nil).Rows)
	require.Equal(t, r1("<nil>"), inv("doc_kill(varchar,varchar,jsonb)", "foo", "payload", nil).Rows)
	res = inv("doc_reject(varchar,varchar,varchar,jsonb,varchar)", "foo", "payload", nil, nil, nil)
	require.Equal(t, r1("1"), res.Rows)
	require.Zero(t, tb.count(t, "SELECT count(*) FROM fetchq_data.foo__logs"), "NULL details: no log row")
	require.Equal(t, r1("0"), inv("doc_drop(varchar,varchar)", "foo", "payload").Rows)

	// Raising functions reject NULL where they need a value.
	_, err = tb.store.Invoke(tb.ctx, tb.db, "doc_reschedule(varchar,varchar,timestamptz)", v("foo", "x", nil))
	require.ErrorAs(t, err, &e)
	require.Equal(t, "22004", e.Code)
	require.ErrorIs(t, err, ErrInvalidArgument)

	// Bad time text fails even in catch-all functions, like argument coercion.
	_, err = tb.store.Invoke(tb.ctx, tb.db, "doc_push(varchar,varchar,jsonb,timestamptz)", v("foo", "t", "{}", "yesterday-ish"))
	require.Error(t, err)
	require.Equal(t, "22007", pgCode(err))
}
