package pgtest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/fetchq/fetchq-proxy/internal/pgtest"
)

// notes returns the bodies in the notes table, in id order.
func notes(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), "SELECT body FROM notes ORDER BY id")
	require.NoError(t, err)
	bodies, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return bodies
}

// databaseExists asks the server whether a database named name exists.
func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pgtest.AdminConnString())
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var exists bool
	require.NoError(t, conn.QueryRow(t.Context(),
		"SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists))
	return exists
}

func TestParallelTestsGetIsolatedDatabases(t *testing.T) {
	t.Parallel()

	var (
		mu    sync.Mutex
		names = map[string]bool{}
		wrote sync.WaitGroup // both subtests have written
	)
	wrote.Add(2)
	for _, who := range []string{"A", "B"} {
		t.Run(who, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t)
			mu.Lock()
			require.False(t, names[db.Name], "database names are unique")
			names[db.Name] = true
			mu.Unlock()

			pool := db.Pool(t)
			require.Same(t, pool, db.Pool(t), "one pool per database")
			require.Equal(t, []string{"from the template"}, notes(t, pool), "a fresh copy of the template")

			_, err := pool.Exec(t.Context(), "INSERT INTO notes VALUES (1, $1)", "written by "+who)
			require.NoError(t, err)

			// Wait for the other subtest's write, unless -parallel 1 runs
			// them one after the other.
			wrote.Done()
			done := make(chan struct{})
			go func() { wrote.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
			}
			require.Equal(t, []string{"from the template", "written by " + who}, notes(t, pool))
		})
	}
}

func TestDBConnections(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	require.True(t, strings.HasPrefix(db.Name, fmt.Sprintf("t_%d_", os.Getpid())), db.Name)

	conn, err := pgx.Connect(t.Context(), db.ConnString(""))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var database, user string
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT current_database(), current_user").Scan(&database, &user))
	require.Equal(t, db.Name, database)
	if !pgtest.Server().External {
		require.Equal(t, "postgres", user)
	}

	cfg := db.Config()
	require.Equal(t, db.Name, cfg.Database)
	cfg.Database = "changed"
	require.Equal(t, db.Name, db.Config().Database, "Config returns a copy")

	pc, err := pgconn.ConnectConfig(t.Context(), db.Config())
	require.NoError(t, err)
	require.NoError(t, pc.Close(t.Context()))
}

func TestServerAndRoles(t *testing.T) {
	t.Parallel()
	info := pgtest.Server()
	require.NotEmpty(t, info.Host)
	require.NotZero(t, info.Port)
	if !info.External {
		require.Equal(t, info.Host, info.SocketDir)
		require.FileExists(t, fmt.Sprintf("%s/.s.PGSQL.%d", info.SocketDir, info.Port))
		require.Less(t, len(info.SocketDir), 40, "short enough for a socket path")
	}

	db := pgtest.NewDB(t)
	role := fmt.Sprintf("pgtest_role_%d", os.Getpid())
	admin, err := pgx.Connect(t.Context(), pgtest.AdminConnString())
	require.NoError(t, err)
	t.Cleanup(func() {
		// Roles belong to the cluster, not to the test's database.
		_, err := admin.Exec(context.Background(), "DROP ROLE "+role)
		require.NoError(t, err)
		require.NoError(t, admin.Close(context.Background()))
	})
	_, err = admin.Exec(t.Context(), "CREATE ROLE "+role+" LOGIN PASSWORD 'pw'")
	require.NoError(t, err)

	dsn := db.ConnString(role)
	if info.External {
		dsn += " password=pw"
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	var user string
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT current_user").Scan(&user))
	require.NoError(t, conn.Close(t.Context()))
	require.Equal(t, role, user)
}

func TestSettingsAndHBA(t *testing.T) {
	t.Parallel()
	if pgtest.Server().External {
		t.Skip("Options.Settings and Options.HBA apply only to the server pgtest starts")
	}
	db := pgtest.NewDB(t)
	pool := db.Pool(t)

	var maxConns string
	require.NoError(t, pool.QueryRow(t.Context(), "SHOW max_connections").Scan(&maxConns))
	require.Equal(t, "150", maxConns)

	_, err := pool.Exec(t.Context(), "CREATE ROLE "+scramRole+" LOGIN PASSWORD 'secret'")
	require.NoError(t, err)
	t.Cleanup(func() {
		admin, err := pgx.Connect(context.Background(), pgtest.AdminConnString())
		require.NoError(t, err)
		defer admin.Close(context.Background())
		_, err = admin.Exec(context.Background(), "DROP ROLE "+scramRole)
		require.NoError(t, err)
	})

	_, err = pgx.Connect(t.Context(), db.ConnString(scramRole)+" password=wrong")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "28P01", pgErr.Code, "invalid_password")

	conn, err := pgx.Connect(t.Context(), db.ConnString(scramRole)+" password=secret")
	require.NoError(t, err)
	require.NoError(t, conn.Close(t.Context()))
}

func TestDatabaseDroppedWhenTestPasses(t *testing.T) {
	t.Parallel()
	var (
		name     string
		leftover *pgx.Conn
	)
	t.Run("Passes", func(t *testing.T) {
		db := pgtest.NewDB(t)
		name = db.Name
		_, err := db.Pool(t).Exec(t.Context(), "SELECT 1")
		require.NoError(t, err)
		// A session the test leaves open does not prevent the drop.
		leftover, err = pgx.Connect(t.Context(), db.ConnString(""))
		require.NoError(t, err)
		require.True(t, databaseExists(t, name))
	})
	require.NotEmpty(t, name)
	require.False(t, databaseExists(t, name), "dropped once the test passed")
	require.Error(t, leftover.Ping(t.Context()), "DROP DATABASE WITH (FORCE) ended the session")
	_ = leftover.Close(t.Context())
}

// failedTB is a test that has failed: it records cleanups and logs instead
// of running them, and passes everything else to the real test.
type failedTB struct {
	testing.TB
	cleanups []func()
	logs     []string
}

func (f *failedTB) Helper()                      {}
func (f *failedTB) Failed() bool                 { return true }
func (f *failedTB) Cleanup(fn func())            { f.cleanups = append(f.cleanups, fn) }
func (f *failedTB) Logf(format string, a ...any) { f.logs = append(f.logs, fmt.Sprintf(format, a...)) }

func TestDatabaseKeptWhenTestFails(t *testing.T) {
	t.Parallel()
	ftb := &failedTB{TB: t}
	db := pgtest.NewDB(ftb)
	_ = db.Pool(ftb)
	for i := len(ftb.cleanups) - 1; i >= 0; i-- {
		ftb.cleanups[i]()
	}

	require.True(t, databaseExists(t, db.Name), "kept for inspection")
	require.Len(t, ftb.logs, 1)
	require.Contains(t, ftb.logs[0], "kept database "+db.Name)
	require.Contains(t, ftb.logs[0], "dbname="+db.Name)
	require.NotContains(t, ftb.logs[0], "password")

	admin, err := pgx.Connect(t.Context(), pgtest.AdminConnString())
	require.NoError(t, err)
	defer admin.Close(context.Background())
	_, err = admin.Exec(t.Context(), "DROP DATABASE "+db.Name)
	require.NoError(t, err)
}
