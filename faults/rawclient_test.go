package faults

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// A raw client speaks the protocol with pgproto3 message types but frames
// the stream itself, so it can tell a connection closed between two
// messages (clean) from one closed in the middle of a message (a half
// message), which pgx reports alike.

// errClosed is a connection that ended exactly at a message boundary.
var errClosed = errors.New("connection closed between messages")

// halfMessageError is a connection that ended inside a message.
type halfMessageError struct {
	got, want int
	err       error
}

func (e *halfMessageError) Error() string {
	return fmt.Sprintf("half a message: %d of %d bytes, then %v", e.got, e.want, e.err)
}

// fatalError is a FATAL ErrorResponse followed by the end of the
// connection, as a server that closes a session sends it.
type fatalError struct {
	code, message string
	// after lists the whole messages that came after the FATAL before the
	// connection ended (Postgres sends none); see afterFatal.
	after []string
}

func (e *fatalError) Error() string { return "FATAL " + e.code + ": " + e.message }

// queryError is a non-fatal ErrorResponse (the session goes on).
type queryError struct{ code, message string }

func (e *queryError) Error() string { return "ERROR " + e.code + ": " + e.message }

type rawConn struct {
	c net.Conn
	r *bufio.Reader
}

func rawConnect(ctx context.Context, addr, database string) (*rawConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	rc := &rawConn{c: c, r: bufio.NewReader(c)}
	startup := &pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": "postgres", "database": database, "TimeZone": "UTC"},
	}
	buf, err := startup.Encode(nil)
	if err == nil {
		_, err = c.Write(buf)
	}
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(callTimeout))
		_, err = rc.readUntilReady(nil)
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return rc, nil
}

func (rc *rawConn) close() { _ = rc.c.Close() }

// next reads one whole message: its type and body.
func (rc *rawConn) next() (byte, []byte, error) {
	var header [5]byte
	n, err := io.ReadFull(rc.r, header[:])
	if err != nil {
		if n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			return 0, nil, errClosed
		}
		return 0, nil, &halfMessageError{got: n, want: 5, err: err}
	}
	size := int(binary.BigEndian.Uint32(header[1:])) - 4
	if size < 0 || size > 1<<30 {
		return 0, nil, fmt.Errorf("message %q claims a length of %d", header[0], size+4)
	}
	body := make([]byte, size)
	if n, err := io.ReadFull(rc.r, body); err != nil {
		return 0, nil, &halfMessageError{got: 5 + n, want: 5 + size, err: err}
	}
	return header[0], body, nil
}

// readUntilReady reads the answer to a request up to ReadyForQuery, decoding
// every message (a truncated or garbled body fails to decode). It returns
// the DataRows' values. A FATAL error must be followed by the end of the
// connection: it returns a *fatalError then. A non-fatal error is returned
// as a *queryError after its ReadyForQuery.
func (rc *rawConn) readUntilReady(rows *[][]string) (tag string, err error) {
	var qerr error
	for {
		typ, body, err := rc.next()
		if err != nil {
			return "", err
		}
		var msg pgproto3.BackendMessage
		switch typ {
		case 'R':
			m := &pgproto3.AuthenticationOk{}
			if len(body) != 4 || binary.BigEndian.Uint32(body) != 0 {
				return "", fmt.Errorf("authentication other than trust requested (%x)", body)
			}
			msg = m
		case 'S':
			msg = &pgproto3.ParameterStatus{}
		case 'K':
			msg = &pgproto3.BackendKeyData{}
		case 'T':
			msg = &pgproto3.RowDescription{}
		case 'D':
			msg = &pgproto3.DataRow{}
		case 'C':
			msg = &pgproto3.CommandComplete{}
		case 'I':
			msg = &pgproto3.EmptyQueryResponse{}
		case 'N':
			msg = &pgproto3.NoticeResponse{}
		case 'A':
			msg = &pgproto3.NotificationResponse{}
		case 'E':
			msg = &pgproto3.ErrorResponse{}
		case 'Z':
			msg = &pgproto3.ReadyForQuery{}
		default:
			return "", fmt.Errorf("unexpected message type %q (%d bytes)", typ, len(body))
		}
		if err := msg.Decode(body); err != nil {
			return "", fmt.Errorf("decoding message %q: %w", typ, err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			if rows != nil {
				row := make([]string, len(m.Values))
				for i, v := range m.Values {
					row[i] = string(v)
				}
				*rows = append(*rows, row)
			}
		case *pgproto3.CommandComplete:
			tag = string(m.CommandTag)
		case *pgproto3.ErrorResponse:
			if m.Severity == "FATAL" || m.Severity == "PANIC" {
				return "", rc.afterFatal(&fatalError{code: m.Code, message: m.Message})
			}
			qerr = &queryError{code: m.Code, message: m.Message}
		case *pgproto3.ReadyForQuery:
			return tag, qerr
		}
	}
}

// afterFatal reads what follows a FATAL ErrorResponse: Postgres closes the
// connection at once, and so must the proxy. Whole messages that come
// after it are recorded in fe.after (for the error message) and make the
// call unclean; a half message or a connection left open is an error too.
func (rc *rawConn) afterFatal(fe *fatalError) error {
	for len(fe.after) < 10 {
		typ, body, err := rc.next()
		switch {
		case err == errClosed:
			return fe
		case err != nil:
			return fmt.Errorf("after FATAL %s: %w", fe.code, err)
		case typ == 'E':
			e := &pgproto3.ErrorResponse{}
			if err := e.Decode(body); err != nil {
				return fmt.Errorf("after FATAL %s: decoding message 'E': %w", fe.code, err)
			}
			fe.after = append(fe.after, e.Severity+" "+e.Code)
		case typ == 'Z':
			if err := (&pgproto3.ReadyForQuery{}).Decode(body); err != nil {
				return fmt.Errorf("after FATAL %s: decoding message 'Z': %w", fe.code, err)
			}
			fe.after = append(fe.after, "ReadyForQuery (session kept open)")
			return fe
		default:
			return fmt.Errorf("FATAL %s %q followed by message %q %q", fe.code, fe.message, typ, body)
		}
	}
	return fmt.Errorf("FATAL %s followed by %v and more", fe.code, fe.after)
}

// query runs sql with the simple protocol.
func (rc *rawConn) query(sql string, rows *[][]string) (string, error) {
	_ = rc.c.SetDeadline(time.Now().Add(callTimeout))
	buf, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		return "", err
	}
	if _, err := rc.c.Write(buf); err != nil {
		// The server closed the connection: what it sent before still
		// has to be whole.
		if _, rerr := rc.readUntilReady(nil); rerr != nil {
			return "", rerr
		}
		return "", err
	}
	return rc.readUntilReady(rows)
}

// rawClean reports whether err ends a raw client's call cleanly: a server
// error with a SQLSTATE, or a connection closed between messages or
// refused. A half message, a garbled one or a timeout is not.
func rawClean(err error) (string, bool) {
	var fe *fatalError
	var qe *queryError
	var he *halfMessageError
	switch {
	case errors.As(err, &fe):
		if len(fe.after) > 0 {
			return "FATAL " + fe.code + " then " + strings.Join(fe.after, ", "), false
		}
		return "FATAL " + fe.code, fe.code != ""
	case errors.As(err, &qe):
		return "ERROR " + qe.code, qe.code != ""
	case errors.As(err, &he):
		return "half message", false
	case errors.Is(err, errClosed):
		return "connection closed", true
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused", true
	case errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET):
		// A write into a connection the server had closed; its answer was
		// read whole above.
		return "connection closed", true
	}
	return "other", false
}

// rawWorker is a worker on a raw connection: pick with the simple protocol,
// complete each document, and every fifth round a large forwarded result
// (20,000 rows) checked for completeness. It reconnects after any error;
// unclean errors go to r.tr as bad.
func (r *run) rawWorker(ctx context.Context, id int, addr, database string) {
	var rc *rawConn
	defer func() {
		if rc != nil {
			rc.close()
		}
	}()
	fail := func(op string, err error) {
		if ctx.Err() != nil {
			return
		}
		class, clean := rawClean(err)
		r.tr.mu.Lock()
		r.tr.errs["raw "+op+": "+class]++
		r.tr.mu.Unlock()
		if !clean {
			r.tr.badf("raw worker %d %s: %v", id, op, err)
		}
		rc.close()
		rc = nil
	}
	pickSQL := fmt.Sprintf("SELECT subject, next_iteration FROM fetchq.doc_pick('%s', 0, 2, '%s')", r.queue, r.lock)
	for round := 0; ctx.Err() == nil; round++ {
		if rc == nil {
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			c, err := rawConnect(cctx, addr, database)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					if class, clean := rawClean(err); !clean {
						r.tr.badf("raw worker %d connect: %v (%s)", id, err, class)
					} else {
						r.tr.mu.Lock()
						r.tr.errs["raw connect: "+class]++
						r.tr.mu.Unlock()
					}
				}
				sleep(ctx, 20*time.Millisecond+time.Duration(id)*time.Millisecond)
				continue
			}
			r.tr.nReconnects.Add(1)
			rc = c
		}
		if round%5 == 4 {
			var rows [][]string
			if _, err := rc.query("SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g", &rows); err != nil {
				fail("large result", err)
				continue
			}
			if len(rows) != 20000 || rows[19999][0] != "20000" {
				r.tr.badf("raw worker %d: large result has %d rows", id, len(rows))
			}
			continue
		}
		var rows [][]string
		if _, err := rc.query(pickSQL, &rows); err != nil {
			fail("pick", err)
			continue
		}
		if len(rows) == 0 {
			sleep(ctx, r.pause)
			continue
		}
		for _, row := range rows {
			lockEnd, err := time.Parse("2006-01-02 15:04:05.999999-07", row[1])
			if err != nil {
				r.tr.badf("raw worker %d: next_iteration %q: %v", id, row[1], err)
				continue
			}
			r.tr.picked(1000+id, row[0], lockEnd)
		}
		for _, row := range rows {
			var res [][]string
			// Subjects are d0000123: nothing to quote.
			if _, err := rc.query(fmt.Sprintf("SELECT * FROM fetchq.doc_complete('%s', '%s')", r.queue, row[0]), &res); err != nil {
				fail("complete", err)
				break
			}
			switch {
			case len(res) != 1:
				r.tr.badf("raw worker %d: doc_complete returned %d rows", id, len(res))
			case res[0][0] == "1":
				r.tr.completedOK(row[0])
			case res[0][0] == "0":
				r.tr.nLostLock.Add(1)
			default:
				r.tr.badf("raw worker %d: doc_complete(%s) returned %q", id, row[0], res[0][0])
			}
		}
	}
}

// startRaw starts n raw workers against addr.
func (r *run) startRaw(ctx context.Context, n int, addr, database string) {
	for i := range n {
		r.workers.Add(1)
		go func() {
			defer r.workers.Done()
			r.rawWorker(ctx, i, addr, database)
		}()
	}
}
