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
//   - calls still running have the same batch key: the Batcher runs the
//     calls of one key in the order they were started (in one statement
//     or in statements that follow one another), so later calls see the
//     effects of earlier ones, as in Postgres.
//
// Anything else the client sends waits until the running calls have ended
// (awaitPipelined): a forwarded statement, a call of another key, a call
// on the client's own connection all see the calls before them.

// executeAsync starts p's call as a pipelined call when it may (see
// above), and reports whether it did.
func (s *session) executeAsync(p *icPortal) bool {
	b := s.srv.cfg.Batcher
	if b == nil || byte(s.txStatus.Load()) != 'I' || s.partial.Load() || s.batchFailed.Load() || !s.cr.syncNext() {
		return false
	}
	fwd, running := s.q.counts()
	if fwd > 0 {
		return false
	}
	call := p.stmt.call
	args, err := callArgs(call, p.params, p.resultFormats)
	if err != nil || len(args) == 0 || args[0].Null {
		return false // the ordinary path answers
	}
	if _, known := s.batchOK[args[0].Text]; !known && running > 0 {
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
	a := &asyncAnswer{}
	s.q.push(request{kind: reqAsync, async: a})
	c.Start()
	go s.finishAsync(c, a, call, p.resultFormats)
	return true
}

// finishAsync waits for a pipelined call and writes its answer when it
// reaches the head of the response queue, with the proxy's own answers
// queued behind it (the Sync's ReadyForQuery).
func (s *session) finishAsync(c *backend.Call, a *asyncAnswer, call *rewrite.Call, resultFormats []int16) {
	// The call runs to its end even when the session ends meanwhile (the
	// batch does not stop for one caller): its counter effects count.
	res, err := c.Wait(context.Background())
	var out []byte
	if err == nil {
		if s.srv.cfg.Counters != nil && len(res.Effects) > 0 {
			s.srv.cfg.Counters.Apply(res.Effects)
		}
		out, err = encodeResult(call, res, resultFormats, false)
	}
	if err != nil {
		// The call ran in a transaction of its own, as it would have
		// directly: an error ends it, and its Sync follows.
		out = encodeMsgs(errorResponse(s.serviceErrorForClient(err), false, s.log()))
	}
	q := &s.q
	q.mu.Lock()
	a.b, a.done = out, true
	atHead := q.head < len(q.items) && q.items[q.head].async == a
	if atHead && !s.closing.Load() {
		s.writeLocalsLocked()
	}
	q.mu.Unlock()
	if atHead && !s.closing.Load() {
		s.cmu.Lock()
		_ = s.cw.Flush()
		s.cmu.Unlock()
	}
}

// awaitPipelined waits until the pipelined calls still running have ended
// and their answers are written.
func (s *session) awaitPipelined() error {
	if _, running := s.q.counts(); running == 0 {
		return nil
	}
	select {
	case <-s.q.waitEmpty():
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}
