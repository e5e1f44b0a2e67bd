package proxy_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// createRole creates a login role for the test, dropped at its end, and
// runs grants (or any other set-up) as the test's superuser.
func createRole(t *testing.T, b *testBundle, conn *pgx.Conn, prefix string, setup ...string) string {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	role := prefix + b.db.Name
	_, err := conn.Exec(ctx, "CREATE ROLE "+role+" LOGIN")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = b.db.Pool(t).Exec(context.Background(), "DROP OWNED BY "+role)
		_, _ = b.db.Pool(t).Exec(context.Background(), "DROP ROLE "+role)
	})
	for _, sql := range setup {
		_, err := conn.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	return role
}

// grantQueue is what a role needs for its calls on queue q to batch.
func grantQueue(role, q string) []string {
	return []string{
		"GRANT USAGE ON SCHEMA fetchq, fetchq_data TO " + role,
		"GRANT SELECT, INSERT, UPDATE ON fetchq_data." + q + "__docs TO " + role,
		"GRANT INSERT ON fetchq_data." + q + "__logs TO " + role,
		"GRANT SELECT ON fetchq.queues TO " + role,
	}
}

// pushSubjects pushes one document of each subject to queue q.
func pushSubjects(t *testing.T, conn *pgx.Conn, q string, subjects ...string) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	for _, s := range subjects {
		_, err := conn.Exec(ctx, "SELECT * FROM fetchq.doc_push($1::varchar, $2::varchar)", q, s)
		require.NoError(t, err)
	}
}

// docStatus returns the status of queue q's document subject.
func docStatus(t *testing.T, conn *pgx.Conn, q, subject string) int {
	t.Helper()
	var status int
	require.NoError(t, conn.QueryRow(ctxT(t, time.Minute), "SELECT status FROM fetchq_data."+q+"__docs WHERE subject = $1", subject).Scan(&status))
	return status
}

func require42501(t *testing.T, err error, msgAndArgs ...any) {
	t.Helper()
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr, msgAndArgs...)
	require.Equal(t, "42501", pgErr.Code, msgAndArgs...)
}

// TestBatchRightsAfterPreparedSetRole: a session that becomes a role
// without rights through a statement it prepared earlier (Bind/Execute,
// no Query or Parse) gets 42501: the rights it had before are not reused.
func TestBatchRightsAfterPreparedSetRole(t *testing.T) {
	t.Parallel()
	b, _, batcher := setupFull(t)
	conn := fetchqConn(t, b, "priv")
	ctx := ctxT(t, time.Minute)
	pushSubjects(t, conn, "priv", "p1", "p2")
	role := createRole(t, b, conn, "fq_setrole_", "GRANT USAGE ON SCHEMA fetchq, fetchq_data TO fq_setrole_"+b.db.Name)

	c, err := pgx.Connect(ctx, b.proxyDSN("", ""))
	require.NoError(t, err)
	defer c.Close(context.Background())
	pc := c.PgConn()
	_, err = pc.Prepare(ctx, "become", "SET ROLE "+role, nil)
	require.NoError(t, err)
	calls0, _ := batcher.Stats()
	res, err := pc.Exec(ctx, "SELECT subject FROM fetchq.doc_pick('priv')").ReadAll()
	require.NoError(t, err)
	require.Len(t, res[0].Rows, 1)
	calls1, _ := batcher.Stats()
	require.Equal(t, calls0+1, calls1, "the superuser's pick is batched")

	require.NoError(t, pc.ExecPrepared(ctx, "become", nil, nil, nil).Read().Err)
	_, err = pc.Exec(ctx, "SELECT subject FROM fetchq.doc_pick('priv')").ReadAll()
	require42501(t, err, "the pick runs with the role the session became")
	calls2, _ := batcher.Stats()
	require.Equal(t, calls1, calls2, "a call of a role without rights went through the batcher")
}

// TestBatchRightsExpire: rights revoked on another connection reach a
// session's batched calls within a second, though the session sends
// nothing of its own.
func TestBatchRightsExpire(t *testing.T) {
	t.Parallel()
	b, _, batcher := setupFull(t)
	conn := fetchqConn(t, b, "rev")
	ctx := ctxT(t, time.Minute)
	pushSubjects(t, conn, "rev", "r1", "r2")
	role := createRole(t, b, conn, "fq_revoke_", grantQueue("fq_revoke_"+b.db.Name, "rev")...)
	worker, err := pgx.Connect(ctx, b.proxyDSN(role, ""))
	require.NoError(t, err)
	defer worker.Close(context.Background())

	calls0, _ := batcher.Stats()
	var subject string
	require.NoError(t, worker.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('rev', 0, 1, '5m')").Scan(&subject))
	calls1, _ := batcher.Stats()
	require.Equal(t, calls0+1, calls1, "the role's pick is batched")

	_, err = conn.Exec(ctx, "REVOKE UPDATE ON fetchq_data.rev__docs FROM "+role)
	require.NoError(t, err)
	time.Sleep(1100 * time.Millisecond) // past the session's trust in its check
	_, err = worker.Exec(ctx, "SELECT * FROM fetchq.doc_pick('rev', 0, 1, '5m')")
	require42501(t, err, "a revoked right still lent by the service pool")
	var pending int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM fetchq_data.rev__docs WHERE status = 1").Scan(&pending))
	require.Equal(t, 1, pending)
}

// TestBatchingRespectsRowSecurity: a queue whose documents table has row
// security enabled is never batched (the service pool's role owns the
// table and would not be held to the policy): a role picks only what its
// policy lets it see.
func TestBatchingRespectsRowSecurity(t *testing.T) {
	t.Parallel()
	b, _, batcher := setupFull(t)
	conn := fetchqConn(t, b, "rq")
	ctx := ctxT(t, time.Minute)
	pushSubjects(t, conn, "rq", "other_tenant")
	role := "fq_rls_" + b.db.Name
	createRole(t, b, conn, "fq_rls_", append(grantQueue(role, "rq"),
		"ALTER TABLE fetchq_data.rq__docs ENABLE ROW LEVEL SECURITY",
		"CREATE POLICY mine ON fetchq_data.rq__docs TO "+role+" USING (subject LIKE 'mine%')")...)

	tenant, err := pgx.Connect(ctx, b.proxyDSN(role, ""))
	require.NoError(t, err)
	defer tenant.Close(context.Background())
	calls0, _ := batcher.Stats()
	for _, mode := range execModes {
		rows, err := tenant.Query(ctx, "SELECT subject FROM fetchq.doc_pick('rq', 0, 1, '5m')", mode)
		require.NoError(t, err)
		subjects, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err, mode.String())
		require.Empty(t, subjects, "%s: picked a document its policy hides", mode)
	}
	calls1, _ := batcher.Stats()
	require.Equal(t, calls0, calls1, "a call on a table with row security went through the batcher")
	require.Equal(t, 1, docStatus(t, conn, "rq", "other_tenant"))
}

// TestCallAfterOwnStatementsBeforeSync: a call sent after statements of
// the client's own, before their Sync (pgx's SendBatch: one implicit
// transaction), is refused with 0A000 and fails the segment, so the
// client's statements roll back, as after any error in it: it is neither
// batched (a batch would wait for the client's row locks until the
// client's Sync, which the session does not read before the call's
// answer) nor run on the client's connection (the proxy's statements
// would commit the client's early).
func TestCallAfterOwnStatementsBeforeSync(t *testing.T) {
	t.Parallel()
	b, _, batcher := setupFull(t)
	conn := fetchqConn(t, b, "imp")
	ctx := ctxT(t, time.Minute)
	pushSubjects(t, conn, "imp", "s1", "s2")
	rows, err := conn.Query(ctx, "SELECT subject FROM fetchq.doc_pick('imp', 0, 2, '5m')")
	require.NoError(t, err)
	picked, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Len(t, picked, 2)

	c, err := pgx.Connect(ctx, b.proxyDSN("", ""))
	require.NoError(t, err)
	defer c.Close(context.Background())
	calls0, _ := batcher.Stats()
	for _, s := range []string{"s1", "s2"} {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		batch := &pgx.Batch{}
		batch.Queue(`UPDATE fetchq_data.imp__docs SET payload = '{"x":1}' WHERE subject = $1`, s)
		batch.Queue("SELECT * FROM fetchq.doc_complete('imp', $1::varchar)", s)
		err := c.SendBatch(sctx, batch).Close()
		cancel()
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, s)
		require.Equal(t, "0A000", pgErr.Code, s)
		var payload string
		require.NoError(t, conn.QueryRow(ctx, "SELECT payload::text FROM fetchq_data.imp__docs WHERE subject = $1", s).Scan(&payload))
		require.Equal(t, "{}", payload, "%s: the client's UPDATE must roll back with its segment", s)
		require.Equal(t, 2, docStatus(t, conn, "imp", s), s)
		var one int
		require.NoError(t, c.QueryRow(ctx, "SELECT 1").Scan(&one), "the session goes on")
	}
	calls1, _ := batcher.Stats()
	require.Equal(t, calls0, calls1, "a call inside an implicit transaction went through the batcher")
}
