package proxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"sync"
	"time"
)

// Cancellation.
//
// Every session hands its client a BackendKeyData of the proxy's own (a
// random process ID and secret), not the upstream's. A CancelRequest
// arrives on a new connection with that pair; the proxy looks the session
// up, checks the secret in constant time and, if it matches, sends a
// CancelRequest with the upstream's own key to the upstream. A wrong or
// unknown key is ignored without a reply, exactly as Postgres does
// (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-CANCELING-REQUESTS).

// cancelRegistry maps the proxy's process IDs to sessions. It is safe for
// concurrent use.
type cancelRegistry struct {
	mu sync.Mutex
	m  map[uint32]*session
}

// register assigns sess a fresh key and returns it.
func (r *cancelRegistry) register(sess *session) (pid uint32, secret [4]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		pid = binary.BigEndian.Uint32(b[:4]) & 0x7fffffff
		if pid == 0 {
			continue
		}
		if _, taken := r.m[pid]; taken {
			continue
		}
		copy(secret[:], b[4:])
		sess.keyPID, sess.keySecret = pid, secret
		r.m[pid] = sess
		return pid, secret
	}
}

// unregister removes sess's key, if it has one.
func (r *cancelRegistry) unregister(sess *session) {
	r.mu.Lock()
	if sess.keyPID != 0 && r.m[sess.keyPID] == sess {
		delete(r.m, sess.keyPID)
	}
	r.mu.Unlock()
}

// lookup returns the session whose key is (pid, secret), or nil.
func (r *cancelRegistry) lookup(pid uint32, secret []byte) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	sess := r.m[pid]
	if sess == nil || subtle.ConstantTimeCompare(sess.keySecret[:], secret) != 1 {
		return nil
	}
	return sess
}

// handleCancel routes a CancelRequest body (process ID + secret) to the
// matching session's upstream.
func (s *Server) handleCancel(body []byte) {
	if len(body) < 8 {
		return
	}
	pid := binary.BigEndian.Uint32(body[:4])
	sess := s.cancels.lookup(pid, body[4:])
	if sess == nil {
		s.logger.Debug("cancel request with unknown key ignored")
		return
	}
	up := sess.upstreamKey()
	if up == nil {
		return
	}
	ctx, cancel := context.WithTimeout(s.baseCtx, 10*time.Second)
	defer cancel()
	if err := sendCancel(ctx, s.cfg.Upstream, up); err != nil {
		s.logger.Warn("forwarding cancel request failed", "err", err)
	}
}
