package backend

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// rollbackTimeout bounds a ROLLBACK issued after the operation's context
// ended, so that the connection can go back to the pool clean.
const rollbackTimeout = 5 * time.Second

// PoolDB returns a [DB] that runs statements on connections of pool: Query
// on any idle connection in autocommit mode, Atomic in a BEGIN/COMMIT
// transaction on one connection (nested Atomic calls use SAVEPOINTs). It
// implements [Autocommitter]. It is safe for concurrent use; the DB that
// Atomic passes to its function is not.
//
// Statements use the extended protocol with the unnamed statement
// (pgconn.PgConn.ExecParams), text-format parameters of unspecified type and
// text-format results, so the planner sees the parameter values (partial
// indexes on constants apply) and results print in the session's
// DateStyle/TimeZone.
func PoolDB(pool *pgxpool.Pool) DB {
	return &poolDB{pool: pool}
}

type poolDB struct {
	pool *pgxpool.Pool
	// prepare makes Query prepare each statement once per connection
	// (see queryPrepared).
	prepare bool
}

func (p *poolDB) Autocommit() bool { return true }

func (p *poolDB) Query(ctx context.Context, sql string, args []any, scan func(row [][]byte) error) (pgconn.CommandTag, error) {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer conn.Release()
	if p.prepare {
		return queryPrepared(ctx, conn.Conn(), sql, args, scan)
	}
	return execParams(ctx, conn.Conn().PgConn(), sql, args, scan)
}

// queryPrepared runs sql as a statement prepared on conn the first time
// it runs there (pgx.Conn.Prepare, named after the text, remembers it):
// Postgres parses and analyses the text once per connection instead of at
// every execution. The Batcher's statements run thousands of times a
// second with the same few texts. A statement whose cached plan no longer
// fits (a table of it changed shape) is dropped and runs unprepared.
func queryPrepared(ctx context.Context, conn *pgx.Conn, sql string, args []any, scan func(row [][]byte) error) (pgconn.CommandTag, error) {
	params, err := encodeParams(args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	sd, err := conn.Prepare(ctx, sql, sql)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := readRows(conn.PgConn().ExecPrepared(ctx, sd.Name, params, nil, nil), scan)
	if stalePlan(err) {
		if derr := conn.Deallocate(ctx, sql); derr != nil {
			return tag, err
		}
		return execParams(ctx, conn.PgConn(), sql, args, scan)
	}
	return tag, err
}

// stalePlan reports whether err is Postgres refusing a prepared
// statement whose cached plan no longer fits: a table of it changed shape.
func stalePlan(err error) bool {
	if err == nil {
		return false // without the allocation errors.As's target costs
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "0A000" && strings.Contains(pgErr.Message, "cached plan")
}

func (p *poolDB) Atomic(ctx context.Context, fn func(DB) error) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// Release destroys a connection left busy or inside a transaction (e.g.
	// after a panic in fn), so it never returns to the pool dirty.
	defer conn.Release()
	pc := conn.Conn().PgConn()
	if _, err := execParams(ctx, pc, "BEGIN", nil, nil); err != nil {
		return err
	}
	if err := fn(&connDB{conn: pc, depth: 1}); err != nil {
		return withRollback(err, rollback(ctx, pc, "ROLLBACK"))
	}
	tag, err := execParams(ctx, pc, "COMMIT", nil, nil)
	if err != nil {
		// A failed COMMIT ends the transaction; ROLLBACK is a no-op then,
		// and cleans up if the COMMIT never reached the server.
		return withRollback(err, rollback(ctx, pc, "ROLLBACK"))
	}
	if tag.String() == "ROLLBACK" {
		// fn ignored a failed statement: Postgres rolled everything back.
		return errors.New("backend: transaction rolled back at COMMIT: a statement failed inside Atomic")
	}
	return nil
}

// connDB is one connection inside a transaction opened by poolDB.Atomic.
type connDB struct {
	conn  *pgconn.PgConn
	depth int
}

func (c *connDB) Autocommit() bool { return false }

func (c *connDB) Query(ctx context.Context, sql string, args []any, scan func(row [][]byte) error) (pgconn.CommandTag, error) {
	return execParams(ctx, c.conn, sql, args, scan)
}

func (c *connDB) Atomic(ctx context.Context, fn func(DB) error) error {
	sp := "fetchq_sp_" + strconv.Itoa(c.depth)
	if _, err := execParams(ctx, c.conn, "SAVEPOINT "+sp, nil, nil); err != nil {
		return err
	}
	if err := fn(&connDB{conn: c.conn, depth: c.depth + 1}); err != nil {
		if rbErr := rollback(ctx, c.conn, "ROLLBACK TO SAVEPOINT "+sp); rbErr != nil {
			return withRollback(err, rbErr)
		}
		// The savepoint stays after ROLLBACK TO; release it.
		if _, rbErr := execParams(ctx, c.conn, "RELEASE SAVEPOINT "+sp, nil, nil); rbErr != nil {
			return withRollback(err, &rollbackError{rbErr})
		}
		return err
	}
	_, err := execParams(ctx, c.conn, "RELEASE SAVEPOINT "+sp, nil, nil)
	return err
}

// rollback runs a ROLLBACK statement, with a fresh deadline if ctx already
// ended. A failure is returned wrapped so that catch-all operations do not
// mistake it for the statement error they handle.
func rollback(ctx context.Context, pc *pgconn.PgConn, sql string) error {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
	}
	if _, err := execParams(ctx, pc, sql, nil, nil); err != nil {
		return fmt.Errorf("backend: %s failed: %w", sql, &rollbackError{err})
	}
	return nil
}

// withRollback returns err unchanged when the rollback succeeded, else both.
func withRollback(err, rbErr error) error {
	if rbErr == nil {
		return err
	}
	return errors.Join(err, rbErr)
}

// rollbackError hides the error of a failed rollback from errors.As on
// *pgconn.PgError: the DB's state is unknown, so it must not be caught.
type rollbackError struct{ err error }

func (e *rollbackError) Error() string { return e.err.Error() }

// execParams runs one statement with text-format parameters and results.
func execParams(ctx context.Context, pc *pgconn.PgConn, sql string, args []any, scan func(row [][]byte) error) (pgconn.CommandTag, error) {
	params, err := encodeParams(args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	return readRows(pc.ExecParams(ctx, sql, params, nil, nil, nil), scan)
}

// readRows hands the rows of rr to scan and returns its command tag.
func readRows(rr *pgconn.ResultReader, scan func(row [][]byte) error) (pgconn.CommandTag, error) {
	var scanErr error
	for rr.NextRow() {
		if scan != nil && scanErr == nil {
			scanErr = scan(rr.Values())
		}
	}
	tag, err := rr.Close()
	if err != nil {
		return tag, err
	}
	return tag, scanErr
}

// encodeParams renders the parameter types DB.Query accepts in text format.
func encodeParams(args []any) ([][]byte, error) {
	if len(args) == 0 {
		return nil, nil
	}
	out := make([][]byte, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case nil:
		case string:
			out[i] = []byte(v)
		case []byte:
			out[i] = v // nil is NULL, as in pgx
		case int32:
			out[i] = strconv.AppendInt(nil, int64(v), 10)
		case int64:
			out[i] = strconv.AppendInt(nil, v, 10)
		case int:
			out[i] = strconv.AppendInt(nil, int64(v), 10)
		case bool:
			out[i] = boolText(v)
		default:
			return nil, fmt.Errorf("backend: unsupported parameter type %T at $%d", a, i+1)
		}
	}
	return out, nil
}

// batchStmt is one statement of a [multiQuerier] round.
type batchStmt struct {
	sql  string
	args []any
	scan func(row [][]byte) error
}

// multiQuerier runs several statements as one transaction.
type multiQuerier interface {
	// queryAll runs stmts, in order, in one round trip and one implicit
	// transaction (one Sync): they all take effect or none does. The
	// error is the first statement's that failed.
	queryAll(ctx context.Context, stmts []batchStmt) error
}

// queryAll implements multiQuerier, each statement prepared once per
// connection as Query does.
func (p *poolDB) queryAll(ctx context.Context, stmts []batchStmt) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	batch := &pgconn.Batch{}
	for _, st := range stmts {
		params, err := encodeParams(st.args)
		if err != nil {
			return err
		}
		sd, err := conn.Conn().Prepare(ctx, st.sql, st.sql)
		if err != nil {
			return err
		}
		batch.ExecPrepared(sd.Name, params, nil, nil)
	}
	mrr := conn.Conn().PgConn().ExecBatch(ctx, batch)
	var first error
	for i := 0; mrr.NextResult(); i++ {
		if _, err := readRows(mrr.ResultReader(), stmts[i].scan); err != nil && first == nil {
			first = err
		}
	}
	if err := mrr.Close(); err != nil && first == nil {
		first = err
	}
	if stalePlan(first) {
		// Prepared again next time (the caller runs the statements on
		// their own meanwhile).
		for _, st := range stmts {
			_ = conn.Conn().Deallocate(ctx, st.sql)
		}
	}
	return first
}

// queryAll implements multiQuerier, retrying as Query does.
func (d staleRetryDB) queryAll(ctx context.Context, stmts []batchStmt) error {
	mq, ok := d.db.(multiQuerier)
	if !ok {
		return errors.New("backend: the service pool cannot run statements together")
	}
	for i := 1; ; i++ {
		err := mq.queryAll(ctx, stmts)
		if !d.retry(ctx, i, err) {
			return err
		}
	}
}
