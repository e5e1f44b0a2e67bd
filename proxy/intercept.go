package proxy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/fetchq/fetchq-proxy/rewrite"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Interception of Fetchq calls.
//
// A Query or Parse whose text mentions "fetchq" is given to the rewriter.
// When its plan holds a Fetchq call, the session runs the call itself
// through Queue, on the client's own upstream connection (upstreamDB), so
// the call commits or rolls back with the client's transaction and runs
// with the client's role. Everything else is forwarded.
//
// Simple query: the statements of the text run in order. Forwarded ones
// are sent one by one and their answers relayed (without their
// ReadyForQuery); when the text holds several statements and the client is
// not in a transaction block, they run inside one transaction the proxy
// opens and commits, which is Postgres' implicit transaction for a
// multi-statement Query. The first error ends the text, as in Postgres.
//
// Extended query: Parse, Bind, Describe, Execute and Close of an
// intercepted statement are answered by the proxy (ParameterDescription and
// RowDescription with the function's real signature); Sync is always
// forwarded, so ReadyForQuery carries the upstream's own transaction
// status. Bind checks its parameters when it arrives, as Postgres does,
// and converts them to text. After an error the session discards messages
// until Sync, as Postgres does. Portals end with their transaction (see
// livePortal).

// Queue is what a session needs from the Fetchq backend. *backend.Store
// implements it.
type Queue interface {
	// Invoke runs the function overload id with args on db and returns its
	// rows in the overload's output-column order, in text format.
	Invoke(ctx context.Context, db backend.DB, id string, args []backend.Value) (*backend.Result, error)
}

// Batcher runs autocommit calls of many sessions together on the service
// pool (group commit). *backend.Batcher implements it.
type Batcher interface {
	// Batchable reports whether a call of an overload with these
	// arguments goes through the batcher; its first argument is then the
	// queue name.
	Batchable(id string, args []backend.Value) bool
	// CanBatch reports whether the calls on queue of the client whose
	// connection is db may run in batches: the connection is to the
	// service pool's database and its role may do what the calls do.
	CanBatch(ctx context.Context, db backend.DB, queue string) (bool, error)
	// Invoke runs a batchable call as Queue.Invoke would, in a batch.
	Invoke(ctx context.Context, id string, args []backend.Value) (*backend.Result, error)
	// Prepare readies a batchable call to be started now and waited for
	// later, so that a client's pipelined calls join one batch; ok is
	// false when the call must go through Invoke. Calls of one Key
	// started in order run in that order.
	Prepare(id string, args []backend.Value) (c *backend.Call, ok bool)
}

// Counters receives the counter effects of committed calls.
// *backend.Metrics implements it.
type Counters interface {
	Apply(backend.Effects)
}

// icStmt is an intercepted prepared statement.
type icStmt struct {
	call       *rewrite.Call
	paramTypes []uint32
}

// icPortal is an intercepted portal: a statement with its parameters.
type icPortal struct {
	stmt          *icStmt
	params        [][]byte // text values, nil for NULL
	resultFormats []int16
	seq           uint64 // session.boundarySeq when it was bound (see livePortal)
	// Once executed, the call's rows (encoded DataRow messages) and how
	// many of them went out: an Execute with a row limit gets them in
	// parts (PortalSuspended between), and an Execute of a portal whose
	// rows all went gets none, as from Postgres, without running the
	// call again.
	ran  bool
	rows [][]byte
	sent int
}

// containsFetchq reports whether b contains "fetchq" in any letter case.
func containsFetchq(b []byte) bool {
	for i := 0; i+6 <= len(b); i++ {
		c := b[i] | 0x20
		if c != 'f' {
			continue
		}
		if b[i+1]|0x20 == 'e' && b[i+2]|0x20 == 't' && b[i+3]|0x20 == 'c' &&
			b[i+4]|0x20 == 'h' && b[i+5]|0x20 == 'q' {
			return true
		}
	}
	return false
}

// interceptClient handles a client message the proxy may have to answer
// itself. It reports whether it did; if not, the caller forwards body.
//
// A message whose body Postgres would refuse (see message.go) before it
// looks at a statement or portal is forwarded, so that Postgres gives its
// own answer.
func (s *session) interceptClient(typ byte, body []byte) (bool, error) {
	switch typ {
	case 'Q':
		if !containsFetchq(body) {
			s.forgetOnQuery(body)
			return false, nil
		}
		m := msgBody{b: body}
		text := m.str()
		m.end()
		if m.err != nil {
			return false, nil
		}
		return s.simpleQuery(text)
	case 'P':
		if !containsFetchq(body) && len(s.stmts) == 0 {
			return false, nil
		}
		var msg parseMsg
		if !msg.decode(body) {
			return false, nil
		}
		if !containsFetchq([]byte(msg.query)) {
			if msg.name == "" {
				// Postgres drops the unnamed statement before it parses
				// the new one.
				delete(s.stmts, "")
			}
			return false, nil
		}
		return s.parse(&msg)
	case 'B':
		if len(s.stmts) == 0 && len(s.portals) == 0 {
			return false, nil
		}
		return s.bind(body)
	case 'D', 'C':
		if len(s.stmts) == 0 && len(s.portals) == 0 {
			return false, nil
		}
		m := msgBody{b: body}
		kind := m.byte1()
		name := m.str()
		m.end()
		if m.err != nil {
			return false, nil
		}
		switch kind {
		case 'S':
			st := s.stmts[name]
			if st == nil {
				return false, nil
			}
			if typ == 'C' {
				delete(s.stmts, name)
				s.respond(encodeMsgs(&pgproto3.CloseComplete{}))
			} else {
				s.describeStatement(st)
			}
			return true, nil
		case 'P':
			if typ == 'C' {
				if s.portals[name] == nil {
					return false, nil
				}
				// Closing a portal that has ended is no error either.
				delete(s.portals, name)
				s.respond(encodeMsgs(&pgproto3.CloseComplete{}))
				return true, nil
			}
			p, err := s.livePortal(name)
			if p == nil || err != nil {
				return err != nil, err
			}
			s.describePortal(p)
			return true, nil
		}
		return false, nil
	case 'E':
		if len(s.portals) == 0 {
			return false, nil
		}
		m := msgBody{b: body}
		name := m.str()
		maxRows := m.int32() // 0: all
		m.end()
		if m.err != nil {
			return false, nil
		}
		p, err := s.livePortal(name)
		if p == nil || err != nil {
			return err != nil, err
		}
		return true, s.execute(p, maxRows)
	}
	return false, nil
}

// forgetOnQuery drops the intercepted statements and portals that a
// simple Query the proxy forwards drops in Postgres: the unnamed ones
// (every Query replaces them), and all of them for DISCARD ALL (outside a
// transaction block, where it runs) and DEALLOCATE [PREPARE] ALL, which
// pgx's DeallocateAll and PgBouncer's reset query send. The text is
// compared whole, in any case and spacing, comments aside.
func (s *session) forgetOnQuery(body []byte) {
	if len(s.stmts) == 0 && len(s.portals) == 0 {
		return
	}
	delete(s.stmts, "")
	delete(s.portals, "")
	text := strings.ToLower(strings.Join(strings.Fields(strings.TrimRight(strings.TrimRight(string(body), "\x00"), "; \t\r\n")), " "))
	switch {
	case text == "deallocate all", text == "deallocate prepare all",
		text == "discard all" && byte(s.txStatus.Load()) == 'I':
		clear(s.stmts)
		clear(s.portals)
	}
}

// parseMsg is a decoded Parse message.
type parseMsg struct {
	name, query string
	paramOIDs   []uint32
}

// decode reads a Parse body as Postgres does, and reports whether it is
// well formed.
func (p *parseMsg) decode(body []byte) bool {
	m := msgBody{b: body}
	p.name = m.str()
	p.query = m.str()
	n := m.uint16()
	if n > len(m.b)/4 {
		return false
	}
	p.paramOIDs = make([]uint32, n)
	for i := range p.paramOIDs {
		p.paramOIDs[i] = uint32(m.int32())
	}
	m.end()
	return m.err == nil
}

// Portal lifetime.
//
// As in Postgres, every portal ends with the transaction it was created
// in: at Sync for the implicit transaction of an extended-protocol batch,
// at COMMIT or ROLLBACK for a transaction block. The proxy learns that a
// transaction ended from the status of the ReadyForQuery answering a
// client's Sync or Query ('I'). When the proxy answers that ReadyForQuery
// itself, nothing is in flight and it drops its portals at once
// (respondReady). When the upstream answers it, the portals created before
// that Sync or Query end when its answer arrives: each forwarded Sync or
// Query gets a sequence number, each portal remembers how many had been
// forwarded when it was bound, and the upstream reader records the number
// of the last one whose ReadyForQuery said 'I' (txEndSeq).

// livePortal returns the intercepted portal name, or nil if there is none
// or it has ended with its transaction. When that transaction's outcome
// is still in flight it waits for it.
func (s *session) livePortal(name string) (*icPortal, error) {
	p := s.portals[name]
	if p == nil {
		return nil, nil
	}
	if s.boundarySeq > p.seq && s.txEndSeq.Load() <= p.seq {
		// A Sync or Query forwarded since the Bind may have ended the
		// transaction: wait for its answer.
		if err := s.awaitAnswers(); err != nil {
			return nil, err
		}
	}
	if s.txEndSeq.Load() > p.seq {
		delete(s.portals, name)
		return nil, nil
	}
	return p, nil
}

// awaitAnswers waits until the upstream has answered every request
// forwarded so far, asking it to flush its output first.
func (s *session) awaitAnswers() error {
	if s.q.len() == 0 {
		return nil
	}
	if err := writeHeader(s.up.w, 'H', 0); err != nil {
		return err
	}
	if err := s.up.w.Flush(); err != nil {
		return err
	}
	return s.waitAnswered()
}

// waitAnswered waits until every request on the response queue has its
// answer, or the session ends.
func (s *session) waitAnswered() error {
	select {
	case <-s.q.waitEmpty():
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// simpleQuery runs a Query message whose text calls a Fetchq function.
func (s *session) simpleQuery(text string) (bool, error) {
	plan, err := s.srv.cfg.Rewriter.Rewrite(s.ctx, text)
	if errors.Is(err, rewrite.ErrSyntax) || (err == nil && !plan.HasCall) {
		// Postgres reports its own syntax errors, with their positions.
		return false, nil
	}
	// Everything the client sent before this text must be answered first
	// (it may have pipelined several Query messages, or extended ones
	// without a Sync, which Postgres answers only on a Flush): send what
	// is still buffered, and wait.
	if err := s.up.w.Flush(); err != nil {
		return true, err
	}
	if err := s.awaitAnswers(); err != nil {
		return true, err
	}
	if s.batchFailed.Load() {
		// An earlier extended-protocol message failed: Postgres ignores
		// this Query up to the next Sync, and so does the proxy.
		return true, nil
	}
	if plan == nil {
		s.respondError(err)
		s.respondReady()
		return true, nil
	}

	db := &upstreamDB{s: s}
	wrapped := len(plan.Statements) > 1 && byte(s.txStatus.Load()) == 'I' && !hasTxControl(plan)
	if wrapped {
		if _, err := db.Query(s.ctx, "BEGIN", nil, noRows); err != nil {
			return true, err
		}
	}
	failed := false
	for _, st := range plan.Statements {
		switch {
		case st.Err != nil:
			s.respondError(st.Err)
			failed = true
			s.abortIfInTx(db)
		case st.Call == nil:
			ok, err := s.relayStatement(st.SQL)
			if err != nil {
				return true, err
			}
			failed = !ok
		default:
			if err := s.runCall(db, st.Call, nil, nil, true); err != nil {
				s.respondError(err)
				failed = true
				s.abortIfInTx(db)
			}
		}
		if failed {
			break
		}
	}
	if wrapped {
		end := "COMMIT"
		if failed {
			end = "ROLLBACK"
		}
		_, err := db.Query(s.ctx, end, nil, noRows)
		if err != nil {
			s.respondError(err)
		}
		s.endTx(end == "COMMIT" && err == nil)
	}
	s.respondReady()
	return true, nil
}

func noRows([][]byte) error { return nil }

// errCopyMixed refuses a COPY in a query text that also calls Fetchq.
var errCopyMixed = &Error{Code: "0A000", Message: "COPY is not supported in a query text that also calls fetchq functions; send it on its own"}

// hasTxControl reports whether a plan holds a transaction-control
// statement, in which case the proxy must not wrap the text in a
// transaction of its own.
func hasTxControl(plan *rewrite.Plan) bool {
	for _, st := range plan.Statements {
		if st.TxControl {
			return true
		}
	}
	return false
}

// relayStatement forwards one statement of a multi-statement text as its
// own Query and relays its answer except the ReadyForQuery. It reports
// whether the statement succeeded.
func (s *session) relayStatement(sql string) (bool, error) {
	c := &capture{ch: make(chan capturedMsg, 8), done: s.ctx.Done()}
	s.q.push(request{kind: reqQuery, capture: c})
	if err := writeEncoded(s.up.w, &pgproto3.Query{String: sql}); err != nil {
		return false, err
	}
	if err := s.up.w.Flush(); err != nil {
		return false, err
	}
	ok, copyOut := true, false
	for {
		var m capturedMsg
		select {
		case m = <-c.ch:
		case <-s.ctx.Done():
			return false, s.ctx.Err()
		}
		if s.effectsPending.Load() {
			s.trackTxEnd(m.typ, m.body)
		}
		switch m.typ {
		case 'Z':
			return ok, nil
		case 'E':
			ok = false
		case 'G', 'W':
			// COPY inside a text that also calls Fetchq functions: the
			// client's data would have to pass through the proxy's own
			// exchange. Postgres gets CopyFail and reports the error.
			_ = writeEncoded(s.up.w, &pgproto3.CopyFail{Message: errCopyMixed.Message})
			_ = s.up.w.Flush()
			continue
		case 'H':
			// COPY TO STDOUT: Postgres sends its data regardless (CopyFail
			// is for COPY FROM); the client gets none of it, and an
			// error in place of the COPY's completion.
			copyOut = true
			continue
		case 'd', 'c':
			if copyOut {
				continue
			}
		case 'C':
			if copyOut {
				copyOut, ok = false, false
				m.body = appendEncoded(nil, errorResponse(errCopyMixed, false, s.log()))[5:]
				m.typ = 'E'
			}
		}
		s.cmu.Lock()
		_ = writeMsg(s.cw, m.typ, m.body)
		s.localUnflushed = true
		s.cmu.Unlock()
	}
}

// abortIfInTx puts the client's transaction block into the failed state
// after a call failed in the proxy (not in Postgres), as an error inside a
// transaction block does in Postgres.
func (s *session) abortIfInTx(db *upstreamDB) {
	if byte(s.txStatus.Load()) != 'T' {
		return
	}
	_, _ = db.Query(s.ctx, "DO $$BEGIN RAISE EXCEPTION 'fetchq-proxy: a fetchq call failed in this transaction'; END$$", nil, noRows)
}

// respondError queues err as an ErrorResponse.
func (s *session) respondError(err error) {
	s.respond(encodeMsgs(errorResponse(err, false, s.log())))
}

// respondReady queues ReadyForQuery with the upstream's current status,
// answering a Sync or Query when nothing is in flight. Status 'I' means
// the transaction ended (or there was none), and with it every portal.
func (s *session) respondReady() {
	if byte(s.txStatus.Load()) == 'I' {
		clear(s.portals)
	}
	s.respond(readyForQuery(byte(s.txStatus.Load())))
}

// readyMsgs are the encoded ReadyForQuery messages, by transaction
// status; shared, never written to.
var readyMsgs = map[byte][]byte{
	'I': encodeMsgs(&pgproto3.ReadyForQuery{TxStatus: 'I'}),
	'T': encodeMsgs(&pgproto3.ReadyForQuery{TxStatus: 'T'}),
	'E': encodeMsgs(&pgproto3.ReadyForQuery{TxStatus: 'E'}),
}

// readyForQuery returns the encoded ReadyForQuery of status.
func readyForQuery(status byte) []byte {
	if m, ok := readyMsgs[status]; ok {
		return m[:len(m):len(m)]
	}
	return encodeMsgs(&pgproto3.ReadyForQuery{TxStatus: status})
}

// parse handles a Parse whose text mentions fetchq.
func (s *session) parse(msg *parseMsg) (bool, error) {
	plan, err := s.srv.cfg.Rewriter.RewriteWithParamTypes(s.ctx, msg.query, msg.paramOIDs)
	if msg.name == "" {
		// Postgres drops the unnamed statement before it parses the new
		// one, whether that succeeds or not.
		delete(s.stmts, "")
	}
	if errors.Is(err, rewrite.ErrSyntax) || (err == nil && !plan.HasCall) || (plan != nil && len(plan.Statements) != 1) {
		return false, nil
	}
	if err == nil {
		err = plan.Statements[0].Err
	}
	if err == nil && msg.name != "" && s.stmts[msg.name] != nil {
		err = &Error{Code: "42P05", Message: fmt.Sprintf("prepared statement \"%s\" already exists", msg.name)}
	}
	if err != nil {
		s.extendedError(err)
		return true, nil
	}
	if s.stmts == nil {
		s.stmts = make(map[string]*icStmt)
		s.portals = make(map[string]*icPortal)
	}
	s.stmts[msg.name] = &icStmt{call: plan.Statements[0].Call, paramTypes: plan.ParamTypes}
	s.respond(encodeMsgs(&pgproto3.ParseComplete{}))
	return true, nil
}

// bind handles a Bind when the session has intercepted statements. It
// reads the message in Postgres' order (exec_bind_message) and refuses
// what Postgres refuses, with its errors, at Bind: once the statement is
// found, a malformed format list, a wrong parameter count, a failed
// transaction, an existing portal name, a malformed or
// invalid parameter value, a malformed rest of the message, a wrong
// number of result formats.
func (s *session) bind(body []byte) (bool, error) {
	m := msgBody{b: body}
	portal := m.str()
	name := m.str()
	if m.err != nil {
		// Postgres refuses it before it looks the statement up.
		return false, nil
	}
	st := s.stmts[name]
	if st == nil {
		if portal == "" {
			delete(s.portals, "")
		}
		return false, nil
	}
	formats := m.int16s()
	n := m.uint16()
	if m.err != nil {
		s.extendedError(m.err)
		return true, nil
	}
	if len(formats) > 1 && len(formats) != n {
		s.extendedError(&Error{Code: "08P01", Message: fmt.Sprintf(
			"bind message has %d parameter formats but %d parameters", len(formats), n)})
		return true, nil
	}
	if n != len(st.paramTypes) {
		s.extendedError(&Error{Code: "08P01", Message: fmt.Sprintf(
			"bind message supplies %d parameters, but prepared statement \"%s\" requires %d",
			n, name, len(st.paramTypes))})
		return true, nil
	}
	if byte(s.txStatus.Load()) == 'E' && s.q.len() == 0 {
		s.extendedError(errTxAborted)
		return true, nil
	}
	if portal != "" {
		p, err := s.livePortal(portal)
		if err != nil {
			return true, err
		}
		if p != nil {
			s.extendedError(&Error{Code: "42P03", Message: fmt.Sprintf("cursor \"%s\" already exists", portal)})
			return true, nil
		}
	}
	params := make([][]byte, n)
	for i := range params {
		l := m.int32()
		var v []byte
		if l != -1 {
			v = m.bytes(l)
		}
		if m.err != nil {
			s.extendedError(m.err)
			return true, nil
		}
		// The format code is checked for a NULL too, as Postgres does.
		text, err := bindParam(v, formatOf(formats, i), paramType(st.paramTypes, i), i+1)
		if err != nil {
			s.extendedError(err)
			return true, nil
		}
		if l != -1 {
			params[i] = []byte(text)
		}
	}
	rformats := m.int16s()
	m.end()
	if m.err != nil {
		s.extendedError(m.err)
		return true, nil
	}
	if cols := len(st.call.Columns); len(rformats) > 1 && cols > 0 && len(rformats) != cols {
		s.extendedError(&Error{Code: "08P01", Message: fmt.Sprintf(
			"bind message has %d result formats but query has %d columns", len(rformats), cols)})
		return true, nil
	}
	s.portals[portal] = &icPortal{
		stmt:          st,
		params:        params,
		resultFormats: rformats,
		seq:           s.boundarySeq,
	}
	s.respond(encodeMsgs(&pgproto3.BindComplete{}))
	return true, nil
}

// errTxAborted is Postgres' answer to anything but COMMIT or ROLLBACK in
// a failed transaction block.
var errTxAborted = &Error{Code: "25P02", Message: "current transaction is aborted, commands ignored until end of transaction block"}

func (s *session) describeStatement(st *icStmt) {
	msgs := []encoder{&pgproto3.ParameterDescription{ParameterOIDs: st.paramTypes}}
	msgs = append(msgs, rowDescription(st.call, nil))
	s.respond(encodeMsgs(msgs...))
}

func (s *session) describePortal(p *icPortal) {
	s.respond(encodeMsgs(rowDescription(p.stmt.call, p.resultFormats)))
}

// execute runs an intercepted portal and sends up to maxRows of its rows
// (all when maxRows is 0 or less); an executed portal only sends what is
// left.
func (s *session) execute(p *icPortal, maxRows int32) error {
	if p.ran {
		s.respond(p.nextRows(maxRows))
		return nil
	}
	if maxRows <= 0 && s.executeAsync(p) {
		p.ran = true // all its rows go with the pipelined answer
		return nil
	}
	// The call must see the outcome of everything the client sent before
	// it: get the upstream to answer it, and wait.
	if err := s.awaitAnswers(); err != nil {
		return err
	}
	if s.batchFailed.Load() {
		// An earlier request of this batch failed: Postgres skips the
		// rest up to Sync, and so does the proxy.
		s.discardUntilSync = true
		return nil
	}
	if s.partial.Load() {
		// The client ran statements of its own before this call and
		// before their Sync: one transaction with the call, which the
		// proxy's statements (each ending with a Sync of their own)
		// would commit early, and whose state (a BEGIN or a ROLLBACK
		// among them) it cannot know. Refused, and the segment fails
		// as an error in it fails it in Postgres: nothing of it is kept.
		s.extendedError(errMixedSegment)
		return nil
	}
	db := &upstreamDB{s: s}
	res, err := s.invokeCall(db, p.stmt.call, p.params, p.resultFormats)
	if err == nil {
		p.rows, err = encodeRows(p.stmt.call, res, p.resultFormats)
	}
	if err != nil {
		s.respondError(err)
		s.abortIfInTx(db)
		s.discardUntilSync = true
		return nil
	}
	p.ran = true
	s.respond(p.nextRows(maxRows))
	return nil
}

// nextRows encodes the next at most maxRows rows of an executed portal (all
// that are left when maxRows is 0 or less), followed by PortalSuspended if
// rows remain, else CommandComplete with the number sent now.
func (p *icPortal) nextRows(maxRows int32) []byte {
	n := len(p.rows) - p.sent
	if maxRows > 0 && int(maxRows) < n {
		n = int(maxRows)
	}
	var out []byte
	for _, r := range p.rows[p.sent : p.sent+n] {
		out = append(out, r...)
	}
	p.sent += n
	if p.sent < len(p.rows) {
		return appendEncoded(out, &pgproto3.PortalSuspended{})
	}
	return appendEncoded(out, &pgproto3.CommandComplete{CommandTag: []byte("SELECT " + strconv.Itoa(n))})
}

// extendedError answers an extended-protocol request with err and
// discards the client's messages up to the next Sync. As in Postgres, the
// error fails the client's transaction: a transaction block, or the
// implicit one of the statements it sent before in this segment.
func (s *session) extendedError(err error) {
	s.respondError(err)
	if s.partial.Load() {
		if aerr := s.abortSegment(); aerr != nil {
			s.log().Debug("could not fail the client's segment", "err", aerr)
		}
	} else {
		s.abortIfInTx(&upstreamDB{s: s})
	}
	s.discardUntilSync = true
}

// errMixedSegment refuses a Fetchq call that follows statements of the
// client's own before their Sync (see execute).
var errMixedSegment = &Error{
	Code:    "0A000",
	Message: "fetchq-proxy cannot run a Fetchq call after statements of your own before their Sync",
	Hint:    "Send a Sync before the call (end the pipeline or batch there), or run the statements and the call as separate queries, inside BEGIN ... COMMIT if they must commit together.",
}

// abortSegment makes the upstream fail the client's current
// extended-protocol segment, as an error in it would: its implicit
// transaction rolls back at the client's Sync (a transaction block
// fails), and the upstream skips everything up to that Sync. It sends a
// Parse of a text that is not SQL, named so that it never touches the
// client's unnamed statement; its error stays with the proxy.
func (s *session) abortSegment() error {
	if s.batchFailed.Load() {
		return nil // the upstream already skips to the Sync
	}
	if err := s.awaitPipelined(); err != nil {
		return err
	}
	c := &capture{ch: make(chan capturedMsg, 8), done: s.ctx.Done()}
	s.q.push(request{kind: reqParse, capture: c})
	if err := writeEncoded(s.up.w, &pgproto3.Parse{Name: "fetchq_proxy_abort", Query: "fetchq-proxy: abort"}); err != nil {
		return err
	}
	if err := writeHeader(s.up.w, 'H', 0); err != nil {
		return err
	}
	if err := s.up.w.Flush(); err != nil {
		return err
	}
	for {
		select {
		case m := <-c.ch:
			if m.typ == 'E' || m.typ == '1' || m.typ == 0 {
				return nil // failed, or skipped: the segment had failed already
			}
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	}
}

// runCall runs call and queues its answer: RowDescription (when
// withRowDesc), DataRows and CommandComplete. params are the text values
// of a portal's parameters (nil for NULL), checked at Bind.
func (s *session) runCall(db *upstreamDB, call *rewrite.Call, params [][]byte, resultFormats []int16, withRowDesc bool) error {
	res, err := s.invokeCall(db, call, params, resultFormats)
	if err != nil {
		return err
	}
	out, err := encodeResult(call, res, resultFormats, withRowDesc)
	if err != nil {
		return err
	}
	s.respond(out)
	return nil
}

// invokeCall runs call, batched or on the client's connection, hands its
// counter effects on and returns its result.
func (s *session) invokeCall(db *upstreamDB, call *rewrite.Call, params [][]byte, resultFormats []int16) (*backend.Result, error) {
	if byte(s.txStatus.Load()) == 'E' {
		// As in Postgres, nothing runs in a failed transaction block, not
		// even a function that would answer without the database.
		return nil, errTxAborted
	}
	args, err := callArgs(call, params, resultFormats)
	if err != nil {
		return nil, err
	}
	var res *backend.Result
	batched := s.batchable(db, call.Func.ID, args)
	if batched {
		res, err = s.srv.cfg.Batcher.Invoke(s.ctx, call.Func.ID, args)
	} else {
		ctx := s.ctx
		if s.effectsPending.Load() {
			// Counter reads in the transaction see its own effects,
			// held until it commits.
			s.emu.Lock()
			ctx = backend.WithTxEffects(ctx, slices.Clone(s.pendingEffects))
			s.emu.Unlock()
		}
		res, err = s.srv.cfg.Queue.Invoke(ctx, db, call.Func.ID, args)
	}
	switch {
	case err == nil:
	case batched:
		return nil, s.serviceErrorForClient(err)
	case isFatal(err):
		// The client's own backend ended the connection (a Postgres
		// shutdown, pg_terminate_backend): so does the session, with
		// that FATAL and nothing after it.
		s.sendFatal(internalErrorForClient(err))
		s.close()
		return nil, err
	default:
		return nil, internalErrorForClient(err)
	}
	s.effects(res.Effects)
	return res, nil
}

// callArgs returns the arguments of call, with a portal's parameters
// (text values, nil for NULL) in place of its placeholders, after checking
// the result formats.
func callArgs(call *rewrite.Call, params [][]byte, resultFormats []int16) ([]backend.Value, error) {
	if len(call.Columns) > 0 {
		// Postgres refuses a result format code other than text or binary
		// when it sends the first row; the proxy refuses it before the
		// call runs (even for a call that returns no row), rather than
		// after the call has taken effect.
		for i := range call.Columns {
			if f := formatOf(resultFormats, i); f != 0 && f != 1 {
				return nil, &Error{Code: "22023", Message: fmt.Sprintf("unsupported format code: %d", f)}
			}
		}
	}
	args := make([]backend.Value, len(call.Args))
	for i, a := range call.Args {
		switch a.Kind {
		case rewrite.ArgConst:
			args[i] = backend.Value{Text: a.Text}
		case rewrite.ArgNull:
			args[i] = backend.Value{Null: true}
		case rewrite.ArgNow:
			args[i] = backend.Value{Now: true, Interval: a.Text, Negative: a.Negative}
		case rewrite.ArgEpoch:
			args[i] = backend.Value{Epoch: true, Text: a.Text}
		case rewrite.ArgParam:
			idx := a.Param - 1
			if idx < 0 || idx >= len(params) {
				return nil, &Error{Code: "42P02", Message: fmt.Sprintf("there is no parameter $%d", a.Param)}
			}
			if params[idx] == nil {
				args[i] = backend.Value{Null: true}
				break
			}
			args[i] = backend.Value{Text: string(params[idx])}
		}
	}
	return args, nil
}

// encodeResult encodes the answer to a call: RowDescription (when
// withRowDesc), DataRows and CommandComplete.
func encodeResult(call *rewrite.Call, res *backend.Result, resultFormats []int16, withRowDesc bool) ([]byte, error) {
	// Sized once: the messages' framing and column names, and every value
	// of every row as text (a binary answer may still grow it).
	n := 32
	for _, c := range call.Columns {
		n += 24 + len(c.Name)
	}
	for _, row := range res.Rows {
		n += 8
		for _, v := range row {
			n += 4 + len(v)
		}
	}
	out := make([]byte, 0, n)
	if withRowDesc {
		if len(call.Columns) == 0 {
			out = appendEncoded(out, &pgproto3.NoData{})
		} else {
			out, _ = rowDesc{call.Columns, resultFormats}.Encode(out) // a call has few columns
		}
	}
	for _, row := range res.Rows {
		var err error
		if out, err = appendDataRow(out, call, row, resultFormats); err != nil {
			return nil, err
		}
	}
	return appendSelectComplete(out, len(res.Rows)), nil
}

// encodeRows encodes the rows of a call's result, one DataRow message each.
func encodeRows(call *rewrite.Call, res *backend.Result, resultFormats []int16) ([][]byte, error) {
	out := make([][]byte, 0, len(res.Rows))
	for _, row := range res.Rows {
		r, err := appendDataRow(nil, call, row, resultFormats)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// appendDataRow appends a result row of call, as a DataRow message, to dst.
func appendDataRow(dst []byte, call *rewrite.Call, row [][]byte, resultFormats []int16) ([]byte, error) {
	var arr [16][]byte // on the stack for the Fetchq functions' columns
	vals := arr[:0]
	if len(call.Columns) > len(arr) {
		vals = make([][]byte, 0, len(call.Columns))
	}
	vals, err := projectRow(vals[:len(call.Columns)], call, row, resultFormats)
	if err != nil {
		return nil, err
	}
	return appendDataRowMsg(dst, vals), nil
}

// batchable reports whether a call may run in a batch on the service pool:
// the client is neither in a transaction block nor amid statements of its
// own before a Sync (an implicit transaction: the call must see their
// writes, and end with them), the overload is one the batcher runs, the
// client is connected to the service pool's database and its own role may
// read and update the queue's documents. The last two are checked on the
// client's connection and remembered for batchRightTTL, or until the
// session forwards any statement of its own (which might change its
// role).
func (s *session) batchable(db *upstreamDB, id string, args []backend.Value) bool {
	b := s.srv.cfg.Batcher
	if b == nil || byte(s.txStatus.Load()) != 'I' || s.partial.Load() || !b.Batchable(id, args) || len(args) == 0 || args[0].Null {
		return false
	}
	queue := args[0].Text
	if ok, known := s.batchRight(queue); known {
		return ok
	}
	ok, err := b.CanBatch(s.ctx, db, queue)
	if err != nil {
		return false
	}
	if s.batchOK == nil {
		s.batchOK = make(map[string]batchRight)
	}
	s.batchOK[queue] = batchRight{ok: ok, at: time.Now()}
	return ok
}

// batchRightTTL is how long a session trusts its check of a queue's
// rights: a REVOKE or a row-security switch made elsewhere reaches its
// batched calls within that time.
const batchRightTTL = time.Second

// batchRight is a session's check of its rights on a queue.
type batchRight struct {
	ok bool
	at time.Time
}

// batchRight returns the session's fresh check of its rights on queue, if
// it has one.
func (s *session) batchRight(queue string) (ok, known bool) {
	r, known := s.batchOK[queue]
	if !known || time.Since(r.at) >= batchRightTTL {
		return false, false
	}
	return r.ok, true
}

// effects hands a call's counter effects on: at once when the call ran in
// its own transaction, else when the client's transaction ends (applied
// if it committed, dropped if not).
func (s *session) effects(e backend.Effects) {
	if len(e) == 0 || s.srv.cfg.Counters == nil {
		return
	}
	if byte(s.txStatus.Load()) == 'I' {
		s.srv.cfg.Counters.Apply(e)
		return
	}
	s.emu.Lock()
	s.pendingEffects = append(s.pendingEffects, e...)
	s.emu.Unlock()
	s.effectsPending.Store(true)
}

// endTx applies or drops the effects of the transaction that just ended.
func (s *session) endTx(committed bool) {
	if !s.effectsPending.Load() {
		return
	}
	s.emu.Lock()
	e := s.pendingEffects
	s.pendingEffects, s.sawCommit = nil, false
	s.emu.Unlock()
	s.effectsPending.Store(false)
	if committed && s.srv.cfg.Counters != nil {
		s.srv.cfg.Counters.Apply(e)
	}
}

// trackTxEnd follows a client transaction holding Fetchq calls from the
// upstream's relayed messages: a COMMIT tag, then ReadyForQuery 'I',
// means it committed; 'I' without it means it rolled back.
// (ROLLBACK TO SAVEPOINT does not undo the effects of calls made since the
// savepoint: a known approximation.)
func (s *session) trackTxEnd(typ byte, body []byte) {
	switch typ {
	case 'C':
		if bytes.HasPrefix(body, []byte("COMMIT\x00")) {
			s.emu.Lock()
			s.sawCommit = true
			s.emu.Unlock()
		}
	case 'Z':
		if len(body) == 1 && body[0] == 'I' {
			s.emu.Lock()
			committed := s.sawCommit
			s.emu.Unlock()
			s.endTx(committed)
		}
	}
}

// isFatal reports whether err is a Postgres error that ended its
// connection (FATAL or PANIC).
func isFatal(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	sev := cmp.Or(pgErr.SeverityUnlocalized, pgErr.Severity)
	return sev == "FATAL" || sev == "PANIC"
}

// serviceErrorForClient turns the error of a call that ran on the service
// pool into what its client gets. The client's own connection is not the
// one that failed, so a FATAL from a pool connection (Postgres shutting
// down, a terminated backend) reaches it as an ERROR with the same code,
// and a pool connection that could not be made or broke mid-call as an
// ERROR 08006 (the cause goes to the log, never to the client: it may
// name hosts and users).
func (s *session) serviceErrorForClient(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		c := internalErrorForClient(err).(*pgconn.PgError)
		if isFatal(c) {
			c.Severity, c.SeverityUnlocalized = "ERROR", "ERROR"
		}
		return c
	}
	var st sqlStater
	if errors.As(err, &st) || errors.Is(err, context.Canceled) {
		return err
	}
	s.log().Warn("fetchq call failed on the service pool", "err", err)
	return &Error{Code: "08006", Message: "the proxy's connection to the database failed during the call"}
}

// internalErrorForClient strips from a Postgres error raised by the
// proxy's own SQL what points into that SQL (position, internal query,
// context): the client must see its error, never the proxy's statements.
func internalErrorForClient(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	c := *pgErr
	c.Position, c.InternalPosition, c.InternalQuery, c.Where = 0, 0, "", ""
	return &c
}

func encodeMsgs(msgs ...encoder) []byte {
	var out []byte
	for _, m := range msgs {
		out = appendEncoded(out, m)
	}
	return out
}

func appendEncoded(dst []byte, m encoder) []byte {
	out, err := m.Encode(dst)
	if err != nil {
		// Encoding fails only for values out of the protocol's ranges,
		// which the proxy's own messages never hold.
		panic(fmt.Sprintf("proxy: encoding %T: %v", m, err))
	}
	return out
}
