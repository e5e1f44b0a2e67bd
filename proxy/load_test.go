package proxy_test

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/internal/pgtest"
	"github.com/fetchq/fetchq-proxy/proxy"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"
)

// TestThousandIdleClients: 1,000 clients connect, stay idle together, and
// are all served when they speak again. While idle, their sessions hold
// no read buffer: in the relay loop, or on their own goroutines.
func TestThousandIdleClients(t *testing.T) {
	t.Parallel()
	t.Run("relay loop", func(t *testing.T) { thousandIdleClients(t, setup(t), true) })
	t.Run("goroutines", func(t *testing.T) { thousandIdleClients(t, setup(t, noRelayLoop), false) })
}

func thousandIdleClients(t *testing.T, b *testBundle, relayed bool) {
	const n = 1000
	conns := make([]*pgconn.PgConn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := pgconn.Connect(ctx, b.proxyDSN("", ""))
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	})
	for err := range errs {
		require.NoError(t, err)
	}
	// All idle at once: every session is in the relay loop, which holds
	// no reader, or past the idle-release delay (1s) its two readers wait
	// without a buffer (other tests' idle sessions count too, so at
	// least).
	idle := func() int64 {
		inLoop, _ := b.srv.RelayStats()
		return proxy.IdleReaders() + 2*inLoop
	}
	require.Eventually(t, func() bool { return idle() >= 2*n }, 20*time.Second, 50*time.Millisecond,
		"idle readers, and two per session in the relay loop: %d", idle())
	inLoop, _ := b.srv.RelayStats()
	if relayed {
		require.Equal(t, int64(n), inLoop, "sessions in the relay loop")
	} else {
		require.Zero(t, inLoop)
	}

	var served atomic.Int64
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := c.Exec(ctx, "SELECT "+itoa(i)).ReadAll()
			if err == nil && string(res[0].Rows[0][0]) == itoa(i) {
				served.Add(1)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, int64(n), served.Load())
}

// TestGarbageClientIsolated: a client that sends garbage after startup is
// disconnected with FATAL 08P01 while other clients keep working.
func TestGarbageClientIsolated(t *testing.T) {
	t.Parallel()
	b := setup(t)

	stop := make(chan struct{})
	var okQueries atomic.Int64
	var workerErr atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		conn := connect(t, b.proxyDSN("", ""))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := conn.Exec(context.Background(), "SELECT 1").ReadAll()
				if err != nil || string(res[0].Rows[0][0]) != "1" {
					workerErr.Store(err)
					return
				}
				okQueries.Add(1)
			}
		}()
	}

	// Garbage after a good startup: an unknown message type.
	garbage := connect(t, b.proxyDSN("", ""))
	hc, err := garbage.Hijack()
	require.NoError(t, err)
	junk := make([]byte, 4096)
	_, _ = rand.Read(junk)
	junk[0] = 0xFE
	_ = hc.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = hc.Conn.Write(junk)
	require.NoError(t, err)
	msg, err := hc.Frontend.Receive()
	require.NoError(t, err)
	er, ok := msg.(*pgproto3.ErrorResponse)
	require.True(t, ok, "got %T", msg)
	require.Equal(t, "FATAL", er.Severity)
	require.Equal(t, "08P01", er.Code)
	_, err = hc.Frontend.Receive()
	require.Error(t, err, "connection should be closed")

	// Garbage instead of a startup packet.
	raw, err := net.Dial("tcp", net.JoinHostPort(b.host, itoa(b.port)))
	require.NoError(t, err)
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = raw.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	_, err = io.ReadAll(raw)
	var ne net.Error
	if errors.As(err, &ne) {
		require.False(t, ne.Timeout(), "the proxy should close the connection, not wait")
	}
	raw.Close()

	before := okQueries.Load()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	require.Nil(t, workerErr.Load())
	require.Greater(t, okQueries.Load(), before, "other clients stopped being served")
}

// TestMaxClients: past --max-clients a client gets FATAL 53300 and the
// clients already in are unaffected.
func TestMaxClients(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *proxy.Config, _ *pgtest.DB) { c.MaxClients = 3 })
	var conns []*pgconn.PgConn
	for range 3 {
		conns = append(conns, connect(t, b.proxyDSN("", "")))
	}
	_, err := pgconn.Connect(ctxT(t, 10*time.Second), b.proxyDSN("", ""))
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "53300", pgErr.Code)
	require.Equal(t, "sorry, too many clients already", pgErr.Message)
	for _, c := range conns {
		_, err := c.Exec(ctxT(t, 10*time.Second), "SELECT 1").ReadAll()
		require.NoError(t, err)
	}
	// A slot freed is a slot available.
	require.NoError(t, conns[0].Close(context.Background()))
	require.Eventually(t, func() bool {
		c, err := pgconn.Connect(context.Background(), b.proxyDSN("", ""))
		if err != nil {
			return false
		}
		c.Close(context.Background())
		return true
	}, 5*time.Second, 50*time.Millisecond)
}
