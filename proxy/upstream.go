package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

// upstreamKey identifies one upstream backend for cancellation.
type upstreamKey struct {
	network, address string
	pid              uint32
	secret           []byte
}

// serverConn is a session's connection to the upstream Postgres. It is
// owned by one session and not safe for concurrent use, except that the
// session's reader goroutine reads while the session goroutine writes.
type serverConn struct {
	conn net.Conn
	r    msgReader
	w    *connWriter
	key  upstreamKey
}

const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102
)

// dialUpstream connects to the first reachable target of cfg (its host and
// its fallbacks, in order), negotiating TLS as each target's TLSConfig says.
// Errors name the target but never carry credentials.
func dialUpstream(ctx context.Context, cfg *pgconn.Config) (*serverConn, error) {
	type target struct {
		host string
		port uint16
		tls  *tls.Config
	}
	targets := []target{{cfg.Host, cfg.Port, cfg.TLSConfig}}
	for _, fb := range cfg.Fallbacks {
		targets = append(targets, target{fb.Host, fb.Port, fb.TLSConfig})
	}
	if cfg.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
	}
	dial := cfg.DialFunc
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	var errs []error
	for _, t := range targets {
		network, address := pgconn.NetworkAddress(t.host, t.port)
		conn, err := dial(ctx, network, address)
		if err != nil {
			errs = append(errs, fmt.Errorf("dial %s %s: %w", network, address, err))
			continue
		}
		if t.tls != nil {
			conn, err = startTLS(ctx, conn, t.tls)
			if err != nil {
				errs = append(errs, fmt.Errorf("tls to %s: %w", address, err))
				continue
			}
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		return &serverConn{
			conn: conn,
			r:    newMsgReader(conn),
			w:    newConnWriter(conn),
			key:  upstreamKey{network: network, address: address},
		}, nil
	}
	return nil, &upstreamDialError{err: errors.Join(errs...)}
}

// upstreamDialError reports that no upstream target could be reached. Its
// message, sent to clients, names no host; the wrapped causes go to the log.
type upstreamDialError struct{ err error }

func (e *upstreamDialError) Error() string { return "could not connect to the upstream server" }
func (e *upstreamDialError) Unwrap() error { return e.err }

// SQLState implements sqlStater: connection_failure.
func (e *upstreamDialError) SQLState() string { return "08006" }

// startTLS sends SSLRequest on conn and, when the server agrees, returns
// the TLS client connection.
func startTLS(ctx context.Context, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
		defer conn.SetDeadline(noDeadline)
	}
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], sslRequestCode)
	if _, err := conn.Write(req[:]); err != nil {
		conn.Close()
		return nil, err
	}
	var resp [1]byte
	if _, err := io.ReadFull(conn, resp[:]); err != nil {
		conn.Close()
		return nil, err
	}
	if resp[0] != 'S' {
		conn.Close()
		return nil, errors.New("server refused TLS")
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}

// sendCancel delivers a CancelRequest for key on a new connection.
func sendCancel(ctx context.Context, cfg *pgconn.Config, key *upstreamKey) error {
	dial := cfg.DialFunc
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, key.network, key.address)
	if err != nil {
		return err
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	buf := make([]byte, 12, 12+len(key.secret))
	binary.BigEndian.PutUint32(buf[0:4], uint32(12+len(key.secret)))
	binary.BigEndian.PutUint32(buf[4:8], cancelRequestCode)
	binary.BigEndian.PutUint32(buf[8:12], key.pid)
	buf = append(buf, key.secret...)
	if _, err := conn.Write(buf); err != nil {
		return err
	}
	// The server closes the connection when it has handled the request;
	// wait for that so the cancel is in effect before we return.
	_, _ = io.Copy(io.Discard, conn)
	return nil
}
