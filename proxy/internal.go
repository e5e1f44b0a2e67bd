package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Internal statements.
//
// The proxy runs its own statements (the SQL of an intercepted Fetchq call)
// on the client's own upstream connection, so they run with the client's
// role and inside the client's transaction. The session goroutine writes
// them upstream like any request, with a response-queue entry that
// captures the answer instead of relaying it; the upstream reader hands the
// captured messages over through a channel.

// capture receives the upstream's answer to an internal statement.
type capture struct {
	ch   chan capturedMsg
	done <-chan struct{} // the session's context: stop delivering when it ends
}

type capturedMsg struct {
	typ  byte
	body []byte
}

func (c *capture) deliver(typ byte, body []byte) {
	select {
	case c.ch <- capturedMsg{typ, body}:
	case <-c.done:
	}
}

// errSkipped reports that the upstream skipped an internal statement
// because an earlier request of the client's batch failed.
var errSkipped = errors.New("statement skipped after an earlier error in the batch")

// internalStmt names the prepared statement and the portal of internal
// statements on a client's connection.
const internalStmt = "fetchq_proxy_internal"

// upstreamDB runs internal statements on a session's upstream connection.
// Only the session goroutine may use it.
type upstreamDB struct {
	s     *session
	depth int // savepoint nesting of Atomic
}

// Query implements backend.DB.
func (d *upstreamDB) Query(ctx context.Context, sql string, args []any, scan func(row [][]byte) error) (pgconn.CommandTag, error) {
	s := d.s
	params := make([][]byte, len(args))
	for i, a := range args {
		v, err := encodeText(a)
		if err != nil {
			return pgconn.CommandTag{}, err
		}
		params[i] = v
	}
	if err := s.awaitPipelined(); err != nil {
		return pgconn.CommandTag{}, err
	}
	c := &capture{ch: make(chan capturedMsg, 8), done: s.ctx.Done()}
	s.q.push(request{kind: reqSync, capture: c})
	w := s.up.w
	// A named statement and portal, so that the client's unnamed ones
	// (which outlive a Sync, the statement always, the portal inside a
	// transaction block) stay as the client left them. Each is closed
	// first: a failed Execute leaves them behind (closing one that does
	// not exist is no error).
	for _, m := range []encoder{
		&pgproto3.Close{ObjectType: 'S', Name: internalStmt},
		&pgproto3.Close{ObjectType: 'P', Name: internalStmt},
		&pgproto3.Parse{Name: internalStmt, Query: sql},
		&pgproto3.Bind{DestinationPortal: internalStmt, PreparedStatement: internalStmt, Parameters: params},
		&pgproto3.Execute{Portal: internalStmt},
		&pgproto3.Sync{},
	} {
		if err := writeEncoded(w, m); err != nil {
			return pgconn.CommandTag{}, err
		}
	}
	if err := w.Flush(); err != nil {
		return pgconn.CommandTag{}, err
	}

	var (
		tag      pgconn.CommandTag
		firstErr error
		ran      bool
		dr       pgproto3.DataRow
	)
	for {
		var m capturedMsg
		select {
		case m = <-c.ch:
		case <-s.ctx.Done():
			return tag, s.ctx.Err()
		}
		switch m.typ {
		case 'D':
			ran = true
			if firstErr != nil {
				continue
			}
			if err := dr.Decode(m.body); err != nil {
				firstErr = err
				continue
			}
			if err := scan(dr.Values); err != nil {
				firstErr = err
			}
		case 'C':
			ran = true
			tag = pgconn.NewCommandTag(string(trimNul(m.body)))
		case 'I':
			ran = true
		case 'E':
			ran = true
			var er pgproto3.ErrorResponse
			if err := er.Decode(m.body); err != nil {
				return tag, err
			}
			if firstErr == nil {
				firstErr = pgErrorFrom(&er)
			}
		case 'Z':
			if !ran && firstErr == nil {
				return tag, errSkipped
			}
			return tag, firstErr
		}
	}
}

// Atomic implements backend.DB: outside a transaction block it opens one,
// inside it uses a savepoint, so fn's statements take effect together or
// not at all and the client's transaction stays usable.
func (d *upstreamDB) Atomic(ctx context.Context, fn func(db backend.DB) error) error {
	nop := func([][]byte) error { return nil }
	if d.depth == 0 && byte(d.s.txStatus.Load()) == 'I' {
		if _, err := d.Query(ctx, "BEGIN", nil, nop); err != nil {
			return err
		}
		d.depth++
		err := fn(d)
		d.depth--
		if err != nil {
			_, _ = d.Query(ctx, "ROLLBACK", nil, nop)
			return err
		}
		_, err = d.Query(ctx, "COMMIT", nil, nop)
		return err
	}
	sp := "fetchq_proxy_" + strconv.Itoa(d.depth)
	if _, err := d.Query(ctx, "SAVEPOINT "+sp, nil, nop); err != nil {
		return err
	}
	d.depth++
	err := fn(d)
	d.depth--
	if err != nil {
		if _, rerr := d.Query(ctx, "ROLLBACK TO SAVEPOINT "+sp, nil, nop); rerr == nil {
			_, _ = d.Query(ctx, "RELEASE SAVEPOINT "+sp, nil, nop)
		}
		return err
	}
	_, err = d.Query(ctx, "RELEASE SAVEPOINT "+sp, nil, nop)
	return err
}

// Autocommit implements backend.Autocommitter: outside a transaction block
// each internal statement is its own transaction (it ends with Sync).
func (d *upstreamDB) Autocommit() bool {
	return d.depth == 0 && byte(d.s.txStatus.Load()) == 'I'
}

func trimNul(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == 0 {
		return b[:n-1]
	}
	return b
}

// pgErrorFrom converts an upstream ErrorResponse into the *pgconn.PgError
// it stands for, keeping every field.
func pgErrorFrom(er *pgproto3.ErrorResponse) *pgconn.PgError {
	return &pgconn.PgError{
		Severity:            er.Severity,
		SeverityUnlocalized: er.SeverityUnlocalized,
		Code:                er.Code,
		Message:             er.Message,
		Detail:              er.Detail,
		Hint:                er.Hint,
		Position:            er.Position,
		InternalPosition:    er.InternalPosition,
		InternalQuery:       er.InternalQuery,
		Where:               er.Where,
		SchemaName:          er.SchemaName,
		TableName:           er.TableName,
		ColumnName:          er.ColumnName,
		DataTypeName:        er.DataTypeName,
		ConstraintName:      er.ConstraintName,
		File:                er.File,
		Line:                er.Line,
		Routine:             er.Routine,
	}
}

// encodeText encodes an internal statement's argument in text format; nil
// is NULL.
func encodeText(a any) ([]byte, error) {
	switch v := a.(type) {
	case nil:
		return nil, nil
	case string:
		return []byte(v), nil
	case []byte:
		if v == nil {
			return nil, nil
		}
		return v, nil
	case *string:
		if v == nil {
			return nil, nil
		}
		return []byte(*v), nil
	case int:
		return strconv.AppendInt(nil, int64(v), 10), nil
	case int32:
		return strconv.AppendInt(nil, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(nil, v, 10), nil
	case *int64:
		if v == nil {
			return nil, nil
		}
		return strconv.AppendInt(nil, *v, 10), nil
	case *int32:
		if v == nil {
			return nil, nil
		}
		return strconv.AppendInt(nil, int64(*v), 10), nil
	case bool:
		if v {
			return []byte("t"), nil
		}
		return []byte("f"), nil
	case time.Time:
		return v.AppendFormat(nil, "2006-01-02 15:04:05.999999999Z07:00"), nil
	case fmt.Stringer:
		return []byte(v.String()), nil
	}
	return nil, fmt.Errorf("internal statement argument of unsupported type %T", a)
}
