package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/fetchq/fetchq-proxy/internal/pgserver"
	"github.com/fetchq/fetchq-proxy/proxy"
	"github.com/fetchq/fetchq-proxy/rewrite"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// options are the command-line settings. Each flag falls back to an
// environment variable, named in its usage text.
type options struct {
	listen          string
	upstream        string
	dataDir         string
	logLevel        string
	tlsCert         string
	tlsKey          string
	shutdownTimeout time.Duration
	startupTimeout  time.Duration
	maxClients      int
	planCache       int
	fetchqVersion   string
	debugAddr       string
	maintInterval   time.Duration
	batchInFlight   int
	procs           int
	relayLoop       bool
}

// flagSpec ties a flag to its environment variable.
type flagSpec struct {
	name, env string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("fetchq-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// Each flag's environment variable is applied through the flag's own
	// parser before the command line, so a flag given wins and a value
	// that does not parse is an error naming its variable, not a silent
	// default. An empty variable counts as unset.
	var envs []flagSpec
	env := func(name, env, usage string) string {
		envs = append(envs, flagSpec{name: name, env: env})
		return fmt.Sprintf("%s (env %s)", usage, env)
	}
	str := func(p *string, name, e, def, usage string) {
		fs.StringVar(p, name, def, env(name, e, usage))
	}
	str(&o.listen, "listen", "FETCHQ_LISTEN", "127.0.0.1:6432", "TCP address clients connect to")
	str(&o.upstream, "upstream", "FETCHQ_UPSTREAM", "", "upstream Postgres as a libpq URL or key=value DSN; PG* variables fill what it omits. Empty: start an embedded Postgres")
	str(&o.dataDir, "data-dir", "FETCHQ_DATA_DIR", defaultDataDir(), "directory of the embedded Postgres (used only without --upstream)")
	str(&o.logLevel, "log-level", "FETCHQ_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	str(&o.tlsCert, "tls-cert", "FETCHQ_TLS_CERT", "", "PEM certificate file; with --tls-key, clients may use TLS (sslmode=require)")
	str(&o.tlsKey, "tls-key", "FETCHQ_TLS_KEY", "", "PEM private key file for --tls-cert")
	str(&o.debugAddr, "debug-addr", "FETCHQ_DEBUG_ADDR", "", "address of an HTTP listener serving Go's pprof profiles under /debug/pprof/ (empty: none; keep it on loopback)")
	str(&o.fetchqVersion, "fetchq-version", "FETCHQ_VERSION", "4.0.0", "version fetchq.info() reports; Fetchq clients refuse a version other than the one they were built for (the npm fetchq@4.1.1 client wants 4.0.0)")
	dur := func(p *time.Duration, name, e string, def time.Duration, usage string) {
		fs.DurationVar(p, name, def, env(name, e, usage))
	}
	dur(&o.shutdownTimeout, "shutdown-timeout", "FETCHQ_SHUTDOWN_TIMEOUT", 30*time.Second, "on SIGINT/SIGTERM, how long sessions may take to finish their transaction before they are closed")
	dur(&o.maintInterval, "maintenance-interval", "FETCHQ_MAINTENANCE_INTERVAL", backend.DefaultMaintainInterval, "how often the maintainer promotes due documents and re-queues expired locks")
	dur(&o.startupTimeout, "startup-timeout", "FETCHQ_STARTUP_TIMEOUT", 15*time.Second, "time a client has to complete the startup and authentication exchange")
	num := func(p *int, name, e string, def int, usage string) {
		fs.IntVar(p, name, def, env(name, e, usage))
	}
	num(&o.maxClients, "max-clients", "FETCHQ_MAX_CLIENTS", 0, "maximum concurrent client connections, 0 for no limit")
	num(&o.planCache, "plan-cache", "FETCHQ_PLAN_CACHE", 4096, "statement texts whose parsed plans are cached")
	num(&o.batchInFlight, "batch-in-flight", "FETCHQ_BATCH_IN_FLIGHT", 1, "group commit: how many batches of one queue and operation (the picks, completes and kills of a queue count as one) may run at once on the service pool; more overlap round trips, fewer make larger batches; above 1, a client's pipelined calls run one at a time (their order could not be kept across batches running at once)")
	flagBool := func(p *bool, name, e string, def bool, usage string) {
		fs.BoolVar(p, name, def, env(name, e, usage))
	}
	flagBool(&o.relayLoop, "relay-loop", "FETCHQ_RELAY_LOOP", true, "pass the messages of sessions that only forward statements through one epoll loop (Linux) instead of two goroutines per session; a session leaves it at its first Fetchq call")
	num(&o.procs, "procs", "FETCHQ_PROCS", 0, "CPUs the proxy's Go code runs on at once (GOMAXPROCS); 0: the GOMAXPROCS environment variable if set, else half the CPUs available, at least one, leaving the rest to a Postgres on the same machine")
	for _, f := range envs {
		v := os.Getenv(f.env)
		if v == "" {
			continue
		}
		if err := fs.Set(f.name, v); err != nil {
			// The value is not echoed: a variable may hold a secret.
			return nil, fmt.Errorf("environment variable %s (--%s) is not a valid %s", f.env, f.name, flagType(fs.Lookup(f.name)))
		}
	}
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
	if o.procs < 0 {
		return nil, errors.New("--procs must not be negative")
	}
	if o.batchInFlight < 1 {
		return nil, errors.New("--batch-in-flight must be at least 1")
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key must be given together")
	}
	return o, nil
}

// procs returns the GOMAXPROCS to set for the --procs value flag, 0 to
// keep the runtime's: the flag when set, else (unless the GOMAXPROCS
// environment variable chose) half of avail, the CPUs the runtime found,
// at least one.
// A proxy spends its time in system calls moving small messages, and
// usually shares the machine with Postgres: on 2 CPUs shared with Postgres
// and the clients, one P used 11-25% less CPU per forwarded transaction or
// call than two, with equal or better throughput (fewer thread wake-ups
// and cross-CPU hand-offs).
func procs(flag int, envSet bool, avail int) int {
	switch {
	case flag > 0:
		return flag
	case envSet:
		return 0
	}
	return max(1, avail/2)
}

// flagType names the kind of value a flag takes, as its help does.
func flagType(f *flag.Flag) string {
	if name, _ := flag.UnquoteUsage(f); name != "" {
		return name
	}
	return "boolean (true or false)"
}

// defaultDataDir is the embedded Postgres' home: under the user's data
// directory ($XDG_DATA_HOME or ~/.local/share). Root gets
// /var/lib/fetchq-proxy, because the server runs as the postgres user, who
// cannot enter /root.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/fetchq-proxy"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "fetchq-proxy")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "fetchq-proxy")
	}
	return filepath.Join(os.TempDir(), "fetchq-proxy")
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// run is main without the process: it returns when ctx is cancelled (after
// a graceful shutdown) or on a fatal error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	logger, err := newLogger(o.logLevel, stderr)
	if err != nil {
		return err
	}
	if n := procs(o.procs, os.Getenv("GOMAXPROCS") != "", runtime.GOMAXPROCS(0)); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	logger.Debug("CPUs", "gomaxprocs", runtime.GOMAXPROCS(0))

	var upstream *pgconn.Config
	var embedded *pgserver.Server
	serviceDSN := o.upstream
	if o.upstream != "" {
		upstream, err = pgconn.ParseConfig(o.upstream)
		if err != nil {
			// pgconn redacts the password in its parse errors.
			return fmt.Errorf("--upstream: %w", err)
		}
	} else {
		embedded, err = pgserver.Start(ctx, pgserver.Options{
			DataDir: filepath.Join(o.dataDir, "pgdata"),
			Logger:  logger,
		})
		if err != nil {
			return fmt.Errorf("embedded Postgres: %w", err)
		}
		defer func() {
			if err := embedded.Stop(); err != nil {
				logger.Error("stopping embedded Postgres", "err", err)
			}
		}()
		serviceDSN = embedded.ConnString("postgres", "postgres")
		upstream, err = pgconn.ParseConfig(serviceDSN)
		if err != nil {
			return err
		}
	}

	// The service pool (credentials and database of --upstream) runs
	// maintenance and flushes counters; client calls run on the clients'
	// own connections.
	poolCfg, err := pgxpool.ParseConfig(serviceDSN)
	if err != nil {
		return fmt.Errorf("--upstream: %w", err)
	}
	poolCfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("service pool: %w", err)
	}
	defer pool.Close()
	metrics := backend.NewMetrics()
	store := backend.New(backend.Config{Logger: logger, Version: o.fetchqVersion, Metrics: metrics})
	maintainer, err := backend.NewMaintainer(backend.MaintainerConfig{
		Pool: pool, Store: store, Metrics: metrics, Logger: logger, Interval: o.maintInterval,
	})
	if err != nil {
		return err
	}
	// The maintainer outlives the signal: sessions draining after SIGINT
	// still commit work whose counters its final flush (Stop) must write.
	if err := maintainer.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}

	batcher := backend.NewBatcher(backend.BatcherConfig{Pool: pool, Store: store, MaxInFlight: o.batchInFlight})
	cfg := proxy.Config{
		Upstream:       upstream,
		Logger:         logger,
		Rewriter:       rewrite.New(o.planCache),
		Queue:          store,
		Database:       batcher.Database(), // Fetchq is served where the batches run
		Counters:       metrics,
		Batcher:        batcher,
		StartupTimeout: o.startupTimeout,
		MaxClients:     o.maxClients,
		NoRelayLoop:    !o.relayLoop,
	}
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return fmt.Errorf("loading TLS certificate: %w", err)
		}
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	srv := proxy.NewServer(cfg)
	if o.debugAddr != "" {
		dln, err := net.Listen("tcp", o.debugAddr)
		if err != nil {
			return fmt.Errorf("--debug-addr: %w", err)
		}
		defer dln.Close()
		go func() { _ = http.Serve(dln, debugMux(batcher, srv)) }()
		logger.Info("serving debug endpoints", "addr", dln.Addr().String())
	}

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	logger.Info("fetchq-proxy listening", "addr", ln.Addr().String(), "embedded", embedded != nil)
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if embedded != nil {
		fmt.Fprintf(stdout, "fetchq-proxy is running on an embedded Postgres (data in %s). Connect with:\n  psql %s\n",
			o.dataDir, quoteDSN(fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres", host, port)))
	} else {
		fmt.Fprintf(stdout, "fetchq-proxy is listening on %s, forwarding to %s\n",
			ln.Addr(), redactedTarget(upstream))
	}

	select {
	case err := <-serveErr:
		srv.Close()
		maintainer.Stop()
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down: waiting for sessions to finish their transactions", "timeout", o.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("shutdown timeout reached; closed busy sessions", "err", err)
	}
	<-serveErr
	// Last: the maintainer's final flush writes the counters of every
	// session's committed work.
	maintainer.Stop()
	return nil
}

// redactedTarget names the upstream by host and port only: never the
// password or the full DSN.
func redactedTarget(c *pgconn.Config) string {
	network, addr := pgconn.NetworkAddress(c.Host, c.Port)
	return network + " " + addr
}

func quoteDSN(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// debugMux serves --debug-addr: Go's pprof profiles under /debug/pprof/,
// the group commit counters at /debug/group_commit ({"calls": N,
// "batches": M}: calls run in batches, and the statements that ran them;
// calls/batches is the mean batch size) and the relay loop's at
// /debug/relay ({"sessions": N, "handed_back": M}: sessions it serves now,
// and those it handed back to their own goroutines).
func debugMux(b *backend.Batcher, srv *proxy.Server) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/group_commit", func(w http.ResponseWriter, _ *http.Request) {
		calls, batches := b.Stats()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{"calls": calls, "batches": batches})
	})
	mux.HandleFunc("/debug/relay", func(w http.ResponseWriter, _ *http.Request) {
		sessions, back := srv.RelayStats()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{"sessions": sessions, "handed_back": back})
	})
	return mux
}
