package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Hand-written batched SQL of W3, on the proxy's plain tables: one
// statement picks up to 100 due documents in the proxy's order, one
// completes them.
const (
	batchPickSQL = `UPDATE fetchq_data.bench__docs d
   SET status = 2, next_iteration = now() + interval '5 minutes', attempts = d.attempts + 1
 WHERE d.subject IN (
       SELECT subject FROM fetchq_data.bench__docs
        WHERE lock_upgrade IS NULL AND status = 1 AND version = 0 AND next_iteration <= now()
        ORDER BY priority DESC, next_iteration ASC, attempts ASC
        LIMIT 100 FOR UPDATE SKIP LOCKED)
RETURNING d.subject`
	batchCompleteSQL = `UPDATE fetchq_data.bench__docs
   SET status = 3, attempts = 0, iterations = iterations + 1, last_iteration = now(), next_iteration = '2970-01-01 00:00:00+00'
 WHERE subject = ANY($1::text[]) AND status = 2`
)

// Fetchq calls of W3: the same text for the proxy and the extension.
var (
	fetchqPickSQL     = fmt.Sprintf("SELECT subject FROM fetchq.doc_pick('%s', 0, %d, '5m')", queueName, w3Batch)
	fetchqCompleteSQL = "SELECT affected_rows FROM fetchq.doc_complete('" + queueName + "', $1)"
)

// queueOps is one W3 client's way to pick a batch and complete it.
type queueOps interface {
	// pick locks up to 100 documents and returns their subjects.
	pick(ctx context.Context, conn *pgx.Conn) ([]string, error)
	// complete completes the picked documents and returns how many it
	// completed.
	complete(ctx context.Context, conn *pgx.Conn, subjects []string) (int64, error)
}

// fetchqOps picks with one doc_pick call and completes with one
// doc_complete call per document, each call its own transaction: the
// Fetchq API has no batch complete. The completes go as one pipeline (the
// extended protocol, every call followed by its own Sync, as pgx's and
// libpq's pipeline modes send them), so a client does not wait a round
// trip per document.
type fetchqOps struct{}

func (fetchqOps) pick(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, _ := conn.Query(ctx, fetchqPickSQL)
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (fetchqOps) complete(ctx context.Context, conn *pgx.Conn, subjects []string) (int64, error) {
	p := conn.PgConn().StartPipeline(ctx)
	for _, s := range subjects {
		p.SendQueryParams(fetchqCompleteSQL, [][]byte{[]byte(s)}, nil, nil, nil)
		p.SendPipelineSync()
	}
	if err := p.Flush(); err != nil {
		p.Close()
		return 0, err
	}
	var n int64
	var failed error
	for _, s := range subjects {
		res, err := p.GetResults()
		if err == nil {
			rr, ok := res.(*pgconn.ResultReader)
			if !ok {
				err = fmt.Errorf("doc_complete(%q): unexpected %T in the pipeline", s, res)
			} else if r := rr.Read(); r.Err != nil {
				err = r.Err
			} else if len(r.Rows) != 1 || string(r.Rows[0][0]) != "1" {
				err = fmt.Errorf("doc_complete(%q) returned %q, want one row, 1", s, r.Rows)
			}
		}
		if err == nil && failed == nil {
			n++ // the completed documents are the first n
		} else if failed == nil {
			failed = err
		}
		if _, err := p.GetResults(); err != nil && failed == nil { // the call's Sync
			failed = err
		}
	}
	if err := p.Close(); err != nil && failed == nil {
		failed = err
	}
	return n, failed
}

// batchOps is hand-written batched SQL: two statements per 100 documents.
type batchOps struct{}

func (batchOps) pick(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, _ := conn.Query(ctx, batchPickSQL)
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (batchOps) complete(ctx context.Context, conn *pgx.Conn, subjects []string) (int64, error) {
	tag, err := conn.Exec(ctx, batchCompleteSQL, subjects)
	if err != nil {
		return 0, err
	}
	if n := tag.RowsAffected(); n != int64(len(subjects)) {
		return n, fmt.Errorf("batched complete of %d documents affected %d rows", len(subjects), n)
	}
	return int64(len(subjects)), nil
}

// driverClient is what one W3 client did.
type driverClient struct {
	completed []string
	end       time.Time
	drained   bool
	err       error
}

// runDriver runs W3 for the proxy, the extension or hand-written batched
// SQL: each client loops pick 100 + complete them until the time is up (it
// always completes what it picked) or the queue is empty. Clients connect
// before the clock starts. The throughput counts completed documents, up
// to the last client's end.
func (b *bench) runDriver(ctx context.Context, s *sample) error {
	s.Unit = "docs/s"
	tmpl := tmplFetchqDocs
	var ops queueOps = fetchqOps{}
	switch s.Target {
	case tExt:
		tmpl = tmplExtDocs
	case tSQL:
		ops = batchOps{}
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

	conns := make([]*pgx.Conn, s.Clients)
	for i := range conns {
		// Simple protocol, values in the SQL text, as Fetchq clients and
		// the pgbench scripts of W1 and W2 send them.
		if conns[i], err = connectPort(ctx, port, db); err != nil {
			return err
		}
		defer conns[i].Close(context.WithoutCancel(ctx))
	}

	cpu := b.startCPU(proxy)
	self0 := selfCPU()
	clients := make([]driverClient, s.Clients)
	start := time.Now()
	deadline := start.Add(b.o.duration)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			c := &clients[i]
			defer func() { c.end = time.Now() }()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				subjects, err := ops.pick(ctx, conns[i])
				if err != nil {
					c.err = fmt.Errorf("pick: %w", err)
					return
				}
				if len(subjects) == 0 {
					c.drained = true
					return
				}
				n, err := ops.complete(ctx, conns[i], subjects)
				c.completed = append(c.completed, subjects[:n]...)
				if err != nil {
					c.err = fmt.Errorf("complete: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	self := selfCPU() - self0
	cpu.end(b)

	end := start
	seen := make(map[string]int, b.o.docs)
	var dup int64
	drained := false
	for _, c := range clients {
		if c.end.After(end) {
			end = c.end
		}
		drained = drained || c.drained
		if c.err != nil {
			s.Failed++
			s.problemf("client: %v", c.err)
		}
		for _, subj := range c.completed {
			if seen[subj]++; seen[subj] == 2 {
				dup++
			}
		}
		s.Ops += int64(len(c.completed))
	}
	s.Seconds = end.Sub(start).Seconds()
	if s.Seconds > 0 {
		s.Value = float64(s.Ops) / s.Seconds
	}
	cpu.record(s, self)
	if proxy != nil && s.Ops > 0 {
		s.batchSize(ctx, proxy)
	}
	if dup > 0 {
		s.problemf("exactly-once: %d documents completed by more than one client", dup)
	}
	counts, err := b.docCounts(ctx, db)
	if err != nil {
		return fmt.Errorf("counting documents: %w", err)
	}
	s.checkPicked(counts, int64(b.o.docs), s.Ops, 0)
	if drained {
		s.Note = "queue drained before the deadline (burn-down)"
	}
	if proxy != nil {
		proxy.stop()
		if errs := proxyErrors(proxy); len(errs) > 0 {
			s.problemf("the proxy logged %d errors, first: %s", len(errs), errs[0])
		}
	}
	return nil
}

// riverResult is what `river-bench work` prints (bench/river).
type riverResult struct {
	Completed          int64            `json:"completed"`
	Seconds            float64          `json:"seconds"`
	JobsPerSec         float64          `json:"jobs_per_sec"`
	Drained            bool             `json:"drained"`
	Worked             int64            `json:"worked"`
	Distinct           int64            `json:"distinct"`
	Duplicates         int64            `json:"duplicates"`
	Failed             int64            `json:"failed"`
	States             map[string]int64 `json:"states"`
	CompletedAfterStop int64            `json:"completed_after_stop"`
}

// runRiver runs River's burn-down of no-op jobs on a clone of the River
// template and checks that every job ran and completed exactly once.
func (b *bench) runRiver(ctx context.Context, s *sample) error {
	s.Unit = "docs/s"
	db, err := b.cloneDB(ctx, tmplRiver)
	if err != nil {
		return err
	}
	defer b.dropDB(ctx, db)
	cmd := exec.CommandContext(ctx, b.riverBin, "work", "-dsn", dsn(b.pgPort, db),
		"-duration", b.o.duration.String(), "-workers", strconv.Itoa(b.o.riverWorkers))
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return fmt.Errorf("river-bench work: %w\n%s", err, tailLines(string(exit.Stderr), 10))
		}
		return fmt.Errorf("river-bench work: %w", err)
	}
	var r riverResult
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("river-bench work printed %q: %w", out, err)
	}
	s.Value, s.Ops, s.Seconds, s.Failed = r.JobsPerSec, r.Completed, r.Seconds, r.Failed
	s.Checks = fmt.Sprintf("%d completed in %.1fs; worked %d (%d distinct); table: %v", r.Completed, r.Seconds, r.Worked, r.Distinct, r.States)
	if r.Failed > 0 {
		s.problemf("River: %d jobs failed or were cancelled", r.Failed)
	}
	if r.Duplicates > 0 {
		s.problemf("exactly-once: River ran %d jobs more than once", r.Duplicates)
	}
	if r.States["completed"] != r.CompletedAfterStop || r.Distinct != r.CompletedAfterStop {
		s.problemf("exactly-once: %d completion events, %d distinct jobs worked, %d completed rows",
			r.CompletedAfterStop, r.Distinct, r.States["completed"])
	}
	if r.States["running"] != 0 {
		s.problemf("exactly-once: %d jobs left running", r.States["running"])
	}
	if r.Drained {
		s.Note = "all jobs done before the deadline (burn-down)"
	}
	return nil
}
