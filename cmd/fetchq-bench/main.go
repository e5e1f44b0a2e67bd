// Command fetchq-bench measures fetchq-proxy against its baselines in one
// run, on one throw-away Postgres, and prints the results side by side.
//
//	go run ./cmd/fetchq-bench                       # everything, 3 reps of 10 s
//	go run ./cmd/fetchq-bench -workloads W2,W4 -reps 5 -duration 20s
//	go run ./cmd/fetchq-bench -extension-sql ~/fetchq--4.0.2.sql -out results.json
//
// It starts PostgreSQL with internal/pgserver (TCP on 127.0.0.1, so every
// path crosses the same loopback), builds and starts the proxy binary, and
// runs PgBouncer (session mode) for the pass-through comparison. Each
// measurement gets a fresh database cloned from a template, and a fresh
// proxy process whose --upstream is that database, as in a deployment.
//
// The workloads (see bench/README.md):
//
//	W1  single doc_push, 8 clients                (pgbench script)
//	W2  doc_pick 1 + doc_complete, 1/8/32 clients (pgbench script)
//	W3  doc_pick 100 + complete them, 8 clients   (Go load generator; River)
//	W4  pass-through pgbench -S simple/extended/prepared and TPC-B,
//	    direct vs PgBouncer vs the proxy, with the proxy's CPU per transaction
//	W5  proxy RSS per idle connection at 1,000 and 10,000 connections
//
// Repetitions are interleaved (rep 1 of every measurement, then rep 2, ...),
// with the order of the targets rotated from one repetition to the next;
// the tables show medians. After every measurement the documents are
// counted by status to check that nothing failed and that every picked
// document was completed exactly once.
//
// The Fetchq extension is measured only when -extension-sql names its SQL
// file; the harness never ships or downloads it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil && !errors.Is(err, errUsage) {
		fmt.Fprintln(os.Stderr, "fetchq-bench:", err)
	}
	if err != nil {
		os.Exit(1)
	}
}

// errUsage reports bad command-line arguments; flag has already printed the
// reason and the usage.
var errUsage = errors.New("usage")

// allWorkloads lists the workloads in the order they run.
var allWorkloads = []string{"W1", "W2", "W3", "W4", "W5"}

// options are the command-line settings.
type options struct {
	reps          int
	duration      time.Duration
	workloads     []string
	extensionSQL  string
	docs          int
	out           string
	w2Clients     []int
	w4Clients     int
	scale         int
	idleConns     []int
	riverWorkers  int
	fast          bool
	keep          bool
	maxMemPercent int
	quiet         float64
	quietWait     time.Duration
	proxyArgs     []string
}

// has reports whether workload w was selected.
func (o *options) has(w string) bool { return slices.Contains(o.workloads, w) }

// seconds is the duration in whole seconds, as pgbench -T takes it.
func (o *options) seconds() int { return int(math.Ceil(o.duration.Seconds())) }

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("fetchq-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.reps, "reps", 3, "interleaved repetitions of every measurement; the tables show medians")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measurement (whole seconds)")
	workloads := fs.String("workloads", strings.Join(allWorkloads, ","), "comma-separated workloads to run")
	fs.StringVar(&o.extensionSQL, "extension-sql", "", "SQL file of the Fetchq 4.0.2 extension; when set, W1-W3 also run against it (never committed, never downloaded)")
	fs.IntVar(&o.docs, "docs", 100_000, "pending documents (and River jobs) preloaded for each W2/W3 measurement")
	fs.StringVar(&o.out, "out", "", "also write every sample and the summary as JSON to this file")
	w2 := fs.String("w2-clients", "1,8,32", "client counts of W2")
	fs.IntVar(&o.w4Clients, "w4-clients", 16, "pgbench clients of W4")
	fs.IntVar(&o.scale, "w4-scale", 10, "pgbench scale factor of W4")
	idle := fs.String("idle-conns", "1000,10000", "idle connection counts of W5")
	fs.IntVar(&o.riverWorkers, "river-workers", 2_000, "MaxWorkers of the River client (riverbench's tuned value)")
	fs.IntVar(&o.maxMemPercent, "w5-max-mem", 75, "W5 uses at most this percentage of MemAvailable; larger counts are capped to what fits")
	fs.BoolVar(&o.fast, "fast", false, "run Postgres with fsync, synchronous_commit and full_page_writes off (default: durable commits)")
	fs.Float64Var(&o.quiet, "quiet", 0, "before each measurement, wait until other processes use at most this percentage of the CPUs (0: do not wait)")
	fs.DurationVar(&o.quietWait, "quiet-wait", 2*time.Minute, "longest wait for -quiet before measuring anyway")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (Postgres data, proxy and PgBouncer logs)")
	proxyArgs := fs.String("proxy-args", "", `more fetchq-proxy flags, space-separated (e.g. "--batch-in-flight 2"), to measure a setting against the same baselines in one run`)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return nil, errUsage
	}
	var err error
	if o.workloads, err = parseWorkloads(*workloads); err != nil {
		return nil, fmt.Errorf("-workloads: %w", err)
	}
	if o.w2Clients, err = parseInts(*w2); err != nil {
		return nil, fmt.Errorf("-w2-clients: %w", err)
	}
	if o.idleConns, err = parseInts(*idle); err != nil {
		return nil, fmt.Errorf("-idle-conns: %w", err)
	}
	if o.proxyArgs, err = parseProxyArgs(*proxyArgs); err != nil {
		return nil, fmt.Errorf("-proxy-args: %w", err)
	}
	switch {
	case o.reps < 1:
		return nil, errors.New("-reps must be at least 1")
	case o.duration < time.Second:
		return nil, errors.New("-duration must be at least 1s")
	case o.docs < 1:
		return nil, errors.New("-docs must be positive")
	case o.w4Clients < 1 || o.scale < 1 || o.riverWorkers < 1:
		return nil, errors.New("-w4-clients, -w4-scale and -river-workers must be positive")
	case o.maxMemPercent < 1 || o.maxMemPercent > 90:
		return nil, errors.New("-w5-max-mem must be between 1 and 90")
	}
	if o.extensionSQL != "" {
		if _, err := os.Stat(o.extensionSQL); err != nil {
			return nil, fmt.Errorf("-extension-sql: %w", err)
		}
	}
	return o, nil
}

// benchOwnedFlags are the proxy flags the harness sets for every
// measurement (its address, database and counters).
var benchOwnedFlags = []string{"listen", "upstream", "debug-addr", "log-level"}

// parseProxyArgs splits -proxy-args into the proxy's arguments, refusing
// the flags the harness sets itself.
func parseProxyArgs(s string) ([]string, error) {
	args := strings.Fields(s)
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if slices.Contains(benchOwnedFlags, name) {
			return nil, fmt.Errorf("--%s is set by the harness", name)
		}
	}
	return args, nil
}

// parseWorkloads parses "W1,w3" into canonical, ordered, unique names.
func parseWorkloads(s string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		w := strings.ToUpper(strings.TrimSpace(f))
		if w == "" {
			continue
		}
		if !slices.Contains(allWorkloads, w) {
			return nil, fmt.Errorf("unknown workload %q (want %s)", f, strings.Join(allWorkloads, ", "))
		}
		if !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no workload selected")
	}
	slices.SortFunc(out, func(a, b string) int { return slices.Index(allWorkloads, a) - slices.Index(allWorkloads, b) })
	return out, nil
}

// parseInts parses a comma-separated list of positive integers.
func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(f, "_", ""))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// run is main without the process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	b := newBench(o, stderr)
	defer b.close()
	if err := b.setup(ctx); err != nil {
		return err
	}
	if err := b.runAll(ctx); err != nil {
		return err
	}
	rep := b.report()
	rep.print(stdout)
	if o.out != "" {
		if err := rep.writeJSON(o.out); err != nil {
			return fmt.Errorf("-out: %w", err)
		}
		fmt.Fprintf(stdout, "\nsamples and summary written to %s\n", o.out)
	}
	return nil
}
