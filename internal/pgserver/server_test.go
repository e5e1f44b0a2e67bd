package pgserver_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/fetchq/fetchq-proxy/internal/pgserver"
)

// shortTempDir returns a fresh directory under /tmp, short enough for a Unix
// socket path, removed when the test ends.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "fq")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, os.RemoveAll(dir)) })
	return dir
}

type testBundle struct {
	dataDir string
	opts    pgserver.Options
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	dir := shortTempDir(t)
	return &testBundle{
		dataDir: dir,
		opts:    pgserver.Options{DataDir: dir, Fast: true},
	}
}

// start starts a server and stops it when the test ends.
func start(t *testing.T, opts pgserver.Options) *pgserver.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := pgserver.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.StopImmediate()) })
	return s
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestStartStop(t *testing.T) {
	t.Parallel()
	bundle := setup(t)

	s := start(t, bundle.opts)
	require.Equal(t, bundle.dataDir, s.SocketDir())
	require.Equal(t, pgserver.DefaultPort, s.Port())
	require.FileExists(t, filepath.Join(bundle.dataDir, ".s.PGSQL.5432"))
	require.Equal(t,
		"host="+bundle.dataDir+" port=5432 user=postgres dbname=postgres sslmode=disable",
		s.ConnString("postgres", "postgres"))

	conn := connect(t, s.ConnString("postgres", "postgres"))
	var one int
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT 1").Scan(&one))
	require.Equal(t, 1, one)

	var fsync, listen string
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT current_setting('fsync'), current_setting('listen_addresses')").Scan(&fsync, &listen))
	require.Equal(t, "off", fsync)
	require.Empty(t, listen)

	require.NoError(t, s.Stop())
	require.NoError(t, s.Stop(), "Stop is idempotent")
	require.NoError(t, s.StopImmediate())
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	require.NoFileExists(t, filepath.Join(bundle.dataDir, ".s.PGSQL.5432"), "fast shutdown removes the socket")
	require.NoFileExists(t, filepath.Join(bundle.dataDir, "postmaster.pid"))
}

func TestRestartReusesDataDir(t *testing.T) {
	t.Parallel()
	bundle := setup(t)
	// MkdirTemp makes a 0700 directory; the postgres user must enter it to
	// reach the directories Start creates inside.
	require.NoError(t, os.Chmod(bundle.dataDir, 0o755))
	bundle.opts.DataDir = filepath.Join(bundle.dataDir, "data") // created by Start
	bundle.opts.SocketDir = filepath.Join(bundle.dataDir, "sock")
	bundle.opts.Port = 6543

	s := start(t, bundle.opts)
	require.FileExists(t, filepath.Join(bundle.opts.SocketDir, ".s.PGSQL.6543"))
	conn := connect(t, s.ConnString("postgres", "postgres"))
	_, err := conn.Exec(t.Context(), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('first run')")
	require.NoError(t, err)
	require.NoError(t, conn.Close(t.Context()))
	require.NoError(t, s.Stop())

	pgVersion := filepath.Join(bundle.opts.DataDir, "PG_VERSION")
	before, err := os.Stat(pgVersion)
	require.NoError(t, err)

	s = start(t, bundle.opts)
	conn = connect(t, s.ConnString("postgres", "postgres"))
	var v string
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT v FROM kept").Scan(&v))
	require.Equal(t, "first run", v, "the second Start reuses the cluster")

	after, err := os.Stat(pgVersion)
	require.NoError(t, err)
	require.Equal(t, before.ModTime(), after.ModTime(), "no second initdb")
}

func TestStartStopsStaleServer(t *testing.T) {
	t.Parallel()
	bundle := setup(t)

	// A server whose owner "crashed": nobody stops it before the next Start.
	stale := start(t, bundle.opts)

	s := start(t, bundle.opts)
	select {
	case <-stale.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the stale server is still running")
	}
	require.NoError(t, stale.Stop(), "Stop on an exited server is a no-op")

	conn := connect(t, s.ConnString("postgres", "postgres"))
	require.NoError(t, conn.Ping(t.Context()))
}

func TestSettingsAndHBA(t *testing.T) {
	t.Parallel()
	bundle := setup(t)
	bundle.opts.Settings = map[string]string{"max_connections": "42", "application_name": "pgserver test"}
	bundle.opts.HBA = []string{"local all pwuser scram-sha-256"}

	s := start(t, bundle.opts)
	conn := connect(t, s.ConnString("postgres", "postgres"))
	var maxConns string
	require.NoError(t, conn.QueryRow(t.Context(), "SHOW max_connections").Scan(&maxConns))
	require.Equal(t, "42", maxConns)

	_, err := conn.Exec(t.Context(), "CREATE ROLE pwuser LOGIN PASSWORD 'secret'")
	require.NoError(t, err)

	_, err = pgx.Connect(t.Context(), s.ConnString("pwuser", "postgres")+" password=wrong")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr, "the HBA line comes before the trust line")
	require.Equal(t, "28P01", pgErr.Code)

	pw := connect(t, s.ConnString("pwuser", "postgres")+" password=secret")
	require.NoError(t, pw.Ping(t.Context()))
}

func TestStartFailureIncludesServerLog(t *testing.T) {
	t.Parallel()
	bundle := setup(t)
	bundle.opts.Settings = map[string]string{"shared_buffers": "lots"}

	_, err := pgserver.Start(t.Context(), bundle.opts)
	require.Error(t, err)
	t.Log(err)
	require.Contains(t, err.Error(), "postgres exited during start-up")
	require.Contains(t, err.Error(), `invalid value for parameter "shared_buffers"`, "the error carries the server log")
}

func TestStartRequiresDataDir(t *testing.T) {
	t.Parallel()
	_, err := pgserver.Start(t.Context(), pgserver.Options{})
	require.ErrorContains(t, err, "DataDir is required")
}

func TestStartRejectsLongSocketPath(t *testing.T) {
	t.Parallel()
	_, err := pgserver.Start(t.Context(), pgserver.Options{DataDir: "/tmp/" + strings.Repeat("x", 100)})
	require.ErrorContains(t, err, "choose a shorter SocketDir")
}

func TestFindBinDir(t *testing.T) {
	// Not parallel: t.Setenv.
	dir, err := pgserver.FindBinDir()
	require.NoError(t, err, "these tests need PostgreSQL server binaries")
	require.FileExists(t, filepath.Join(dir, "initdb"))
	require.FileExists(t, filepath.Join(dir, "postgres"))

	t.Run("EnvWins", func(t *testing.T) {
		t.Setenv(pgserver.EnvBinDir, dir)
		got, err := pgserver.FindBinDir()
		require.NoError(t, err)
		require.Equal(t, dir, got)
	})

	t.Run("BadEnvIsAnError", func(t *testing.T) {
		// An explicit FETCHQ_PG_BINDIR is trusted: no fallback to PATH.
		t.Setenv(pgserver.EnvBinDir, "/nonexistent")
		_, err := pgserver.FindBinDir()
		require.ErrorIs(t, err, pgserver.ErrNoBinaries)
		msg := err.Error()
		require.NotContains(t, msg, "\n", "one line")
		require.Contains(t, msg, "/nonexistent")
		require.Contains(t, msg, "apt-get install -y postgresql")
		require.Contains(t, msg, pgserver.EnvBinDir)

		_, err = pgserver.Start(t.Context(), pgserver.Options{DataDir: t.TempDir()})
		require.ErrorIs(t, err, pgserver.ErrNoBinaries)
	})

	t.Run("BinDirOption", func(t *testing.T) {
		_, err := pgserver.Start(t.Context(), pgserver.Options{DataDir: t.TempDir(), BinDir: "/nonexistent"})
		require.ErrorIs(t, err, pgserver.ErrNoBinaries)
	})
}
