package backend

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// docColumns are the output columns of doc_pick and queue_top, in order.
var docColumns = []string{
	"subject", "payload", "version", "priority", "attempts", "iterations",
	"created_at", "last_iteration", "next_iteration", "lock_upgrade",
}

// docSelect selects docColumns from a docs row (alias d).
const docSelect = "d.subject, d.payload, d.version, d.priority, d.attempts, d.iterations, d.created_at, d.last_iteration, d.next_iteration, d.lock_upgrade"

// Doc is a document as doc_pick and queue_top return it.
type Doc struct {
	Subject string
	// Payload is the jsonb value as Postgres prints it ("" for NULL).
	Payload    string
	Version    int32
	Priority   int32
	Attempts   int32
	Iterations int64
	// CreatedAt, LastIteration, NextIteration and LockUpgrade are the
	// timestamptz values as Postgres printed them.
	CreatedAt     Timestamp
	LastIteration Timestamp
	NextIteration Timestamp
	LockUpgrade   Timestamp
}

// docsFromRows decodes text rows of docColumns. NULL integers (only
// possible when a client wrote them directly) read as 0.
func docsFromRows(rows [][][]byte) []Doc {
	docs := make([]Doc, len(rows))
	for i, r := range rows {
		docs[i] = Doc{
			Subject:       string(r[0]),
			Payload:       string(r[1]),
			Version:       textInt32(r[2]),
			Priority:      textInt32(r[3]),
			Attempts:      textInt32(r[4]),
			Iterations:    textInt64(r[5]),
			CreatedAt:     timestamp(r[6]),
			LastIteration: timestamp(r[7]),
			NextIteration: timestamp(r[8]),
			LockUpgrade:   timestamp(r[9]),
		}
	}
	return docs
}

// pgCode returns the SQLSTATE of a Postgres error in err's chain, or "".
func pgCode(err error) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code
	}
	return ""
}

// DocPushParams are the arguments of the six-argument fetchq.doc_push(q, s,
// version, priority, next_iteration, payload). The shorter forms are this
// one with Version 0, Priority 0, NextIteration Now() and Payload "{}" for
// the arguments they lack.
type DocPushParams struct {
	Queue   string
	Subject string
	// Version is the payload schema version doc_pick filters on.
	Version int32
	// Priority orders picks: higher first.
	Priority int32
	// NextIteration is when the document becomes due: at or before now()
	// it is pending (status 1), later it is planned (status 0). NULL fails
	// the push.
	NextIteration Time
	// Payload is the jsonb argument's text; it is validated (22P02) and
	// de-doubled (see DedoubleQuotes).
	Payload string
}

// PushResult is the result of fetchq.doc_push.
type PushResult struct {
	// QueuedDocs is the number of documents inserted: 0 on a duplicate
	// subject or any failure.
	QueuedDocs int32
	// Effects are ent, cnt, v<version> and pnd or pln, each +QueuedDocs.
	Effects Effects
}

// DocPush is fetchq.doc_push(q, s, version, priority, next_iteration,
// payload) and its short forms: it inserts one document (attempts 0,
// iterations 0, created_at now()). A subject longer than 50 characters
// raises P0001 'The subject exceeds 50 characters limit'; a duplicate
// subject, a nonexistent queue, a NULL argument or any other failure gives
// 0. Text that is not JSON (22P02) or bad time text fails like the
// extension's argument coercion.
func (s *Store) DocPush(ctx context.Context, db DB, p DocPushParams) (PushResult, error) {
	payload, err := jsonArg(p.Payload)
	if err != nil {
		return PushResult{}, err
	}
	q, ok := parseQueue(p.Queue)
	if !ok || p.NextIteration.IsNull() {
		return PushResult{}, nil
	}
	var row [][]byte
	err = contain(ctx, db, func(db DB) error {
		var err error
		row, err = insertDoc(ctx, db, q, p, payload)
		return err
	})
	if err != nil {
		switch {
		case pgCode(err) == codeStringTooLong:
			return PushResult{}, errSubjectTooLong()
		case isTimeArgError(err, p.NextIteration):
			return PushResult{}, err
		case s.swallow(ctx, "doc_push", err):
			return PushResult{}, nil
		}
		return PushResult{}, err
	}
	if row == nil {
		return PushResult{}, nil // duplicate subject
	}
	return PushResult{QueuedDocs: 1, Effects: insertEffects(q.name, p.Version, int(textInt32(row[0])), 1)}, nil
}

// insertDoc inserts one document unless its subject exists and returns
// (status) of the inserted row, or nil.
func insertDoc(ctx context.Context, db DB, q queue, p DocPushParams, payload string) ([][]byte, error) {
	var a args
	sql := "INSERT INTO " + q.docs() + " (subject, version, priority, status, next_iteration, payload, created_at) SELECT " +
		a.add(p.Subject) + "::text, " + a.add(p.Version) + "::int, " + a.add(p.Priority) +
		"::int, CASE WHEN t.ts <= now() THEN 1 ELSE 0 END, t.ts, " + a.add(payload) + "::jsonb, now() FROM (SELECT " +
		p.NextIteration.sql(&a) + " AS ts) t ON CONFLICT DO NOTHING RETURNING status"
	return queryRow(ctx, db, sql, a)
}

// DocPushManyParams are the arguments of the push-many form
// fetchq.doc_push(q, version, next_iteration, data).
type DocPushManyParams struct {
	Queue string
	// Version of every document.
	Version int32
	// NextIteration of every document; it sets one status for all.
	NextIteration Time
	// Data is the VALUES list, e.g. ('a1', 0, '{"a":1}', {DATA}), ('a2',
	// 5, '{}', {DATA}): see ParsePushData.
	Data string
}

// DocPushMany is the push-many fetchq.doc_push(q, version, next_iteration,
// data): it inserts every (subject, priority, payload) tuple of Data with
// the given version and next_iteration, skipping existing subjects, and
// returns how many it inserted. Catch-all: malformed Data (logged at Debug
// with its 22P02 error), a nonexistent queue, a NULL argument or any failure
// (including a subject over 50 characters) gives 0 and inserts nothing.
//
// 4.0.2 executed Data as SQL after replacing each {DATA}; here it is parsed
// and its values are bound as parameters, so it cannot run SQL.
func (s *Store) DocPushMany(ctx context.Context, db DB, p DocPushManyParams) (PushResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok || p.NextIteration.IsNull() {
		return PushResult{}, nil
	}
	docs, err := ParsePushData(p.Data)
	if err == nil {
		err = checkPushData(docs)
	}
	if err != nil {
		s.logger.DebugContext(ctx, "fetchq.doc_push: malformed push-many data; returning 0", "error", err)
		return PushResult{}, nil
	}
	encoded, err := encodePushData(docs)
	if err != nil {
		s.logger.DebugContext(ctx, "fetchq.doc_push: malformed push-many data; returning 0", "error", err)
		return PushResult{}, nil
	}
	var a args
	sql := "WITH ins AS (INSERT INTO " + q.docs() +
		" (subject, priority, payload, status, version, next_iteration, lock_upgrade, created_at)" +
		" SELECT x.s, x.p, x.d::jsonb, CASE WHEN t.ts <= now() THEN 1 ELSE 0 END, " + a.add(p.Version) + "::int, t.ts, NULL, now()" +
		" FROM ROWS FROM (jsonb_to_recordset(" + a.add(encoded) + "::jsonb) AS (s text, p int, d text)) WITH ORDINALITY AS x(s, p, d, n)," +
		" (SELECT " + p.NextIteration.sql(&a) + " AS ts) t ORDER BY x.n ON CONFLICT DO NOTHING RETURNING status)" +
		" SELECT count(*), min(status) FROM ins"
	var row [][]byte
	err = contain(ctx, db, func(db DB) error {
		var err error
		row, err = queryRow(ctx, db, sql, a)
		return err
	})
	if err != nil {
		if isTimeArgError(err, p.NextIteration) || !s.swallow(ctx, "doc_push", err) {
			return PushResult{}, err
		}
		return PushResult{}, nil
	}
	n := textInt64(row[0])
	if n == 0 {
		return PushResult{}, nil
	}
	return PushResult{QueuedDocs: int32(n), Effects: insertEffects(q.name, p.Version, int(textInt32(row[1])), n)}, nil
}

// DocAppendParams are the arguments of fetchq.doc_append(q, payload,
// version, priority); the two-argument form has Version and Priority 0.
type DocAppendParams struct {
	Queue    string
	Payload  string // jsonb text, validated and de-doubled
	Version  int32
	Priority int32
}

// AppendResult is the result of fetchq.doc_append.
type AppendResult struct {
	// Subject is the new document's subject (a random UUID v4), nil on
	// failure.
	Subject *string
	// Effects are ent, cnt, v<version> and pnd, each +1.
	Effects Effects
}

// DocAppend is fetchq.doc_append: it inserts a pending document (status 1,
// next_iteration now()) under a new random UUID subject (gen_random_uuid())
// and returns the subject. Catch-all: a nonexistent queue, a NULL argument
// or any failure gives a NULL subject.
func (s *Store) DocAppend(ctx context.Context, db DB, p DocAppendParams) (AppendResult, error) {
	payload, err := jsonArg(p.Payload)
	if err != nil {
		return AppendResult{}, err
	}
	q, ok := parseQueue(p.Queue)
	if !ok {
		return AppendResult{}, nil
	}
	var row [][]byte
	err = contain(ctx, db, func(db DB) error {
		var err error
		row, err = queryRow(ctx, db, "INSERT INTO "+q.docs()+
			" (subject, version, priority, status, next_iteration, payload, created_at)"+
			" VALUES (gen_random_uuid()::text, $1::int, $2::int, 1, now(), $3::jsonb, now()) RETURNING subject",
			args{p.Version, p.Priority, payload})
		return err
	})
	if err != nil {
		if s.swallow(ctx, "doc_append", err) {
			return AppendResult{}, nil
		}
		return AppendResult{}, err
	}
	return AppendResult{Subject: ptr(string(row[0])), Effects: insertEffects(q.name, p.Version, 1, 1)}, nil
}

// UpsertResult is the result of fetchq.doc_upsert.
type UpsertResult struct {
	QueuedDocs  int32
	UpdatedDocs int32
	// Effects are those of the push when it inserted; an update has none.
	Effects Effects
}

// DocUpsert is fetchq.doc_upsert(q, s, version, priority, next_iteration,
// payload): it pushes the document and, when the subject exists, instead
// updates its priority, payload and next_iteration unless it is active
// (status 2) or upgrade-locked. Version and status are not changed, so a
// planned document moved into the past stays planned until maintenance
// promotes it, and a completed or killed one keeps its status. Results:
// (1, 0) inserted, (0, n) updated. Catch-all, including the subject-length
// error doc_push raises: failures give (0, 0).
func (s *Store) DocUpsert(ctx context.Context, db DB, p DocPushParams) (UpsertResult, error) {
	payload, err := jsonArg(p.Payload)
	if err != nil {
		return UpsertResult{}, err
	}
	q, ok := parseQueue(p.Queue)
	if !ok || p.NextIteration.IsNull() {
		return UpsertResult{}, nil
	}
	var res UpsertResult
	err = db.Atomic(ctx, func(db DB) error {
		row, err := insertDoc(ctx, db, q, p, payload)
		if err != nil {
			return err
		}
		if row != nil {
			res = UpsertResult{QueuedDocs: 1, Effects: insertEffects(q.name, p.Version, int(textInt32(row[0])), 1)}
			return nil
		}
		var a args
		sql := "UPDATE " + q.docs() + " SET priority = " + a.add(p.Priority) + "::int, payload = " + a.add(payload) +
			"::jsonb, next_iteration = " + p.NextIteration.sql(&a) + " WHERE subject = " + a.add(p.Subject) +
			"::text AND lock_upgrade IS NULL AND status <> 2"
		tag, err := exec(ctx, db, sql, a)
		res = UpsertResult{UpdatedDocs: int32(tag.RowsAffected())}
		return err
	})
	if err != nil {
		if isTimeArgError(err, p.NextIteration) || !s.swallow(ctx, "doc_upsert", err) {
			return UpsertResult{}, err
		}
		return UpsertResult{}, nil
	}
	return res, nil
}

// DocPickParams are the arguments of fetchq.doc_pick(q, version, limit,
// duration). The short forms: doc_pick(q) is version 0, limit 1, '5m';
// doc_pick(q, duration) limit 1; doc_pick(q, limit) duration '5m'.
type DocPickParams struct {
	Queue   string
	Version int32
	// Limit is the most documents to pick; nil (SQL NULL) means no limit.
	// 0 and negative limits pick nothing.
	Limit *int32
	// Duration is the lock, an interval text such as '5m'; the picked
	// documents' next_iteration becomes now() + Duration. nil (SQL NULL)
	// leaves next_iteration NULL (such a document never becomes an orphan).
	Duration *string
}

// PickResult is the result of fetchq.doc_pick.
type PickResult struct {
	// Docs are the picked documents with their values after the pick
	// (attempts incremented, next_iteration the lock expiry), in pick order:
	// priority DESC, then the old next_iteration and attempts ASC, then
	// subject.
	Docs []Doc
	// Effects are pkd +n, act +n, pnd -n.
	Effects Effects
}

// DocPick is fetchq.doc_pick: in one statement it locks up to Limit
// pending documents of the version that are due (next_iteration <= now(),
// inclusive, not upgrade-locked), highest priority first, then oldest
// next_iteration, then fewest attempts, skipping rows other transactions
// hold (FOR UPDATE SKIP LOCKED, so concurrent pickers never get the same
// document), and marks them active: status 2, next_iteration now() +
// Duration, attempts + 1. Catch-all with an empty result: a nonexistent
// queue, an invalid duration or any failure returns no documents and no
// error.
func (s *Store) DocPick(ctx context.Context, db DB, p DocPickParams) (PickResult, error) {
	rows, effects, err := s.pickRows(ctx, db, p)
	if err != nil {
		return PickResult{}, err
	}
	return PickResult{Docs: docsFromRows(rows), Effects: effects}, nil
}

func (s *Store) pickRows(ctx context.Context, db DB, p DocPickParams) ([][][]byte, Effects, error) {
	q, ok := parseQueue(p.Queue)
	if !ok || (p.Limit != nil && *p.Limit <= 0) {
		return nil, nil, nil
	}
	return s.pick(ctx, db, q, pickSQL(q, "$1::int", "$2::int", "", "$3"), args{p.Version, nullable(p.Limit), nullable(p.Duration)})
}

// pickBatchRows is pickRows for a Batcher's batch of picks, whose limit
// (set) is at most max, with a statement Postgres plans once per pool
// connection (see pickBatchSQL).
func (s *Store) pickBatchRows(ctx context.Context, db DB, p DocPickParams, max int32) ([][][]byte, Effects, error) {
	q, ok := parseQueue(p.Queue)
	if !ok || p.Limit == nil || *p.Limit <= 0 {
		return nil, nil, nil
	}
	return s.pick(ctx, db, q, pickBatchSQL(q, p.Version, max), args{*p.Limit, nullable(p.Duration)})
}

// pickBatchSQL is the pick statement of the batches of picks of version
// of q, which take at most max documents ($1 of them, for $2).
//
// Prepared once per pool connection, it is also planned once there, which
// saves a plan per batch (a tenth of a millisecond of Postgres' CPU here,
// with its table and indexes opened each time). Postgres keeps a generic
// plan only when it costs no more than the custom ones, and a good one
// only if:
//   - the predicate names the version, so that the version's partial pick
//     index (whose DDL has it rendered too) applies: version = $n cannot
//     use it. The version is an int32 rendered by strconv, never client
//     text;
//   - the candidates' LIMIT is a constant (max, the Batcher's bound): with
//     LIMIT $n the planner guesses a tenth of the table, and plans a sort
//     of all of it. The batch then takes its own number of candidates with
//     LIMIT (SELECT $1), which the planner cannot see in a custom plan
//     either, so both cost the same and after five custom plans the
//     generic one is kept. Only the candidates taken are locked: the
//     materialized CTE is read as far as its reader asks.
//
// The texts are kept (up to maxPickTexts of them): a lane builds one for
// every round.
func pickBatchSQL(q queue, version, max int32) string {
	key := pickTextKey{q.name, version, max}
	if sql, ok := pickTexts.Load(key); ok {
		return sql.(string)
	}
	sql := pickSQL(q, strconv.FormatInt(int64(version), 10), strconv.FormatInt(int64(max), 10), "$1::int", "$2")
	if pickTextsLen.Add(1) <= maxPickTexts {
		pickTexts.Store(key, sql)
	}
	return sql
}

// pickTexts memoizes pickBatchSQL, bounded by maxPickTexts (versions are
// the clients' choice).
var (
	pickTexts    sync.Map // pickTextKey -> string
	pickTextsLen atomic.Int64
)

const maxPickTexts = 1024

type pickTextKey struct {
	queue        string
	version, max int32
}

// pickSQL is a pick statement of q: c, the documents to pick (of the
// version, at most limit of them), locked, with the values that order
// them; t, when take is set, the first take of them; u, the update, the
// lock lasting duration; the final SELECT returns them in pick order. The
// arguments are SQL text: parameters, or integers rendered by strconv.
func pickSQL(q queue, version, limit, take, duration string) string {
	from := "c"
	sql := "WITH c AS MATERIALIZED (SELECT subject, next_iteration AS n0, attempts AS a0 FROM " + q.docs() +
		" WHERE lock_upgrade IS NULL AND status = 1 AND version = " + version + " AND next_iteration <= now()" +
		" ORDER BY priority DESC, next_iteration ASC, attempts ASC LIMIT " + limit + " FOR UPDATE SKIP LOCKED),"
	if take != "" {
		from = "t"
		sql += " t AS (SELECT * FROM c LIMIT (SELECT " + take + ")),"
	}
	return sql + " u AS (UPDATE " + q.docs() + " d SET status = 2, next_iteration = now() + " + duration + "::interval, attempts = d.attempts + 1" +
		" FROM " + from + " WHERE d.subject = " + from + ".subject RETURNING " + docSelect + ", " + from + ".n0, " + from + ".a0)" +
		" SELECT subject, payload, version, priority, attempts, iterations, created_at, last_iteration, next_iteration, lock_upgrade" +
		" FROM u ORDER BY priority DESC, n0 ASC, a0 ASC, subject ASC"
}

// pick runs a pick statement of q and returns its rows and effects.
func (s *Store) pick(ctx context.Context, db DB, q queue, sql string, a args) ([][][]byte, Effects, error) {
	var rows [][][]byte
	err := contain(ctx, db, func(db DB) error {
		var err error
		rows, _, err = queryRows(ctx, db, sql, a)
		return err
	})
	if err != nil {
		if s.swallow(ctx, "doc_pick", err) {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	n := int64(len(rows))
	if n == 0 {
		return rows, nil, nil
	}
	e := make(Effects, 0, 3)
	e = e.add(q.name, MetricPkd, n)
	e = e.add(q.name, MetricAct, n)
	e = e.add(q.name, MetricPnd, -n)
	return rows, e, nil
}

// DocRescheduleParams are the arguments of fetchq.doc_reschedule(q, s,
// next_iteration[, payload]).
type DocRescheduleParams struct {
	Queue   string
	Subject string
	// NextIteration: at or before now() the document becomes pending
	// (pickable in the same transaction), later planned. NULL fails with
	// 22004.
	NextIteration Time
	// Payload replaces the payload when not nil (the four-argument form);
	// validated and de-doubled.
	Payload *string
}

// DocResult is the result of doc_reschedule, doc_reject and doc_drop.
type DocResult struct {
	// AffectedRows is 1 when the document was active and was resolved,
	// else 0.
	AffectedRows int32
	// Effects are the function's counter changes (spec §2.8).
	Effects Effects
}

// DocReschedule is fetchq.doc_reschedule: for an active document (status
// 2) it sets status 1 or 0 by NextIteration, next_iteration, attempts 0,
// iterations + 1, last_iteration now() (and the payload). No handler:
// errors propagate, a nonexistent queue fails with 42P01.
func (s *Store) DocReschedule(ctx context.Context, db DB, p DocRescheduleParams) (DocResult, error) {
	var payload string
	if p.Payload != nil {
		var err error
		if payload, err = jsonArg(*p.Payload); err != nil {
			return DocResult{}, err
		}
	}
	q, ok := parseQueue(p.Queue)
	if !ok {
		return DocResult{}, errNoQueue(q.name, "__docs")
	}
	if p.NextIteration.IsNull() {
		return DocResult{}, errNull("doc_reschedule", "par_nextiteration")
	}
	var a args
	sql := "UPDATE " + q.docs() + " d SET status = CASE WHEN t.ts <= now() THEN 1 ELSE 0 END, next_iteration = t.ts," +
		" attempts = 0, iterations = d.iterations + 1, last_iteration = now()"
	if p.Payload != nil {
		sql += ", payload = " + a.add(payload) + "::jsonb"
	}
	sql += " FROM (SELECT " + p.NextIteration.sql(&a) + " AS ts) t WHERE d.subject = " + a.add(p.Subject) +
		"::text AND d.status = 2 RETURNING d.status"
	row, err := queryRow(ctx, db, sql, a)
	if err != nil || row == nil {
		return DocResult{}, err
	}
	e := make(Effects, 0, 4)
	e = e.add(q.name, MetricPrc, 1)
	e = e.add(q.name, MetricRes, 1)
	e = e.add(q.name, MetricAct, -1)
	e = e.add(q.name, pendingMetric(int(textInt32(row[0]))), 1)
	return DocResult{AffectedRows: 1, Effects: e}, nil
}

// DocRejectParams are the arguments of fetchq.doc_reject(q, s, message,
// details[, ref_id]).
type DocRejectParams struct {
	Queue   string
	Subject string
	// Message is the log row's message (varchar(255)).
	Message string
	// Details is the log row's jsonb details, validated and de-doubled. ""
	// (SQL NULL) writes no log row, as in 4.0.2, where the log insert then
	// failed silently.
	Details string
	// RefID is the log row's ref_id; nil (the four-argument form) is NULL.
	RefID *string
}

// DocReject is fetchq.doc_reject: for an active document it sets status -1
// when attempts >= the queue's max_attempts, else 1, keeps attempts and
// next_iteration (so the document is pickable again only when its old lock
// expires), iterations + 1, last_iteration now(), and appends a row to the
// queue's logs table. As in 4.0.2 the reject succeeds without a log row
// when the log cannot be written (NULL details, a message over 255
// characters). One statement; no handler: errors propagate, a nonexistent
// queue fails with 42P01.
func (s *Store) DocReject(ctx context.Context, db DB, p DocRejectParams) (DocResult, error) {
	var details any
	if p.Details != "" {
		d, err := jsonArg(p.Details)
		if err != nil {
			return DocResult{}, err
		}
		details = d
	}
	q, ok := parseQueue(p.Queue)
	if !ok {
		return DocResult{}, errNoQueue(q.name, "__docs")
	}
	// A registry row without max_attempts (or none at all) uses the column
	// default, 5; 4.0.2 failed with a syntax error.
	sql := "WITH u AS (UPDATE " + q.docs() + " d SET" +
		" status = CASE WHEN d.attempts >= COALESCE((SELECT r.max_attempts FROM fetchq.queues r WHERE r.name = $1::text ORDER BY r.id LIMIT 1), 5) THEN -1 ELSE 1 END," +
		" lock_upgrade = CASE WHEN d.lock_upgrade IS NULL THEN NULL ELSE now() END," +
		" iterations = d.iterations + 1, last_iteration = now()" +
		" WHERE d.subject = $2::text AND d.status = 2 RETURNING d.subject, d.status)"
	a := args{q.name, p.Subject}
	// The log row is skipped when it could not be stored (4.0.2's log_error
	// failed silently then). Decided here: Postgres folds constant casts
	// while planning, so a SQL-side condition could not keep a too long
	// message from failing the whole statement.
	if details != nil && fitsVarchar(p.Message, 255) {
		sql += ", l AS (INSERT INTO " + q.logs() + " (created_at, subject, message, details, ref_id)" +
			" SELECT now(), u.subject, $3::text, $4::jsonb, $5::text FROM u)"
		a = append(a, p.Message, details, nullable(p.RefID))
	}
	sql += " SELECT status FROM u"
	row, err := queryRow(ctx, db, sql, a)
	if err != nil || row == nil {
		return DocResult{}, err
	}
	e := make(Effects, 0, 5)
	e = e.add(q.name, MetricPrc, 1)
	e = e.add(q.name, MetricErr, 1)
	e = e.add(q.name, MetricRej, 1)
	e = e.add(q.name, MetricAct, -1)
	if textInt32(row[0]) == -1 {
		e = e.add(q.name, MetricKll, 1)
	} else {
		e = e.add(q.name, MetricPnd, 1)
	}
	return DocResult{AffectedRows: 1, Effects: e}, nil
}

// DocCompleteParams are the arguments of fetchq.doc_complete(q, s[,
// payload]) and fetchq.doc_kill(q, s[, payload]).
type DocCompleteParams struct {
	Queue   string
	Subject string
	// Payload replaces the payload when not nil (the three-argument form);
	// validated and de-doubled.
	Payload *string
}

// DocCompleteResult is the result of doc_complete and doc_kill.
type DocCompleteResult struct {
	// AffectedRows is 1 when the document was active, 0 when not, and nil
	// (SQL NULL) when the function failed, e.g. for a nonexistent queue.
	AffectedRows *int32
	// Effects are prc +1, cpl|kll +1, act -1.
	Effects Effects
}

// DocComplete is fetchq.doc_complete: for an active document it sets status
// 3, attempts 0, iterations + 1, last_iteration now(), next_iteration
// '2970-01-01 00:00:00+00' (and the payload). Catch-all: failures give a
// NULL affected_rows.
func (s *Store) DocComplete(ctx context.Context, db DB, p DocCompleteParams) (DocCompleteResult, error) {
	return s.resolve(ctx, db, "doc_complete", p, "status = 3, attempts = 0, iterations = d.iterations + 1, last_iteration = now(), next_iteration = '2970-01-01 00:00:00+00'", MetricCpl)
}

// DocKill is fetchq.doc_kill: for an active document it sets status -1,
// attempts 0, iterations + 1, last_iteration now() (and the payload),
// keeping next_iteration. No log row is written. Catch-all: failures give a
// NULL affected_rows.
func (s *Store) DocKill(ctx context.Context, db DB, p DocCompleteParams) (DocCompleteResult, error) {
	return s.resolve(ctx, db, "doc_kill", p, "status = -1, attempts = 0, iterations = d.iterations + 1, last_iteration = now()", MetricKll)
}

// resolve runs doc_complete or doc_kill: set is the constant SET list.
func (s *Store) resolve(ctx context.Context, db DB, fn string, p DocCompleteParams, set, metric string) (DocCompleteResult, error) {
	var a args
	if p.Payload != nil {
		payload, err := jsonArg(*p.Payload)
		if err != nil {
			return DocCompleteResult{}, err
		}
		set += ", payload = " + a.add(payload) + "::jsonb"
	}
	q, ok := parseQueue(p.Queue)
	if !ok {
		return DocCompleteResult{}, nil
	}
	sql := "UPDATE " + q.docs() + " d SET " + set + " WHERE d.subject = " + a.add(p.Subject) + "::text AND d.status = 2"
	var n int64
	err := contain(ctx, db, func(db DB) error {
		tag, err := exec(ctx, db, sql, a)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		if s.swallow(ctx, fn, err) {
			return DocCompleteResult{}, nil
		}
		return DocCompleteResult{}, err
	}
	if n == 0 {
		return DocCompleteResult{AffectedRows: ptr(int32(0))}, nil
	}
	e := make(Effects, 0, 3)
	e = e.add(q.name, MetricPrc, n)
	e = e.add(q.name, metric, n)
	e = e.add(q.name, MetricAct, -n)
	return DocCompleteResult{AffectedRows: ptr(int32(n)), Effects: e}, nil
}

// DocDropParams are the arguments of fetchq.doc_drop(q, s).
type DocDropParams struct {
	Queue   string
	Subject string
}

// DocDrop is fetchq.doc_drop: it deletes the document if it is active (only
// active documents can be dropped). No handler: errors propagate, a
// nonexistent queue fails with 42P01.
func (s *Store) DocDrop(ctx context.Context, db DB, p DocDropParams) (DocResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return DocResult{}, errNoQueue(q.name, "__docs")
	}
	row, err := queryRow(ctx, db, "DELETE FROM "+q.docs()+" WHERE subject = $1::text AND status = 2 RETURNING version", args{p.Subject})
	if err != nil || row == nil {
		return DocResult{}, err
	}
	e := make(Effects, 0, 5)
	e = e.add(q.name, MetricPrc, 1)
	e = e.add(q.name, MetricDrp, 1)
	e = e.add(q.name, MetricAct, -1)
	e = e.add(q.name, MetricCnt, -1)
	if row[0] != nil {
		e = e.add(q.name, VersionMetric(textInt32(row[0])), -1)
	}
	return DocResult{AffectedRows: 1, Effects: e}, nil
}

// fitsVarchar reports whether Postgres accepts s in a varchar(n) column:
// at most n characters, or longer with only spaces beyond the n-th (which
// are cut off).
func fitsVarchar(s string, n int) bool {
	return utf8.RuneCountInString(strings.TrimRight(s, " ")) <= n
}
