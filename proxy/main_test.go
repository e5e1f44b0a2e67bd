package proxy_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/fetchq/fetchq-proxy/internal/pgtest"
	"github.com/fetchq/fetchq-proxy/proxy"
	"github.com/fetchq/fetchq-proxy/rewrite"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// Password-authenticated roles for the auth tests. pg_hba sends them to md5
// and SCRAM; every other role is trusted on the private socket.
const (
	md5User      = "fq_md5"
	md5Password  = "md5 sécret'pw"
	scramUser    = "fq_scram"
	scramPasswd  = "scram-sécret\"pw"
	maxTestConns = 1300
)

func TestMain(m *testing.M) {
	pgtest.MainWith(m, pgtest.Options{
		Settings: map[string]string{"max_connections": strconv.Itoa(maxTestConns)},
		HBA: []string{
			"local all " + md5User + " md5",
			"local all " + scramUser + " scram-sha-256",
		},
		TemplateSQL: []string{
			"SET password_encryption = 'md5'",
			fmt.Sprintf("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s LOGIN PASSWORD '%s'; END IF; END $$",
				md5User, md5User, "md5 sécret''pw"),
			"SET password_encryption = 'scram-sha-256'",
			fmt.Sprintf("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s LOGIN PASSWORD '%s'; END IF; END $$",
				scramUser, scramUser, scramPasswd),
			"GRANT ALL ON SCHEMA public TO PUBLIC",
		},
	})
}

// testBundle is a proxy in front of a fresh database.
type testBundle struct {
	db   *pgtest.DB
	srv  *proxy.Server
	host string
	port int
}

// setupOpt adjusts the proxy's Config; db is the test's database.
type setupOpt func(c *proxy.Config, db *pgtest.DB)

// noRelayLoop serves every session on its own goroutines.
func noRelayLoop(c *proxy.Config, _ *pgtest.DB) { c.NoRelayLoop = true }

// setup starts a proxy on 127.0.0.1:0 in front of a fresh database. The
// proxy is closed when the test ends.
func setup(t *testing.T, opts ...setupOpt) *testBundle {
	t.Helper()
	db := pgtest.NewDB(t)
	up, err := pgconn.ParseConfig(pgtest.AdminConnString())
	require.NoError(t, err)
	cfg := proxy.Config{Upstream: up, Logger: testLogger(t)}
	for _, o := range opts {
		o(&cfg, db)
	}
	srv := proxy.NewServer(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		require.ErrorIs(t, <-served, proxy.ErrServerClosed)
	})
	return &testBundle{db: db, srv: srv, host: "127.0.0.1", port: ln.Addr().(*net.TCPAddr).Port}
}

// proxyDSN is a DSN to the test database through the proxy.
func (b *testBundle) proxyDSN(user, password string) string {
	if user == "" {
		user = "postgres"
	}
	s := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", b.host, b.port, user, b.db.Name)
	if password != "" {
		s += " password=" + quoteDSNValue(password)
	}
	return s
}

// directDSN is a DSN to the same database straight to Postgres.
func (b *testBundle) directDSN(user, password string) string {
	s := b.db.ConnString(user)
	if password != "" {
		s += " password=" + quoteDSNValue(password)
	}
	return s
}

func quoteDSNValue(v string) string {
	out := []byte{'\''}
	for i := 0; i < len(v); i++ {
		if v[i] == '\'' || v[i] == '\\' {
			out = append(out, '\\')
		}
		out = append(out, v[i])
	}
	return string(append(out, '\''))
}

// connect opens a pgconn connection and closes it when the test ends.
func connect(t *testing.T, dsn string) *pgconn.PgConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// testLogger logs through t, so output shows only for failing tests.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	defer func() { _ = recover() }() // logging after the test ended
	w.t.Log(string(p))
	return len(p), nil
}

// both runs fn against direct Postgres and through the proxy.
func (b *testBundle) both(t *testing.T, fn func(t *testing.T, dsn func(user, password string) string)) {
	t.Run("direct", func(t *testing.T) { fn(t, b.directDSN) })
	t.Run("proxy", func(t *testing.T) { fn(t, b.proxyDSN) })
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// rewriter is shared by the package's proxies, as by one proxy's sessions.
var rewriter = rewrite.New(1024)

// setupFetchq starts a proxy that intercepts Fetchq calls.
func setupFetchq(t *testing.T, opts ...setupOpt) *testBundle {
	t.Helper()
	return setup(t, append([]setupOpt{func(c *proxy.Config, _ *pgtest.DB) {
		c.Rewriter = rewriter
		c.Queue = backend.New(backend.Config{Logger: c.Logger})
	}}, opts...)...)
}

// setupMaintained starts a Fetchq proxy wired as the command wires it:
// shared counters and a running maintainer on a service pool.
func setupMaintained(t *testing.T) (*testBundle, *backend.Maintainer) {
	b, m, _ := setupFull(t)
	return b, m
}

// setupFull is setupMaintained that also returns the Batcher; opts
// adjust the configuration after it is wired.
func setupFull(t *testing.T, opts ...setupOpt) (*testBundle, *backend.Maintainer, *backend.Batcher) {
	t.Helper()
	metrics := backend.NewMetrics()
	var store *backend.Store
	var batcher *backend.Batcher
	b := setup(t, append([]setupOpt{func(c *proxy.Config, db *pgtest.DB) {
		store = backend.New(backend.Config{Logger: c.Logger, Metrics: metrics})
		batcher = backend.NewBatcher(backend.BatcherConfig{Pool: db.Pool(t), Store: store})
		c.Rewriter, c.Queue, c.Counters, c.Batcher = rewriter, store, metrics, batcher
		c.Database = db.Name
	}}, opts...)...)
	pool := b.db.Pool(t)
	m, err := backend.NewMaintainer(backend.MaintainerConfig{
		Pool: pool, Store: store, Metrics: metrics, Logger: testLogger(t),
		Interval: 100 * time.Millisecond, FlushInterval: 200 * time.Millisecond,
	})
	require.NoError(t, err)
	require.NoError(t, m.Start(context.Background()))
	t.Cleanup(m.Stop)
	return b, m, batcher
}
