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
		// Connect and stream the first 1,000 rows. After the previous
		// round's crash Postgres may still be ending and restarting
		// sessions, a new one included (it is accepted before the
		// postmaster learns of the crash, then ended): start over until a
		// session streams.
		var rc *rawConn
		var pid int
		for until := time.Now().Add(20 * time.Second); ; {
			var err error
			if rc, pid, err = streaming(ctx, p.addr); err == nil {
				break
			}
			require.True(t, time.Now().Before(until), "round %d: streaming: %v", round, err)
			time.Sleep(50 * time.Millisecond)
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
		t.Logf("round %d: backend killed after 1,000 rows streamed; the client saw %s after %v", round, class,
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

// streaming connects through the proxy at addr, starts a result of many
// rows and reads its first 1,000, returning the connection mid-result and
// the backend's pid.
func streaming(ctx context.Context, addr string) (*rawConn, int, error) {
	rc, err := rawConnect(ctx, addr, "postgres")
	if err != nil {
		return nil, 0, err
	}
	var rows [][]string
	if _, err = rc.query("SELECT pg_backend_pid()", &rows); err != nil {
		rc.close()
		return nil, 0, err
	}
	pid, err := strconv.Atoi(rows[0][0])
	if err != nil {
		rc.close()
		return nil, 0, err
	}
	buf, err := (&pgproto3.Query{String: "SELECT generate_series(1, 100000000), repeat('x', 200)"}).Encode(nil)
	if err == nil {
		_, err = rc.c.Write(buf)
	}
	_ = rc.c.SetDeadline(time.Now().Add(20 * time.Second))
	for got := 0; err == nil && got < 1000; {
		var typ byte
		typ, _, err = rc.next()
		switch {
		case err != nil:
		case typ == 'D':
			got++
		case typ == 'E':
			err = errors.New("an error before 1,000 rows")
		}
	}
	if err != nil {
		rc.close()
		return nil, 0, err
	}
	return rc, pid, nil
}
