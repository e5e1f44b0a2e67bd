package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fetchq/fetchq-proxy/internal/pgserver"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// queueName is the Fetchq queue every workload uses; the pgbench scripts in
// bench/testdata name it too.
const queueName = "bench"

// Template databases, built once per run and cloned for every measurement.
const (
	tmplFetchq     = "tmpl_fetchq"      // fetchq.init() and the queue, through the proxy
	tmplFetchqDocs = "tmpl_fetchq_docs" // the same with -docs pending documents
	tmplExt        = "tmpl_ext"         // the extension, fetchq.init() and the queue
	tmplExtDocs    = "tmpl_ext_docs"    // the same with -docs pending documents
	tmplRiver      = "tmpl_river"       // River's schema with -docs available jobs
	tmplPgbench    = "tmpl_pgbench"     // pgbench -i -s <scale>
)

// bench is one benchmark run: its throw-away Postgres, the binaries it
// built, PgBouncer, and the samples measured so far. It is not safe for
// concurrent use.
type bench struct {
	o        *options
	progress io.Writer

	root string // repository root
	dir  string // temporary directory: Postgres data, binaries, logs
	acct *osAccount

	pg       *pgserver.Server
	pgPort   int
	pgVer    string
	proxyBin string
	riverBin string
	proxyRev string

	bouncer     *process
	bouncerPort int
	bouncerIni  string // its configuration file
	bouncerVer  string

	fileLimit   uint64
	idlePerConn int64             // W5: system memory per idle connection, last measured
	idleReady   bool              // W5: its database exists
	seq         int               // suffix of the next database name
	w4DBs       map[string]string // W4 database per group and target
	samples     []sample
	loads       []loadMark
	started     time.Time
	setupTime   time.Duration
}

// loadMark is the load average at one point of the run.
type loadMark struct {
	When string `json:"when"`
	Load string `json:"load"`
}

// newBench returns a run with options o that prints its progress on
// progress; setup starts it.
func newBench(o *options, progress io.Writer) *bench {
	return &bench{o: o, progress: progress, w4DBs: map[string]string{}, started: time.Now()}
}

// logf prints a progress line on stderr.
func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "[%s] %s\n", time.Since(b.started).Round(time.Second), fmt.Sprintf(format, args...))
}

// setup checks the tools, builds the binaries, starts Postgres and
// PgBouncer, and builds the template databases.
func (b *bench) setup(ctx context.Context) error {
	b.loads = append(b.loads, loadMark{"start", loadAverage()})
	var err error
	if b.root, err = findRepoRoot(); err != nil {
		return err
	}
	if err := b.checkTools(); err != nil {
		return err
	}
	if b.fileLimit, err = raiseFileLimit(); err != nil {
		return fmt.Errorf("raising RLIMIT_NOFILE: %w", err)
	}
	if b.acct, err = postgresAccount(); err != nil {
		return err
	}
	// Short and under /tmp: the Unix socket path must fit in 107 bytes and
	// the postgres user must reach it.
	if b.dir, err = os.MkdirTemp("/tmp", "fqbench-"); err != nil {
		return err
	}
	if err := os.Chmod(b.dir, 0o755); err != nil {
		return err
	}
	if err := b.acct.chown(b.dir); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(b.dir, "logs"), 0o777); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(b.dir, "logs"), 0o777); err != nil {
		return err
	}
	b.logf("working directory %s", b.dir)

	if err := b.build(ctx); err != nil {
		return err
	}
	if err := b.startPostgres(ctx); err != nil {
		return err
	}
	if b.o.has("W4") {
		if err := b.startPgBouncer(ctx); err != nil {
			return err
		}
	}
	if err := b.buildTemplates(ctx); err != nil {
		return err
	}
	b.setupTime = time.Since(b.started)
	return nil
}

// close stops everything setup started and removes the temporary directory
// unless -keep was given.
func (b *bench) close() {
	b.bouncer.stop()
	if b.pg != nil {
		if err := b.pg.StopImmediate(); err != nil {
			b.logf("stopping Postgres: %v", err)
		}
	}
	if b.dir == "" {
		return
	}
	if b.o.keep {
		b.logf("kept %s", b.dir)
		return
	}
	_ = os.RemoveAll(b.dir)
}

// findRepoRoot walks up from the working directory to the fetchq-proxy
// module root.
func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(b, []byte("module github.com/fetchq/fetchq-proxy\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run fetchq-bench inside the fetchq-proxy repository (go run ./cmd/fetchq-bench): it builds ./cmd/fetchq-proxy and reads bench/testdata")
		}
		dir = parent
	}
}

// checkTools fails early, saying what to install, when a tool a selected
// workload needs is missing. It installs nothing itself.
func (b *bench) checkTools() error {
	type tool struct{ name, hint string }
	need := []tool{{"go", "Go 1.26, to build cmd/fetchq-proxy and bench/river"}}
	if b.o.has("W1") || b.o.has("W2") || b.o.has("W4") {
		need = append(need, tool{"pgbench", "apt-get install -y postgresql-client"})
	}
	if b.o.extensionSQL != "" {
		need = append(need, tool{"psql", "apt-get install -y postgresql-client"})
	}
	if b.o.has("W4") {
		need = append(need, tool{"pgbouncer", "apt-get install -y pgbouncer"})
	}
	var missing []string
	for _, t := range need {
		if _, err := exec.LookPath(t.name); err != nil {
			missing = append(missing, fmt.Sprintf("%s not found (%s)", t.name, t.hint))
		}
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}

// build compiles the proxy and, for W3, the River harness into the
// temporary directory.
func (b *bench) build(ctx context.Context) error {
	b.proxyBin = filepath.Join(b.dir, "fetchq-proxy")
	b.logf("building ./cmd/fetchq-proxy")
	if err := goBuild(ctx, b.root, b.proxyBin, "./cmd/fetchq-proxy"); err != nil {
		return err
	}
	b.proxyRev = gitRevision(b.root)
	if b.o.has("W3") {
		b.riverBin = filepath.Join(b.dir, "river-bench")
		b.logf("building bench/river (River harness, its own module)")
		if err := goBuild(ctx, filepath.Join(b.root, "bench", "river"), b.riverBin, "."); err != nil {
			return err
		}
	}
	return nil
}

func goBuild(ctx context.Context, dir, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s (in %s): %w\n%s", pkg, dir, err, o)
	}
	return nil
}

// gitRevision describes the checked-out commit, with "+dirty" when the
// working tree has changes; "unknown" without git.
func gitRevision(dir string) string {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		rev += "+dirty"
	}
	return rev
}

// maxConnections is the Postgres max_connections of the run: room for W5's
// largest idle count (each idle client holds one upstream backend) plus
// the measurements' own connections.
func (b *bench) maxConnections() int {
	n := 300
	if b.o.has("W5") {
		n = max(n, slices.Max(b.o.idleConns)+200)
	}
	return n
}

// startPostgres starts the throw-away server, listening on 127.0.0.1.
func (b *bench) startPostgres(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	b.pgPort = port
	b.logf("starting PostgreSQL on 127.0.0.1:%d (max_connections %d, durable commits: %v)", port, b.maxConnections(), !b.o.fast)
	b.pg, err = pgserver.Start(ctx, pgserver.Options{
		DataDir:   filepath.Join(b.dir, "pg"),
		SocketDir: b.dir,
		Port:      port,
		Fast:      b.o.fast,
		Settings: map[string]string{
			"listen_addresses": "127.0.0.1",
			"max_connections":  strconv.Itoa(b.maxConnections()),
			"shared_buffers":   "256MB",
			"max_wal_size":     "4GB",
		},
		HBA: []string{"host all all 127.0.0.1/32 trust"},
	})
	if err != nil {
		return err
	}
	conn, err := b.connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, "SHOW server_version").Scan(&b.pgVer)
}

// dsn is a libpq connection string for database db on the given port of
// 127.0.0.1.
func dsn(port int, db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", port, db)
}

// connect opens a direct connection to database db (simple protocol, so
// the same code works through the proxy).
func (b *bench) connect(ctx context.Context, db string) (*pgx.Conn, error) {
	return connectPort(ctx, b.pgPort, db)
}

func connectPort(ctx context.Context, port int, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn(port, db))
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return pgx.ConnectConfig(ctx, cfg)
}

// exec runs statements on database db, each in its own transaction.
func (b *bench) exec(ctx context.Context, db string, stmts ...string) error {
	conn, err := b.connect(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", firstLine(s), err)
		}
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// createDB creates database name, from template when it is not empty. A
// template whose last session is still going away (SQLSTATE 55006) is
// retried for up to 15 seconds.
func (b *bench) createDB(ctx context.Context, name, template string) error {
	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		stmt += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := b.exec(ctx, "postgres", stmt)
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cloneDB creates a fresh database from template and returns its name.
func (b *bench) cloneDB(ctx context.Context, template string) (string, error) {
	b.seq++
	name := fmt.Sprintf("m%03d", b.seq)
	return name, b.createDB(ctx, name, template)
}

// dropDB drops a database, disconnecting whatever is left on it.
func (b *bench) dropDB(ctx context.Context, name string) {
	if err := b.exec(context.WithoutCancel(ctx), "postgres", "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		b.logf("dropping database %s: %v", name, err)
	}
}

// startProxy starts a fresh proxy whose upstream is database db, waits
// until a client can connect through it, and returns it with its port.
func (b *bench) startProxy(ctx context.Context, db, label string) (*process, int, error) {
	port, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	debugPort, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	logPath := filepath.Join(b.dir, "logs", fmt.Sprintf("proxy-%s-%s.log", db, label))
	args := append([]string{
		"--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--upstream", dsn(b.pgPort, db),
		"--debug-addr", fmt.Sprintf("127.0.0.1:%d", debugPort),
		"--log-level", "warn"}, b.o.proxyArgs...)
	p, err := startProcess("fetchq-proxy", logPath, nil, b.proxyBin, args...)
	if err != nil {
		return nil, 0, err
	}
	p.debugAddr = fmt.Sprintf("127.0.0.1:%d", debugPort)
	if err := waitTCP(ctx, p, fmt.Sprintf("127.0.0.1:%d", port), 30*time.Second); err != nil {
		p.stop()
		return nil, 0, err
	}
	conn, err := connectPort(ctx, port, db)
	if err != nil {
		p.stop()
		return nil, 0, fmt.Errorf("connecting through the proxy: %w\n%s", err, p.logTail())
	}
	_ = conn.Close(ctx)
	return p, port, nil
}

// batchSize sets s.CallsPerBatch from the group commit counters of the
// proxy p, a fresh process that served only this measurement's calls.
func (s *sample) batchSize(ctx context.Context, p *process) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.debugAddr+"/debug/group_commit", nil)
	if err != nil {
		s.problemf("group commit counters: %v", err)
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.problemf("group commit counters: %v", err)
		return
	}
	defer resp.Body.Close()
	var v struct{ Calls, Batches int64 }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		s.problemf("group commit counters: %v", err)
		return
	}
	if v.Batches > 0 {
		s.CallsPerBatch = float64(v.Calls) / float64(v.Batches)
	}
}

// proxyErrors returns the ERROR lines the proxy logged.
func proxyErrors(p *process) []string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return nil
	}
	var out []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(l, "level=ERROR") || strings.Contains(l, "panic:") {
			out = append(out, l)
		}
	}
	return out
}

// startPgBouncer runs PgBouncer in session mode in front of the server,
// trusting every client as Postgres does, with pools large enough that no
// client ever waits for a server connection.
func (b *bench) startPgBouncer(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	b.bouncerPort = port
	dir := filepath.Join(b.dir, "pgbouncer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	ini := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = session
max_client_conn = 5000
default_pool_size = 500
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
`, b.pgPort, port, filepath.Join(dir, "userlist.txt"))
	files := map[string]string{"pgbouncer.ini": ini, "userlist.txt": `"postgres" ""` + "\n"}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return err
		}
		if err := b.acct.chown(path); err != nil {
			return err
		}
	}
	if out, err := exec.Command("pgbouncer", "--version").Output(); err == nil {
		b.bouncerVer, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	}
	b.logf("starting %s on 127.0.0.1:%d (session mode)", b.bouncerVer, port)
	b.bouncerIni = filepath.Join(dir, "pgbouncer.ini")
	return b.runPgBouncer(ctx)
}

// runPgBouncer starts PgBouncer with the configuration startPgBouncer
// wrote.
func (b *bench) runPgBouncer(ctx context.Context) error {
	logPath := filepath.Join(b.dir, "logs", "pgbouncer.log")
	bin, _ := exec.LookPath("pgbouncer")
	// PgBouncer refuses to run as root.
	var err error
	b.bouncer, err = startProcess("pgbouncer", logPath, b.acct, bin, b.bouncerIni)
	if err != nil {
		return err
	}
	if err := waitTCP(ctx, b.bouncer, fmt.Sprintf("127.0.0.1:%d", b.bouncerPort), 15*time.Second); err != nil {
		return err
	}
	conn, err := connectPort(ctx, b.bouncerPort, "postgres")
	if err != nil {
		return fmt.Errorf("connecting through PgBouncer: %w\n%s", err, b.bouncer.logTail())
	}
	return conn.Close(ctx)
}

// freshPgBouncer restarts PgBouncer, so that a measurement through it
// starts with new Postgres backends, as the direct and proxy ones do.
// PgBouncer keeps its server connections from one measurement to the
// next, and a backend that served a run is warm: its page tables already
// map the shared buffers its queries touch and its caches are filled,
// which a new backend pays for during the run (measured on this 2-CPU
// virtual machine, pgbench -S, 16 clients, 5 interleaved runs of 6 s:
// 12,925 tps through a warm PgBouncer, 10,082 through a restarted one).
func (b *bench) freshPgBouncer(ctx context.Context) error {
	b.bouncer.stop()
	return b.runPgBouncer(ctx)
}

// pgbenchThreads is pgbench -j for n clients: one thread per CPU at most.
func pgbenchThreads(n int) int { return max(1, min(n, runtime.NumCPU())) }
