package proxy

import (
	"sync"
)

// The response queue keeps the answers a client receives in the order of
// its requests when some requests are forwarded to the upstream and others
// are answered by the proxy itself (psql-wire's response_queue.go has the
// same idea).
//
// The session goroutine pushes one entry per request: for a forwarded
// message, the kind of answer that ends it upstream (ParseComplete for
// Parse, ReadyForQuery for Sync, ...); for a request the proxy answers
// itself, the encoded answer. The upstream reader pops an entry when the
// upstream's answer for it ends, and writes the proxy's own answers that
// are then at the head. So an answer written by the proxy never overtakes
// an upstream answer to an earlier request, and needs no round trip.
//
// An entry may also capture the upstream's answers instead of relaying
// them: that is how the proxy runs its own statements on the client's
// connection (internal.go).

// reqKind says which upstream message ends the answer to a request.
type reqKind uint8

const (
	reqParse    reqKind = iota // ParseComplete
	reqBind                    // BindComplete
	reqDescribe                // RowDescription or NoData (after ParameterDescription for a statement)
	reqExecute                 // CommandComplete, EmptyQueryResponse or PortalSuspended
	reqClose                   // CloseComplete
	reqSync                    // ReadyForQuery
	reqQuery                   // ReadyForQuery (simple Query, FunctionCall)
	reqLocal                   // answered by the proxy: local holds the bytes
	reqAsync                   // answered by the proxy once a pipelined call ends (see pipelined.go)
)

// forwarded reports whether the upstream answers requests of this kind.
func (k reqKind) forwarded() bool { return k < reqLocal }

// extended reports whether an ErrorResponse ends this request and makes
// the upstream skip everything up to the next Sync.
func (k reqKind) extended() bool { return k <= reqClose }

// ends reports whether upstream message typ ends the answer to k.
func (k reqKind) ends(typ byte) bool {
	switch k {
	case reqParse:
		return typ == '1'
	case reqBind:
		return typ == '2'
	case reqDescribe:
		return typ == 'T' || typ == 'n'
	case reqExecute:
		return typ == 'C' || typ == 'I' || typ == 's'
	case reqClose:
		return typ == '3'
	case reqSync, reqQuery:
		return typ == 'Z'
	}
	return false
}

// request is one entry of the response queue.
type request struct {
	kind    reqKind
	local   []byte       // reqLocal: the answer to write
	capture *capture     // non-nil: the upstream's answers go to an internal caller
	seq     uint64       // a client's Sync or Query: its number (session.boundarySeq)
	async   *asyncAnswer // reqAsync: the pipelined call's answer, once it has ended
}

// asyncAnswer is the answer to a pipelined call, set under respQueue.mu
// when the call ends.
type asyncAnswer struct {
	b    []byte
	done bool
}

// ready reports whether the proxy can write the answer to r now: its own
// answer, or a pipelined call's once it has ended.
func (r *request) ready() bool {
	return r.kind == reqLocal || (r.kind == reqAsync && r.async.done)
}

// answer returns the proxy's own answer to r (ready).
func (r *request) answer() []byte {
	if r.kind == reqAsync {
		return r.async.b
	}
	return r.local
}

// respQueue is a FIFO of requests awaiting their answers. It is safe for
// concurrent use by the session goroutine (push) and the upstream reader
// (pop).
type respQueue struct {
	mu    sync.Mutex
	items []request
	head  int
	// fwd counts the entries the upstream answers, async the pipelined
	// calls (reqAsync entries).
	fwd, async int
	// idle is closed and replaced when the queue empties, for waiters.
	emptied chan struct{}
}

func (q *respQueue) push(r request) {
	q.mu.Lock()
	q.pushLocked(r)
	q.mu.Unlock()
}

// pushLocked appends r. q.mu is held.
func (q *respQueue) pushLocked(r request) {
	q.items = append(q.items, r)
	switch {
	case r.kind.forwarded():
		q.fwd++
	case r.kind == reqAsync:
		q.async++
	}
}

// front returns the head entry, if any.
func (q *respQueue) front() (request, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		return request{}, false
	}
	return q.items[q.head], true
}

// popLocked removes the head entry. q.mu is held.
func (q *respQueue) popLocked() {
	switch k := q.items[q.head].kind; {
	case k.forwarded():
		q.fwd--
	case k == reqAsync:
		q.async--
	}
	q.items[q.head] = request{}
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
		if q.emptied != nil {
			close(q.emptied)
			q.emptied = nil
		}
	}
}

// len returns the number of entries.
func (q *respQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}

// counts returns how many entries await the upstream's answer and how
// many are pipelined calls.
func (q *respQueue) counts() (forwarded, async int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.fwd, q.async
}

// waitEmpty returns a channel closed once the queue is empty (already
// closed if it is empty now).
func (q *respQueue) waitEmpty() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		return closedChan
	}
	if q.emptied == nil {
		q.emptied = make(chan struct{})
	}
	return q.emptied
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// hasSync reports whether a forwarded Sync is still awaiting its answer.
func (q *respQueue) hasSync() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range q.items[q.head:] {
		if r.kind == reqSync && r.capture == nil {
			return true
		}
	}
	return false
}
