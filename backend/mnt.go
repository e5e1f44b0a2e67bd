package backend

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
)

// The mnt_* functions (spec §2.6, §3.1-3.3). The Maintainer runs the same
// code: maintainQueue for a queue's documents and runJobs for the jobs
// table.

// Maintenance steps: which documents each one changes and how (spec §2.8).
// Each selects its documents in (next_iteration, attempts) order, the order
// of the queue's partial index for that step, and skips rows other
// transactions hold (FOR UPDATE SKIP LOCKED), so maintenance never waits
// for a worker and concurrent runs never change a document twice.
//
// make_pending uses next_iteration <= now(), like push and pick, so a
// document due now becomes pending at once (4.0.2 used < now()); the
// orphan and dead steps keep 4.0.2's < now(): a lock expiring now has not
// expired yet.
type mntStep struct {
	fn     string // SQL function name
	where  string // over the docs table; $1 is the limit, $2 max_attempts
	status string // the new status
}

var (
	stepDead = mntStep{"mnt_mark_dead",
		"lock_upgrade IS NULL AND status = 2 AND attempts >= $2::int AND next_iteration < now()", "-1"}
	stepOrphans = mntStep{"mnt_reschedule_orphans",
		"lock_upgrade IS NULL AND status = 2 AND attempts < $2::int AND next_iteration < now()", "1"}
	stepPending = mntStep{"mnt_make_pending",
		"lock_upgrade IS NULL AND status = 0 AND next_iteration <= now()", "1"}
)

// sql returns the UPDATE of step on q.
func (st mntStep) sql(q queue) string {
	return "UPDATE " + q.docs() + " x SET status = " + st.status +
		" FROM (SELECT subject FROM " + q.docs() + " WHERE " + st.where +
		" ORDER BY next_iteration, attempts LIMIT $1::int FOR UPDATE SKIP LOCKED) c WHERE x.subject = c.subject"
}

// effects returns the counter changes of n documents changed by step.
func (st mntStep) effects(q string, n int64) Effects {
	if n == 0 {
		return nil
	}
	e := make(Effects, 0, 4)
	switch st {
	case stepPending:
		e = e.add(q, MetricPnd, n)
		e = e.add(q, MetricPln, -n)
	case stepOrphans:
		e = e.add(q, MetricErr, n)
		e = e.add(q, MetricOrp, n)
		e = e.add(q, MetricPnd, n)
		e = e.add(q, MetricAct, -n)
	case stepDead:
		e = e.add(q, MetricErr, n)
		e = e.add(q, MetricOrp, n)
		e = e.add(q, MetricKll, n)
		e = e.add(q, MetricAct, -n)
	}
	return e
}

// MntQueueParams are the arguments of mnt_make_pending, mnt_reschedule_orphans,
// mnt_mark_dead and mnt_run (q, limit).
type MntQueueParams struct {
	Queue string
	// Limit is the most documents each step changes. A negative limit
	// fails, as LIMIT does.
	Limit int32
}

// MntResult is the result of mnt_make_pending, mnt_reschedule_orphans and
// mnt_mark_dead.
type MntResult struct {
	// AffectedRows is the number of documents changed; nil (SQL NULL) when
	// a catch-all function failed.
	AffectedRows *int32
	// Effects are the step's counter changes: make_pending pnd +n, pln -n;
	// reschedule_orphans err, orp, pnd +n, act -n; mark_dead err, orp, kll
	// +n, act -n.
	Effects Effects
}

// maxAttemptsOf reads the queue's max_attempts (5 when it has no registry
// row or the column is NULL).
func maxAttemptsOf(ctx context.Context, db DB, q queue) (int32, error) {
	_, _, maxAttempts, found, err := registry(ctx, db, q, false)
	if err != nil || !found {
		return 5, err
	}
	return maxAttempts, nil
}

// MntMakePending is fetchq.mnt_make_pending(q, limit): it makes up to Limit
// planned documents that are due (next_iteration <= now()) pending, oldest
// first, skipping locked rows. The docs UPDATE trigger installed by
// queue_enable_notify notifies fetchq__<q>__pnd with each subject on
// commit. No handler: errors propagate, a nonexistent queue fails with
// 42P01.
func (s *Store) MntMakePending(ctx context.Context, db DB, p MntQueueParams) (MntResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return MntResult{}, errNoQueue(q.name, "__docs")
	}
	tag, err := exec(ctx, db, stepPending.sql(q), args{p.Limit})
	if err != nil {
		return MntResult{}, err
	}
	n := tag.RowsAffected()
	return MntResult{AffectedRows: ptr(int32(n)), Effects: stepPending.effects(q.name, n)}, nil
}

// MntRescheduleOrphans is fetchq.mnt_reschedule_orphans(q, limit): active
// documents whose lock expired (next_iteration < now()) with attempts below
// the queue's max_attempts become pending again, up to Limit; attempts and
// next_iteration are kept, so they are pickable at once and the next pick
// counts one more attempt. Catch-all: a nonexistent queue or any failure
// gives NULL.
func (s *Store) MntRescheduleOrphans(ctx context.Context, db DB, p MntQueueParams) (MntResult, error) {
	return s.mntCatchAll(ctx, db, p, stepOrphans)
}

// MntMarkDead is fetchq.mnt_mark_dead(q, limit): active documents whose
// lock expired with attempts at or above the queue's max_attempts are
// killed (status -1), up to Limit. Catch-all: a nonexistent queue or any
// failure gives NULL.
func (s *Store) MntMarkDead(ctx context.Context, db DB, p MntQueueParams) (MntResult, error) {
	return s.mntCatchAll(ctx, db, p, stepDead)
}

func (s *Store) mntCatchAll(ctx context.Context, db DB, p MntQueueParams, st mntStep) (MntResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return MntResult{}, nil
	}
	var n int64
	err := db.Atomic(ctx, func(db DB) error {
		maxAttempts, err := maxAttemptsOf(ctx, db, q)
		if err != nil {
			return err
		}
		tag, err := exec(ctx, db, st.sql(q), args{p.Limit, maxAttempts})
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		if s.swallow(ctx, st.fn, err) {
			return MntResult{}, nil
		}
		return MntResult{}, err
	}
	return MntResult{AffectedRows: ptr(int32(n)), Effects: st.effects(q.name, n)}, nil
}

// MntRunResult is the result of fetchq.mnt_run(q, limit).
type MntRunResult struct {
	// Activated, Rescheduled and Killed are the documents made pending,
	// rescheduled as orphans and marked dead.
	Activated, Rescheduled, Killed int32
	// Effects are those of the three steps: mark_dead, reschedule_orphans,
	// make_pending.
	Effects Effects
}

// maintainQueue runs the three maintenance steps on q in one statement
// (the three UPDATEs touch disjoint documents: expired active ones at or
// above max_attempts, expired active ones below, due planned ones), each
// changing at most limit documents.
func maintainQueue(ctx context.Context, db DB, q queue, limit, maxAttempts int32) (MntRunResult, error) {
	sql := "WITH d AS (" + stepDead.sql(q) + " RETURNING 1), o AS (" + stepOrphans.sql(q) + " RETURNING 1), p AS (" +
		stepPending.sql(q) + " RETURNING 1) SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM o), (SELECT count(*) FROM p)"
	row, err := queryRow(ctx, db, sql, args{limit, maxAttempts})
	if err != nil {
		return MntRunResult{}, err
	}
	killed, rescheduled, activated := textInt64(row[0]), textInt64(row[1]), textInt64(row[2])
	var e Effects
	e = append(e, stepDead.effects(q.name, killed)...)
	e = append(e, stepOrphans.effects(q.name, rescheduled)...)
	e = append(e, stepPending.effects(q.name, activated)...)
	return MntRunResult{Activated: int32(activated), Rescheduled: int32(rescheduled), Killed: int32(killed), Effects: e}, nil
}

// MntRun is fetchq.mnt_run(q, limit): mark_dead, reschedule_orphans and
// make_pending on the queue, each up to Limit documents, in one statement
// (in 4.0.2, three calls in that order: the result is the same, as the
// steps change disjoint documents). No handler: errors propagate, a
// nonexistent queue fails with 42P01.
func (s *Store) MntRun(ctx context.Context, db DB, p MntQueueParams) (MntRunResult, error) {
	q, ok := parseQueue(p.Queue)
	if !ok {
		return MntRunResult{}, errNoQueue(q.name, "__docs")
	}
	var res MntRunResult
	err := db.Atomic(ctx, func(db DB) error {
		maxAttempts, err := maxAttemptsOf(ctx, db, q)
		if err != nil {
			return err
		}
		res, err = maintainQueue(ctx, db, q, p.Limit, maxAttempts)
		return err
	})
	if err != nil {
		return MntRunResult{}, err
	}
	return res, nil
}

// QueueMntRun is the mnt_run result of one registered queue.
type QueueMntRun struct {
	// Queue is the name as registered.
	Queue string
	// Activated, Rescheduled and Killed are as in MntRunResult.
	Activated, Rescheduled, Killed int32
}

// MntRunAllParams are the arguments of fetchq.mnt_run_all(limit).
type MntRunAllParams struct {
	// Limit bounds each step of each queue, as in MntQueueParams.
	Limit int32
}

// MntRunAllResult is the result of fetchq.mnt_run_all.
type MntRunAllResult struct {
	// Queues are the per-queue results, by registry id.
	Queues []QueueMntRun
	// Effects are those of every queue, in that order.
	Effects Effects
}

// MntRunAll is fetchq.mnt_run_all(limit): MntRun for every registry row,
// by id, in one transaction. Errors propagate: as in 4.0.2 one failing
// queue (e.g. a registry row whose tables are gone) fails the call; the
// Maintainer, which isolates queues, is the way to keep maintenance going
// around such a queue.
func (s *Store) MntRunAll(ctx context.Context, db DB, p MntRunAllParams) (MntRunAllResult, error) {
	var res MntRunAllResult
	err := db.Atomic(ctx, func(db DB) error {
		res = MntRunAllResult{}
		return forEachQueue(ctx, db, func(name string, q queue) error {
			maxAttempts, err := maxAttemptsOf(ctx, db, q)
			if err != nil {
				return err
			}
			r, err := maintainQueue(ctx, db, q, p.Limit, maxAttempts)
			if err != nil {
				return err
			}
			res.Queues = append(res.Queues, QueueMntRun{Queue: name, Activated: r.Activated, Rescheduled: r.Rescheduled, Killed: r.Killed})
			res.Effects = append(res.Effects, r.Effects...)
			return nil
		})
	})
	if err != nil {
		return MntRunAllResult{}, err
	}
	return res, nil
}

// Job is a row of fetchq.jobs (spec §1.5).
type Job struct {
	ID int32
	// Task is lgp, mnt, sts, cmp, drp or a client's own name.
	Task string
	// Queue is the queue the task maintains, "*" for lgp.
	Queue string
	// Attempts counts claims since the last recorded run; a job claimed
	// five times without a run is no longer picked.
	Attempts int32
	// Iterations counts recorded runs.
	Iterations int64
	// NextIteration is when the job is due (or its claim expires).
	NextIteration Timestamp
	// LastIteration is when it last ran (never set by 4.0.2).
	LastIteration Timestamp
	// Settings and Payload are jsonb text ("" for NULL).
	Settings string
	Payload  string
}

// jobColumns are the output columns of mnt_job_pick.
var jobColumns = []string{"id", "task", "queue", "attempts", "iterations", "next_iteration", "last_iteration", "settings", "payload"}

func jobFromRow(r [][]byte) Job {
	return Job{
		ID: textInt32(r[0]), Task: string(r[1]), Queue: string(r[2]), Attempts: textInt32(r[3]),
		Iterations: textInt64(r[4]), NextIteration: timestamp(r[5]), LastIteration: timestamp(r[6]),
		Settings: string(r[7]), Payload: string(r[8]),
	}
}

// claimJobsSQL claims up to $2 due jobs (next_iteration < now(), attempts
// below 5), oldest first, skipping rows other transactions hold: their
// next_iteration becomes now() + $1 (the lock) and attempts + 1. The rows
// come back in claim order (4.0.2: heap order).
func claimJobsSQL(skipMnt bool) string {
	filter := ""
	if skipMnt {
		filter = " AND task <> 'mnt'"
	}
	return "WITH c AS MATERIALIZED (SELECT id, next_iteration AS n0, attempts AS a0 FROM fetchq.jobs WHERE attempts < 5 AND next_iteration < now()" + filter +
		" ORDER BY next_iteration, attempts, id LIMIT $2::int FOR UPDATE SKIP LOCKED)," +
		" u AS (UPDATE fetchq.jobs j SET next_iteration = now() + $1::interval, attempts = j.attempts + 1 FROM c WHERE j.id = c.id" +
		" RETURNING j.id, j.task, j.queue, j.attempts, j.iterations, j.next_iteration, j.last_iteration, j.settings, j.payload, c.n0, c.a0)" +
		" SELECT id, task, queue, attempts, iterations, next_iteration, last_iteration, settings, payload FROM u ORDER BY n0, a0, id"
}

// MntJobPickParams are the arguments of fetchq.mnt_job_pick(lock, limit).
type MntJobPickParams struct {
	// LockDuration is an interval text: claimed jobs are due again after it.
	LockDuration string
	// Limit is the most jobs to claim.
	Limit int32
}

// MntJobPickResult is the result of fetchq.mnt_job_pick.
type MntJobPickResult struct {
	Jobs []Job
}

// MntJobPick is fetchq.mnt_job_pick(lock, limit): it claims up to Limit
// due jobs (next_iteration < now(), attempts < 5), oldest first, skipping
// jobs other transactions hold, by setting next_iteration to now() + lock
// and attempts + 1, and returns them, in that order. No handler: errors
// propagate.
func (s *Store) MntJobPick(ctx context.Context, db DB, p MntJobPickParams) (MntJobPickResult, error) {
	rows, err := s.jobPickRows(ctx, db, p)
	if err != nil {
		return MntJobPickResult{}, err
	}
	jobs := make([]Job, len(rows))
	for i, r := range rows {
		jobs[i] = jobFromRow(r)
	}
	return MntJobPickResult{Jobs: jobs}, nil
}

func (s *Store) jobPickRows(ctx context.Context, db DB, p MntJobPickParams) ([][][]byte, error) {
	rows, _, err := queryRows(ctx, db, claimJobsSQL(false), args{p.LockDuration, p.Limit})
	return rows, err
}

// MntJobRescheduleParams are the arguments of
// fetchq.mnt_job_reschedule(id, delay).
type MntJobRescheduleParams struct {
	// ID is the job's fetchq.jobs id.
	ID int32
	// Delay is an interval text: the job is due again after it.
	Delay string
}

// rescheduleJobSQL records one run of job $1: due again after $2,
// iterations + 1, attempts 0, last_iteration now().
const rescheduleJobSQL = "UPDATE fetchq.jobs SET next_iteration = now() + $2::interval, iterations = iterations + 1, attempts = 0, last_iteration = now() WHERE id = $1::int"

// MntJobReschedule is fetchq.mnt_job_reschedule(id, delay): the job's
// next_iteration becomes now() + Delay, iterations + 1, attempts 0, and
// (unlike 4.0.2, which never wrote it) last_iteration now(). True even when
// no job has that id. Catch-all: a bad interval or any failure gives false.
func (s *Store) MntJobReschedule(ctx context.Context, db DB, p MntJobRescheduleParams) (SuccessResult, error) {
	err := contain(ctx, db, func(db DB) error {
		_, err := exec(ctx, db, rescheduleJobSQL, args{p.ID, p.Delay})
		return err
	})
	if err != nil {
		if s.swallow(ctx, "mnt_job_reschedule", err) {
			return SuccessResult{}, nil
		}
		return SuccessResult{}, err
	}
	return SuccessResult{Success: true}, nil
}

// jobSettings are the settings a job run reads (spec §3.2).
type jobSettings struct {
	limit int32  // settings.limit, default 100
	delay string // settings.delay, default '5m'
}

// parseJobSettings reads a job's settings jsonb text. limit may be a JSON
// number or a string holding one (4.0.2 converted it through text); delay
// a string or number of interval text.
func parseJobSettings(text string) (jobSettings, error) {
	js := jobSettings{limit: 100, delay: "5m"}
	if text == "" {
		return js, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		return js, &Error{Code: codeInvalidParameterVal, Message: "job settings must be a JSON object: " + err.Error()}
	}
	scalar := func(raw json.RawMessage) string {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
		return strings.TrimSpace(string(raw))
	}
	if raw, ok := m["limit"]; ok && string(raw) != "null" {
		n, err := strconv.ParseInt(strings.TrimSpace(scalar(raw)), 10, 32)
		if err != nil {
			return js, &Error{Code: codeInvalidText, Message: "job settings: invalid limit " + string(raw)}
		}
		js.limit = int32(n)
	}
	if raw, ok := m["delay"]; ok && string(raw) != "null" {
		js.delay = scalar(raw)
	}
	return js, nil
}

// MntJobRunParams are the arguments of fetchq.mnt_job_run(lock, limit);
// mnt_job_run(limit) is lock '5m', mnt_job_run() limit 1.
type MntJobRunParams struct {
	// LockDuration is the claim's lock (interval text): a job whose run
	// fails is due again after it.
	LockDuration string
	// Limit is the most jobs to run.
	Limit int32
}

// MntJobRunResult is the result of fetchq.mnt_job_run.
type MntJobRunResult struct {
	// Success is false when a job failed, or when the call itself failed
	// (then nothing was done).
	Success bool
	// Processed is the number of jobs run, unknown tasks included.
	Processed int32
	// Failed is the number of jobs whose run failed.
	Failed int32
	// Effects are the counter changes of the jobs that ran.
	Effects Effects
}

// MntJobRun is fetchq.mnt_job_run(lock, limit): in one transaction it
// claims up to Limit due jobs (as MntJobPick) and runs each by its task:
// lgp metric_log_pack(); mnt mnt_run(queue, settings.limit or 100); drp
// queue_drop_metrics(queue) and queue_drop_logs(queue); sts
// metric_snap(queue); anything else, including the seeded cmp, does
// nothing. Each run is then recorded as mnt_job_reschedule(id,
// settings.delay or '5m') does.
//
// Unlike 4.0.2, where one failing job rolled back the whole call and,
// being the oldest, stalled all maintenance, each job runs in its own
// savepoint: a failing job is logged, its work undone, and it stays claimed
// (due again after the lock, abandoned after 5 attempts), while the other
// jobs run. Catch-all: a failure of the call itself (e.g. a bad lock
// interval) gives (false, 0) and does nothing.
func (s *Store) MntJobRun(ctx context.Context, db DB, p MntJobRunParams) (MntJobRunResult, error) {
	res, err := s.runJobs(ctx, db, p.LockDuration, p.Limit, false)
	if err != nil {
		if caught(err) {
			s.logger.DebugContext(ctx, "fetchq function failed; returning its failure value", "function", "mnt_job_run", "error", err)
			return MntJobRunResult{}, nil
		}
		return MntJobRunResult{}, err
	}
	return res, nil
}

// runJobs claims and runs jobs in one transaction on db (see MntJobRun).
// skipMnt is the Maintainer's form: it leaves the mnt jobs to its queue
// step, and commits its claim before it runs the jobs, each in its own
// transaction, so that a job that keeps failing (a right the service
// role lacks, a DELETE longer than the pass) is retried only once its
// claim expires, and abandoned after 5 attempts, instead of coming back
// first at every pass, undone with the pass, and holding up every other
// job.
func (s *Store) runJobs(ctx context.Context, db DB, lock string, limit int32, skipMnt bool) (MntJobRunResult, error) {
	var res MntJobRunResult
	if skipMnt {
		rows, _, err := queryRows(ctx, db, claimJobsSQL(skipMnt), args{lock, limit})
		if err != nil {
			return MntJobRunResult{}, err
		}
		if err := s.runClaimed(ctx, db, rows, &res, true); err != nil {
			return res, err
		}
		res.Success = res.Failed == 0
		return res, nil
	}
	err := db.Atomic(ctx, func(db DB) error {
		res = MntJobRunResult{}
		rows, _, err := queryRows(ctx, db, claimJobsSQL(skipMnt), args{lock, limit})
		if err != nil {
			return err
		}
		return s.runClaimed(ctx, db, rows, &res, false)
	})
	if err != nil {
		return MntJobRunResult{}, err
	}
	res.Success = res.Failed == 0
	return res, nil
}

// runClaimed runs claimed jobs (rows of claimJobsSQL), each in its own
// transaction or savepoint, counting them in res. A job's failure is
// logged and counted, and the others run, when Postgres caught it (or it
// is the proxy's own), or, with anyError, whatever it was, unless ctx has
// ended; otherwise it is returned.
func (s *Store) runClaimed(ctx context.Context, db DB, rows [][][]byte, res *MntJobRunResult, anyError bool) error {
	for _, r := range rows {
		job := jobFromRow(r)
		var effects Effects
		err := db.Atomic(ctx, func(db DB) error {
			settings, err := parseJobSettings(job.Settings)
			if err != nil {
				return err
			}
			if effects, err = s.runJob(ctx, db, job, settings); err != nil {
				return err
			}
			_, err = exec(ctx, db, rescheduleJobSQL, args{job.ID, settings.delay})
			return err
		})
		if err != nil {
			if !(anyError && ctx.Err() == nil) && !caught(err) && !isOwnError(err) {
				return err
			}
			s.logger.WarnContext(ctx, "fetchq: maintenance job failed; it is retried when its claim expires",
				"job_id", job.ID, "task", job.Task, "queue", job.Queue, "attempts", job.Attempts, "error", err)
			res.Failed++
			continue
		}
		res.Processed++
		res.Effects = append(res.Effects, effects...)
	}
	return nil
}

// runJob runs one claimed job's task on db.
func (s *Store) runJob(ctx context.Context, db DB, job Job, settings jobSettings) (Effects, error) {
	switch job.Task {
	case "lgp":
		_, err := s.MetricLogPack(ctx, db)
		return nil, err
	case "mnt":
		q, ok := parseQueue(job.Queue)
		if !ok {
			return nil, errNoQueue(q.name, "__docs")
		}
		maxAttempts, err := maxAttemptsOf(ctx, db, q)
		if err != nil {
			return nil, err
		}
		r, err := maintainQueue(ctx, db, q, settings.limit, maxAttempts)
		return r.Effects, err
	case "drp":
		if _, err := s.QueueDropMetrics(ctx, db, QueueDropMetricsParams{Queue: job.Queue, FromSettings: true}); err != nil {
			return nil, err
		}
		_, err := s.QueueDropLogs(ctx, db, QueueDropLogsParams{Queue: job.Queue, FromSettings: true})
		return nil, err
	case "sts":
		_, err := s.MetricSnap(ctx, db, MetricSnapParams{Queue: job.Queue})
		return nil, err
	default:
		// cmp is seeded by queue_create but does nothing in 4.0.2 either:
		// the gauges here are exact without a periodic recount.
		s.logger.DebugContext(ctx, "fetchq: maintenance job with a task that does nothing", "job_id", job.ID, "task", job.Task)
		return nil, nil
	}
}

// MntParams are the arguments of fetchq.mnt(lock); mnt() is lock '5m'.
type MntParams struct {
	// LockDuration is mnt_job_run's claim lock (interval text).
	LockDuration string
}

// MntAllResult is the result of fetchq.mnt().
type MntAllResult struct {
	// Processed is mnt_job_run's processed.
	Processed int32
	// Packed is metric_log_pack's affected_rows.
	Packed int64
	// Effects are those of the jobs that ran.
	Effects Effects
}

// Mnt is fetchq.mnt(lock), "run everything now": it makes every per-queue
// job due (next_iteration now() - 1ms; the lgp job is not forced), runs
// mnt_job_run(lock, <that many jobs>), then metric_log_pack(). As in 4.0.2
// a due lgp job older than the others takes one of the slots. When db
// autocommits, the pack runs after the jobs' transaction commits, so that
// it can flush the pending deltas too (if that pack then fails, the
// committed jobs' effects are applied to the Store's Metrics, since the
// caller gets an error); inside a transaction everything runs in it. Errors
// of the pack propagate.
func (s *Store) Mnt(ctx context.Context, db DB, p MntParams) (MntAllResult, error) {
	var res MntAllResult
	jobs := func(db DB) error {
		tag, err := exec(ctx, db, "UPDATE fetchq.jobs SET next_iteration = now() - interval '1 millisecond' WHERE queue <> '*'", nil)
		if err != nil {
			return err
		}
		r, err := s.MntJobRun(ctx, db, MntJobRunParams{LockDuration: p.LockDuration, Limit: int32(tag.RowsAffected())})
		res = MntAllResult{Processed: r.Processed, Effects: r.Effects}
		return err
	}
	pack := func(db DB) error {
		r, err := s.MetricLogPack(ctx, db)
		res.Packed = r.AffectedRows
		return err
	}
	var err error
	if isAutocommit(db) {
		if err = db.Atomic(ctx, jobs); err == nil {
			if err = pack(db); err != nil {
				// The jobs committed but the call fails, so the caller
				// will not apply their effects: apply them here.
				s.metrics.Apply(res.Effects)
			}
		}
	} else {
		err = db.Atomic(ctx, func(db DB) error {
			if err := jobs(db); err != nil {
				return err
			}
			return pack(db)
		})
	}
	if err != nil {
		return MntAllResult{}, err
	}
	return res, nil
}
