package proxy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/fetchq/fetchq-proxy/internal/pgtest"
	"github.com/fetchq/fetchq-proxy/proxy"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// fetchqConn connects to a Fetchq proxy with an initialised catalog and
// the given queues.
func fetchqConn(t *testing.T, b *testBundle, queues ...string) *pgx.Conn {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	conn, err := pgx.Connect(ctx, b.proxyDSN("", ""))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	_, err = conn.Exec(ctx, "SELECT * FROM fetchq.init()")
	require.NoError(t, err)
	for _, q := range queues {
		var created bool
		require.NoError(t, conn.QueryRow(ctx, "SELECT was_created FROM fetchq.queue_create($1)", q).Scan(&created))
		require.True(t, created)
	}
	return conn
}

// TestConcurrentPickersNeverShare: 32 workers pick one document at a time
// from 10,000 and complete it; every document is picked exactly once and
// completed once, on the clients' own connections and with group commit.
func TestConcurrentPickersNeverShare(t *testing.T) {
	t.Parallel()
	t.Run("own connection", func(t *testing.T) {
		t.Parallel()
		concurrentPickers(t, setupFetchq(t))
	})
	t.Run("group commit", func(t *testing.T) {
		t.Parallel()
		b, _, batcher := setupFull(t)
		concurrentPickers(t, b)
		calls, batches := batcher.Stats()
		t.Logf("group commit: %d picks and completes in %d statements", calls, batches)
		require.GreaterOrEqual(t, calls, int64(20000))
		require.Less(t, batches, calls, "concurrent picks were never coalesced")
	})
}

func concurrentPickers(t *testing.T, b *testBundle) {
	conn := fetchqConn(t, b, "work")
	ctx := ctxT(t, 5*time.Minute)
	const docs = 10000
	var sb strings.Builder
	for i := range docs {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "('d%05d', 0, '{}', {DATA})", i)
	}
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT * FROM fetchq.doc_push('work', 0, NOW() - INTERVAL '1 second', $1)", sb.String()).Scan(&n))
	require.Equal(t, docs, n)

	var mu sync.Mutex
	picked := make(map[string]int, docs)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx, b.proxyDSN("", ""))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(context.Background())
			mode := execModes[w%len(execModes)]
			for {
				rows, err := c.Query(ctx, "SELECT subject FROM fetchq.doc_pick('work', 0, 1, '5m')", mode)
				if err != nil {
					errs <- err
					return
				}
				subjects, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					errs <- err
					return
				}
				if len(subjects) == 0 {
					return
				}
				mu.Lock()
				for _, s := range subjects {
					picked[s]++
				}
				mu.Unlock()
				for _, s := range subjects {
					var affected int
					if err := c.QueryRow(ctx, "SELECT * FROM fetchq.doc_complete('work', $1, '{\"done\": true}')", mode, s).Scan(&affected); err != nil || affected != 1 {
						errs <- fmt.Errorf("completing %s: affected %d, %v", s, affected, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, picked, docs)
	for s, c := range picked {
		require.Equal(t, 1, c, "document %s picked %d times", s, c)
	}
	var completed int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM fetchq_data.work__docs WHERE status = 3 AND iterations = 1 AND payload = '{\"done\": true}'").Scan(&completed))
	require.Equal(t, docs, completed)
}

// TestTransactionsIncludeCalls: calls inside a client transaction commit or
// roll back with it.
func TestTransactionsIncludeCalls(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	conn := fetchqConn(t, b, "tx")
	ctx := ctxT(t, time.Minute)
	count := func() (n int) {
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM fetchq_data.tx__docs").Scan(&n))
		return n
	}
	for _, mode := range execModes {
		t.Run(mode.String(), func(t *testing.T) {
			// Rolled back: no trace.
			tx, err := conn.Begin(ctx)
			require.NoError(t, err)
			var q int
			require.NoError(t, tx.QueryRow(ctx, "SELECT * FROM fetchq.doc_push('tx', 'r1')", mode).Scan(&q))
			require.Equal(t, 1, q)
			var subject string
			require.NoError(t, tx.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('tx', 0, 1, '5m')", mode).Scan(&subject))
			require.Equal(t, "r1", subject)
			require.NoError(t, tx.Rollback(ctx))
			require.Equal(t, 0, count())

			// Committed with other writes.
			tx, err = conn.Begin(ctx)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS side (x int)")
			require.NoError(t, err)
			_, err = tx.Exec(ctx, "INSERT INTO side VALUES (1)")
			require.NoError(t, err)
			require.NoError(t, tx.QueryRow(ctx, "SELECT * FROM fetchq.doc_push('tx', 'c-"+mode.String()+"')", mode).Scan(&q))
			require.NoError(t, tx.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('tx', 0, 1, '5m')", mode).Scan(&subject))
			require.NoError(t, tx.Commit(ctx))
			var status int
			require.NoError(t, conn.QueryRow(ctx, "SELECT status FROM fetchq_data.tx__docs WHERE subject = $1", "c-"+mode.String()).Scan(&status))
			require.Equal(t, 2, status)
			_, err = conn.Exec(ctx, "DELETE FROM fetchq_data.tx__docs")
			require.NoError(t, err)
		})
	}
}

// TestErrorInTransactionAbortsIt: a failing call inside a transaction
// block fails the block, as any error does in Postgres.
func TestErrorInTransactionAbortsIt(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	conn := fetchqConn(t, b, "ab")
	ctx := ctxT(t, time.Minute)
	pg := conn.PgConn()
	_, err := pg.Exec(ctx, "BEGIN").ReadAll()
	require.NoError(t, err)
	_, err = pg.Exec(ctx, "SELECT * FROM fetchq.doc_push('ab', '"+strings.Repeat("x", 51)+"')").ReadAll()
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "P0001", pgErr.Code)
	require.Equal(t, "The subject exceeds 50 characters limit", pgErr.Message)
	require.Equal(t, byte('E'), pg.TxStatus())
	_, err = pg.Exec(ctx, "SELECT 1").ReadAll()
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "25P02", pgErr.Code)
	_, err = pg.Exec(ctx, "ROLLBACK").ReadAll()
	require.NoError(t, err)
	require.Equal(t, byte('I'), pg.TxStatus())
}

// TestMultiStatementWithCalls: a Query text mixing calls and ordinary
// statements runs them in order, in one implicit transaction.
func TestMultiStatementWithCalls(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	conn := fetchqConn(t, b, "ms")
	ctx := ctxT(t, time.Minute)
	pg := conn.PgConn()
	res, err := pg.Exec(ctx, "CREATE TABLE log (x int); SELECT * FROM fetchq.doc_push('ms', 'a'); INSERT INTO log VALUES (1); SELECT subject FROM fetchq.doc_pick('ms', 0, 1, '5m')").ReadAll()
	require.NoError(t, err)
	require.Len(t, res, 4)
	require.Equal(t, "CREATE TABLE", res[0].CommandTag.String())
	require.Equal(t, "queued_docs", string(res[1].FieldDescriptions[0].Name))
	require.Equal(t, [][][]byte{{[]byte("1")}}, res[1].Rows)
	require.Equal(t, "INSERT 0 1", res[2].CommandTag.String())
	require.Equal(t, [][][]byte{{[]byte("a")}}, res[3].Rows)
	require.Equal(t, "SELECT 1", res[3].CommandTag.String())
	require.Equal(t, byte('I'), pg.TxStatus())

	// A failure rolls back the whole text, the calls included.
	_, err = pg.Exec(ctx, "INSERT INTO log VALUES (2); SELECT * FROM fetchq.doc_push('ms', 'b'); SELECT 1/0").ReadAll()
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "22012", pgErr.Code)
	var logs, docs int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM log").Scan(&logs))
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM fetchq_data.ms__docs").Scan(&docs))
	require.Equal(t, 1, logs)
	require.Equal(t, 1, docs)
}

// TestUnsupportedShape: a call the proxy cannot honour is refused with
// 0A000 and a hint, and the session stays usable.
func TestUnsupportedShape(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	conn := fetchqConn(t, b, "un")
	ctx := ctxT(t, time.Minute)
	for _, mode := range execModes {
		_, err := conn.Exec(ctx, "WITH p AS (SELECT * FROM fetchq.doc_pick('un', 0, 1, '5m')) SELECT * FROM p", mode)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, mode.String())
		require.Equal(t, "0A000", pgErr.Code)
		require.NotEmpty(t, pgErr.Hint)
		var one int
		require.NoError(t, conn.QueryRow(ctx, "SELECT 1", mode).Scan(&one))
	}
}

// TestPsqlCalls: psql shows the extension's columns, and \gdesc describes
// an intercepted statement without running it.
func TestPsqlCalls(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	fetchqConn(t, b, "ps")
	dsn := b.proxyDSN("", "")
	out := mustPsql(t, dsn, "-c", "SELECT * FROM fetchq.doc_push('ps', 's1', 0, 0, NOW(), '{\"k\": \"v\"}')")
	require.Contains(t, out, "queued_docs")
	require.Contains(t, out, "(1 row)")

	script := filepath.Join(t.TempDir(), "gdesc.sql")
	require.NoError(t, os.WriteFile(script, []byte(`SELECT * FROM fetchq.doc_pick('ps', 0, 1, '5m') \gdesc`+"\n"), 0o644))
	out = mustPsql(t, dsn, "-f", script)
	for _, want := range []string{"subject", "character varying", "payload", "jsonb", "iterations", "bigint", "next_iteration", "timestamp with time zone"} {
		require.Contains(t, out, want)
	}
	// \gdesc executed nothing: the document is still pending.
	require.Contains(t, mustPsql(t, dsn, "-At", "-c", "SELECT status FROM fetchq_data.ps__docs"), "1")

	out = mustPsql(t, dsn, "-At", "-F", ",", "-c", "SELECT subject, payload, attempts FROM fetchq.doc_pick('ps', 0, 1, '5m')")
	require.Equal(t, "s1,{\"k\": \"v\"},1\n", out)
}

// countingCounters records applied effects.
type countingCounters struct {
	mu sync.Mutex
	n  map[string]int64
}

func (c *countingCounters) Apply(e backend.Effects) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range e {
		if x.Kind == backend.EffectAdd {
			c.n[x.Queue+"."+x.Metric] += x.Delta
		}
	}
}

func (c *countingCounters) get(k string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

// TestEffectsOnlyForCommittedWork: counter effects reach Counters for
// autocommit calls at once, for calls in a transaction only if it commits.
func TestEffectsOnlyForCommittedWork(t *testing.T) {
	t.Parallel()
	cc := &countingCounters{n: map[string]int64{}}
	b := setupFetchq(t, func(c *proxy.Config, _ *pgtest.DB) { c.Counters = cc })
	conn := fetchqConn(t, b, "ef")
	ctx := ctxT(t, time.Minute)
	pg := conn.PgConn()
	exec := func(sql string) {
		t.Helper()
		_, err := pg.Exec(ctx, sql).ReadAll()
		require.NoError(t, err)
	}
	exec("SELECT * FROM fetchq.doc_push('ef', 'a')")
	require.Equal(t, int64(1), cc.get("ef.ent"))

	exec("BEGIN")
	exec("SELECT * FROM fetchq.doc_push('ef', 'b')")
	require.Equal(t, int64(1), cc.get("ef.ent"), "not before commit")
	exec("ROLLBACK")
	require.Equal(t, int64(1), cc.get("ef.ent"))

	exec("BEGIN")
	exec("SELECT * FROM fetchq.doc_push('ef', 'c')")
	exec("COMMIT")
	require.Equal(t, int64(2), cc.get("ef.ent"))

	exec("BEGIN; SELECT * FROM fetchq.doc_push('ef', 'd'); COMMIT")
	require.Equal(t, int64(3), cc.get("ef.ent"))
	exec("SELECT * FROM fetchq.doc_push('ef', 'e'); SELECT * FROM fetchq.doc_push('ef', 'f')")
	require.Equal(t, int64(5), cc.get("ef.ent"))
	_, err := pg.Exec(ctx, "SELECT * FROM fetchq.doc_push('ef', 'g'); SELECT 1/0").ReadAll()
	require.Error(t, err)
	require.Equal(t, int64(5), cc.get("ef.ent"))

	// Extended protocol inside a transaction.
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "SELECT * FROM fetchq.doc_push('ef', 'h')")
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, int64(6), cc.get("ef.ent"))
	require.Equal(t, int64(6), cc.get("ef.cnt"))
}

// TestRecordColumnAllModes: a multi-column function called in the select
// list returns one record column, in text and binary format alike.
func TestRecordColumnAllModes(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	conn := fetchqConn(t, b)
	ctx := ctxT(t, time.Minute)
	for i, mode := range execModes {
		q := fmt.Sprintf("r%d", i)
		rows, err := conn.Query(ctx, "SELECT fetchq.queue_create('"+q+"')", mode)
		require.NoError(t, err, mode.String())
		vals, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
		require.NoError(t, err, mode.String())
		require.Len(t, vals, 1)
		require.Equal(t, "queue_create", string(rows.FieldDescriptions()[0].Name))
		require.Equal(t, uint32(2249), rows.FieldDescriptions()[0].DataTypeOID)
		switch v := vals[0][0].(type) {
		case string:
			require.Regexp(t, `^\(t,\d+\)$`, v, mode.String())
		case []any:
			require.Len(t, v, 2, mode.String())
			require.Equal(t, true, v[0], mode.String())
		default:
			t.Fatalf("%s: unexpected record value %T %v", mode, v, v)
		}
	}
}

// TestAbortedTransactionRefusesCalls: in a failed transaction block every
// call gets 25P02, even one that would not touch the database.
func TestAbortedTransactionRefusesCalls(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	conn := fetchqConn(t, b, "ab")
	ctx := ctxT(t, time.Minute)
	for _, mode := range execModes {
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "SELECT 1/0", mode)
		require.Error(t, err)
		for _, sql := range []string{"SELECT * FROM fetchq.info()", "SELECT * FROM fetchq.doc_push('ab', 'x')", "SELECT * FROM fetchq.doc_pick('ab')"} {
			_, err = tx.Exec(ctx, sql, mode)
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr, sql)
			require.Equal(t, "25P02", pgErr.Code, sql)
		}
		require.NoError(t, tx.Rollback(ctx))
	}
}

// TestGroupCommitKeepsPrivileges: a role without rights on a queue's
// tables gets 42501 whether or not group commit is on: batching never
// lends it the service pool's rights.
func TestGroupCommitKeepsPrivileges(t *testing.T) {
	t.Parallel()
	b, _, batcher := setupFull(t)
	conn := fetchqConn(t, b, "priv")
	ctx := ctxT(t, time.Minute)
	_, err := conn.Exec(ctx, "SELECT * FROM fetchq.doc_push('priv', 'p1')")
	require.NoError(t, err)
	role := "fq_norights_" + b.db.Name
	_, err = conn.Exec(ctx, "CREATE ROLE "+role+" LOGIN")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = b.db.Pool(t).Exec(context.Background(), "DROP OWNED BY "+role)
		_, _ = b.db.Pool(t).Exec(context.Background(), "DROP ROLE "+role)
	})
	_, err = conn.Exec(ctx, "GRANT USAGE ON SCHEMA fetchq, fetchq_data TO "+role)
	require.NoError(t, err)

	weak, err := pgx.Connect(ctx, b.proxyDSN(role, ""))
	require.NoError(t, err)
	defer weak.Close(context.Background())
	before, _ := batcher.Stats()
	for _, mode := range execModes {
		_, err := weak.Exec(ctx, "SELECT * FROM fetchq.doc_pick('priv', 0, 1, '5m')", mode)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, mode.String())
		require.Equal(t, "42501", pgErr.Code, mode.String())
	}
	after, _ := batcher.Stats()
	require.Equal(t, before, after, "a call of a role without rights went through the batcher")
	var status int
	require.NoError(t, conn.QueryRow(ctx, "SELECT status FROM fetchq_data.priv__docs WHERE subject = 'p1'").Scan(&status))
	require.Equal(t, 1, status, "the document must still be pending")

	// SELECT alone is not enough (has_table_privilege with a list of
	// privileges means any of them; each must be checked).
	_, err = conn.Exec(ctx, "GRANT SELECT ON fetchq_data.priv__docs TO "+role)
	require.NoError(t, err)
	_, err = weak.Exec(ctx, "SELECT 1") // a statement of its own: rights are checked again
	require.NoError(t, err)
	_, err = weak.Exec(ctx, "SELECT * FROM fetchq.doc_pick('priv', 0, 1, '5m')")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "42501", pgErr.Code)
	after, _ = batcher.Stats()
	require.Equal(t, before, after, "a call of a role with SELECT only went through the batcher")

	// Rights on the documents but not on the log (doc_reject writes it)
	// and fetchq.queues (it reads max_attempts): not batched either.
	_, err = conn.Exec(ctx, "GRANT INSERT, UPDATE ON fetchq_data.priv__docs TO "+role)
	require.NoError(t, err)
	_, err = weak.Exec(ctx, "SELECT 1") // a statement of its own: rights are checked again
	require.NoError(t, err)
	_, err = weak.Exec(ctx, "SELECT * FROM fetchq.doc_reject('priv', 'p1', 'm', '{}')")
	require.ErrorAs(t, err, &pgErr, "run with the role's own rights")
	require.Equal(t, "42501", pgErr.Code)
	after, _ = batcher.Stats()
	require.Equal(t, before, after, "a call of a role without rights on the log went through the batcher")

	// Granted, the same role's calls are batched.
	_, err = conn.Exec(ctx, "GRANT INSERT ON fetchq_data.priv__logs TO "+role)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "GRANT SELECT ON fetchq.queues TO "+role)
	require.NoError(t, err)
	_, err = weak.Exec(ctx, "SELECT 1") // a statement of its own: rights are checked again
	require.NoError(t, err)
	var subject string
	require.NoError(t, weak.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('priv', 0, 1, '5m')").Scan(&subject))
	require.Equal(t, "p1", subject)
	after, _ = batcher.Stats()
	require.Equal(t, before+1, after)
	var queued int
	require.NoError(t, weak.QueryRow(ctx, "SELECT queued_docs FROM fetchq.doc_push('priv', 'p2', 0, 0, NOW(), '{}')").Scan(&queued))
	require.Equal(t, 1, queued)
	after, _ = batcher.Stats()
	require.Equal(t, before+2, after, "the push went through the batcher")
}

// TestCallsOfAnotherDatabase: the proxy serves Fetchq in the service
// pool's database (Config.Database), where its maintainer, counters and
// batches work. A client connected to another database of the same server
// is passed through untouched, its fetchq calls included: they reach that
// database's own functions. Without Config.Database, the Batcher still
// runs nothing of another database: the calls run on the client's own
// connection, on its own queues, even when the pool's database holds a
// queue of the same name.
func TestCallsOfAnotherDatabase(t *testing.T) {
	t.Parallel()
	// connectBoth connects through b's proxy to its own database, with a
	// queue "shared" holding home-doc, and to a fresh other database.
	connectBoth := func(t *testing.T, b *testBundle) (home, away *pgx.Conn) {
		ctx := ctxT(t, time.Minute)
		home = fetchqConn(t, b, "shared")
		_, err := home.Exec(ctx, "SELECT * FROM fetchq.doc_push('shared', 'home-doc')")
		require.NoError(t, err)
		other := pgtest.NewDB(t)
		away, err = pgx.Connect(ctx, strings.Replace(b.proxyDSN("", ""), "dbname="+b.db.Name, "dbname="+other.Name, 1))
		require.NoError(t, err)
		t.Cleanup(func() { away.Close(context.Background()) })
		return home, away
	}
	// untouched checks the pool's database after the other's calls.
	untouched := func(t *testing.T, home *pgx.Conn, batcher *backend.Batcher, calls int64) {
		ctx := ctxT(t, time.Minute)
		after, _ := batcher.Stats()
		require.Equal(t, calls, after, "calls of a client of another database went through the service pool")
		var status, n int
		require.NoError(t, home.QueryRow(ctx, "SELECT status FROM fetchq_data.shared__docs WHERE subject = 'home-doc'").Scan(&status))
		require.Equal(t, 1, status, "the pool's database's document must still be pending")
		require.NoError(t, home.QueryRow(ctx, "SELECT count(*) FROM fetchq_data.shared__docs").Scan(&n))
		require.Equal(t, 1, n, "nothing of the other database's client may land in the pool's database")
		// A client of the pool's database is batched.
		var subject string
		require.NoError(t, home.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('shared', 0, 1, '5m')").Scan(&subject))
		require.Equal(t, "home-doc", subject)
		after, _ = batcher.Stats()
		require.Equal(t, calls+1, after)
	}

	t.Run("passed through", func(t *testing.T) {
		t.Parallel()
		b, _, batcher := setupFull(t)
		home, away := connectBoth(t, b)
		ctx := ctxT(t, time.Minute)
		before, _ := batcher.Stats()
		_, err := away.Exec(ctx, "SELECT * FROM fetchq.init()")
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, "Postgres itself answers: no such function in that database")
		require.Equal(t, "3F000", pgErr.Code, pgErr.Message) // schema "fetchq" does not exist
		// The database's own functions (say, the extension) are the ones called.
		_, err = away.Exec(ctx, "CREATE SCHEMA fetchq; CREATE FUNCTION fetchq.doc_pick(q varchar, v integer, l integer, d varchar)"+
			" RETURNS TABLE (subject text) LANGUAGE sql AS $$ SELECT 'its own ' || q $$")
		require.NoError(t, err)
		for _, mode := range execModes {
			var subject string
			require.NoError(t, away.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('shared', 0, 1, '5m')", mode).Scan(&subject), mode.String())
			require.Equal(t, "its own shared", subject, mode.String())
		}
		untouched(t, home, batcher, before)
	})

	t.Run("batcher", func(t *testing.T) {
		t.Parallel()
		b, _, batcher := setupFull(t, func(c *proxy.Config, _ *pgtest.DB) { c.Database = "" })
		home, away := connectBoth(t, b)
		ctx := ctxT(t, time.Minute)
		_, err := away.Exec(ctx, "SELECT * FROM fetchq.init()")
		require.NoError(t, err)
		_, err = away.Exec(ctx, "SELECT * FROM fetchq.queue_create('shared')")
		require.NoError(t, err)
		before, _ := batcher.Stats()
		for i, mode := range execModes {
			doc := fmt.Sprintf("away-%d", i)
			var queued int
			require.NoError(t, away.QueryRow(ctx, "SELECT queued_docs FROM fetchq.doc_push('shared', $1, 0, 0, NOW(), '{}')", mode, doc).Scan(&queued), mode.String())
			require.Equal(t, 1, queued, mode.String())
			var subject string
			require.NoError(t, away.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('shared', 0, 1, '5m')", mode).Scan(&subject), mode.String())
			require.Equal(t, doc, subject, mode.String())
			var done int
			require.NoError(t, away.QueryRow(ctx, "SELECT affected_rows FROM fetchq.doc_complete('shared', $1)", mode, doc).Scan(&done), mode.String())
			require.Equal(t, 1, done, mode.String())
		}
		untouched(t, home, batcher, before)
	})
}
