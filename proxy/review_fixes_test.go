package proxy_test

import (
	"context"
	"strings"
	"testing"
	"time"

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
