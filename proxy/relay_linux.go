//go:build linux

package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// The relay loop.
//
// Most sessions only pass messages through: their client never calls a
// Fetchq function, or has not yet. For them the two goroutines of a
// session (session.go) cost more than the forwarding itself: every message
// takes a read that finds nothing (Go's netpoller reads before it waits),
// a park, a netpoll and a wake-up, and on a virtual machine where system
// calls and context switches are dear that doubled the proxy's CPU per
// forwarded transaction against PgBouncer's.
//
// The relay loop serves such sessions the way PgBouncer serves all of
// its clients: one goroutine and one epoll set holding both sockets of
// every session it serves. When a socket is readable the loop reads what
// it holds with one read, forwards the whole messages among the bytes to
// the other socket with one write, and keeps the session's bookkeeping
// (response queue, transaction status, parameters, rights to re-check) as
// the session's goroutines do. A client message it does not forward
// itself (a Fetchq call, a Terminate, anything malformed or too long to
// inspect) hands the session back to its goroutines with the bytes not
// yet used; so does the end of either connection, and a close or a
// shutdown's terminate from the Server. From then on the session runs on
// its goroutines until it ends. A session in the loop holds no goroutine
// and, between messages, no buffer.
//
// The loop waits for its epoll set through Go's netpoller (the set's own
// descriptor is pollable), so it never blocks a thread and Go's scheduler
// runs it like any goroutine.

// relayReadSize is how much one read takes from a socket.
const relayReadSize = 64 << 10

// relayMaxWhole bounds the messages the loop forwards only once it has
// them whole (as a session's goroutines do with those that fit their
// buffer): a larger one is passed through as it arrives, and a larger
// Query or Parse is left to the goroutines, which inspect it.
const relayMaxWhole = maxInspectLen + headerLen

// epollin and epollout are EPOLLIN and EPOLLOUT as an epoll event's mask.
const (
	epollin  = uint32(syscall.EPOLLIN)
	epollout = uint32(syscall.EPOLLOUT)
)

// relayLoop runs the sessions it was given on one goroutine.
type relayLoop struct {
	logger  *slog.Logger
	epfd    int
	ep      *os.File // epfd, watched by Go's netpoller
	epRC    syscall.RawConn
	waitFn  func(fd uintptr) bool // the epoll_wait wait runs (made once)
	nev     int                   // events waitFn received
	waitErr syscall.Errno
	wakefd  int // an eventfd in the set: post writes it

	mu     sync.Mutex
	posts  []func()
	woken  bool // wakefd was written since the loop last read it
	closed bool
	done   chan struct{} // closed when run returns

	// Owned by the loop's goroutine.
	slots   []*relaySession // by slot number, the epoll events' key
	free    []int32
	events  []syscall.EpollEvent
	scratch []byte

	sessions  atomic.Int64 // sessions in the loop now
	handbacks atomic.Int64 // sessions handed back to their goroutines
}

// relaySession is a session in the loop.
type relaySession struct {
	s          *session
	loop       *relayLoop
	slot       int32
	client, up relaySide
	handedBack bool
}

// relaySide is one of a session's sockets.
type relaySide struct {
	fd   int    // a duplicate of the connection's descriptor, owned by the loop
	in   []byte // the start of a message not yet whole
	out  []byte // bytes the socket did not take yet
	mask uint32 // epoll interest set
	// stream counts the bytes still to pass through of a message larger
	// than relayMaxWhole; streamTyp is its type.
	stream    int
	streamTyp byte
}

// newRelayLoop returns a running relay loop.
func newRelayLoop(logger *slog.Logger) (*relayLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	r, _, e := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if e != 0 {
		syscall.Close(epfd)
		return nil, fmt.Errorf("eventfd2: %w", e)
	}
	wakefd := int(r)
	ev := syscall.EpollEvent{Events: epollin, Fd: -1}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(wakefd)
		return nil, err
	}
	ep := os.NewFile(uintptr(epfd), "relay-epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		syscall.Close(wakefd)
		return nil, err
	}
	l := &relayLoop{
		logger: logger, epfd: epfd, ep: ep, epRC: rc, wakefd: wakefd,
		done:    make(chan struct{}),
		events:  make([]syscall.EpollEvent, 256),
		scratch: make([]byte, relayReadSize),
	}
	l.waitFn = l.pollEvents
	go l.run()
	return l, nil
}

// dupSocket returns a duplicate of c's descriptor when c is a socket the
// loop can read and write itself (not TLS, not a custom dialer's conn).
func dupSocket(c net.Conn) (int, bool) {
	var rc syscall.RawConn
	var err error
	switch c := c.(type) {
	case *net.TCPConn:
		rc, err = c.SyscallConn()
	case *net.UnixConn:
		rc, err = c.SyscallConn()
	default:
		return -1, false
	}
	if err != nil {
		return -1, false
	}
	nfd := -1
	cerr := rc.Control(func(fd uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if e == 0 {
			nfd = int(r)
		}
	})
	return nfd, cerr == nil && nfd >= 0
}

// enter moves s, whose goroutines are not running and whose response
// queue is empty, into the loop. It reports false, leaving s alone, when
// its connections are not plain sockets or it is closing.
//
// The loop works on duplicates of the two descriptors, and the session's
// net.Conns are closed, which takes the descriptors out of Go's netpoller:
// otherwise every message would also wake the netpoller's thread. The
// sockets stay open through the duplicates; handBack makes new net.Conns
// of them.
func (l *relayLoop) enter(s *session) bool {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if s.closing.Load() {
		return false
	}
	cfd, ok := dupSocket(s.conn)
	if !ok {
		return false
	}
	ufd, ok := dupSocket(s.up.conn)
	if !ok {
		syscall.Close(cfd)
		return false
	}
	ls := &relaySession{s: s, loop: l, slot: -1}
	ls.client.fd, ls.up.fd = cfd, ufd
	ls.client.in, ls.up.in = s.cr.detach(), s.up.r.detach()
	s.conn.Close()
	s.up.conn.Close()
	s.relay.Store(ls)
	if !l.post(func() { l.add(ls) }) {
		// The loop is closed (a Server closes it only once its sessions
		// have ended, so never here): the session goes on as usual.
		ls.handedBack = true
		l.restore(ls)
		go s.resume(ls.client.in, ls.up.in, nil, nil, false)
	}
	return true
}

// post runs f on the loop's goroutine, after the events at hand. It
// reports false when the loop is closed.
func (l *relayLoop) post(f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.posts = append(l.posts, f)
	if !l.woken {
		l.woken = true
		one := uint64(1)
		_, _, _ = syscall.RawSyscall(syscall.SYS_WRITE, uintptr(l.wakefd), uintptr(unsafe.Pointer(&one)), 8)
	}
	return true
}

// close stops the loop once every session has left it (the Server's
// Close waits for them first).
func (l *relayLoop) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	l.ep.Close() // ends the wait in run
	<-l.done
	syscall.Close(l.wakefd)
}

// run is the loop.
func (l *relayLoop) run() {
	defer close(l.done)
	for {
		n, err := l.wait()
		if err != nil {
			l.mu.Lock()
			closed := l.closed
			l.mu.Unlock()
			if !closed {
				l.logger.Error("relay loop stopped", "err", err)
			}
			l.runPosts()
			return
		}
		woken := false
		for _, ev := range l.events[:n] {
			if ev.Fd < 0 {
				woken = true // wakefd: the posts run below
				continue
			}
			if ls := l.slots[ev.Fd]; ls != nil { // else handed back earlier in this round
				l.event(ls, ev.Pad == 1, ev.Events)
			}
		}
		if woken {
			l.runPosts()
		}
	}
}

// wait waits for events and returns how many l.events holds.
func (l *relayLoop) wait() (int, error) {
	l.nev, l.waitErr = 0, 0
	if err := l.epRC.Read(l.waitFn); err != nil {
		return 0, err
	}
	if l.waitErr != 0 {
		return 0, os.NewSyscallError("epoll_wait", l.waitErr)
	}
	return l.nev, nil
}

// pollEvents takes the events at hand without waiting; finding none, it
// lets Go's netpoller wait until the epoll set is readable.
func (l *relayLoop) pollEvents(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, fd,
			uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case 0:
			l.nev = int(r)
			return r > 0
		}
		l.waitErr = e
		return true
	}
}

// runPosts runs what post queued.
func (l *relayLoop) runPosts() {
	var v [8]byte
	_, _, _ = syscall.RawSyscall(syscall.SYS_READ, uintptr(l.wakefd), uintptr(unsafe.Pointer(&v[0])), 8)
	l.mu.Lock()
	posts := l.posts
	l.posts, l.woken = nil, false
	l.mu.Unlock()
	for _, f := range posts {
		f()
	}
}

// add registers ls's sockets and forwards what its readers held.
func (l *relayLoop) add(ls *relaySession) {
	if len(l.free) > 0 {
		ls.slot = l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
	} else {
		ls.slot = int32(len(l.slots))
		l.slots = append(l.slots, nil)
	}
	l.slots[ls.slot] = ls
	l.sessions.Add(1)
	if !l.ctl(ls, &ls.client, 0, syscall.EPOLL_CTL_ADD, epollin) || !l.ctl(ls, &ls.up, 1, syscall.EPOLL_CTL_ADD, epollin) {
		l.handBack(ls)
		return
	}
	if len(ls.client.in) > 0 && !l.fromClient(ls, ls.client.in) {
		return
	}
	if len(ls.up.in) > 0 {
		l.fromUpstream(ls, ls.up.in)
	}
}

// ctl changes a side's registration in the epoll set.
func (l *relayLoop) ctl(ls *relaySession, side *relaySide, which int32, op int, mask uint32) bool {
	ev := syscall.EpollEvent{Events: mask, Fd: ls.slot, Pad: which}
	if err := syscall.EpollCtl(l.epfd, op, side.fd, &ev); err != nil {
		return false
	}
	side.mask = mask
	return true
}

// event handles what epoll reported for one socket of ls.
func (l *relayLoop) event(ls *relaySession, upstream bool, events uint32) {
	src := &ls.client
	if upstream {
		src = &ls.up
	}
	if events&epollout != 0 && len(src.out) > 0 && !l.flushOut(ls, src) {
		return
	}
	if events&^epollout == 0 {
		return
	}
	if src.mask&epollin == 0 {
		if events&(syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
			// Not read while the other side is behind: its end is the
			// goroutines' to find.
			l.handBack(ls)
		}
		return
	}
	buf, ok := l.read(src)
	switch {
	case !ok:
		l.handBack(ls)
	case len(buf) == 0:
	case upstream:
		l.fromUpstream(ls, buf)
	default:
		l.fromClient(ls, buf)
	}
}

// read reads what src's socket holds, after the bytes src carried over.
// ok is false at the end of the connection or on an error: the session's
// goroutines will meet them again.
func (l *relayLoop) read(src *relaySide) (buf []byte, ok bool) {
	n, err := rawRead(src.fd, l.scratch)
	if err != nil {
		return nil, errors.Is(err, syscall.EAGAIN)
	}
	if n == 0 {
		return nil, false
	}
	if len(src.in) > 0 {
		src.in = append(src.in, l.scratch[:n]...)
		return src.in, true
	}
	return l.scratch[:n], true
}

// fromClient forwards the whole client messages at the start of buf (the
// bytes just read, or src.in) and keeps the rest for the next read. It
// reports false when it handed the session back.
func (l *relayLoop) fromClient(ls *relaySession, buf []byte) bool {
	s := ls.s
	src, dst := &ls.client, &ls.up
	off, run := 0, 0 // the bytes before off are dealt with; buf[run:off] awaits its write
	if src.stream > 0 {
		k := min(src.stream, len(buf))
		src.stream -= k
		off = k
	}
	for {
		rest := buf[off:]
		if len(rest) < headerLen {
			break
		}
		typ, n, ok := parseHeader(rest)
		if !ok {
			return l.handBackAt(ls, src, dst, buf, run, off) // the goroutines report it
		}
		total := headerLen + n
		kind, ok := relayedClientKind(typ)
		if !ok || (n > maxSmallMessageLen && !largeMessage(typ)) {
			return l.handBackAt(ls, src, dst, buf, run, off)
		}
		inspect := s.intercepting && (typ == 'Q' || typ == 'P')
		if total > len(rest) {
			if total <= relayMaxWhole {
				break // the rest comes with a later read
			}
			if inspect || s.batchFailed.Load() {
				return l.handBackAt(ls, src, dst, buf, run, off)
			}
			// Larger than the loop keeps: passed through as it comes.
			if err := s.pushRequest(kind); err != nil {
				return l.handBackAt(ls, src, dst, buf, run, off)
			}
			src.stream, src.streamTyp = total-len(rest), typ
			off = len(buf)
			break
		}
		if inspect && containsFetchq(rest[headerLen:total]) {
			return l.handBackAt(ls, src, dst, buf, run, off)
		}
		if skippedAfterError(typ) && s.batchFailed.Load() && !s.q.hasSync() {
			// As the goroutines do: the upstream skips it, so does the
			// proxy (readClient).
			if !l.send(ls, dst, src, buf[run:off]) {
				l.handBack(ls)
				return false
			}
			off += total
			run = off
			continue
		}
		if err := s.pushRequest(kind); err != nil {
			return l.handBackAt(ls, src, dst, buf, run, off)
		}
		off += total
	}
	if !l.send(ls, dst, src, buf[run:off]) {
		l.handBack(ls)
		return false
	}
	carry(src, buf, off)
	return true
}

// relayedClientKind returns the response-queue kind of a client message
// the loop forwards; ok is false for a message it leaves to the session's
// goroutines (Terminate, and the types Postgres does not know).
func relayedClientKind(typ byte) (kind reqKind, ok bool) {
	switch typ {
	case 'Q', 'F':
		return reqQuery, true
	case 'S':
		return reqSync, true
	case 'P':
		return reqParse, true
	case 'B':
		return reqBind, true
	case 'D':
		return reqDescribe, true
	case 'E':
		return reqExecute, true
	case 'C':
		return reqClose, true
	case 'H', 'd', 'c', 'f':
		return reqLocal, true
	}
	return 0, false
}

// fromUpstream forwards the whole upstream messages at the start of buf,
// tracking what the session must know of them as relayUpstream does, and
// keeps the rest for the next read. It reports false when it handed the
// session back.
func (l *relayLoop) fromUpstream(ls *relaySession, buf []byte) bool {
	s := ls.s
	src, dst := &ls.up, &ls.client
	off, run := 0, 0
	if src.stream > 0 {
		k := min(src.stream, len(buf))
		src.stream -= k
		off = k
		if src.stream == 0 {
			head, pending := s.q.front()
			s.noteAnswer(head, pending, src.streamTyp, 0)
		}
	}
	for {
		rest := buf[off:]
		if len(rest) < headerLen {
			break
		}
		typ, n, ok := parseHeader(rest)
		if !ok {
			return l.handBackAt(ls, src, dst, buf, run, off)
		}
		total := headerLen + n
		if (typ == 'Z' && n != 1) || (typ == 'S' && n > maxInspectLen) {
			return l.handBackAt(ls, src, dst, buf, run, off) // relayUpstream reports it
		}
		if total > len(rest) {
			if total <= relayMaxWhole {
				break
			}
			// Larger than the loop keeps (never a ReadyForQuery, a
			// ParameterStatus or an inspected ErrorResponse): passed
			// through as it comes.
			src.stream, src.streamTyp = total-len(rest), typ
			off = len(buf)
			break
		}
		body := rest[headerLen:total]
		head, pending := s.q.front()
		var z byte
		switch typ {
		case 'Z':
			z = body[0]
			s.txStatus.Store(uint32(z))
		case 'S':
			s.recordParameter(body)
		case 'E':
			if n <= maxInspectLen {
				if s.fatalSent.Load() {
					// Nothing follows a FATAL (relayUpstream).
					if !l.send(ls, dst, src, buf[run:off]) {
						l.handBack(ls)
						return false
					}
					run = off + total
				} else {
					s.fatalSent.Store(fatalSeverity(body))
				}
			}
		}
		off += total
		s.noteAnswer(head, pending, typ, z)
	}
	if !l.send(ls, dst, src, buf[run:off]) {
		l.handBack(ls)
		return false
	}
	carry(src, buf, off)
	return true
}

// carry keeps buf[off:], the start of a message not yet whole, in src.in
// (buf may be src.in itself).
func carry(src *relaySide, buf []byte, off int) {
	rest := buf[off:]
	if len(rest) == 0 {
		src.in = nil
		return
	}
	if len(src.in) > 0 && &src.in[0] == &buf[0] {
		src.in = src.in[:copy(src.in, rest)]
		return
	}
	src.in = append([]byte(nil), rest...)
}

// send writes p to dst (after what dst has yet to take). What the socket
// does not take waits in dst.out, and src is not read until it is
// written. It reports false when the write failed.
func (l *relayLoop) send(ls *relaySession, dst, src *relaySide, p []byte) bool {
	if len(p) == 0 {
		return true
	}
	if len(dst.out) > 0 {
		dst.out = append(dst.out, p...)
		return true
	}
	n, err := rawWrite(dst.fd, p)
	if err != nil && !errors.Is(err, syscall.EAGAIN) {
		return false
	}
	if n < len(p) {
		dst.out = append(dst.out, p[n:]...)
		return l.setMasks(ls)
	}
	return true
}

// flushOut writes what side has yet to take, once its socket is writable.
// It reports false when it handed the session back.
func (l *relayLoop) flushOut(ls *relaySession, side *relaySide) bool {
	n, err := rawWrite(side.fd, side.out)
	if err != nil && !errors.Is(err, syscall.EAGAIN) {
		l.handBack(ls)
		return false
	}
	side.out = side.out[n:]
	if len(side.out) == 0 {
		side.out = nil
	}
	if !l.setMasks(ls) {
		l.handBack(ls)
		return false
	}
	return true
}

// setMasks sets each side's epoll interest: readable unless the other
// side has bytes it did not take yet, writable while it has some itself.
func (l *relayLoop) setMasks(ls *relaySession) bool {
	want := func(self, other *relaySide) uint32 {
		var m uint32
		if len(other.out) == 0 {
			m |= epollin
		}
		if len(self.out) > 0 {
			m |= epollout
		}
		return m
	}
	if m := want(&ls.client, &ls.up); m != ls.client.mask && !l.ctl(ls, &ls.client, 0, syscall.EPOLL_CTL_MOD, m) {
		return false
	}
	if m := want(&ls.up, &ls.client); m != ls.up.mask && !l.ctl(ls, &ls.up, 1, syscall.EPOLL_CTL_MOD, m) {
		return false
	}
	return true
}

// handBackAt forwards buf[run:off] (messages of src dealt with) to dst
// and hands the session back with buf[off:] for src's reader. It returns
// false.
func (l *relayLoop) handBackAt(ls *relaySession, src, dst *relaySide, buf []byte, run, off int) bool {
	if l.send(ls, dst, src, buf[run:off]) {
		carry(src, buf, off)
	}
	l.handBack(ls)
	return false
}

// owns reports whether ls is in the loop.
func (l *relayLoop) owns(ls *relaySession) bool {
	return ls.slot >= 0 && int(ls.slot) < len(l.slots) && l.slots[ls.slot] == ls
}

// handBack takes ls out of the loop and starts its goroutines with what
// the loop holds for them, on new net.Conns of its sockets (or, when the
// session is closing, on the closed ones, so that they end it).
func (l *relayLoop) handBack(ls *relaySession) {
	if ls.handedBack {
		return
	}
	ls.handedBack = true
	if l.owns(ls) {
		l.slots[ls.slot] = nil
		l.free = append(l.free, ls.slot)
		l.sessions.Add(-1)
		l.ctl(ls, &ls.client, 0, syscall.EPOLL_CTL_DEL, 0)
		l.ctl(ls, &ls.up, 1, syscall.EPOLL_CTL_DEL, 0)
	}
	l.handbacks.Add(1)
	broken := l.restore(ls)
	go ls.s.resume(ls.client.in, ls.up.in, ls.client.out, ls.up.out, broken)
}

// restore gives the session new net.Conns of its sockets, unless it is
// closing (it keeps the closed ones: its goroutines then end it), and
// closes the loop's descriptors. It reports whether the session can only
// end: closing, or handed back in the middle of a message passed through.
func (l *relayLoop) restore(ls *relaySession) (broken bool) {
	s := ls.s
	broken = ls.client.stream > 0 || ls.up.stream > 0
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if !s.closing.Load() && !broken {
		cc, cerr := fileConn(&ls.client.fd)
		uc, uerr := fileConn(&ls.up.fd)
		if cerr == nil && uerr == nil {
			s.conn, s.up.conn = cc, uc
			s.cr.conn, s.up.r.conn = cc, uc
			s.cw.w, s.up.w.w = cc, uc
		} else {
			l.logger.Warn("relay loop: could not hand a session back; closing it", "err", errors.Join(cerr, uerr))
			broken = true
			for _, c := range []net.Conn{cc, uc} {
				if c != nil {
					c.Close()
				}
			}
		}
	}
	for _, fd := range []int{ls.client.fd, ls.up.fd} {
		if fd >= 0 {
			syscall.Close(fd)
		}
	}
	s.relay.Store(nil)
	return broken
}

// fileConn returns a net.Conn of the socket *fd, whose descriptor it
// takes over (*fd becomes -1).
func fileConn(fd *int) (net.Conn, error) {
	f := os.NewFile(uintptr(*fd), "")
	*fd = -1
	defer f.Close()
	return net.FileConn(f)
}

// stats returns the sessions in the loop and those it handed back.
func (l *relayLoop) stats() (sessions, handedBack int64) {
	return l.sessions.Load(), l.handbacks.Load()
}

// rawRead reads from the socket fd without waiting.
func rawRead(fd int, p []byte) (int, error) {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			return int(r), nil
		case syscall.EINTR:
			continue
		}
		return 0, e
	}
}

// rawWrite writes to the socket fd without waiting, as much as it takes.
func rawWrite(fd int, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
		switch e {
		case 0:
			n += int(r)
		case syscall.EINTR:
		default:
			return n, e
		}
	}
	return n, nil
}
