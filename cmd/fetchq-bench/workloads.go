package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Targets: what a measurement runs against.
const (
	tProxy   = "proxy"     // fetchq-proxy in front of the database
	tSQL     = "sql"       // hand-written SQL on the proxy's plain tables, direct
	tExt     = "extension" // the Fetchq 4.0.2 extension, direct
	tRiver   = "river"     // River's burn-down of no-op jobs
	tDirect  = "direct"    // pgbench straight to Postgres
	tBouncer = "pgbouncer" // pgbench through PgBouncer (session mode)
)

// W4 modes: pgbench -S under each query protocol, and the built-in TPC-B.
var w4Modes = []string{"simple", "extended", "prepared", "tpcb"}

// w1Clients and w3Clients are the client counts the issue fixes.
const (
	w1Clients = 8
	w3Clients = 8
	// w3Batch is how many documents a W3 pick asks for.
	w3Batch = 100
)

// cell identifies one measurement; each repetition runs every cell once.
type cell struct {
	Workload string `json:"workload"`
	Target   string `json:"target"`
	Clients  int    `json:"clients,omitempty"`
	// Mode is the W4 mode (simple, extended, prepared, tpcb).
	Mode string `json:"mode,omitempty"`
	// Conns is the W5 idle connection count asked for.
	Conns int `json:"conns,omitempty"`
}

// key groups the samples of one cell across repetitions.
func (c cell) key() string {
	return fmt.Sprintf("%s/%s/%d/%s/%d", c.Workload, c.Target, c.Clients, c.Mode, c.Conns)
}

// String is how progress lines name the cell.
func (c cell) String() string {
	switch c.Workload {
	case "W4":
		return fmt.Sprintf("W4 %-8s %-9s", c.Mode, c.Target)
	case "W5":
		return fmt.Sprintf("W5 %d idle connections", c.Conns)
	}
	return fmt.Sprintf("%s c=%-2d %-9s", c.Workload, c.Clients, c.Target)
}

// sample is the outcome of one cell in one repetition.
type sample struct {
	cell
	Rep int `json:"rep"`
	// Value is the throughput: pushes, documents or transactions per
	// second (Unit).
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	// Ops is how many pushes, documents or transactions were done in
	// Seconds.
	Ops     int64   `json:"ops"`
	Seconds float64 `json:"seconds,omitempty"`
	// Failed counts failed transactions: pgbench failures and aborted
	// clients, load generator errors, failed River jobs.
	Failed int64 `json:"failed"`
	// CPUPerOp is the user+system CPU of the proxy (or PgBouncer) per
	// operation, in microseconds; 0 when not measured.
	CPUPerOp float64 `json:"cpu_us_per_op,omitempty"`
	// PgCPUPerOp is that of Postgres (all its processes), ClientCPUPerOp
	// that of the load generator (pgbench, or the Go load generator).
	// BusyPct is the share of all CPUs' time the machine was busy.
	PgCPUPerOp     float64 `json:"pg_cpu_us_per_op,omitempty"`
	ClientCPUPerOp float64 `json:"client_cpu_us_per_op,omitempty"`
	BusyPct        float64 `json:"busy_pct,omitempty"`
	// CallsPerBatch is the mean number of calls the proxy ran per batch
	// statement (group commit), from its /debug/group_commit counters.
	CallsPerBatch float64 `json:"calls_per_batch,omitempty"`
	// OtherCPU is the share of all CPUs (percent) that processes outside
	// the benchmark used in the half second before the measurement; -1
	// when unknown. Waited is how long -quiet waited for it to drop.
	OtherCPU float64 `json:"other_cpu_before_pct"`
	Waited   float64 `json:"waited_for_quiet_s,omitempty"`
	// Checks lists what the exactly-once verification counted.
	Checks string `json:"checks,omitempty"`
	// Problems lists everything that went wrong; empty means the sample
	// is valid.
	Problems []string `json:"problems,omitempty"`
	// W5 only.
	Measured  int     `json:"measured_conns,omitempty"`
	RSSBefore int64   `json:"rss_before,omitempty"`
	RSSAfter  int64   `json:"rss_after,omitempty"`
	PerConnKB float64 `json:"kb_per_conn,omitempty"`
	SysPerMB  float64 `json:"system_mb_per_conn,omitempty"`
	Note      string  `json:"note,omitempty"`
}

// problemf records a problem.
func (s *sample) problemf(format string, args ...any) {
	s.Problems = append(s.Problems, fmt.Sprintf(format, args...))
}

// plan returns the cells of repetition rep (0-based) in the order they
// run. Within each group the target order is rotated by rep, so no target
// always runs first (or right after the same neighbour).
func (b *bench) plan(rep int) []cell {
	queueTargets := func(baseline string) []string {
		t := []string{tProxy, baseline}
		if b.o.extensionSQL != "" {
			t = append(t, tExt)
		}
		return t
	}
	var out []cell
	add := func(targets []string, mk func(t string) cell) {
		for i := range targets {
			out = append(out, mk(targets[(i+rep)%len(targets)]))
		}
	}
	for _, w := range b.o.workloads {
		switch w {
		case "W1":
			add(queueTargets(tSQL), func(t string) cell { return cell{Workload: w, Target: t, Clients: w1Clients} })
		case "W2":
			for _, n := range b.o.w2Clients {
				add(queueTargets(tSQL), func(t string) cell { return cell{Workload: w, Target: t, Clients: n} })
			}
		case "W3":
			add(append(queueTargets(tSQL), tRiver), func(t string) cell { return cell{Workload: w, Target: t, Clients: w3Clients} })
		case "W4":
			for _, m := range w4Modes {
				add([]string{tDirect, tBouncer, tProxy}, func(t string) cell {
					return cell{Workload: w, Target: t, Clients: b.o.w4Clients, Mode: m}
				})
			}
		case "W5":
			for _, n := range b.o.idleConns {
				out = append(out, cell{Workload: w, Target: tProxy, Conns: n})
			}
		}
	}
	return out
}

// runAll runs every repetition.
func (b *bench) runAll(ctx context.Context) error {
	for rep := range b.o.reps {
		for _, c := range b.plan(rep) {
			if err := ctx.Err(); err != nil {
				return err
			}
			s := b.runCell(ctx, rep+1, c)
			b.samples = append(b.samples, s)
			status := "ok"
			if len(s.Problems) > 0 {
				status = "PROBLEM: " + strings.Join(s.Problems, "; ")
			}
			switch {
			case c.Workload == "W5" && s.Measured > 0:
				b.logf("rep %d/%d  %s: %d measured, %.1f KB/conn  %s", rep+1, b.o.reps, c, s.Measured, s.PerConnKB, status)
			case c.Workload == "W5":
				b.logf("rep %d/%d  %s: not measured  %s", rep+1, b.o.reps, c, status)
			default:
				b.logf("rep %d/%d  %s %10s %-8s (others' CPU before: %2.0f%%)  %s", rep+1, b.o.reps, c, fmtNum(s.Value), s.Unit, s.OtherCPU, status)
			}
		}
		mark := fmt.Sprintf("after rep %d", rep+1)
		b.loads = append(b.loads, loadMark{mark, loadAverage()})
		b.logf("load average %s: %s", mark, loadAverage())
	}
	return ctx.Err()
}

// runCell runs one cell; a cell that cannot run is a sample with a
// problem, and the run goes on.
func (b *bench) runCell(ctx context.Context, rep int, c cell) sample {
	s := sample{cell: c, Rep: rep}
	s.OtherCPU, s.Waited = b.waitQuiet(ctx)
	var err error
	switch c.Workload {
	case "W1", "W2":
		err = b.runScript(ctx, &s)
	case "W3":
		if c.Target == tRiver {
			err = b.runRiver(ctx, &s)
		} else {
			err = b.runDriver(ctx, &s)
		}
	case "W4":
		err = b.runPassthrough(ctx, &s)
	case "W5":
		err = b.runIdle(ctx, &s)
	}
	if err != nil {
		s.problemf("%v", err)
	}
	return s
}

// waitQuiet samples the CPU other processes use and, with -quiet, waits
// until it is at most that percentage or -quiet-wait has passed. It returns
// the last sample and the time waited.
func (b *bench) waitQuiet(ctx context.Context) (float64, float64) {
	start := time.Now()
	for {
		other := otherCPU(500 * time.Millisecond)
		if b.o.quiet <= 0 || other <= b.o.quiet || time.Since(start) >= b.o.quietWait || ctx.Err() != nil {
			return other, time.Since(start).Seconds() - 0.5
		}
	}
}

// scriptPath is a pgbench script of bench/testdata.
func (b *bench) scriptPath(name string) string {
	return filepath.Join(b.root, "bench", "testdata", name)
}

// runScript runs W1 (push) or W2 (pick 1 + complete) with pgbench and a
// script of bench/testdata, then counts the documents.
func (b *bench) runScript(ctx context.Context, s *sample) error {
	tmpl, script := tmplFetchq, "w1-push-fetchq.sql"
	if s.Target == tExt {
		tmpl = tmplExt
	}
	if s.Target == tSQL {
		script = "w1-push-sql.sql"
	}
	s.Unit = "pushes/s"
	preloaded := int64(0)
	if s.Workload == "W2" {
		tmpl += "_docs"
		script = strings.Replace(script, "w1-push", "w2-pick-complete", 1)
		s.Unit = "docs/s"
		preloaded = int64(b.o.docs)
	}
	db, err := b.cloneDB(ctx, tmpl)
	if err != nil {
		return err
	}
	defer b.dropDB(ctx, db)

	port, proxy := b.pgPort, (*process)(nil)
	if s.Target == tProxy {
		if proxy, port, err = b.startProxy(ctx, db, s.Workload); err != nil {
			return err
		}
		defer proxy.stop()
	}
	// Simple protocol: the scripts substitute variables inside quoted
	// literals, as Fetchq clients splice values into their SQL text.
	if _, err := b.pgbenchMeasured(ctx, s, proxy, port, db,
		"-M", "simple", "-f", b.scriptPath(script),
		"-c", strconv.Itoa(s.Clients), "-j", strconv.Itoa(pgbenchThreads(s.Clients)),
		"-T", strconv.Itoa(b.o.seconds())); err != nil {
		return err
	}

	counts, err := b.docCounts(ctx, db)
	if err != nil {
		return fmt.Errorf("counting documents: %w", err)
	}
	if s.Workload == "W1" {
		s.Checks = fmt.Sprintf("%d pushes, %d documents (%d pending)", s.Ops, counts.total(), counts[1])
		if counts.total() != s.Ops || counts[1] != s.Ops {
			s.problemf("exactly-once: %d pushes committed but %d documents stored (%d pending)", s.Ops, counts.total(), counts[1])
		}
	} else {
		s.checkPicked(counts, preloaded, s.Ops, b.o.docs)
	}
	if proxy != nil {
		s.batchSize(ctx, proxy)
		proxy.stop()
		if errs := proxyErrors(proxy); len(errs) > 0 {
			s.problemf("the proxy logged %d errors, first: %s", len(errs), errs[0])
		}
	}
	return nil
}

// checkPicked verifies a pick + complete run: every completed operation
// completed one document (status 3), no document is left picked but not
// completed (status 2), and no document was lost or added.
func (s *sample) checkPicked(counts statusCounts, preloaded, completed int64, docs int) {
	s.Checks = fmt.Sprintf("%d completed by the clients; documents: %d completed, %d active, %d pending",
		completed, counts[3], counts[2], counts[1])
	if counts[3] != completed {
		s.problemf("exactly-once: the clients completed %d documents, the table has %d completed", completed, counts[3])
	}
	if counts[2] != 0 {
		s.problemf("exactly-once: %d documents picked but never completed", counts[2])
	}
	if counts.total() != preloaded {
		s.problemf("exactly-once: %d documents preloaded, now %d", preloaded, counts.total())
	}
	if counts[1] < int64(docs)/10 {
		s.problemf("the queue nearly ran dry (%d pending left): raise -docs", counts[1])
	}
}

// fromPgbench fills the throughput fields from a pgbench run.
func (s *sample) fromPgbench(res pgbenchResult) {
	s.Value = res.TPS
	s.Ops = res.Processed
	s.Failed = res.Failed + int64(res.Aborted)
	if res.Failed > 0 {
		s.problemf("pgbench: %d failed transactions", res.Failed)
	}
	if res.Aborted > 0 {
		s.problemf("pgbench: %d clients aborted: %s", res.Aborted, res.FirstError)
	}
}

// pgbenchMeasured runs pgbench and fills s with its throughput and where
// the CPU went meanwhile (mid is the proxy or PgBouncer, or nil).
func (b *bench) pgbenchMeasured(ctx context.Context, s *sample, mid *process, port int, db string, args ...string) (pgbenchResult, error) {
	w := b.startCPU(mid)
	res, err := b.pgbench(ctx, port, db, args...)
	w.end(b)
	if err != nil {
		return res, err
	}
	s.fromPgbench(res)
	w.record(s, res.CPU)
	return res, nil
}

// runPassthrough runs W4: pgbench -S under one protocol, or TPC-B, against
// Postgres directly, through PgBouncer or through a fresh proxy. -S shares
// one read-only database; TPC-B gets one database per target.
func (b *bench) runPassthrough(ctx context.Context, s *sample) error {
	s.Unit = "tps"
	group := "select"
	if s.Mode == "tpcb" {
		group = "tpcb_" + s.Target
	}
	db, err := b.w4DB(ctx, group)
	if err != nil {
		return err
	}
	var port int
	var proc *process
	switch s.Target {
	case tDirect:
		port = b.pgPort
	case tBouncer:
		if err := b.freshPgBouncer(ctx); err != nil {
			return err
		}
		port, proc = b.bouncerPort, b.bouncer
	case tProxy:
		var proxy *process
		if proxy, port, err = b.startProxy(ctx, db, s.Mode); err != nil {
			return err
		}
		defer proxy.stop()
		proc = proxy
	}
	args := []string{"-c", strconv.Itoa(s.Clients), "-j", strconv.Itoa(pgbenchThreads(s.Clients)), "-T", strconv.Itoa(b.o.seconds())}
	if s.Mode == "tpcb" {
		args = append(args, "-M", "simple")
	} else {
		args = append(args, "-S", "-M", s.Mode)
	}
	res, err := b.pgbenchMeasured(ctx, s, proc, port, db, args...)
	if err != nil {
		return err
	}
	s.Checks = fmt.Sprintf("%d transactions, %d failed", res.Processed, res.Failed)
	if s.Target == tProxy {
		proc.stop()
		if errs := proxyErrors(proc); len(errs) > 0 {
			s.problemf("the proxy logged %d errors, first: %s", len(errs), errs[0])
		}
	}
	return nil
}

// w4DB returns the W4 database of a group, cloning the pgbench template the
// first time.
func (b *bench) w4DB(ctx context.Context, group string) (string, error) {
	if db, ok := b.w4DBs[group]; ok {
		return db, nil
	}
	db := "w4_" + group
	if err := b.createDB(ctx, db, tmplPgbench); err != nil {
		return "", err
	}
	b.w4DBs[group] = db
	return db, nil
}

// pgbenchResult is what a pgbench run reports.
type pgbenchResult struct {
	Processed  int64
	Failed     int64
	Aborted    int
	TPS        float64
	FirstError string
	Output     string
	// CPU is pgbench's own user+system CPU time.
	CPU time.Duration
}

// pgbench runs pgbench -n with args against database db on a port of
// 127.0.0.1. A run whose clients aborted (exit status 2) is a result, not
// an error.
func (b *bench) pgbench(ctx context.Context, port int, db string, args ...string) (pgbenchResult, error) {
	full := append([]string{"-n"}, args...)
	full = append(full, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres", db)
	cmd := exec.CommandContext(ctx, "pgbench", full...)
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	out, err := cmd.CombinedOutput()
	res := parsePgbench(string(out))
	if cmd.ProcessState != nil {
		res.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 2 && res.Aborted > 0) {
		return res, fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args, " "), err, tailLines(string(out), 10))
	}
	if res.TPS == 0 && res.Aborted == 0 {
		return res, fmt.Errorf("pgbench %s: no tps in its output\n%s", strings.Join(args, " "), tailLines(string(out), 10))
	}
	return res, nil
}

var (
	rePgProcessed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	rePgFailed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	rePgTPS       = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	// One line per aborted client, e.g. "pgbench: error: client 0 script 0
	// aborted in command 1 query 0: ERROR: ..." or "... client 1 script 0
	// command 0 query 0: expected one row, got 0".
	rePgAborted = regexp.MustCompile(`(?m)^pgbench: error: client \d+ .*$`)
)

// parsePgbench extracts the counts of pgbench's summary.
func parsePgbench(out string) pgbenchResult {
	res := pgbenchResult{Output: out}
	if m := rePgProcessed.FindStringSubmatch(out); m != nil {
		res.Processed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := rePgFailed.FindStringSubmatch(out); m != nil {
		res.Failed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := rePgTPS.FindStringSubmatch(out); m != nil {
		res.TPS, _ = strconv.ParseFloat(m[1], 64)
	}
	aborted := rePgAborted.FindAllString(out, -1)
	res.Aborted = len(aborted)
	if len(aborted) > 0 {
		res.FirstError = aborted[0]
	}
	return res
}
