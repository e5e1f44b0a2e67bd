package backend

import (
	"context"
	"errors"
	"strconv"
	"strings"
)

// QueueParams names a queue. Names are folded to lower case (see
// [NormalizeQueueName]).
type QueueParams struct {
	Queue string
}

// registry reads the queue's first registry row (lowest id): its id,
// current_version and max_attempts, or ok false when there is none.
func registry(ctx context.Context, db DB, q queue, forUpdate bool) (id, version, maxAttempts int32, ok bool, err error) {
	sql := "SELECT id, current_version, max_attempts FROM fetchq.queues WHERE name = $1::text ORDER BY id LIMIT 1"
	if forUpdate {
		sql += " FOR UPDATE"
	}
	row, err := queryRow(ctx, db, sql, args{q.name})
	if err != nil || row == nil {
		return 0, 0, 0, false, err
	}
	// current_version and max_attempts have defaults but are nullable;
	// NULL reads as the default.
	version, maxAttempts = 0, 5
	if row[1] != nil {
		version = textInt32(row[1])
	}
	if row[2] != nil {
		maxAttempts = textInt32(row[2])
	}
	return textInt32(row[0]), version, maxAttempts, true, nil
}

// tableExists reports whether the queue's docs table exists.
func tableExists(ctx context.Context, db DB, q queue) (bool, error) {
	row, err := queryRow(ctx, db, "SELECT to_regclass($1::text) IS NOT NULL", args{q.docs()})
	if err != nil {
		return false, err
	}
	return textBool(row[0]), nil
}

// QueueGetIDResult is the result of fetchq.queue_get_id(q).
type QueueGetIDResult struct {
	QueueID int64
}

// QueueGetID is fetchq.queue_get_id(q): the id of the queue's registry row,
// inserting the row (created_at now(), other columns default) when there is
// none. Unlike 4.0.2, which registers any string of up to 40 characters,
// an invalid name fails with 42602 ([ErrInvalidQueueName]) and NULL with
// 22004. Errors propagate.
func (s *Store) QueueGetID(ctx context.Context, db DB, p QueueParams) (QueueGetIDResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return QueueGetIDResult{}, &Error{
			Code:    codeInvalidName,
			Message: `invalid queue name "` + p.Queue + `"`,
			Hint:    "A queue name has 1 to 40 letters, digits or underscores and does not start with a digit.",
			kind:    ErrInvalidQueueName,
		}
	}
	var id int64
	err := db.Atomic(ctx, func(db DB) error {
		if err := advisoryLock(ctx, db, "queue:"+q.name); err != nil {
			return err
		}
		qid, _, _, found, err := registry(ctx, db, q, false)
		if err != nil {
			return err
		}
		if found {
			id = int64(qid)
			return nil
		}
		row, err := queryRow(ctx, db, "INSERT INTO fetchq.queues (name, created_at) VALUES ($1::text, now()) RETURNING id", args{q.name})
		if err != nil {
			return err
		}
		id = textInt64(row[0])
		return nil
	})
	if err != nil {
		return QueueGetIDResult{}, err
	}
	return QueueGetIDResult{QueueID: id}, nil
}

// QueueCreateResult is the result of fetchq.queue_create(q).
type QueueCreateResult struct {
	WasCreated bool
	// QueueID is the registry id: of the new queue, or of the existing
	// queue when WasCreated is false because it already exists; nil when
	// the name is invalid or the creation failed.
	QueueID *int32
}

// errQueueExists stops queue_create's transaction without an error.
var errQueueExists = errors.New("queue exists")

// QueueCreate is fetchq.queue_create(q): it registers the queue (reusing an
// existing registry row), creates its three tables and five indexes, seeds
// its mnt, sts, cmp and drp jobs and notifies fetchq_queue_create with the
// name, all in one transaction (serialised per name by an advisory lock).
// Notify triggers are not installed (see QueueEnableNotify).
//
// Results (spec §2.2): a new queue gives (true, id); an existing one
// (false, its id) with nothing changed; an invalid or too long name
// (false, NULL). A failure rolls everything back and gives (false, NULL),
// or (false, id) when the registry row existed before: never the id of a
// rolled-back row. Tables left without a registry row are not adopted:
// (false, NULL).
func (s *Store) QueueCreate(ctx context.Context, db DB, p QueueParams) (QueueCreateResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return QueueCreateResult{}, nil
	}
	var (
		before  *int32 // registry id that existed before the call
		created int32
	)
	err := db.Atomic(ctx, func(db DB) error {
		if err := advisoryLock(ctx, db, "queue:"+q.name); err != nil {
			return err
		}
		id, version, maxAttempts, found, err := registry(ctx, db, q, false)
		if err != nil {
			return err
		}
		if found {
			before = ptr(id)
		}
		exists, err := tableExists(ctx, db, q)
		if err != nil {
			return err
		}
		if exists {
			return errQueueExists
		}
		if !found {
			row, err := queryRow(ctx, db, "INSERT INTO fetchq.queues (name, created_at) VALUES ($1::text, now()) RETURNING id, current_version, max_attempts", args{q.name})
			if err != nil {
				return err
			}
			id, version, maxAttempts = textInt32(row[0]), textInt32(row[1]), textInt32(row[2])
		}
		for _, stmt := range queueTableStatements(q) {
			if _, err := exec(ctx, db, stmt, nil); err != nil {
				return err
			}
		}
		if err := createIndexes(ctx, db, q, version, maxAttempts); err != nil {
			return err
		}
		// WHERE NOT EXISTS keeps serial ids dense, like a first insert.
		if _, err := exec(ctx, db, `INSERT INTO fetchq.jobs (task, queue, next_iteration, last_iteration, attempts, iterations, settings, payload)
SELECT j.task, $1::text, now(), NULL, 0, 0, j.settings::jsonb, '{}'
FROM (VALUES (1, 'mnt', '{"delay":"100ms", "duration":"1m", "limit":500}'),
             (2, 'sts', '{"delay":"5m", "duration":"5m"}'),
             (3, 'cmp', '{"delay":"10m", "duration":"5m"}'),
             (4, 'drp', '{"delay":"10m", "duration":"5m"}')) AS j(n, task, settings)
WHERE NOT EXISTS (SELECT 1 FROM fetchq.jobs x WHERE x.task = j.task AND x.queue = $1::text)
ORDER BY j.n
ON CONFLICT DO NOTHING`, args{q.name}); err != nil {
			return err
		}
		if _, err := exec(ctx, db, "SELECT pg_notify('fetchq_queue_create', $1::text)", args{q.name}); err != nil {
			return err
		}
		created = id
		return nil
	})
	switch {
	case err == nil:
		return QueueCreateResult{WasCreated: true, QueueID: ptr(created)}, nil
	case errors.Is(err, errQueueExists):
		return QueueCreateResult{QueueID: before}, nil
	case s.swallow(ctx, "queue_create", err):
		return QueueCreateResult{QueueID: before}, nil
	default:
		return QueueCreateResult{}, err
	}
}

// QueueDropResult is the result of fetchq.queue_drop(q).
type QueueDropResult struct {
	WasDropped bool
	// QueueID is the id of the deleted registry row, nil if there was none.
	QueueID *int32
	// Effects is an EffectReset of the queue when it was dropped.
	Effects Effects
}

// QueueDrop is fetchq.queue_drop(q): it drops the queue's three tables
// (CASCADE), deletes its registry row, jobs, metrics and metrics_writes rows
// and notifies fetchq_queue_drop with the name, in one transaction.
// Catch-all: a nonexistent queue or any failure gives (false, NULL) and
// changes nothing.
func (s *Store) QueueDrop(ctx context.Context, db DB, p QueueParams) (QueueDropResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return QueueDropResult{}, nil
	}
	var id *int32
	err := db.Atomic(ctx, func(db DB) error {
		if err := advisoryLock(ctx, db, "queue:"+q.name); err != nil {
			return err
		}
		if _, err := exec(ctx, db, "DROP TABLE "+q.docs()+", "+q.logs()+", "+q.metrics()+" CASCADE", nil); err != nil {
			return err
		}
		row, err := queryRow(ctx, db, `WITH r AS (DELETE FROM fetchq.queues WHERE name = $1::text RETURNING id),
j AS (DELETE FROM fetchq.jobs WHERE queue = $1::text),
m AS (DELETE FROM fetchq.metrics WHERE queue = $1::text),
w AS (DELETE FROM fetchq.metrics_writes WHERE queue = $1::text)
SELECT min(id) FROM r`, args{q.name})
		if err != nil {
			return err
		}
		if row[0] != nil {
			id = ptr(textInt32(row[0]))
		}
		// After the registry trigger's fetchq_on_change, as in 4.0.2.
		_, err = exec(ctx, db, "SELECT pg_notify('fetchq_queue_drop', $1::text)", args{q.name})
		return err
	})
	if err != nil {
		if s.swallow(ctx, "queue_drop", err) {
			return QueueDropResult{}, nil
		}
		return QueueDropResult{}, err
	}
	return QueueDropResult{
		WasDropped: true,
		QueueID:    id,
		Effects:    Effects{{Kind: EffectReset, Queue: q.name}},
	}, nil
}

// indexSpec is one index of a queue's docs table (spec §1.6).
type indexSpec struct {
	name string // unquoted
	def  string // columns and predicate
}

// queueIndexes returns the five indexes of q for a version and a
// max_attempts threshold. The integers are rendered by strconv: DDL cannot
// take parameters.
func queueIndexes(q queue, version, maxAttempts int32) []indexSpec {
	v := strconv.FormatInt(int64(version), 10)
	m := strconv.FormatInt(int64(maxAttempts), 10)
	return []indexSpec{
		{q.pickIndexName(version), "(priority DESC, next_iteration ASC, attempts ASC) WHERE (lock_upgrade IS NULL AND status = 1 AND version = " + v + ")"},
		{q.indexName(indexPnd), "(next_iteration ASC, attempts ASC) WHERE (lock_upgrade IS NULL AND status = 0)"},
		{q.indexName(indexOrp), "(next_iteration ASC, attempts ASC) WHERE (lock_upgrade IS NULL AND status = 2 AND attempts < " + m + ")"},
		{q.indexName(indexDod), "(next_iteration ASC, attempts ASC) WHERE (lock_upgrade IS NULL AND status = 2 AND attempts >= " + m + ")"},
		{q.indexName(indexUps), "(subject) WHERE (lock_upgrade IS NULL AND status <> 2)"},
	}
}

// createIndexes creates those of the queue's five indexes that do not exist
// yet. It checks first because CREATE INDEX IF NOT EXISTS locks the table
// (SHARE) even when the index exists, and clients call the index-touching
// functions at every start.
func createIndexes(ctx context.Context, db DB, q queue, version, maxAttempts int32) error {
	specs := queueIndexes(q, version, maxAttempts)
	var a args
	var sel strings.Builder
	sel.WriteString("SELECT ")
	for i, ix := range specs {
		if i > 0 {
			sel.WriteString(", ")
		}
		sel.WriteString("to_regclass(" + a.add(qualifiedIndex(ix.name)) + "::text) IS NULL")
	}
	row, err := queryRow(ctx, db, sel.String(), a)
	if err != nil {
		return err
	}
	for i, ix := range specs {
		if !textBool(row[i]) {
			continue
		}
		sql := "CREATE INDEX IF NOT EXISTS " + quoteIdent(ix.name) + " ON " + q.docs() + " " + ix.def
		if _, err := exec(ctx, db, sql, nil); err != nil {
			return err
		}
	}
	return nil
}

// QueueCreateIndexesParams are the arguments of the three-argument
// fetchq.queue_create_indexes(q, version, max_attempts).
type QueueCreateIndexesParams struct {
	Queue       string
	Version     int32
	MaxAttempts int32
}

// QueueCreateIndexesResult is the result of fetchq.queue_create_indexes.
type QueueCreateIndexesResult struct {
	WasCreated bool
}

// QueueCreateIndexes is fetchq.queue_create_indexes(q, version,
// max_attempts): it creates the missing ones of the queue's five indexes
// (pick index of that version; orphan and dead indexes for that
// max_attempts). Catch-all: a nonexistent queue or any failure gives false.
func (s *Store) QueueCreateIndexes(ctx context.Context, db DB, p QueueCreateIndexesParams) (QueueCreateIndexesResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return QueueCreateIndexesResult{}, nil
	}
	err := db.Atomic(ctx, func(db DB) error {
		return createIndexes(ctx, db, q, p.Version, p.MaxAttempts)
	})
	if err != nil {
		if s.swallow(ctx, "queue_create_indexes", err) {
			return QueueCreateIndexesResult{}, nil
		}
		return QueueCreateIndexesResult{}, err
	}
	return QueueCreateIndexesResult{WasCreated: true}, nil
}

// QueueCreateIndexesFromSettings is the one-argument
// fetchq.queue_create_indexes(q): the three-argument form with the queue's
// registered current_version and max_attempts. Like 4.0.2 it returns true
// even when that fails (e.g. for a nonexistent queue).
func (s *Store) QueueCreateIndexesFromSettings(ctx context.Context, db DB, p QueueParams) (QueueCreateIndexesResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return QueueCreateIndexesResult{WasCreated: true}, nil
	}
	if err := s.reindex(ctx, db, q, false); err != nil {
		return QueueCreateIndexesResult{}, err
	}
	return QueueCreateIndexesResult{WasCreated: true}, nil
}

// reindex creates the queue's missing indexes for its registered settings,
// first dropping the orphan and dead indexes when dropThresholds is set (their
// predicates embed max_attempts). Failures are swallowed as the extension's
// nested queue_create_indexes call does; the work runs in its own Atomic so
// that a failure undoes only it.
func (s *Store) reindex(ctx context.Context, db DB, q queue, dropThresholds bool) error {
	err := db.Atomic(ctx, func(db DB) error {
		_, version, maxAttempts, found, err := registry(ctx, db, q, false)
		if err != nil || !found {
			return err
		}
		exists, err := tableExists(ctx, db, q)
		if err != nil || !exists {
			return err
		}
		if dropThresholds {
			sql := "DROP INDEX IF EXISTS " + qualifiedIndex(q.indexName(indexOrp)) + ", " + qualifiedIndex(q.indexName(indexDod))
			if _, err := exec(ctx, db, sql, nil); err != nil {
				return err
			}
		}
		return createIndexes(ctx, db, q, version, maxAttempts)
	})
	if err != nil && !s.swallow(ctx, "queue_create_indexes", err) {
		return err
	}
	return nil
}

// QueueDropIndexesResult is the result of fetchq.queue_drop_indexes(q).
type QueueDropIndexesResult struct {
	WasDropped bool
}

// QueueDropIndexes is fetchq.queue_drop_indexes(q): it drops (IF EXISTS)
// the pick index of the queue's current version and the pnd, orp, dod and
// ups indexes; pick indexes of other versions stay. True also for a
// nonexistent queue, which an invalid name is; false for a failure.
func (s *Store) QueueDropIndexes(ctx context.Context, db DB, p QueueParams) (QueueDropIndexesResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return QueueDropIndexesResult{WasDropped: true}, nil
	}
	err := db.Atomic(ctx, func(db DB) error {
		_, version, _, found, err := registry(ctx, db, q, false)
		if err != nil {
			return err
		}
		names := make([]string, 0, 5)
		if found {
			names = append(names, qualifiedIndex(q.pickIndexName(version)))
		}
		for _, sfx := range []string{indexPnd, indexOrp, indexDod, indexUps} {
			names = append(names, qualifiedIndex(q.indexName(sfx)))
		}
		_, err = exec(ctx, db, "DROP INDEX IF EXISTS "+strings.Join(names, ", "), nil)
		return err
	})
	if err != nil {
		if s.swallow(ctx, "queue_drop_indexes", err) {
			return QueueDropIndexesResult{}, nil
		}
		return QueueDropIndexesResult{}, err
	}
	return QueueDropIndexesResult{WasDropped: true}, nil
}

// QueueSetMaxAttemptsParams are the arguments of
// fetchq.queue_set_max_attempts(q, max_attempts).
type QueueSetMaxAttemptsParams struct {
	Queue       string
	MaxAttempts int32
}

// QueueSettingResult is the result of fetchq.queue_set_max_attempts and
// fetchq.queue_set_current_version.
type QueueSettingResult struct {
	// AffectedRows is the number of registry rows updated (0 or 1).
	AffectedRows int32
	// WasReindexed is false when the update failed.
	WasReindexed bool
}

// QueueSetMaxAttempts is fetchq.queue_set_max_attempts(q, n): it updates
// the registry and, unlike 4.0.2 (which tried to drop the indexes under
// wrong names), rebuilds the orphan and dead indexes when the value changed,
// then creates any missing index. Reject, orphan and dead logic read the new
// value immediately. A nonexistent queue (an invalid name included) gives
// (0, true); a failed update (0, false).
func (s *Store) QueueSetMaxAttempts(ctx context.Context, db DB, p QueueSetMaxAttemptsParams) (QueueSettingResult, error) {
	return s.setQueueSetting(ctx, db, "queue_set_max_attempts", p.Queue, "max_attempts", p.MaxAttempts)
}

// QueueSetCurrentVersionParams are the arguments of
// fetchq.queue_set_current_version(q, version).
type QueueSetCurrentVersionParams struct {
	Queue   string
	Version int32
}

// QueueSetCurrentVersion is fetchq.queue_set_current_version(q, v): it
// updates the registry and creates the pick index of the new version (and
// any other missing index). The pick index of the old version stays, so its
// documents remain fast to pick; drop it with QueueDropVersion. A nonexistent
// queue (an invalid name included) gives (0, true); a failed update (0,
// false).
func (s *Store) QueueSetCurrentVersion(ctx context.Context, db DB, p QueueSetCurrentVersionParams) (QueueSettingResult, error) {
	return s.setQueueSetting(ctx, db, "queue_set_current_version", p.Queue, "current_version", p.Version)
}

// setQueueSetting updates an integer registry column and reindexes.
func (s *Store) setQueueSetting(ctx context.Context, db DB, fn, name, column string, value int32) (QueueSettingResult, error) {
	q, ok := parseQueue(name)
	if !ok {
		return QueueSettingResult{WasReindexed: true}, nil // no such queue
	}
	var affected int32
	err := db.Atomic(ctx, func(db DB) error {
		// o holds the old values (the FROM list is evaluated before SET).
		rows, _, err := queryRows(ctx, db, "UPDATE fetchq.queues q SET "+column+" = $2::int FROM fetchq.queues o WHERE q.id = o.id AND q.name = $1::text RETURNING o."+column+" IS DISTINCT FROM $2::int", args{q.name, value})
		if err != nil {
			return err
		}
		affected = int32(len(rows))
		changed := false
		for _, r := range rows {
			changed = changed || textBool(r[0])
		}
		if affected == 0 {
			return nil
		}
		return s.reindex(ctx, db, q, changed && column == "max_attempts")
	})
	if err != nil {
		if s.swallow(ctx, fn, err) {
			return QueueSettingResult{}, nil
		}
		return QueueSettingResult{}, err
	}
	return QueueSettingResult{AffectedRows: affected, WasReindexed: true}, nil
}

// QueueDropVersionParams are the arguments of fetchq.queue_drop_version(q,
// version).
type QueueDropVersionParams struct {
	Queue   string
	Version int32
}

// QueueDropVersionResult is the result of fetchq.queue_drop_version.
type QueueDropVersionResult struct {
	WasDropped bool
}

// QueueDropVersion is fetchq.queue_drop_version(q, v): false when v is the
// queue's current version; otherwise it drops the pick index of version v
// (4.0.2 used a wrong name and dropped nothing) and returns true, also for a
// nonexistent queue, which an invalid name is. A failure gives false.
func (s *Store) QueueDropVersion(ctx context.Context, db DB, p QueueDropVersionParams) (QueueDropVersionResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return QueueDropVersionResult{WasDropped: true}, nil
	}
	current := false
	err := db.Atomic(ctx, func(db DB) error {
		row, err := queryRow(ctx, db, "SELECT 1 FROM fetchq.queues WHERE name = $1::text AND current_version = $2::int LIMIT 1", args{q.name, p.Version})
		if err != nil {
			return err
		}
		if row != nil {
			current = true
			return nil
		}
		_, err = exec(ctx, db, "DROP INDEX IF EXISTS "+qualifiedIndex(q.pickIndexName(p.Version)), nil)
		return err
	})
	if err != nil {
		if s.swallow(ctx, "queue_drop_version", err) {
			return QueueDropVersionResult{}, nil
		}
		return QueueDropVersionResult{}, err
	}
	return QueueDropVersionResult{WasDropped: !current}, nil
}

// QueueSetRetentionParams are the arguments of
// fetchq.queue_set_logs_retention(q, retention) and
// fetchq.queue_set_metrics_retention(q, retention).
type QueueSetRetentionParams struct {
	Queue     string
	Retention string
}

// AffectedRowsResult is the result of the functions returning
// affected_rows integer that cannot return NULL.
type AffectedRowsResult struct {
	AffectedRows int32
}

// QueueSetLogsRetention is fetchq.queue_set_logs_retention(q, retention):
// it sets fetchq.queues.logs_retention (an interval text such as '24h',
// varchar(25)) and returns the number of rows updated. Catch-all: an
// invalid name, too long a value or any failure gives 0.
func (s *Store) QueueSetLogsRetention(ctx context.Context, db DB, p QueueSetRetentionParams) (AffectedRowsResult, error) {
	return s.updateRegistry(ctx, db, "queue_set_logs_retention", p.Queue,
		"UPDATE fetchq.queues SET logs_retention = $2::text WHERE name = $1::text", p.Retention)
}

// QueueSetMetricsRetention is fetchq.queue_set_metrics_retention(q,
// retention): it sets fetchq.queues.metrics_retention to the JSON text
// (an array of {"from","to","retain"} rules, see QueueDropMetrics) and
// returns the number of rows updated. 4.0.2 updated a nonexistent table and
// always returned 0. Catch-all: an invalid name, text that is not JSON or
// any failure gives 0.
func (s *Store) QueueSetMetricsRetention(ctx context.Context, db DB, p QueueSetRetentionParams) (AffectedRowsResult, error) {
	return s.updateRegistry(ctx, db, "queue_set_metrics_retention", p.Queue,
		"UPDATE fetchq.queues SET metrics_retention = $2::jsonb WHERE name = $1::text", p.Retention)
}

// updateRegistry runs a one-statement catch-all registry update.
func (s *Store) updateRegistry(ctx context.Context, db DB, fn, name, sql string, value string) (AffectedRowsResult, error) {
	q, ok := parseQueue(name)
	if !ok {
		return AffectedRowsResult{}, nil
	}
	var n int64
	err := contain(ctx, db, func(db DB) error {
		tag, err := exec(ctx, db, sql, args{q.name, value})
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		if s.swallow(ctx, fn, err) {
			return AffectedRowsResult{}, nil
		}
		return AffectedRowsResult{}, err
	}
	return AffectedRowsResult{AffectedRows: int32(n)}, nil
}

// QueueStatus is one row of fetchq.queue_status.
type QueueStatus struct {
	ID       int32
	Name     string
	IsActive bool // NULL reads as false
}

// QueueStatusParams select the queue_status form: all queues when Queue is
// nil, else the queue with that name.
type QueueStatusParams struct {
	Queue *string
}

// QueueStatusResult is the result of fetchq.queue_status.
type QueueStatusResult struct {
	Queues []QueueStatus
}

// QueueStatus is fetchq.queue_status() (every registry row, by id) and
// fetchq.queue_status(q) (the queue's first row, or none). Errors propagate.
func (s *Store) QueueStatus(ctx context.Context, db DB, p QueueStatusParams) (QueueStatusResult, error) {
	rows, err := s.queueStatusRows(ctx, db, p)
	if err != nil {
		return QueueStatusResult{}, err
	}
	out := make([]QueueStatus, len(rows))
	for i, r := range rows {
		out[i] = QueueStatus{ID: textInt32(r[0]), Name: string(r[1]), IsActive: textBool(r[2])}
	}
	return QueueStatusResult{Queues: out}, nil
}

func (s *Store) queueStatusRows(ctx context.Context, db DB, p QueueStatusParams) ([][][]byte, error) {
	if p.Queue == nil {
		rows, _, err := queryRows(ctx, db, "SELECT id, name, is_active FROM fetchq.queues ORDER BY id", nil)
		return rows, err
	}
	name, _ := NormalizeQueueName(*p.Queue)
	rows, _, err := queryRows(ctx, db, "SELECT id, name, is_active FROM fetchq.queues WHERE name = $1::text ORDER BY id LIMIT 1", args{name})
	return rows, err
}

// QueueTruncateParams are the arguments of fetchq.queue_truncate(q[, empty]).
type QueueTruncateParams struct {
	Queue string
	// Empty also truncates the queue's logs and metric snapshots and
	// resets its jobs (attempts 0, iterations 0, next_iteration now(),
	// last_iteration NULL). The one-argument form is Empty false; so is
	// NULL.
	Empty bool
}

// SuccessResult is the result of the functions returning success boolean.
type SuccessResult struct {
	Success bool
	// Effects lists counter resets, for the functions that make them.
	Effects Effects
}

// QueueTruncate is fetchq.queue_truncate(q[, empty]): it empties the docs
// table (and, with Empty, the logs and metrics tables and the job
// counters), then resets the queue's counters as metric_reset does: its
// fetchq.metrics and fetchq.metrics_writes rows are deleted and the gauges
// cnt, pln, pnd, act, cpl, kll are set to 0. One transaction. Errors
// propagate: a nonexistent queue fails with 42P01. TRUNCATE takes an ACCESS
// EXCLUSIVE lock, so it waits for transactions using the queue.
func (s *Store) QueueTruncate(ctx context.Context, db DB, p QueueTruncateParams) (SuccessResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return SuccessResult{}, errNoQueue(q.name, "__docs")
	}
	err := db.Atomic(ctx, func(db DB) error {
		if err := truncateQueue(ctx, db, q, p.Empty); err != nil {
			return err
		}
		return resetGauges(ctx, db, &q)
	})
	if err != nil {
		return SuccessResult{}, err
	}
	return SuccessResult{Success: true, Effects: Effects{{Kind: EffectReset, Queue: q.name}}}, nil
}

// truncateQueue empties the queue's tables (all three with empty).
func truncateQueue(ctx context.Context, db DB, q queue, empty bool) error {
	if !empty {
		_, err := exec(ctx, db, "TRUNCATE "+q.docs()+" RESTART IDENTITY", nil)
		return err
	}
	if _, err := exec(ctx, db, "TRUNCATE "+q.docs()+", "+q.metrics()+", "+q.logs()+" RESTART IDENTITY", nil); err != nil {
		return err
	}
	_, err := exec(ctx, db, "UPDATE fetchq.jobs SET attempts = 0, iterations = 0, next_iteration = now(), last_iteration = NULL WHERE queue = $1::text", args{q.name})
	return err
}

// resetGauges replaces the counters of q (nil: of every registered queue)
// with zero gauges, as metric_reset does right after a truncation: the docs
// tables are empty, so every count is 0 (4.0.2's act is always 0 too).
func resetGauges(ctx context.Context, db DB, q *queue) error {
	const gauges = "unnest(ARRAY['cnt', 'pln', 'pnd', 'act', 'cpl', 'kll']) WITH ORDINALITY AS g(metric, n)"
	if q == nil {
		_, err := exec(ctx, db, `INSERT INTO fetchq.metrics (queue, metric, value, updated_at)
SELECT r.name, g.metric, 0, now() FROM fetchq.queues r, `+gauges+` ORDER BY r.id, g.n
ON CONFLICT (queue, metric) DO NOTHING`, nil) // a name registered twice
		return err
	}
	if err := deleteCounters(ctx, db, q.name); err != nil {
		return err
	}
	_, err := exec(ctx, db, `INSERT INTO fetchq.metrics (queue, metric, value, updated_at)
SELECT $1::text, g.metric, 0, now() FROM `+gauges+` ORDER BY g.n`, args{q.name})
	return err
}

// deleteCounters deletes the fetchq.metrics and fetchq.metrics_writes rows
// of a queue. It is a statement of its own: a data-modifying WITH that the
// main statement does not read runs after it, so an INSERT of the same
// keys in that statement would hit the unique (queue, metric) key.
func deleteCounters(ctx context.Context, db DB, name string) error {
	_, err := exec(ctx, db, `WITH d AS (DELETE FROM fetchq.metrics WHERE queue = $1::text)
DELETE FROM fetchq.metrics_writes WHERE queue = $1::text`, args{name})
	return err
}

// QueueTruncateAllParams are the arguments of fetchq.queue_truncate_all.
type QueueTruncateAllParams struct {
	// Empty is as in QueueTruncateParams.
	Empty bool
	// WithEmptyArg selects the one-argument form queue_truncate_all(empty),
	// which also empties fetchq.metrics and fetchq.metrics_writes entirely
	// (counters of unregistered queues included) before resetting the
	// gauges of every registered queue.
	WithEmptyArg bool
}

// QueueTruncateAll is fetchq.queue_truncate_all() and
// fetchq.queue_truncate_all(empty): QueueTruncate for every registered
// queue, in one transaction. Errors propagate; one failing queue fails the
// call.
func (s *Store) QueueTruncateAll(ctx context.Context, db DB, p QueueTruncateAllParams) (SuccessResult, error) {
	var effects Effects
	err := db.Atomic(ctx, func(db DB) error {
		rows, _, err := queryRows(ctx, db, "SELECT name FROM fetchq.queues ORDER BY id", nil)
		if err != nil {
			return err
		}
		effects = make(Effects, 0, len(rows)+1)
		for _, r := range rows {
			q, ok := parseQueue(string(r[0]))
			if !ok {
				return errNoQueue(q.name, "__docs")
			}
			if err := truncateQueue(ctx, db, q, p.Empty); err != nil {
				return err
			}
			if !p.WithEmptyArg {
				if err := resetGauges(ctx, db, &q); err != nil {
					return err
				}
			}
			effects = append(effects, Effect{Kind: EffectReset, Queue: q.name})
		}
		if !p.WithEmptyArg {
			return nil
		}
		if _, err := exec(ctx, db, "TRUNCATE fetchq.metrics, fetchq.metrics_writes RESTART IDENTITY", nil); err != nil {
			return err
		}
		effects = append(effects[:0], Effect{Kind: EffectResetAll})
		return resetGauges(ctx, db, nil)
	})
	if err != nil {
		return SuccessResult{}, err
	}
	return SuccessResult{Success: true, Effects: effects}, nil
}

// QueueEnableNotify is fetchq.queue_enable_notify(q): it (re)creates the
// AFTER INSERT and AFTER UPDATE row triggers fetchq__<q>__trg_notify_insert
// and _update on the docs table, which notify fetchq__<q>__<event> with the
// subject (spec §3.6). Errors propagate: a nonexistent queue fails with
// 42P01.
func (s *Store) QueueEnableNotify(ctx context.Context, db DB, p QueueParams) (SuccessResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return SuccessResult{}, errNoQueue(q.name, "__docs")
	}
	err := db.Atomic(ctx, func(db DB) error {
		if err := dropNotifyTriggers(ctx, db, q); err != nil {
			return err
		}
		for _, ev := range [...]struct{ name, op, fn string }{
			{"insert", "INSERT", "fetchq.trigger_docs_notify_insert"},
			{"update", "UPDATE", "fetchq.trigger_docs_notify_update"},
		} {
			sql := "CREATE TRIGGER " + q.triggerName(ev.name) + " AFTER " + ev.op + " ON " + q.docs() +
				" FOR EACH ROW EXECUTE PROCEDURE " + ev.fn + "()"
			if _, err := exec(ctx, db, sql, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return SuccessResult{}, err
	}
	return SuccessResult{Success: true}, nil
}

// QueueDisableNotify is fetchq.queue_disable_notify(q): it drops the two
// notify triggers if they exist. True also for a nonexistent queue or an
// invalid name. Errors propagate.
func (s *Store) QueueDisableNotify(ctx context.Context, db DB, p QueueParams) (SuccessResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return SuccessResult{Success: true}, nil
	}
	err := db.Atomic(ctx, func(db DB) error {
		exists, err := tableExists(ctx, db, q)
		if err != nil || !exists {
			return err
		}
		return dropNotifyTriggers(ctx, db, q)
	})
	if err != nil {
		return SuccessResult{}, err
	}
	return SuccessResult{Success: true}, nil
}

func dropNotifyTriggers(ctx context.Context, db DB, q queue) error {
	for _, ev := range [...]string{"insert", "update"} {
		if _, err := exec(ctx, db, "DROP TRIGGER IF EXISTS "+q.triggerName(ev)+" ON "+q.docs(), nil); err != nil {
			return err
		}
	}
	return nil
}

// quoteIdent quotes one identifier.
func quoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}
