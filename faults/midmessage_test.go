package faults

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/internal/pgserver"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"
)

// TestUpstreamDiesMidResult: the Postgres backend of a client's session is
// killed with SIGKILL while it streams a large result through the proxy, so
// its connection ends wherever its last write ended, most likely inside a
// row. The client must see whole rows and then a clean end: a FATAL
// ErrorResponse or the connection closed between two messages, promptly;
// never half a row, never silence.
func TestUpstreamDiesMidResult(t *testing.T) {
	t.Parallel()
	srv, _ := dedicatedServer(t) // a backend killed with SIGKILL makes Postgres restart every session
	p := newProxy(t, "proxy", srv.ConnString(pgserver.SuperUser, "postgres"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for round := range size(1, 5) {
		// Connect; after the previous round's crash Postgres may still be
		// ending and restarting sessions.
		var rc *rawConn
		var rows [][]string
		var err error
		for until := time.Now().Add(20 * time.Second); ; {
			if rc, err = rawConnect(ctx, p.addr, "postgres"); err == nil {
				rows = nil
				if _, err = rc.query("SELECT pg_backend_pid()", &rows); err == nil {
					break
				}
				rc.close()
			}
			require.True(t, time.Now().Before(until), "round %d: connecting: %v", round, err)
			time.Sleep(50 * time.Millisecond)
		}
		pid, err := strconv.Atoi(rows[0][0])
		require.NoError(t, err)

		buf, err := (&pgproto3.Query{String: "SELECT generate_series(1, 100000000), repeat('x', 200)"}).Encode(nil)
		require.NoError(t, err)
		_, err = rc.c.Write(buf)
		require.NoError(t, err)
		_ = rc.c.SetDeadline(time.Now().Add(20 * time.Second))
		got := 0
		for got < 1000 {
			typ, _, err := rc.next()
			require.NoError(t, err)
			if typ == 'D' {
				got++
			}
		}

		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		killed := time.Now()
		_ = rc.c.SetDeadline(killed.Add(8 * time.Second))
		var end error
		for end == nil {
			typ, body, err := rc.next()
			switch {
			case err != nil:
				end = err
			case typ == 'E':
				e := &pgproto3.ErrorResponse{}
				require.NoError(t, e.Decode(body))
				if e.Severity == "FATAL" || e.Severity == "PANIC" {
					end = rc.afterFatal(&fatalError{code: e.Code, message: e.Message})
				}
			case typ == 'D':
				require.NoError(t, (&pgproto3.DataRow{}).Decode(body), "a whole row")
			}
		}
		rc.close()
		class, clean := rawClean(end)
		require.True(t, clean, "round %d: after the backend was killed the client got: %v", round, end)
		var he *halfMessageError
		require.False(t, errors.As(end, &he))
		require.Less(t, time.Since(killed), 5*time.Second, "round %d: the client learnt of the end promptly", round)
		t.Logf("round %d: backend killed after %d rows streamed; the client saw %s after %v", round, got, class,
			time.Since(killed).Round(time.Millisecond))

		// Postgres restarts every session after a backend crash; wait
		// until it accepts connections through the proxy again.
		require.Eventually(t, func() bool {
			c, err := rawConnect(ctx, p.addr, "postgres")
			if err != nil {
				return false
			}
			defer c.close()
			_, err = c.query("SELECT 1", nil)
			return err == nil
		}, 30*time.Second, 50*time.Millisecond, fmt.Sprintf("round %d: Postgres is back", round))
	}
}
