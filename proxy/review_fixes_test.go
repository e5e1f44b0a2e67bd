package proxy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"
)

// TestShutdownWithClientNotReading: a session whose client stopped
// reading while notifications pile up (its writer blocked on a full
// socket) does not hold up the server's shutdown past its deadline.
func TestShutdownWithClientNotReading(t *testing.T) {
	t.Parallel()
	b := setup(t)
	hc := rawConn(t, b.proxyDSN("", ""))
	hc.Frontend.Send(&pgproto3.Query{String: "LISTEN ch"})
	require.NoError(t, hc.Frontend.Flush())
	receive(t, hc.Conn, hc.Frontend, 1)
	d := connect(t, b.directDSN("", ""))
	payload := strings.Repeat("x", 7000)
	for range 3000 { // about 21 MB: more than the sockets hold
		_, err := d.Exec(context.Background(), "NOTIFY ch, '"+payload+"'").ReadAll()
		require.NoError(t, err)
	}
	time.Sleep(500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.srv.Shutdown(ctx) }()
	select {
	case <-done:
	case <-time.After(8 * time.Second):
		hc.Conn.Close() // let the test end
		t.Fatal("Shutdown still blocked 6 s after its deadline")
	}
}

// TestQueryAfterUnsyncedMessages: a Query calling Fetchq sent after
// extended-protocol messages without a Sync gets the answers Postgres
// gives: those of the extended messages first, then its own.
func TestQueryAfterUnsyncedMessages(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	fetchqConn(t, b, "rq")
	var got []string
	for _, target := range []struct{ dsn, query string }{
		{b.directDSN("", ""), "SELECT '4.0.0'::text AS version"}, // one row too, without Fetchq
		{b.proxyDSN("", ""), "SELECT version FROM fetchq.info()"},
	} {
		hc := rawConn(t, target.dsn)
		for _, m := range []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Query{String: target.query},
		} {
			hc.Frontend.Send(m)
		}
		require.NoError(t, hc.Frontend.Flush())
		x := receiveWithin(t, hc.Conn, hc.Frontend, 1, 5*time.Second)
		require.Empty(t, x.errs, errsText(x.errs))
		got = append(got, x.types)
	}
	require.Equal(t, got[0], got[1], "direct, then through the proxy")
}

// TestMixedSegmentNothingKept: a Fetchq call after statements of the
// client's own before their Sync is refused (0A000), and the segment fails
// as it would in Postgres after an error: the client's INSERT rolls back,
// a transaction block begun in the segment fails (its ROLLBACK skipped),
// and nothing of the call takes effect. So does the segment after an error
// the proxy raises itself (a Bind with a wrong parameter count).
func TestMixedSegmentNothingKept(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	conn := fetchqConn(t, b, "mq")
	ctx := ctxT(t, time.Minute)
	_, err := conn.Exec(ctx, "CREATE TABLE mixed (x int)")
	require.NoError(t, err)
	count := func(sql string) int {
		var n int
		require.NoError(t, conn.QueryRow(ctx, sql).Scan(&n))
		return n
	}
	requireCode := func(err error, code string, msg string) {
		t.Helper()
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, msg)
		require.Equal(t, code, pgErr.Code, msg)
	}

	batch := &pgx.Batch{}
	batch.Queue("INSERT INTO mixed VALUES (1)")
	batch.Queue("SELECT * FROM fetchq.doc_push('mq', 'a1', 0, 0, NOW(), '{}')")
	batch.Queue("SELECT 1")
	requireCode(conn.SendBatch(ctx, batch).Close(), "0A000", "implicit transaction")
	require.Zero(t, count("SELECT count(*) FROM mixed"), "implicit transaction: the INSERT was kept")
	require.Zero(t, count("SELECT count(*) FROM fetchq_data.mq__docs"))

	for _, call := range []string{
		"SELECT * FROM fetchq.doc_push('mq', 'a2', 0, 0, NOW(), '{}')",
		"SELECT * FROM fetchq.doc_upsert('mq', 'u1', 0, 0, NOW(), '{}')",
	} {
		batch := &pgx.Batch{}
		batch.Queue("BEGIN")
		batch.Queue("INSERT INTO mixed VALUES (2)")
		batch.Queue(call)
		batch.Queue("ROLLBACK")
		requireCode(conn.SendBatch(ctx, batch).Close(), "0A000", call)
		// As in Postgres, the failed block waits for its ROLLBACK.
		_, err := conn.Exec(ctx, "SELECT 1")
		requireCode(err, "25P02", call)
		_, err = conn.Exec(ctx, "ROLLBACK")
		require.NoError(t, err)
		require.Zero(t, count("SELECT count(*) FROM mixed"), "%s: the INSERT was kept", call)
		require.Zero(t, count("SELECT count(*) FROM fetchq_data.mq__docs"), call)
	}

	hc := rawConn(t, b.proxyDSN("", ""))
	for _, m := range []pgproto3.FrontendMessage{
		&pgproto3.Parse{Query: "INSERT INTO mixed VALUES (3)"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Parse{Name: "f", Query: "SELECT * FROM fetchq.doc_push($1, 'a3', 0, 0, NOW(), '{}')"},
		&pgproto3.Bind{PreparedStatement: "f"}, // no parameter for $1
		&pgproto3.Execute{}, &pgproto3.Sync{},
	} {
		hc.Frontend.Send(m)
	}
	require.NoError(t, hc.Frontend.Flush())
	x := receive(t, hc.Conn, hc.Frontend, 1)
	require.Len(t, x.errs, 1, x.types)
	require.Equal(t, "08P01", x.errs[0].Code)
	require.Zero(t, count("SELECT count(*) FROM mixed"), "an error the proxy raised kept the INSERT")
}

// TestPortalRowLimits: an intercepted portal executed with a row limit
// sends its rows in parts, PortalSuspended between, and an Execute of a
// portal whose rows all went sends none, as Postgres does for any query:
// the call runs once (three documents picked, not one per Execute).
func TestPortalRowLimits(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	conn := fetchqConn(t, b, "rl")
	pushSubjects(t, conn, "rl", "a", "b", "c", "d", "e", "f")
	var got []string
	for _, target := range []struct{ dsn, query string }{
		{b.directDSN("", ""), "SELECT 'x' FROM generate_series(1, 3)"},
		{b.proxyDSN("", ""), "SELECT subject FROM fetchq.doc_pick('rl', 0, 3, '5m')"},
	} {
		hc := rawConn(t, target.dsn)
		for _, m := range []pgproto3.FrontendMessage{
			&pgproto3.Query{String: "BEGIN"},
			&pgproto3.Parse{Name: "f", Query: target.query},
			&pgproto3.Bind{DestinationPortal: "c", PreparedStatement: "f"},
			&pgproto3.Execute{Portal: "c", MaxRows: 1}, &pgproto3.Execute{Portal: "c", MaxRows: 1},
			&pgproto3.Execute{Portal: "c"}, &pgproto3.Execute{Portal: "c"},
			&pgproto3.Sync{}, &pgproto3.Query{String: "COMMIT"},
		} {
			hc.Frontend.Send(m)
		}
		require.NoError(t, hc.Frontend.Flush())
		x := receive(t, hc.Conn, hc.Frontend, 3)
		require.Empty(t, x.errs, errsText(x.errs))
		got = append(got, x.types)
	}
	require.Equal(t, got[0], got[1], "direct, then through the proxy")
	var active int
	require.NoError(t, conn.QueryRow(ctxT(t, time.Minute), "SELECT count(*) FROM fetchq_data.rl__docs WHERE status = 2").Scan(&active))
	require.Equal(t, 3, active, "the call ran more than once")
}

// TestUnnamedStatementSurvivesCalls: the client's unnamed prepared
// statement, which outlives a Sync, is still its own after a Fetchq call
// the proxy ran on its connection.
func TestUnnamedStatementSurvivesCalls(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	fetchqConn(t, b, "un")
	hc := rawConn(t, b.proxyDSN("", ""))
	for _, m := range []pgproto3.FrontendMessage{
		&pgproto3.Parse{Query: "SELECT 42"}, &pgproto3.Sync{},
		&pgproto3.Parse{Name: "f", Query: "SELECT * FROM fetchq.doc_push('un', 'a1', 0, 0, NOW(), '{}')"},
		&pgproto3.Bind{PreparedStatement: "f"}, &pgproto3.Execute{}, &pgproto3.Sync{},
		&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
	} {
		hc.Frontend.Send(m)
	}
	require.NoError(t, hc.Frontend.Flush())
	_ = hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var rows []string
	for readies := 0; readies < 3; {
		msg, err := hc.Frontend.Receive()
		require.NoError(t, err)
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			rows = append(rows, string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			t.Fatalf("%s %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			readies++
		}
	}
	require.Equal(t, []string{"1", "42"}, rows)
}

// TestDeallocateAllForgetsCalls: after DEALLOCATE ALL (pgx's
// DeallocateAll) or DISCARD ALL (PgBouncer's reset query) the client may
// prepare a Fetchq call again under the same name, as Postgres allows.
func TestDeallocateAllForgetsCalls(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	conn := fetchqConn(t, b, "dq")
	ctx := ctxT(t, time.Minute)
	pushSubjects(t, conn, "dq", "a", "b", "c")
	c, err := pgx.Connect(ctx, b.proxyDSN("", "")) // caches prepared statements by name
	require.NoError(t, err)
	defer c.Close(context.Background())
	for i := range 2 {
		if i > 0 {
			require.NoError(t, c.DeallocateAll(ctx)) // sends "deallocate all", empties pgx's cache
		}
		var subject string
		require.NoError(t, c.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('dq', 0, 1, '5m')").Scan(&subject), "round %d", i)
	}

	hc := rawConn(t, b.proxyDSN("", ""))
	parse := &pgproto3.Parse{Name: "s1", Query: "SELECT * FROM fetchq.doc_pick('dq', 0, 1, '5m')"}
	for _, m := range []pgproto3.FrontendMessage{
		parse, &pgproto3.Sync{},
		&pgproto3.Query{String: " discard  ALL ;"},
		parse, &pgproto3.Sync{},
	} {
		hc.Frontend.Send(m)
	}
	require.NoError(t, hc.Frontend.Flush())
	x := receive(t, hc.Conn, hc.Frontend, 3)
	require.Empty(t, x.errs, errsText(x.errs))
}

// TestCountersReadInTheirTransaction: inside a transaction, counter reads
// see the transaction's own effects (held by the proxy until it commits),
// as 4.0.2's reads see the transaction's own metric writes.
func TestCountersReadInTheirTransaction(t *testing.T) {
	t.Parallel()
	b, _, _ := setupFull(t)
	conn := fetchqConn(t, b, "ct")
	ctx := ctxT(t, time.Minute)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	_, err = tx.Exec(ctx, "SELECT * FROM fetchq.doc_push('ct', 'a', 0, 0, NOW() + INTERVAL '1 hour', '{}')")
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "SELECT * FROM fetchq.metric_log_pack()")
	require.NoError(t, err)
	for metric, want := range map[string]int32{"pln": 1, "cnt": 1} {
		var value int32
		var exists bool
		require.NoError(t, tx.QueryRow(ctx, "SELECT current_value, does_exists FROM fetchq.metric_get('ct', $1::text)", metric).Scan(&value, &exists))
		require.True(t, exists, metric)
		require.Equal(t, want, value, metric)
	}
	require.NoError(t, tx.Commit(ctx))
}

// TestCopyOutInATextCallingFetchq: COPY ... TO STDOUT in a query text that
// also calls Fetchq is refused with 0A000 in place of its output, and the
// client gets well-formed messages: no copy data without its
// CopyOutResponse.
func TestCopyOutInATextCallingFetchq(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	conn := fetchqConn(t, b, "cq")
	_, err := conn.Exec(ctxT(t, time.Minute), "CREATE TABLE copied AS SELECT generate_series(1, 3) AS x")
	require.NoError(t, err)
	hc := rawConn(t, b.proxyDSN("", ""))
	hc.Frontend.Send(&pgproto3.Query{String: "SELECT version FROM fetchq.info(); COPY copied TO STDOUT"})
	require.NoError(t, hc.Frontend.Flush())
	x := receive(t, hc.Conn, hc.Frontend, 1)
	require.Equal(t, "TDCEZ", x.types)
	require.Len(t, x.errs, 1)
	require.Equal(t, "0A000", x.errs[0].Code)
}

// TestRefusedTextFailsTheTransaction: a query text calling Fetchq that
// Postgres refuses before running anything (invalid UTF-8: the proxy
// forwards it for Postgres' own answer) fails the client's transaction
// block, as any error does in Postgres.
func TestRefusedTextFailsTheTransaction(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	fetchqConn(t, b, "rt")
	hc := rawConn(t, b.proxyDSN("", ""))
	hc.Frontend.Send(&pgproto3.Query{String: "BEGIN"})
	hc.Frontend.Send(&pgproto3.Query{String: "SELECT * FROM fetchq.doc_push('rt', '\xff', 0, 0, NOW(), '{}')"})
	require.NoError(t, hc.Frontend.Flush())
	receive(t, hc.Conn, hc.Frontend, 1)
	_ = hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var status byte
	var codes []string
	for status == 0 {
		msg, err := hc.Frontend.Receive()
		require.NoError(t, err)
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			codes = append(codes, m.Code)
		case *pgproto3.ReadyForQuery:
			status = m.TxStatus
		}
	}
	require.Equal(t, []string{"22021"}, codes)
	require.Equal(t, byte('E'), status, "the transaction block must have failed")
}
