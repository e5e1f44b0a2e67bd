package proxy_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/fetchq/fetchq-proxy/internal/pgtest"
	"github.com/fetchq/fetchq-proxy/proxy"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"
)

// Hostile input. Every case wants a clear ErrorResponse with the right
// SQLSTATE, or the failure value the extension documents for it (spec
// §2.9: an invalid queue name behaves like a missing queue; catch-all
// functions return 0, NULL or false), a session that stays usable where
// the protocol allows, no data changed, and a proxy that keeps serving
// every other client. Where Postgres itself decides (argument coercion,
// protocol errors) the expected SQLSTATE is taken from Postgres, asked
// directly.
//
// Each test logs "bad inputs tried: N"; `go test -v -run 'Hostile|...'`
// sums them.

// badInputs counts the hostile inputs a test sends.
type badInputs struct{ n atomic.Int64 }

func countBadInputs(t *testing.T) *badInputs {
	t.Helper()
	c := &badInputs{}
	t.Cleanup(func() { t.Logf("bad inputs tried: %d", c.n.Load()) })
	return c
}

func (c *badInputs) add(n int) { c.n.Add(int64(n)) }

// qmode is how a statement travels.
type qmode int

const (
	simpleLiteral   qmode = iota // Query message, values inlined as literals
	extendedLiteral              // Parse/Bind/Execute/Sync, values inlined as literals
	extendedParam                // Parse/Bind/Execute/Sync, values as $n text parameters
)

var qmodes = []qmode{simpleLiteral, extendedLiteral, extendedParam}

func (m qmode) String() string {
	return [...]string{"simple", "extended-literal", "extended-param"}[m]
}

// quoteLiteral quotes s as a standard-conforming SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// inline replaces $1..$n in sql with the literals of params (nil is NULL).
func inline(sql string, params []any) string {
	var b strings.Builder
	for i := 0; i < len(sql); i++ {
		if sql[i] != '$' {
			b.WriteByte(sql[i])
			continue
		}
		j := i + 1
		for j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
			j++
		}
		n, err := strconv.Atoi(sql[i+1 : j])
		if err != nil || n < 1 || n > len(params) {
			b.WriteByte(sql[i])
			continue
		}
		if s, ok := params[n-1].(string); ok {
			b.WriteString(quoteLiteral(s))
		} else {
			b.WriteString("NULL")
		}
		i = j - 1
	}
	return b.String()
}

// textOf renders rows: columns joined by "|", rows by ";", NULL as NULL.
func textOf(rows [][][]byte) string {
	out := make([]string, len(rows))
	for i, r := range rows {
		cols := make([]string, len(r))
		for j, v := range r {
			if v == nil {
				cols[j] = "NULL"
			} else {
				cols[j] = string(v)
			}
		}
		out[i] = strings.Join(cols, "|")
	}
	return strings.Join(out, ";")
}

// runIn runs sql with params (strings, or nil for NULL) in mode m and
// returns the rows of its (last) result as text, the statement text the
// client sent, and the error.
func runIn(ctx context.Context, pg *pgconn.PgConn, m qmode, sql string, params ...any) (string, string, error) {
	switch m {
	case simpleLiteral:
		text := inline(sql, params)
		res, err := pg.Exec(ctx, text).ReadAll()
		if err != nil {
			return "", text, err
		}
		if len(res) == 0 {
			return "", text, nil
		}
		return textOf(res[len(res)-1].Rows), text, nil
	case extendedLiteral:
		text := inline(sql, params)
		r := pg.ExecParams(ctx, text, nil, nil, nil, nil).Read()
		return textOf(r.Rows), text, r.Err
	default:
		vals := make([][]byte, len(params))
		for i, p := range params {
			if s, ok := p.(string); ok {
				vals[i] = []byte(s)
			}
		}
		r := pg.ExecParams(ctx, sql, vals, nil, nil, nil).Read()
		return textOf(r.Rows), sql, r.Err
	}
}

// internalMarkers are fragments of the proxy's own SQL and of connection
// strings; none may reach a client in an error.
var internalMarkers = []string{
	"INSERT INTO", "RETURNING", "SKIP LOCKED", "ON CONFLICT", "SAVEPOINT",
	"fetchq_proxy_", "RAISE EXCEPTION", "SQL statement", "PL/pgSQL",
	"password=", "host=", "dbname=", "sslmode", "user=",
}

// errorProblem checks that err is an ErrorResponse with a SQLSTATE that
// is not the proxy's catch-all XX000, carrying no internal SQL, no DSN and
// no position outside the client's own statement text. It returns the
// error and a description of what is wrong with it ("" if nothing).
func errorProblem(err error, clientSQL string) (*pgconn.PgError, string) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return nil, fmt.Sprintf("not an ErrorResponse: %v", err)
	}
	if len(pgErr.Code) != 5 || pgErr.Code == "XX000" {
		return pgErr, fmt.Sprintf("SQLSTATE %q (%s)", pgErr.Code, pgErr.Message)
	}
	for _, f := range []string{pgErr.Message, pgErr.Detail, pgErr.Hint, pgErr.Where, pgErr.InternalQuery} {
		for _, m := range internalMarkers {
			if !strings.Contains(clientSQL, m) && strings.Contains(f, m) {
				return pgErr, fmt.Sprintf("leaks %q: %+v", m, *pgErr)
			}
		}
	}
	if pgErr.InternalQuery != "" || pgErr.InternalPosition != 0 {
		return pgErr, fmt.Sprintf("internal query %q at %d", pgErr.InternalQuery, pgErr.InternalPosition)
	}
	if n := utf8.RuneCountInString(clientSQL); pgErr.Position != 0 && int(pgErr.Position) > n+1 {
		return pgErr, fmt.Sprintf("%s %q has position %d, past the end of the client's %d-character statement (a position in the proxy's internal SQL)",
			pgErr.Code, pgErr.Message, pgErr.Position, n)
	}
	return pgErr, ""
}

// requireCleanError requires errorProblem to find nothing wrong with err.
func requireCleanError(t *testing.T, err error, clientSQL string, msgAndArgs ...any) *pgconn.PgError {
	t.Helper()
	require.Error(t, err, msgAndArgs...)
	pgErr, problem := errorProblem(err, clientSQL)
	require.Empty(t, problem, "error for %q: %v", clientSQL, fmt.Sprint(msgAndArgs...))
	return pgErr
}

// deviations collects answers that differ from the expected ones, so that
// a sweep reports all of them at once, grouped, instead of stopping at the
// first.
type deviations map[string][]string

func (d deviations) add(what, input string) {
	if len(d[what]) < 5 {
		d[what] = append(d[what], input)
	} else if len(d[what]) == 5 {
		d[what] = append(d[what], "...")
	}
}

func (d deviations) report(t *testing.T) {
	t.Helper()
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		t.Errorf("%s\n\tfor inputs: %q", k, d[k])
	}
}

// requireUsable requires the session to answer a query, outside any
// transaction block.
func requireUsable(t *testing.T, ctx context.Context, pg *pgconn.PgConn, msgAndArgs ...any) {
	t.Helper()
	res, err := pg.Exec(ctx, "SELECT 41 + 1").ReadAll()
	require.NoError(t, err, msgAndArgs...)
	require.Equal(t, "42", string(res[0].Rows[0][0]), msgAndArgs...)
	require.Equal(t, byte('I'), pg.TxStatus(), msgAndArgs...)
}

// canary keeps a session of its own busy through the proxy while a test
// abuses others. When the test ends it requires that every canary query
// succeeded and that they kept running, and that a new client can still
// connect and call a Fetchq function.
//
// Its connections are retried a few times: a test may give the proxy a
// startup timeout a busy machine's Postgres can exceed.
func canary(t *testing.T, b *testBundle) {
	t.Helper()
	var conn *pgconn.PgConn
	for i := 0; conn == nil; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := pgconn.Connect(ctx, b.proxyDSN("", ""))
		cancel()
		if err != nil && i < 5 {
			continue
		}
		require.NoError(t, err)
		conn = c
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	stop := make(chan struct{})
	done := make(chan error, 1)
	var n atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := conn.Exec(ctx, "SELECT 7").ReadAll()
			cancel()
			if err != nil {
				done <- err
				return
			}
			if string(res[0].Rows[0][0]) != "7" {
				done <- fmt.Errorf("canary got %q", res[0].Rows[0][0])
				return
			}
			n.Add(1)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		close(stop)
		require.NoError(t, <-done, "the canary session stopped being served")
		require.Positive(t, n.Load(), "the canary session ran no query")
		ctx := ctxT(t, 30*time.Second)
		c, err := pgconn.Connect(ctx, b.proxyDSN("", ""))
		for i := 0; err != nil && i < 5; i++ {
			c, err = pgconn.Connect(ctx, b.proxyDSN("", ""))
		}
		require.NoError(t, err, "a new client cannot connect any more")
		defer c.Close(context.Background())
		_, err = c.Exec(ctx, "SELECT * FROM fetchq.info()").ReadAll()
		require.NoError(t, err)
	})
}

// hostileFixture is a Fetchq proxy whose database holds queue hq with
// pending documents d1..d3, one active document a1, a log row, and the
// sentinel tables public.x and fetchq_data.x__docs that injection would
// drop.
type hostileFixture struct {
	b     *testBundle
	conn  *pgx.Conn
	admin interface {
		Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
		QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	}
}

func setupHostile(t *testing.T) *hostileFixture {
	t.Helper()
	b := setupFetchq(t)
	conn := fetchqConn(t, b, "hq")
	ctx := ctxT(t, time.Minute)
	pool := b.db.Pool(t)
	for _, sql := range []string{
		"CREATE TABLE public.x (v int)",
		"INSERT INTO public.x VALUES (1)",
		"CREATE TABLE fetchq_data.x__docs (v int)",
		"INSERT INTO fetchq_data.x__docs VALUES (1)",
	} {
		_, err := pool.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	pg := conn.PgConn()
	for _, sql := range []string{
		"SELECT * FROM fetchq.doc_push('hq', 'a1', 0, 5, NOW() - INTERVAL '1 hour', '{\"k\":1}')",
		"SELECT * FROM fetchq.doc_pick('hq', 0, 1, '1h')",
		"SELECT * FROM fetchq.doc_push('hq', 'd1', 0, 0, NOW() - INTERVAL '1 minute', '{}')",
		"SELECT * FROM fetchq.doc_push('hq', 'd2', 0, 0, NOW() - INTERVAL '1 minute', '{}')",
		"SELECT * FROM fetchq.doc_push('hq', 'd3', 0, 0, NOW() - INTERVAL '1 minute', '{}')",
		"SELECT * FROM fetchq.log_error('hq', 'a1', 'seed', '{}')",
	} {
		_, err := pg.Exec(ctx, sql).ReadAll()
		require.NoError(t, err, sql)
	}
	return &hostileFixture{b: b, conn: conn, admin: pool}
}

// snapshot describes everything a hostile call must not change, read
// straight from Postgres.
func (f *hostileFixture) snapshot(t *testing.T) string {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	var out []string
	for _, sql := range []string{
		`SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY schemaname, tablename) FROM pg_tables WHERE schemaname IN ('public', 'fetchq', 'fetchq_data')`,
		`SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'fetchq_data'`,
		`SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE NOT tgisinternal`,
		`SELECT string_agg(id || ':' || name || ':' || is_active || ':' || current_version || ':' || max_attempts || ':' || coalesce(logs_retention, ''), ',' ORDER BY id) FROM fetchq.queues`,
		`SELECT string_agg(subject || ':' || status || ':' || attempts || ':' || iterations || ':' || next_iteration || ':' || payload::text, ',' ORDER BY subject) FROM fetchq_data.hq__docs`,
		`SELECT count(*)::text FROM fetchq_data.hq__logs`,
		`SELECT count(*)::text FROM fetchq_data.hq__metrics`,
		`SELECT string_agg(id || ':' || task || ':' || queue || ':' || attempts || ':' || iterations || ':' || next_iteration, ',' ORDER BY id) FROM fetchq.jobs`,
		`SELECT count(*)::text FROM fetchq.metrics`,
		`SELECT count(*)::text FROM fetchq.metrics_writes`,
		`SELECT count(*)::text FROM public.x`,
		`SELECT count(*)::text FROM fetchq_data.x__docs`,
	} {
		var s *string
		require.NoError(t, f.admin.QueryRow(ctx, sql).Scan(&s), sql)
		if s == nil {
			out = append(out, "NULL")
		} else {
			out = append(out, *s)
		}
	}
	return strings.Join(out, "\n")
}

// missingQueueCalls are Fetchq calls whose first argument, $1, is a queue
// name, with what each returns for a queue that does not exist (spec §2.9,
// with the proxy's documented deviation that queue_create returns no
// phantom id). "ERROR" means the call raises.
var missingQueueCalls = []struct{ sql, want string }{
	{"SELECT * FROM fetchq.doc_push($1, 's1')", "0"},
	{"SELECT * FROM fetchq.doc_push($1, 's1', '{}')", "0"},
	{"SELECT * FROM fetchq.doc_push($1, 's1', 0, 0, NOW(), '{}')", "0"},
	{"SELECT * FROM fetchq.doc_push($1, 0, NOW(), '(''m1'', 0, ''{}'', {DATA})')", "0"},
	{"SELECT * FROM fetchq.doc_append($1, '{}')", "NULL"},
	{"SELECT * FROM fetchq.doc_upsert($1, 's1', 0, 0, NOW(), '{}')", "0|0"},
	{"SELECT subject FROM fetchq.doc_pick($1)", ""},
	{"SELECT subject FROM fetchq.doc_pick($1, 5)", ""},
	{"SELECT subject FROM fetchq.doc_pick($1, '5m')", ""},
	{"SELECT subject FROM fetchq.doc_pick($1, 0, 10, '5m')", ""},
	{"SELECT * FROM fetchq.doc_complete($1, 'a1')", "NULL"},
	{"SELECT * FROM fetchq.doc_complete($1, 'a1', '{}')", "NULL"},
	{"SELECT * FROM fetchq.doc_kill($1, 'a1')", "NULL"},
	{"SELECT * FROM fetchq.doc_reschedule($1, 'a1', NOW())", "ERROR"},
	{"SELECT * FROM fetchq.doc_reject($1, 'a1', 'm', '{}')", "ERROR"},
	{"SELECT * FROM fetchq.doc_drop($1, 'a1')", "ERROR"},
	{"SELECT * FROM fetchq.log_error($1, 'a1', 'm', '{}')", "f"},
	{"SELECT * FROM fetchq.queue_create($1)", "f|NULL"},
	{"SELECT * FROM fetchq.queue_drop($1)", "f|NULL"},
	{"SELECT id FROM fetchq.queue_status($1)", ""},
	{"SELECT subject FROM fetchq.queue_top($1, 0, 10, 0)", "ERROR"},
	{"SELECT * FROM fetchq.queue_truncate($1)", "ERROR"},
	{"SELECT * FROM fetchq.queue_enable_notify($1)", "ERROR"},
	{"SELECT * FROM fetchq.queue_disable_notify($1)", "t"},
	{"SELECT * FROM fetchq.queue_set_max_attempts($1, 3)", "0|t"},
	{"SELECT * FROM fetchq.queue_set_current_version($1, 1)", "0|t"},
	{"SELECT * FROM fetchq.queue_set_logs_retention($1, '1h')", "0"},
	{"SELECT * FROM fetchq.queue_drop_logs($1)", "0"},
	{"SELECT * FROM fetchq.queue_drop_logs($1, '1 hour')", "0"},
	{"SELECT * FROM fetchq.queue_drop_version($1, 7)", "t"},
	{"SELECT * FROM fetchq.queue_drop_indexes($1)", "t"},
	{"SELECT * FROM fetchq.queue_create_indexes($1)", "t"},
	{"SELECT * FROM fetchq.metric_get_common($1)", "NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL"},
	{"SELECT * FROM fetchq.metric_compute($1)", "ERROR"},
	{"SELECT * FROM fetchq.metric_reset($1)", "ERROR"},
	{"SELECT * FROM fetchq.metric_snap($1)", "f|NULL"},
	{"SELECT current_value, does_exists FROM fetchq.metric_get($1, 'cnt')", "0|f"},
	{"SELECT * FROM fetchq.mnt_make_pending($1, 10)", "ERROR"},
	{"SELECT * FROM fetchq.mnt_reschedule_orphans($1, 10)", "NULL"},
	{"SELECT * FROM fetchq.mnt_mark_dead($1, 10)", "NULL"},
	{"SELECT * FROM fetchq.mnt_run($1, 10)", "ERROR"},
}

// hostileNames are queue names that try injection, break quoting or are
// not valid identifiers. None names an existing queue.
var hostileNames = []string{
	"q; DROP TABLE x",
	"q; DROP TABLE x; --",
	"hq; DROP TABLE public.x; --",
	"hq'; DROP TABLE x; --",
	"hq' OR '1'='1",
	`hq"; DROP TABLE x; --`,
	`x__docs"; DROP TABLE public.x; --`,
	`"hq"`,
	`"HQ"`,
	"'",
	"''",
	`"`,
	`\`,
	`hq\`,
	`\'; DROP TABLE x; --`,
	`hq\'`,
	"%s",
	"%I",
	"%L",
	"%1$s",
	"%%",
	"hq%s%s%s",
	"hq*",
	"hq.docs",
	"fetchq_data.hq",
	"public.x",
	"../x",
	"hq--",
	"hq/*",
	"hq\n",
	"hq\r\nDROP TABLE x",
	" hq",
	"hq ",
	"hq\t",
	"1abc",
	"a-b",
	"",
	"q q",
	"ü",
	"hq\u200b",
	"ＨＱ",
	"$1",
	"$$",
	"{DATA}",
	strings.Repeat("a", 41),
	strings.Repeat("q", 10<<10),
	strings.Repeat("'", 10<<10),
	strings.Repeat(`\`, 10<<10),
	"hq\x00; DROP TABLE x",
	"\x00",
	"hq\xff\xfe",
	"\xc3\x28",
}

// encodingInvalid reports whether s cannot be a varchar value: Postgres
// refuses it with 22021 before any function runs.
func encodingInvalid(s string) bool {
	return !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0
}

// TestHostileQueueNames calls every queue function with names that try SQL
// injection or are not valid identifiers, in the simple protocol and in
// the extended protocol (inlined and as a parameter). Each behaves like a
// call on a missing queue (spec §2.9), except that text Postgres would
// refuse as a varchar (NUL, invalid UTF-8) gets Postgres' 22021. Nothing
// changes in the database, the session stays usable, and other clients
// are served throughout.
func TestHostileQueueNames(t *testing.T) {
	t.Parallel()
	f := setupHostile(t)
	canary(t, f.b)
	bad := countBadInputs(t)
	before := f.snapshot(t)
	pg := f.conn.PgConn()
	ctx := ctxT(t, 5*time.Minute)
	dev := deviations{}
	for _, name := range hostileNames {
		for _, m := range qmodes {
			if m != extendedParam && strings.IndexByte(name, 0) >= 0 {
				continue // a NUL cannot be inlined in a Query or Parse text
			}
			for _, c := range missingQueueCalls {
				bad.add(1)
				input := fmt.Sprintf("%s %q", m, trunc(name))
				got, sent, err := runIn(ctx, pg, m, c.sql, name)
				want := c.want
				if encodingInvalid(name) {
					want = "ERROR 22021"
				}
				switch {
				case err != nil:
					pgErr, problem := errorProblem(err, sent)
					switch {
					case problem != "":
						dev.add(c.sql+": "+problem, input)
					case want == "ERROR":
					case want == "ERROR "+pgErr.Code:
					default:
						dev.add(fmt.Sprintf("%s: want %s, got ERROR %s %s", c.sql, want, pgErr.Code, pgErr.Message), input)
					}
				case got != want:
					dev.add(fmt.Sprintf("%s: want %s, got %q", c.sql, want, got), input)
				}
				require.Equal(t, byte('I'), pg.TxStatus(), input)
			}
			requireUsable(t, ctx, pg, name)
		}
	}
	dev.report(t)
	require.Equal(t, before, f.snapshot(t), "a hostile queue name changed the database")
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…(" + strconv.Itoa(len(s)) + " bytes)"
	}
	return s
}

// TestNullQueueName: NULL as the queue behaves like a missing queue, in
// every function of missingQueueCalls.
func TestNullQueueName(t *testing.T) {
	t.Parallel()
	f := setupHostile(t)
	bad := countBadInputs(t)
	before := f.snapshot(t)
	pg := f.conn.PgConn()
	ctx := ctxT(t, time.Minute)
	for _, m := range qmodes {
		for _, c := range missingQueueCalls {
			bad.add(1)
			label := fmt.Sprintf("%s NULL %s", m, c.sql)
			got, sent, err := runIn(ctx, pg, m, strings.Replace(c.sql, "$1", "$1::varchar", 1), nil)
			if c.want == "ERROR" {
				requireCleanError(t, err, sent, label)
				continue
			}
			require.NoError(t, err, label)
			if strings.Contains(c.sql, "_version(") || strings.Contains(c.sql, "_indexes(") || strings.Contains(c.sql, "_max_attempts(") {
				// 4.0.2 splices NULL as '', a name it accepts (spec §6.3):
				// these report success or failure alike.
				continue
			}
			require.Equal(t, c.want, got, label)
		}
		requireUsable(t, ctx, pg)
	}
	require.Equal(t, before, f.snapshot(t))
}

// TestMixedCaseQueueNames: the proxy folds queue names (a documented
// deviation), so HQ, Hq and hq are one queue on every path.
func TestMixedCaseQueueNames(t *testing.T) {
	t.Parallel()
	f := setupHostile(t)
	pg := f.conn.PgConn()
	ctx := ctxT(t, time.Minute)
	for i, m := range qmodes {
		subj := "mc" + strconv.Itoa(i)
		got, _, err := runIn(ctx, pg, m, "SELECT * FROM fetchq.doc_push($1, $2, 9, 100, NOW(), '{}')", "HQ", subj)
		require.NoError(t, err)
		require.Equal(t, "1", got)
		got, _, err = runIn(ctx, pg, m, "SELECT subject FROM fetchq.doc_pick($1, 9, 1, '5m')", "hQ")
		require.NoError(t, err)
		require.Equal(t, subj, got, m.String())
		got, _, err = runIn(ctx, pg, m, "SELECT * FROM fetchq.doc_complete($1, $2)", "Hq", subj)
		require.NoError(t, err)
		require.Equal(t, "1", got, m.String())
		got, _, err = runIn(ctx, pg, m, "SELECT * FROM fetchq.queue_create($1)", "HQ")
		require.NoError(t, err)
		require.Regexp(t, `^f\|\d+$`, got)
	}
	var n int
	require.NoError(t, f.admin.QueryRow(ctx, "SELECT count(*) FROM fetchq.queues").Scan(&n))
	require.Equal(t, 1, n)
}

// hostileSubjects are subjects (and log messages) that try injection or
// break quoting; each is at most 50 characters, so each must be stored
// exactly as sent.
var hostileSubjects = []string{
	"s'; DROP TABLE x; --",
	"s' OR '1'='1",
	`s"; DROP TABLE x; --`,
	"'",
	"''",
	"'''",
	`\`,
	`\'`,
	`\\'); DROP TABLE x; --`,
	`E'\x41'`,
	"%s%s%s%n",
	"%I %L %1$s",
	"{DATA}",
	"({DATA}), ('evil', 0, '{}', {DATA})",
	"$1",
	"$$ DROP TABLE x $$",
	"$q$",
	"--",
	"/*",
	"s\nDROP TABLE x;",
	"\t",
	" ",
	"",
	"日本語",
	"🙂🙂",
	strings.Repeat("ü", 50),
	strings.Repeat("'", 50),
}

// TestHostileSubjects: subjects and log messages that try injection are
// stored exactly as sent (4.0.2 broke on a quote; the proxy binds values);
// too long ones get doc_push's P0001; text Postgres would refuse gets
// 22021; nothing else changes.
func TestHostileSubjects(t *testing.T) {
	t.Parallel()
	f := setupHostile(t)
	canary(t, f.b)
	bad := countBadInputs(t)
	pg := f.conn.PgConn()
	ctx := ctxT(t, 2*time.Minute)
	before := f.snapshot(t)
	dev := deviations{}
	defer dev.report(t)
	for _, m := range qmodes {
		for _, subj := range hostileSubjects {
			bad.add(3)
			label := fmt.Sprintf("%s %q", m, subj)
			got, _, err := runIn(ctx, pg, m, "SELECT * FROM fetchq.doc_push('hq', $1, 0, 0, NOW() + INTERVAL '1 day', '{}')", subj)
			require.NoError(t, err, label)
			require.Equal(t, "1", got, label)
			var n int
			require.NoError(t, f.admin.QueryRow(ctx, "SELECT count(*) FROM fetchq_data.hq__docs WHERE subject = $1", subj).Scan(&n))
			require.Equal(t, 1, n, "%s: not stored as sent", label)
			got, _, err = runIn(ctx, pg, m, "SELECT * FROM fetchq.doc_push('hq', $1)", subj)
			require.NoError(t, err, label)
			require.Equal(t, "0", got, "%s: a duplicate is refused with 0", label)

			got, _, err = runIn(ctx, pg, m, "SELECT * FROM fetchq.log_error('hq', $1, $1, '{}')", subj)
			require.NoError(t, err, label)
			require.Equal(t, "t", got, label)
			require.NoError(t, f.admin.QueryRow(ctx, "SELECT count(*) FROM fetchq_data.hq__logs WHERE subject = $1 AND message = $1", subj).Scan(&n))
			require.Equal(t, 1, n, "%s: log not stored as sent", label)

			_, err = f.admin.Exec(ctx, "DELETE FROM fetchq_data.hq__docs WHERE subject = $1", subj)
			require.NoError(t, err)
			_, err = f.admin.Exec(ctx, "DELETE FROM fetchq_data.hq__logs WHERE subject = $1", subj)
			require.NoError(t, err)
		}

		// Too long: doc_push's own P0001, in characters not bytes.
		for _, subj := range []string{strings.Repeat("a", 51), strings.Repeat("ü", 51), strings.Repeat("'", 10<<10), strings.Repeat("x", 10<<10)} {
			bad.add(1)
			_, sent, err := runIn(ctx, pg, m, "SELECT * FROM fetchq.doc_push('hq', $1)", subj)
			pgErr := requireCleanError(t, err, sent, m)
			require.Equal(t, "P0001", pgErr.Code)
			require.Equal(t, "The subject exceeds 50 characters limit", pgErr.Message)
		}

		// Text that is not a valid varchar: Postgres' 22021, whatever the
		// function's error policy.
		for _, subj := range []string{"s\x00; DROP TABLE x", "\x00", "s\xff", "\xc3\x28"} {
			if m != extendedParam && strings.IndexByte(subj, 0) >= 0 {
				continue
			}
			for _, sql := range []string{
				"SELECT * FROM fetchq.doc_push('hq', $1)",
				"SELECT * FROM fetchq.doc_complete('hq', $1)",
				"SELECT * FROM fetchq.doc_reschedule('hq', $1, NOW())",
				"SELECT * FROM fetchq.log_error('hq', 'a1', $1, '{}')",
				"SELECT * FROM fetchq.doc_reject('hq', 'a1', $1, '{}')",
			} {
				bad.add(1)
				input := fmt.Sprintf("%s %q", m, subj)
				got, sent, err := runIn(ctx, pg, m, sql, subj)
				if err == nil {
					dev.add(fmt.Sprintf("%s: want ERROR 22021, got %q", sql, got), input)
					continue
				}
				pgErr, problem := errorProblem(err, sent)
				switch {
				case problem != "":
					dev.add(sql+": "+problem, input)
				case pgErr.Code != "22021":
					dev.add(fmt.Sprintf("%s: want ERROR 22021, got ERROR %s %s", sql, pgErr.Code, pgErr.Message), input)
				}
			}
		}
		requireUsable(t, ctx, pg)
	}
	require.Equal(t, before, f.snapshot(t))
}

// jsonbVerdict asks Postgres what it makes of text as jsonb: "" when it
// accepts it, else the SQLSTATE.
func jsonbVerdict(t *testing.T, f *hostileFixture, text string) string {
	t.Helper()
	var ok bool
	err := f.admin.QueryRow(ctxT(t, time.Minute), "SELECT $1::text::jsonb IS NOT NULL", text).Scan(&ok)
	if err == nil {
		return ""
	}
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	return pgErr.Code
}

func nested(depth int) string {
	return strings.Repeat(`{"a":[`, depth) + "1" + strings.Repeat("]}", depth)
}

// TestHostilePayloads: a payload Postgres' jsonb input refuses gets the
// same SQLSTATE from every function that takes one (the extension's
// argument coercion), one it accepts is stored; deep nesting and large
// payloads included.
func TestHostilePayloads(t *testing.T) {
	t.Parallel()
	f := setupHostile(t)
	canary(t, f.b)
	bad := countBadInputs(t)
	pg := f.conn.PgConn()
	ctx := ctxT(t, 3*time.Minute)
	before := f.snapshot(t)
	payloads := []string{
		"{", "nope", "'", "", " ", "{\"a\":}", "[1,]", "NaN", "Infinity", "{'a':1}",
		`"unterminated`, `{"a":1}}`, `{"a":1} x`, "undefined", "01", "1.", ".5", "+1", "0x10",
		`{"a":"\x"}`, "\"\t\"", `"\u00"`,
		`"\u0000"`,       // valid JSON, refused by jsonb (22P05)
		`"\ud800"`,       // a lone surrogate escape: valid JSON, refused by jsonb
		`{"n":1e999999}`, // valid JSON, out of numeric's range for jsonb
		`{"n":-1e-999999}`,
		`{"a":1,"a":2}`,
		"\x00", "{\"a\":\"\x00\"}", "\"\xff\"",
		nested(1000), nested(6000), nested(10000), nested(10001), nested(50000),
	}
	dev := deviations{}
	defer dev.report(t)
	calls := []string{
		"SELECT * FROM fetchq.doc_push('hq', 'p1', $1)",
		"SELECT * FROM fetchq.doc_append('hq', $1)",
		"SELECT * FROM fetchq.doc_complete('hq', 'a1', $1)",
		"SELECT * FROM fetchq.log_error('hq', 'a1', 'm', $1)",
	}
	for _, p := range payloads {
		verdict := jsonbVerdict(t, f, p)
		if verdict != "" && encodingInvalid(p) {
			verdict = "22021" // refused as text before jsonb sees it
		}
		for _, m := range qmodes {
			if m != extendedParam && (strings.IndexByte(p, 0) >= 0 || len(p) > 64<<10) {
				continue
			}
			for _, sql := range calls {
				bad.add(1)
				cctx, cancel := context.WithTimeout(ctx, time.Minute)
				_, err := pg.Exec(cctx, "BEGIN").ReadAll()
				require.NoError(t, err)
				got, sent, err := runIn(cctx, pg, m, sql, p)
				cancel()
				input := fmt.Sprintf("%s %q", m, trunc(p))
				switch {
				case err == nil && verdict != "":
					dev.add(fmt.Sprintf("%s: Postgres refuses the payload with %s, the proxy answers %q", sql, verdict, got), input)
				case err != nil:
					pgErr, problem := errorProblem(err, sent)
					switch {
					case problem != "":
						dev.add(sql+": "+problem, input)
					case verdict == "":
						dev.add(fmt.Sprintf("%s: Postgres accepts the payload, the proxy refuses it: %s %s (%s)", sql, pgErr.Code, pgErr.Message, pgErr.Detail), input)
					case verdict != pgErr.Code:
						dev.add(fmt.Sprintf("%s: Postgres refuses with %s, the proxy with %s %s", sql, verdict, pgErr.Code, pgErr.Message), input)
					}
				}
				_, err = pg.Exec(ctx, "ROLLBACK").ReadAll()
				require.NoError(t, err)
				requireUsable(t, ctx, pg, input, sql)
			}
		}
	}
	require.Equal(t, before, f.snapshot(t), "a rolled-back hostile payload changed the database")
}

// TestLargePayload: a 100 MB payload (a JSON string) is stored whole and
// read back through the proxy; jsonb's own limit is 256 MB. The session
// and other clients carry on.
func TestLargePayload(t *testing.T) {
	t.Parallel()
	f := setupHostile(t)
	canary(t, f.b)
	bad := countBadInputs(t)
	pg := f.conn.PgConn()
	ctx := ctxT(t, 3*time.Minute)
	const size = 100 << 20
	payload := `{"big":"` + strings.Repeat("x", size) + `"}`
	bad.add(1)
	start := time.Now()
	got, _, err := runIn(ctx, pg, extendedParam, "SELECT * FROM fetchq.doc_push('hq', 'big', 0, 0, NOW() - INTERVAL '1 hour', $1)", payload)
	require.NoError(t, err)
	require.Equal(t, "1", got)
	t.Logf("100 MB push through the proxy: %v", time.Since(start))
	var n int
	require.NoError(t, f.admin.QueryRow(ctx, "SELECT length(payload->>'big') FROM fetchq_data.hq__docs WHERE subject = 'big'").Scan(&n))
	require.Equal(t, size, n)
	start = time.Now()
	r := pg.ExecParams(ctx, "SELECT subject, payload FROM fetchq.doc_pick('hq', 0, 1, '5m')", nil, nil, nil, nil).Read()
	require.NoError(t, r.Err)
	require.Len(t, r.Rows, 1)
	require.Equal(t, "big", string(r.Rows[0][0]))
	require.Equal(t, len(payload)+1, len(r.Rows[0][1]), "jsonb prints a space after the colon")
	t.Logf("100 MB pick through the proxy: %v", time.Since(start))
	requireUsable(t, ctx, pg)
}

// intervalVerdict asks Postgres whether NOW() + text::interval is a
// timestamp: "" if so, else the SQLSTATE.
func intervalVerdict(t *testing.T, f *hostileFixture, text string) string {
	t.Helper()
	var ok bool
	err := f.admin.QueryRow(ctxT(t, time.Minute), "SELECT (NOW() + $1::text::interval) IS NOT NULL", text).Scan(&ok)
	if err == nil {
		return ""
	}
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	return pgErr.Code
}

// TestHostileIntervals: doc_pick's lock duration is caught-all in 4.0.2 (a
// bad one picks nothing and changes nothing); a good one, even negative or
// a thousand years, locks for exactly that long; a bad interval or
// timestamp in a timestamptz argument is Postgres' own error.
func TestHostileIntervals(t *testing.T) {
	t.Parallel()
	f := setupHostile(t)
	createStubs(t, f.b)
	direct := connect(t, f.b.directDSN("", ""))
	bad := countBadInputs(t)
	pg := f.conn.PgConn()
	ctx := ctxT(t, 2*time.Minute)
	for _, m := range qmodes {
		for _, d := range []string{"abc", "", " ", "5 parsecs", "1000000 years", "178000000 years", "infinity", "-infinity", "1 day 1 day", "P1Y", "@ 1 minute ago", "1e400 seconds", "--5 minutes", "5m; DROP TABLE x", "5m'; DROP TABLE x; --"} {
			verdict := intervalVerdict(t, f, d)
			before := f.snapshot(t)
			for _, sql := range []string{
				"SELECT subject FROM fetchq.doc_pick('hq', 0, 1, $1)",
				"SELECT subject FROM fetchq.doc_pick('hq', $1)",
			} {
				bad.add(1)
				label := fmt.Sprintf("%s %q %s (Postgres: %q)", m, d, sql, verdict)
				got, _, err := runIn(ctx, pg, m, sql, d)
				require.NoError(t, err, label)
				if verdict != "" {
					require.Equal(t, "", got, "%s: a bad lock duration picks nothing", label)
					require.Equal(t, before, f.snapshot(t), label)
				} else {
					require.NotEmpty(t, got, label)
					_, err = f.admin.Exec(ctx, "UPDATE fetchq_data.hq__docs SET status = 1, attempts = 0, next_iteration = NOW() - INTERVAL '1 minute' WHERE subject LIKE 'd%'")
					require.NoError(t, err)
				}
			}
		}

		// Negative and very long locks are kept as given.
		for _, c := range []struct{ d, cmp string }{
			{"-5 minutes", "next_iteration < NOW() - INTERVAL '4 minutes'"},
			{"1000 years", "next_iteration > NOW() + INTERVAL '999 years'"},
			{"1 minute ago", "next_iteration < NOW()"},
		} {
			bad.add(1)
			got, _, err := runIn(ctx, pg, m, "SELECT subject FROM fetchq.doc_pick('hq', 0, 1, $1)", c.d)
			require.NoError(t, err)
			require.Regexp(t, `^d\d$`, got)
			var ok bool
			require.NoError(t, f.admin.QueryRow(ctx, "SELECT "+c.cmp+" AND status = 2 FROM fetchq_data.hq__docs WHERE subject = $1", got).Scan(&ok))
			require.True(t, ok, "%s %q: lock not kept as given", m, c.d)
			_, err = f.admin.Exec(ctx, "UPDATE fetchq_data.hq__docs SET status = 1, attempts = 0, next_iteration = NOW() - INTERVAL '1 minute' WHERE subject LIKE 'd%'")
			require.NoError(t, err)
		}

		// Timestamptz arguments: Postgres' own input errors (asked of a
		// function with the same signature), nothing stored.
		before := f.snapshot(t)
		for _, ts := range []string{"abc", "", "2024-02-30", "10000000-01-01", "now; DROP TABLE x", "'", "epoch; DROP TABLE x"} {
			for _, sql := range []string{
				"SELECT * FROM fetchq.doc_push('hq', 'ts1', '{}', $1)",
				"SELECT * FROM fetchq.doc_push('hq', 'ts1', 0, 0, $1, '{}')",
				"SELECT * FROM fetchq.doc_reschedule('hq', 'a1', $1)",
				"SELECT * FROM fetchq.queue_drop_logs('hq', $1::timestamptz)",
			} {
				bad.add(1)
				want := directVerdict(t, ctx, direct, m, sql, ts)
				require.NotEmpty(t, want, "%s %q: Postgres accepts it", sql, ts)
				_, sent, err := runIn(ctx, pg, m, sql, ts)
				pgErr := requireCleanError(t, err, sent, m, ts)
				require.Equal(t, want, pgErr.Code, "%s %s %q: %s", m, sql, ts, pgErr.Message)
			}
		}
		require.Equal(t, before, f.snapshot(t))

		// NOW() + INTERVAL 'bad' is a parse-time error in Postgres.
		if m != extendedParam {
			for _, d := range []string{"abc", "1000000000 years", "5 parsecs"} {
				bad.add(1)
				sql := "SELECT * FROM fetchq.doc_push('hq', 'iv1', 0, 0, NOW() + INTERVAL " + quoteLiteral(d) + ", '{}')"
				_, _, err := runIn(ctx, pg, m, sql)
				direct := intervalVerdict(t, f, d)
				pgErr := requireCleanError(t, err, sql, m, d)
				require.Equal(t, direct, pgErr.Code, "%s %q", m, d)
			}
		}
		requireUsable(t, ctx, pg)
	}

	// Retention text is stored as given (a varchar column); the functions
	// that use it fail to 0 as the extension's catch-all does.
	for _, m := range qmodes {
		bad.add(3)
		got, _, err := runIn(ctx, pg, m, "SELECT * FROM fetchq.queue_set_logs_retention('hq', $1)", "abc")
		require.NoError(t, err)
		require.Equal(t, "1", got)
		got, _, err = runIn(ctx, pg, m, "SELECT * FROM fetchq.queue_drop_logs('hq')")
		require.NoError(t, err)
		require.Equal(t, "0", got)
		got, _, err = runIn(ctx, pg, m, "SELECT * FROM fetchq.queue_drop_logs('hq', $1)", "abc")
		require.NoError(t, err)
		require.Equal(t, "0", got)
		var logs int
		require.NoError(t, f.admin.QueryRow(ctx, "SELECT count(*) FROM fetchq_data.hq__logs").Scan(&logs))
		require.Equal(t, 1, logs)
	}
}

// TestHostileLimits: limits of 0, -1 and 2^31 and integer text Postgres'
// int4 input refuses.
func TestHostileLimits(t *testing.T) {
	t.Parallel()
	f := setupHostile(t)
	bad := countBadInputs(t)
	pg := f.conn.PgConn()
	ctx := ctxT(t, 2*time.Minute)
	before := f.snapshot(t)
	for _, m := range qmodes {
		// doc_pick is catch-all: 0 and negative limits pick nothing.
		for _, sql := range []string{
			"SELECT subject FROM fetchq.doc_pick('hq', 0, 0, '5m')",
			"SELECT subject FROM fetchq.doc_pick('hq', 0, -1, '5m')",
			"SELECT subject FROM fetchq.doc_pick('hq', 0)",
			"SELECT subject FROM fetchq.doc_pick('hq', -1)",
			"SELECT subject FROM fetchq.doc_pick('hq', -2147483648)",
			"SELECT subject FROM fetchq.doc_pick('hq', 0, -2147483648, '5m')",
		} {
			bad.add(1)
			got, _, err := runIn(ctx, pg, m, sql)
			require.NoError(t, err, "%s %s", m, sql)
			require.Equal(t, "", got, "%s %s", m, sql)
		}
		require.Equal(t, before, f.snapshot(t))

		// 2^31 as a literal is a bigint: no overload takes it (42883).
		for _, sql := range []string{
			"SELECT subject FROM fetchq.doc_pick('hq', 0, 2147483648, '5m')",
			"SELECT subject FROM fetchq.doc_pick('hq', 2147483648)",
			"SELECT subject FROM fetchq.doc_pick('hq', 0, 99999999999999999999, '5m')",
			"SELECT * FROM fetchq.queue_set_max_attempts('hq', 2147483648)",
		} {
			bad.add(1)
			_, _, err := runIn(ctx, pg, m, sql)
			pgErr := requireCleanError(t, err, sql, m)
			require.Equal(t, "42883", pgErr.Code, "%s %s: %s", m, sql, pgErr.Message)
		}
		require.Equal(t, before, f.snapshot(t))
	}

	// Integer text in $n parameters: Postgres' int4 input decides.
	for _, text := range []string{"2147483648", "-2147483649", "99999999999999999999", "1.5", "abc", "", " ", "1e3", "0x10", "1_000", "５", "+-1", "--1", "NaN", " 1 ", "+1", "-0", "2147483647"} {
		var want string
		var n int32
		if err := f.admin.QueryRow(ctx, "SELECT $1::text::int4", text).Scan(&n); err != nil {
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr)
			want = pgErr.Code
		}
		for _, sql := range []string{
			"SELECT subject FROM fetchq.doc_pick('hq', 0, $1, '5m')",
			"SELECT subject FROM fetchq.doc_pick('hq', $1::int)",
			"SELECT * FROM fetchq.queue_set_max_attempts('hq', $1)",
			"SELECT * FROM fetchq.doc_push('hq', 'lim', $1, 0, NOW(), '{}')",
		} {
			bad.add(1)
			label := fmt.Sprintf("%q %s (Postgres: %q)", text, sql, want)
			_, err := pg.Exec(ctx, "BEGIN").ReadAll()
			require.NoError(t, err)
			_, sent, err := runIn(ctx, pg, extendedParam, sql, text)
			if want == "" {
				require.NoError(t, err, label)
			} else {
				pgErr := requireCleanError(t, err, sent, label)
				require.Equal(t, want, pgErr.Code, label)
			}
			_, err = pg.Exec(ctx, "ROLLBACK").ReadAll()
			require.NoError(t, err)
		}
	}
	require.Equal(t, before, f.snapshot(t))
	requireUsable(t, ctx, pg)
}

// overloadSQL builds a call of overload id (as backend.Overloads names
// it) with every argument a typed literal, NULL at position null.
func overloadSQL(id string, null int) string {
	name := id[:strings.IndexByte(id, '(')]
	types := strings.Split(strings.TrimSuffix(id[len(name)+1:], ")"), ",")
	args := make([]string, len(types))
	for i, typ := range types {
		v := "NULL"
		if i != null {
			switch typ {
			case "varchar":
				v = "'hq'"
				if i > 0 {
					v = "'a1'"
				}
			case "integer", "bigint":
				v = "1"
			case "boolean":
				v = "false"
			case "jsonb":
				v = "'{}'"
			case "timestamptz":
				args[i] = "NOW()" // NOW()::timestamptz is not a supported argument form
				continue
			}
		}
		args[i] = v + "::" + typ
	}
	return "SELECT * FROM fetchq." + name + "(" + strings.Join(args, ", ") + ")"
}

// TestNullInEveryArgument calls every overload of the API with NULL in
// each argument in turn (typed, so the overload is the same), in both
// protocols, inside a transaction that is rolled back: the answer is a
// value or a clean ErrorResponse, never an internal error, and the
// session goes on.
func TestNullInEveryArgument(t *testing.T) {
	t.Parallel()
	f := setupHostile(t)
	canary(t, f.b)
	bad := countBadInputs(t)
	pg := f.conn.PgConn()
	ctx := ctxT(t, 3*time.Minute)
	before := f.snapshot(t)
	errs := map[string]int{}
	for _, id := range backend.Overloads() {
		nargs := 0
		if !strings.HasSuffix(id, "()") {
			nargs = strings.Count(id, ",") + 1
		}
		for null := 0; null < nargs; null++ {
			sql := overloadSQL(id, null)
			for _, m := range []qmode{simpleLiteral, extendedLiteral} {
				bad.add(1)
				_, err := pg.Exec(ctx, "BEGIN").ReadAll()
				require.NoError(t, err)
				_, _, err = runIn(ctx, pg, m, sql)
				if err != nil {
					pgErr := requireCleanError(t, err, sql, m)
					errs[pgErr.Code]++
				}
				_, err = pg.Exec(ctx, "ROLLBACK").ReadAll()
				require.NoError(t, err, sql)
			}
		}
	}
	t.Logf("SQLSTATEs of the calls that raised: %v", errs)
	requireUsable(t, ctx, pg)
	require.Equal(t, before, f.snapshot(t))
}

// directVerdict runs sql on a direct connection to the database holding
// the stubs of createStubs, and returns the SQLSTATE Postgres answers (""
// if none): how Postgres resolves and coerces the arguments of a call.
func directVerdict(t *testing.T, ctx context.Context, direct *pgconn.PgConn, m qmode, sql string, params ...any) string {
	t.Helper()
	_, _, err := runIn(ctx, direct, m, sql, params...)
	if err == nil {
		return ""
	}
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	return pgErr.Code
}

// createStubs creates, in the test database, a function with the
// signature of every overload of the API (returning 1), so that Postgres
// itself can say how it resolves a call and what it answers to a Bind:
// the reference for the proxy's answers. The proxy never forwards these
// calls, so the stubs do not change what it does.
func createStubs(t *testing.T, b *testBundle) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	pool := b.db.Pool(t)
	for _, id := range backend.Overloads() {
		name := id[:strings.IndexByte(id, '(')]
		_, err := pool.Exec(ctx, "CREATE FUNCTION fetchq."+name+id[len(name):]+" RETURNS int LANGUAGE sql AS 'SELECT 1'")
		require.NoError(t, err, id)
	}
}

// TestWrongParameterTypes: $n parameters declared with types no overload
// takes, and values in formats Postgres refuses at Bind. The answer is the
// one Postgres gives for the same messages on a function with the same
// signature.
func TestWrongParameterTypes(t *testing.T) {
	t.Parallel()
	f := setupHostile(t)
	createStubs(t, f.b)
	bad := countBadInputs(t)
	pg := f.conn.PgConn()
	direct := connect(t, f.b.directDSN("", ""))
	ctx := ctxT(t, 2*time.Minute)
	before := f.snapshot(t)

	// Declared parameter types: Postgres' function resolution decides.
	const (
		oidBool      = 16
		oidBytea     = 17
		oidInt8      = 20
		oidInt2      = 21
		oidInt4      = 23
		oidText      = 25
		oidJSON      = 114
		oidFloat8    = 701
		oidUnknown   = 705
		oidVarchar   = 1043
		oidDate      = 1082
		oidTimestamp = 1114
		oidNumeric   = 1700
		oidJSONB     = 3802
		oidNoType    = 999999
	)
	for i, c := range []struct {
		sql  string
		oids []uint32
	}{
		{"SELECT * FROM fetchq.doc_pick($1, $2, $3, $4)", []uint32{oidInt4, oidInt4, oidInt4, oidVarchar}},
		{"SELECT * FROM fetchq.doc_pick($1, $2, $3, $4)", []uint32{oidVarchar, oidText, oidInt4, oidVarchar}},
		{"SELECT * FROM fetchq.doc_pick($1, $2, $3, $4)", []uint32{oidVarchar, oidInt2, oidInt2, oidText}},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{oidVarchar, oidNumeric}},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{oidVarchar, oidInt8}},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{oidVarchar, oidFloat8}},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{oidVarchar, oidJSON}},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{oidBytea, oidInt4}},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{oidText, oidInt2}},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{oidUnknown, oidUnknown}},
		{"SELECT * FROM fetchq.doc_pick($1, $2)", []uint32{0, 0}},
		{"SELECT * FROM fetchq.doc_pick($1)", []uint32{oidNoType}},
		{"SELECT * FROM fetchq.doc_push($1, $2)", []uint32{oidBool, oidText}},
		{"SELECT * FROM fetchq.doc_push($1, $2, $3)", []uint32{oidVarchar, oidVarchar, oidVarchar}},
		{"SELECT * FROM fetchq.doc_push($1, $2, $3)", []uint32{oidVarchar, oidVarchar, oidJSON}},
		{"SELECT * FROM fetchq.doc_push($1, $2, $3)", []uint32{oidVarchar, oidVarchar, oidJSONB}},
		{"SELECT * FROM fetchq.doc_push($1, $2, 0, 0, $3, '{}')", []uint32{oidVarchar, oidVarchar, oidInt4}},
		{"SELECT * FROM fetchq.doc_push($1, $2, 0, 0, $3, '{}')", []uint32{oidVarchar, oidVarchar, oidText}},
		{"SELECT * FROM fetchq.doc_push($1, $2, $3, $4)", []uint32{oidVarchar, oidInt8, oidText, oidText}},
		{"SELECT * FROM fetchq.queue_truncate($1, $2)", []uint32{oidVarchar, oidInt4}},
		{"SELECT * FROM fetchq.queue_truncate($1, $2)", []uint32{oidVarchar, oidText}},
		{"SELECT * FROM fetchq.doc_pick($2)", []uint32{oidVarchar}},
		{"SELECT * FROM fetchq.doc_pick($1, $1)", []uint32{oidVarchar}},
	} {
		bad.add(1)
		label := fmt.Sprintf("%s %v", c.sql, c.oids)
		name := "wrong_types_" + strconv.Itoa(i)
		_, derr := direct.Prepare(ctx, name, c.sql, c.oids)
		_, perr := pg.Prepare(ctx, name, c.sql, c.oids)
		if derr == nil {
			require.NoError(t, perr, label)
			continue
		}
		var want *pgconn.PgError
		require.ErrorAs(t, derr, &want)
		got := requireCleanError(t, perr, c.sql, label)
		if want.Code != "XX000" { // Postgres: "cache lookup failed for type 999999"; any clean error is better
			require.Equal(t, want.Code, got.Code, "%s: Postgres: %s; proxy: %s", label, want.Message, got.Message)
		}
		requireUsable(t, ctx, pg, label)
	}

	// A timestamp without time zone or a date where a timestamptz is
	// expected: Postgres converts it in the session's time zone, the proxy
	// refuses it (0A000, a documented deviation).
	for _, oid := range []uint32{oidTimestamp, oidDate} {
		bad.add(1)
		const sql = "SELECT * FROM fetchq.doc_push($1, $2, 0, 0, $3, '{}')"
		_, err := pg.Prepare(ctx, "", sql, []uint32{oidVarchar, oidVarchar, oid})
		pgErr := requireCleanError(t, err, sql, oid)
		require.Equal(t, "0A000", pgErr.Code)
	}

	// Bind-time mistakes, on the same statement directly and through the
	// proxy.
	dev := deviations{}
	i4 := func(n int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(n)) }
	for _, c := range []struct {
		name     string
		sql      string
		values   [][]byte
		formats  []int16
		rformats []int16
	}{
		{"binary int4 of 2 bytes", "SELECT * FROM fetchq.doc_pick($1::varchar, $2::int4)", [][]byte{[]byte("hq"), {0, 1}}, []int16{0, 1}, nil},
		{"binary int4 of 8 bytes", "SELECT * FROM fetchq.doc_pick($1::varchar, $2::int4)", [][]byte{[]byte("hq"), make([]byte, 8)}, []int16{0, 1}, nil},
		{"binary int4 of 0 bytes", "SELECT * FROM fetchq.doc_pick($1, $2::int4)", [][]byte{[]byte("hq"), {}}, []int16{0, 1}, nil},
		{"binary bool of 2 bytes", "SELECT * FROM fetchq.queue_truncate($1::varchar, $2::bool)", [][]byte{[]byte("hq"), {1, 1}}, []int16{0, 1}, nil},
		{"binary bool 7", "SELECT * FROM fetchq.queue_truncate($1::varchar, $2::bool)", [][]byte{[]byte("hq"), {7}}, []int16{0, 1}, nil},
		{"binary timestamptz of 4 bytes", "SELECT * FROM fetchq.doc_push($1::varchar, $2::varchar, $3::jsonb, $4::timestamptz)",
			[][]byte{[]byte("hq"), []byte("s"), []byte("{}"), i4(1)}, []int16{0, 0, 0, 1}, nil},
		{"binary jsonb without its version byte", "SELECT * FROM fetchq.doc_push($1::varchar, $2::varchar, $3::jsonb)",
			[][]byte{[]byte("hq"), []byte("s"), []byte("{}")}, []int16{0, 0, 1}, nil},
		{"binary varchar with invalid UTF-8", "SELECT * FROM fetchq.doc_push($1::varchar, $2::varchar)",
			[][]byte{[]byte("hq"), {0xff, 0xfe}}, []int16{0, 1}, nil},
		{"binary varchar with a NUL", "SELECT * FROM fetchq.doc_push($1::varchar, $2::varchar)",
			[][]byte{[]byte("hq"), {'a', 0, 'b'}}, []int16{0, 1}, nil},
		{"param format code 2", "SELECT * FROM fetchq.doc_pick($1::varchar, $2::int4)", [][]byte{[]byte("hq"), []byte("1")}, []int16{0, 2}, nil},
		{"param format code -1", "SELECT * FROM fetchq.doc_pick($1::varchar, $2::int4)", [][]byte{[]byte("hq"), []byte("1")}, []int16{-1}, nil},
		{"3 param formats for 2 params", "SELECT * FROM fetchq.doc_pick($1::varchar, $2::int4)", [][]byte{[]byte("hq"), []byte("1")}, []int16{0, 0, 0}, nil},
		{"result format code 2", "SELECT * FROM fetchq.doc_push($1::varchar, 's')", [][]byte{[]byte("hq")}, nil, []int16{2}},
		{"result format code -1", "SELECT * FROM fetchq.doc_push($1::varchar, 's')", [][]byte{[]byte("hq")}, nil, []int16{-1}},
		{"2 result formats for 1 column", "SELECT * FROM fetchq.doc_push($1::varchar, 's')", [][]byte{[]byte("hq")}, nil, []int16{0, 0}},
		{"NUL in a text int4", "SELECT * FROM fetchq.doc_pick($1::varchar, $2::int4)", [][]byte{[]byte("hq"), []byte("1\x00")}, nil, nil},
		{"NUL in a text varchar", "SELECT * FROM fetchq.doc_push($1::varchar, $2::varchar)", [][]byte{[]byte("hq"), []byte("a\x00b")}, nil, nil},
	} {
		bad.add(1)
		d := bindExchange(t, f.b.directDSN("", ""), c.sql, c.values, c.formats, c.rformats)
		p := bindExchange(t, f.b.proxyDSN("", ""), c.sql, c.values, c.formats, c.rformats)
		switch {
		case len(d.errs) == 0 && len(p.errs) > 0:
			dev.add(fmt.Sprintf("Postgres accepts it (%q), the proxy refuses it: %v", d.types, errsText(p.errs)), c.name)
		case len(d.errs) == 0:
		case d.closed != p.closed:
			dev.add(fmt.Sprintf("Postgres closed: %v, proxy closed: %v; Postgres %v, proxy %v", d.closed, p.closed, errsText(d.errs), errsText(p.errs)), c.name)
		case len(p.errs) == 0:
			dev.add(fmt.Sprintf("the proxy accepts what Postgres refuses (%s); it answered %q", errsText(d.errs), p.types), c.name)
		case d.errs[0].Code != p.errs[0].Code && d.errs[0].Code != "XX000":
			// The proxy reports Bind errors of intercepted statements at
			// Execute (after BindComplete); only the SQLSTATE is compared.
			dev.add(fmt.Sprintf("Postgres %q %v; proxy %q %v", d.types, errsText(d.errs), p.types, errsText(p.errs)), c.name)
		}
	}
	dev.report(t)
	require.Equal(t, before, f.snapshot(t))
}

// bindExchange opens a raw session on dsn, begins a transaction (rolled
// back when the connection closes), then sends Parse, Bind with the given
// values and formats, Describe, Execute and Sync, and returns the answer.
func bindExchange(t *testing.T, dsn, sql string, values [][]byte, formats, rformats []int16) exchange {
	t.Helper()
	hc := rawConn(t, dsn)
	fe := hc.Frontend
	fe.Send(&pgproto3.Query{String: "BEGIN"})
	require.NoError(t, fe.Flush())
	receive(t, hc.Conn, fe, 1)
	fe.Send(&pgproto3.Parse{Query: sql})
	fe.Send(&pgproto3.Bind{Parameters: values, ParameterFormatCodes: formats, ResultFormatCodes: rformats})
	fe.Send(&pgproto3.Describe{ObjectType: 'P'})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Sync{})
	require.NoError(t, fe.Flush())
	x := receive(t, hc.Conn, fe, 1)
	hc.Conn.Close()
	return x
}

// exchange is what a server answered to raw messages.
type exchange struct {
	types  string // one letter per message, as in rawExchange
	errs   []*pgproto3.ErrorResponse
	closed bool // the server closed the connection
}

// receive reads messages until `readies` ReadyForQuery messages arrived or
// the connection closed (within 10 seconds).
func receive(t *testing.T, conn net.Conn, fe *pgproto3.Frontend, readies int) exchange {
	t.Helper()
	return receiveWithin(t, conn, fe, readies, 10*time.Second)
}

// receiveWithin is receive with a deadline of d.
func receiveWithin(t *testing.T, conn net.Conn, fe *pgproto3.Frontend, readies int, d time.Duration) exchange {
	t.Helper()
	x, err := readExchange(conn, fe, readies, d)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "no answer within %v (got %q so far)", d, x.types)
	return x
}

// readExchange reads messages until `readies` ReadyForQuery messages
// arrived or reading failed (closed connection, or nothing within d); then
// x.closed is set and err says why.
func readExchange(conn net.Conn, fe *pgproto3.Frontend, readies int, d time.Duration) (x exchange, err error) {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	for readies > 0 {
		msg, err := fe.Receive()
		if err != nil {
			x.closed = true
			return x, err
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			x.types += "Z"
			readies--
		case *pgproto3.ErrorResponse:
			x.types += "E"
			x.errs = append(x.errs, m)
		case *pgproto3.ParseComplete:
			x.types += "1"
		case *pgproto3.BindComplete:
			x.types += "2"
		case *pgproto3.CloseComplete:
			x.types += "3"
		case *pgproto3.DataRow:
			x.types += "D"
		case *pgproto3.CommandComplete:
			x.types += "C"
		case *pgproto3.RowDescription:
			x.types += "T"
		case *pgproto3.ParameterDescription:
			x.types += "t"
		case *pgproto3.NoData:
			x.types += "n"
		case *pgproto3.EmptyQueryResponse:
			x.types += "I"
		case *pgproto3.PortalSuspended:
			x.types += "s"
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		default:
			x.types += "?"
		}
	}
	return x, nil
}

// rawConn opens a session through dsn and hands its connection over for
// raw messages; the connection is closed when the test ends.
func rawConn(t *testing.T, dsn string) *pgconn.HijackedConn {
	t.Helper()
	c := connect(t, dsn)
	hc, err := c.Hijack()
	require.NoError(t, err)
	t.Cleanup(func() { hc.Conn.Close() })
	_ = hc.Conn.SetDeadline(time.Now().Add(30 * time.Second))
	return hc
}

// requireClosedWith requires the server to send a FATAL ErrorResponse
// with code and close the connection.
func requireClosedWith(t *testing.T, hc *pgconn.HijackedConn, code string, msgAndArgs ...any) *pgproto3.ErrorResponse {
	t.Helper()
	_ = hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	msg, err := hc.Frontend.Receive()
	require.NoError(t, err, msgAndArgs...)
	er, ok := msg.(*pgproto3.ErrorResponse)
	require.True(t, ok, "got %T, want a FATAL ErrorResponse %v", msg, fmt.Sprint(msgAndArgs...))
	require.Equal(t, "FATAL", er.Severity, msgAndArgs...)
	require.Equal(t, code, er.Code, "%s %v", er.Message, fmt.Sprint(msgAndArgs...))
	_, err = hc.Frontend.Receive()
	require.Error(t, err, "the connection should be closed %v", fmt.Sprint(msgAndArgs...))
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the connection was not closed %v", fmt.Sprint(msgAndArgs...))
	return er
}

// header is a message header with an arbitrary length field.
func header(typ byte, length uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{typ}, length)
}

// TestBadLengthFields: a message length of 2^31 (negative as int32), of
// -1, below 4 or over Postgres' 1 GB limit ends the session with FATAL
// 08P01, as Postgres does, whatever the message type; other clients are
// served.
func TestBadLengthFields(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	fetchqConn(t, b, "lq")
	canary(t, b)
	bad := countBadInputs(t)
	for _, typ := range []byte{'Q', 'P', 'B', 'E', 'D', 'C', 'S', 'H', 'd', 'F', 'X'} {
		for _, l := range []uint32{1 << 31, 0xFFFFFFFF, 0, 3, 0x7FFFFFFF, 0x40000004} {
			if typ == 'X' && l >= 4 {
				continue // Terminate ends the session anyway
			}
			bad.add(1)
			label := fmt.Sprintf("type %q length %#x", typ, l)
			// Postgres closes the connection (it logs the error as
			// COMMERROR, without sending it); the proxy says why first.
			hc := rawConn(t, b.directDSN("", ""))
			_, err := hc.Conn.Write(append(header(typ, l), "SELECT 1"...))
			require.NoError(t, err)
			_ = hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			for err == nil {
				_, err = hc.Frontend.Receive()
			}
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "Postgres kept the connection: %s", label)

			hc = rawConn(t, b.proxyDSN("", ""))
			_, err = hc.Conn.Write(append(header(typ, l), "SELECT 1"...))
			require.NoError(t, err)
			requireClosedWith(t, hc, "08P01", label)
		}
	}
}

// TestTruncatedMessage: a message cut short, then the client goes away:
// the proxy ends the session and its upstream connection promptly.
func TestTruncatedMessage(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	fetchqConn(t, b, "tq")
	canary(t, b)
	bad := countBadInputs(t)
	pool := b.db.Pool(t)
	ctx := ctxT(t, time.Minute)
	for i, msg := range [][]byte{
		append(header('Q', 100), "SELECT * FROM fetchq.doc_pick('tq')"...),
		append(header('Q', 100), "SELECT 1"...),
		append(header('P', 1000), "\x00SELECT * FROM fetchq"...),
		header('B', 50),
		[]byte{'S', 0, 0},
		[]byte{'Q'},
		append(header('d', 1<<20), "COPY DATA"...),
	} {
		bad.add(1)
		app := "trunc" + strconv.Itoa(i)
		cfg, err := pgconn.ParseConfig(b.proxyDSN("", ""))
		require.NoError(t, err)
		cfg.RuntimeParams["application_name"] = app
		c, err := pgconn.ConnectConfig(ctx, cfg)
		require.NoError(t, err)
		hc, err := c.Hijack()
		require.NoError(t, err)
		_, err = hc.Conn.Write(msg)
		require.NoError(t, err)
		require.NoError(t, hc.Conn.(*net.TCPConn).CloseWrite())
		_ = hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadAll(hc.Conn)
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "%q: the proxy kept the connection open", msg)
		hc.Conn.Close()
		require.Eventually(t, func() bool {
			var n int
			require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n))
			return n == 0
		}, 10*time.Second, 20*time.Millisecond, "%q: the upstream backend outlived the client", msg)
	}
}

// TestUnknownMessageTypes: message types a client may not send end the
// session with FATAL 08P01 and Postgres' own message, as on a direct
// connection.
func TestUnknownMessageTypes(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	canary(t, b)
	bad := countBadInputs(t)
	for _, typ := range []byte{0, 'A', 'Z', 'T', 'p', 'x', 'q', 'R', 'K', 'N', 'W', 'G', 0x7F, 0xFF} {
		bad.add(1)
		var msgs [2]string
		for i, dsn := range []string{b.directDSN("", ""), b.proxyDSN("", "")} {
			hc := rawConn(t, dsn)
			_, err := hc.Conn.Write(append(header(typ, 4+6), "hello\x00"...))
			require.NoError(t, err)
			er := requireClosedWith(t, hc, "08P01", typ, i)
			msgs[i] = er.Message
		}
		require.Equal(t, msgs[0], msgs[1])
	}
}

// TestMalformedBodies: messages whose framing is right but whose body is
// malformed. Postgres answers ERROR 08P01 and, the framing being intact,
// the session goes on after Sync; the proxy must do the same for the
// messages it decodes itself (those of Fetchq calls).
func TestMalformedBodies(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	fetchqConn(t, b, "mq")
	createStubs(t, b)
	canary(t, b)
	bad := countBadInputs(t)
	type tc struct {
		name string
		msg  func(sql string) []byte
		sql  string
	}
	parseBody := func(sql string) []byte { return append(append([]byte("\x00"), sql...), 0) }
	dev := deviations{}
	defer dev.report(t)
	for _, c := range []tc{
		{"Parse without its parameter count", func(sql string) []byte {
			body := parseBody(sql)
			return append(header('P', uint32(4+len(body))), body...)
		}, "SELECT * FROM fetchq.doc_pick($1)"},
		{"Parse with a truncated OID list", func(sql string) []byte {
			body := append(parseBody(sql), 0, 2, 0, 0, 0, 25)
			return append(header('P', uint32(4+len(body))), body...)
		}, "SELECT * FROM fetchq.doc_pick($1)"},
		{"Parse without the query's terminator", func(sql string) []byte {
			body := append([]byte("\x00"), sql...)
			return append(header('P', uint32(4+len(body))), body...)
		}, "SELECT * FROM fetchq.info()"},
		{"Query with bytes after its terminator", func(sql string) []byte {
			body := append(append([]byte(sql), 0), "; DROP TABLE x"...)
			return append(header('Q', uint32(4+len(body))), body...)
		}, "SELECT * FROM fetchq.info()"},
		{"Bind with a truncated parameter value", func(sql string) []byte {
			body := append([]byte("\x00s\x00"), 0, 0, 0, 1, 0, 0, 0, 10, 'h', 'q', 0, 0)
			return append(encodeFE(&pgproto3.Parse{Name: "s", Query: sql}), append(header('B', uint32(4+len(body))), body...)...)
		}, "SELECT * FROM fetchq.doc_pick($1::varchar)"},
		{"Bind with a parameter length of -2", func(sql string) []byte {
			body := append([]byte("\x00s\x00"), 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFE, 0, 0)
			return append(encodeFE(&pgproto3.Parse{Name: "s", Query: sql}), append(header('B', uint32(4+len(body))), body...)...)
		}, "SELECT * FROM fetchq.doc_pick($1::varchar)"},
		{"Bind without its result format count", func(sql string) []byte {
			body := append([]byte("\x00s\x00"), 0, 0, 0, 1, 0, 0, 0, 2, 'h', 'q')
			return append(encodeFE(&pgproto3.Parse{Name: "s", Query: sql}), append(header('B', uint32(4+len(body))), body...)...)
		}, "SELECT * FROM fetchq.doc_pick($1::varchar)"},
		{"Bind with bytes after its last field", func(sql string) []byte {
			body := append([]byte("\x00s\x00"), 0, 0, 0, 1, 0, 0, 0, 2, 'h', 'q', 0, 0, 'x', 'y')
			return append(encodeFE(&pgproto3.Parse{Name: "s", Query: sql}), append(header('B', uint32(4+len(body))), body...)...)
		}, "SELECT * FROM fetchq.doc_pick($1::varchar)"},
		{"Execute without its portal name's terminator", func(sql string) []byte {
			out := encodeFE(&pgproto3.Parse{Name: "s", Query: sql})
			out = append(out, encodeFE(&pgproto3.Bind{PreparedStatement: "s"})...)
			return append(out, append(header('E', 4+2), 'z', 'z')...)
		}, "SELECT * FROM fetchq.info()"},
		{"Describe with an unknown kind", func(sql string) []byte {
			out := encodeFE(&pgproto3.Parse{Name: "s", Query: sql})
			return append(out, append(header('D', 4+3), 'X', 's', 0)...)
		}, "SELECT * FROM fetchq.info()"},
		{"Close with an unknown kind", func(sql string) []byte {
			out := encodeFE(&pgproto3.Parse{Name: "s", Query: sql})
			return append(out, append(header('C', 4+3), 'X', 's', 0)...)
		}, "SELECT * FROM fetchq.info()"},
		{"Query with no terminator", func(sql string) []byte {
			return append(header('Q', uint32(4+len(sql))), sql...)
		}, "SELECT * FROM fetchq.info()"},
	} {
		{
			bad.add(1)
			var got [2]exchange
			for i, dsn := range []string{b.directDSN("", ""), b.proxyDSN("", "")} {
				hc := rawConn(t, dsn)
				out := c.msg(c.sql)
				if !strings.HasPrefix(c.name, "Query") {
					// After an error in an extended-protocol message,
					// everything up to Sync is skipped.
					out = append(out, 'S', 0, 0, 0, 4)
				}
				_, err := hc.Conn.Write(out)
				require.NoError(t, err)
				got[i] = receive(t, hc.Conn, hc.Frontend, 1)
				if !got[i].closed {
					// The session goes on.
					hc.Frontend.Send(&pgproto3.Query{String: "SELECT 1"})
					require.NoError(t, hc.Frontend.Flush())
					x := receive(t, hc.Conn, hc.Frontend, 1)
					if x.types != "TDCZ" {
						dev.add(fmt.Sprintf("%s: session not usable after the error: %q %v", c.name, x.types, errsText(x.errs)), dsn[:4])
					}
				}
			}
			label := "then Sync"
			if got[0].closed != got[1].closed || got[0].types != got[1].types || errsText(got[0].errs) != errsText(got[1].errs) {
				dev.add(fmt.Sprintf("%s: Postgres %q (closed: %v) %v; proxy %q (closed: %v) %v", c.name,
					got[0].types, got[0].closed, errsText(got[0].errs), got[1].types, got[1].closed, errsText(got[1].errs)), label)
			}
		}
	}
}

func errsText(errs []*pgproto3.ErrorResponse) string {
	var s []string
	for _, e := range errs {
		s = append(s, e.Severity+" "+e.Code+" "+e.Message)
	}
	return strings.Join(s, "; ")
}

// TestBindWrongParameterCount: Bind with too few or too many parameters
// for an intercepted statement gets Postgres' own 08P01 ERROR (not FATAL)
// and the session goes on after Sync, as for a plain statement.
func TestBindWrongParameterCount(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	fetchqConn(t, b, "bq")
	createStubs(t, b)
	canary(t, b)
	bad := countBadInputs(t)
	for _, n := range []int{0, 1, 3, 100} {
		bad.add(1)
		var got [2]exchange
		for i, dsn := range []string{b.directDSN("", ""), b.proxyDSN("", "")} {
			const sql = "SELECT * FROM fetchq.doc_pick($1::varchar, $2::int)"
			hc := rawConn(t, dsn)
			fe := hc.Frontend
			params := make([][]byte, n)
			for j := range params {
				params[j] = []byte("1")
			}
			fe.Send(&pgproto3.Parse{Name: "s", Query: sql})
			fe.Send(&pgproto3.Bind{PreparedStatement: "s", Parameters: params})
			fe.Send(&pgproto3.Execute{})
			fe.Send(&pgproto3.Sync{})
			fe.Send(&pgproto3.Bind{PreparedStatement: "s", Parameters: [][]byte{[]byte("bq"), []byte("1")}})
			fe.Send(&pgproto3.Execute{})
			fe.Send(&pgproto3.Sync{})
			require.NoError(t, fe.Flush())
			got[i] = receive(t, hc.Conn, fe, 2)
			require.False(t, got[i].closed)
		}
		require.Equal(t, "1EZ2", got[0].types[:4], "%d params", n)
		require.Equal(t, got[0].types[:4], got[1].types[:4], "%d params", n)
		require.Equal(t, "ERROR", got[1].errs[0].Severity)
		require.Equal(t, got[0].errs[0].Code, got[1].errs[0].Code)
		require.Equal(t, got[0].errs[0].Message, got[1].errs[0].Message)
	}
}

// TestExecuteMissingPortal: Execute (and Describe) of a portal that does
// not exist gets 34000 as from Postgres, including a portal that existed
// but ended with its transaction or its statement, and a portal that
// exists is found, whichever way its transaction began. Postgres running
// a function of the same signature is the reference.
func TestExecuteMissingPortal(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	fetchqConn(t, b, "eq")
	createStubs(t, b)
	canary(t, b)
	bad := countBadInputs(t)
	const call = "SELECT * FROM fetchq.info()"
	type step []pgproto3.FrontendMessage
	dev := deviations{}
	for _, c := range []struct {
		name  string
		steps func(sql string) []step
	}{
		{"never bound", func(sql string) []step {
			return []step{{&pgproto3.Parse{Name: "s", Query: sql}, &pgproto3.Execute{Portal: "nope"}, &pgproto3.Sync{}}}
		}},
		{"described, never bound", func(sql string) []step {
			return []step{{&pgproto3.Parse{Name: "s", Query: sql}, &pgproto3.Describe{ObjectType: 'P', Name: "nope"}, &pgproto3.Sync{}}}
		}},
		{"ended with the implicit transaction", func(sql string) []step {
			return []step{
				{&pgproto3.Parse{Name: "s", Query: sql}, &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s"}, &pgproto3.Sync{}},
				{&pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{}},
			}
		}},
		{"ended with COMMIT", func(sql string) []step {
			return []step{
				{&pgproto3.Query{String: "BEGIN"}},
				{&pgproto3.Parse{Name: "s", Query: sql}, &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s"}, &pgproto3.Sync{}},
				{&pgproto3.Query{String: "COMMIT"}},
				{&pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{}},
			}
		}},
		{"closed with its statement", func(sql string) []step {
			return []step{
				{&pgproto3.Query{String: "BEGIN"}},
				{&pgproto3.Parse{Name: "s", Query: sql}, &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s"},
					&pgproto3.Close{ObjectType: 'S', Name: "s"}, &pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{}},
				{&pgproto3.Query{String: "ROLLBACK"}},
			}
		}},
		{"exists: bound in a batch that began the transaction", func(sql string) []step {
			return []step{
				{&pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{},
					&pgproto3.Parse{Name: "s", Query: sql}, &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s"}, &pgproto3.Sync{}},
				{&pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{}},
				{&pgproto3.Query{String: "ROLLBACK"}},
			}
		}},
		{"exists: bound inside a transaction block", func(sql string) []step {
			return []step{
				{&pgproto3.Query{String: "BEGIN"}},
				{&pgproto3.Parse{Name: "s", Query: sql}, &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s"}, &pgproto3.Sync{}},
				{&pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{}},
				{&pgproto3.Query{String: "ROLLBACK"}},
			}
		}},
	} {
		bad.add(1)
		var got [2]exchange
		for i, dsn := range []string{b.directDSN("", ""), b.proxyDSN("", "")} {
			hc := rawConn(t, dsn)
			for _, st := range c.steps(call) {
				for _, m := range st {
					hc.Frontend.Send(m)
				}
				require.NoError(t, hc.Frontend.Flush())
				x := receive(t, hc.Conn, hc.Frontend, 1)
				require.False(t, x.closed, c.name)
				got[i].types += x.types + "|"
				got[i].errs = append(got[i].errs, x.errs...)
			}
		}
		if got[0].types != got[1].types || errsText(got[0].errs) != errsText(got[1].errs) {
			dev.add(fmt.Sprintf("%s: Postgres %q %v; proxy %q %v", c.name, got[0].types, errsText(got[0].errs), got[1].types, errsText(got[1].errs)), "")
		}
	}
	dev.report(t)
}

// TestStartupNeverCompletes: a client that never finishes startup (silent,
// half a packet, a byte at a time, an SSLRequest and then nothing, a
// password request never answered) is disconnected after
// Config.StartupTimeout, and the upstream connection opened for it is
// closed too.
func TestStartupNeverCompletes(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	b := setupFetchq(t, func(c *proxy.Config, _ *pgtest.DB) { c.StartupTimeout = timeout })
	canary(t, b)
	bad := countBadInputs(t)
	pool := b.db.Pool(t)
	ctx := ctxT(t, time.Minute)
	addr := net.JoinHostPort(b.host, itoa(b.port))
	ssl := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103)
	md5Startup := startupPacket(3<<16, "user", md5User, "database", b.db.Name, "application_name", "never_answers")
	for _, c := range []struct {
		name    string
		send    []byte
		trickle bool
	}{
		{"silent", nil, false},
		{"half a length", []byte{0, 0}, false},
		{"a length promising more", []byte{0, 0, 0, 100, 0, 3, 0, 0}, false},
		{"an SSLRequest, then nothing", ssl, false},
		{"a byte every 50ms", startupPacket(3<<16, "user", "postgres", "database", b.db.Name), true},
		{"a password request never answered", md5Startup, false},
	} {
		bad.add(1)
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		start := time.Now()
		if c.trickle {
			go func() {
				for _, x := range c.send {
					if _, err := conn.Write([]byte{x}); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
		} else if c.send != nil {
			_, err = conn.Write(c.send)
			require.NoError(t, err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadAll(conn)
		elapsed := time.Since(start)
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "%s: not disconnected", c.name)
		require.GreaterOrEqual(t, elapsed, timeout-50*time.Millisecond, "%s: disconnected before the timeout", c.name)
		require.Less(t, elapsed, timeout+2*time.Second, "%s: disconnected long after the timeout", c.name)
		conn.Close()
	}
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'never_answers'").Scan(&n))
		return n == 0
	}, 10*time.Second, 20*time.Millisecond, "the upstream connection of an abandoned authentication is still open")
}

// heapInUse is the process's live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestSlowReaderBoundedMemory: a client that selects 200 MB and reads
// nothing costs the proxy a few buffers, not the result: the upstream is
// held back by TCP backpressure. Meanwhile other clients are served, and
// when the client reads, all 200 MB arrive.
//
// Not parallel: it measures the heap of the whole test process, which
// parallel tests would disturb.
func TestSlowReaderBoundedMemory(t *testing.T) {
	b := setupFetchq(t)
	bad := countBadInputs(t)
	hc := rawConn(t, b.proxyDSN("", ""))
	before := heapInUse()
	bad.add(1)
	const rows, rowSize = 200, 1 << 20
	hc.Frontend.Send(&pgproto3.Query{String: fmt.Sprintf("SELECT repeat('x', %d) FROM generate_series(1, %d)", rowSize, rows)})
	require.NoError(t, hc.Frontend.Flush())
	time.Sleep(2 * time.Second) // the kernel buffers fill up, then everything stalls

	other := connect(t, b.proxyDSN("", ""))
	res, err := other.Exec(ctxT(t, 10*time.Second), "SELECT 1").ReadAll()
	require.NoError(t, err)
	require.Equal(t, "1", string(res[0].Rows[0][0]))
	during := heapInUse()
	growth := int64(during) - int64(before)
	t.Logf("proxy heap growth while the client reads nothing of 200 MB: %d KB", growth>>10)
	require.Less(t, growth, int64(4<<20), "the proxy buffers the result of a client that does not read")

	_ = hc.Conn.SetReadDeadline(time.Now().Add(time.Minute))
	var n, total int
	for {
		msg, err := hc.Frontend.Receive()
		require.NoError(t, err)
		if d, ok := msg.(*pgproto3.DataRow); ok {
			n++
			total += len(d.Values[0])
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	require.Equal(t, rows, n)
	require.Equal(t, rows*rowSize, total)
}

// TestOversizedClaimBoundedMemory: a client whose message header claims
// hundreds of megabytes, then sends almost nothing, must not make the
// proxy allocate what it claims: memory follows the bytes received, as
// the README promises ("memory per session stays bounded").
//
// Not parallel: it measures the heap of the whole test process.
func TestOversizedClaimBoundedMemory(t *testing.T) {
	b := setupFetchq(t)
	fetchqConn(t, b, "oq")
	bad := countBadInputs(t)
	const claim = 256 << 20
	var hcs []*pgconn.HijackedConn
	for range 4 {
		hcs = append(hcs, rawConn(t, b.proxyDSN("", "")))
	}
	before := heapInUse()
	for i, typ := range []byte{'Q', 'P', 'B', 'D'} {
		bad.add(1)
		_, err := hcs[i].Conn.Write(append(header(typ, claim+4), "SELECT * FROM fetchq"...))
		require.NoError(t, err)
	}
	time.Sleep(500 * time.Millisecond)
	growth := int64(heapInUse()) - int64(before)
	t.Logf("proxy heap growth after 4 headers claiming 256 MB each: %d MB", growth>>20)
	require.Less(t, growth, int64(16<<20), "the proxy allocates what a message header claims before receiving it")
}

// TestOversizedSyncRefused: Postgres refuses a Sync longer than its
// PQ_SMALL_MESSAGE_LIMIT (10,000 bytes) at once, with FATAL 08P01,
// without waiting for (or buffering) the body. The proxy must too.
func TestOversizedSyncRefused(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	fetchqConn(t, b, "oq")
	canary(t, b)
	bad := countBadInputs(t)
	for _, typ := range []byte{'S'} {
		bad.add(1)
		// Postgres closes the connection at once (logging the error as
		// COMMERROR, without sending it).
		hc := rawConn(t, b.directDSN("", ""))
		_, err := hc.Conn.Write(header(typ, 100000+4))
		require.NoError(t, err)
		_ = hc.Conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		for err == nil {
			_, err = hc.Frontend.Receive()
		}
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "Postgres waited for the body of an oversized %q", typ)

		// The proxy must not wait for 100,000 bytes of a Sync either.
		hc = rawConn(t, b.proxyDSN("", ""))
		_, err = hc.Conn.Write(header(typ, 100000+4))
		require.NoError(t, err)
		_ = hc.Conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		msg, err := hc.Frontend.Receive()
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "the proxy waits for the body of a %q claiming 100,000 bytes", typ)
		if err == nil {
			er, ok := msg.(*pgproto3.ErrorResponse)
			require.True(t, ok, "got %T", msg)
			require.Equal(t, "FATAL", er.Severity)
			require.Equal(t, "08P01", er.Code)
		}
	}
}

// TestConnectionBurstBoundedByMaxClients: with MaxClients set, a burst of
// hundreds of connection attempts (full startups and bare TCP connects)
// gets FATAL 53300 past the cap, opens no upstream connection for the
// refused ones, and leaves the admitted sessions working; a freed slot is
// usable at once.
func TestConnectionBurstBoundedByMaxClients(t *testing.T) {
	t.Parallel()
	const max = 8
	b := setup(t, func(c *proxy.Config, _ *pgtest.DB) { c.MaxClients = max })
	bad := countBadInputs(t)
	pool := b.db.Pool(t)
	ctx := ctxT(t, 2*time.Minute)
	held := make([]*pgconn.PgConn, max)
	for i := range held {
		held[i] = connect(t, b.proxyDSN("", ""))
	}
	backends := func() int {
		var n int
		require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()", b.db.Name).Scan(&n))
		return n
	}
	base := backends()

	const burst, bare = 300, 200
	bad.add(burst + bare)
	var refused, admitted, other atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	addr := net.JoinHostPort(b.host, itoa(b.port))
	for range bare {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
			}
		}()
	}
	for range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err := pgconn.Connect(cctx, b.proxyDSN("", ""))
			var pgErr *pgconn.PgError
			switch {
			case err == nil:
				admitted.Add(1)
				c.Close(context.Background())
			case errors.As(err, &pgErr) && pgErr.Code == "53300" && pgErr.Severity == "FATAL":
				refused.Add(1)
			default:
				other.Add(1)
				t.Logf("unexpected connect error: %v", err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d startups + %d bare connects in %v (%.0f attempts/s): %d refused, %d admitted, %d other",
		burst, bare, elapsed, float64(burst+bare)/elapsed.Seconds(), refused.Load(), admitted.Load(), other.Load())
	require.Zero(t, admitted.Load(), "admitted past MaxClients")
	require.Zero(t, other.Load())
	require.Equal(t, int64(burst), refused.Load())

	require.Eventually(t, func() bool { return backends() == base }, 10*time.Second, 20*time.Millisecond,
		"upstream connections opened for refused clients")
	for _, c := range held {
		_, err := c.Exec(ctx, "SELECT 1").ReadAll()
		require.NoError(t, err)
	}
	require.NoError(t, held[0].Close(ctx))
	require.Eventually(t, func() bool {
		c, err := pgconn.Connect(ctx, b.proxyDSN("", ""))
		if err != nil {
			return false
		}
		c.Close(context.Background())
		return true
	}, 5*time.Second, 20*time.Millisecond)
}

// TestConnectionFlood: 10,000 connection attempts as fast as 64 clients
// can make them (full startups and bare TCP connects) against a proxy at
// its --max-clients cap: every startup gets FATAL 53300, no upstream
// connection is opened for them, the proxy's memory stays bounded, and the
// sessions already admitted keep working throughout.
//
// Not parallel: it measures the heap of the whole test process, which
// parallel tests would disturb (the likeliest cause of its one failure in
// a full run, whose message was not kept).
func TestConnectionFlood(t *testing.T) {
	const max, attempts, clients = 4, 10000, 64
	b := setup(t, func(c *proxy.Config, _ *pgtest.DB) { c.MaxClients = max })
	bad := countBadInputs(t)
	bad.add(attempts)
	ctx := ctxT(t, 3*time.Minute)
	held := make([]*pgconn.PgConn, max)
	for i := range held {
		held[i] = connect(t, b.proxyDSN("", ""))
	}
	addr := net.JoinHostPort(b.host, itoa(b.port))
	heap0 := heapInUse()

	var next, refused, other atomic.Int64
	var wg sync.WaitGroup
	stop, stopped := make(chan struct{}), make(chan struct{})
	var served atomic.Int64
	go func() { // the admitted sessions keep working during the flood
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, c := range held[1:] {
				if _, err := c.Exec(ctx, "SELECT 1").ReadAll(); err == nil {
					served.Add(1)
				}
			}
		}
	}()
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > attempts {
					return
				}
				if i%3 == 0 {
					if c, err := net.Dial("tcp", addr); err == nil {
						c.Close()
					}
					continue
				}
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				c, err := pgconn.Connect(cctx, b.proxyDSN("", ""))
				cancel()
				var pgErr *pgconn.PgError
				switch {
				case err == nil:
					other.Add(1)
					c.Close(context.Background())
				case errors.As(err, &pgErr) && pgErr.Code == "53300":
					refused.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	<-stopped // it no longer uses the held connections (else "conn busy")
	growth := int64(heapInUse()) - int64(heap0)
	t.Logf("%d attempts in %v (%.0f attempts/s): %d refused with 53300, %d other; admitted sessions served %d queries meanwhile; proxy heap growth %d KB",
		attempts, elapsed.Round(time.Millisecond), attempts/elapsed.Seconds(), refused.Load(), other.Load(), served.Load(), growth>>10)
	require.Zero(t, other.Load(), "a startup past the cap was not refused with 53300")
	require.Equal(t, int64(attempts-attempts/3), refused.Load())
	require.Positive(t, served.Load(), "admitted sessions were not served during the flood")
	require.Less(t, growth, int64(64<<20), "memory grew with the flood")
	for _, c := range held {
		_, err := c.Exec(ctx, "SELECT 1").ReadAll()
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		var n int
		err := b.db.Pool(t).QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()", b.db.Name).Scan(&n)
		return err == nil && n == max
	}, 10*time.Second, 20*time.Millisecond, "upstream connections opened for refused clients")
}

// Roles without privileges, cluster-wide: created once per server.
const (
	noPrivRole    = "fq_hostile_none"  // LOGIN, no grant at all
	usageOnlyRole = "fq_hostile_usage" // LOGIN, USAGE on the fetchq schemas, no table privilege
)

func createRoles(t *testing.T, b *testBundle) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	pool := b.db.Pool(t)
	for _, r := range []string{noPrivRole, usageOnlyRole} {
		_, err := pool.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s LOGIN; END IF;
		EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$`, r, r))
		require.NoError(t, err)
	}
	_, err := pool.Exec(ctx, "GRANT USAGE ON SCHEMA fetchq, fetchq_data TO "+usageOnlyRole)
	require.NoError(t, err)
}

// privilegeCalls cover every family of the API on queue pq (which holds
// documents p1 pending and a1 active).
var privilegeCalls = []string{
	"SELECT * FROM fetchq.init()",
	"SELECT * FROM fetchq.queue_create('pq2')",
	"SELECT * FROM fetchq.queue_create('pq')",
	"SELECT * FROM fetchq.queue_drop('pq')",
	"SELECT * FROM fetchq.queue_get_id('pq')",
	"SELECT * FROM fetchq.queue_status()",
	"SELECT * FROM fetchq.queue_status('pq')",
	"SELECT * FROM fetchq.queue_top('pq', 0, 10, 0)",
	"SELECT * FROM fetchq.queue_truncate('pq')",
	"SELECT * FROM fetchq.queue_truncate_all()",
	"SELECT * FROM fetchq.queue_set_max_attempts('pq', 3)",
	"SELECT * FROM fetchq.queue_set_current_version('pq', 1)",
	"SELECT * FROM fetchq.queue_set_logs_retention('pq', '1h')",
	"SELECT * FROM fetchq.queue_drop_logs('pq')",
	"SELECT * FROM fetchq.queue_enable_notify('pq')",
	"SELECT * FROM fetchq.queue_disable_notify('pq')",
	"SELECT * FROM fetchq.queue_create_indexes('pq')",
	"SELECT * FROM fetchq.queue_drop_indexes('pq')",
	"SELECT * FROM fetchq.doc_push('pq', 'n1')",
	"SELECT * FROM fetchq.doc_push('pq', 'n1', '{}')",
	"SELECT * FROM fetchq.doc_push('pq', 'n1', 0, 0, NOW(), '{}')",
	"SELECT * FROM fetchq.doc_push('pq', 0, NOW(), '(''n2'', 0, ''{}'', {DATA})')",
	"SELECT * FROM fetchq.doc_append('pq', '{}')",
	"SELECT * FROM fetchq.doc_upsert('pq', 'p1', 0, 0, NOW(), '{}')",
	"SELECT * FROM fetchq.doc_pick('pq')",
	"SELECT * FROM fetchq.doc_pick('pq', 0, 1, '5m')",
	"SELECT * FROM fetchq.doc_reschedule('pq', 'a1', NOW())",
	"SELECT * FROM fetchq.doc_reject('pq', 'a1', 'm', '{}')",
	"SELECT * FROM fetchq.doc_complete('pq', 'a1')",
	"SELECT * FROM fetchq.doc_complete('pq', 'a1', '{}')",
	"SELECT * FROM fetchq.doc_kill('pq', 'a1')",
	"SELECT * FROM fetchq.doc_drop('pq', 'a1')",
	"SELECT * FROM fetchq.log_error('pq', 'a1', 'm', '{}')",
	"SELECT * FROM fetchq.trace('p1')",
	"SELECT * FROM fetchq.metric_get('pq', 'cnt')",
	"SELECT * FROM fetchq.metric_get('pq')",
	"SELECT * FROM fetchq.metric_get_common('pq')",
	"SELECT * FROM fetchq.metric_get_all()",
	"SELECT * FROM fetchq.metric_compute('pq')",
	"SELECT * FROM fetchq.metric_compute_all()",
	"SELECT * FROM fetchq.metric_reset('pq')",
	"SELECT * FROM fetchq.metric_set('pq', 'cnt', 5)",
	"SELECT * FROM fetchq.metric_increment('pq', 'cnt', 5)",
	"SELECT * FROM fetchq.metric_log_increment('pq', 'cnt', 5)",
	"SELECT * FROM fetchq.metric_log_pack()",
	"SELECT * FROM fetchq.metric_snap('pq')",
	"SELECT * FROM fetchq.mnt_make_pending('pq', 10)",
	"SELECT * FROM fetchq.mnt_reschedule_orphans('pq', 10)",
	"SELECT * FROM fetchq.mnt_mark_dead('pq', 10)",
	"SELECT * FROM fetchq.mnt_run('pq', 10)",
	"SELECT * FROM fetchq.mnt_run_all(10)",
	"SELECT * FROM fetchq.mnt_job_pick('5m', 1)",
	"SELECT * FROM fetchq.mnt_job_reschedule(1, '1m')",
	"SELECT * FROM fetchq.mnt_job_run()",
	"SELECT * FROM fetchq.mnt()",
}

// setupPrivileges is a Fetchq proxy with queue pq and the two roles.
func setupPrivileges(t *testing.T) (*hostileFixture, func(role string) *pgconn.PgConn) {
	t.Helper()
	b := setupFetchq(t)
	conn := fetchqConn(t, b, "pq")
	ctx := ctxT(t, time.Minute)
	for _, sql := range []string{
		"SELECT * FROM fetchq.doc_push('pq', 'a1', 0, 0, NOW() - INTERVAL '1 minute', '{}')",
		"SELECT * FROM fetchq.doc_pick('pq', 0, 1, '1h')",
		"SELECT * FROM fetchq.doc_push('pq', 'p1')",
		"SELECT * FROM fetchq.log_error('pq', 'a1', 'seed', '{}')",
	} {
		_, err := conn.PgConn().Exec(ctx, sql).ReadAll()
		require.NoError(t, err, sql)
	}
	createRoles(t, b)
	f := &hostileFixture{b: b, conn: conn, admin: b.db.Pool(t)}
	return f, func(role string) *pgconn.PgConn { return connect(t, b.proxyDSN(role, "")) }
}

// snapshotPQ describes queue pq's state.
func snapshotPQ(t *testing.T, f *hostileFixture) string {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	var s string
	require.NoError(t, f.admin.QueryRow(ctx, `SELECT
		(SELECT string_agg(subject || ':' || status || ':' || attempts || ':' || next_iteration, ',' ORDER BY subject) FROM fetchq_data.pq__docs) || '/' ||
		(SELECT count(*) FROM fetchq_data.pq__logs) || '/' ||
		(SELECT string_agg(id || ':' || name || ':' || max_attempts || ':' || current_version, ',' ORDER BY id) FROM fetchq.queues) || '/' ||
		(SELECT string_agg(id || ':' || next_iteration || ':' || attempts, ',' ORDER BY id) FROM fetchq.jobs) || '/' ||
		(SELECT count(*) FROM fetchq.metrics) || '/' || (SELECT count(*) FROM fetchq.metrics_writes) || '/' ||
		(SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal) || '/' ||
		(SELECT count(*) FROM pg_indexes WHERE schemaname = 'fetchq_data') || '/' ||
		(SELECT count(*) FROM pg_tables WHERE schemaname = 'fetchq_data')`).Scan(&s))
	return s
}

// TestNoPrivilegeRole: a role without privileges on the Fetchq schemas or
// tables gets 42501 from every queue function, in the simple and extended
// protocols, inside and outside a transaction block; the error carries no
// internal SQL; nothing changes.
func TestNoPrivilegeRole(t *testing.T) {
	t.Parallel()
	f, as := setupPrivileges(t)
	canary(t, f.b)
	bad := countBadInputs(t)
	ctx := ctxT(t, 3*time.Minute)
	before := snapshotPQ(t, f)
	dev, positions := deviations{}, deviations{}
	defer func() {
		dev.report(t)
		for k, v := range positions {
			// TestInternalErrorPositions fails on these.
			t.Logf("%s\n\tfor inputs: %q", k, v)
		}
	}()
	for _, role := range []string{noPrivRole, usageOnlyRole} {
		pg := as(role)
		for _, m := range []qmode{simpleLiteral, extendedLiteral} {
			for _, inTx := range []bool{false, true} {
				for _, sql := range privilegeCalls {
					bad.add(1)
					input := fmt.Sprintf("%s %s tx=%v", role, m, inTx)
					label := input + " " + sql
					if inTx {
						_, err := pg.Exec(ctx, "BEGIN").ReadAll()
						require.NoError(t, err)
					}
					got, _, err := runIn(ctx, pg, m, sql)
					pgErr, problem := errorProblem(err, sql)
					switch {
					case err == nil && role == usageOnlyRole && strings.Contains(sql, "queue_disable_notify"):
						// DROP TRIGGER IF EXISTS of a trigger that does not
						// exist checks no privilege on the table: the
						// extension returns true too.
					case err == nil:
						dev.add(fmt.Sprintf("%s: answered %q", sql, got), input)
					case pgErr == nil || pgErr.Code != "42501":
						dev.add(fmt.Sprintf("%s: want 42501, got %v", sql, err), input)
					case strings.Contains(problem, "position"):
						positions.add(fmt.Sprintf("%s: %s", sql, problem), input)
					case problem != "":
						dev.add(fmt.Sprintf("%s: %s", sql, problem), input)
					}
					if inTx {
						if err != nil {
							require.Equal(t, byte('E'), pg.TxStatus(), label)
						}
						_, err := pg.Exec(ctx, "ROLLBACK").ReadAll()
						require.NoError(t, err)
					}
					require.Equal(t, byte('I'), pg.TxStatus(), label)
				}
			}
		}
		requireUsable(t, ctx, pg)
	}
	require.Equal(t, before, snapshotPQ(t, f))
}

// TestNoPrivilegeShortcuts: calls the proxy can answer without reading a
// table (info(), an invalid queue name, a NULL queue, the upgrade
// functions) must still refuse a role that may not use schema fetchq:
// Postgres checks USAGE on the schema before it runs any of the
// extension's functions (42501 "permission denied for schema fetchq").
func TestNoPrivilegeShortcuts(t *testing.T) {
	t.Parallel()
	_, as := setupPrivileges(t)
	bad := countBadInputs(t)
	ctx := ctxT(t, time.Minute)
	pg := as(noPrivRole)
	dev := deviations{}
	defer dev.report(t)
	for _, m := range []qmode{simpleLiteral, extendedLiteral} {
		for _, sql := range []string{
			"SELECT * FROM fetchq.info()",
			"SELECT * FROM fetchq.upgrade__310__320()",
			"SELECT * FROM fetchq.doc_push('a-b', 'x')",
			"SELECT * FROM fetchq.doc_push(NULL, 'x')",
			"SELECT * FROM fetchq.doc_pick('a-b')",
			"SELECT * FROM fetchq.queue_create('1abc')",
			"SELECT * FROM fetchq.doc_complete(NULL, 'x')",
		} {
			bad.add(1)
			got, _, err := runIn(ctx, pg, m, sql)
			if err == nil {
				dev.add(fmt.Sprintf("%s: answered %q to a role without USAGE on schema fetchq", sql, got), m.String())
				continue
			}
			pgErr := requireCleanError(t, err, sql, m, sql)
			require.Equal(t, "42501", pgErr.Code, "%s %s", m, sql)
		}
	}
}

// TestInternalErrorPositions: an error Postgres raises for one of the
// statements the proxy runs for a call (a missing queue table, a missing
// privilege) must not carry that statement's error position: the client
// reads it as a position in its own text (psql draws a caret under it),
// and it points past the end or at the wrong token.
func TestInternalErrorPositions(t *testing.T) {
	t.Parallel()
	f, as := setupPrivileges(t)
	bad := countBadInputs(t)
	ctx := ctxT(t, time.Minute)
	dev := deviations{}
	defer dev.report(t)
	for _, c := range []struct {
		role string
		sql  string
	}{
		{"", "SELECT * FROM fetchq.queue_top('nq', 0, 10, 0)"},
		{"", "SELECT * FROM fetchq.doc_reschedule('nq', 'a1', NOW())"},
		{"", "SELECT * FROM fetchq.doc_drop('nq', 'a1')"},
		{"", "SELECT * FROM fetchq.metric_compute('nq')"},
		{"", "SELECT * FROM fetchq.mnt_make_pending('nq', 1)"},
		{"", "SELECT * FROM fetchq.queue_enable_notify('nq')"},
		{noPrivRole, "SELECT * FROM fetchq.queue_create('pq2')"},
		{noPrivRole, "SELECT * FROM fetchq.doc_pick('pq')"},
		{noPrivRole, "SELECT * FROM fetchq.metric_get('pq', 'cnt')"},
	} {
		pg := f.conn.PgConn()
		if c.role != "" {
			pg = as(c.role)
		}
		for _, m := range []qmode{simpleLiteral, extendedLiteral} {
			bad.add(1)
			_, _, err := runIn(ctx, pg, m, c.sql)
			require.Error(t, err, c.sql)
			if _, problem := errorProblem(err, c.sql); problem != "" {
				dev.add(c.sql+": "+problem, m.String())
			}
			requireUsable(t, ctx, pg)
		}
	}
}

// TestErrorsNeverEchoSecrets: errors provoked at connection time carry no
// password, DSN or upstream address: an unreachable upstream whose DSN
// holds a password, and wrong passwords.
func TestErrorsNeverEchoSecrets(t *testing.T) {
	t.Parallel()
	bad := countBadInputs(t)
	up, err := pgconn.ParseConfig("host=127.0.0.1 port=1 user=secret_user password=S3cr3t_pw dbname=secret_db connect_timeout=2 application_name=secret_app")
	require.NoError(t, err)
	srv := proxy.NewServer(proxy.Config{Upstream: up, StartupTimeout: 5 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		require.ErrorIs(t, <-served, proxy.ErrServerClosed)
	})
	port := ln.Addr().(*net.TCPAddr).Port
	bad.add(1)
	_, err = pgconn.Connect(ctxT(t, 30*time.Second), fmt.Sprintf("host=127.0.0.1 port=%d user=someone dbname=db sslmode=disable", port))
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "08006", pgErr.Code)
	require.Equal(t, "FATAL", pgErr.Severity)
	for _, secret := range []string{"S3cr3t_pw", "secret_user", "secret_db", "secret_app", "127.0.0.1:1", "port=1", "connect_timeout"} {
		for _, field := range []string{pgErr.Message, pgErr.Detail, pgErr.Hint, pgErr.Where} {
			require.NotContains(t, field, secret)
		}
	}

	b := setup(t)
	for _, c := range []struct{ user, pw string }{
		{md5User, "W r0ng'pw\\md5"}, {scramUser, "W r0ng'pw\\scram"}, {md5User, ""}, {md5User, strings.Repeat("p", 5000)},
	} {
		bad.add(1)
		cfg, err := pgconn.ParseConfig(b.proxyDSN(c.user, ""))
		require.NoError(t, err)
		cfg.Password = c.pw
		_, err = pgconn.ConnectConfig(ctxT(t, 30*time.Second), cfg)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, c.user)
		require.Contains(t, []string{"28P01", "08P01"}, pgErr.Code, pgErr.Message)
		for _, field := range []string{pgErr.Message, pgErr.Detail, pgErr.Hint, pgErr.Where} {
			if c.pw != "" {
				require.NotContains(t, field, c.pw)
				require.NotContains(t, field, "r0ng")
			}
			require.NotContains(t, field, "host=")
		}
	}
}

// encodeFE encodes a frontend message.
func encodeFE(m pgproto3.FrontendMessage) []byte {
	b, err := m.Encode(nil)
	if err != nil {
		panic(err)
	}
	return b
}

// serveBounded serves srv on ln until the test ends. Its cleanup gives
// Close 10 seconds: Close must end every session, even a stuck one, and
// a test that exposes a stuck session must not hang the package.
func serveBounded(tb testing.TB, srv *proxy.Server, ln net.Listener) {
	tb.Helper()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	tb.Cleanup(func() {
		closed := make(chan struct{})
		go func() {
			srv.Close()
			close(closed)
		}()
		select {
		case <-closed:
			require.ErrorIs(tb, <-served, proxy.ErrServerClosed)
		case <-time.After(10 * time.Second):
			tb.Errorf("Server.Close did not return within 10s: a session goroutine is stuck and Close waits for it forever")
		}
	})
}

// TestPipelinedQueryBeforeCall: a client may send several messages before
// reading any answer (the protocol allows it; libpq's pipeline mode and
// many drivers do). When an ordinary statement precedes a Fetchq call in
// the same write, both must be answered; and Close must end the session
// in bounded time whatever state it is in.
func TestPipelinedQueryBeforeCall(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	up, err := pgconn.ParseConfig(pgtest.AdminConnString())
	require.NoError(t, err)
	srv := proxy.NewServer(proxy.Config{Upstream: up, Logger: testLogger(t), Rewriter: rewriter, Queue: backend.New(backend.Config{})})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serveBounded(t, srv, ln)
	b := &testBundle{db: db, srv: srv, host: "127.0.0.1", port: ln.Addr().(*net.TCPAddr).Port}
	bad := countBadInputs(t)
	q := func(s string) []byte { return encodeFE(&pgproto3.Query{String: s}) }
	for _, c := range []struct {
		name  string
		out   []byte
		want  string
		ready int
	}{
		{"Query, then a call", append(q("SELECT 1"), q("SELECT * FROM fetchq.info()")...), "TDCZTDCZ", 2},
		{"LISTEN, then a call", append(q("LISTEN x"), q("SELECT * FROM fetchq.info()")...), "CZTDCZ", 2},
		{"extended statement, then a call",
			append(encodeFE(&pgproto3.Parse{Query: "SELECT 1"}), append(encodeFE(&pgproto3.Bind{}),
				append(encodeFE(&pgproto3.Execute{}), append(encodeFE(&pgproto3.Sync{}), q("SELECT * FROM fetchq.info()")...)...)...)...),
			"12DCZTDCZ", 2},
		{"call, Query, call", append(q("SELECT * FROM fetchq.info()"), append(q("SELECT 2"), q("SELECT * FROM fetchq.info()")...)...), "TDCZTDCZTDCZ", 3},
	} {
		bad.add(1)
		hc := rawConn(t, b.proxyDSN("", ""))
		_, err := hc.Conn.Write(c.out)
		require.NoError(t, err)
		x := receiveWithin(t, hc.Conn, hc.Frontend, c.ready, 5*time.Second)
		require.False(t, x.closed, c.name)
		require.Equal(t, c.want, x.types, c.name)
	}
}

// TestParameterCannotForgeErrorFields: a NUL inside a text parameter ends
// a field of any ErrorResponse that quotes the value, and what follows is
// read by the client as more fields: a queue name can then set the
// error's SQLSTATE. Postgres refuses such text (22021) before a function
// runs, so the value is never quoted.
func TestParameterCannotForgeErrorFields(t *testing.T) {
	t.Parallel()
	f := setupHostile(t)
	bad := countBadInputs(t)
	pg := f.conn.PgConn()
	ctx := ctxT(t, time.Minute)
	for _, name := range []string{"q\x00C00000\x00", "q\x00SNOTICE\x00C01000\x00Mall is well\x00"} {
		bad.add(1)
		_, _, err := runIn(ctx, pg, extendedParam, "SELECT * FROM fetchq.queue_top($1, 0, 1, 0)", name)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "22021", pgErr.Code, "the client read: severity %q, code %q, message %q", pgErr.Severity, pgErr.Code, pgErr.Message)
		requireUsable(t, ctx, pg)
	}
}

// TestQueryAfterFailedExtendedMessage: after an error in an extended-
// protocol message, Postgres ignores every message up to Sync, Query
// messages included, then answers ReadyForQuery. A Fetchq call sent as a
// Query in that window must be ignored too (not run, not answered), and
// must not wait for answers Postgres will never send: the session goes on
// at Sync. Found by FuzzClientMessages
// (testdata/fuzz/FuzzClientMessages/crash_query_ignored_after_bind_error).
func TestQueryAfterFailedExtendedMessage(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	up, err := pgconn.ParseConfig(pgtest.AdminConnString())
	require.NoError(t, err)
	srv := proxy.NewServer(proxy.Config{Upstream: up, Logger: testLogger(t), Rewriter: rewriter, Queue: backend.New(backend.Config{})})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serveBounded(t, srv, ln)
	b := &testBundle{db: db, srv: srv, host: "127.0.0.1", port: ln.Addr().(*net.TCPAddr).Port}
	fetchqConn(t, b, "fq")
	createStubs(t, b)
	bad := countBadInputs(t)
	const call = "SELECT * FROM fetchq.doc_push('fq', 'must-not-run')"
	dev := deviations{}
	defer dev.report(t)
	for _, c := range []struct {
		name string
		msgs []pgproto3.FrontendMessage
	}{
		{"Parse error, call", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "SELEC"}, &pgproto3.Query{String: call}, &pgproto3.Sync{}}},
		{"Parse error, Query, call", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "SELEC"}, &pgproto3.Query{String: "SELECT 1"}, &pgproto3.Query{String: call}, &pgproto3.Sync{}}},
		{"Bind of a missing statement, call", []pgproto3.FrontendMessage{
			&pgproto3.Bind{PreparedStatement: "nope"}, &pgproto3.Execute{}, &pgproto3.Query{String: call}, &pgproto3.Sync{}}},
		// The fuzzer's input, reduced: the first call needs no statement
		// upstream, the Query after it is ignored by Postgres, and the
		// second call waits for that Query's answer.
		{"Parse error, info(), Query, info()", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "SELEC"}, &pgproto3.Query{String: "SELECT * FROM fetchq.info()"}, &pgproto3.Query{String: "SELECT 1"},
			&pgproto3.Query{String: "SELECT * FROM fetchq.info()"}, &pgproto3.Sync{}}},
	} {
		bad.add(1)
		var got [2]exchange
		for i, dsn := range []string{b.directDSN("", ""), b.proxyDSN("", "")} {
			hc := rawConn(t, dsn)
			for _, m := range c.msgs {
				hc.Frontend.Send(m)
			}
			// Then a query of its own: the session goes on.
			hc.Frontend.Send(&pgproto3.Query{String: "SELECT 1"})
			require.NoError(t, hc.Frontend.Flush())
			got[i], _ = readExchange(hc.Conn, hc.Frontend, 2, 5*time.Second) // a stall counts as closed
		}
		require.Equal(t, "EZTDCZ", got[0].types, c.name)
		if got[0].types != got[1].types || got[1].closed {
			dev.add(fmt.Sprintf("Postgres %q %v; proxy %q %v (closed or stalled: %v)", got[0].types, errsText(got[0].errs), got[1].types, errsText(got[1].errs), got[1].closed), c.name)
		}
		var n int
		require.NoError(t, b.db.Pool(t).QueryRow(ctxT(t, time.Minute), "SELECT count(*) FROM fetchq_data.fq__docs").Scan(&n))
		if n != 0 {
			dev.add("a call Postgres would have ignored ran", c.name)
			_, err := b.db.Pool(t).Exec(ctxT(t, time.Minute), "DELETE FROM fetchq_data.fq__docs")
			require.NoError(t, err)
		}
	}
}
