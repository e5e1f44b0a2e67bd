package backend

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Group commit.
//
// A proxy sees every worker's calls at once. A Batcher coalesces the
// concurrent autocommit picks of all sessions that target the same queue,
// version and lock into one statement on the service pool: the leader of a
// group runs one doc_pick with the sum of the waiting limits and deals the
// rows back to the waiting calls in pick (priority) order, so each gets what
// it would have got had the calls run one after the other. There is no
// timer: a lone call runs at once, and so does a call arriving while fewer
// than MaxInFlight batches of its key run; otherwise it waits for the next
// batch, which starts as soon as a running one ends. Completes and kills
// (below) are batched the same way and share the picks' key: the picks,
// completes and kills of a queue run in rounds of one transaction
// (batch_lane.go). Pushes, reschedules and rejects (batch_resolve.go) are
// batched per queue and operation.
//
// The Batcher runs with the service pool's rights. The caller must first
// check that the client's own role may do what the calls do
// ([Batcher.CanBatch], on the client's connection), so batching never lends
// a client rights it does not have nor runs its calls in another database.

// BatcherConfig configures a Batcher.
type BatcherConfig struct {
	// Pool is the service pool the batches run on. Required.
	Pool *pgxpool.Pool
	// Store runs the statements. Required.
	Store *Store
	// Timeout bounds one batch statement. Default 30s.
	Timeout time.Duration
	// MaxPick caps the documents one pick batch asks for; calls beyond it
	// wait for the next batch. Default 1000.
	MaxPick int32
	// MaxInFlight is how many batches of one key (queue and operation)
	// may run at once. With one, every call arriving while a batch runs
	// waits for it to end and batches are largest; more let a few clients
	// overlap their round trips at the cost of smaller batches (on a
	// 2-core machine where Postgres is CPU-bound, 2 was 15-25% slower for
	// pushes and pick+complete). Default 1.
	MaxInFlight int
}

// Batcher coalesces concurrent autocommit calls. It is safe for concurrent
// use.
type Batcher struct {
	cfg      BatcherConfig
	db       DB
	database string // the service pool's (see Database)

	mu      sync.Mutex
	lanes   map[string]*group[laneReq]
	pushes  map[string]*group[*pushReq]
	resched map[string]*group[*reschedReq]
	rejects map[string]*group[*rejectReq]

	calls, batches atomic.Int64
}

// Stats returns how many calls the Batcher ran and in how many statements.
func (b *Batcher) Stats() (calls, batches int64) { return b.calls.Load(), b.batches.Load() }

// NewBatcher returns a Batcher for cfg.
func NewBatcher(cfg BatcherConfig) *Batcher {
	cfg.Timeout = cmp.Or(cfg.Timeout, 30*time.Second)
	cfg.MaxPick = cmp.Or(cfg.MaxPick, 1000)
	cfg.MaxInFlight = max(cfg.MaxInFlight, 0)
	cfg.MaxInFlight = cmp.Or(cfg.MaxInFlight, 1)
	conn := cfg.Pool.Config().ConnConfig
	return &Batcher{
		cfg: cfg, db: newStaleRetryDB(cfg.Pool), database: cmp.Or(conn.Database, conn.User),
		lanes:   make(map[string]*group[laneReq]),
		pushes:  make(map[string]*group[*pushReq]),
		resched: make(map[string]*group[*reschedReq]),
		rejects: make(map[string]*group[*rejectReq]),
	}
}

// batchable lists the overloads a Batcher runs, with the position of the
// queue argument (always first).
var batchable = map[string]bool{
	"doc_pick(varchar,integer,integer,varchar)":         true,
	"doc_pick(varchar,varchar)":                         true,
	"doc_pick(varchar)":                                 true,
	"doc_pick(varchar,integer)":                         true,
	"doc_complete(varchar,varchar)":                     true,
	"doc_complete(varchar,varchar,jsonb)":               true,
	"doc_kill(varchar,varchar)":                         true,
	"doc_kill(varchar,varchar,jsonb)":                   true,
	"doc_reschedule(varchar,varchar,timestamptz)":       true,
	"doc_reschedule(varchar,varchar,timestamptz,jsonb)": true,
	"doc_reject(varchar,varchar,varchar,jsonb)":         true,
	"doc_reject(varchar,varchar,varchar,jsonb,varchar)": true,
	pushID: true,
}

// pushID is the single-document doc_push the Batcher runs.
const pushID = "doc_push(varchar,varchar,integer,integer,timestamptz,jsonb)"

// Batchable reports whether the call of overload id with args goes through
// the Batcher. Its first argument is the queue name.
//
// A push batches only when its next_iteration is now() or an epoch
// (to_timestamp(n)): a timestamp text, and an interval with days or months,
// depend on the session's TimeZone, which the client's connection may set
// differently from the service pool's. For the same reason a pick batches
// only with a lock duration of hours, minutes or seconds ('5m', '1 hour'),
// a reschedule only at now() plus or minus such an interval, or an epoch.
//
// So does a call whose jsonb text Go cannot vouch for: Postgres checks it
// on the client's own connection (see [Store.Invoke]).
func (b *Batcher) Batchable(id string, args []Value) bool {
	if !batchable[id] || !plainArgs(id, args) {
		return false
	}
	switch {
	case id == pushID:
		if len(args) != 6 {
			return false
		}
		t := args[4]
		return t.Null || (t.Now && t.Interval == "") || t.Epoch
	case len(args) >= 3 && overloadsByID[id].name == "doc_reschedule":
		t := args[2]
		return t.Null || (t.Now && plainInterval(t.Interval)) || t.Epoch
	case overloadsByID[id].name == "doc_pick":
		if d, ok := pickDuration(id, args); ok {
			return d.Null || (d.Text != "" && plainInterval(d.Text))
		}
	}
	return true
}

// pickDuration returns the duration argument of a doc_pick form that has
// one.
func pickDuration(id string, args []Value) (Value, bool) {
	o := overloadsByID[id]
	switch {
	case len(args) == 4:
		return args[3], true
	case len(args) == 2 && o.args[1] != argInteger:
		return args[1], true
	}
	return Value{}, false
}

// plainInterval reports whether an interval text added to now() gives
// the same instant whatever the session's settings: empty, or amounts of
// hours, minutes, seconds and fractions of seconds ("1h", "90 minutes",
// "1 hour 30 min"), unsigned. Days, weeks, months and years depend on the
// TimeZone (a day is not 24 hours across a daylight-saving change), and
// signs on the IntervalStyle.
func plainInterval(s string) bool {
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimLeft(s, " ") {
		n := 0
		for n < len(s) && (s[n] >= '0' && s[n] <= '9' || s[n] == '.') {
			n++
		}
		if n == 0 {
			return false
		}
		s = strings.TrimLeft(s[n:], " ")
		u := 0
		for u < len(s) && (s[u]|0x20 >= 'a' && s[u]|0x20 <= 'z') {
			u++
		}
		if !timeUnits[strings.ToLower(s[:u])] {
			return false
		}
		s = s[u:]
	}
	return true
}

// timeUnits are the interval units of a fixed length.
var timeUnits = map[string]bool{
	"us": true, "usec": true, "usecs": true, "microsecond": true, "microseconds": true,
	"ms": true, "msec": true, "msecs": true, "millisecond": true, "milliseconds": true,
	"s": true, "sec": true, "secs": true, "second": true, "seconds": true,
	"m": true, "min": true, "mins": true, "minute": true, "minutes": true,
	"h": true, "hr": true, "hrs": true, "hour": true, "hours": true,
}

// pickKey identifies the picks that can share a statement.
type pickKey struct {
	queue    string
	version  int32
	duration string
	durNull  bool
}

// group holds the calls of one batch key: a call finding fewer than
// maxInFlight batches running leads one (runs it), calls arriving
// meanwhile wait for the next batch. No timer.
type group[R any] struct {
	running int
	waiting []R
	// spare is the array of a batch that ran, cleared, for the waiting
	// calls once all have been taken: a group fills a list of the same
	// size round after round without growing a new one each time.
	spare []R
}

// join queues r in the group of key and reports whether the caller must
// lead a batch.
func join[K comparable, R any](mu *sync.Mutex, groups map[K]*group[R], key K, r R, maxInFlight int) (g *group[R], lead bool) {
	mu.Lock()
	defer mu.Unlock()
	g = groups[key]
	if g == nil {
		g = &group[R]{}
		groups[key] = g
	}
	g.waiting = append(g.waiting, r)
	lead = g.running < maxInFlight
	if lead {
		g.running++
	}
	return g, lead
}

// take removes and returns the calls of the next batch from g, in arrival
// order: at least one, then as many as keep the sum of their weights within
// max. It returns none when another batch took them first.
func take[R any](mu *sync.Mutex, g *group[R], max int, weight func(R) int) []R {
	mu.Lock()
	defer mu.Unlock()
	n, sum := 0, 0
	for n < len(g.waiting) && (n == 0 || sum+weight(g.waiting[n]) <= max) {
		sum += weight(g.waiting[n])
		n++
	}
	batch := g.waiting[:n:n]
	g.waiting = g.waiting[n:]
	if len(g.waiting) == 0 {
		g.waiting, g.spare = g.spare, nil
	}
	return batch
}

// recycle gives g the array of batch, which ran and was dealt, for its
// waiting calls to come (see group.spare).
func recycle[R any](mu *sync.Mutex, g *group[R], batch []R) {
	clear(batch)
	mu.Lock()
	defer mu.Unlock()
	if cap(batch) > cap(g.spare) {
		g.spare = batch[:0]
	}
}

// runGroup runs the next batch of g with exec (none when another batch
// took the waiting calls first), counts it, and hands off.
func runGroup[K comparable, R any](b *Batcher, groups map[K]*group[R], key K, g *group[R], weight func(R) int, exec func(batch []R)) {
	if batch := take(&b.mu, g, int(b.cfg.MaxPick), weight); len(batch) > 0 {
		b.calls.Add(int64(len(batch)))
		b.batches.Add(1)
		exec(batch)
		recycle(&b.mu, g, batch)
	}
	handOff(&b.mu, groups, key, g, func() { runGroup(b, groups, key, g, weight, exec) })
}

// one weighs every call the same.
func one[R any](R) int { return 1 }

// handOff ends a batch: when calls are waiting, next runs the following
// batch on a new goroutine, so the caller that led this one returns
// without waiting; else the batch's slot is freed, and the group dropped
// when no batch of it runs.
func handOff[K comparable, R any](mu *sync.Mutex, groups map[K]*group[R], key K, g *group[R], next func()) {
	mu.Lock()
	defer mu.Unlock()
	if len(g.waiting) > 0 {
		go next()
		return
	}
	g.running--
	if g.running == 0 {
		delete(groups, key)
	}
}

type pickReq struct {
	limit int32
	done  chan pickOut
}

type pickOut struct {
	rows [][][]byte
	err  error
}

// Call is a batchable call ready to join its batch (see [Batcher.Prepare]).
type Call struct {
	key batchKey
	callOps
}

// callOps are what a Call does, for its kind of batch (see newCall).
type callOps interface {
	// join queues the call in its group; when it must lead a batch it
	// runs it inline, or on a new goroutine when async is set.
	join(async bool)
	// wait waits for the call's share of its batch and returns what
	// Store.Invoke would have.
	wait(ctx context.Context) (*Result, error)
	// ended reports whether the call's share of its batch has been dealt.
	ended() bool
}

// batchKey identifies the statements of a call's batches: one of its
// fields is set. A lane's round runs several of them (see Lanes): its
// completes, its kills, and its picks of each version and lock duration.
type batchKey struct {
	pick       pickKey
	resolve    resolveKey
	push       string
	reschedule string
	reject     string
}

// Key identifies the statements the call joins. With MaxInFlight 1 (the
// only setting [Batcher.Prepare] hands out calls for), calls of one key
// started one after the other run in that order: in one statement, in
// arrival order, or in statements that follow one another. Calls of two
// keys may share a round in another order (a lane runs its completes
// before its picks): a caller that needs one call's effects seen by the
// next waits for the first to end when the key changes.
func (c *Call) Key() any { return c.key }

// Start joins the call to its batch without waiting for it: when no batch
// of its key runs, one starts on a new goroutine.
func (c *Call) Start() { c.join(true) }

// Ended reports whether the call's outcome is in, so that Wait returns at
// once.
func (c *Call) Ended() bool { return c.ended() }

// Wait waits for the call's outcome: what [Batcher.Invoke] would have
// returned. When ctx ends first, the call may still take effect (like a
// client that disconnects after its statement ran).
func (c *Call) Wait(ctx context.Context) (*Result, error) { return c.wait(ctx) }

// Invoke runs a batchable overload (see Batchable) with its arguments as
// Store.Invoke takes them, and returns what Store.Invoke would. Once the
// call has joined a batch, it returns its outcome even if ctx ends first.
func (b *Batcher) Invoke(ctx context.Context, id string, args []Value) (*Result, error) {
	c, err := b.prepare(id, args)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return b.cfg.Store.Invoke(ctx, b.db, id, args)
	}
	c.join(false)
	// The outcome is awaited even when ctx ends first (bounded by the
	// batch's Timeout): the batch may still take the call's effect, whose
	// counter effects the caller must then apply.
	return c.wait(context.WithoutCancel(ctx))
}

// Prepare readies a call for pipelined use: the caller starts it (Start)
// and collects its outcome later (Wait), meanwhile starting more calls of
// the same Key, which keep their order. ok is false when the call does
// not take a batch (a form the Batcher leaves to Store.Invoke, an argument
// the conversion refuses: Invoke gives its answer), and always when
// MaxInFlight is more than 1, where batches of one key may overlap.
func (b *Batcher) Prepare(id string, args []Value) (c *Call, ok bool) {
	if b.cfg.MaxInFlight != 1 {
		return nil, false
	}
	c, err := b.prepare(id, args)
	return c, err == nil && c != nil
}

// prepare converts a batchable call's arguments and readies it to join its
// batch. It returns a nil Call when the call takes Store.Invoke's path.
func (b *Batcher) prepare(id string, args []Value) (*Call, error) {
	o, ok := overloadsByID[id]
	if !ok || !batchable[id] || len(args) != len(o.args) {
		return nil, nil
	}
	// The batchable overloads take at most 6 arguments: the array stays on
	// the stack (the prepare functions keep values, not the slice).
	var convArr [6]arg
	conv := convArr[:0]
	if len(args) > len(convArr) {
		conv = make([]arg, 0, len(args))
	}
	conv = conv[:len(args)]
	for i, v := range args {
		a, err := convertArg(o, i, v)
		if err != nil {
			return nil, err
		}
		conv[i] = a
	}
	switch {
	case id == pushID:
		return b.preparePush(id, o, conv, args)
	case o.name == "doc_reschedule":
		return b.prepareReschedule(id, o, conv, args)
	case o.name == "doc_reject":
		return b.prepareReject(id, o, conv, args)
	case o.name != "doc_pick":
		return b.prepareResolve(id, o, conv, args)
	}
	key := pickKey{duration: pick5m}
	limit := int32(1)
	switch len(conv) {
	case 4: // (q, version, limit, duration)
		if conv[1].null || conv[2].null {
			// NULL version picks nothing, NULL limit means "all": leave
			// these rare forms to the ordinary path.
			return nil, nil
		}
		key.version, limit = conv[1].i32(), conv[2].i32()
		key.duration, key.durNull = conv[3].str, conv[3].null
	case 2:
		if o.args[1] == argInteger { // (q, limit)
			if conv[1].null {
				return nil, nil
			}
			limit = conv[1].i32()
		} else { // (q, duration)
			key.duration, key.durNull = conv[1].str, conv[1].null
		}
	}
	q, ok := parseQueue(conv[0].str)
	if conv[0].null || !ok || limit <= 0 || limit > b.cfg.MaxPick {
		return nil, nil
	}
	key.queue = q.name

	req := &pickReq{limit: limit, done: make(chan pickOut, 1)}
	// When the caller's ctx ends first, the batch may still pick
	// documents for this call; like a client that disconnects after its
	// pick ran, they come back when their lock expires.
	c := newCall(b, b.lanes, key.queue, laneReq{pick: req, pkey: key}, req.done, func(g *group[laneReq]) { b.runLane(key.queue, g) },
		func(ctx context.Context, out pickOut) (*Result, error) {
			if out.err != nil {
				return nil, out.err
			}
			res := &Result{Columns: o.columns, Rows: out.rows}
			if n := int64(len(out.rows)); n > 0 {
				res.Effects = make(Effects, 0, 3).add(q.name, MetricPkd, n).add(q.name, MetricAct, n).add(q.name, MetricPnd, -n)
			}
			return res, nil
		})
	c.key = batchKey{pick: key}
	return c, nil
}

// newCall returns the Call of req, a call of the groups' batch key, whose
// outcome arrives on done: run leads a batch of the group, finish turns
// the outcome into the call's result.
func newCall[K comparable, R, O any](b *Batcher, groups map[K]*group[R], key K, req R, done chan O,
	run func(*group[R]), finish func(context.Context, O) (*Result, error)) *Call {
	return &Call{callOps: &call[K, R, O]{b: b, groups: groups, key: key, req: req, done: done, run: run, finish: finish}}
}

// call implements callOps for a call of the groups' batch key (newCall).
type call[K comparable, R, O any] struct {
	b      *Batcher
	groups map[K]*group[R]
	key    K
	req    R
	done   chan O
	run    func(*group[R])
	finish func(context.Context, O) (*Result, error)
}

func (c *call[K, R, O]) join(async bool) {
	if g, lead := join(&c.b.mu, c.groups, c.key, c.req, c.b.cfg.MaxInFlight); lead {
		runLead(async, func() { c.run(g) })
	}
}

func (c *call[K, R, O]) ended() bool { return len(c.done) > 0 }

func (c *call[K, R, O]) wait(ctx context.Context) (*Result, error) {
	out, err := receive(ctx, c.done)
	if err != nil {
		return nil, err
	}
	return c.finish(ctx, out)
}

// batchOutcome is a call's share of a batch of pushes, completes, kills,
// reschedules or rejects: whether the statement wrote its document, with
// the document's status; or, when the statement failed, the call's result
// run alone (ranAlone), or the batch's error.
type batchOutcome struct {
	affected bool
	status   int32
	ranAlone bool
	alone    *Result
	err      error
}

// execBatch runs the statement sql of a batch (batchStatement) and deals
// each call its outcome (dealBatch).
func execBatch[R, I any](b *Batcher, batch []R, items []I, first map[string]int, sql string, params []any,
	call func(R) (subject string, done chan batchOutcome, id string, args []Value)) {
	stmt, status, err := batchStatement(items, sql, params)
	if err == nil {
		err = b.query(stmt.sql, stmt.args, stmt.scan)
	}
	dealBatch(b, batch, first, status, err, call)
}

// statusRows is what a batch statement of pushes, completes, kills,
// reschedules or rejects wrote: the status of each document, by subject.
type statusRows map[string]int32

// scan reads one row (subject, status) of the statement.
func (st statusRows) scan(row [][]byte) error {
	if row[1] != nil {
		st[string(row[0])] = textInt32(row[1])
	}
	return nil
}

// batchStatement returns the statement sql of a batch, whose last
// parameter is the JSON list of items (after params) and whose rows are
// (subject, status) of the documents it wrote, and what it wrote once it
// has run.
func batchStatement[I any](items []I, sql string, params []any) (batchStmt, statusRows, error) {
	list, err := json.Marshal(items)
	if err != nil {
		return batchStmt{}, nil, err
	}
	status := make(statusRows, len(items))
	return batchStmt{sql: sql, args: append(params, string(list)), scan: status.scan}, status, nil
}

// dealBatch deals each call of a batch its outcome of the statement that
// ran it, which wrote status or failed with err: affected, with the
// status, when it is the first call of its subject (first) and the
// statement wrote that subject. When the statement failed inside
// Postgres, nothing was written, and every call runs alone, in order,
// before the next batch starts: the failure may be one call's doing. When
// it failed otherwise (see [rerunAlone]), every call gets its error.
func dealBatch[R any](b *Batcher, batch []R, first map[string]int, status statusRows, err error,
	call func(R) (subject string, done chan batchOutcome, id string, args []Value)) {
	alone := err != nil && rerunAlone(err)
	for i, r := range batch {
		subject, done, id, args := call(r)
		if alone {
			ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
			res, rerr := b.cfg.Store.Invoke(ctx, b.db, id, args)
			cancel()
			done <- batchOutcome{ranAlone: true, alone: res, err: rerr}
			continue
		}
		if err != nil {
			done <- batchOutcome{err: err}
			continue
		}
		st, ok := status[subject]
		done <- batchOutcome{affected: ok && first[subject] == i, status: st}
	}
}

// rerunAlone reports whether the calls of a batch whose statement failed
// with err run alone: when Postgres refused the statement, it rolled back
// and wrote nothing, and the cause may be one call's (a constraint, a
// trigger, a value). Not when the batch ran out of time (its context
// ended, or Postgres cancelled it for that, 57014), nor when the
// connection failed or Postgres is shutting down: the outcome may be
// unknown (a statement may have committed just before its answer was
// lost; run again, a push would find its own document and answer 0), and
// each call alone would wait out the timeout again, one after another.
func rerunAlone(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch {
	case pgErr.Severity == "FATAL" || pgErr.Severity == "PANIC",
		pgErr.Code == codeQueryCanceled,
		strings.HasPrefix(pgErr.Code, "08"), strings.HasPrefix(pgErr.Code, "57P"):
		return false
	}
	return true
}

// query runs a batch statement on the service pool, bounded by Timeout.
func (b *Batcher) query(sql string, args []any, scan func(row [][]byte) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	_, err := b.db.Query(ctx, sql, args, scan)
	return err
}

// receive waits for a call's share of its batch on done, or for ctx.
func receive[T any](ctx context.Context, done <-chan T) (T, error) {
	select {
	case out := <-done:
		return out, nil
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// runLead runs a batch the caller must lead: inline, or on a new goroutine.
func runLead(async bool, run func()) {
	if async {
		go run()
		return
	}
	run()
}

// execPicks runs one batch of picks and deals its rows.
func (b *Batcher) execPicks(key pickKey, batch []*pickReq) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	rows, _, err := b.cfg.Store.pickBatchRows(ctx, b.db, pickParams(key, batch), b.cfg.MaxPick)
	cancel()
	dealPicks(batch, rows, err)
}

// pickParams are the doc_pick arguments of a batch of picks.
func pickParams(key pickKey, batch []*pickReq) DocPickParams {
	var total int32
	for _, r := range batch {
		total += r.limit
	}
	p := DocPickParams{Queue: key.queue, Version: key.version, Limit: &total}
	if !key.durNull {
		p.Duration = &key.duration
	}
	return p
}

// dealPicks deals the rows a batch of picks got, in pick order, or err.
func dealPicks(batch []*pickReq, rows [][][]byte, err error) {
	off := 0
	for _, r := range batch {
		n := min(int(r.limit), len(rows)-off)
		r.done <- pickOut{rows: rows[off : off+n : off+n], err: err}
		off += n
	}
}

// CanBatch reports whether the calls on queue of the client whose
// connection is db may run in this Batcher's batches: db is connected to
// the service pool's database (a client of another database must find its
// own queues), and its role has the rights the calls use
// ([Store.CanBatch]).
func (b *Batcher) CanBatch(ctx context.Context, db DB, queue string) (bool, error) {
	return b.cfg.Store.CanBatch(ctx, db, b.Database(), queue)
}

// Database is the name of the service pool's database: the one its
// configuration names or, without one, the user's namesake, as Postgres
// chooses.
func (b *Batcher) Database() string { return b.database }

// CanBatch reports whether db's session is connected to database and its
// role may use schemas fetchq and fetchq_data, read, insert and update the
// documents of queue, insert into its log (doc_reject) and read
// fetchq.queues (doc_reject reads max_attempts there), so that its calls
// may run on the service pool, whose database is database. It is false for
// a queue that does not exist (its calls then take the ordinary path and
// give the extension's answer), and for one whose documents table has row
// security enabled: the service pool's role, its owner, would not be held
// to the client's policies.
func (s *Store) CanBatch(ctx context.Context, db DB, database, queue string) (bool, error) {
	q, ok := parseQueue(queue)
	if !ok {
		return false, nil
	}
	var allowed bool
	// has_table_privilege with a list of privileges is true when ANY of
	// them is held: each is checked on its own.
	_, err := db.Query(ctx, "SELECT coalesce(current_database() = $5::text"+
		" AND has_schema_privilege($3::text, 'USAGE')"+
		" AND has_schema_privilege(n.oid, 'USAGE')"+
		" AND has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(c.oid, 'INSERT')"+
		" AND has_table_privilege(c.oid, 'UPDATE') AND NOT c.relrowsecurity"+
		" AND coalesce((SELECT has_table_privilege(l.oid, 'INSERT') FROM pg_catalog.pg_class l"+
		" WHERE l.relnamespace = n.oid AND l.relname = $4::text), false)"+
		" AND coalesce((SELECT has_table_privilege(r.oid, 'SELECT') FROM pg_catalog.pg_class r"+
		" JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace WHERE rn.nspname = $3::text AND r.relname = 'queues'), false), false)"+
		" FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"+
		" WHERE n.nspname = $1::text AND c.relname = $2::text",
		[]any{dataSchema, q.name + "__docs", apiSchema, q.name + "__logs", database}, func(row [][]byte) error {
			allowed = textBool(row[0])
			return nil
		})
	return allowed, err
}

// Completes and kills.
//
// The concurrent doc_complete (or doc_kill) calls of a queue become one
// UPDATE over a JSON list of (subject, payload) pairs. A subject named by
// several calls of one batch is resolved by the first of them; the others
// get 0, as they would have, running after it, alone.

type resolveKey struct {
	queue string
	kill  bool
}

type resolveReq struct {
	subject string
	payload *string // de-doubled JSON, nil for the two-argument form
	done    chan batchOutcome
	id      string // the overload and arguments, to run the call alone
	args    []Value
}

// resolveItem is one element of the JSON list a resolve batch sends.
type resolveItem struct {
	Subject string `json:"s"`
	// Payload is the JSON text, cast by Postgres as the call alone casts
	// it: as a jsonb member of the list, a JSON null would come out of
	// jsonb_to_recordset as SQL NULL instead of the jsonb null.
	Payload string `json:"p,omitempty"`
	Has     bool   `json:"h"`
}

func (b *Batcher) prepareResolve(id string, o *overload, conv []arg, args []Value) (*Call, error) {
	q, ok := parseQueue(conv[0].str)
	if conv[0].null || conv[1].null || !ok || (len(conv) == 3 && conv[2].null) {
		return nil, nil
	}
	req := &resolveReq{subject: conv[1].str, done: make(chan batchOutcome, 1), id: id, args: args}
	if len(conv) == 3 {
		payload, err := jsonArg(conv[2].str)
		if err != nil {
			return nil, err
		}
		req.payload = &payload
	}
	kill := o.name == "doc_kill"
	key := resolveKey{queue: q.name, kill: kill}
	c := newCall(b, b.lanes, key.queue, laneReq{res: req, rkey: key}, req.done, func(g *group[laneReq]) { b.runLane(key.queue, g) },
		func(ctx context.Context, out batchOutcome) (*Result, error) {
			switch {
			case out.ranAlone:
				return out.alone, out.err
			case out.err != nil:
				if b.cfg.Store.swallow(ctx, o.name, out.err) {
					return &Result{Columns: o.columns, Rows: [][][]byte{{nil}}}, nil
				}
				return nil, out.err
			}
			res := &Result{Columns: o.columns, Rows: [][][]byte{{i32Text(0)}}}
			if out.affected {
				res.Rows[0][0] = i32Text(1)
				metric := MetricCpl
				if kill {
					metric = MetricKll
				}
				res.Effects = make(Effects, 0, 3).add(q.name, MetricPrc, 1).add(q.name, metric, 1).add(q.name, MetricAct, -1)
			}
			return res, nil
		})
	c.key = batchKey{resolve: key}
	return c, nil
}

// execResolves runs one batch of completes or kills and deals the outcome.
func (b *Batcher) execResolves(key resolveKey, batch []*resolveReq) {
	first, items, sql := resolveBatch(key, batch)
	execBatch(b, batch, items, first, sql, nil, resolveCall)
}

// resolveBatch returns the first call of each subject, the list items and
// the statement of a batch of completes or kills.
func resolveBatch(key resolveKey, batch []*resolveReq) (map[string]int, []resolveItem, string) {
	first, items := firstOfSubjects(batch, func(r *resolveReq) string { return r.subject }, func(r *resolveReq) resolveItem {
		it := resolveItem{Subject: r.subject}
		if r.payload != nil {
			it.Payload, it.Has = *r.payload, true
		}
		return it
	})
	set := "status = 3, attempts = 0, iterations = d.iterations + 1, last_iteration = now(), next_iteration = '2970-01-01 00:00:00+00'"
	if key.kill {
		set = "status = -1, attempts = 0, iterations = d.iterations + 1, last_iteration = now()"
	}
	q := queue{name: key.queue}
	sql := "UPDATE " + q.docs() + " d SET " + set + ", payload = CASE WHEN v.h THEN v.p::jsonb ELSE d.payload END" +
		" FROM jsonb_to_recordset($1::jsonb) AS v(s text, p text, h boolean)" +
		" WHERE d.subject = v.s AND d.status = 2 RETURNING d.subject, d.status"
	return first, items, sql
}

// resolveCall says how dealBatch answers a complete or kill.
func resolveCall(r *resolveReq) (string, chan batchOutcome, string, []Value) {
	return r.subject, r.done, r.id, r.args
}

// firstCalls returns the index in batch of the first call of each
// subject: the one that resolves it.
func firstCalls[R any](batch []R, subject func(R) string) map[string]int {
	first := make(map[string]int, len(batch))
	for i, r := range batch {
		if _, dup := first[subject(r)]; !dup {
			first[subject(r)] = i
		}
	}
	return first
}

// firstOfSubjects returns firstCalls and the items (made by item) of those
// calls, in order.
func firstOfSubjects[R, I any](batch []R, subject func(R) string, item func(R) I) (map[string]int, []I) {
	first := firstCalls(batch, subject)
	items := make([]I, 0, len(first))
	for i, r := range batch {
		if first[subject(r)] == i {
			items = append(items, item(r))
		}
	}
	return first, items
}

// batchTime returns how a list item of a batch carries a next_iteration
// the Batcher accepts (Batchable): kind 'n' now(), 'e' an epoch (text: the
// seconds), '+' or '-' now() plus or minus the interval text.
func batchTime(t Time) (kind, text string) {
	switch {
	case t.Kind == TimeEpoch:
		return "e", t.Text
	case t.Interval != "" && t.Negative:
		return "-", t.Interval
	case t.Interval != "":
		return "+", t.Interval
	}
	return "n", ""
}

// batchTimeSQL is the timestamp of the list item alias x (k and t, see
// batchTime).
func batchTimeSQL(x string) string {
	return "CASE " + x + ".k WHEN 'e' THEN to_timestamp(" + x + ".t::float8) WHEN '+' THEN now() + " + x + ".t::interval" +
		" WHEN '-' THEN now() - " + x + ".t::interval ELSE now() END"
}

// Pushes.
//
// The concurrent single-document doc_push calls of a queue become one
// INSERT over a JSON list, rows inserted in arrival order with ON CONFLICT
// DO NOTHING: a subject pushed by several calls of a batch is inserted by
// the first and the others get 0, as they would have, running after it.
// When the batch statement fails (a payload the jsonb input refuses, a
// number to_timestamp refuses, a queue dropped meanwhile...), nothing was
// inserted, and every call of the batch runs alone, one after the other in
// arrival order before the next batch starts: each gets exactly the
// answer or the error it would have got.

type pushReq struct {
	id      string
	args    []Value
	p       DocPushParams
	payload string // de-doubled JSON text
	done    chan batchOutcome
}

// pushItem is one element of the JSON list a push batch sends; Kind and
// Text are its next_iteration (batchTime).
type pushItem struct {
	Subject  string `json:"s"`
	Version  int32  `json:"v"`
	Priority int32  `json:"p"`
	Kind     string `json:"k"`
	Text     string `json:"t,omitempty"`
	Payload  string `json:"d"`
}

func (b *Batcher) preparePush(id string, o *overload, conv []arg, args []Value) (*Call, error) {
	for _, a := range conv {
		if a.null {
			return nil, nil
		}
	}
	q, ok := parseQueue(conv[0].str)
	t := conv[4].time
	if !ok || utf8.RuneCountInString(conv[1].str) > maxSubjectLen ||
		!(t.Kind == TimeEpoch || (t.Kind == TimeNow && t.Interval == "")) {
		return nil, nil
	}
	payload, err := jsonArg(conv[5].str)
	if err != nil {
		return nil, err
	}
	req := &pushReq{
		id: id, args: args,
		p: DocPushParams{Queue: q.name, Subject: conv[1].str, Version: conv[2].i32(), Priority: conv[3].i32(),
			NextIteration: t, Payload: conv[5].str},
		payload: payload,
		done:    make(chan batchOutcome, 1),
	}
	c := newCall(b, b.pushes, q.name, req, req.done, func(g *group[*pushReq]) { b.runPushes(q.name, g) },
		func(_ context.Context, out batchOutcome) (*Result, error) {
			if out.alone != nil || out.err != nil {
				return out.alone, out.err
			}
			if !out.affected {
				return &Result{Columns: o.columns, Rows: [][][]byte{{i32Text(0)}}}, nil
			}
			return &Result{Columns: o.columns, Rows: [][][]byte{{i32Text(1)}},
				Effects: insertEffects(q.name, req.p.Version, int(out.status), 1)}, nil
		})
	c.key = batchKey{push: q.name}
	return c, nil
}

// runPushes runs the group's batches of pushes.
func (b *Batcher) runPushes(queueName string, g *group[*pushReq]) {
	runGroup(b, b.pushes, queueName, g, one[*pushReq], func(batch []*pushReq) { b.execPushes(queueName, batch) })
}

// execPushes runs one batch of pushes and deals the outcome.
func (b *Batcher) execPushes(queueName string, batch []*pushReq) {
	items := make([]pushItem, len(batch))
	for i, r := range batch {
		it := pushItem{Subject: r.p.Subject, Version: r.p.Version, Priority: r.p.Priority, Payload: r.payload}
		it.Kind, it.Text = batchTime(r.p.NextIteration)
		items[i] = it
	}
	q := queue{name: queueName}
	sql := "INSERT INTO " + q.docs() + " (subject, version, priority, status, next_iteration, payload, created_at)" +
		" SELECT x.s, x.v, x.p, CASE WHEN x.ts <= now() THEN 1 ELSE 0 END, x.ts, x.d::jsonb, now() FROM" +
		" (SELECT v.s, v.v, v.p, v.d, v.o, " + batchTimeSQL("v") + " AS ts" +
		" FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (s text, v int, p int, k text, t text, d text))" +
		" WITH ORDINALITY AS v(s, v, p, k, t, d, o)) x" +
		" ORDER BY x.o ON CONFLICT DO NOTHING RETURNING subject, status"
	execBatch(b, batch, items, firstCalls(batch, func(r *pushReq) string { return r.p.Subject }), sql, nil,
		func(r *pushReq) (string, chan batchOutcome, string, []Value) {
			return r.p.Subject, r.done, r.id, r.args
		})
}
