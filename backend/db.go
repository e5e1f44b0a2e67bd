package backend

import (
	"context"

	"github.com/jackc/pgx/v5/pgconn"
)

// DB is where an operation's statements run: the proxy's service pool, or a
// client's own upstream connection when the client is inside a transaction
// block (so the operation commits or rolls back with the client's other
// work, under the client's own role).
//
// Implementations are not required to be safe for concurrent use; an
// operation uses its DB from one goroutine.
type DB interface {
	// Query runs one statement with bind parameters and calls scan for each
	// result row. Parameters are sent in text format with unspecified types
	// (the statement casts them, e.g. $1::int); a nil arg is NULL; args are
	// string, []byte (sent as text), int32, int64, int, bool, or nil.
	// Result values are in text format, nil for NULL; the slice and its
	// contents are only valid during the scan call. It returns the
	// statement's command tag. Errors from Postgres are *pgconn.PgError.
	Query(ctx context.Context, sql string, args []any, scan func(row [][]byte) error) (pgconn.CommandTag, error)

	// Atomic runs fn so that its statements take effect together or not at
	// all: on the pool, in its own transaction on one connection; on a
	// client's connection, inside a SAVEPOINT (released on success, rolled
	// back to on error, leaving the client's transaction usable). fn must
	// use the DB it is given.
	Atomic(ctx context.Context, fn func(DB) error) error
}
