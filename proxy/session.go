package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A session serves one client connection. It is not safe for concurrent
// use, with these exceptions: idle, terminate and close may be called from
// the Server, and the client writer cw is shared (under cmu) between the
// session goroutine and its upstream reader goroutine.
//
// After startup a session runs two loops:
//   - the session goroutine reads client messages and forwards them to the
//     upstream, flushing whenever it has read everything the client sent so
//     far (so a pipeline of Parse/Bind/Execute/Sync leaves in one write);
//   - the reader goroutine reads upstream messages and forwards them to the
//     client, flushing whenever it has forwarded everything the upstream sent
//     so far (after ReadyForQuery, after the answer to a Flush, at COPY
//     boundaries, for a NOTIFY that arrives while the client is idle).
//
// Neither loop flushes per message, and neither ever waits for input while
// holding output it has not written. Asynchronous messages (NOTIFY,
// notices, ParameterStatus) need the second loop: a client that is idle in
// LISTEN must still receive them, and Go cannot wait on two sockets from
// one goroutine.
type session struct {
	srv    *Server
	id     uint64
	logger *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	conn net.Conn // client connection, TLS once negotiated
	cr   msgReader

	cmu sync.Mutex // guards cw
	cw  *bufio.Writer

	upMu  sync.Mutex // guards up and upKey for close and cancel
	up    *serverConn
	upKey upstreamKey

	keyPID    uint32
	keySecret [4]byte

	pmu    sync.Mutex
	params map[string]string // ParameterStatus values, as the upstream reported them

	txStatus atomic.Uint32 // last ReadyForQuery status: 'I', 'T' or 'E'
	sent     atomic.Int64  // Query and Sync messages forwarded
	answered atomic.Int64  // ReadyForQuery messages relayed after startup
	partial  atomic.Bool   // extended-protocol messages forwarded since the last Sync
	closing  atomic.Bool

	closeOnce sync.Once
}

func (s *Server) newSession(conn net.Conn) *session {
	id := s.nextID.Add(1)
	ctx, cancel := context.WithCancel(s.baseCtx)
	return &session{
		srv:    s,
		id:     id,
		logger: s.logger.With("session_id", id, "remote_addr", conn.RemoteAddr().String()),
		ctx:    ctx,
		cancel: cancel,
		conn:   conn,
	}
}

// serve runs the session to its end.
func (s *session) serve() {
	s.srv.active.Add(1)
	defer s.srv.active.Add(-1)
	defer s.close()
	if err := s.startup(); err != nil {
		if !errors.Is(err, errCancelHandled) {
			s.logDisconnect("startup ended", err)
		}
		return
	}
	s.logger.Debug("session started")

	readerDone := make(chan error, 1)
	go func() { readerDone <- s.readUpstream() }()
	err := s.readClient()
	s.closeUpstream()
	rerr := <-readerDone
	if err == nil {
		err = rerr
	}
	s.logDisconnect("session ended", err)
}

// readClient forwards client messages to the upstream until the client
// leaves or breaks the protocol.
func (s *session) readClient() error {
	up := s.up
	for {
		if s.cr.r.Buffered() == 0 {
			if err := up.w.Flush(); err != nil {
				return err
			}
		}
		typ, n, err := s.cr.header()
		if err != nil {
			return s.clientReadFailed(err)
		}
		switch typ {
		case 'Q':
			s.sent.Add(1)
		case 'S':
			s.sent.Add(1)
			s.partial.Store(false)
		case 'P', 'B', 'E', 'D', 'C', 'H', 'F':
			s.partial.Store(true)
		case 'd', 'c', 'f':
			// COPY data, done, fail: part of the request in flight.
		case 'X':
			// Terminate: pass it on so the upstream ends cleanly.
			if err := writeHeader(up.w, typ, 0); err == nil {
				_ = up.w.Flush()
			}
			return nil
		default:
			return s.fail(&protocolError{msg: fmt.Sprintf("invalid frontend message type %d", typ)})
		}
		if err := writeHeader(up.w, typ, n); err != nil {
			return err
		}
		if err := s.cr.copyBody(up.w, n); err != nil {
			return s.clientReadFailed(err)
		}
	}
}

// clientReadFailed classifies an error reading from the client.
func (s *session) clientReadFailed(err error) error {
	var pe *protocolError
	if errors.As(err, &pe) {
		return s.fail(err)
	}
	return err
}

// readUpstream forwards upstream messages to the client until either side
// closes.
func (s *session) readUpstream() error {
	up := s.up
	var buf []byte
	for {
		if up.r.r.Buffered() == 0 {
			s.cmu.Lock()
			err := s.cw.Flush()
			s.cmu.Unlock()
			if err != nil {
				return err
			}
		}
		typ, n, err := up.r.header()
		if err != nil {
			return s.upstreamLost(err)
		}
		switch typ {
		case 'Z':
			if n != 1 {
				return s.upstreamLost(&protocolError{msg: "bad ReadyForQuery from upstream"})
			}
			b, err := up.r.body(buf, n)
			if err != nil {
				return s.upstreamLost(err)
			}
			buf = b
			s.txStatus.Store(uint32(b[0]))
			s.answered.Add(1)
			s.cmu.Lock()
			err = writeMsg(s.cw, typ, b)
			s.cmu.Unlock()
			if err != nil {
				return err
			}
		case 'S':
			if n > maxInspectLen {
				return s.upstreamLost(&protocolError{msg: "oversized ParameterStatus from upstream"})
			}
			b, err := up.r.body(buf, n)
			if err != nil {
				return s.upstreamLost(err)
			}
			buf = b
			s.recordParameter(b)
			s.cmu.Lock()
			err = writeMsg(s.cw, typ, b)
			s.cmu.Unlock()
			if err != nil {
				return err
			}
		default:
			s.cmu.Lock()
			err := writeHeader(s.cw, typ, n)
			if err == nil {
				err = up.r.copyBody(s.cw, n)
			}
			s.cmu.Unlock()
			if err != nil {
				return err
			}
		}
	}
}

// upstreamLost ends the session after the upstream connection failed. If
// the client is still there it gets a FATAL error instead of a bare EOF.
func (s *session) upstreamLost(err error) error {
	if s.closing.Load() {
		return nil
	}
	s.logger.Debug("upstream connection ended", "err", err)
	s.cmu.Lock()
	_ = writeEncoded(s.cw, errorResponse(&Error{Code: "08006",
		Message: "terminating connection because the upstream connection was lost"}, true, s.logger))
	_ = s.cw.Flush()
	s.cmu.Unlock()
	s.close()
	return nil
}

// fail sends err to the client as a FATAL ErrorResponse and returns it.
func (s *session) fail(err error) error {
	if s.cw != nil {
		s.cmu.Lock()
		_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = writeEncoded(s.cw, errorResponse(err, true, s.logger))
		_ = s.cw.Flush()
		s.cmu.Unlock()
	}
	return err
}

// idle reports whether the session has no request in flight and no open
// transaction, so that Shutdown may end it without losing work.
func (s *session) idle() bool {
	return s.up != nil && !s.partial.Load() &&
		s.sent.Load() == s.answered.Load() &&
		byte(s.txStatus.Load()) == 'I'
}

// terminate ends an idle session the way Postgres does on a fast
// shutdown: a FATAL 57P01, then the connection closes.
func (s *session) terminate() {
	if s.closing.Swap(true) {
		return
	}
	s.cmu.Lock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeEncoded(s.cw, errorResponse(&Error{Code: "57P01",
		Message: "terminating connection due to administrator command"}, true, s.logger))
	_ = s.cw.Flush()
	s.cmu.Unlock()
	s.close()
}

// close releases the session's connections. It is idempotent and may be
// called from any goroutine.
func (s *session) close() {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.cancel()
		s.conn.Close()
		s.closeUpstream()
		s.srv.cancels.unregister(s)
	})
}

func (s *session) setUpstream(up *serverConn) {
	s.upMu.Lock()
	s.up = up
	s.upKey = up.key
	s.upMu.Unlock()
}

func (s *session) closeUpstream() {
	s.closing.Store(true)
	s.upMu.Lock()
	if s.up != nil {
		s.up.conn.Close()
	}
	s.upMu.Unlock()
}

// upstreamKey returns the upstream's cancel key, or nil before startup.
func (s *session) upstreamKey() *upstreamKey {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if s.up == nil || s.upKey.secret == nil {
		return nil
	}
	k := s.upKey
	return &k
}

// logDisconnect logs how a session ended: normal closures at Debug,
// anything else at Info.
func (s *session) logDisconnect(msg string, err error) {
	if err == nil || isNormalClosure(err) || errors.Is(err, errAuthFailed) {
		s.logger.Debug(msg, "err", err)
		return
	}
	s.logger.Info(msg, "err", err)
}

// isNormalClosure reports errors that just mean "the peer went away".
func isNormalClosure(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
