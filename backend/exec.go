package backend

import (
	"context"
	"errors"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"
)

// Autocommitter is an optional interface of a [DB]. Autocommit reports
// whether each Query called outside Atomic runs as its own transaction
// (the service pool does; a client's connection inside a transaction block
// does not). A failed statement then leaves nothing to undo and the
// connection usable, so a single-statement catch-all operation runs its
// statement directly instead of paying for Atomic's BEGIN/COMMIT or
// SAVEPOINT round trips.
type Autocommitter interface {
	Autocommit() bool
}

// contain runs fn, which issues at most one statement, so that its failure
// cannot abort a surrounding transaction: directly when db autocommits,
// else inside db.Atomic.
func contain(ctx context.Context, db DB, fn func(DB) error) error {
	if ac, ok := db.(Autocommitter); ok && ac.Autocommit() {
		return fn(db)
	}
	return db.Atomic(ctx, fn)
}

// caught reports whether a catch-all function (EXCEPTION WHEN OTHERS in the
// extension) turns err into its failure value: errors Postgres reported for
// the statements, except query_canceled (PL/pgSQL's WHEN OTHERS does not
// catch it either), insufficient_privilege (a deliberate deviation: a role
// without rights is told so) and FATAL/PANIC errors (the connection is
// gone). Context and connection errors are never caught.
func caught(err error) bool {
	var rb *rollbackError
	if errors.As(err, &rb) {
		return false // the transaction's state is unknown
	}
	var pg *pgconn.PgError
	if !errors.As(err, &pg) {
		return false
	}
	switch pg.Code {
	case codeQueryCanceled, codeInsufficientPrivs:
		return false
	}
	return pg.Severity != "FATAL" && pg.Severity != "PANIC"
}

// noScan discards rows.
func noScan([][]byte) error { return nil }

// exec runs a statement and returns its command tag.
func exec(ctx context.Context, db DB, sql string, a args) (pgconn.CommandTag, error) {
	return db.Query(ctx, sql, a, noScan)
}

// queryRows runs a statement and returns copies of all its rows.
func queryRows(ctx context.Context, db DB, sql string, a args) ([][][]byte, pgconn.CommandTag, error) {
	var rows [][][]byte
	tag, err := db.Query(ctx, sql, a, func(row [][]byte) error {
		rows = append(rows, copyRow(row))
		return nil
	})
	return rows, tag, err
}

// queryRow runs a statement and returns a copy of its first row, or nil
// when it returned none.
func queryRow(ctx context.Context, db DB, sql string, a args) ([][]byte, error) {
	var first [][]byte
	_, err := db.Query(ctx, sql, a, func(row [][]byte) error {
		if first == nil {
			first = copyRow(row)
		}
		return nil
	})
	return first, err
}

// copyRow copies a row's values into one allocation, keeping nil (NULL)
// distinct from empty.
func copyRow(row [][]byte) [][]byte {
	n := 0
	for _, v := range row {
		n += len(v)
	}
	buf := make([]byte, 0, n)
	out := make([][]byte, len(row))
	for i, v := range row {
		if v == nil {
			continue
		}
		start := len(buf)
		buf = append(buf, v...)
		out[i] = buf[start:len(buf):len(buf)]
	}
	return out
}

// Text-format decoding of values Postgres printed. Columns this package
// reads are declared NOT NULL or are checked for nil by the caller; a value
// that does not parse (which Postgres never prints for these types) reads
// as 0.

func textInt64(v []byte) int64 {
	n, _ := strconv.ParseInt(string(v), 10, 64)
	return n
}

func textInt32(v []byte) int32 {
	n, _ := strconv.ParseInt(string(v), 10, 32)
	return int32(n)
}

func textBool(v []byte) bool { return len(v) == 1 && v[0] == 't' }

// Text-format encoding of results.

func boolText(b bool) []byte {
	if b {
		return []byte{'t'}
	}
	return []byte{'f'}
}

func intText(n int64) []byte { return strconv.AppendInt(nil, n, 10) }

// optInt32Text encodes a nullable integer.
func optInt32Text(p *int32) []byte {
	if p == nil {
		return nil
	}
	return intText(int64(*p))
}

// optStringText encodes a nullable text.
func optStringText(p *string) []byte {
	if p == nil {
		return nil
	}
	return []byte(*p)
}

// ptr returns a pointer to a copy of v.
func ptr[T any](v T) *T { return &v }
