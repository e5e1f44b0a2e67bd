package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

var execModes = []pgx.QueryExecMode{
	pgx.QueryExecModeCacheStatement,
	pgx.QueryExecModeCacheDescribe,
	pgx.QueryExecModeDescribeExec,
	pgx.QueryExecModeExec,
	pgx.QueryExecModeSimpleProtocol,
}

// TestExecModesTypedValues round-trips typed values in every pgx
// query-exec mode, directly and through the proxy, and requires the same
// answers.
func TestExecModesTypedValues(t *testing.T) {
	t.Parallel()
	b := setup(t)

	big := make([]byte, 10<<20)
	_, _ = rand.Read(big)
	ts := time.Date(2024, 2, 29, 13, 14, 15, 123456000, time.UTC)
	num := pgtype.Numeric{}
	require.NoError(t, num.Scan("12345678901234567890.0123456789"))

	type row struct {
		J   map[string]any
		TS  time.Time
		N   string
		A   []int32
		S   []string
		B   []byte
		Sum int64
	}
	query := func(t *testing.T, dsn string, mode pgx.QueryExecMode) row {
		cfg, err := pgx.ParseConfig(dsn)
		require.NoError(t, err)
		cfg.DefaultQueryExecMode = mode
		ctx := ctxT(t, time.Minute)
		conn, err := pgx.ConnectConfig(ctx, cfg)
		require.NoError(t, err)
		defer conn.Close(ctx)
		var r row
		err = conn.QueryRow(ctx,
			`SELECT $1::jsonb, $2::timestamptz, $3::numeric::text, $4::int4[], $5::text[], $6::bytea,
			        (SELECT sum(x) FROM unnest($4::int4[]) x)`,
			`{"a": "it's", "nested": {"k": [1.5, "ü", null]}}`,
			ts, num, []int32{1, -2, 3}, []string{"a", "b,c", `"q"`, "ß"}, big,
		).Scan(&r.J, &r.TS, &r.N, &r.A, &r.S, &r.B, &r.Sum)
		require.NoError(t, err)
		return r
	}
	for _, mode := range execModes {
		t.Run(mode.String(), func(t *testing.T) {
			direct := query(t, b.directDSN("", ""), mode)
			proxied := query(t, b.proxyDSN("", ""), mode)
			require.Equal(t, direct, proxied)
			require.True(t, proxied.TS.Equal(ts))
			require.Equal(t, "12345678901234567890.0123456789", proxied.N)
			require.Equal(t, []int32{1, -2, 3}, proxied.A)
			require.Equal(t, []string{"a", "b,c", `"q"`, "ß"}, proxied.S)
			require.True(t, bytes.Equal(big, proxied.B), "10 MB bytea differs")
			require.Equal(t, int64(2), proxied.Sum)
			require.Equal(t, "it's", proxied.J["a"])
		})
	}
}

// TestPipelineThreeSyncs sends three queries, each with its own Sync, in
// one pipeline.
func TestPipelineThreeSyncs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.both(t, func(t *testing.T, dsn func(string, string) string) {
		conn := connect(t, dsn("", ""))
		ctx := ctxT(t, 30*time.Second)
		p := conn.StartPipeline(ctx)
		for i := 1; i <= 3; i++ {
			p.SendQueryParams(`SELECT $1::int * 10`, [][]byte{[]byte{byte('0' + i)}}, nil, nil, nil)
			p.SendPipelineSync()
		}
		require.NoError(t, p.Flush())
		for i := 1; i <= 3; i++ {
			res, err := p.GetResults()
			require.NoError(t, err)
			rr, ok := res.(*pgconn.ResultReader)
			require.True(t, ok, "result %d is %T", i, res)
			r := rr.Read()
			require.NoError(t, r.Err)
			require.Equal(t, [][][]byte{{[]byte(string(rune('0'+i)) + "0")}}, r.Rows)
			res, err = p.GetResults()
			require.NoError(t, err)
			require.IsType(t, &pgconn.PipelineSync{}, res)
		}
		require.NoError(t, p.Close())
	})
}

// rawMessages sends msgs on a hijacked connection and returns the type
// bytes of everything the server answers until it has sent `syncs`
// ReadyForQuery messages, plus the ReadyForQuery statuses.
func rawExchange(t *testing.T, dsn string, msgs []pgproto3.FrontendMessage, syncs int) (types string, statuses string) {
	t.Helper()
	conn := connect(t, dsn)
	hc, err := conn.Hijack()
	require.NoError(t, err)
	defer hc.Conn.Close()
	_ = hc.Conn.SetDeadline(time.Now().Add(30 * time.Second))
	fe := hc.Frontend
	for _, m := range msgs {
		fe.Send(m)
	}
	require.NoError(t, fe.Flush())
	for syncs > 0 {
		msg, err := fe.Receive()
		require.NoError(t, err)
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			types += "Z"
			statuses += string(m.TxStatus)
			syncs--
		case *pgproto3.ErrorResponse:
			types += "E"
		case *pgproto3.ParseComplete:
			types += "1"
		case *pgproto3.BindComplete:
			types += "2"
		case *pgproto3.DataRow:
			types += "D"
		case *pgproto3.CommandComplete:
			types += "C"
		case *pgproto3.RowDescription:
			types += "T"
		case *pgproto3.ParameterDescription:
			types += "t"
		case *pgproto3.NoData:
			types += "n"
		case *pgproto3.CloseComplete:
			types += "3"
		default:
			types += "?"
		}
	}
	return types, statuses
}

// TestPipelineErrorOneErrorOneReady: an error inside a pipeline segment
// yields exactly one ErrorResponse and one ReadyForQuery for that segment,
// and the next segment runs normally.
func TestPipelineErrorOneErrorOneReady(t *testing.T) {
	t.Parallel()
	b := setup(t)
	msgs := []pgproto3.FrontendMessage{
		&pgproto3.Parse{Name: "ok", Query: "SELECT 1"},
		&pgproto3.Bind{PreparedStatement: "ok"},
		&pgproto3.Execute{},
		&pgproto3.Parse{Query: "SELECT 1/0"}, // fails when planned, at Bind
		&pgproto3.Bind{},
		&pgproto3.Execute{},
		&pgproto3.Parse{Query: "SELECT 2"}, // skipped: after the error, until Sync
		&pgproto3.Bind{},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
		&pgproto3.Describe{ObjectType: 'S', Name: "ok"},
		&pgproto3.Bind{PreparedStatement: "ok"},
		&pgproto3.Execute{},
		&pgproto3.Close{ObjectType: 'S', Name: "ok"},
		&pgproto3.Sync{},
	}
	dt, ds := rawExchange(t, b.directDSN("", ""), msgs, 2)
	pt, ps := rawExchange(t, b.proxyDSN("", ""), msgs, 2)
	require.Equal(t, "12DC1EZtT2DC3Z", dt)
	require.Equal(t, dt, pt)
	require.Equal(t, ds, ps)
}

// TestTransactionStatus follows the ReadyForQuery status through BEGIN, an
// error and ROLLBACK.
func TestTransactionStatus(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.both(t, func(t *testing.T, dsn func(string, string) string) {
		conn := connect(t, dsn("", ""))
		ctx := ctxT(t, 30*time.Second)
		require.Equal(t, byte('I'), conn.TxStatus())
		_, err := conn.Exec(ctx, "BEGIN").ReadAll()
		require.NoError(t, err)
		require.Equal(t, byte('T'), conn.TxStatus())
		_, err = conn.Exec(ctx, "SELECT 1/0").ReadAll()
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "22012", pgErr.Code)
		require.Equal(t, byte('E'), conn.TxStatus())
		_, err = conn.Exec(ctx, "ROLLBACK").ReadAll()
		require.NoError(t, err)
		require.Equal(t, byte('I'), conn.TxStatus())
	})
}

// TestMultiStatementSimpleQuery: one Query message with several
// statements gives the same results, tags and implicit-transaction
// behaviour as on Postgres.
func TestMultiStatementSimpleQuery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.both(t, func(t *testing.T, dsn func(string, string) string) {
		conn := connect(t, dsn("", ""))
		ctx := ctxT(t, 30*time.Second)
		res, err := conn.Exec(ctx, "CREATE TEMP TABLE m(x int); INSERT INTO m VALUES (1),(2); SELECT sum(x) FROM m; SELECT 1/0; INSERT INTO m VALUES (3)").ReadAll()
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "22012", pgErr.Code)
		require.Len(t, res, 3) // the failed statement has no result
		require.Equal(t, "INSERT 0 2", res[1].CommandTag.String())
		require.Equal(t, "3", string(res[2].Rows[0][0]))
		// The implicit transaction rolled back: the table is gone.
		_, err = conn.Exec(ctx, "SELECT * FROM m").ReadAll()
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "42P01", pgErr.Code)
	})
}

// TestStartupParameters: parameters of the startup packet take effect as on
// a direct connection.
func TestStartupParameters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	show := func(t *testing.T, dsn string) []string {
		cfg, err := pgconn.ParseConfig(dsn)
		require.NoError(t, err)
		cfg.RuntimeParams["application_name"] = "fq-test-app"
		cfg.RuntimeParams["options"] = "-c statement_timeout=5s"
		cfg.RuntimeParams["extra_float_digits"] = "3"
		ctx := ctxT(t, 30*time.Second)
		conn, err := pgconn.ConnectConfig(ctx, cfg)
		require.NoError(t, err)
		defer conn.Close(ctx)
		res, err := conn.Exec(ctx, "SHOW application_name; SHOW statement_timeout; SHOW extra_float_digits").ReadAll()
		require.NoError(t, err)
		var out []string
		for _, r := range res {
			out = append(out, string(r.Rows[0][0]))
		}
		out = append(out, conn.ParameterStatus("application_name"))
		return out
	}
	direct := show(t, b.directDSN("", ""))
	proxied := show(t, b.proxyDSN("", ""))
	require.Equal(t, []string{"fq-test-app", "5s", "3", "fq-test-app"}, direct)
	require.Equal(t, direct, proxied)
}

// TestParameterStatusRelayed: a SET of a reported parameter reaches the
// client as ParameterStatus.
func TestParameterStatusRelayed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	conn := connect(t, b.proxyDSN("", ""))
	ctx := ctxT(t, 30*time.Second)
	_, err := conn.Exec(ctx, "SET application_name = 'changed'; SET TimeZone = 'Europe/Rome'").ReadAll()
	require.NoError(t, err)
	require.Equal(t, "changed", conn.ParameterStatus("application_name"))
	require.Equal(t, "Europe/Rome", conn.ParameterStatus("TimeZone"))
}

// startupPacket builds a raw StartupMessage with any protocol version.
func startupPacket(version uint32, params ...string) []byte {
	body := binary.BigEndian.AppendUint32(nil, version)
	for _, p := range params {
		body = append(append(body, p...), 0)
	}
	body = append(body, 0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

// TestNegotiateProtocolVersion: a client asking for 3.5 with a _pq_ option
// gets NegotiateProtocolVersion (3.0, the option listed), then a normal
// session.
func TestNegotiateProtocolVersion(t *testing.T) {
	t.Parallel()
	b := setup(t)
	conn, err := net.Dial("tcp", net.JoinHostPort(b.host, itoa(b.port)))
	require.NoError(t, err)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	_, err = conn.Write(startupPacket(3<<16|5, "user", "postgres", "database", b.db.Name, "_pq_.fancy", "on"))
	require.NoError(t, err)
	fe := pgproto3.NewFrontend(conn, conn)
	msg, err := fe.Receive()
	require.NoError(t, err)
	require.Equal(t, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: []string{"_pq_.fancy"}}, msg)
	msg, err = fe.Receive()
	require.NoError(t, err)
	require.IsType(t, &pgproto3.AuthenticationOk{}, msg)
	for {
		msg, err = fe.Receive()
		require.NoError(t, err)
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	fe.Send(&pgproto3.Query{String: "SELECT 42"})
	require.NoError(t, fe.Flush())
	msg, err = fe.Receive()
	require.NoError(t, err)
	require.IsType(t, &pgproto3.RowDescription{}, msg)
	msg, err = fe.Receive()
	require.NoError(t, err)
	require.Equal(t, [][]byte{[]byte("42")}, msg.(*pgproto3.DataRow).Values)
}

// TestGSSEncAndSSLRefused: without a certificate, GSSENCRequest and
// SSLRequest are both answered 'N' and the session goes on in plaintext.
func TestGSSEncAndSSLRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	conn, err := net.Dial("tcp", net.JoinHostPort(b.host, itoa(b.port)))
	require.NoError(t, err)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	for _, code := range []uint32{80877104, 80877103} {
		req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), code)
		_, err = conn.Write(req)
		require.NoError(t, err)
		var resp [1]byte
		_, err = io.ReadFull(conn, resp[:])
		require.NoError(t, err)
		require.Equal(t, byte('N'), resp[0])
	}
	_, err = conn.Write(startupPacket(3<<16, "user", "postgres", "database", b.db.Name))
	require.NoError(t, err)
	msg, err := pgproto3.NewFrontend(conn, conn).Receive()
	require.NoError(t, err)
	require.IsType(t, &pgproto3.AuthenticationOk{}, msg)
}

// TestCancelRouting: a CancelRequest with the right key cancels the
// running statement (57014); a wrong key is ignored.
func TestCancelRouting(t *testing.T) {
	t.Parallel()
	b := setup(t)
	conn := connect(t, b.proxyDSN("", ""))
	require.NotZero(t, conn.PID())

	// Wrong key: the statement runs to its end.
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_sleep(1)").ReadAll()
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	wrong, err := net.Dial("tcp", net.JoinHostPort(b.host, itoa(b.port)))
	require.NoError(t, err)
	req := binary.BigEndian.AppendUint32(nil, 16)
	req = binary.BigEndian.AppendUint32(req, 80877102)
	req = binary.BigEndian.AppendUint32(req, conn.PID())
	req = append(req, 1, 2, 3, 4)
	_, err = wrong.Write(req)
	require.NoError(t, err)
	wrong.Close()
	require.NoError(t, <-done)

	// Right key: canceled.
	go func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_sleep(30)").ReadAll()
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	require.NoError(t, conn.CancelRequest(ctxT(t, 10*time.Second)))
	err = <-done
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "57014", pgErr.Code)
	require.Less(t, time.Since(start), 10*time.Second)
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestTerminateEndsQuietly: a client that sends Terminate and reads on
// until the connection closes (as node-postgres' client.end() does) gets
// nothing but EOF, as from Postgres: never the proxy's FATAL about a lost
// upstream, which Postgres closing after Terminate is not. Many rounds,
// since the upstream's close races with the session's own.
func TestTerminateEndsQuietly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for round := range 300 {
		conn, err := net.Dial("tcp", net.JoinHostPort(b.host, itoa(b.port)))
		require.NoError(t, err)
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		_, err = conn.Write(startupPacket(3<<16, "user", "postgres", "database", b.db.Name))
		require.NoError(t, err)
		fe := pgproto3.NewFrontend(conn, conn)
		for {
			msg, err := fe.Receive()
			require.NoError(t, err)
			if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
		fe.Send(&pgproto3.Terminate{})
		require.NoError(t, fe.Flush())
		msg, err := fe.Receive()
		require.Error(t, err, "round %d: after Terminate the proxy sent %#v", round, msg)
		conn.Close()
	}
}
