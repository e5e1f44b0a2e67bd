package rewrite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// rewriteOne rewrites sql, requires exactly one statement and returns it
// with the plan.
func rewriteOne(t *testing.T, sql string) (*Plan, Statement, error) {
	t.Helper()
	plan, err := New(0).Rewrite(context.Background(), sql)
	if plan == nil {
		return nil, Statement{}, err
	}
	require.Len(t, plan.Statements, 1, "statements of %q", sql)
	return plan, plan.Statements[0], err
}

// mustCall rewrites sql and requires a single statement with a Call.
func mustCall(t *testing.T, sql string) (*Plan, *Call) {
	t.Helper()
	plan, st, err := rewriteOne(t, sql)
	require.NoError(t, err, sql)
	require.NotNil(t, st.Call, sql)
	require.True(t, plan.HasCall)
	return plan, st.Call
}

// mustError rewrites sql and requires an *Error with that code.
func mustError(t *testing.T, sql, code string) *Error {
	t.Helper()
	_, err := New(0).Rewrite(context.Background(), sql)
	require.Error(t, err, sql)
	var e *Error
	require.True(t, errors.As(err, &e), "%T", err)
	require.Equal(t, code, e.Code, "%s: %s", sql, e.Message)
	return e
}

func TestCatalog(t *testing.T) {
	t.Parallel()
	fns := Functions()
	require.Len(t, fns, 86)

	ids := map[string]bool{}
	names := map[string]bool{}
	for _, f := range fns {
		require.False(t, ids[f.ID], "duplicate %s", f.ID)
		ids[f.ID] = true
		names[f.Name] = true
		require.NotEmpty(t, f.Out, f.ID)
		switch f.Returns {
		case ReturnScalar:
			require.Len(t, f.Out, 1, f.ID)
		case ReturnRecord:
			require.Greater(t, len(f.Out), 1, f.ID)
		}
	}
	for name := range names {
		require.NotEmpty(t, Lookup(name))
	}
	require.Nil(t, Lookup("nosuch"))
	require.Nil(t, Lookup("DOC_PICK"), "names are stored folded")
	require.Len(t, Lookup("doc_push"), 5)
	require.Len(t, Lookup("doc_pick"), 4)

	// Functions returns a copy.
	fns[0] = nil
	require.NotNil(t, Functions()[0])

	// The catalog is exactly what pg_proc says about the real extension.
	var got []string
	for _, f := range Functions() {
		var in, out []string
		for _, a := range f.Args {
			in = append(in, fmt.Sprintf("%s:%d", a.Name, a.Type))
		}
		for _, c := range f.Out {
			out = append(out, fmt.Sprintf("%s:%d", c.Name, c.Type))
		}
		got = append(got, fmt.Sprintf("%s|%s|%s|%s", f.Name, strings.Join(in, ","), strings.Join(out, ","), returnKindName(f.Returns)))
	}
	sort.Strings(got)
	raw, err := os.ReadFile(goldenDir + "/catalog.txt")
	require.NoError(t, err)
	var want []string
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if !strings.HasPrefix(l, "#") {
			want = append(want, l)
		}
	}
	require.Equal(t, want, got)
}

func TestCatalogDetails(t *testing.T) {
	t.Parallel()
	byID := map[string]*Function{}
	for _, f := range Functions() {
		byID[f.ID] = f
	}
	colNames := func(id string) string {
		f := byID[id]
		require.NotNil(t, f, id)
		var s []string
		for _, c := range f.Out {
			s = append(s, c.Name+":"+c.Type.String())
		}
		return strings.Join(s, ",")
	}
	require.Equal(t, "metric:varchar,current_value:bigint,last_update:timestamptz", colNames("metric_get(varchar)"))
	require.Equal(t, "current_value:integer,last_update:timestamptz,does_exists:boolean", colNames("metric_get(varchar,varchar)"))
	require.Equal(t, "cnt:integer,pln:integer,pnd:integer,act:integer,kll:integer,cpl:integer", colNames("metric_compute(varchar)"))
	require.Equal(t, "queue:varchar,cnt:integer,pln:integer,pnd:integer,act:integer,cpl:integer,kll:integer", colNames("metric_compute_all()"))
	pick := "subject:varchar,payload:jsonb,version:integer,priority:integer,attempts:integer,iterations:bigint,created_at:timestamptz,last_iteration:timestamptz,next_iteration:timestamptz,lock_upgrade:timestamptz"
	require.Equal(t, pick, colNames("doc_pick(varchar,integer,integer,varchar)"))
	require.Equal(t, pick, colNames("queue_top(varchar,integer,integer,integer)"))
	require.Equal(t, "queued_docs:integer", colNames("doc_push(varchar,integer,timestamptz,varchar)"))
	require.Equal(t, "subject:varchar", colNames("doc_append(varchar,jsonb)"))
	require.Equal(t, "was_created:boolean,queue_id:integer", colNames("queue_create(varchar)"))
	require.Equal(t, "queue_id:bigint", colNames("queue_get_id(varchar)"))
	require.Equal(t, ReturnSet, byID["doc_pick(varchar)"].Returns)
	require.Equal(t, ReturnRecord, byID["doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)"].Returns)
	require.Equal(t, ReturnScalar, byID["info()"].Returns)
	require.Equal(t, "par_nextiteration", byID["doc_push(varchar,varchar,jsonb,timestamptz)"].Args[3].Name)
}

func TestPrefilter(t *testing.T) {
	t.Parallel()
	r := New(16)
	for _, sql := range []string{
		"",
		"SELECT NOW()",
		"SELECT * FROM doc_pick('q')",
		"SELECT 'fetch q'",
		"fetch",
		"BEGIN; SELECT 1; COMMIT",
		"SELECT ' \x00 invalid \xff'", // not parsed, so not checked
	} {
		plan, err := r.Rewrite(context.Background(), sql)
		require.NoError(t, err)
		require.Same(t, passthrough, plan, sql)
		require.False(t, plan.HasCall)
		require.Empty(t, plan.Statements)
	}
	require.Equal(t, 0, r.cache.len(), "pre-filtered texts are not cached")

	for _, s := range []string{"fetchq", "FETCHQ", "xFeTcHqx", "a.FetchQ."} {
		require.True(t, containsFetchq(s), s)
	}
	for _, s := range []string{"", "fetch", "fetc hq", "fetchQ"[:5]} {
		require.False(t, containsFetchq(s), s)
	}
}

func TestPinnedOverloads(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ sql, id string }{
		{"SELECT * FROM fetchq.doc_pick('q', 5)", "doc_pick(varchar,integer)"},
		{"SELECT * FROM fetchq.doc_pick('q', '5')", "doc_pick(varchar,varchar)"},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", "doc_pick(varchar,varchar)"},
		{"SELECT * FROM fetchq.doc_pick('q')", "doc_pick(varchar)"},
		{"SELECT * FROM fetchq.doc_pick('q', 0, 1, '5m')", "doc_pick(varchar,integer,integer,varchar)"},
		{"SELECT * FROM fetchq.doc_push('q', 0, NOW(), '(...)')", "doc_push(varchar,integer,timestamptz,varchar)"},
		{"SELECT * FROM fetchq.doc_push('q','s','{}', NOW())", "doc_push(varchar,varchar,jsonb,timestamptz)"},
		{"SELECT * FROM fetchq.doc_push('q','s')", "doc_push(varchar,varchar)"},
		{"SELECT * FROM fetchq.doc_push('q','s','{}')", "doc_push(varchar,varchar,jsonb)"},
		{"SELECT * FROM fetchq.metric_snap('foo', '[\"cnt\",\"act\"]')", "metric_snap(varchar,varchar)"},
		{"SELECT * FROM fetchq.metric_snap('foo', '[\"cnt\"]'::jsonb)", "metric_snap(varchar,jsonb)"},
		{"SELECT * FROM fetchq.metric_snap('foo', NULL)", "metric_snap(varchar,varchar)"},
		{"SELECT * FROM fetchq.queue_drop_logs('q', '24 hours')", "queue_drop_logs(varchar,varchar)"},
		{"SELECT * FROM fetchq.queue_drop_logs('q', NOW() - INTERVAL '1 day')", "queue_drop_logs(varchar,timestamptz)"},
		{"SELECT * FROM fetchq.queue_drop_logs('q', '2020-01-01'::timestamptz)", "queue_drop_logs(varchar,timestamptz)"},
		{"SELECT * FROM fetchq.mnt_job_run('5m', 10)", "mnt_job_run(varchar,integer)"},
		{"SELECT * FROM fetchq.mnt_job_run(1)", "mnt_job_run(integer)"},
		{"SELECT * FROM fetchq.mnt_job_run()", "mnt_job_run()"},
		{"SELECT * FROM fetchq.doc_pick('q'::text, 1::smallint)", "doc_pick(varchar,integer)"},
		{"SELECT * FROM fetchq.queue_truncate('q', 'yes')", "queue_truncate(varchar,boolean)"},
	} {
		_, call := mustCall(t, tc.sql)
		require.Equal(t, tc.id, call.Func.ID, tc.sql)
	}
}

func TestResolutionErrors(t *testing.T) {
	t.Parallel()
	e := mustError(t, "SELECT * FROM fetchq.doc_pick('q', 1, 2)", "42883")
	require.Equal(t, "function fetchq.doc_pick(unknown, integer, integer) does not exist", e.Message)
	require.Equal(t, "No function matches the given name and argument types. You might need to add explicit type casts.", e.Hint)
	require.Equal(t, 15, e.Position)

	e = mustError(t, "SELECT * FROM fetchq.nosuch()", "42883")
	require.Equal(t, "function fetchq.nosuch() does not exist", e.Message)

	e = mustError(t, "SELECT * FROM fetchq.doc_reschedule('q', 's', 'x'::varchar)", "42883")
	require.Equal(t, "function fetchq.doc_reschedule(unknown, unknown, character varying) does not exist", e.Message)

	e = mustError(t, "SELECT * FROM fetchq.doc_pick('q', 3000000000)", "42883")
	require.Equal(t, "function fetchq.doc_pick(unknown, bigint) does not exist", e.Message)

	e = mustError(t, "SELECT * FROM fetchq.queue_drop_logs('q', NOW()::timestamptz, 1.5)", "42883")
	require.Equal(t, "function fetchq.queue_drop_logs(unknown, timestamp with time zone, numeric) does not exist", e.Message)

	e = mustError(t, "SELECT * FROM fetchq.doc_push('q', 's', NULL, NULL)", "42725")
	require.Equal(t, "function fetchq.doc_push(unknown, unknown, unknown, unknown) is not unique", e.Message)
	require.Equal(t, "Could not choose a best candidate function. You might need to add explicit type casts.", e.Hint)

	// The position counts characters, not bytes.
	e = mustError(t, "SELECT 'é'; SELECT * FROM fetchq.nosuch()", "42883")
	require.Equal(t, 27, e.Position)
}

// TestNodeClientStatements covers every statement of fetchq-spec.md §4.2,
// byte for byte (the client's extra spaces included).
func TestNodeClientStatements(t *testing.T) {
	t.Parallel()
	const forward = "forward"
	for _, tc := range []struct{ sql, id string }{
		{"SELECT NOW()", forward},
		{"SELECT * FROM fetchq.info()", "info()"},
		{"SELECT * FROM fetchq.init();", "init()"},
		{"SELECT * FROM fetchq.queue_create('q1')", "queue_create(varchar)"},
		{"SELECT * FROM fetchq.queue_drop('q1')", "queue_drop(varchar)"},
		{"SELECT * FROM fetchq.queue_enable_notify('q1')", "queue_enable_notify(varchar)"},
		{"SELECT * FROM fetchq.queue_disable_notify('q1')", "queue_disable_notify(varchar)"},
		{"SELECT * FROM fetchq.queue_set_max_attempts('q1', 5)", "queue_set_max_attempts(varchar,integer)"},
		{"SELECT * FROM fetchq.queue_set_logs_retention('q1', '24h')", "queue_set_logs_retention(varchar,varchar)"},
		{"SELECT * FROM fetchq.queue_set_current_version('q1', 0)", "queue_set_current_version(varchar,integer)"},
		{"UPDATE fetchq.queues SET is_active = true WHERE name = 'q1'", forward},
		{`UPDATE fetchq.jobs SET settings = '{"delay":"100ms"}' WHERE queue = 'q1' AND task = 'mnt';`, forward},
		{"SELECT * FROM fetchq.queues;", forward},
		{"SELECT * FROM fetchq.queues WHERE name = 'q1' ", forward},
		{"SELECT * FROM fetchq.queues ORDER BY name ASC", forward},
		{`SELECT * FROM fetchq.doc_push( 'q1', 's1', 0, 0, NOW(), '{"a":"it''''s"}' )`, "doc_push(varchar,varchar,integer,integer,timestamptz,jsonb)"},
		{`SELECT * FROM fetchq.doc_push( 'q1', 's1', 2, 3, NOW() + INTERVAL '1 hour', '{"a":1}' )`, "doc_push(varchar,varchar,integer,integer,timestamptz,jsonb)"},
		{`SELECT * FROM fetchq.doc_push( 'q1', 's1', 0, 0, to_timestamp(0 / 1000.0), '{}' )`, "doc_push(varchar,varchar,integer,integer,timestamptz,jsonb)"},
		{`SELECT * FROM fetchq.doc_push( 'q1', 's1', 0, 0, '2030-01-01 00:00', '{}' )`, "doc_push(varchar,varchar,integer,integer,timestamptz,jsonb)"},
		{`SELECT * FROM fetchq.doc_push( 'q1', 1, NOW() - INTERVAL '1ms', '( ''a1'', 0, ''{"a":1}'', {DATA}), (''a2'', 2, ''{}'', {DATA} )')`, "doc_push(varchar,integer,timestamptz,varchar)"},
		{`SELECT * FROM fetchq.doc_append( 'q1', '{"a":1}',  1, 2 )`, "doc_append(varchar,jsonb,integer,integer)"},
		{`SELECT * FROM fetchq.doc_upsert( 'q1', 's1', 0, 0, NOW(), '{}' )`, "doc_upsert(varchar,varchar,integer,integer,timestamptz,jsonb)"},
		{`SELECT * FROM fetchq.doc_pick( 'q1', 0, 1, '5m' )`, "doc_pick(varchar,integer,integer,varchar)"},
		{`SELECT * FROM fetchq.doc_reschedule( 'q1', 's1', NOW()  )`, "doc_reschedule(varchar,varchar,timestamptz)"},
		{`SELECT * FROM fetchq.doc_reschedule( 'q1', 's1', NOW() + INTERVAL '1h' , '{"a":1}' )`, "doc_reschedule(varchar,varchar,timestamptz,jsonb)"},
		{`SELECT * FROM fetchq.doc_reject( 'q1', 's1', 'msg', '{"d":1}'  )`, "doc_reject(varchar,varchar,varchar,jsonb)"},
		{`SELECT * FROM fetchq.doc_reject( 'q1', 's1', 'worker exception', '{"message":"x","err":"{}"}' , '*' )`, "doc_reject(varchar,varchar,varchar,jsonb,varchar)"},
		{`SELECT * FROM fetchq.doc_complete( 'q1', 's1', '{}' )`, "doc_complete(varchar,varchar,jsonb)"},
		{`SELECT * FROM fetchq.doc_kill( 'q1', 's1', '{"a":1}' )`, "doc_kill(varchar,varchar,jsonb)"},
		{`SELECT * FROM fetchq.doc_drop( 'q1', 's1' )`, "doc_drop(varchar,varchar)"},
		{`select * FROM fetchq.log_error('q1', 's1', 'msg', '{}', 'null');`, "log_error(varchar,varchar,varchar,jsonb,varchar)"},
		{`select * FROM fetchq.trace('s1');`, "trace(varchar)"},
		{`NOTIFY fetchq__q1__pnd, 'true';`, forward},
		{`SELECT * FROM fetchq.metric_get( 'q1'  )`, "metric_get(varchar)"},
		{`SELECT * FROM fetchq.metric_get( 'q1' , 'cnt' )`, "metric_get(varchar,varchar)"},
		{`SELECT * FROM fetchq.metric_get_common( 'q1' )`, "metric_get_common(varchar)"},
		{`SELECT * FROM fetchq.metric_get_all()`, "metric_get_all()"},
		{`SELECT * FROM fetchq.metric_get_total( 'cnt' )`, "metric_get_total(varchar)"},
		{`SELECT * FROM fetchq.metric_compute( 'q1' )`, "metric_compute(varchar)"},
		{`SELECT * FROM fetchq.metric_compute_all()`, "metric_compute_all()"},
		{`SELECT * FROM fetchq.metric_reset( 'q1' )`, "metric_reset(varchar)"},
		{`SELECT * FROM fetchq.metric_reset_all()`, "metric_reset_all()"},
		{`SELECT * FROM fetchq.metric_log_pack()`, "metric_log_pack()"},
		{`SELECT * FROM fetchq.mnt_run( 'q1', 100 )`, "mnt_run(varchar,integer)"},
		{`SELECT * FROM fetchq.mnt_run_all( 100 )`, "mnt_run_all(integer)"},
		{`select * FROM fetchq.mnt_job_run(1);`, "mnt_job_run(integer)"},
		{"\n      SELECT next_iteration, CEIL(EXTRACT('epoch' FROM (next_iteration::TIMESTAMP - NOW()::TIMESTAMP)) * 1000) AS delay\n      FROM fetchq.jobs WHERE next_iteration > NOW() ORDER BY next_iteration ASC LIMIT 1;", forward},
		{`WITH d1 AS (SELECT iterations FROM fetchq_data.q1__docs WHERE subject = $1 AND status = 3 LIMIT 1), d2 AS (SELECT iterations FROM fetchq_data.q1__docs WHERE subject = $1 AND status = -1 LIMIT 1), ck AS (SELECT * FROM d1 UNION ALL SELECT * FROM d2) SELECT count(*)::integer AS tot FROM ck`, forward},
		{`UPDATE fetchq.jobs SET attempts=0, iterations=0, next_iteration=now(), last_iteration=null`, forward},
		{`TRUNCATE fetchq.metrics`, forward},
		{`TRUNCATE fetchq.metrics_writes`, forward},
	} {
		plan, err := New(0).Rewrite(context.Background(), tc.sql)
		require.NoError(t, err, tc.sql)
		if tc.id == forward {
			require.False(t, plan.HasCall, tc.sql)
			require.Nil(t, plan.ParamTypes, tc.sql)
			for _, st := range plan.Statements {
				require.Nil(t, st.Call, tc.sql)
			}
			continue
		}
		require.True(t, plan.HasCall, tc.sql)
		require.Len(t, plan.Statements, 1, tc.sql)
		call := plan.Statements[0].Call
		require.NotNil(t, call, tc.sql)
		require.Equal(t, tc.id, call.Func.ID, tc.sql)
		require.Len(t, call.Columns, len(call.Func.Out), "SELECT * returns every column")
		require.Nil(t, plan.ParamTypes)
	}
}

func TestArgs(t *testing.T) {
	t.Parallel()
	c := func(s string) Arg { return Arg{Kind: ArgConst, Text: s} }
	now := func(iv string, neg bool) Arg { return Arg{Kind: ArgNow, Text: iv, Negative: neg} }
	epoch := func(s string) Arg { return Arg{Kind: ArgEpoch, Text: s} }
	for _, tc := range []struct {
		sql  string
		args []Arg
	}{
		// Literal decoding: once, as Postgres does; Fetchq's second
		// de-doubling of payloads is not the rewriter's business.
		{`SELECT * FROM fetchq.doc_complete('q', 's', '{"a":"it''''s"}')`, []Arg{c("q"), c("s"), c(`{"a":"it''s"}`)}},
		{`SELECT * FROM fetchq.doc_complete('q', 's', '{"a":"it''s"}')`, []Arg{c("q"), c("s"), c(`{"a":"it's"}`)}},
		{`SELECT * FROM fetchq.doc_complete(E'q\n', E'\'s\'', E'{"a":"\u00e9"}')`, []Arg{c("q\n"), c("'s'"), c(`{"a":"é"}`)}},
		{`SELECT * FROM fetchq.doc_complete($$q$$, $tag$it's $$ fine$tag$, '{}')`, []Arg{c("q"), c("it's $$ fine"), c("{}")}},
		{`SELECT * FROM fetchq.doc_complete(U&'\00e9', 'ünï', '{"k":"日本"}')`, []Arg{c("é"), c("ünï"), c(`{"k":"日本"}`)}},
		{`SELECT * FROM fetchq.doc_complete('q', 's', 'a\b')`, []Arg{c("q"), c("s"), c(`a\b`)}},
		{`SELECT * FROM fetchq.doc_pick('q', -1, - 2, '5m')`, []Arg{c("q"), c("-1"), c("-2"), c("5m")}},
		{`SELECT * FROM fetchq.doc_pick('q', ' 7 ', '+8', '5m')`, []Arg{c("q"), c("7"), c("8"), c("5m")}},
		{`SELECT * FROM fetchq.doc_pick('q', 1.5::int, (-2.5)::int, 'abcdef'::varchar(3))`, []Arg{c("q"), c("2"), c("-3"), c("abc")}},
		{`SELECT * FROM fetchq.doc_pick('q', CAST('3' AS integer), 4::int4, CAST(5 AS text))`, []Arg{c("q"), c("3"), c("4"), c("5")}},
		{`SELECT * FROM fetchq.doc_pick('q', true::int, 2 * (3 + 4) / 2, 1.5::text)`, []Arg{c("q"), c("1"), c("7"), c("1.5")}},
		{`SELECT * FROM fetchq.doc_pick(NULL, NULL::int, $1::int, $2)`, []Arg{{Kind: ArgNull}, {Kind: ArgNull}, {Kind: ArgParam, Param: 1}, {Kind: ArgParam, Param: 2}}},
		{`SELECT * FROM fetchq.queue_truncate('q', 'ON'), fetchq.queue_truncate('q', false)`, nil}, // refused: join
		{`SELECT * FROM fetchq.queue_truncate('q', ' off ')`, []Arg{c("q"), c("false")}},
		{`SELECT * FROM fetchq.queue_truncate('q', 1::boolean)`, []Arg{c("q"), c("true")}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', NOW())`, []Arg{c("q"), c("s"), now("", false)}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', now() + interval '2 days')`, []Arg{c("q"), c("s"), now("2 days", false)}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', CURRENT_TIMESTAMP - '1 hour'::interval)`, []Arg{c("q"), c("s"), now("1 hour", true)}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', pg_catalog.now() - CAST('5m' AS interval))`, []Arg{c("q"), c("s"), now("5m", true)}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', transaction_timestamp())`, []Arg{c("q"), c("s"), now("", false)}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', NOW()::timestamptz)`, []Arg{c("q"), c("s"), now("", false)}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp(1700000000000 / 1000.0))`, []Arg{c("q"), c("s"), epoch("1700000000")}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp(1700000000123 / 1000.0))`, []Arg{c("q"), c("s"), epoch("1700000000.123")}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp(1700000000123 / 1000))`, []Arg{c("q"), c("s"), epoch("1700000000")}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp(-1))`, []Arg{c("q"), c("s"), epoch("-1")}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp(1 / 3.0))`, []Arg{c("q"), c("s"), epoch("0.33333333333333333333")}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp(1.5 * 2 - 0.25))`, []Arg{c("q"), c("s"), epoch("2.75")}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp(0.5::float8))`, []Arg{c("q"), c("s"), epoch("0.5")}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp(' 12.5 '))`, []Arg{c("q"), c("s"), epoch("12.5")}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp(NULL))`, []Arg{c("q"), c("s"), {Kind: ArgNull}}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', '2030-01-01 00:00')`, []Arg{c("q"), c("s"), c("2030-01-01 00:00")}},
		{`SELECT * FROM fetchq.doc_reschedule('q', 's', '2030-01-01'::timestamptz)`, []Arg{c("q"), c("s"), c("2030-01-01")}},
	} {
		plan, err := New(0).Rewrite(context.Background(), tc.sql)
		if tc.args == nil {
			require.Error(t, err, tc.sql)
			continue
		}
		require.NoError(t, err, tc.sql)
		require.Equal(t, tc.args, plan.Statements[0].Call.Args, tc.sql)
	}
}

// TestNumericFolding pins constant folding to what PostgreSQL 15 prints
// for the same expressions (SELECT <expr>).
func TestNumericFolding(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string]string{
		"2.5::float8::int":              "2",
		"3.5::float8::int":              "4",
		"(-2.5)::float8::int":           "-2",
		"2.5::int":                      "3",
		"(-2.5)::int":                   "-3",
		"1e16::float8::text":            "1e+16",
		"0.00001::float8::text":         "1e-05",
		"1e15::float8::text":            "1e+15",
		"123456789012345::float8::text": "123456789012345",
		"(1/3.0)::text":                 "0.33333333333333333333",
		"(1.5e3)::text":                 "1500",
		"1.50::text":                    "1.50",
		"(2.0*3.25)::text":              "6.500",
		"(10/4.0)::text":                "2.5000000000000000",
		"0.1::float8::numeric::text":    "0.1",
		"(1e3 / 7.00 - 0.001e2)::text":  "142.7571428571428571",
		"(7 / 2)::text":                 "3",
		"(-7 / 2)::text":                "-3",
		"(2147483647::int8 + 1)::text":  "2147483648",
		"'12'::numeric::text":           "12",
		"1::smallint::text":             "1",
		"'0x1F'::int::text":             "31",
		"'1_000'::int::text":            "1000",
		"true::text":                    "true",
	} {
		sql := "SELECT * FROM fetchq.doc_pick('q', " + expr + ")"
		_, call := mustCall(t, sql)
		require.Equal(t, want, call.Args[1].Text, sql)
	}
	plan, err := New(0).Rewrite(context.Background(), "SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp(1e3 / 7.00 - 0.001e2))")
	require.NoError(t, err)
	require.Equal(t, "142.7571428571428571", plan.Statements[0].Call.Args[2].Text)
}

func TestArgErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ sql, code, msg string }{
		{"SELECT * FROM fetchq.doc_pick('q', 0, 'x', '5m')", "22P02", `invalid input syntax for type integer: "x"`},
		{"SELECT * FROM fetchq.doc_pick('q', 0, '99999999999', '5m')", "22003", `value "99999999999" is out of range for type integer`},
		{"SELECT * FROM fetchq.doc_pick('q', 3000000000::int)", "22003", "integer out of range"},
		{"SELECT * FROM fetchq.doc_pick('q', 2147483647 + 1)", "22003", "integer out of range"},
		{"SELECT * FROM fetchq.queue_truncate('q', 'maybe')", "22P02", `invalid input syntax for type boolean: "maybe"`},
		{"SELECT * FROM fetchq.queue_truncate('q', 'o')", "22P02", `invalid input syntax for type boolean: "o"`},
		{"SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp(1 / 0))", "22012", "division by zero"},
		{"SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp('soon'))", "22P02", `invalid input syntax for type double precision: "soon"`},
		{"SELECT * FROM fetchq.doc_reschedule('q', 's', to_timestamp(1e20))", "22008", `timestamp out of range: "1e+20"`},
		{"SELECT * FROM fetchq.doc_pick('q', '5m'::varchar(0))", "22023", "length for type varchar must be at least 1"},
		{"SELECT * FROM fetchq.doc_pick('q', '{}'::jsonb::text)", "0A000", "unsupported cast from jsonb to text in a Fetchq call argument"},
		{"SELECT * FROM fetchq.doc_pick('q', true::jsonb)", "42846", "cannot cast type boolean to jsonb"},
		{"SELECT * FROM fetchq.doc_pick($0)", "42P02", "there is no parameter $0"},
		{"SELECT * FROM fetchq.doc_reschedule('q', 's', '2030-01-01'::date)", "0A000", "a date value cannot be passed to fetchq.doc_reschedule() as timestamp with time zone"},
	} {
		e := mustError(t, tc.sql, tc.code)
		require.Equal(t, tc.msg, e.Message, tc.sql)
	}
}

func TestUnsupportedArguments(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{
		"name",                                  // column reference
		"(SELECT 'q')",                          // subquery
		"upper('q')",                            // other function
		"'q' || 'x'",                            // operator on strings
		"fetchq.info()",                         // nested call
		"NOW() + $1::interval",                  // interval parameter
		"NOW() + INTERVAL '1' HOUR",             // field qualifier
		"clock_timestamp()",                     // not the transaction time
		"CURRENT_TIMESTAMP(3)",                  // precision
		"LOCALTIMESTAMP",                        // timestamp
		"to_timestamp($1)",                      // parameter
		"ARRAY['q']",                            // array
		"B'101'",                                // bit string
		"'q'::regclass",                         // unsupported type
		"'q'::varchar[]",                        // array type
		"$1::varchar(10)",                       // typmod on a parameter
		"'1.5'::real",                           // float4
		"NOW() + INTERVAL '1h' + INTERVAL '1m'", // chain
	} {
		sql := "SELECT * FROM fetchq.doc_pick(" + arg + ")"
		e := mustError(t, sql, "0A000")
		require.Contains(t, e.Message, "fetchq.doc_pick", sql)
		require.Contains(t, e.Hint, "SELECT * FROM fetchq.doc_pick(", sql)
		require.NotZero(t, e.Position, sql)
	}
	// NOW() - 'x' is timestamptz - timestamptz in Postgres.
	e := mustError(t, "SELECT * FROM fetchq.doc_pick(NOW() - '1 day')", "0A000")
	require.Equal(t, "write NOW() - INTERVAL '...'", e.Hint)
}

func TestForwarded(t *testing.T) {
	t.Parallel()
	for _, sql := range []string{
		"SELECT * FROM fetchq.queues",
		"SELECT * FROM fetchq_data.q__docs ORDER BY next_iteration LIMIT 10",
		`SELECT * FROM "fetchq_data"."q__docs"`,
		"UPDATE fetchq.jobs SET settings = '{}' WHERE queue = 'q'",
		"DELETE FROM fetchq_data.q__docs WHERE subject = 'x'",
		"INSERT INTO fetchq.queues (name) VALUES ('q') RETURNING id",
		"TRUNCATE fetchq.metrics",
		"SELECT 'fetchq'",
		"SELECT 'SELECT * FROM fetchq.doc_pick(1)'",
		"NOTIFY fetchq__q1__pnd, 'true'",
		`LISTEN "fetchq__q1__pnd"`,
		"SELECT pg_notify('fetchq_on_change', '{}')",
		"SELECT fetchq.queues.name FROM fetchq.queues",
		"SELECT * FROM public.doc_pick('q') -- fetchq",
		`SELECT * FROM "FETCHQ".doc_pick('q')`, // another schema: Postgres says it does not exist
		"CREATE SCHEMA IF NOT EXISTS fetchq",
		"DROP FUNCTION fetchq.doc_pick(varchar)",
		"CREATE FUNCTION fetchq.x() RETURNS int LANGUAGE sql AS $$ SELECT fetchq.info()::int $$",
		"ALTER FUNCTION fetchq.doc_pick(varchar) OWNER TO bob",
		"COMMENT ON FUNCTION fetchq.info() IS 'fetchq'",
		"GRANT EXECUTE ON FUNCTION fetchq.info() TO bob",
		"CREATE TRIGGER t AFTER INSERT ON fetchq_data.q__docs FOR EACH ROW EXECUTE FUNCTION fetchq.trigger_docs_notify_insert()",
		"EXPLAIN SELECT * FROM fetchq.queues",
		"DO $$ BEGIN UPDATE fetchq.jobs SET attempts = 0; END $$",
		"-- fetchq",
		"/* fetchq */ ;",
	} {
		plan, err := New(0).Rewrite(context.Background(), sql)
		require.NoError(t, err, sql)
		require.False(t, plan.HasCall, sql)
		for _, st := range plan.Statements {
			require.Nil(t, st.Call, sql)
			require.Nil(t, st.Err, sql)
		}
	}
}

func TestRefusedShapes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ sql, fn, reason string }{
		{"WITH x AS (SELECT * FROM fetchq.doc_pick('q')) SELECT * FROM x", "doc_pick", "WITH"},
		{"SELECT * FROM fetchq.doc_pick('q') JOIN t ON true", "doc_pick", "join"},
		{"SELECT * FROM fetchq.doc_pick('q'), t", "doc_pick", "join"},
		{"SELECT * FROM t, LATERAL fetchq.metric_get_common(t.name)", "metric_get_common", "join"},
		{"SELECT * FROM (SELECT * FROM fetchq.doc_pick('q')) s", "doc_pick", "subquery"},
		{"SELECT * FROM t WHERE x IN (SELECT subject FROM fetchq.doc_pick('q'))", "doc_pick", "WHERE"},
		{"SELECT * FROM fetchq.doc_pick('q') WHERE version = 0", "doc_pick", "WHERE"},
		{"SELECT * FROM fetchq.doc_pick('q') ORDER BY priority", "doc_pick", "ORDER BY"},
		{"SELECT * FROM fetchq.doc_pick('q') LIMIT 1", "doc_pick", "LIMIT"},
		{"SELECT count(*) FROM fetchq.doc_pick('q') GROUP BY version", "doc_pick", "GROUP BY"},
		{"SELECT DISTINCT * FROM fetchq.doc_pick('q')", "doc_pick", "DISTINCT"},
		{"SELECT * FROM fetchq.doc_pick('q') FOR UPDATE", "doc_pick", "FOR UPDATE"},
		{"SELECT * FROM fetchq.doc_pick('q') UNION SELECT * FROM fetchq.doc_pick('r')", "doc_pick", "UNION"},
		{"SELECT * INTO t FROM fetchq.doc_pick('q')", "doc_pick", "INTO"},
		{"SELECT count(*) FROM fetchq.doc_pick('q')", "doc_pick", "select list"},
		{"SELECT subject || 'x' FROM fetchq.doc_pick('q')", "doc_pick", "select list"},
		{"SELECT 1 + fetchq.metric_log_pack()", "metric_log_pack", "expression"},
		{"SELECT (fetchq.queue_create('q')).*", "queue_create", "expression"},
		{"SELECT fetchq.info(), fetchq.init()", "info", "select list"},
		{"SELECT fetchq.info() FROM t", "info", "table"},
		{"SELECT * FROM fetchq.doc_pick('q') WITH ORDINALITY", "doc_pick", "ORDINALITY"},
		{"SELECT * FROM ROWS FROM (fetchq.doc_pick('q'))", "doc_pick", "ROWS FROM"},
		{"INSERT INTO t SELECT * FROM fetchq.doc_pick('q')", "doc_pick", "INSERT"},
		{"INSERT INTO t VALUES (fetchq.info())", "info", "INSERT"},
		{"UPDATE t SET v = fetchq.info()", "info", "UPDATE"},
		{"DELETE FROM t WHERE v = fetchq.info()", "info", "DELETE"},
		{"EXPLAIN SELECT * FROM fetchq.doc_pick('q')", "doc_pick", "EXPLAIN"},
		{"EXPLAIN ANALYZE SELECT * FROM fetchq.doc_pick('q')", "doc_pick", "EXPLAIN"},
		{"PREPARE p AS SELECT * FROM fetchq.doc_pick($1)", "doc_pick", "PREPARE"},
		{"CREATE VIEW v AS SELECT * FROM fetchq.queue_status()", "queue_status", "VIEW"},
		{"CREATE TABLE t AS SELECT * FROM fetchq.doc_pick('q')", "doc_pick", "TABLE AS"},
		{"COPY (SELECT * FROM fetchq.doc_pick('q')) TO STDOUT", "doc_pick", "COPY"},
		{"CALL fetchq.mnt()", "mnt", "CALL"},
		{"DECLARE c CURSOR FOR SELECT * FROM fetchq.doc_pick('q')", "doc_pick", "CURSOR"},
		{"DO $$ BEGIN PERFORM fetchq.doc_push('q', 's'); END $$", "doc_push", "DO"},
		{`DO $$ BEGIN PERFORM * FROM "fetchq" . "mnt_run_all"(10); END $$`, "mnt_run_all", "DO"},
		{"CREATE FUNCTION w() RETURNS void LANGUAGE plpgsql AS 'BEGIN PERFORM fetchq.doc_pick(''q''); END'", "doc_pick", "function body"},
		{"CREATE PROCEDURE w() LANGUAGE sql BEGIN ATOMIC SELECT fetchq.info(); END", "info", "function body"},
		{"SELECT sum(x) OVER () FROM fetchq.doc_pick('q')", "doc_pick", "select list"},
		{"SELECT * FROM fetchq.metric_get_all() OFFSET 1", "metric_get_all", "OFFSET"},
		{"SELECT x.* FROM fetchq.doc_pick('q') x HAVING true", "doc_pick", "HAVING"},
		{"SELECT * FROM fetchq.doc_pick(VARIADIC ARRAY['q'])", "doc_pick", "VARIADIC"},
		{"SELECT fetchq.metric_log_pack() FILTER (WHERE true)", "metric_log_pack", "aggregate"},
		{"SELECT * FROM db.fetchq.info()", "info", "database"},
	} {
		e := mustError(t, tc.sql, "0A000")
		require.Contains(t, e.Message, "fetchq."+tc.fn+"()", tc.sql)
		require.Equal(t, "call it on its own: SELECT * FROM fetchq."+tc.fn+"(...)", e.Hint, tc.sql)
		require.Contains(t, strings.ToLower(e.Message+" "+e.Detail), strings.ToLower(tc.reason), tc.sql)
	}
}

func TestColumns(t *testing.T) {
	t.Parallel()
	type col struct {
		name string
		oid  uint32
		src  int
	}
	for _, tc := range []struct {
		sql  string
		cols []col
	}{
		{"SELECT * FROM fetchq.info()", []col{{"version", 1043, 0}}},
		{"SELECT fetchq.info()", []col{{"info", 1043, -1}}},
		{"SELECT fetchq.info() AS v", []col{{"v", 1043, -1}}},
		{"SELECT fetchq.info() v", []col{{"v", 1043, -1}}},
		{"SELECT * FROM fetchq.info() AS x", []col{{"version", 1043, 0}}},
		{"SELECT x FROM fetchq.info() AS x", []col{{"x", 1043, -1}}},
		{"SELECT * FROM fetchq.info() AS x(v)", []col{{"v", 1043, 0}}},
		{"SELECT * FROM fetchq.queue_create('q')", []col{{"was_created", 16, 0}, {"queue_id", 23, 1}}},
		{"SELECT fetchq.queue_create('q')", []col{{"queue_create", 2249, -1}}},
		{"SELECT queue_id, was_created AS ok FROM fetchq.queue_create('q')", []col{{"queue_id", 23, 1}, {"ok", 16, 0}}},
		{"SELECT t.*, t.a FROM fetchq.queue_create('q') t(a)", []col{{"a", 16, 0}, {"queue_id", 23, 1}, {"a", 16, 0}}},
		{"SELECT q FROM fetchq.queue_create('q') q", []col{{"q", 2249, -1}}},
		{"SELECT FROM fetchq.queue_create('q')", nil},
		{"SELECT subject, iterations FROM fetchq.doc_pick('q')", []col{{"subject", 1043, 0}, {"iterations", 20, 5}}},
		{`SELECT "subject" FROM "fetchq"."doc_pick"('q') AS "D"`, []col{{"subject", 1043, 0}}},
		{`SELECT "D".subject FROM fetchq.doc_pick('q') AS "D"`, []col{{"subject", 1043, 0}}},
		{"SELECT * FROM LATERAL fetchq.info()", []col{{"version", 1043, 0}}},
	} {
		_, call := mustCall(t, tc.sql)
		var got []col
		for _, c := range call.Columns {
			got = append(got, col{c.Name, c.TypeOID, c.Source})
			require.Equal(t, c.TypeOID == 2249, c.Composite, tc.sql)
		}
		require.Equal(t, tc.cols, got, tc.sql)
	}
	mustError(t, "SELECT nope FROM fetchq.info()", "42703")
	mustError(t, "SELECT x.nope FROM fetchq.info() x", "42703")
	mustError(t, `SELECT "D".subject FROM fetchq.doc_pick('q') AS d`, "42P01")
	mustError(t, "SELECT y.* FROM fetchq.doc_pick('q') x", "42P01")
	mustError(t, "SELECT a FROM fetchq.queue_create('q') AS t(a, a)", "42702")
	mustError(t, "SELECT * FROM fetchq.queue_create('q') AS t(a, b, c)", "42P10")
	mustError(t, "SELECT * FROM fetchq.info() AS t(a int)", "42601")
	mustError(t, "SELECT * FROM fetchq.doc_pick('q') AS t(a int)", "42601")
}

func TestParamTypes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sql      string
		declared []uint32
		want     []uint32
	}{
		{"SELECT * FROM fetchq.doc_pick($1)", nil, []uint32{1043}},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", nil, []uint32{1043, 1043}},
		{"SELECT * FROM fetchq.doc_pick($2, $1)", nil, []uint32{1043, 1043}},
		{"SELECT * FROM fetchq.doc_pick($1, $1)", nil, []uint32{1043}},
		{"SELECT * FROM fetchq.doc_pick($1, $2::int)", nil, []uint32{1043, 23}},
		{"SELECT * FROM fetchq.doc_pick($1::text, $2::int)", nil, []uint32{25, 23}},
		{"SELECT * FROM fetchq.doc_pick($1, 0, $2, $3)", nil, []uint32{1043, 23, 1043}},
		{"SELECT * FROM fetchq.doc_push($1, $2, $3, $4, $5, $6)", nil, []uint32{1043, 1043, 23, 23, 1184, 3802}},
		{"SELECT * FROM fetchq.queue_truncate($1, $2)", nil, []uint32{1043, 16}},
		{"SELECT * FROM fetchq.doc_pick('q')", nil, nil},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{0, 23}, []uint32{1043, 23}},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{0, 21}, []uint32{1043, 21}},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{0, 0, 23}, []uint32{1043, 1043, 23}},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{0, 0}, []uint32{1043, 1043}},
		{"SELECT * FROM fetchq.doc_push($1, $2, $3, $4)", []uint32{0, 23, 1184, 0}, []uint32{1043, 23, 1184, 1043}},
		{"SELECT * FROM fetchq.doc_push($1, $2, $3, $4)", []uint32{0, 0, 3802, 0}, []uint32{1043, 1043, 3802, 1184}},
	} {
		plan, err := New(0).RewriteWithParamTypes(context.Background(), tc.sql, tc.declared)
		require.NoError(t, err, tc.sql)
		require.Equal(t, tc.want, plan.ParamTypes, "%s %v", tc.sql, tc.declared)
	}

	_, err := New(0).RewriteWithParamTypes(context.Background(), "SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{0, 20})
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "function fetchq.doc_pick(unknown, bigint) does not exist", e.Message)

	e = mustError(t, "SELECT * FROM fetchq.doc_pick($2)", "42P18")
	require.Equal(t, "could not determine data type of parameter $1", e.Message)
	e = mustError(t, "SELECT * FROM fetchq.doc_pick($1, $1::int)", "42P08")
	require.Equal(t, "inconsistent types deduced for parameter $1", e.Message)
	require.Equal(t, "integer versus character varying", e.Detail)
	mustError(t, "SELECT * FROM fetchq.doc_pick($70000)", "42P02")

	// Declared types key the cache separately from the untyped text.
	r := New(8)
	p1, err := r.RewriteWithParamTypes(context.Background(), "SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{0, 23})
	require.NoError(t, err)
	p2, err := r.Rewrite(context.Background(), "SELECT * FROM fetchq.doc_pick($1, $2)")
	require.NoError(t, err)
	require.Equal(t, "doc_pick(varchar,integer)", p1.Statements[0].Call.Func.ID)
	require.Equal(t, "doc_pick(varchar,varchar)", p2.Statements[0].Call.Func.ID)
}

func TestMultiStatement(t *testing.T) {
	t.Parallel()
	sql := "BEGIN ; -- go\nSELECT * FROM fetchq.doc_pick('q');\n/* c */ SELECT FROM fetchq.doc_complete('q', 's') ; COMMIT"
	plan, err := New(0).Rewrite(context.Background(), sql)
	require.NoError(t, err)
	require.True(t, plan.HasCall)
	var sqls []string
	for _, st := range plan.Statements {
		sqls = append(sqls, st.SQL)
	}
	require.Equal(t, []string{
		"BEGIN",
		"-- go\nSELECT * FROM fetchq.doc_pick('q')",
		"/* c */ SELECT FROM fetchq.doc_complete('q', 's')",
		"COMMIT",
	}, sqls)
	require.Nil(t, plan.Statements[0].Call)
	require.NotNil(t, plan.Statements[1].Call)
	require.NotNil(t, plan.Statements[2].Call)
	require.Empty(t, plan.Statements[2].Call.Columns)

	// A failing statement keeps its own error; the others are planned.
	plan, err = New(0).Rewrite(context.Background(), "SELECT 1; SELECT * FROM fetchq.nosuch(); SELECT * FROM fetchq.info()")
	require.Error(t, err)
	require.NotNil(t, plan)
	require.Len(t, plan.Statements, 3)
	require.Nil(t, plan.Statements[0].Err)
	require.Equal(t, err, plan.Statements[1].Err)
	require.NotNil(t, plan.Statements[2].Call)

	// A syntax error anywhere rejects the whole text.
	plan, err = New(0).Rewrite(context.Background(), "SELECT * FROM fetchq.info(); SELEC 1")
	require.Nil(t, plan)
	require.ErrorIs(t, err, ErrSyntax)
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "42601", e.Code)
	require.Equal(t, `syntax error at or near "SELEC"`, e.Message)
	require.Equal(t, 30, e.Position)
	require.Equal(t, "42601", e.SQLState())
	require.Equal(t, `ERROR: syntax error at or near "SELEC" (SQLSTATE 42601)`, e.Error())
}

func TestEncodingErrors(t *testing.T) {
	t.Parallel()
	e := mustError(t, "SELECT * FROM fetchq.info() -- \xff", "22021")
	require.Equal(t, `invalid byte sequence for encoding "UTF8": 0xff`, e.Message)
	require.False(t, errors.Is(e, ErrSyntax))
	mustError(t, "SELECT * FROM fetchq.info() -- \x00", "22021")
	mustError(t, `SELECT * FROM fetchq.doc_pick(E'\xff')`, "22021")
}

func TestCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := New(2)
	a := "SELECT * FROM fetchq.doc_pick('a')"
	// Three shapes: texts of one shape would share a shape entry instead
	// (TestShapeCache).
	b := "SELECT * FROM fetchq.doc_pick('b', 2)"
	c := "SELECT * FROM fetchq.queue_drop('c')"
	pa, err := r.Rewrite(ctx, a)
	require.NoError(t, err)
	pa2, err := r.Rewrite(ctx, a)
	require.NoError(t, err)
	require.Same(t, pa, pa2, "a hit returns the cached plan")

	_, err = r.Rewrite(ctx, b)
	require.NoError(t, err)
	_, err = r.Rewrite(ctx, a) // a is now the most recent
	require.NoError(t, err)
	_, err = r.Rewrite(ctx, c) // evicts b
	require.NoError(t, err)
	require.Equal(t, 2, r.cache.len())
	_, ok := r.cache.get(cacheKey{sql: b})
	require.False(t, ok)
	_, ok = r.cache.get(cacheKey{sql: a})
	require.True(t, ok)

	// Errors are cached too.
	bad := "SELECT * FROM fetchq.nosuch()"
	_, err1 := r.Rewrite(ctx, bad)
	_, err2 := r.Rewrite(ctx, bad)
	require.Error(t, err1)
	require.Same(t, err1, err2)

	// No cache.
	r0 := New(0)
	p1, _ := r0.Rewrite(ctx, a)
	p2, _ := r0.Rewrite(ctx, a)
	require.NotSame(t, p1, p2)
	require.Equal(t, p1, p2)

	// A cancelled context stops a miss, not a hit.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = r.Rewrite(cctx, "SELECT * FROM fetchq.doc_pick('zz')")
	require.ErrorIs(t, err, context.Canceled)
	_, err = r.Rewrite(cctx, a)
	require.NoError(t, err)
}

func TestCacheHitAllocations(t *testing.T) {
	ctx := context.Background()
	r := New(16)
	sql := "SELECT * FROM fetchq.doc_pick('q', 0, 1, '5m')"
	_, err := r.Rewrite(ctx, sql)
	require.NoError(t, err)
	require.Zero(t, testing.AllocsPerRun(100, func() { _, _ = r.Rewrite(ctx, sql) }))
	require.Zero(t, testing.AllocsPerRun(100, func() { _, _ = r.Rewrite(ctx, "SELECT 1") }))
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	r := New(8)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				sql := fmt.Sprintf("SELECT * FROM fetchq.doc_pick('q%d', %d)", i%12, g)
				plan, err := r.Rewrite(context.Background(), sql)
				if err != nil || plan.Statements[0].Call.Func.ID != "doc_pick(varchar,integer)" {
					t.Errorf("%s: %v", sql, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	require.LessOrEqual(t, r.cache.len(), 8)
}

// TestCallSQLRoundTrip checks that (*Call).SQL rewrites to the same call
// for every golden case.
func TestCallSQLRoundTrip(t *testing.T) {
	t.Parallel()
	for _, sql := range goldenInputs(t) {
		checkRoundTrip(t, sql)
	}
}

// TestTxControl: transaction-control statements are flagged from the parse
// tree, whatever their spelling; PREPARE of a statement is not one.
func TestTxControl(t *testing.T) {
	t.Parallel()
	plan, err := New(0).Rewrite(context.Background(),
		"/* c */ begin isolation level serializable; SELECT * FROM fetchq.doc_pick('q'); SaVePoInT a; RELEASE a; "+
			"PREPARE p AS SELECT 1; PREPARE TRANSACTION 'x'; END; start transaction; ABORT; COMMIT PREPARED 'x'; SELECT 'BEGIN'")
	require.NoError(t, err)
	var got []bool
	for _, st := range plan.Statements {
		got = append(got, st.TxControl)
	}
	require.Equal(t, []bool{true, false, true, true, false, true, true, true, true, true, false}, got)
}
