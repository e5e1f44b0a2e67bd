package pgtest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// dbCounter numbers the databases of this process; with the pid it makes
// names unique on a server shared by concurrently running test packages.
var dbCounter atomic.Int64

// DB is a database of its own for one test, created by [NewDB] from the
// template. Its methods are safe for concurrent use.
type DB struct {
	// Name is the database's name, t_<pid>_<n>.
	Name string

	env    *env
	config *pgconn.Config

	mu     sync.Mutex
	pool   *pgxpool.Pool
	closed bool
}

// NewDB creates a fresh database for t, cloned from the package's template
// (built on first use, see [Options.TemplateSQL]).
//
// When t ends, pools from [DB.Pool] are closed and, if t passed, the database
// is dropped. If t failed, the database is kept and its connection string is
// logged. The server pgtest starts itself is removed with everything on it
// when the package's tests end, so to inspect a failed test's database run
// the tests against a long-lived server with FETCHQ_TEST_DATABASE_URL.
func NewDB(t testing.TB) *DB {
	t.Helper()
	e := current
	require.NotNil(t, e, "pgtest: no server: call pgtest.Main(m) from the package's TestMain")

	e.templateOnce.Do(func() { e.templateErr = e.buildTemplate() })
	require.NoError(t, e.templateErr, "pgtest: building the template database %s", e.template)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), dbCounter.Add(1))
	_, err := e.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+
		" TEMPLATE "+pgx.Identifier{e.template}.Sanitize())
	require.NoError(t, err, "pgtest: creating database %s", name)

	db := &DB{Name: name, env: e}
	t.Cleanup(func() { db.cleanup(t) })

	db.config, err = pgconn.ParseConfig(db.ConnString(""))
	require.NoError(t, err)
	return db
}

// ConnString returns a keyword/value connection string to this database as
// user; settings appended to it (" password=secret") override earlier ones.
// An empty user means the superuser postgres (with FETCHQ_TEST_DATABASE_URL,
// that URL's user). On the server pgtest starts, roles not named by an
// Options.HBA line connect without a password (trust).
func (db *DB) ConnString(user string) string {
	return db.env.connString(user, db.Name)
}

// Config returns a parsed connection config for this database as the
// superuser. Each call returns a new copy the caller may modify.
func (db *DB) Config() *pgconn.Config {
	return db.config.Copy()
}

// Pool returns a pool of connections to this database as the superuser,
// created on first use and closed when the test that created db ends.
func (db *DB) Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	db.mu.Lock()
	defer db.mu.Unlock()
	require.False(t, db.closed, "pgtest: Pool called after the test that created database %s ended", db.Name)
	if db.pool == nil {
		pool, err := pgxpool.New(context.Background(), db.ConnString(""))
		require.NoError(t, err)
		db.pool = pool
	}
	return db.pool
}

// cleanup closes the pool and drops the database unless t failed.
func (db *DB) cleanup(t testing.TB) {
	db.mu.Lock()
	pool := db.pool
	db.pool, db.closed = nil, true
	db.mu.Unlock()
	if pool != nil {
		pool.Close()
	}

	if t.Failed() {
		cfg := db.config
		if cfg == nil {
			t.Logf("pgtest: kept database %s", db.Name)
			return
		}
		// No password in the log: it could be FETCHQ_TEST_DATABASE_URL's.
		t.Logf("pgtest: kept database %s for inspection: psql \"host=%s port=%d user=%s dbname=%s\"",
			db.Name, quoteValue(cfg.Host), cfg.Port, quoteValue(cfg.User), quoteValue(cfg.Database))
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := db.env.dropDatabase(ctx, db.Name); err != nil {
		t.Errorf("pgtest: dropping database %s: %v", db.Name, err)
	}
}
