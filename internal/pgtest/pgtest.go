// Package pgtest gives tests a real, throw-away PostgreSQL: one server per
// test package and a fresh database per test, cloned from a template.
//
// It is for tests only; non-test code never imports it.
//
// # Use
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		db := pgtest.NewDB(t)
//		pool := db.Pool(t)
//		...
//	}
//
// [Main] starts the server (through internal/pgserver: initdb --no-sync into
// a short directory under /tmp, Unix socket only, trust authentication, as
// the postgres OS user when the tests run as root), runs the tests, stops the
// server, removes its directory, and fails the package if goroutines leaked.
//
// [NewDB] builds the template database fetchq_tmpl once per package (running
// [Options.TemplateSQL] in it) and then gives each caller its own database
// created with CREATE DATABASE ... TEMPLATE fetchq_tmpl, so tests can run in
// parallel without seeing each other's writes. See
// https://www.postgresql.org/docs/current/manage-ag-templatedbs.html.
//
// # An existing server
//
// When FETCHQ_TEST_DATABASE_URL is set (a libpq URL or keyword/value string
// for a role that may create databases), the tests use that server instead of
// starting one. Databases are still created per test; the template is named
// fetchq_tmpl_<pid> there so that concurrently running test packages do not
// share one, and it is dropped at the end. Options.Settings and Options.HBA
// do not apply to such a server.
//
// # No PostgreSQL
//
// Without server binaries and without FETCHQ_TEST_DATABASE_URL, Main fails
// the package with a message saying what to install. It never skips: a
// skipped test proves nothing.
package pgtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fetchq/fetchq-proxy/internal/pgserver"
)

// EnvDatabaseURL names the environment variable that points the tests at an
// existing server instead of starting one, like pgx's PGX_TEST_DATABASE.
const EnvDatabaseURL = "FETCHQ_TEST_DATABASE_URL"

// EnvLogServer, when set to a non-empty value, has the same effect as
// Options.LogServer.
const EnvLogServer = "FETCHQ_TEST_LOG_SERVER"

// TemplateName is the template database the per-test databases are cloned
// from, on the server pgtest starts itself.
const TemplateName = "fetchq_tmpl"

// Options configures [MainWith].
type Options struct {
	// Settings are extra server settings (postgres -c key=value), e.g.
	// {"max_connections": "300"}. They override pgtest's defaults.
	Settings map[string]string

	// HBA holds extra pg_hba.conf lines, placed before the final
	// `local all all trust` line, e.g. "local all scram_user scram-sha-256"
	// to test password authentication.
	HBA []string

	// TemplateSQL holds statements run in order, once per package, in the
	// template database; every database [NewDB] returns starts with their
	// effects. A string may hold several statements (it is sent with the
	// simple query protocol).
	TemplateSQL []string

	// LogServer copies the server log to stderr when the package's tests
	// end. The environment variable FETCHQ_TEST_LOG_SERVER does the same.
	LogServer bool
}

// defaultSettings leave room for many parallel tests, each with a pool.
var defaultSettings = map[string]string{
	"max_connections": "300",
}

// ServerInfo describes the server a test package runs against.
type ServerInfo struct {
	// Host is the directory of the Unix socket of the server pgtest started,
	// or the host of FETCHQ_TEST_DATABASE_URL.
	Host string

	// Port is the server's port; for a Unix socket it names the socket file
	// .s.PGSQL.<Port> in Host.
	Port int

	// SocketDir is the directory holding the Unix socket of the server pgtest
	// started. It is empty for a server given by FETCHQ_TEST_DATABASE_URL.
	SocketDir string

	// External reports that FETCHQ_TEST_DATABASE_URL chose the server.
	External bool
}

// env is the package's test environment, set up by Main.
type env struct {
	opts     Options
	info     ServerInfo
	server   *pgserver.Server // nil when external
	tmpDir   string           // the server's directory; "" when external
	template string
	adminDSN string
	baseDSN  string         // FETCHQ_TEST_DATABASE_URL in keyword/value form, when external
	baseCfg  *pgconn.Config // its parsed form
	admin    *pgxpool.Pool

	templateOnce sync.Once
	templateErr  error
}

// current is set by Main before the tests run and read-only afterwards.
var current *env

// Main runs the package's tests against a fresh PostgreSQL server with the
// default [Options]. Call it from TestMain; it does not return.
func Main(m *testing.M) { MainWith(m, Options{}) }

// MainWith is [Main] with options. It starts the server, runs m, stops the
// server, removes its directory, checks for leaked goroutines and exits with
// the tests' status (1 if setup, teardown or the leak check failed).
func MainWith(m *testing.M, opts Options) {
	os.Exit(run(m, opts))
}

// Run is [MainWith] that returns the exit status instead of exiting, for a
// TestMain that has its own clean-up to do afterwards (e.g. removing a binary
// it built for the tests).
func Run(m *testing.M, opts Options) int {
	return run(m, opts)
}

func run(m *testing.M, opts Options) int {
	e, err := setup(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	current = e

	code := m.Run()

	if err := e.teardown(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		code = max(code, 1)
	}
	if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
		fmt.Fprintf(os.Stderr, "pgtest: goroutines still running after the tests ended "+
			"(stop what you start: Close pools, servers and services in t.Cleanup):\n\n%s\n", leaked)
		code = max(code, 1)
	}
	return code
}

func setup(opts Options) (*env, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts.LogServer = opts.LogServer || os.Getenv(EnvLogServer) != ""
	e := &env{opts: opts}

	if dsn := os.Getenv(EnvDatabaseURL); dsn != "" {
		cfg, err := pgconn.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", EnvDatabaseURL, err)
		}
		kv, err := keywordValue(dsn)
		if err == nil {
			var kvCfg *pgconn.Config
			if kvCfg, err = pgconn.ParseConfig(kv); err == nil && (kvCfg.Host != cfg.Host || kvCfg.Port != cfg.Port ||
				kvCfg.User != cfg.User || kvCfg.Password != cfg.Password || kvCfg.Database != cfg.Database) {
				err = errors.New("converting it to keyword/value form changed its meaning")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v; write it in keyword/value form (host=... port=... user=... dbname=...)", EnvDatabaseURL, err)
		}
		conn, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", EnvDatabaseURL, err)
		}
		_ = conn.Close(ctx)
		e.baseDSN, e.baseCfg = kv, cfg
		e.adminDSN = kv
		e.template = fmt.Sprintf("%s_%d", TemplateName, os.Getpid())
		e.info = ServerInfo{Host: cfg.Host, Port: int(cfg.Port), External: true}
	} else {
		// A short path: the socket path must fit in 107 bytes.
		dir, err := os.MkdirTemp("/tmp", "fq")
		if err != nil {
			return nil, err
		}
		settings := maps.Clone(defaultSettings)
		maps.Copy(settings, opts.Settings)
		srv, err := pgserver.Start(ctx, pgserver.Options{
			DataDir:  dir,
			Fast:     true,
			Settings: settings,
			HBA:      opts.HBA,
		})
		if err != nil {
			_ = os.RemoveAll(dir)
			if errors.Is(err, pgserver.ErrNoBinaries) {
				return nil, fmt.Errorf("%w; or set %s to an existing server's URL", err, EnvDatabaseURL)
			}
			return nil, err
		}
		e.server, e.tmpDir = srv, dir
		e.adminDSN = srv.ConnString(pgserver.SuperUser, "postgres")
		e.template = TemplateName
		e.info = ServerInfo{Host: srv.SocketDir(), Port: srv.Port(), SocketDir: srv.SocketDir()}
	}

	admin, err := pgxpool.New(ctx, e.adminDSN)
	if err != nil {
		_ = e.teardown()
		return nil, err
	}
	e.admin = admin
	return e, nil
}

// teardown drops what pgtest created on an external server, or stops and
// removes the server it started.
func (e *env) teardown() error {
	var errs []error
	if e.admin != nil {
		if e.server == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			errs = append(errs, e.dropDatabase(ctx, e.template))
			cancel()
		}
		e.admin.Close()
	}
	if e.server != nil {
		if e.opts.LogServer {
			errs = append(errs, copyFile(os.Stderr, e.server.LogPath()))
		}
		errs = append(errs, e.server.StopImmediate(), os.RemoveAll(e.tmpDir))
	}
	return errors.Join(errs...)
}

func copyFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(w, "--- %s ---\n", path)
	_, err = io.Copy(w, f)
	return err
}

// mustEnv returns the environment set up by Main, or panics with the fix.
func mustEnv() *env {
	if current == nil {
		panic("pgtest: no server: call pgtest.Main(m) from the package's TestMain")
	}
	return current
}

// Server describes the server the package's tests run against. It panics if
// [Main] was not called.
func Server() ServerInfo { return mustEnv().info }

// AdminConnString returns a keyword/value connection string for the
// superuser postgres to the database postgres, for setup such as CREATE
// ROLE. With FETCHQ_TEST_DATABASE_URL it is that URL, in keyword/value form.
// It panics if [Main] was not called.
func AdminConnString() string { return mustEnv().adminDSN }

// connString returns a keyword/value connection string to database as
// user; an empty user means the admin user. Being keyword/value, callers
// may append settings such as " password=secret": later ones win.
func (e *env) connString(user, database string) string {
	if e.server != nil {
		return e.server.ConnString(cmp.Or(user, pgserver.SuperUser), database)
	}
	s := e.baseDSN + " dbname=" + quoteValue(database)
	if user != "" && user != e.baseCfg.User {
		s += " user=" + quoteValue(user) + " password=''" // the admin's password is not this role's
	}
	return s
}

// keywordValue converts a postgres:// URL to the equivalent keyword/value
// string, so that settings can be appended to it; other strings are
// returned as they are. URL query parameters are libpq keywords. See
// https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING-URIS.
func keywordValue(dsn string) (string, error) {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn, nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", errors.New("cannot parse the URL") // its error would echo the password
	}
	var parts []string
	add := func(k, v string) { parts = append(parts, k+"="+quoteValue(v)) }
	if u.User != nil {
		add("user", u.User.Username())
		if pw, ok := u.User.Password(); ok {
			add("password", pw)
		}
	}
	if u.Host != "" {
		var hosts, ports []string
		for hp := range strings.SplitSeq(u.Host, ",") {
			host, port := hp, ""
			if i := strings.LastIndexByte(hp, ':'); i >= 0 && !strings.Contains(hp[i:], "]") {
				host, port = hp[:i], hp[i+1:]
			}
			hosts = append(hosts, strings.Trim(host, "[]"))
			ports = append(ports, cmp.Or(port, "5432"))
		}
		add("host", strings.Join(hosts, ","))
		add("port", strings.Join(ports, ","))
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		add("dbname", db)
	}
	q := u.Query()
	for _, k := range slices.Sorted(maps.Keys(q)) {
		for _, v := range q[k] {
			add(k, v)
		}
	}
	return strings.Join(parts, " "), nil
}

// buildTemplate creates the template database and runs TemplateSQL in it,
// then closes every connection to it: PostgreSQL refuses to copy a database
// that has other sessions.
func (e *env) buildTemplate() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ident := pgx.Identifier{e.template}.Sanitize()
	if err := e.dropDatabase(ctx, e.template); err != nil {
		return err
	}
	if _, err := e.admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return err
	}
	if len(e.opts.TemplateSQL) == 0 {
		return nil
	}
	conn, err := pgx.Connect(ctx, e.connString("", e.template))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for i, stmt := range e.opts.TemplateSQL {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("TemplateSQL[%d] (%s): %w", i, firstLine(stmt), err)
		}
	}
	return conn.Close(ctx)
}

// dropDatabase drops a database if it exists, ending its sessions (WITH
// FORCE, PostgreSQL 13+). A session that is still closing can belong to a
// role the admin may not signal; it is gone a moment later, so retry until
// ctx ends.
func (e *env) dropDatabase(ctx context.Context, name string) error {
	sql := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"
	for {
		_, err := e.admin.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) ||
			(pgErr.Code != "42501" && pgErr.Code != "55006") { // insufficient_privilege, object_in_use
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

// quoteValue quotes a keyword/value connection string value when needed.
func quoteValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\\'") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
