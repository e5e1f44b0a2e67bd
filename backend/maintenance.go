package backend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults of [MaintainerConfig].
const (
	// DefaultMaintainInterval is how often the leader promotes due
	// documents and requeues expired locks.
	DefaultMaintainInterval = 250 * time.Millisecond
	// DefaultPassTimeout bounds one pass, one flush and one leadership
	// attempt.
	DefaultPassTimeout = 10 * time.Second
	// DefaultLeaderRetry is how often a maintainer that is not the leader
	// tries to become it.
	DefaultLeaderRetry = time.Second
	// DefaultFlushInterval is how often pending counter deltas are written
	// to fetchq.metrics: what a crash can lose at most.
	DefaultFlushInterval = time.Second
	// DefaultMaintainerLockKey is the advisory lock (pg_try_advisory_lock
	// bigint key) whose holder is the leader; "FQPX" and 1.
	DefaultMaintainerLockKey int64 = 0x46515058_00000001
)

const (
	// jobLock is the claim lock of the jobs the Maintainer runs, as the
	// Node client's mnt_job_run(limit) uses: a failing job is retried after
	// it.
	jobLock = "5m"
	// maxQueueRounds bounds how often one pass goes back to a queue whose
	// batches were full (a backlog larger than the mnt job's limit).
	maxQueueRounds = 20
	// maxPassJobs bounds the jobs one pass runs.
	maxPassJobs = 100
	// pingTimeout bounds the leader's check of its lock connection.
	pingTimeout = 5 * time.Second
)

// MaintainerConfig configures a [Maintainer]. Zero fields take the
// documented defaults.
type MaintainerConfig struct {
	// Pool is the proxy's service pool. Required. Passes and flushes run on
	// it, and the leader takes one connection out of it to hold the
	// advisory lock for as long as it leads. Stop the Maintainer before
	// closing the pool: its final flush runs on it.
	Pool *pgxpool.Pool

	// Store runs the maintenance operations. Default: a Store with Logger
	// and Metrics.
	Store *Store

	// Metrics receives the effects of the passes and is flushed every
	// FlushInterval and on Stop. Default: Store.Metrics(). When both are
	// set, Metrics must be Store.Metrics(), so that the metric_* functions
	// see the deltas it holds.
	Metrics *Metrics

	// Logger receives lifecycle events (Info), the first failure of a
	// queue, job, flush or leadership attempt (Error, then Debug while it
	// keeps failing, Info when it recovers). Nil discards.
	Logger *slog.Logger

	// Interval is how often the leader runs a pass: due planned documents
	// become pending, expired locks are requeued or killed, due jobs run.
	// Default DefaultMaintainInterval (250ms), so a document is pickable
	// well under a second after it is due.
	Interval time.Duration

	// PassTimeout bounds each pass, each flush and each leadership attempt.
	// Default DefaultPassTimeout (10s).
	PassTimeout time.Duration

	// LeaderRetry is how often a maintainer that is not the leader tries to
	// take the lock; after the leader dies, another maintainer leads within
	// about this long. Default DefaultLeaderRetry (1s).
	LeaderRetry time.Duration

	// FlushInterval is how often the pending counter deltas of Metrics are
	// written to fetchq.metrics (by every maintainer, leader or not): at
	// most what a crash loses. Default DefaultFlushInterval (1s).
	FlushInterval time.Duration

	// LockKey is the advisory lock key (the bigint form of
	// pg_try_advisory_lock) the leader holds. Maintainers on one database
	// with the same key elect one leader. Default DefaultMaintainerLockKey.
	LockKey int64
}

// Maintainer runs Fetchq maintenance inside the proxy, with no cron and no
// client daemon needed. Every proxy runs one; they elect a leader with a
// session advisory lock held on a dedicated connection. Only the leader
// runs passes; if its connection dies Postgres releases the lock and
// another proxy's maintainer takes it on its next attempt (LeaderRetry).
//
// A pass (see [Maintainer.RunPass]) maintains every registered queue, each
// in its own statement, so a queue that fails (e.g. a registry row whose
// tables are gone) is logged and skipped while the others go on; then it
// runs the due lgp, sts, drp and cmp jobs of fetchq.jobs, each in its own
// transaction, updating the jobs rows as mnt_job_run does, so clients that
// read fetchq.jobs see maintenance happening.
//
// Every maintainer, leader or not, flushes its [Metrics] every
// FlushInterval and when it stops.
//
// Start and Stop follow River's service shape: Start is a no-op on a
// running maintainer, Stop is safe on one never started and when called
// twice, and a stopped maintainer can be started again. A Maintainer is
// safe for concurrent use.
type Maintainer struct {
	cfg     MaintainerConfig
	store   *Store
	metrics *Metrics
	logger  *slog.Logger
	db      DB

	mu     sync.Mutex // held by Start and Stop
	cancel context.CancelFunc
	done   chan struct{}

	passMu sync.Mutex // one pass at a time

	failMu  sync.Mutex
	failing map[string]bool

	leader atomic.Bool
	passes atomic.Int64

	// leaderConn holds the lock while leading; used by the loop goroutine
	// only.
	leaderConn *pgx.Conn
}

// NewMaintainer returns a Maintainer configured by cfg, with defaults for
// zero fields. It fails for a missing Pool, a negative duration or a
// Metrics that is not the Store's.
func NewMaintainer(cfg MaintainerConfig) (*Maintainer, error) {
	if cfg.Pool == nil {
		return nil, errors.New("backend: MaintainerConfig.Pool is required")
	}
	for name, d := range map[string]time.Duration{
		"Interval": cfg.Interval, "PassTimeout": cfg.PassTimeout,
		"LeaderRetry": cfg.LeaderRetry, "FlushInterval": cfg.FlushInterval,
	} {
		if d < 0 {
			return nil, fmt.Errorf("backend: MaintainerConfig.%s must not be negative, got %v", name, d)
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	store := cfg.Store
	if store == nil {
		store = New(Config{Logger: logger, Metrics: cfg.Metrics})
	}
	if cfg.Metrics != nil && cfg.Metrics != store.Metrics() {
		return nil, errors.New("backend: MaintainerConfig.Metrics must be the Store's Metrics")
	}
	cfg.Store, cfg.Metrics, cfg.Logger = store, store.Metrics(), logger
	cfg.Interval = cmp.Or(cfg.Interval, DefaultMaintainInterval)
	cfg.PassTimeout = cmp.Or(cfg.PassTimeout, DefaultPassTimeout)
	cfg.LeaderRetry = cmp.Or(cfg.LeaderRetry, DefaultLeaderRetry)
	cfg.FlushInterval = cmp.Or(cfg.FlushInterval, DefaultFlushInterval)
	cfg.LockKey = cmp.Or(cfg.LockKey, DefaultMaintainerLockKey)
	return &Maintainer{
		cfg:     cfg,
		store:   store,
		metrics: store.Metrics(),
		logger:  logger,
		db:      PoolDB(cfg.Pool),
		failing: make(map[string]bool),
	}, nil
}

// Config returns the configuration with its defaults filled in.
func (m *Maintainer) Config() MaintainerConfig { return m.cfg }

// IsLeader reports whether this maintainer currently holds the leader lock.
func (m *Maintainer) IsLeader() bool { return m.leader.Load() }

// Passes returns the number of passes run so far (by the loop and by
// RunPass).
func (m *Maintainer) Passes() int64 { return m.passes.Load() }

// Start starts the maintainer's goroutine: it tries to lead at once and
// then every LeaderRetry, runs a pass every Interval while it leads, and
// flushes the metrics every FlushInterval. It returns at once: nil, or
// ctx's error if ctx is already done. Cancelling ctx stops the maintainer
// like Stop. Starting a running maintainer does nothing.
func (m *Maintainer) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cancel != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	m.cancel, m.done = cancel, done
	go m.run(ctx, done)
	return nil
}

// Stop stops the goroutine and waits for it: a pass in progress is
// cancelled, the leader lock released (its connection closed) and the
// pending metrics flushed one last time (under PassTimeout), so a clean
// shutdown loses no counter. Safe when never started and when called
// twice.
func (m *Maintainer) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cancel == nil {
		return
	}
	m.cancel()
	<-m.done
	m.cancel, m.done = nil, nil
}

// run is the maintainer's goroutine.
func (m *Maintainer) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	m.logger.InfoContext(ctx, "fetchq maintainer started", "interval", m.cfg.Interval, "flush_interval", m.cfg.FlushInterval, "lock_key", m.cfg.LockKey)
	defer func() {
		stopCtx := context.WithoutCancel(ctx)
		m.resign(stopCtx, "stopping")
		m.flush(stopCtx)
		m.logger.InfoContext(stopCtx, "fetchq maintainer stopped")
	}()

	passTicker := time.NewTicker(m.cfg.Interval)
	defer passTicker.Stop()
	flushTicker := time.NewTicker(m.cfg.FlushInterval)
	defer flushTicker.Stop()
	leaderTicker := time.NewTicker(m.cfg.LeaderRetry)
	defer leaderTicker.Stop()

	m.tryLead(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-leaderTicker.C:
			if !m.leader.Load() {
				m.tryLead(ctx)
			}
		case <-passTicker.C:
			if m.leader.Load() && m.stillLeader(ctx) {
				m.pass(ctx)
			}
		case <-flushTicker.C:
			m.flush(ctx)
		}
	}
}

// tryLead tries to take the leader lock on a pool connection; on success
// the connection leaves the pool and is kept.
func (m *Maintainer) tryLead(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.PassTimeout)
	defer cancel()
	conn, err := m.cfg.Pool.Acquire(ctx)
	if err != nil {
		m.failed(ctx, "leader", "fetchq maintainer: cannot try to lead", err)
		return
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1::bigint)", m.cfg.LockKey).Scan(&ok); err != nil {
		conn.Release() // the pool drops a connection left broken
		m.failed(ctx, "leader", "fetchq maintainer: cannot try to lead", err)
		return
	}
	m.recovered(ctx, "leader")
	if !ok {
		conn.Release()
		return
	}
	m.leaderConn = conn.Hijack()
	m.leader.Store(true)
	m.logger.InfoContext(ctx, "fetchq maintainer: leading maintenance", "lock_key", m.cfg.LockKey)
}

// stillLeader checks that the lock connection is alive (so the lock is
// still held); if not, it gives up leadership.
func (m *Maintainer) stillLeader(ctx context.Context) bool {
	pctx, cancel := context.WithTimeout(ctx, min(m.cfg.PassTimeout, pingTimeout))
	defer cancel()
	if _, err := m.leaderConn.Exec(pctx, "SELECT 1"); err != nil {
		if ctx.Err() == nil {
			m.logger.WarnContext(ctx, "fetchq maintainer: lost the leader connection; another maintainer can lead", "error", err)
		}
		m.resign(context.WithoutCancel(ctx), "connection lost")
		return false
	}
	return true
}

// resign releases the lock and closes its connection.
func (m *Maintainer) resign(ctx context.Context, why string) {
	if m.leaderConn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if !m.leaderConn.IsClosed() {
		_, _ = m.leaderConn.Exec(ctx, "SELECT pg_advisory_unlock($1::bigint)", m.cfg.LockKey)
	}
	_ = m.leaderConn.Close(ctx)
	m.leaderConn = nil
	m.leader.Store(false)
	m.logger.InfoContext(ctx, "fetchq maintainer: no longer leading", "reason", why)
}

// pass runs one pass under PassTimeout.
func (m *Maintainer) pass(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.PassTimeout)
	defer cancel()
	if _, err := m.RunPass(ctx); err != nil && ctx.Err() == nil {
		if code := pgCode(err); code == codeUndefinedTable || code == "3F000" {
			m.failedAt(ctx, slog.LevelInfo, "pass", "fetchq maintainer: the fetchq schema does not exist yet (fetchq.init() creates it)", err)
			return
		}
		m.failed(ctx, "pass", "fetchq maintainer: pass failed", err)
		return
	}
	m.recovered(ctx, "pass")
}

// flush writes the pending counter deltas under PassTimeout.
func (m *Maintainer) flush(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.PassTimeout)
	defer cancel()
	if err := m.metrics.Flush(ctx, m.db); err != nil {
		m.failed(ctx, "flush", "fetchq maintainer: flushing metrics failed; the deltas stay pending", err)
		return
	}
	m.recovered(ctx, "flush")
}

// PassResult is what one maintenance pass did.
type PassResult struct {
	// Queues is the number of queues maintained, FailedQueues the number
	// whose maintenance failed (logged and skipped).
	Queues, FailedQueues int
	// Activated, Rescheduled and Killed count the documents made pending,
	// requeued as orphans and marked dead.
	Activated, Rescheduled, Killed int64
	// Jobs is the number of jobs run, FailedJobs of those that failed.
	Jobs, FailedJobs int
}

// queueInfo is a registered queue as a pass maintains it.
type queueInfo struct {
	q           queue
	maxAttempts int32
	limit       int32 // the mnt job's settings.limit
	jobDue      bool  // the mnt job is due: record this pass as its run
}

// RunPass runs one maintenance pass now, whether or not this maintainer
// leads (the loop only calls it while leading), and applies its effects to
// Metrics:
//
//  1. Every registered queue, by id: mark_dead, reschedule_orphans and
//     make_pending in one statement (so one transaction), each step
//     limited to the settings.limit of the queue's mnt job (100 without
//     one). A queue whose batch was full is visited again, up to 20 times
//     per pass. When the queue's mnt job is due it is rescheduled as
//     mnt_job_reschedule does (its delay only paces that bookkeeping: the
//     documents are maintained every pass). A failing queue is logged and
//     skipped.
//  2. The due jobs of every other task (lgp, sts, drp, cmp), oldest first,
//     each in its own transaction as mnt_job_run runs them (up to 100 per
//     pass).
//
// It returns an error only when the pass could not run at all (e.g. the
// registry cannot be read, or ctx ended); failures of single queues and
// jobs are counted in the result and logged.
func (m *Maintainer) RunPass(ctx context.Context) (PassResult, error) {
	m.passMu.Lock()
	defer m.passMu.Unlock()
	m.passes.Add(1)
	var res PassResult
	queues, err := m.listQueues(ctx)
	if err != nil {
		return res, err
	}
	todo := queues
	for round := 0; len(todo) > 0 && round < maxQueueRounds && ctx.Err() == nil; round++ {
		var again []*queueInfo
		for _, qi := range todo {
			if ctx.Err() != nil {
				break
			}
			r, err := maintainQueue(ctx, m.db, qi.q, qi.limit, qi.maxAttempts)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				res.FailedQueues++
				m.failed(ctx, "queue:"+qi.q.name, "fetchq maintainer: maintaining a queue failed; skipping it", err, "queue", qi.q.name)
				continue
			}
			m.recovered(ctx, "queue:"+qi.q.name)
			m.metrics.Apply(r.Effects)
			if round == 0 {
				res.Queues++
			}
			res.Activated += int64(r.Activated)
			res.Rescheduled += int64(r.Rescheduled)
			res.Killed += int64(r.Killed)
			if qi.jobDue {
				qi.jobDue = false
				if _, err := exec(ctx, m.db, touchMntJobSQL, args{qi.q.name}); err != nil {
					m.failed(ctx, "mntjob:"+qi.q.name, "fetchq maintainer: recording the mnt job run failed", err, "queue", qi.q.name)
				} else {
					m.recovered(ctx, "mntjob:"+qi.q.name)
				}
			}
			if qi.limit > 0 && (r.Activated == qi.limit || r.Rescheduled == qi.limit || r.Killed == qi.limit) {
				again = append(again, qi)
			}
		}
		todo = again
	}
	for res.Jobs+res.FailedJobs < maxPassJobs && ctx.Err() == nil {
		r, err := m.store.runJobs(ctx, m.db, jobLock, 1, true)
		if err != nil {
			if ctx.Err() == nil {
				m.failed(ctx, "jobs", "fetchq maintainer: running jobs failed", err)
			}
			break
		}
		m.recovered(ctx, "jobs")
		m.metrics.Apply(r.Effects)
		res.Jobs += int(r.Processed)
		res.FailedJobs += int(r.Failed)
		if r.Processed+r.Failed == 0 {
			break
		}
	}
	return res, ctx.Err()
}

// touchMntJobSQL records a pass as a run of queue $1's mnt job when it is
// due, as mnt_job_reschedule would after mnt_run: due again after its
// settings.delay, iterations + 1, attempts 0, last_iteration now(). SKIP
// LOCKED leaves a job a client's mnt_job_run holds alone.
const touchMntJobSQL = `UPDATE fetchq.jobs j SET next_iteration = now() + COALESCE(j.settings->>'delay', '5m')::interval,
iterations = j.iterations + 1, attempts = 0, last_iteration = now()
WHERE j.id IN (SELECT id FROM fetchq.jobs WHERE task = 'mnt' AND queue = $1::text AND attempts < 5 AND next_iteration < now() FOR UPDATE SKIP LOCKED)`

// listQueues reads the registered queues with their max_attempts and mnt
// job settings, by id. A name registered twice is maintained once; a name
// that cannot be a queue is skipped.
func (m *Maintainer) listQueues(ctx context.Context) ([]*queueInfo, error) {
	rows, _, err := queryRows(ctx, m.db, `SELECT r.name, COALESCE(r.max_attempts, 5), j.settings,
COALESCE(j.attempts < 5 AND j.next_iteration < now(), false)
FROM fetchq.queues r LEFT JOIN fetchq.jobs j ON j.task = 'mnt' AND j.queue = r.name ORDER BY r.id`, nil)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(rows))
	out := make([]*queueInfo, 0, len(rows))
	for _, r := range rows {
		q, ok := parseQueue(string(r[0]))
		if !ok || seen[q.name] {
			continue
		}
		seen[q.name] = true
		settings, err := parseJobSettings(string(r[2]))
		if err != nil {
			m.failed(ctx, "settings:"+q.name, "fetchq maintainer: bad mnt job settings; using the default limit", err, "queue", q.name)
		} else {
			m.recovered(ctx, "settings:"+q.name)
		}
		out = append(out, &queueInfo{q: q, maxAttempts: textInt32(r[1]), limit: settings.limit, jobDue: textBool(r[3])})
	}
	return out, nil
}

// failed logs the first failure of key at Error and repeats at Debug.
func (m *Maintainer) failed(ctx context.Context, key, msg string, err error, attrs ...any) {
	m.failedAt(ctx, slog.LevelError, key, msg, err, attrs...)
}

func (m *Maintainer) failedAt(ctx context.Context, level slog.Level, key, msg string, err error, attrs ...any) {
	m.failMu.Lock()
	repeated := m.failing[key]
	m.failing[key] = true
	m.failMu.Unlock()
	if repeated {
		level = slog.LevelDebug
	}
	m.logger.Log(ctx, level, msg, append(attrs, "error", err)...)
}

// recovered notes that key works again, logging it if it had failed.
func (m *Maintainer) recovered(ctx context.Context, key string) {
	m.failMu.Lock()
	was := m.failing[key]
	delete(m.failing, key)
	m.failMu.Unlock()
	if was {
		m.logger.InfoContext(ctx, "fetchq maintainer: recovered", "what", key)
	}
}
