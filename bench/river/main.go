// Command river-bench is the River baseline of the fetchq-proxy benchmark
// (W3): a burn-down of no-op jobs, with the client settings River's own
// benchmark (cmd/river/riverbench) uses for maximum throughput.
//
// It lives in its own module so that the proxy's module never depends on
// River. cmd/fetchq-bench builds it and runs it against its throw-away
// Postgres; it can also be run by hand:
//
//	go run . setup -dsn 'host=127.0.0.1 port=5432 user=postgres dbname=r' -jobs 100000
//	go run . work -dsn 'host=127.0.0.1 port=5432 user=postgres dbname=r' -duration 10s
//
// setup migrates the database and inserts -jobs available jobs. work starts
// a client with a no-op worker, counts the completions River reports (the
// subscription fires after the completer has written them), stops after
// -duration or when every job is done, stops the client cleanly and prints
// one JSON object (see [result]) with the throughput and the exactly-once
// checks: every job worked once, completed jobs in the table equal to the
// completions counted, none left running.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "river-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "setup" && args[0] != "work") {
		fmt.Fprintln(stderr, "usage: river-bench setup|work -dsn DSN [flags]")
		return errors.New("missing or unknown subcommand")
	}
	fs := flag.NewFlagSet("river-bench "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dsn := fs.String("dsn", os.Getenv("DATABASE_URL"), "database to use (libpq DSN or URL; default $DATABASE_URL)")
	jobs := fs.Int("jobs", 100_000, "setup: number of jobs to insert")
	duration := fs.Duration("duration", 10*time.Second, "work: how long to work before stopping (earlier if all jobs are done)")
	workers := fs.Int("workers", 2_000, "work: MaxWorkers of the default queue (riverbench's tuned value)")
	logLevel := fs.String("log-level", "warn", "River's log level")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *dsn == "" {
		return errors.New("-dsn is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := pgxpool.ParseConfig(*dsn)
	if err != nil {
		return err
	}
	cfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	if args[0] == "setup" {
		return setup(ctx, pool, *jobs, logger)
	}
	res, err := work(ctx, pool, *duration, *workers, logger)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	return enc.Encode(res)
}

// noopArgs are the arguments of a benchmark job.
type noopArgs struct {
	Num int `json:"num"`
}

// Kind implements river.JobArgs.
func (noopArgs) Kind() string { return "noop" }

// noopWorker does nothing but record which job it ran, so duplicates can
// be detected. It is safe for concurrent use.
type noopWorker struct {
	river.WorkerDefaults[noopArgs]
	mu     sync.Mutex
	seen   map[int64]int
	worked atomic.Int64
}

// Work implements river.Worker.
func (w *noopWorker) Work(ctx context.Context, j *river.Job[noopArgs]) error {
	w.mu.Lock()
	w.seen[j.ID]++
	w.mu.Unlock()
	w.worked.Add(1)
	return nil
}

// setup migrates the database and inserts n available jobs with COPY.
func setup(ctx context.Context, pool *pgxpool.Pool, n int, logger *slog.Logger) error {
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Logger: logger})
	if err != nil {
		return err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	// An insert-only client: no Queues, no Workers.
	client, err := river.NewClient(driver, &river.Config{Logger: logger})
	if err != nil {
		return err
	}
	const batch = 5_000
	params := make([]river.InsertManyParams, 0, batch)
	for i := 1; i <= n; i++ {
		params = append(params, river.InsertManyParams{Args: noopArgs{Num: i}})
		if len(params) == batch || i == n {
			if _, err := client.InsertManyFast(ctx, params); err != nil {
				return fmt.Errorf("inserting jobs: %w", err)
			}
			params = params[:0]
		}
	}
	_, err = pool.Exec(ctx, "VACUUM ANALYZE river_job")
	return err
}

// result is what work prints, one JSON object.
type result struct {
	// Completed is the number of completion events received while the
	// clock ran.
	Completed int64 `json:"completed"`
	// Seconds is the measured time: from Start to the deadline, or to the
	// last completion when every job was done earlier (burn-down).
	Seconds float64 `json:"seconds"`
	// JobsPerSec is Completed / Seconds.
	JobsPerSec float64 `json:"jobs_per_sec"`
	// Drained reports that no available job was left.
	Drained bool `json:"drained"`
	// Worked is how many times the worker ran; Distinct how many distinct
	// jobs it ran; Duplicates how many jobs ran more than once.
	Worked     int64 `json:"worked"`
	Distinct   int64 `json:"distinct"`
	Duplicates int64 `json:"duplicates"`
	// Failed counts failed, discarded or cancelled job events.
	Failed int64 `json:"failed"`
	// States counts the rows of river_job by state after the client
	// stopped.
	States map[string]int64 `json:"states"`
	// CompletedAfterStop is the number of completion events including
	// those delivered while the client stopped; it must equal
	// States["completed"] and Distinct.
	CompletedAfterStop int64 `json:"completed_after_stop"`
}

// work runs a River client over the jobs setup inserted.
func work(ctx context.Context, pool *pgxpool.Pool, duration time.Duration, maxWorkers int, logger *slog.Logger) (*result, error) {
	var total int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE state = 'available'").Scan(&total); err != nil {
		return nil, err
	}
	worker := &noopWorker{seen: make(map[int64]int, total)}
	workers := river.NewWorkers()
	river.AddWorker(workers, worker)
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		// riverbench's settings: they "have an outsized effect on results".
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
		Logger:            logger,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: maxWorkers}},
		Workers:           workers,
	})
	if err != nil {
		return nil, err
	}
	events, cancelSub := client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: int(total) + 1_000,
		Kinds:    []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled},
	})
	defer cancelSub()

	var (
		completed, failed atomic.Int64
		lastMu            sync.Mutex
		last              time.Time
		allDone           = make(chan struct{})
	)
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		for ev := range events {
			if ev.Kind != river.EventKindJobCompleted || ev.Job.State != rivertype.JobStateCompleted {
				failed.Add(1)
				continue
			}
			lastMu.Lock()
			last = time.Now()
			lastMu.Unlock()
			if completed.Add(1) == total {
				close(allDone)
			}
		}
	}()

	start := time.Now()
	if err := client.Start(ctx); err != nil {
		return nil, err
	}
	timer := time.NewTimer(duration)
	defer timer.Stop()
	var end time.Time
	drained := false
	select {
	case <-timer.C:
		end = time.Now()
	case <-allDone:
		drained = true
		lastMu.Lock()
		end = last
		lastMu.Unlock()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	counted := completed.Load()

	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := client.Stop(stopCtx); err != nil {
		return nil, fmt.Errorf("stopping the client: %w", err)
	}
	cancelSub() // closes events once the client has delivered everything
	select {
	case <-consumerDone:
	case <-time.After(5 * time.Second):
	}

	res := &result{
		Completed:          counted,
		Seconds:            end.Sub(start).Seconds(),
		Drained:            drained,
		Worked:             worker.worked.Load(),
		Failed:             failed.Load(),
		States:             map[string]int64{},
		CompletedAfterStop: completed.Load(),
	}
	if res.Seconds > 0 {
		res.JobsPerSec = float64(res.Completed) / res.Seconds
	}
	worker.mu.Lock()
	res.Distinct = int64(len(worker.seen))
	for _, n := range worker.seen {
		if n > 1 {
			res.Duplicates++
		}
	}
	worker.mu.Unlock()
	rows, err := pool.Query(stopCtx, "SELECT state::text, count(*) FROM river_job GROUP BY state")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var state string
		var n int64
		if err := rows.Scan(&state, &n); err != nil {
			return nil, err
		}
		res.States[state] = n
	}
	return res, rows.Err()
}
