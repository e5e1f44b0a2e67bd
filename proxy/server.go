package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fetchq/fetchq-proxy/rewrite"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Config configures a Server. The zero value of every field but Upstream is
// usable.
type Config struct {
	// Upstream says where client sessions connect: its host, port, TLS
	// settings and dial function (with fallbacks, as pgconn.ParseConfig
	// builds them). Its user, password and database are NOT used for client
	// sessions: each client connects with its own startup parameters and
	// authenticates against the upstream itself.
	Upstream *pgconn.Config

	// TLSConfig, when set, makes the proxy answer SSLRequest with 'S' and
	// terminate TLS. When nil, SSLRequest is answered with 'N'.
	TLSConfig *tls.Config

	// Logger receives lifecycle and error logs. Nil discards them.
	Logger *slog.Logger

	// StartupTimeout bounds the time from accept to the end of
	// authentication (startup packet, TLS handshake, password exchange).
	// Default 15s.
	StartupTimeout time.Duration

	// Rewriter and Queue, when both set, make the proxy intercept Fetchq
	// calls: Rewriter says which statements are calls, Queue runs them.
	// When either is nil every statement is forwarded.
	Rewriter *rewrite.Rewriter
	Queue    Queue

	// Database, when set, is the one database whose Fetchq calls are
	// intercepted: the service pool's, where the maintainer keeps the
	// queues, Counters are flushed and the Batcher runs. Sessions of
	// another database are passed through untouched, their fetchq calls
	// included (they reach Postgres as they are). Empty intercepts the
	// calls of every database.
	Database string

	// Batcher, when set, runs the autocommit calls it supports for many
	// sessions together on the service pool (group commit). Nil runs every
	// call on the client's own connection.
	Batcher Batcher

	// Counters receives the counter effects of intercepted calls once the
	// transaction they ran in has committed (never for rolled-back work).
	// Nil drops them.
	Counters Counters

	// MaxClients caps the number of concurrent client sessions; clients
	// past it get FATAL 53300 too_many_connections. Zero means no cap.
	MaxClients int

	// NoRelayLoop serves every session on its own goroutines. By default
	// (on Linux) sessions whose two connections are plain sockets start
	// in the relay loop, which passes their messages through on one
	// goroutine for all of them, until a message needs more
	// (relay_linux.go).
	NoRelayLoop bool
}

// Server accepts Postgres clients and relays them to the upstream.
// Its methods are safe for concurrent use.
type Server struct {
	cfg    Config
	logger *slog.Logger

	baseCtx    context.Context
	cancelBase context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	closed    bool
	done      chan struct{} // closed by Close/Shutdown

	cancels cancelRegistry
	nextID  atomic.Uint64
	active  atomic.Int64 // sessions past accept, for MaxClients
	wg      sync.WaitGroup

	otherDBLogged atomic.Bool // a session of another database than Config.Database was logged

	loopOnce sync.Once
	loop     atomic.Pointer[relayLoop] // nil when the relay loop is off, could not start or has not started
}

// NewServer returns a Server for cfg.
func NewServer(cfg Config) *Server {
	cfg.StartupTimeout = cmp.Or(cfg.StartupTimeout, 15*time.Second)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:        cfg,
		logger:     logger,
		baseCtx:    ctx,
		cancelBase: cancel,
		listeners:  make(map[net.Listener]struct{}),
		sessions:   make(map[*session]struct{}),
		done:       make(chan struct{}),
		cancels:    cancelRegistry{m: make(map[uint32]*session)},
	}
}

// Serve accepts connections on ln until Shutdown or Close, each served by
// its own session goroutine. It always returns a non-nil error; after
// Shutdown or Close it is ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	if s.cfg.Upstream == nil {
		return errors.New("proxy: Config.Upstream is required")
	}
	if !s.trackListener(ln, true) {
		return ErrServerClosed
	}
	defer s.trackListener(ln, false)

	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return ErrServerClosed
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscallEMFILE) {
				// Temporary failure (e.g. out of file descriptors): back
				// off as net/http does instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logger.Warn("accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		sess := s.newSession(conn)
		if !s.trackSession(sess, true) {
			conn.Close()
			return ErrServerClosed
		}
		s.wg.Add(1)
		// The session's goroutines change over its life (see errIdle):
		// whichever ends it calls ended.
		sess.ended = func() {
			s.trackSession(sess, false)
			s.wg.Done()
		}
		go sess.serve()
	}
}

// ListenAndServe listens on the TCP address addr and calls Serve.
func (s *Server) ListenAndServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Shutdown stops accepting connections, then closes each session as soon as
// it is idle (no request in flight and no open transaction). Sessions still
// busy when ctx ends are closed hard. It returns ctx.Err() in that case.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	for {
		if s.closeIdle() == 0 {
			s.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// Close closes all listeners and sessions immediately and waits for the
// session goroutines to finish. It is idempotent.
func (s *Server) Close() error {
	s.closeListeners()
	s.cancelBase()
	s.mu.Lock()
	for sess := range s.sessions {
		sess.close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.loopOnce.Do(func() {}) // none starts from now on
	if l := s.loop.Load(); l != nil {
		l.close()
	}
	return nil
}

// relayLoop returns the Server's relay loop, started on first use; nil
// when it is off or cannot run here.
func (s *Server) relayLoop() *relayLoop {
	s.loopOnce.Do(func() {
		if s.cfg.NoRelayLoop {
			return
		}
		l, err := newRelayLoop(s.logger)
		if err != nil {
			s.logger.Warn("relay loop unavailable; every session runs on its own goroutines", "err", err)
			return
		}
		s.loop.Store(l)
	})
	return s.loop.Load()
}

// RelayStats returns how many sessions the relay loop serves now and how
// many it has handed back to their own goroutines.
func (s *Server) RelayStats() (sessions, handedBack int64) {
	l := s.loop.Load()
	if l == nil {
		return 0, 0
	}
	return l.stats()
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	for ln := range s.listeners {
		ln.Close()
		delete(s.listeners, ln)
	}
}

// closeIdle closes idle sessions and returns how many remain.
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for sess := range s.sessions {
		if sess.idle() {
			sess.terminate()
		} else {
			n++
		}
	}
	return n
}

func (s *Server) trackListener(ln net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.listeners[ln] = struct{}{}
	} else {
		delete(s.listeners, ln)
	}
	return true
}

func (s *Server) trackSession(sess *session, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.sessions[sess] = struct{}{}
	} else {
		delete(s.sessions, sess)
	}
	return true
}

// Addrs returns the addresses the server listens on.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for ln := range s.listeners {
		out = append(out, ln.Addr())
	}
	return out
}
