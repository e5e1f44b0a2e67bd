package proxy

import (
	"context"

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/fetchq/fetchq-proxy/rewrite"
)

// Pipelined calls.
//
// A client that pipelines calls, each followed by its own Sync (pgx's and
// libpq's pipeline mode: every call its own transaction), gets them
// batched together: the session does not wait for a batchable call to end
// before it reads the next message. It starts the call in its batch
// (Batcher.Prepare, Call.Start), queues a response-queue entry that the
// call's end fills in (reqAsync), answers the Sync itself, and goes on
// reading. A client completing 100 documents in one pipeline so costs one
// statement on the service pool, not 100 round trips.
//
// A call is started this way only when it is what Postgres would run as a
// transaction of its own, and when nothing can tell it from a call that
// ran to its end before the next was read:
//   - the client is not in a transaction block, nothing it sent since the
//     last Sync was forwarded, and nothing forwarded awaits its answer;
//   - the message after the Execute, already received, is a Sync;
//   - the call goes through the Batcher, and the client's right to batch
//     on the queue is already known or can be checked now;
//   - fewer than maxPipelined calls are running;
//   - calls still running have the same batch key: the Batcher runs the
//     calls of one key in the order they were started (in one statement
//     or in statements that follow one another), so later calls see the
//     effects of earlier ones, as in Postgres.
//
// Anything else the client sends waits until the running calls have ended
// (awaitPipelined): a forwarded statement, a call of another key, a call
// on the client's own connection all see the calls before them.

// maxPipelined bounds the pipelined calls of a session that run or await
// their answer's write. Beyond it the next call waits for them (through
// the ordinary path), so a client that pipelines without reading its
// answers is held back, as Postgres holds it back by not reading while
// its output is blocked.
const maxPipelined = 1024

// executeAsync starts p's call as a pipelined call when it may (see
// above), and reports whether it did.
func (s *session) executeAsync(p *icPortal) bool {
	b := s.srv.cfg.Batcher
	if b == nil || byte(s.txStatus.Load()) != 'I' || s.partial.Load() || s.batchFailed.Load() || !s.cr.syncNext() {
		return false
	}
	fwd, running := s.q.counts()
	if fwd > 0 || running >= maxPipelined {
		return false
	}
	call := p.stmt.call
	args, err := callArgs(call, p.params, p.resultFormats)
	if err != nil || len(args) == 0 || args[0].Null {
		return false // the ordinary path answers
	}
	if _, known := s.batchRight(args[0].Text); !known && running > 0 {
		// Checking the client's rights takes its connection: only once
		// the running calls have ended.
		return false
	}
	if !s.batchable(&upstreamDB{s: s}, call.Func.ID, args) {
		return false
	}
	c, ok := b.Prepare(call.Func.ID, args)
	if !ok || (running > 0 && c.Key() != s.pipelineKey) {
		return false
	}
	s.pipelineKey = c.Key()
	pc := &pipelinedCall{c: c, a: &asyncAnswer{}, call: call, resultFormats: p.resultFormats}
	s.q.push(request{kind: reqAsync, async: pc.a})
	c.Start()
	s.plmu.Lock()
	s.pipeline = append(s.pipeline, pc)
	start := !s.collecting
	s.collecting = true
	s.plmu.Unlock()
	if start {
		go s.collect()
	}
	return true
}

// pipelinedCall is a pipelined call the collector waits for.
type pipelinedCall struct {
	c             *backend.Call
	a             *asyncAnswer
	call          *rewrite.Call
	resultFormats []int16
}

// collect waits for the session's pipelined calls in order and writes
// their answers (with the proxy's own answers queued behind each, such as
// the Sync's ReadyForQuery). It flushes only before it waits, so the
// answers of calls that ended in one batch leave in one write. It runs
// while calls are pending, then ends.
func (s *session) collect() {
	unflushed := false
	for {
		s.plmu.Lock()
		if len(s.pipeline) == 0 {
			s.pipeline, s.collecting = nil, false
			s.plmu.Unlock()
			break
		}
		pc := s.pipeline[0]
		s.pipeline[0] = nil
		s.pipeline = s.pipeline[1:]
		s.plmu.Unlock()
		if unflushed && !pc.c.Ended() {
			s.flushClient()
			unflushed = false
		}
		out := s.pipelinedAnswer(pc)
		q := &s.q
		q.mu.Lock()
		pc.a.b, pc.a.done = out, true
		if !s.closing.Load() {
			// Every earlier pipelined call has been answered: this one
			// is at the head, or behind answers of the proxy's own.
			s.writeLocalsLocked()
			unflushed = true
		}
		q.mu.Unlock()
	}
	if unflushed {
		s.flushClient()
	}
}

// pipelinedAnswer waits for a pipelined call and returns its answer. The
// call runs to its end even when the session ends meanwhile (the batch
// does not stop for one caller), and its counter effects count.
func (s *session) pipelinedAnswer(pc *pipelinedCall) []byte {
	res, err := pc.c.Wait(context.Background())
	var out []byte
	if err == nil {
		if s.srv.cfg.Counters != nil && len(res.Effects) > 0 {
			s.srv.cfg.Counters.Apply(res.Effects)
		}
		out, err = encodeResult(pc.call, res, pc.resultFormats, false)
	}
	if err != nil {
		// The call ran in a transaction of its own, as it would have
		// directly: an error ends it, and its Sync follows.
		out = encodeMsgs(errorResponse(s.serviceErrorForClient(err), false, s.log()))
	}
	return out
}

// flushClient flushes what was written to the client.
func (s *session) flushClient() {
	s.cmu.Lock()
	if !s.closing.Load() {
		_ = s.cw.Flush()
	}
	s.cmu.Unlock()
}

// awaitPipelined waits until the pipelined calls the session started
// have ended and their answers are written. It costs nothing on a session
// that started none since it last waited: the forwarding of every message
// goes through it.
func (s *session) awaitPipelined() error {
	if s.pipelineKey == nil {
		return nil
	}
	// While calls run nothing is forwarded: the queue holds only their
	// entries and the proxy's own answers, and empties by itself.
	if err := s.waitAnswered(); err != nil {
		return err
	}
	s.pipelineKey = nil
	return nil
}
