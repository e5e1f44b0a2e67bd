package backend

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Value is one argument of an intercepted call as the proxy received it.
type Value struct {
	// Null is SQL NULL (possibly cast).
	Null bool
	// Text is the literal's value (quotes removed, escapes applied) or a
	// bound parameter's text, e.g. "5m", "42", `{"a":1}`. For Epoch, the
	// number of seconds since the Unix epoch as a decimal string.
	Text string
	// Now is now() (also CURRENT_TIMESTAMP), optionally plus or minus
	// Interval (interval input text, "" for none; Negative subtracts).
	Now      bool
	Interval string
	Negative bool
	// Epoch is to_timestamp(Text).
	Epoch bool
}

// Result is what an intercepted call returns: its rows in the overload's
// output-column order, as the extension returns them.
type Result struct {
	// Columns are the output column names (the OUT parameters or RETURNS
	// TABLE columns), e.g. ["queued_docs"]. The slice is shared between
	// calls: do not modify it.
	Columns []string
	// Rows hold one value per column in text format, as Postgres prints
	// the column's type (booleans t/f, timestamptz in the session's
	// DateStyle and TimeZone); nil is NULL. Scalar and record functions
	// return exactly one row.
	Rows [][][]byte
	// Effects are the counter changes to apply after commit.
	Effects Effects
}

// argType is a Postgres argument type of a Fetchq signature.
type argType uint8

const (
	argVarchar argType = iota
	argInteger
	argBigint
	argBoolean
	argJSONB
	argTimestamptz
)

var argTypeNames = [...]string{"varchar", "integer", "bigint", "boolean", "jsonb", "timestamptz"}

// arg is an argument converted to its declared type.
type arg struct {
	null bool
	str  string // varchar, jsonb (validated, not de-doubled)
	num  int64  // integer, bigint
	bool bool
	time Time
}

func (a arg) i32() int32 { return int32(a.num) }

func (a arg) strp() *string {
	if a.null {
		return nil
	}
	return &a.str
}

func (a arg) i32p() *int32 {
	if a.null {
		return nil
	}
	n := int32(a.num)
	return &n
}

// overload is one Fetchq function signature and its adapter.
type overload struct {
	name    string
	args    []argType
	columns []string
	call    func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error)
}

func (o *overload) id() string {
	names := make([]string, len(o.args))
	for i, t := range o.args {
		names[i] = argTypeNames[t]
	}
	return o.name + "(" + strings.Join(names, ",") + ")"
}

// overloadsByID indexes the supported overloads.
var overloadsByID = func() map[string]*overload {
	m := make(map[string]*overload, len(overloadList)+len(metricOverloads)+len(mntOverloads))
	for _, list := range [][]overload{overloadList, metricOverloads, mntOverloads} {
		for i := range list {
			o := &list[i]
			m[o.id()] = o
		}
	}
	return m
}()

// Overloads returns the IDs of the overloads Invoke supports, sorted: the
// function name without schema and its argument types as Postgres names
// them, e.g. "doc_pick(varchar,integer,integer,varchar)". Every callable
// function of Fetchq 4.0.2 is among them, every overload (86).
func Overloads() []string {
	ids := make([]string, 0, len(overloadsByID))
	for id := range overloadsByID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Columns returns the output column names of an overload, or nil for an
// unknown ID.
func Columns(id string) []string {
	o, ok := overloadsByID[id]
	if !ok {
		return nil
	}
	return slices.Clone(o.columns)
}

// Invoke runs the overload id (see [Overloads]) with args, one per declared
// argument, on db and returns its result as the extension would. Argument
// text is converted like Postgres' input functions do (integers and
// booleans in Go, failing with 22P02 or 22003; jsonb text that is not plain
// JSON by Postgres itself, see scanJSON); an unknown id or a wrong number
// of arguments fails with 42883. Errors are *Error or, from Postgres,
// *pgconn.PgError; see the method of each function for its error policy.
//
// Postgres checks USAGE on schema fetchq before it runs any of the
// extension's functions. A call whose statements touch the fetchq tables
// gets that check from Postgres; so, before an argument error and when the
// call answered without running any statement (info(), an invalid queue
// name, a NULL argument), Invoke runs it on db, which must therefore be a
// connection with the client's role: a role without USAGE gets Postgres'
// 42501 "permission denied for schema fetchq" instead of the answer.
func (s *Store) Invoke(ctx context.Context, db DB, id string, args []Value) (*Result, error) {
	o, ok := overloadsByID[id]
	if !ok {
		return nil, &Error{Code: codeUndefinedFunction, Message: "function fetchq." + id + " does not exist", kind: ErrUnknownOverload}
	}
	if len(args) != len(o.args) {
		return nil, &Error{
			Code:    codeUndefinedFunction,
			Message: "function fetchq." + id + " takes " + strconv.Itoa(len(o.args)) + " arguments, got " + strconv.Itoa(len(args)),
			kind:    ErrUnknownOverload,
		}
	}
	c := &callDB{db: db}
	conv := make([]arg, len(args))
	for i, v := range args {
		if o.args[i] == argJSONB && !v.Null && !v.Now && !v.Epoch {
			if _, plain := scanJSON(v.Text); !plain {
				// Postgres' jsonb input decides, with its own error.
				c.checked = true
				if err := checkUsage(ctx, db, &v.Text); err != nil {
					return nil, err
				}
			}
			conv[i] = arg{str: v.Text}
			continue
		}
		a, err := convertArg(o, i, v)
		if err != nil {
			return nil, c.usageFirst(ctx, err)
		}
		conv[i] = a
	}
	res, err := o.call(s, ctx, c, conv)
	if !c.ran {
		err = c.usageFirst(ctx, err)
	}
	if err != nil {
		return nil, err
	}
	res.Columns = o.columns
	return res, nil
}

// callDB is the DB of one Invoke call. It records whether the call ran any
// statement of its own, and whether the USAGE check already ran.
type callDB struct {
	db      DB
	ran     bool
	checked bool
}

func (c *callDB) Query(ctx context.Context, sql string, a []any, scan func(row [][]byte) error) (pgconn.CommandTag, error) {
	c.ran = true
	return c.db.Query(ctx, sql, a, scan)
}

func (c *callDB) Atomic(ctx context.Context, fn func(DB) error) error {
	c.ran = true
	return c.db.Atomic(ctx, fn)
}

// Autocommit implements Autocommitter when the underlying DB does.
func (c *callDB) Autocommit() bool {
	ac, ok := c.db.(Autocommitter)
	return ok && ac.Autocommit()
}

// usageFirst returns the error of the USAGE check when it fails (Postgres
// reports it before any argument error or answer), else err. It runs the
// check once per call, and not after a context error.
func (c *callDB) usageFirst(ctx context.Context, err error) error {
	if c.checked || ctx.Err() != nil {
		return err
	}
	c.checked = true
	if uerr := checkUsage(ctx, c.db, nil); uerr != nil {
		return uerr
	}
	return err
}

// convertArg converts the i-th argument of o to its declared type.
func convertArg(o *overload, i int, v Value) (arg, error) {
	t := o.args[i]
	if v.Null {
		return arg{null: true}, nil
	}
	if t == argTimestamptz {
		switch {
		case v.Now && v.Negative:
			return arg{time: NowMinus(v.Interval)}, nil
		case v.Now:
			return arg{time: NowPlus(v.Interval)}, nil
		case v.Epoch:
			return arg{time: TimeEpochSeconds(v.Text)}, nil
		default:
			return arg{time: TimeAt(v.Text)}, nil
		}
	}
	if v.Now || v.Epoch {
		return arg{}, &Error{
			Code:    codeDatatypeMismatch,
			Message: "argument " + strconv.Itoa(i+1) + " of fetchq." + o.name + " is of type " + argTypeNames[t] + " but expression is of type timestamp with time zone",
			kind:    ErrInvalidArgument,
		}
	}
	switch t {
	case argInteger, argBigint:
		n, err := parseInt(v.Text, t)
		return arg{num: n}, err
	case argBoolean:
		b, err := parseBool(v.Text)
		return arg{bool: b}, err
	case argJSONB:
		return arg{str: v.Text}, checkJSON(v.Text)
	default:
		return arg{str: v.Text}, nil
	}
}

// parseInt is Postgres' int4in / int8in for decimal text: surrounding
// whitespace and a sign allowed.
func parseInt(text string, t argType) (int64, error) {
	typ, bits := "integer", 32
	if t == argBigint {
		typ, bits = "bigint", 64
	}
	s := strings.TrimSpace(text)
	n, err := strconv.ParseInt(strings.TrimPrefix(s, "+"), 10, bits)
	if err == nil && !strings.HasPrefix(s, "+-") {
		return n, nil
	}
	if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
		return 0, &Error{Code: codeOutOfRange, Message: `value "` + text + `" is out of range for type ` + typ, kind: ErrInvalidArgument}
	}
	return 0, errInvalidInput(typ, text)
}

// parseBool is Postgres' boolin: t/true/y/yes/on/1 and f/false/n/no/off/0,
// any unique prefix of the words, any case, surrounding whitespace allowed.
func parseBool(text string) (bool, error) {
	s := strings.ToLower(strings.TrimSpace(text))
	if s != "" {
		switch {
		case strings.HasPrefix("true", s), strings.HasPrefix("yes", s), s == "1":
			return true, nil
		case strings.HasPrefix("false", s), strings.HasPrefix("no", s), s == "0":
			return false, nil
		case s == "on":
			return true, nil
		case s == "of" || s == "off":
			return false, nil
		}
	}
	return false, errInvalidInput("boolean", text)
}

// Result builders.

func row(values ...[]byte) *Result { return &Result{Rows: [][][]byte{values}} }

func withEffects(r *Result, e Effects) *Result {
	r.Effects = e
	return r
}

func rows(rs [][][]byte) *Result {
	if rs == nil {
		rs = [][][]byte{}
	}
	return &Result{Rows: rs}
}

func i32Text(n int32) []byte { return intText(int64(n)) }

// Output columns.
var (
	colsDoc        = docColumns
	colsQueuedDocs = []string{"queued_docs"}
	colsAffected   = []string{"affected_rows"}
	colsSetting    = []string{"affected_rows", "was_reindexed"}
	colsSuccess    = []string{"success"}
	colsStatus     = []string{"id", "name", "is_active"}
)

// Shorthands for signatures.
const (
	vc  = argVarchar
	i4  = argInteger
	bl  = argBoolean
	js  = argJSONB
	tst = argTimestamptz
)

func sig(t ...argType) []argType { return t }

// docPush adapts the six-argument doc_push and its short forms: a NULL
// argument gives 0, as in 4.0.2.
func docPush(s *Store, ctx context.Context, db DB, q, subj, version, priority arg, next Time, nextNull bool, payload arg) (*Result, error) {
	if q.null || subj.null || version.null || priority.null || nextNull || payload.null {
		return row(i32Text(0)), nil
	}
	r, err := s.DocPush(ctx, db, DocPushParams{
		Queue: q.str, Subject: subj.str, Version: version.i32(), Priority: priority.i32(),
		NextIteration: next, Payload: payload.str,
	})
	if err != nil {
		return nil, err
	}
	return withEffects(row(i32Text(r.QueuedDocs)), r.Effects), nil
}

// docPick adapts doc_pick: NULL queue or version picks nothing.
func docPick(s *Store, ctx context.Context, db DB, q arg, version arg, limit *int32, duration *string) (*Result, error) {
	if q.null || version.null {
		return rows(nil), nil
	}
	rs, e, err := s.pickRows(ctx, db, DocPickParams{Queue: q.str, Version: version.i32(), Limit: limit, Duration: duration})
	if err != nil {
		return nil, err
	}
	return withEffects(rows(rs), e), nil
}

// docResolve adapts doc_complete and doc_kill: NULL queue or payload gives
// NULL, a NULL subject matches nothing.
func docResolve(ctx context.Context, db DB, fn func(context.Context, DB, DocCompleteParams) (DocCompleteResult, error), q, subj arg, payload *arg) (*Result, error) {
	p := DocCompleteParams{Queue: q.str, Subject: subj.str}
	if payload != nil {
		if payload.null {
			return row(nil), nil
		}
		p.Payload = &payload.str
	}
	if q.null {
		return row(nil), nil
	}
	if subj.null {
		return row(i32Text(0)), nil
	}
	r, err := fn(ctx, db, p)
	if err != nil {
		return nil, err
	}
	return withEffects(row(optInt32Text(r.AffectedRows)), r.Effects), nil
}

func docReschedule(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
	p := DocRescheduleParams{Queue: a[0].str, Subject: a[1].str, NextIteration: a[2].time}
	if len(a) == 4 {
		if a[3].null {
			return nil, errNull("doc_reschedule", "par_payload")
		}
		p.Payload = &a[3].str
	}
	if a[0].null {
		return nil, errNull("doc_reschedule", "par_queue")
	}
	if a[1].null {
		return row(i32Text(0)), nil
	}
	r, err := s.DocReschedule(ctx, db, p)
	if err != nil {
		return nil, err
	}
	return withEffects(row(i32Text(r.AffectedRows)), r.Effects), nil
}

func docReject(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
	if a[0].null {
		return nil, errNull("doc_reject", "par_queue")
	}
	if a[1].null {
		return row(i32Text(0)), nil
	}
	// NULL message is logged as '' and NULL details write no log row, as
	// in 4.0.2, where NULL was spliced as an empty string.
	p := DocRejectParams{Queue: a[0].str, Subject: a[1].str, Message: a[2].str, Details: a[3].str}
	if len(a) == 5 {
		p.RefID = a[4].strp()
	}
	r, err := s.DocReject(ctx, db, p)
	if err != nil {
		return nil, err
	}
	return withEffects(row(i32Text(r.AffectedRows)), r.Effects), nil
}

func logError(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
	if a[0].null || a[3].null {
		return row(boolText(false)), nil
	}
	// NULL subject and message are stored as '', as in 4.0.2.
	p := LogErrorParams{Queue: a[0].str, Subject: a[1].str, Message: a[2].str, Details: a[3].str}
	if len(a) == 5 {
		p.RefID = a[4].strp()
	}
	r, err := s.LogError(ctx, db, p)
	if err != nil {
		return nil, err
	}
	return row(boolText(r.QueuedLogs)), nil
}

func queueSetting(fn func(context.Context, DB, string, int32) (QueueSettingResult, error), ctx context.Context, db DB, a []arg) (*Result, error) {
	if a[0].null || a[1].null {
		return row(i32Text(0), boolText(false)), nil
	}
	r, err := fn(ctx, db, a[0].str, a[1].i32())
	if err != nil {
		return nil, err
	}
	return row(i32Text(r.AffectedRows), boolText(r.WasReindexed)), nil
}

func queueDropLogs(s *Store, ctx context.Context, db DB, p QueueDropLogsParams, null bool) (*Result, error) {
	if null {
		return row(i32Text(0)), nil
	}
	r, err := s.QueueDropLogs(ctx, db, p)
	if err != nil {
		return nil, err
	}
	return row(i32Text(r.AffectedRows)), nil
}

func queueDropMetrics(s *Store, ctx context.Context, db DB, p QueueDropMetricsParams, null bool) (*Result, error) {
	if null {
		return row(i32Text(0)), nil
	}
	r, err := s.QueueDropMetrics(ctx, db, p)
	if err != nil {
		return nil, err
	}
	return row(i32Text(r.RemovedRows)), nil
}

func queueTruncate(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
	if a[0].null {
		return nil, errNull("queue_truncate", "par_queue")
	}
	p := QueueTruncateParams{Queue: a[0].str}
	if len(a) == 2 {
		p.Empty = a[1].bool // NULL is false
	}
	r, err := s.QueueTruncate(ctx, db, p)
	if err != nil {
		return nil, err
	}
	return withEffects(row(boolText(r.Success)), r.Effects), nil
}

func queueTruncateAll(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
	p := QueueTruncateAllParams{}
	if len(a) == 1 {
		p.WithEmptyArg, p.Empty = true, a[0].bool
	}
	r, err := s.QueueTruncateAll(ctx, db, p)
	if err != nil {
		return nil, err
	}
	return withEffects(row(boolText(r.Success)), r.Effects), nil
}

func trace(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
	p := TraceParams{Subject: a[0].str}
	if len(a) == 2 {
		p.Order = a[1].str
	}
	rs, err := s.traceRows(ctx, db, p)
	if err != nil {
		return nil, err
	}
	return rows(rs), nil
}

func queueStatus(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
	var p QueueStatusParams
	if len(a) == 1 {
		if a[0].null {
			return rows(nil), nil
		}
		p.Queue = &a[0].str
	}
	rs, err := s.queueStatusRows(ctx, db, p)
	if err != nil {
		return nil, err
	}
	return rows(rs), nil
}

func upgrade(s *Store, _ context.Context, _ DB, _ []arg) (*Result, error) {
	return row(boolText(s.Upgrade().Success)), nil
}

// pick5m is doc_pick's default lock duration.
var pick5m = "5m"

// overloadList holds the overloads of spec §2.1-2.3, 2.5 and 2.7; the
// metric_* and mnt_* ones are in invoke_mnt.go.
var overloadList = []overload{
	// Lifecycle.
	{"info", nil, []string{"version"}, func(s *Store, _ context.Context, _ DB, _ []arg) (*Result, error) {
		return row([]byte(s.Info().Version)), nil
	}},
	{"init", nil, []string{"was_initialized"}, func(s *Store, ctx context.Context, db DB, _ []arg) (*Result, error) {
		r, err := s.Init(ctx, db)
		if err != nil {
			return nil, err
		}
		return row(boolText(r.WasInitialized)), nil
	}},
	{"destroy_with_terrible_consequences", nil, []string{"was_destroyed"}, func(s *Store, ctx context.Context, db DB, _ []arg) (*Result, error) {
		r, err := s.Destroy(ctx, db)
		if err != nil {
			return nil, err
		}
		return withEffects(row(nil), r.Effects), nil // 4.0.2 returns NULL
	}},
	{"upgrade__310__320", nil, colsSuccess, upgrade},
	{"upgrade__320__330", nil, colsSuccess, upgrade},

	// Queues.
	{"queue_get_id", sig(vc), []string{"queue_id"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return nil, errNull("queue_get_id", "par_queue")
		}
		r, err := s.QueueGetID(ctx, db, QueueParams{Queue: a[0].str})
		if err != nil {
			return nil, err
		}
		return row(intText(r.QueueID)), nil
	}},
	{"queue_create", sig(vc), []string{"was_created", "queue_id"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return row(boolText(false), nil), nil
		}
		r, err := s.QueueCreate(ctx, db, QueueParams{Queue: a[0].str})
		if err != nil {
			return nil, err
		}
		return row(boolText(r.WasCreated), optInt32Text(r.QueueID)), nil
	}},
	{"queue_drop", sig(vc), []string{"was_dropped", "queue_id"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return row(boolText(false), nil), nil
		}
		r, err := s.QueueDrop(ctx, db, QueueParams{Queue: a[0].str})
		if err != nil {
			return nil, err
		}
		return withEffects(row(boolText(r.WasDropped), optInt32Text(r.QueueID)), r.Effects), nil
	}},
	{"queue_create_indexes", sig(vc, i4, i4), []string{"was_created"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null || a[1].null || a[2].null {
			return row(boolText(false)), nil
		}
		r, err := s.QueueCreateIndexes(ctx, db, QueueCreateIndexesParams{Queue: a[0].str, Version: a[1].i32(), MaxAttempts: a[2].i32()})
		if err != nil {
			return nil, err
		}
		return row(boolText(r.WasCreated)), nil
	}},
	{"queue_create_indexes", sig(vc), []string{"was_created"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return row(boolText(true)), nil
		}
		r, err := s.QueueCreateIndexesFromSettings(ctx, db, QueueParams{Queue: a[0].str})
		if err != nil {
			return nil, err
		}
		return row(boolText(r.WasCreated)), nil
	}},
	{"queue_drop_indexes", sig(vc), []string{"was_dropped"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return row(boolText(true)), nil
		}
		r, err := s.QueueDropIndexes(ctx, db, QueueParams{Queue: a[0].str})
		if err != nil {
			return nil, err
		}
		return row(boolText(r.WasDropped)), nil
	}},
	{"queue_set_max_attempts", sig(vc, i4), colsSetting, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return queueSetting(func(ctx context.Context, db DB, q string, n int32) (QueueSettingResult, error) {
			return s.QueueSetMaxAttempts(ctx, db, QueueSetMaxAttemptsParams{Queue: q, MaxAttempts: n})
		}, ctx, db, a)
	}},
	{"queue_set_current_version", sig(vc, i4), colsSetting, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return queueSetting(func(ctx context.Context, db DB, q string, n int32) (QueueSettingResult, error) {
			return s.QueueSetCurrentVersion(ctx, db, QueueSetCurrentVersionParams{Queue: q, Version: n})
		}, ctx, db, a)
	}},
	{"queue_drop_version", sig(vc, i4), []string{"was_dropped"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null || a[1].null {
			return row(boolText(false)), nil
		}
		r, err := s.QueueDropVersion(ctx, db, QueueDropVersionParams{Queue: a[0].str, Version: a[1].i32()})
		if err != nil {
			return nil, err
		}
		return row(boolText(r.WasDropped)), nil
	}},
	{"queue_set_logs_retention", sig(vc, vc), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null || a[1].null {
			return row(i32Text(0)), nil
		}
		r, err := s.QueueSetLogsRetention(ctx, db, QueueSetRetentionParams{Queue: a[0].str, Retention: a[1].str})
		if err != nil {
			return nil, err
		}
		return row(i32Text(r.AffectedRows)), nil
	}},
	{"queue_set_metrics_retention", sig(vc, vc), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null || a[1].null {
			return row(i32Text(0)), nil
		}
		r, err := s.QueueSetMetricsRetention(ctx, db, QueueSetRetentionParams{Queue: a[0].str, Retention: a[1].str})
		if err != nil {
			return nil, err
		}
		return row(i32Text(r.AffectedRows)), nil
	}},
	{"queue_drop_logs", sig(vc, vc), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return queueDropLogs(s, ctx, db, QueueDropLogsParams{Queue: a[0].str, Retention: a[1].str}, a[0].null || a[1].null)
	}},
	{"queue_drop_logs", sig(vc, tst), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return queueDropLogs(s, ctx, db, QueueDropLogsParams{Queue: a[0].str, Before: a[1].time}, a[0].null || a[1].null)
	}},
	{"queue_drop_logs", sig(vc), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return queueDropLogs(s, ctx, db, QueueDropLogsParams{Queue: a[0].str, FromSettings: true}, a[0].null)
	}},
	{"queue_drop_metrics", sig(vc, js), []string{"removed_rows"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return queueDropMetrics(s, ctx, db, QueueDropMetricsParams{Queue: a[0].str, Config: a[1].str}, a[0].null || a[1].null)
	}},
	{"queue_drop_metrics", sig(vc), []string{"removed_rows"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return queueDropMetrics(s, ctx, db, QueueDropMetricsParams{Queue: a[0].str, FromSettings: true}, a[0].null)
	}},
	{"queue_top", sig(vc, i4, i4, i4), colsDoc, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return nil, errNull("queue_top", "par_queue")
		}
		if a[1].null {
			return rows(nil), nil // version = NULL matches nothing
		}
		rs, err := s.queueTopRows(ctx, db, QueueTopParams{Queue: a[0].str, Version: a[1].i32(), Limit: a[2].i32p(), Offset: a[3].i32()})
		if err != nil {
			return nil, err
		}
		return rows(rs), nil
	}},
	{"queue_status", nil, colsStatus, queueStatus},
	{"queue_status", sig(vc), colsStatus, queueStatus},
	{"queue_truncate", sig(vc), colsSuccess, queueTruncate},
	{"queue_truncate", sig(vc, bl), colsSuccess, queueTruncate},
	{"queue_truncate_all", nil, colsSuccess, queueTruncateAll},
	{"queue_truncate_all", sig(bl), colsSuccess, queueTruncateAll},
	{"queue_enable_notify", sig(vc), colsSuccess, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return nil, errNull("queue_enable_notify", "par_queue")
		}
		r, err := s.QueueEnableNotify(ctx, db, QueueParams{Queue: a[0].str})
		if err != nil {
			return nil, err
		}
		return row(boolText(r.Success)), nil
	}},
	{"queue_disable_notify", sig(vc), colsSuccess, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return row(boolText(true)), nil
		}
		r, err := s.QueueDisableNotify(ctx, db, QueueParams{Queue: a[0].str})
		if err != nil {
			return nil, err
		}
		return row(boolText(r.Success)), nil
	}},

	// Documents.
	{"doc_push", sig(vc, vc, i4, i4, tst, js), colsQueuedDocs, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docPush(s, ctx, db, a[0], a[1], a[2], a[3], a[4].time, a[4].null, a[5])
	}},
	{"doc_push", sig(vc, vc), colsQueuedDocs, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docPush(s, ctx, db, a[0], a[1], arg{}, arg{}, Now(), false, arg{str: "{}"})
	}},
	{"doc_push", sig(vc, vc, js), colsQueuedDocs, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docPush(s, ctx, db, a[0], a[1], arg{}, arg{}, Now(), false, a[2])
	}},
	{"doc_push", sig(vc, vc, js, tst), colsQueuedDocs, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docPush(s, ctx, db, a[0], a[1], arg{}, arg{}, a[3].time, a[3].null, a[2])
	}},
	{"doc_push", sig(vc, i4, tst, vc), colsQueuedDocs, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null || a[1].null || a[2].null || a[3].null {
			return row(i32Text(0)), nil
		}
		r, err := s.DocPushMany(ctx, db, DocPushManyParams{Queue: a[0].str, Version: a[1].i32(), NextIteration: a[2].time, Data: a[3].str})
		if err != nil {
			return nil, err
		}
		return withEffects(row(i32Text(r.QueuedDocs)), r.Effects), nil
	}},
	{"doc_append", sig(vc, js, i4, i4), []string{"subject"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docAppend(s, ctx, db, a[0], a[1], a[2], a[3])
	}},
	{"doc_append", sig(vc, js), []string{"subject"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docAppend(s, ctx, db, a[0], a[1], arg{}, arg{})
	}},
	{"doc_upsert", sig(vc, vc, i4, i4, tst, js), []string{"queued_docs", "updated_docs"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		for _, x := range a {
			if x.null {
				return row(i32Text(0), i32Text(0)), nil
			}
		}
		r, err := s.DocUpsert(ctx, db, DocPushParams{
			Queue: a[0].str, Subject: a[1].str, Version: a[2].i32(), Priority: a[3].i32(),
			NextIteration: a[4].time, Payload: a[5].str,
		})
		if err != nil {
			return nil, err
		}
		return withEffects(row(i32Text(r.QueuedDocs), i32Text(r.UpdatedDocs)), r.Effects), nil
	}},
	{"doc_pick", sig(vc, i4, i4, vc), colsDoc, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docPick(s, ctx, db, a[0], a[1], a[2].i32p(), a[3].strp())
	}},
	{"doc_pick", sig(vc, vc), colsDoc, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docPick(s, ctx, db, a[0], arg{}, ptr(int32(1)), a[1].strp())
	}},
	{"doc_pick", sig(vc), colsDoc, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docPick(s, ctx, db, a[0], arg{}, ptr(int32(1)), &pick5m)
	}},
	{"doc_pick", sig(vc, i4), colsDoc, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docPick(s, ctx, db, a[0], arg{}, a[1].i32p(), &pick5m)
	}},
	{"doc_reschedule", sig(vc, vc, tst), colsAffected, docReschedule},
	{"doc_reschedule", sig(vc, vc, tst, js), colsAffected, docReschedule},
	{"doc_reject", sig(vc, vc, vc, js), colsAffected, docReject},
	{"doc_reject", sig(vc, vc, vc, js, vc), colsAffected, docReject},
	{"doc_complete", sig(vc, vc), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docResolve(ctx, db, s.DocComplete, a[0], a[1], nil)
	}},
	{"doc_complete", sig(vc, vc, js), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docResolve(ctx, db, s.DocComplete, a[0], a[1], &a[2])
	}},
	{"doc_kill", sig(vc, vc), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docResolve(ctx, db, s.DocKill, a[0], a[1], nil)
	}},
	{"doc_kill", sig(vc, vc, js), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return docResolve(ctx, db, s.DocKill, a[0], a[1], &a[2])
	}},
	{"doc_drop", sig(vc, vc), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return nil, errNull("doc_drop", "par_queue")
		}
		if a[1].null {
			return row(i32Text(0)), nil
		}
		r, err := s.DocDrop(ctx, db, DocDropParams{Queue: a[0].str, Subject: a[1].str})
		if err != nil {
			return nil, err
		}
		return withEffects(row(i32Text(r.AffectedRows)), r.Effects), nil
	}},

	// Logs and utilities.
	{"log_error", sig(vc, vc, vc, js), []string{"queued_logs"}, logError},
	{"log_error", sig(vc, vc, vc, js, vc), []string{"queued_logs"}, logError},
	{"trace", sig(vc), traceColumns, trace},
	{"trace", sig(vc, vc), traceColumns, trace},
	{"utils_ts_retain", sig(vc, vc, vc, tst, tst), []string{"removed_rows"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		for i, name := range []string{"tablename", "fieldname", "retainstr"} {
			if a[i].null {
				return nil, errNull("utils_ts_retain", name)
			}
		}
		r, err := s.UtilsTSRetain(ctx, db, UtilsTSRetainParams{Table: a[0].str, Field: a[1].str, Retain: a[2].str, Start: a[3].time, End: a[4].time})
		if err != nil {
			return nil, err
		}
		return row(intText(r.RemovedRows)), nil
	}},
}

// docAppend adapts doc_append: a NULL argument gives a NULL subject.
func docAppend(s *Store, ctx context.Context, db DB, q, payload, version, priority arg) (*Result, error) {
	if q.null || payload.null || version.null || priority.null {
		return row(nil), nil
	}
	r, err := s.DocAppend(ctx, db, DocAppendParams{Queue: q.str, Payload: payload.str, Version: version.i32(), Priority: priority.i32()})
	if err != nil {
		return nil, err
	}
	return withEffects(row(optStringText(r.Subject)), r.Effects), nil
}
