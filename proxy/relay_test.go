package proxy_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"
)

// The relay loop (relay_linux.go) passes the messages of sessions that
// need nothing else through on one goroutine. Every pass-through test of
// the package runs through it; these tests check what is its own: the
// hand-back to a session's goroutines, messages split across reads or
// larger than what it keeps, and a client that reads slowly.

// relayStats returns the sessions in the loop of b's server and those it
// handed back.
func relayStats(b *testBundle) (in, handedBack int64) { return b.srv.RelayStats() }

// TestRelayLoopHandsBack: a session passes plain statements through the
// loop; its first Fetchq call hands it back to its goroutines, which run
// the call and everything after it, in order, on the same connections.
func TestRelayLoopHandsBack(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	fetchqConn(t, b, "rl") // its own session, handed back by its calls
	ctx := ctxT(t, time.Minute)
	in0, back0 := relayStats(b)

	conn, err := pgx.Connect(ctx, b.proxyDSN("", ""))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT 41 + $1::int", 1).Scan(&n))
	require.Equal(t, 42, n)
	in, back := relayStats(b)
	require.Equal(t, in0+1, in, "the new session is in the loop")
	require.Equal(t, back0, back)

	// A pipeline of three segments, the second a Fetchq call: handed
	// back at its Parse, nothing lost or reordered.
	pg := conn.PgConn()
	pl := pg.StartPipeline(ctx)
	pl.SendQueryParams("SELECT 1", nil, nil, nil, nil)
	require.NoError(t, pl.Sync())
	pl.SendQueryParams("SELECT * FROM fetchq.doc_push('rl', 'a', 0, 0, NOW(), '{}')", nil, nil, nil, nil)
	require.NoError(t, pl.Sync())
	pl.SendQueryParams("SELECT 3", nil, nil, nil, nil)
	require.NoError(t, pl.Sync())
	require.NoError(t, pl.Flush())
	for _, want := range []string{"1", "1", "3"} {
		res, err := pl.GetResults()
		require.NoError(t, err)
		rr := res.(*pgconn.ResultReader).Read()
		require.NoError(t, rr.Err)
		require.Equal(t, want, string(rr.Rows[0][0]))
		res, err = pl.GetResults()
		require.NoError(t, err)
		require.IsType(t, &pgconn.PipelineSync{}, res)
	}
	require.NoError(t, pl.Close())
	in, back = relayStats(b)
	require.Equal(t, in0, in, "the session left the loop")
	require.Equal(t, back0+1, back)

	// Its goroutines serve it from now on.
	require.NoError(t, conn.QueryRow(ctx, "SELECT status FROM fetchq_data.rl__docs WHERE subject = 'a'").Scan(&n))
	require.Equal(t, 1, n)
	var pushed int
	require.NoError(t, conn.QueryRow(ctx, "SELECT queued_docs FROM fetchq.doc_push('rl', 'b', 0, 0, NOW(), '{}')").Scan(&pushed))
	require.Equal(t, 1, pushed)

	// A simple Query calling Fetchq, after plain ones in the same text.
	pg = connect(t, b.proxyDSN("", ""))
	res, err := pg.Exec(ctx, "SELECT 'x'; SELECT * FROM fetchq.doc_push('rl', 'c', 0, 0, NOW(), '{}'); SELECT 'y'").ReadAll()
	require.NoError(t, err)
	require.Len(t, res, 3)
	require.Equal(t, "x", string(res[0].Rows[0][0]))
	require.Equal(t, "1", string(res[1].Rows[0][0]))
	require.Equal(t, "y", string(res[2].Rows[0][0]))
	_, back = relayStats(b)
	require.Equal(t, back0+2, back)
}

// TestRelayLoopSplitMessages: messages that reach the loop a few bytes at
// a time, or many in one read, are forwarded whole and in order.
func TestRelayLoopSplitMessages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	hc := rawConn(t, b.proxyDSN("", ""))

	// One byte per write: every read of the loop holds part of a message.
	msg, err := (&pgproto3.Query{String: "SELECT 'split'"}).Encode(nil)
	require.NoError(t, err)
	for i := range msg {
		_, err := hc.Conn.Write(msg[i : i+1])
		require.NoError(t, err)
		time.Sleep(time.Millisecond)
	}
	x := receive(t, hc.Conn, hc.Frontend, 1)
	require.Equal(t, "TDCZ", x.types)

	// 300 queries in one write, split at an odd place in two.
	var all []byte
	for i := range 300 {
		all, err = (&pgproto3.Query{String: "SELECT " + strconv.Itoa(i)}).Encode(all)
		require.NoError(t, err)
	}
	_, err = hc.Conn.Write(all[:len(all)/3])
	require.NoError(t, err)
	time.Sleep(10 * time.Millisecond)
	_, err = hc.Conn.Write(all[len(all)/3:])
	require.NoError(t, err)
	_ = hc.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := range 300 {
		var got string
		for {
			m, err := hc.Frontend.Receive()
			require.NoError(t, err)
			if d, ok := m.(*pgproto3.DataRow); ok {
				got = string(d.Values[0])
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
		require.Equal(t, strconv.Itoa(i), got)
	}
	in, back := relayStats(b)
	require.Equal(t, int64(1), in)
	require.Zero(t, back)
}

// TestRelayLoopLargeMessages: messages larger than the loop keeps whole go
// through in both directions; a Query that large is left to the session's
// goroutines when Fetchq calls are intercepted (they inspect it whole).
func TestRelayLoopLargeMessages(t *testing.T) {
	t.Parallel()
	for _, fetchq := range []bool{false, true} {
		t.Run(fmt.Sprintf("intercepting=%v", fetchq), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			if fetchq {
				b = setupFetchq(t)
			}
			ctx := ctxT(t, time.Minute)
			conn, err := pgx.Connect(ctx, b.proxyDSN("", ""))
			require.NoError(t, err)
			defer conn.Close(ctx)

			// A 3 MB DataRow, twice (after a large message the next starts
			// where it ended).
			for range 2 {
				var s string
				require.NoError(t, conn.QueryRow(ctx, "SELECT repeat('ab', 1500000)").Scan(&s))
				require.Equal(t, strings.Repeat("ab", 1500000), s)
			}
			// A 2 MB Bind.
			big := strings.Repeat("é", 1<<20)
			var n int
			require.NoError(t, conn.QueryRow(ctx, "SELECT length($1::text)", big).Scan(&n))
			require.Equal(t, 1<<20, n)
			in, back := relayStats(b)
			require.Equal(t, int64(1), in)
			require.Zero(t, back)

			// A 100 KB Query.
			lit := strings.Repeat("q", 100_000)
			var got string
			require.NoError(t, conn.QueryRow(ctx, "SELECT '"+lit+"'::text", pgx.QueryExecModeSimpleProtocol).Scan(&got))
			require.Equal(t, lit, got)
			in, back = relayStats(b)
			if fetchq {
				require.Equal(t, [2]int64{0, 1}, [2]int64{in, back}, "handed back to be inspected")
			} else {
				require.Equal(t, [2]int64{1, 0}, [2]int64{in, back}, "nothing to inspect: passed through")
			}
			require.NoError(t, conn.QueryRow(ctx, "SELECT 7").Scan(&n))
			require.Equal(t, 7, n)
		})
	}
}

// TestRelayLoopSlowReader: a client that reads a large result slowly gets
// all of it, and the loop serves other sessions meanwhile.
func TestRelayLoopSlowReader(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 2*time.Minute)
	slow := connect(t, b.proxyDSN("", ""))
	others := make([]*pgconn.PgConn, 4)
	for i := range others {
		others[i] = connect(t, b.proxyDSN("", ""))
	}

	// About 40 MB: far more than the sockets hold.
	rr := slow.ExecParams(ctx, "SELECT g, repeat('z', 4000) FROM generate_series(1, 10000) g", nil, nil, nil, nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	served := make([]int, len(others))
	for i, c := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := c.Exec(ctx, "SELECT "+strconv.Itoa(i)).ReadAll()
				if err != nil || string(res[0].Rows[0][0]) != strconv.Itoa(i) {
					t.Errorf("session %d: %v", i, err)
					return
				}
				served[i]++
			}
		}()
	}
	rows := 0
	for rr.NextRow() {
		rows++
		require.Equal(t, strconv.Itoa(rows), string(rr.Values()[0]))
		require.Len(t, rr.Values()[1], 4000)
		if rows%500 == 0 {
			time.Sleep(20 * time.Millisecond) // about 0.4 s in all
		}
	}
	_, err := rr.Close()
	require.NoError(t, err)
	close(stop)
	wg.Wait()
	require.Equal(t, 10000, rows)
	for i, n := range served {
		require.Positive(t, n, "session %d was served while the slow one read", i)
	}
	in, back := relayStats(b)
	require.Equal(t, int64(1+len(others)), in)
	require.Zero(t, back)
}

// TestRelayLoopMatchesDirect: sequences of raw extended-protocol messages,
// errors in the middle of a batch included, get the same answers through
// the loop as from Postgres.
func TestRelayLoopMatchesDirect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	type seq struct {
		msgs    []pgproto3.FrontendMessage
		readies int
	}
	seqs := map[string]seq{
		"error then query before Sync": {[]pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "SELECT 1/0"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Query{String: "SELECT 2"}, &pgproto3.Parse{Query: "SELECT 3"}, &pgproto3.Sync{},
			&pgproto3.Query{String: "SELECT 4"},
		}, 2}, // the Query before the Sync is skipped
		"flush without sync": {[]pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "SELECT 5"}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
			&pgproto3.Flush{}, &pgproto3.Sync{},
		}, 1},
		"transaction and failed statement": {[]pgproto3.FrontendMessage{
			&pgproto3.Query{String: "BEGIN"}, &pgproto3.Query{String: "SELECT nope"},
			&pgproto3.Query{String: "SELECT 1"}, &pgproto3.Query{String: "ROLLBACK"},
		}, 4},
		"empty query and close": {[]pgproto3.FrontendMessage{
			&pgproto3.Query{String: ""}, &pgproto3.Parse{Name: "s1", Query: "SELECT 6"},
			&pgproto3.Close{ObjectType: 'S', Name: "s1"}, &pgproto3.Sync{},
		}, 2},
	}
	for name, sq := range seqs {
		msgs, readies := sq.msgs, sq.readies
		run := func(dsn string) exchange {
			hc := rawConn(t, dsn)
			for _, m := range msgs {
				hc.Frontend.Send(m)
			}
			require.NoError(t, hc.Frontend.Flush())
			return receive(t, hc.Conn, hc.Frontend, readies)
		}
		direct, proxied := run(b.directDSN("", "")), run(b.proxyDSN("", ""))
		require.Equal(t, direct.types, proxied.types, name)
		require.Equal(t, len(direct.errs), len(proxied.errs), name)
		for i := range direct.errs {
			require.Equal(t, direct.errs[i].Code, proxied.errs[i].Code, name)
		}
	}
	in, back := relayStats(b)
	require.Equal(t, int64(len(seqs)), in, "every proxied session is still in the loop")
	require.Zero(t, back)
}

// TestRelayLoopSkipsAfterError: once Postgres has reported an error in an
// extended-protocol batch, what the client sends before its Sync is
// skipped, by Postgres and by the loop's bookkeeping: the answers that
// follow still match their requests, and a Fetchq call after them (handed
// back to the session's goroutines, which wait for the answers the queue
// expects) is answered.
func TestRelayLoopSkipsAfterError(t *testing.T) {
	t.Parallel()
	b := setupFetchq(t)
	fetchqConn(t, b)
	_, back0 := relayStats(b)
	run := func(dsn string, fetchq bool) string {
		hc := rawConn(t, dsn)
		fe := hc.Frontend
		fe.Send(&pgproto3.Parse{Query: "SELECT 1/0"})
		fe.Send(&pgproto3.Bind{})
		fe.Send(&pgproto3.Execute{})
		fe.Send(&pgproto3.Flush{})
		require.NoError(t, fe.Flush())
		_ = hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		types := ""
		for !strings.HasSuffix(types, "E") {
			m, err := fe.Receive()
			require.NoError(t, err)
			types += fmt.Sprintf("%T;", m)[len("*pgproto3."):]
			if _, ok := m.(*pgproto3.ErrorResponse); ok {
				types += "E"
			}
		}
		// The error is in: these are skipped up to the Sync.
		fe.Send(&pgproto3.Parse{Query: "SELECT 3"})
		fe.Send(&pgproto3.Bind{})
		fe.Send(&pgproto3.Execute{})
		fe.Send(&pgproto3.Query{String: "SELECT 33"})
		fe.Send(&pgproto3.Sync{})
		fe.Send(&pgproto3.Query{String: "SELECT 4"})
		require.NoError(t, fe.Flush())
		types += "|" + receive(t, hc.Conn, fe, 2).types
		if fetchq {
			fe.Send(&pgproto3.Query{String: "SELECT version FROM fetchq.info()"})
			require.NoError(t, fe.Flush())
			types += "|" + receive(t, hc.Conn, fe, 1).types
		}
		return types
	}
	direct, proxied := run(b.directDSN("", ""), false), run(b.proxyDSN("", ""), true)
	require.Equal(t, direct+"|TDCZ", proxied)
	require.True(t, strings.HasSuffix(direct, "|ZTDCZ"), direct)
	_, back := relayStats(b)
	require.Equal(t, back0+1, back)
}
