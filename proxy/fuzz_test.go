package proxy_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/fetchq/fetchq-proxy/internal/pgtest"
	"github.com/fetchq/fetchq-proxy/proxy"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"
)

// Fuzz targets for the proxy's startup and message handling, driven over
// the network against a real proxy and Postgres (the decoder has no
// exported hook). Seeds are the files of testdata/fuzz/<Target> at the
// repository root, in Go's corpus format; `go test -fuzz` writes new
// failing inputs to proxy/testdata/fuzz/<Target>: move them there.
//
//	go test ./proxy -run XXX -fuzz FuzzStartup -fuzztime 10m
//	go test ./proxy -run XXX -fuzz FuzzClientMessages -fuzztime 10m
//
// Each input must leave the proxy alive (a panic in a session goroutine
// kills the process, which the fuzzer reports), answering or closing the
// connection within a deadline, sending only well-formed messages, and
// still serving other clients.

const fuzzCorpusRoot = "../testdata/fuzz"

// fuzzRole runs the fuzzed sessions: it may use the Fetchq tables but is
// no superuser, and its statements time out, so that mutated SQL can
// neither damage the server nor hold it.
const fuzzRole = "fq_fuzz"

// fuzzDeadline bounds how long the proxy may take to answer or close.
const fuzzDeadline = 10 * time.Second

// fuzzEnv is a proxy (plain and TLS listeners) in front of a database with
// a Fetchq queue, shared by every input a fuzz target runs in one process.
type fuzzEnv struct {
	db        *pgtest.DB
	addr      string // plain
	tlsAddr   string // with a certificate: SSLRequest is answered 'S'
	canaries  []*pgconn.PgConn
	dsns      []string
	iteration atomic.Int64
}

func setupFuzz(tb testing.TB) *fuzzEnv {
	tb.Helper()
	db := pgtest.NewDB(tb)
	up, err := pgconn.ParseConfig(pgtest.AdminConnString())
	require.NoError(tb, err)
	e := &fuzzEnv{db: db}
	cert := fuzzCert(tb)
	for _, tlsCfg := range []*tls.Config{nil, {Certificates: []tls.Certificate{cert}}} {
		srv := proxy.NewServer(proxy.Config{
			Upstream:       up,
			TLSConfig:      tlsCfg,
			StartupTimeout: 2 * time.Second,
			Rewriter:       rewriter,
			Queue:          backend.New(backend.Config{}),
			MaxClients:     200,
		})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(tb, err)
		serveBounded(tb, srv, ln)
		addr := ln.Addr().String()
		host, port, _ := net.SplitHostPort(addr)
		dsn := fmt.Sprintf("host=%s port=%s user=postgres dbname=%s sslmode=disable", host, port, db.Name)
		if tlsCfg == nil {
			e.addr = addr
		} else {
			e.tlsAddr = addr
			dsn = strings.Replace(dsn, "sslmode=disable", "sslmode=require", 1)
		}
		e.dsns = append(e.dsns, dsn)
	}

	// The Fetchq schema, a queue with documents, and the fuzz role.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgconn.Connect(ctx, e.dsns[0])
	require.NoError(tb, err)
	defer admin.Close(context.Background())
	for _, sql := range []string{
		"SELECT * FROM fetchq.init()",
		"SELECT * FROM fetchq.queue_create('fz')",
		"SELECT * FROM fetchq.queue_enable_notify('fz')",
		"SELECT * FROM fetchq.doc_push('fz', 0, NOW() - INTERVAL '1 minute', '(''f1'', 0, ''{}'', {DATA}), (''f2'', 5, ''{\"a\":1}'', {DATA})')",
		"SELECT * FROM fetchq.doc_push('fz', 'f3', 0, 0, NOW() + INTERVAL '1 hour', '{}')",
		`DO $$ BEGIN
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '` + fuzzRole + `') THEN CREATE ROLE ` + fuzzRole + ` LOGIN; END IF;
		EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$`,
		"ALTER ROLE " + fuzzRole + " SET statement_timeout = '1s'",
		"ALTER ROLE " + fuzzRole + " SET lock_timeout = '1s'",
		"ALTER ROLE " + fuzzRole + " SET idle_in_transaction_session_timeout = '5s'",
		"GRANT USAGE ON SCHEMA fetchq, fetchq_data TO " + fuzzRole,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA fetchq, fetchq_data TO " + fuzzRole,
		"GRANT USAGE ON ALL SEQUENCES IN SCHEMA fetchq, fetchq_data TO " + fuzzRole,
	} {
		_, err := admin.Exec(ctx, sql).ReadAll()
		require.NoError(tb, err, sql)
	}
	for _, dsn := range e.dsns {
		c, err := pgconn.Connect(ctx, dsn)
		require.NoError(tb, err)
		tb.Cleanup(func() { c.Close(context.Background()) })
		e.canaries = append(e.canaries, c)
	}
	return e
}

// check requires both proxies to keep serving: the long-lived canary
// sessions answer, and every 50 inputs new clients can connect.
func (e *fuzzEnv) check(t *testing.T, input []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fuzzDeadline)
	defer cancel()
	for i, c := range e.canaries {
		res, err := c.Exec(ctx, "SELECT 1").ReadAll()
		require.NoError(t, err, "canary session %d stopped being served after input %q", i, input)
		require.Equal(t, "1", string(res[0].Rows[0][0]))
	}
	if e.iteration.Add(1)%50 != 0 {
		return
	}
	for _, dsn := range e.dsns {
		c, err := pgconn.Connect(ctx, dsn)
		require.NoError(t, err, "a new client cannot connect after input %q", input)
		_, err = c.Exec(ctx, "SELECT * FROM fetchq.doc_pick('fz', 0, 0, '5m')").ReadAll()
		require.NoError(t, err)
		c.Close(context.Background())
	}
}

// fuzzCert makes a throw-away certificate for 127.0.0.1.
func fuzzCert(tb testing.TB) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fetchq-proxy fuzz"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(tb, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// corpus reads the seed files of testdata/fuzz/<target> at the repository
// root: "go test fuzz v1", then one value per line, []byte("..."),
// string("...") or bool(...).
func corpus(tb testing.TB, target string) [][]any {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(fuzzCorpusRoot, target, "*"))
	require.NoError(tb, err)
	require.NotEmpty(tb, files, "no seeds in %s", filepath.Join(fuzzCorpusRoot, target))
	var out [][]any
	for _, file := range files {
		fh, err := os.Open(file)
		require.NoError(tb, err)
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
		require.True(tb, sc.Scan(), file)
		require.Equal(tb, "go test fuzz v1", sc.Text(), file)
		var vals []any
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			switch {
			case strings.HasPrefix(line, "[]byte(") && strings.HasSuffix(line, ")"):
				s, err := strconv.Unquote(line[len("[]byte(") : len(line)-1])
				require.NoError(tb, err, file)
				vals = append(vals, []byte(s))
			case strings.HasPrefix(line, "string(") && strings.HasSuffix(line, ")"):
				s, err := strconv.Unquote(line[len("string(") : len(line)-1])
				require.NoError(tb, err, file)
				vals = append(vals, s)
			case line == "bool(true)" || line == "bool(false)":
				vals = append(vals, line == "bool(true)")
			default:
				tb.Fatalf("%s: unsupported corpus line %q", file, line)
			}
		}
		require.NoError(tb, sc.Err(), file)
		require.NoError(tb, fh.Close())
		out = append(out, vals)
	}
	return out
}

// drain reads what the proxy sends until it closes the connection, and
// fails if it neither closes nor stops within fuzzDeadline.
func drain(t *testing.T, conn net.Conn, input []byte) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(fuzzDeadline))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the proxy neither answered nor closed within %v after input %q", fuzzDeadline, input)
	}
}

// FuzzStartup sends arbitrary bytes as a client's first packets (to the
// plain listener, or to the one with a certificate), then half-closes:
// the proxy must answer or close within the deadline, and keep serving.
func FuzzStartup(f *testing.F) {
	for _, seed := range corpus(f, "FuzzStartup") {
		require.Len(f, seed, 2)
		data, ok1 := seed[0].([]byte)
		useTLS, ok2 := seed[1].(bool)
		require.True(f, ok1 && ok2, "FuzzStartup seeds are ([]byte, bool)")
		f.Add(data, useTLS)
	}
	e := setupFuzz(f)
	f.Fuzz(func(t *testing.T, data []byte, useTLS bool) {
		addr := e.addr
		if useTLS {
			addr = e.tlsAddr
		}
		conn, err := net.DialTimeout("tcp", addr, fuzzDeadline)
		require.NoError(t, err)
		defer conn.Close()
		_ = conn.SetWriteDeadline(time.Now().Add(fuzzDeadline))
		_, _ = conn.Write(data) // the proxy may close before reading it all
		_ = conn.(*net.TCPConn).CloseWrite()
		drain(t, conn, data)
		e.check(t, data)
	})
}

// FuzzClientMessages completes a normal startup as fuzzRole, sends
// arbitrary bytes as the client's messages, and half-closes. Everything
// the proxy sends back must decode as backend messages (the last one may
// be cut by the close), the proxy must close within the deadline, and
// other sessions must still be served.
func FuzzClientMessages(f *testing.F) {
	for _, seed := range corpus(f, "FuzzClientMessages") {
		require.Len(f, seed, 1)
		data, ok := seed[0].([]byte)
		require.True(f, ok, "FuzzClientMessages seeds are ([]byte)")
		f.Add(data)
	}
	e := setupFuzz(f)
	startup := startupPacket(3<<16, "user", fuzzRole, "database", e.db.Name, "application_name", "fuzz")
	f.Fuzz(func(t *testing.T, data []byte) {
		conn, err := net.DialTimeout("tcp", e.addr, fuzzDeadline)
		require.NoError(t, err)
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(fuzzDeadline))
		_, err = conn.Write(startup)
		require.NoError(t, err)
		fe := pgproto3.NewFrontend(conn, conn)
		fe.SetMaxBodyLen(1 << 30)
		for {
			msg, err := fe.Receive()
			require.NoError(t, err, "startup through the proxy failed")
			if er, ok := msg.(*pgproto3.ErrorResponse); ok {
				t.Fatalf("startup refused: %s %s", er.Code, er.Message)
			}
			if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
		_, _ = conn.Write(data) // the proxy may close before reading it all
		_ = conn.(*net.TCPConn).CloseWrite()
		for {
			_, err := fe.Receive()
			if err == nil {
				continue
			}
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				t.Fatalf("the proxy neither answered nor closed within %v after input %q", fuzzDeadline, data)
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
				errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
			default:
				t.Fatalf("the proxy sent a malformed message after input %q: %v", data, err)
			}
			break
		}
		e.check(t, data)
	})
}
