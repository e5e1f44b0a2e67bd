package proxy

import (
	"bytes"
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

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/jackc/pgx/v5/pgproto3"
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
	srv *Server
	id  uint64
	// lg is the session's logger, made on first use (most sessions never
	// log): see log.
	lg             atomic.Pointer[slog.Logger]
	user, database string // from the startup packet, for the log
	ctx            context.Context
	cancel         context.CancelFunc

	conn net.Conn // client connection, TLS once negotiated
	cr   msgReader

	cmu sync.Mutex // guards cw
	cw  *connWriter

	upMu  sync.Mutex // guards up and upKey for close and cancel
	up    *serverConn
	upKey upstreamKey

	keyPID    uint32
	keySecret [4]byte

	pmu    sync.Mutex
	params []paramStatus // ParameterStatus values, as the upstream reported them

	q respQueue // requests awaiting their answers, in order

	readerDone chan error // the upstream reader's end (see upstreamLoop)
	ended      func()     // called once when the session has ended (set by the Server)

	// localUnflushed is set (under cmu) when the session goroutine wrote
	// an answer of its own that is not flushed yet.
	localUnflushed bool

	txStatus    atomic.Uint32 // last ReadyForQuery status: 'I', 'T' or 'E'
	txEndSeq    atomic.Uint64 // the last forwarded Sync or Query whose ReadyForQuery said 'I' (see livePortal)
	batchFailed atomic.Bool   // an ErrorResponse ended the current extended batch; the upstream skips to Sync

	// Interception state, owned by the session goroutine.
	stmts            map[string]*icStmt    // intercepted prepared statements by name
	portals          map[string]*icPortal  // intercepted portals by name
	discardUntilSync bool                  // after an error the proxy raised in an extended batch
	boundarySeq      uint64                // Sync and Query messages forwarded (see livePortal)
	msgBuf           []byte                // reused buffer for inspected client messages
	batchOK          map[string]batchRight // queues the client's role may batch on (see batchable); cleared when it forwards a statement
	pipelineKey      any                   // batch key of the pipelined calls started since the last awaitPipelined; nil: none (see pipelined.go)

	plmu       sync.Mutex       // guards pipeline and collecting
	pipeline   []*pipelinedCall // pipelined calls the collector has yet to answer
	collecting bool             // the collector goroutine runs

	// Counter effects of calls made in the client's open transaction,
	// applied when it commits (see trackTxEnd).
	emu            sync.Mutex
	pendingEffects backend.Effects
	sawCommit      bool
	effectsPending atomic.Bool
	partial        atomic.Bool // extended-protocol messages forwarded since the last Sync
	handling       atomic.Bool // the session goroutine holds a client message (it is not waiting for one)
	fatalSent      atomic.Bool // a FATAL ErrorResponse went to the client (set under cmu): nothing may follow it
	closing        atomic.Bool

	intercepting bool // Fetchq calls are intercepted (Config.Rewriter and Queue set, Config.Database the session's)

	relay atomic.Pointer[relaySession] // set while the relay loop serves the session (relay_linux.go)

	closeOnce sync.Once
}

func (s *Server) newSession(conn net.Conn) *session {
	id := s.nextID.Add(1)
	ctx, cancel := context.WithCancel(s.baseCtx)
	return &session{
		srv:    s,
		id:     id,
		ctx:    ctx,
		cancel: cancel,
		conn:   conn,

		intercepting: s.cfg.Rewriter != nil && s.cfg.Queue != nil,
	}
}

// serve runs the session: startup, then the two loops (see session). It
// returns once they run; the session ends in endSession.
func (s *session) serve() {
	s.srv.active.Add(1)
	if err := s.startup(); err != nil {
		if !errors.Is(err, errCancelHandled) {
			s.logDisconnect("startup ended", err)
		}
		s.close()
		s.srv.active.Add(-1)
		s.end()
		return
	}
	s.log().Debug("session started")
	if l := s.srv.relayLoop(); l != nil && l.enter(s) {
		return
	}
	s.runLoops()
}

// runLoops runs the session's two loops on this goroutine and a new one.
func (s *session) runLoops() {
	s.readerDone = make(chan error, 1)
	go s.upstreamLoop()
	s.clientLoop()
}

// resume runs the session on its goroutines again after the relay loop
// handed it back: its readers start with the bytes the loop read but did
// not use (cin, uin), its writers with those the sockets did not take yet
// (cout, uout). A session handed back in the middle of a message passed
// through (broken) can only end.
func (s *session) resume(cin, uin, cout, uout []byte, broken bool) {
	if broken {
		s.close()
	}
	s.cr.resume(cin)
	s.up.r.resume(uin)
	if len(uout) > 0 {
		_, _ = s.up.w.Write(uout)
	}
	if len(cout) > 0 {
		s.cmu.Lock()
		_, _ = s.cw.Write(cout)
		s.localUnflushed = true
		s.cmu.Unlock()
	}
	s.runLoops()
}

// clientLoop reads the client until the session ends or the client goes
// idle; then the loop continues on a fresh goroutine, once the client
// speaks again (see errIdle).
func (s *session) clientLoop() {
	err := s.readClient()
	if errors.Is(err, errIdle) {
		go func() {
			if err := s.cr.waitWake(); err != nil {
				s.endSession(err)
				return
			}
			s.clientLoop()
		}()
		return
	}
	s.endSession(err)
}

// upstreamLoop is clientLoop for the upstream reader; its end goes to
// readerDone.
func (s *session) upstreamLoop() {
	err := s.readUpstream()
	if errors.Is(err, errIdle) {
		go func() {
			if err := s.up.r.waitWake(); err != nil {
				s.readerDone <- s.upstreamLost(err)
				return
			}
			s.upstreamLoop()
		}()
		return
	}
	s.readerDone <- err
}

// endSession ends the session once its client loop is done: it closes the
// upstream, waits for the upstream reader and releases the connections.
func (s *session) endSession(err error) {
	s.closeUpstream()
	rerr := <-s.readerDone
	if err == nil {
		err = rerr
	}
	s.logDisconnect("session ended", err)
	s.close()
	s.srv.active.Add(-1)
	s.end()
}

// end tells the Server the session is over.
func (s *session) end() {
	if s.ended != nil {
		s.ended()
	}
}

// readClient forwards client messages to the upstream until the client
// leaves or breaks the protocol. For each request it forwards it pushes the
// request's entry on the response queue first, so the upstream reader can
// tell where each answer ends.
func (s *session) readClient() error {
	up := s.up
	for {
		if s.cr.buffered() == 0 {
			if err := s.flushBeforeRead(); err != nil {
				return err
			}
			s.handling.Store(false)
		}
		typ, n, err := s.cr.header()
		if err != nil {
			return s.clientReadFailed(err)
		}
		// From here until it waits again the session is busy, even when
		// nothing is forwarded: an intercepted call runs in this goroutine.
		s.handling.Store(true)
		if n > maxSmallMessageLen && !largeMessage(typ) {
			// As Postgres: only a few message types may be long; a
			// Sync claiming 100 KB is refused without waiting for it.
			return s.fail(&protocolError{msg: fmt.Sprintf("invalid message length %d for message type %q", n, typ)})
		}
		var kind reqKind
		switch typ {
		case 'Q':
			kind = reqQuery
		case 'S':
			kind = reqSync
		case 'P':
			kind = reqParse
		case 'B':
			kind = reqBind
		case 'D':
			kind = reqDescribe
		case 'E':
			kind = reqExecute
		case 'C':
			kind = reqClose
		case 'F':
			kind = reqQuery // FunctionCall: answered up to its own ReadyForQuery
		case 'H', 'd', 'c', 'f':
			// Flush and COPY data, done, fail: part of a request in
			// flight, with no answer of their own.
			kind = reqLocal
		case 'X':
			// Terminate: pass it on so the upstream ends cleanly. The
			// session is closing from now on: the upstream's EOF that
			// follows is the end asked for, not a lost connection to
			// report to a client still reading (node-postgres' end()).
			s.closing.Store(true)
			if err := writeHeader(up.w, typ, 0); err == nil {
				_ = up.w.Flush()
			}
			return nil
		default:
			return s.fail(&protocolError{msg: fmt.Sprintf("invalid frontend message type %d", typ)})
		}
		if skippedAfterError(typ) && s.batchFailed.Load() && !s.q.hasSync() {
			// The upstream skips everything up to Sync after an error in
			// an extended-protocol batch, Query messages included: so
			// does the proxy, rather than wait for an answer that never
			// comes or answer a message itself that Postgres would skip.
			if _, err := s.cr.r.Discard(n); err != nil {
				return s.clientReadFailed(err)
			}
			continue
		}
		if s.discardUntilSync && typ != 'S' {
			// After an error the proxy raised in an extended batch,
			// Postgres' rule: discard everything up to Sync.
			if _, err := s.cr.r.Discard(n); err != nil {
				return s.clientReadFailed(err)
			}
			continue
		}
		if s.intercepting && inspected(typ) {
			handled, err := s.inspectClient(typ, n)
			if err != nil {
				return err
			}
			if !handled {
				err = s.forward(typ, kind, s.msgBuf)
			}
			if cap(s.msgBuf) > maxInspectLen {
				s.msgBuf = nil // do not keep a large buffer around
			}
			if err != nil {
				return err
			}
			continue
		}
		if err := s.forwardStreamed(typ, kind, n); err != nil {
			return err
		}
	}
}

// forwardStreamed forwards a client message whose body is still unread,
// streaming it.
func (s *session) forwardStreamed(typ byte, kind reqKind, n int) error {
	if err := s.pushRequest(kind); err != nil {
		return err
	}
	if err := writeHeader(s.up.w, typ, n); err != nil {
		return err
	}
	if err := s.cr.copyBody(s.up.w, n); err != nil {
		return s.clientReadFailed(err)
	}
	return nil
}

// forward forwards a client message whose body has been read.
func (s *session) forward(typ byte, kind reqKind, body []byte) error {
	if err := s.pushRequest(kind); err != nil {
		return err
	}
	return writeMsg(s.up.w, typ, body)
}

// pushRequest records a forwarded request on the response queue, once
// the pipelined calls still running have ended: what the client sends
// after a call must see its effects.
func (s *session) pushRequest(kind reqKind) error {
	if err := s.awaitPipelined(); err != nil {
		return err
	}
	if kind == reqLocal {
		return nil
	}
	if kind == reqQuery || kind == reqParse || kind == reqExecute {
		// The client runs SQL of its own (SET ROLE, perhaps, or a
		// prepared one): check its rights again before batching its
		// calls.
		clear(s.batchOK)
	}
	var seq uint64
	if kind == reqSync || kind == reqQuery {
		s.boundarySeq++
		seq = s.boundarySeq
	}
	if kind == reqSync {
		s.partial.Store(false)
	} else if kind != reqQuery {
		s.partial.Store(true)
	}
	s.q.push(request{kind: kind, seq: seq})
	return nil
}

// skippedAfterError reports the client messages the upstream ignores
// after an error in an extended-protocol batch, until Sync.
func skippedAfterError(typ byte) bool {
	switch typ {
	case 'Q', 'P', 'B', 'D', 'E', 'C':
		return true
	}
	return false
}

// maxSmallMessageLen is Postgres' PQ_SMALL_MESSAGE_LIMIT: the longest body
// of any client message but the few in largeMessage.
const maxSmallMessageLen = 10000

// largeMessage reports the client message types that may be up to 1 GB
// long (Postgres' PQ_LARGE_MESSAGE_LIMIT).
func largeMessage(typ byte) bool {
	switch typ {
	case 'Q', 'P', 'B', 'd', 'F':
		return true
	}
	return false
}

// inspected reports whether a client message may be one the proxy answers
// itself: a Query or Parse of a Fetchq call, or an extended-protocol
// message naming an intercepted statement or portal.
func inspected(typ byte) bool {
	switch typ {
	case 'Q', 'P', 'B', 'D', 'E', 'C', 'S':
		return true
	}
	return false
}

// inspectClient reads the body of a message the proxy may have to answer
// itself (into s.msgBuf) and answers it when it is an intercepted call. It
// reports whether the message was handled; if not, the caller forwards
// s.msgBuf.
func (s *session) inspectClient(typ byte, n int) (bool, error) {
	body, err := s.cr.body(s.msgBuf[:0], n)
	s.msgBuf = body
	if err != nil {
		return true, s.clientReadFailed(err)
	}
	if typ == 'S' {
		s.discardUntilSync = false
		if fwd, _ := s.q.counts(); len(body) == 0 && !s.partial.Load() && fwd == 0 {
			// Nothing was forwarded since the last Sync and nothing is
			// in flight upstream: the upstream sits at a Sync boundary in
			// the state its last ReadyForQuery reported, so the proxy
			// answers this Sync itself and spares a round trip (after
			// the answers of pipelined calls still running, if any). (A
			// Sync with a body is Postgres' to refuse.)
			s.respondReady()
			return true, nil
		}
		return false, nil
	}
	return s.interceptClient(typ, body)
}

// flushBeforeRead writes out everything the session goroutine buffered
// (requests to the upstream, its own answers to the client) before it
// blocks reading the client.
func (s *session) flushBeforeRead() error {
	if err := s.up.w.Flush(); err != nil {
		return err
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if !s.localUnflushed {
		return nil
	}
	s.localUnflushed = false
	return s.cw.Flush()
}

// clientReadFailed classifies an error reading from the client.
func (s *session) clientReadFailed(err error) error {
	var pe *protocolError
	if errors.As(err, &pe) {
		return s.fail(err)
	}
	return err
}

// readUpstream forwards upstream messages to the client, or to the
// internal caller that captures them, until either side closes. It pops
// response-queue entries as their answers end and then writes the
// proxy's own answers that have reached the head of the queue.
func (s *session) readUpstream() error {
	up := s.up
	var buf []byte
	for {
		// The wait for the next message happens in this small frame, so
		// that the stack of an idle session's reader can shrink.
		if up.r.buffered() == 0 {
			s.cmu.Lock()
			err := s.cw.Flush()
			s.cmu.Unlock()
			if err != nil {
				return err
			}
		}
		typ, n, err := up.r.header()
		if errors.Is(err, errIdle) {
			return err
		}
		if err != nil {
			return s.upstreamLost(err)
		}
		if stop, err := s.relayUpstream(typ, n, &buf); stop {
			return err
		}
	}
}

// relayUpstream handles one upstream message whose header has been read:
// it tracks what the session must know and hands the message to the
// client or to the internal caller awaiting it. stop ends the reader with
// err.
func (s *session) relayUpstream(typ byte, n int, bufp *[]byte) (stop bool, err error) {
	up := s.up
	head, pending := s.q.front()

	// Track what the session must know, whoever gets the message.
	var body []byte
	switch typ {
	case 'Z', 'S':
		if n > maxInspectLen || (typ == 'Z' && n != 1) {
			return true, s.upstreamLost(&protocolError{msg: fmt.Sprintf("malformed message %q from upstream", typ)})
		}
		if body, err = up.r.body(*bufp, n); err != nil {
			return true, s.upstreamLost(err)
		}
		*bufp = body
		if typ == 'Z' {
			s.txStatus.Store(uint32(body[0]))
		} else {
			s.recordParameter(body)
		}
	}

	switch {
	case pending && head.capture != nil && typ != 'A' && typ != 'S':
		// The answer to a statement the session goroutine sent
		// itself: hand it over.
		if body == nil {
			if body, err = up.r.body(nil, n); err != nil {
				return true, s.upstreamLost(err)
			}
		} else {
			body = append([]byte(nil), body...)
		}
		if typ == 'E' && fatalSeverity(body) {
			// Postgres is ending the client's connection under a
			// statement of the proxy's: the client gets that FATAL
			// (first, and nothing after it) as it would directly.
			var er pgproto3.ErrorResponse
			if er.Decode(body) == nil {
				s.sendFatal(internalErrorForClient(pgErrorFrom(&er)))
			}
		}
		head.capture.deliver(typ, body)
	case body != nil:
		s.cmu.Lock()
		err = writeMsg(s.cw, typ, body)
		s.cmu.Unlock()
		if s.effectsPending.Load() {
			s.trackTxEnd(typ, body)
		}
	case typ == 'E' && n <= maxInspectLen:
		// Inspected for its severity: after a FATAL relayed from
		// Postgres the client gets nothing more from the proxy.
		if body, err = up.r.body(*bufp, n); err != nil {
			return true, s.upstreamLost(err)
		}
		*bufp = body
		s.cmu.Lock()
		if !s.fatalSent.Load() {
			s.fatalSent.Store(fatalSeverity(body))
			err = writeMsg(s.cw, typ, body)
		}
		s.cmu.Unlock()
	case typ == 'C' && s.effectsPending.Load() && n <= maxInspectLen:
		if body, err = up.r.body(*bufp, n); err != nil {
			return true, s.upstreamLost(err)
		}
		*bufp = body
		s.trackTxEnd(typ, body)
		s.cmu.Lock()
		err = writeMsg(s.cw, typ, body)
		s.cmu.Unlock()
	case n <= up.r.r.Size():
		// Read whole before any of it goes out: if the upstream dies
		// now, the client has whole messages and then the FATAL.
		var p []byte
		if p, err = up.r.r.Peek(n); err != nil {
			return true, s.upstreamLost(err)
		}
		s.cmu.Lock()
		err = writeMsg(s.cw, typ, p)
		s.cmu.Unlock()
		_, _ = up.r.r.Discard(n)
	default:
		// Larger than the read buffer: streamed. An upstream that
		// dies mid-message leaves the client with part of it, as a
		// direct connection would; the session then closes at once.
		s.cmu.Lock()
		err = writeHeader(s.cw, typ, n)
		if err == nil {
			err = up.r.copyBody(s.cw, n)
		}
		s.cmu.Unlock()
	}
	if err != nil {
		// Either side failed mid-message: nothing more can be said
		// to the client.
		s.close()
		return true, err
	}

	var z byte
	if typ == 'Z' {
		z = body[0]
	}
	s.noteAnswer(head, pending, typ, z)
	return false, nil
}

// noteAnswer pops the response queue's head entry (head, when pending)
// when upstream message typ ends its answer; z is a ReadyForQuery's
// status.
func (s *session) noteAnswer(head request, pending bool, typ, z byte) {
	if !pending {
		return
	}
	switch {
	case head.kind.ends(typ):
		if typ == 'Z' && head.capture == nil && head.seq != 0 && z == 'I' {
			// A client's Sync or Query ended its transaction, and with
			// it the portals bound before it.
			s.txEndSeq.Store(head.seq)
		}
		s.answered(false)
	case typ == 'E' && head.kind.extended():
		// The upstream now skips everything up to the next Sync, and so
		// must the proxy's own answers queued before it.
		s.answered(true)
	}
}

// answered pops the head of the response queue (and, after an error in
// an extended-protocol batch, every entry up to the next Sync), then writes
// the proxy's own answers that have reached the head.
func (s *session) answered(skipToSync bool) {
	q := &s.q
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case skipToSync:
		s.batchFailed.Store(true)
	case q.items[q.head].kind == reqSync || q.items[q.head].kind == reqQuery:
		s.batchFailed.Store(false)
	}
	q.popLocked()
	for skipToSync && q.head < len(q.items) && q.items[q.head].kind != reqSync {
		if c := q.items[q.head].capture; c != nil {
			c.deliver(0, nil) // skipped: the upstream will not answer it
		}
		q.popLocked()
	}
	s.writeLocalsLocked()
}

// writeLocalsLocked writes the proxy's own answers at the head of the
// queue. s.q.mu is held.
func (s *session) writeLocalsLocked() {
	q := &s.q
	for q.head < len(q.items) && q.items[q.head].ready() {
		s.cmu.Lock()
		if !s.fatalSent.Load() {
			_, _ = s.cw.Write(q.items[q.head].answer())
		}
		s.cmu.Unlock()
		q.popLocked()
	}
}

// respond queues an answer the proxy makes itself. It is written at once
// if nothing forwarded earlier is still awaiting its answer, else by the
// upstream reader when those answers are in.
func (s *session) respond(b []byte) {
	q := &s.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		s.cmu.Lock()
		if !s.fatalSent.Load() {
			_, _ = s.cw.Write(b)
			s.localUnflushed = true
		}
		s.cmu.Unlock()
		return
	}
	q.pushLocked(request{kind: reqLocal, local: b})
}

// upstreamLost ends the session after the upstream connection failed. If
// the client is still there it gets a FATAL error instead of a bare EOF.
func (s *session) upstreamLost(err error) error {
	if s.closing.Load() {
		return nil
	}
	if !s.fatalSent.Load() {
		s.log().Warn("upstream connection lost; closing the client session", "err", err)
	}
	s.sendFatal(&Error{Code: "08006", Message: "terminating connection because the upstream connection was lost"})
	s.close()
	return nil
}

// sendFatal sends err to the client as a FATAL ErrorResponse, unless a
// FATAL already went (the proxy's own or one relayed from Postgres): as
// from Postgres, nothing follows a FATAL.
func (s *session) sendFatal(err error) {
	if s.cw == nil {
		return
	}
	// The deadline comes before the lock: a writer blocked on a client
	// that stopped reading holds the lock, and must give up too (the
	// server's shutdown waits for this call).
	_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if s.fatalSent.Swap(true) {
		return
	}
	_ = writeEncoded(s.cw, errorResponse(err, true, s.log()))
	_ = s.cw.Flush()
}

// fail sends err to the client as a FATAL ErrorResponse and returns it.
func (s *session) fail(err error) error {
	s.sendFatal(err)
	return err
}

// idle reports whether the session waits for its client's next message
// with no request in flight (forwarded, or an intercepted call running)
// and no open transaction, so that Shutdown may end it without losing
// work.
func (s *session) idle() bool {
	return s.up != nil && !s.handling.Load() && !s.partial.Load() && s.q.len() == 0 &&
		byte(s.txStatus.Load()) == 'I'
}

// terminate ends an idle session the way Postgres does on a fast
// shutdown: a FATAL 57P01, then the connection closes.
func (s *session) terminate() {
	if ls := s.relay.Load(); ls != nil {
		// In the relay loop: handed back first, if still idle there.
		ls.loop.post(func() {
			if ls.loop.owns(ls) && s.idle() {
				ls.loop.handBack(ls)
				s.terminate()
			}
		})
		return
	}
	if s.closing.Swap(true) {
		return
	}
	s.sendFatal(&Error{Code: "57P01", Message: "terminating connection due to administrator command"})
	s.close()
}

// close releases the session's connections. It is idempotent and may be
// called from any goroutine.
func (s *session) close() {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.cancel()
		s.upMu.Lock() // the relay loop swaps the connections under it
		s.conn.Close()
		ls := s.relay.Load()
		s.upMu.Unlock()
		s.closeUpstream()
		s.srv.cancels.unregister(s)
		if ls != nil {
			// In the relay loop: handed back, its goroutines find the
			// connections closed and end it.
			ls.loop.post(func() { ls.loop.handBack(ls) })
		}
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
		s.log().Debug(msg, "err", err)
		return
	}
	s.log().Info(msg, "err", err)
}

// isNormalClosure reports errors that just mean "the peer went away".
func isNormalClosure(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// fatalSeverity reports whether the body of an ErrorResponse has the
// severity FATAL or PANIC, after which Postgres closes the connection. The
// unlocalized severity (V) decides; without it, the localized one (S).
func fatalSeverity(body []byte) bool {
	sev := ""
	for len(body) > 1 && body[0] != 0 {
		code := body[0]
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			break
		}
		switch code {
		case 'V':
			sev = string(body[1 : 1+end])
			return sev == "FATAL" || sev == "PANIC"
		case 'S':
			sev = string(body[1 : 1+end])
		}
		body = body[2+end:]
	}
	return sev == "FATAL" || sev == "PANIC"
}

// log returns the session's logger, with its id, address, user and
// database.
func (s *session) log() *slog.Logger {
	if l := s.lg.Load(); l != nil {
		return l
	}
	args := []any{"session_id", s.id, "remote_addr", s.conn.RemoteAddr().String()}
	if s.user != "" || s.database != "" {
		args = append(args, "user", s.user, "database", s.database)
	}
	l := s.srv.logger.With(args...)
	s.lg.Store(l)
	return l
}
