package backend

import (
	"context"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// staleRetryDB is the service pool's [DB] as the Batcher uses it, its
// statements prepared once per connection (queryPrepared). A
// statement that fails on a pooled connection the server had already
// closed, before anything was sent (pgconn.SafeToRetry: e.g. a write
// refused with EPIPE), runs again on another connection. After Postgres
// restarts every idle connection of the pool is such a connection; the
// pool drops each one as it fails, so MaxConns+1 attempts always reach a
// freshly dialed one, and the clients whose calls were batched get their
// answers instead of an error. Nothing that may have reached the server is
// ever run twice.
type staleRetryDB struct {
	db       DB
	attempts int
}

func newStaleRetryDB(pool *pgxpool.Pool) DB {
	return staleRetryDB{db: &poolDB{pool: pool, prepare: true}, attempts: int(pool.Config().MaxConns) + 1}
}

func (d staleRetryDB) retry(ctx context.Context, i int, err error) bool {
	return err != nil && i < d.attempts && pgconn.SafeToRetry(err) && ctx.Err() == nil
}

func (d staleRetryDB) Query(ctx context.Context, sql string, args []any, scan func(row [][]byte) error) (pgconn.CommandTag, error) {
	for i := 1; ; i++ {
		tag, err := d.db.Query(ctx, sql, args, scan)
		if !d.retry(ctx, i, err) {
			return tag, err
		}
	}
}

// Atomic runs again only when the transaction could not even begin: fn
// never ran.
func (d staleRetryDB) Atomic(ctx context.Context, fn func(DB) error) error {
	for i := 1; ; i++ {
		ran := false
		err := d.db.Atomic(ctx, func(db DB) error {
			ran = true
			return fn(db)
		})
		if ran || !d.retry(ctx, i, err) {
			return err
		}
	}
}

// Autocommit implements [Autocommitter] as the pool's DB does.
func (d staleRetryDB) Autocommit() bool {
	ac, ok := d.db.(Autocommitter)
	return ok && ac.Autocommit()
}
