package backend

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
)

// LogErrorParams are the arguments of fetchq.log_error(q, s, message,
// details[, ref_id]).
type LogErrorParams struct {
	Queue   string
	Subject string
	Message string
	// Details is the jsonb details, validated and de-doubled; "" (SQL NULL)
	// makes the call fail (false), as in 4.0.2.
	Details string
	// RefID is the ref_id; nil (the four-argument form) is NULL.
	RefID *string
}

// LogErrorResult is the result of fetchq.log_error.
type LogErrorResult struct {
	QueuedLogs bool
}

// LogError is fetchq.log_error: it appends a row (created_at now()) to the
// queue's logs table. No status change, no counters. Catch-all: a
// nonexistent queue, a message over 255 or a subject over 50 characters,
// NULL details or any failure gives false.
func (s *Store) LogError(ctx context.Context, db DB, p LogErrorParams) (LogErrorResult, error) {
	if p.Details == "" {
		return LogErrorResult{}, nil
	}
	details, err := jsonArg(p.Details)
	if err != nil {
		return LogErrorResult{}, err
	}
	q, ok := parseQueue(p.Queue)
	if !ok {
		return LogErrorResult{}, nil
	}
	err = contain(ctx, db, func(db DB) error {
		_, err := exec(ctx, db, "INSERT INTO "+q.logs()+" (created_at, subject, message, details, ref_id) VALUES (now(), $1::text, $2::text, $3::jsonb, $4::text)",
			args{p.Subject, p.Message, details, nullable(p.RefID)})
		return err
	})
	if err != nil {
		if s.swallow(ctx, "log_error", err) {
			return LogErrorResult{}, nil
		}
		return LogErrorResult{}, err
	}
	return LogErrorResult{QueuedLogs: true}, nil
}

// QueueDropLogsParams are the arguments of the three forms of
// fetchq.queue_drop_logs.
type QueueDropLogsParams struct {
	Queue string
	// Retention is an interval text: logs created before now() - Retention
	// are deleted (queue_drop_logs(q, varchar)). Used when Before is NULL
	// and FromSettings is false.
	Retention string
	// Before, when not NULL, deletes the logs created before it
	// (queue_drop_logs(q, timestamptz)).
	Before Time
	// FromSettings uses the queue's logs_retention, '24h' when unset
	// (queue_drop_logs(q)).
	FromSettings bool
}

// QueueDropLogs is fetchq.queue_drop_logs: it deletes the queue's log rows
// older than the retention (strictly: a row exactly on the boundary stays)
// and returns how many. Catch-all: a nonexistent queue, bad interval text or
// any failure gives 0.
func (s *Store) QueueDropLogs(ctx context.Context, db DB, p QueueDropLogsParams) (AffectedRowsResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return AffectedRowsResult{}, nil
	}
	var a args
	var bound string
	switch {
	case p.FromSettings:
		bound = "now() - COALESCE((SELECT r.logs_retention FROM fetchq.queues r WHERE r.name = " + a.add(q.name) +
			" ORDER BY r.id LIMIT 1), '24h')::interval"
	case !p.Before.IsNull():
		bound = p.Before.sql(&a)
	default:
		bound = "now() - " + a.add(p.Retention) + "::interval"
	}
	var n int64
	err := contain(ctx, db, func(db DB) error {
		tag, err := exec(ctx, db, "DELETE FROM "+q.logs()+" WHERE created_at < "+bound, a)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		if (!p.FromSettings && isTimeArgError(err, p.Before)) || !s.swallow(ctx, "queue_drop_logs", err) {
			return AffectedRowsResult{}, err
		}
		return AffectedRowsResult{}, nil
	}
	return AffectedRowsResult{AffectedRows: int32(n)}, nil
}

// QueueDropMetricsParams are the arguments of fetchq.queue_drop_metrics(q,
// config) and fetchq.queue_drop_metrics(q).
type QueueDropMetricsParams struct {
	Queue string
	// Config is a JSON array of rules {"from": interval, "to": interval,
	// "retain": date_trunc field}: for each, of the snapshots created
	// between now() - from and now() - to only the latest per retain bucket
	// is kept (see UtilsTSRetain). Ignored with FromSettings.
	Config string
	// FromSettings uses the queue's metrics_retention ('[]' when unset).
	FromSettings bool
}

// RemovedRowsResult is the result of queue_drop_metrics.
type RemovedRowsResult struct {
	RemovedRows int32
}

// QueueDropMetrics is fetchq.queue_drop_metrics: it prunes the queue's
// metric snapshots (<q>__metrics) by the retention rules and returns how
// many rows it deleted, in one transaction. 4.0.2 targeted a table that no
// longer exists and always returned 0. Catch-all: a nonexistent queue,
// malformed rules or any failure gives 0 and deletes nothing.
func (s *Store) QueueDropMetrics(ctx context.Context, db DB, p QueueDropMetricsParams) (RemovedRowsResult, error) {
	config := p.Config
	if !p.FromSettings {
		if err := checkJSON(config); err != nil {
			return RemovedRowsResult{}, err
		}
	}
	q, ok := parseQueue(p.Queue)
	if !ok {
		return RemovedRowsResult{}, nil
	}
	var removed int64
	err := db.Atomic(ctx, func(db DB) error {
		if p.FromSettings {
			row, err := queryRow(ctx, db, "SELECT COALESCE((SELECT r.metrics_retention FROM fetchq.queues r WHERE r.name = $1::text ORDER BY r.id LIMIT 1), '[]')", args{q.name})
			if err != nil {
				return err
			}
			config = string(row[0])
		}
		var rules []struct {
			From   *string `json:"from"`
			To     *string `json:"to"`
			Retain *string `json:"retain"`
		}
		if err := json.Unmarshal([]byte(config), &rules); err != nil {
			return &Error{Code: codeInvalidParameterVal, Message: "metrics retention must be an array of {from, to, retain} objects: " + err.Error()}
		}
		for _, r := range rules {
			var a args
			retain := a.add(nullable(r.Retain))
			sql := retainSQL(q.metrics(), `"created_at"`, retain,
				"now() - "+a.add(nullable(r.From))+"::interval", "now() - "+a.add(nullable(r.To))+"::interval")
			tag, err := exec(ctx, db, sql, a)
			if err != nil {
				return err
			}
			removed += tag.RowsAffected()
		}
		return nil
	})
	if err != nil {
		if caught(err) || isOwnError(err) {
			s.logger.DebugContext(ctx, "fetchq function failed; returning its failure value", "function", "queue_drop_metrics", "error", err)
			return RemovedRowsResult{}, nil
		}
		return RemovedRowsResult{}, err
	}
	return RemovedRowsResult{RemovedRows: int32(removed)}, nil
}

// isOwnError reports whether err is an *Error of this package.
func isOwnError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// retainSQL is the DELETE of utils_ts_retain: within field BETWEEN start
// AND end, keep only the latest row (by field) of each date_trunc(retain,
// field) bucket. table and field are quoted identifiers; retain, start and
// end SQL expressions over parameters.
func retainSQL(table, field, retain, start, end string) string {
	return "WITH b AS (SELECT " + start + " AS s, " + end + " AS e)" +
		" DELETE FROM " + table + " AS x USING b WHERE x." + field + " BETWEEN b.s AND b.e AND x.id NOT IN (" +
		"SELECT k.id FROM (SELECT DISTINCT ON (bucket) y.id, date_trunc(" + retain + "::text, y." + field + ") AS bucket FROM " + table +
		" AS y, b WHERE y." + field + " BETWEEN b.s AND b.e ORDER BY bucket, y." + field + " DESC) AS k)"
}

// UtilsTSRetainParams are the arguments of fetchq.utils_ts_retain(table,
// field, retain, start, end).
type UtilsTSRetainParams struct {
	// Table is a table name, optionally schema-qualified, unquoted (folded to
	// lower case) or double-quoted, e.g. fetchq_data.foo__metrics. The table
	// needs an id column.
	Table string
	// Field is the timestamp column.
	Field string
	// Retain is the date_trunc field of the buckets: minute, hour, day, ...
	Retain string
	// Start and End bound the rows considered (inclusive).
	Start, End Time
}

// UtilsTSRetainResult is the result of utils_ts_retain.
type UtilsTSRetainResult struct {
	RemovedRows int64
}

// UtilsTSRetain is fetchq.utils_ts_retain: within Field BETWEEN Start AND
// End it keeps only the latest row of each date_trunc(Retain, Field) bucket
// and deletes the others. Table and Field must be valid identifiers (4.0.2
// spliced them into the SQL text). No handler: errors propagate; NULL
// arguments fail with 22004.
func (s *Store) UtilsTSRetain(ctx context.Context, db DB, p UtilsTSRetainParams) (UtilsTSRetainResult, error) {
	table, ok := parseQualifiedName(p.Table)
	if !ok {
		return UtilsTSRetainResult{}, &Error{Code: codeInvalidName, Message: `invalid table name "` + p.Table + `"`, kind: ErrInvalidArgument}
	}
	field, ok := parseQualifiedName(p.Field)
	if !ok || len(field) != 1 {
		return UtilsTSRetainResult{}, &Error{Code: codeInvalidName, Message: `invalid column name "` + p.Field + `"`, kind: ErrInvalidArgument}
	}
	if p.Start.IsNull() {
		return UtilsTSRetainResult{}, errNull("utils_ts_retain", "intervalstart")
	}
	if p.End.IsNull() {
		return UtilsTSRetainResult{}, errNull("utils_ts_retain", "intervalend")
	}
	var a args
	retain := a.add(p.Retain)
	sql := retainSQL(table.Sanitize(), field.Sanitize(), retain, p.Start.sql(&a), p.End.sql(&a))
	tag, err := exec(ctx, db, sql, a)
	if err != nil {
		return UtilsTSRetainResult{}, err
	}
	return UtilsTSRetainResult{RemovedRows: tag.RowsAffected()}, nil
}

// parseQualifiedName parses a possibly schema-qualified name the way
// Postgres reads identifiers: unquoted parts are folded to lower case and
// must be plain identifiers; "quoted" parts keep their case ("" is a
// quote).
func parseQualifiedName(s string) (pgx.Identifier, bool) {
	var parts pgx.Identifier
	i := 0
	for {
		if i < len(s) && s[i] == '"' {
			var b strings.Builder
			i++
			closed := false
			for i < len(s) {
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed || b.Len() == 0 {
				return nil, false
			}
			parts = append(parts, b.String())
		} else {
			start := i
			for i < len(s) && s[i] != '.' {
				c := s[i]
				ok := c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80 ||
					(i > start && (c >= '0' && c <= '9' || c == '$'))
				if !ok {
					return nil, false
				}
				i++
			}
			if i == start {
				return nil, false
			}
			parts = append(parts, foldASCII(s[start:i]))
		}
		if i == len(s) {
			break
		}
		if s[i] != '.' || len(parts) == 3 {
			return nil, false
		}
		i++
	}
	return parts, len(parts) <= 3
}

// QueueTopParams are the arguments of fetchq.queue_top(q, version, limit,
// offset).
type QueueTopParams struct {
	Queue   string
	Version int32
	// Limit is the most documents to return; nil (SQL NULL) means all.
	Limit *int32
	// Offset skips documents; NULL is 0.
	Offset int32
}

// QueueTopResult is the result of fetchq.queue_top.
type QueueTopResult struct {
	Docs []Doc
}

// QueueTop is fetchq.queue_top: the queue's documents of a version, any
// status, in pick order (priority DESC, next_iteration ASC, attempts ASC,
// subject ASC; 4.0.2 had no ORDER BY), after Offset, at most Limit. No
// handler: errors propagate, a nonexistent queue fails with 42P01.
func (s *Store) QueueTop(ctx context.Context, db DB, p QueueTopParams) (QueueTopResult, error) {
	rows, err := s.queueTopRows(ctx, db, p)
	if err != nil {
		return QueueTopResult{}, err
	}
	return QueueTopResult{Docs: docsFromRows(rows)}, nil
}

func (s *Store) queueTopRows(ctx context.Context, db DB, p QueueTopParams) ([][][]byte, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return nil, errNoQueue(q.name, "__docs")
	}
	rows, _, err := queryRows(ctx, db, "SELECT "+docSelect+" FROM "+q.docs()+" d WHERE d.version = $1::int"+
		" ORDER BY d.priority DESC, d.next_iteration ASC, d.attempts ASC, d.subject ASC LIMIT $2::int OFFSET $3::int",
		args{p.Version, nullable(p.Limit), p.Offset})
	return rows, err
}

// TraceParams are the arguments of fetchq.trace(s[, order]).
type TraceParams struct {
	Subject string
	// Order is ASC (also "") or DESC, any case.
	Order string
}

// TraceStep is one row of fetchq.trace.
type TraceStep struct {
	Step      int32
	CreatedAt Timestamp
	Queue     string
	// Type is "document" or "error".
	Type string
	// Info is "status: <n>; attempts: <n>; iterations: <n>" for a document,
	// the message for an error.
	Info string
	// Details is row_to_json of the document or log row, as jsonb text.
	Details string
}

// TraceResult is the result of fetchq.trace.
type TraceResult struct {
	Steps []TraceStep
}

// traceColumns are the output columns of trace.
var traceColumns = []string{"step", "created_at", "queue", "type", "info", "details"}

// Trace is fetchq.trace(s[, order]): for each registered queue (by id), the
// document with that subject and then its log rows (by id), numbered 1..
// in that order and returned ordered by step. Errors propagate: a registered
// queue without tables fails the call, as in 4.0.2; an order other than ASC
// or DESC fails with 22023 (4.0.2 spliced it into the SQL text).
func (s *Store) Trace(ctx context.Context, db DB, p TraceParams) (TraceResult, error) {
	rows, err := s.traceRows(ctx, db, p)
	if err != nil {
		return TraceResult{}, err
	}
	steps := make([]TraceStep, len(rows))
	for i, r := range rows {
		steps[i] = TraceStep{
			Step:      textInt32(r[0]),
			CreatedAt: timestamp(r[1]),
			Queue:     string(r[2]),
			Type:      string(r[3]),
			Info:      string(r[4]),
			Details:   string(r[5]),
		}
	}
	return TraceResult{Steps: steps}, nil
}

func (s *Store) traceRows(ctx context.Context, db DB, p TraceParams) ([][][]byte, error) {
	desc := false
	switch strings.ToUpper(strings.TrimSpace(p.Order)) {
	case "", "ASC":
	case "DESC":
		desc = true
	default:
		return nil, &Error{Code: codeInvalidParameterVal, Message: `trace order must be ASC or DESC, not "` + p.Order + `"`, kind: ErrInvalidArgument}
	}
	names, _, err := queryRows(ctx, db, "SELECT name FROM fetchq.queues ORDER BY id", nil)
	if err != nil {
		return nil, err
	}
	var out [][][]byte
	for _, n := range names {
		q, ok := parseQueue(string(n[0]))
		if !ok {
			return nil, errNoQueue(q.name, "__docs")
		}
		rows, _, err := queryRows(ctx, db, "SELECT created_at, 'document', concat('status: ', status, '; attempts: ', attempts, '; iterations: ', iterations), row_to_json(d)::jsonb, 0 AS k, 0 AS o FROM "+q.docs()+" d WHERE subject = $1::text"+
			" UNION ALL SELECT created_at, 'error', message, row_to_json(l)::jsonb, 1, id FROM "+q.logs()+" l WHERE subject = $1::text ORDER BY k, o", args{p.Subject})
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			step := intText(int64(len(out) + 1))
			out = append(out, [][]byte{step, r[0], n[0], r[1], r[2], r[3]})
		}
	}
	if desc {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out, nil
}

// Upgrade is fetchq.upgrade__310__320() and fetchq.upgrade__320__330():
// migrations of extension versions this schema never had. Both return true
// and change nothing (the schema Init creates already has uuid
// metrics_writes ids and bigint iterations).
func (s *Store) Upgrade() SuccessResult {
	return SuccessResult{Success: true}
}
