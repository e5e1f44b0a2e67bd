package backend

import "context"

// Adapters of the metric_* and mnt_* overloads (spec §2.4, §2.6). NULL
// arguments follow the package's rules (doc.go): a catch-all function
// returns its failure value, a raising one fails with 22004, and where SQL
// gives NULL a meaning without error (a lookup by NULL finds nothing, a
// NULL log value) it is kept.

var (
	colsMetricValue = []string{"current_value", "was_created"}
	colsSnap        = []string{"success", "inserts"}
	colsCommon      = commonMetrics
	colsCommonAll   = append([]string{"queue"}, commonMetrics...)
	colsCompute     = []string{"cnt", "pln", "pnd", "act", "kll", "cpl"}
	colsReset       = []string{"cnt", "pln", "pnd", "act", "cpl", "kll"}
	colsResetAll    = []string{"queue", "cnt", "pln", "pnd", "act", "cpl", "kll"}
	colsMntRun      = []string{"activated_count", "rescheduled_count", "killed_count"}
	colsMntRunAll   = []string{"queue", "activated_count", "rescheduled_count", "killed_count"}
	colsJobRun      = []string{"success", "processed"}
)

// metricOverloads are the metric_* functions.
var metricOverloads = []overload{
	{"metric_set", sig(vc, vc, i4), colsMetricValue, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return metricUpsert(ctx, db, s.MetricSet, "metric_set", a)
	}},
	{"metric_increment", sig(vc, vc, i4), colsMetricValue, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return metricUpsert(ctx, db, s.MetricIncrement, "metric_increment", a)
	}},
	{"metric_log_set", sig(vc, vc, i4), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return metricLog(ctx, db, s.MetricLogSet, "metric_log_set", a)
	}},
	{"metric_log_increment", sig(vc, vc, i4), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return metricLog(ctx, db, s.MetricLogIncrement, "metric_log_increment", a)
	}},
	{"metric_log_decrement", sig(vc, vc, i4), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return metricLog(ctx, db, s.MetricLogDecrement, "metric_log_decrement", a)
	}},
	{"metric_log_pack", nil, colsAffected, func(s *Store, ctx context.Context, db DB, _ []arg) (*Result, error) {
		r, err := s.MetricLogPack(ctx, db)
		if err != nil {
			return nil, err
		}
		return row(intText(r.AffectedRows)), nil
	}},
	{"metric_get", sig(vc, vc), []string{"current_value", "last_update", "does_exists"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null || a[1].null {
			return row(intText(0), nil, boolText(false)), nil
		}
		r, err := s.metricGetRow(ctx, db, MetricParams{Queue: a[0].str, Metric: a[1].str})
		if err != nil {
			return nil, err
		}
		return row(r...), nil
	}},
	{"metric_get", sig(vc), []string{"metric", "current_value", "last_update"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return rows(nil), nil
		}
		rs, err := s.metricListRows(ctx, db, QueueParams{Queue: a[0].str})
		if err != nil {
			return nil, err
		}
		return rows(rs), nil
	}},
	{"metric_get_total", sig(vc), []string{"current_value", "does_exists"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return row(intText(0), boolText(false)), nil
		}
		r, err := s.metricTotalRow(ctx, db, MetricGetTotalParams{Metric: a[0].str})
		if err != nil {
			return nil, err
		}
		return row(r...), nil
	}},
	{"metric_get_common", sig(vc), colsCommon, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return row(make([][]byte, len(commonMetrics))...), nil
		}
		r, err := s.metricCommonRow(ctx, db, QueueParams{Queue: a[0].str})
		if err != nil {
			return nil, err
		}
		return row(r...), nil
	}},
	{"metric_get_all", nil, colsCommonAll, func(s *Store, ctx context.Context, db DB, _ []arg) (*Result, error) {
		rs, err := s.metricAllRows(ctx, db)
		if err != nil {
			return nil, err
		}
		return rows(rs), nil
	}},
	{"metric_compute", sig(vc), colsCompute, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return nil, errNull("metric_compute", "par_queue")
		}
		c, err := s.MetricCompute(ctx, db, QueueParams{Queue: a[0].str})
		if err != nil {
			return nil, err
		}
		return row(intText(c.Cnt), intText(c.Pln), intText(c.Pnd), intText(c.Act), intText(c.Kll), intText(c.Cpl)), nil
	}},
	{"metric_compute_all", nil, colsResetAll, func(s *Store, ctx context.Context, db DB, _ []arg) (*Result, error) {
		r, err := s.MetricComputeAll(ctx, db)
		if err != nil {
			return nil, err
		}
		return rows(queueCountsRows(r.Queues)), nil
	}},
	{"metric_reset", sig(vc), colsReset, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return nil, errNull("metric_reset", "par_queue")
		}
		r, err := s.MetricReset(ctx, db, QueueParams{Queue: a[0].str})
		if err != nil {
			return nil, err
		}
		c := r.Counts
		return withEffects(row(intText(c.Cnt), intText(c.Pln), intText(c.Pnd), intText(c.Act), intText(c.Cpl), intText(c.Kll)), r.Effects), nil
	}},
	{"metric_reset_all", nil, colsResetAll, func(s *Store, ctx context.Context, db DB, _ []arg) (*Result, error) {
		r, err := s.MetricResetAll(ctx, db)
		if err != nil {
			return nil, err
		}
		return withEffects(rows(queueCountsRows(r.Queues)), r.Effects), nil
	}},
	{"metric_snap", sig(vc), colsSnap, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return metricSnap(s, ctx, db, a[0], MetricSnapParams{})
	}},
	{"metric_snap", sig(vc, vc), colsSnap, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[1].null {
			return row(boolText(false), nil), nil // a NULL metric name violates NOT NULL: caught
		}
		return metricSnap(s, ctx, db, a[0], MetricSnapParams{Metric: &a[1].str})
	}},
	{"metric_snap", sig(vc, js), colsSnap, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[1].null {
			return row(boolText(true), i32Text(0)), nil // no metric is in a NULL whitelist
		}
		return metricSnap(s, ctx, db, a[0], MetricSnapParams{Whitelist: &a[1].str})
	}},
}

func metricUpsert(ctx context.Context, db DB, fn func(context.Context, DB, MetricSetParams) (MetricSetResult, error), name string, a []arg) (*Result, error) {
	for i, param := range []string{"par_queue", "par_subject", "par_value"} {
		if a[i].null {
			return nil, errNull(name, param)
		}
	}
	r, err := fn(ctx, db, MetricSetParams{Queue: a[0].str, Metric: a[1].str, Value: a[2].num})
	if err != nil {
		return nil, err
	}
	return row(intText(r.CurrentValue), boolText(r.WasCreated)), nil
}

func metricLog(ctx context.Context, db DB, fn func(context.Context, DB, MetricLogParams) (AffectedRowsResult, error), name string, a []arg) (*Result, error) {
	for i, param := range []string{"par_queue", "par_subject"} {
		if a[i].null {
			return nil, errNull(name, param)
		}
	}
	p := MetricLogParams{Queue: a[0].str, Metric: a[1].str}
	if !a[2].null {
		p.Value = &a[2].num
	}
	r, err := fn(ctx, db, p)
	if err != nil {
		return nil, err
	}
	return row(i32Text(r.AffectedRows)), nil
}

func metricSnap(s *Store, ctx context.Context, db DB, q arg, p MetricSnapParams) (*Result, error) {
	if q.null {
		return row(boolText(false), nil), nil
	}
	p.Queue = q.str
	r, err := s.MetricSnap(ctx, db, p)
	if err != nil {
		return nil, err
	}
	return row(boolText(r.Success), optInt32Text(r.Inserts)), nil
}

// queueCountsRows renders (queue, cnt, pln, pnd, act, cpl, kll) rows.
func queueCountsRows(qs []QueueCounts) [][][]byte {
	out := make([][][]byte, len(qs))
	for i, q := range qs {
		out[i] = [][]byte{[]byte(q.Queue), intText(q.Cnt), intText(q.Pln), intText(q.Pnd), intText(q.Act), intText(q.Cpl), intText(q.Kll)}
	}
	return out
}

// mntOverloads are the mnt_* functions.
var mntOverloads = []overload{
	{"mnt_make_pending", sig(vc, i4), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return nil, errNull("mnt_make_pending", "par_queue")
		}
		if a[1].null {
			return nil, errNull("mnt_make_pending", "par_limit")
		}
		return mntResult(s.MntMakePending(ctx, db, MntQueueParams{Queue: a[0].str, Limit: a[1].i32()}))
	}},
	{"mnt_reschedule_orphans", sig(vc, i4), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null || a[1].null {
			return row(nil), nil
		}
		return mntResult(s.MntRescheduleOrphans(ctx, db, MntQueueParams{Queue: a[0].str, Limit: a[1].i32()}))
	}},
	{"mnt_mark_dead", sig(vc, i4), colsAffected, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null || a[1].null {
			return row(nil), nil
		}
		return mntResult(s.MntMarkDead(ctx, db, MntQueueParams{Queue: a[0].str, Limit: a[1].i32()}))
	}},
	{"mnt_run", sig(vc, i4), colsMntRun, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return nil, errNull("mnt_run", "par_queue")
		}
		if a[1].null {
			return nil, errNull("mnt_run", "par_limit")
		}
		r, err := s.MntRun(ctx, db, MntQueueParams{Queue: a[0].str, Limit: a[1].i32()})
		if err != nil {
			return nil, err
		}
		return withEffects(row(i32Text(r.Activated), i32Text(r.Rescheduled), i32Text(r.Killed)), r.Effects), nil
	}},
	{"mnt_run_all", sig(i4), colsMntRunAll, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return nil, errNull("mnt_run_all", "par_limit")
		}
		r, err := s.MntRunAll(ctx, db, MntRunAllParams{Limit: a[0].i32()})
		if err != nil {
			return nil, err
		}
		out := make([][][]byte, len(r.Queues))
		for i, q := range r.Queues {
			out[i] = [][]byte{[]byte(q.Queue), i32Text(q.Activated), i32Text(q.Rescheduled), i32Text(q.Killed)}
		}
		return withEffects(rows(out), r.Effects), nil
	}},
	{"mnt_job_pick", sig(vc, i4), jobColumns, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return nil, errNull("mnt_job_pick", "par_lockduration")
		}
		if a[1].null {
			return nil, errNull("mnt_job_pick", "par_limit")
		}
		rs, err := s.jobPickRows(ctx, db, MntJobPickParams{LockDuration: a[0].str, Limit: a[1].i32()})
		if err != nil {
			return nil, err
		}
		return rows(rs), nil
	}},
	{"mnt_job_reschedule", sig(i4, vc), colsSuccess, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null || a[1].null {
			return row(boolText(!a[1].null)), nil // id NULL matches nothing; a NULL delay fails
		}
		r, err := s.MntJobReschedule(ctx, db, MntJobRescheduleParams{ID: a[0].i32(), Delay: a[1].str})
		if err != nil {
			return nil, err
		}
		return row(boolText(r.Success)), nil
	}},
	{"mnt_job_run", sig(vc, i4), colsJobRun, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null || a[1].null {
			return row(boolText(false), i32Text(0)), nil
		}
		return jobRun(s, ctx, db, a[0].str, a[1].i32())
	}},
	{"mnt_job_run", sig(i4), colsJobRun, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		if a[0].null {
			return row(boolText(false), i32Text(0)), nil
		}
		return jobRun(s, ctx, db, jobLock, a[0].i32())
	}},
	{"mnt_job_run", nil, colsJobRun, func(s *Store, ctx context.Context, db DB, _ []arg) (*Result, error) {
		return jobRun(s, ctx, db, jobLock, 1)
	}},
	{"mnt", sig(vc), []string{"processed", "packed"}, func(s *Store, ctx context.Context, db DB, a []arg) (*Result, error) {
		return mnt(s, ctx, db, a[0].str, a[0].null)
	}},
	{"mnt", nil, []string{"processed", "packed"}, func(s *Store, ctx context.Context, db DB, _ []arg) (*Result, error) {
		return mnt(s, ctx, db, jobLock, false)
	}},
}

func mntResult(r MntResult, err error) (*Result, error) {
	if err != nil {
		return nil, err
	}
	return withEffects(row(optInt32Text(r.AffectedRows)), r.Effects), nil
}

func jobRun(s *Store, ctx context.Context, db DB, lock string, limit int32) (*Result, error) {
	r, err := s.MntJobRun(ctx, db, MntJobRunParams{LockDuration: lock, Limit: limit})
	if err != nil {
		return nil, err
	}
	return withEffects(row(boolText(r.Success), i32Text(r.Processed)), r.Effects), nil
}

func mnt(s *Store, ctx context.Context, db DB, lock string, null bool) (*Result, error) {
	if null {
		// mnt_job_run(NULL, n) fails and is caught: nothing runs; the pack
		// still does.
		lock = "NULL"
	}
	r, err := s.Mnt(ctx, db, MntParams{LockDuration: lock})
	if err != nil {
		return nil, err
	}
	return withEffects(row(i32Text(r.Processed), intText(r.Packed)), r.Effects), nil
}
