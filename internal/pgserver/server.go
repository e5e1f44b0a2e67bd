// Package pgserver runs a PostgreSQL server from the binaries installed on the
// machine, as a child process that listens on a Unix socket only.
//
// It has two users: the fetchq-proxy binary, whose default upstream (no
// --upstream flag) is such an embedded server in a persistent data directory,
// and internal/pgtest, which starts one throw-away server per test package.
//
// # Lifecycle
//
// [Start] creates the data directory if needed, runs initdb once (only when
// PG_VERSION is missing), rewrites pg_hba.conf, starts `postgres` directly as
// a child (no pg_ctl daemonizing, so the parent owns its lifetime) and waits
// until a real connection succeeds. [Server.Stop] asks for a fast shutdown,
// [Server.StopImmediate] for an immediate one; see
// https://www.postgresql.org/docs/current/server-shutdown.html.
//
// # Running as root
//
// initdb and postgres refuse to run as root. When the caller is root, every
// server-side command runs as the OS user postgres (SysProcAttr.Credential),
// the directories Start creates are given to that user, and Start checks that
// it can reach them before running anything.
//
// # Networking and authentication
//
// The server listens on no TCP address (listen_addresses is empty), only on
// the socket <SocketDir>/.s.PGSQL.<Port>. pg_hba.conf ends with
// `local all all trust`: anyone who can reach the socket may connect as any
// role, which is why the socket lives in a private directory. Unix socket
// paths are limited to about 107 bytes, so keep SocketDir short.
package pgserver

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// DefaultPort is the port used when Options.Port is zero. With no TCP
	// listener it only names the socket file, .s.PGSQL.5432.
	DefaultPort = 5432

	// SuperUser is the bootstrap superuser initdb creates (initdb -U).
	SuperUser = "postgres"

	// LogFileName is the file in the data directory that receives the
	// server's stdout and stderr.
	LogFileName = "server.log"

	// startTimeout bounds how long Start waits for the server to accept
	// connections.
	startTimeout = 30 * time.Second

	// stopTimeout bounds how long Stop and StopImmediate wait for the server
	// to exit before escalating.
	stopTimeout = 10 * time.Second

	// maxSocketPath is the usable length of sun_path in struct sockaddr_un
	// on Linux (108 bytes with the terminating NUL).
	maxSocketPath = 107

	// logTailBytes is how much of the server log an error carries.
	logTailBytes = 4096
)

// Options configures [Start]. Only DataDir is required.
type Options struct {
	// BinDir holds initdb, postgres and pg_ctl. Empty means [FindBinDir].
	BinDir string

	// DataDir is the cluster's data directory (PGDATA). It is created and
	// initialised with initdb when it holds no PG_VERSION file, and reused as
	// it is otherwise. Required.
	DataDir string

	// SocketDir is the directory of the server's Unix socket (postgres -k).
	// Empty means DataDir, which only its owner (and root) can enter. The
	// socket path must fit in 107 bytes.
	SocketDir string

	// Port names the socket file .s.PGSQL.<Port>; the server opens no TCP
	// port. Zero means [DefaultPort].
	Port int

	// Fast trades durability for speed, for tests: initdb --no-sync, and the
	// server runs with fsync, synchronous_commit and full_page_writes off. A
	// crash of the machine (not of the server) can then corrupt the cluster.
	Fast bool

	// Locale is passed to initdb --locale when the cluster is created. Empty
	// means "C", which exists on every machine and sorts bytewise.
	Locale string

	// Settings are extra server settings, passed as `-c key=value`. They
	// override the defaults Start passes, including the empty listen_addresses and
	// the Fast settings. Example: {"max_connections": "200"}.
	Settings map[string]string

	// HBA holds extra pg_hba.conf lines, written before the final
	// `local all all trust` line. pg_hba.conf is rewritten at every Start, so
	// it always holds exactly these lines. Start checks readiness by
	// connecting as postgres to the database postgres: do not make that
	// connection require a password. See
	// https://www.postgresql.org/docs/current/auth-pg-hba-conf.html.
	HBA []string

	// Logger receives lifecycle events (initdb, start, stop). Nil discards
	// them. The server's own output goes to <DataDir>/server.log.
	Logger *slog.Logger
}

// Server is a running PostgreSQL server started by [Start]. Its methods are
// safe for concurrent use.
type Server struct {
	binDir    string
	dataDir   string
	socketDir string
	port      int
	acct      *account
	logger    *slog.Logger
	logPath   string
	logStart  int64 // size of the log when this server started

	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited and been reaped
	waitErr error         // the process's exit status; read after done

	stopMu  sync.Mutex
	stopErr error
}

// Start starts a PostgreSQL server as described by opts and returns once it
// accepts connections, or an error after 30 seconds. The error carries the
// tail of the server log when the server was started but did not come up.
//
// If a server left running by an earlier run still holds DataDir
// (postmaster.pid names a live postgres process), Start stops it first with
// `pg_ctl stop -m fast`.
//
// ctx bounds the start-up only; cancelling it later does not stop the
// server: call [Server.Stop].
func Start(ctx context.Context, opts Options) (*Server, error) {
	s, err := newServer(opts)
	if err != nil {
		return nil, fmt.Errorf("pgserver: %w", err)
	}
	if err := s.start(ctx, opts); err != nil {
		return nil, fmt.Errorf("pgserver: %w", err)
	}
	return s, nil
}

// newServer validates opts and fills in defaults.
func newServer(opts Options) (*Server, error) {
	if opts.DataDir == "" {
		return nil, errors.New("Options.DataDir is required")
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	socketDir, err := filepath.Abs(cmp.Or(opts.SocketDir, dataDir))
	if err != nil {
		return nil, err
	}
	port := cmp.Or(opts.Port, DefaultPort)
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("Options.Port %d is out of range", port)
	}
	if sock := socketPath(socketDir, port); len(sock) > maxSocketPath {
		return nil, fmt.Errorf("Unix socket path %s is %d bytes, longer than the %d the kernel allows: choose a shorter SocketDir",
			sock, len(sock), maxSocketPath)
	}
	binDir := opts.BinDir
	if binDir == "" {
		if binDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	} else if !hasServerBinaries(binDir) {
		return nil, fmt.Errorf("%w in Options.BinDir %s: point it at the directory holding initdb and postgres", ErrNoBinaries, binDir)
	}
	acct, err := serverAccount()
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		binDir:    binDir,
		dataDir:   dataDir,
		socketDir: socketDir,
		port:      port,
		acct:      acct,
		logger:    logger.With("data_dir", dataDir),
		logPath:   filepath.Join(dataDir, LogFileName),
		done:      make(chan struct{}),
	}, nil
}

func (s *Server) start(ctx context.Context, opts Options) error {
	if err := s.acct.prepareDir(s.dataDir, 0o700, true); err != nil {
		return fmt.Errorf("preparing data directory: %w", err)
	}
	if err := s.acct.checkReachable(s.dataDir, false); err != nil {
		return err
	}
	if s.socketDir != s.dataDir {
		if err := s.acct.prepareDir(s.socketDir, 0o755, false); err != nil {
			return fmt.Errorf("preparing socket directory: %w", err)
		}
		if err := s.acct.checkReachable(s.socketDir, true); err != nil {
			return err
		}
	}

	if err := s.stopStale(ctx); err != nil {
		return err
	}
	if err := s.initdb(ctx, opts); err != nil {
		return err
	}
	if err := s.writeHBA(opts.HBA); err != nil {
		return fmt.Errorf("writing pg_hba.conf: %w", err)
	}
	if err := s.spawn(opts); err != nil {
		return err
	}

	if err := s.waitReady(ctx); err != nil {
		_ = s.StopImmediate()
		return fmt.Errorf("%w\n%s", err, s.logTail())
	}
	s.logger.Info("PostgreSQL started", "socket", socketPath(s.socketDir, s.port), "pid", s.cmd.Process.Pid)
	return nil
}

// command builds a server-side command that runs as the server's account.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, name), args...)
	cmd.SysProcAttr = s.acct.sysProcAttr()
	cmd.Dir = "/" // the caller's working directory may be closed to postgres
	return cmd
}

// initdb creates the cluster unless DataDir already holds one.
func (s *Server) initdb(ctx context.Context, opts Options) error {
	if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); err == nil {
		s.logger.Debug("reusing existing PostgreSQL cluster")
		return nil
	}
	args := []string{
		"-D", s.dataDir,
		"--auth=trust",
		"--username=" + SuperUser,
		"--encoding=UTF8",
		"--locale=" + cmp.Or(opts.Locale, "C"),
	}
	if opts.Fast {
		args = append(args, "--no-sync")
	}
	s.logger.Info("initializing PostgreSQL cluster", "bin_dir", s.binDir)
	start := time.Now()
	cmd := s.command(ctx, "initdb", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb failed: %w\n%s", err, tail(out, logTailBytes))
	}
	s.logger.Debug("initdb done", "elapsed", time.Since(start))
	return nil
}

// writeHBA rewrites pg_hba.conf with the extra lines and the final trust
// line. The server reads it at start-up.
func (s *Server) writeHBA(lines []string) error {
	var b strings.Builder
	b.WriteString("# Written by fetchq-proxy (internal/pgserver) at every start: edits are lost.\n")
	b.WriteString("# TYPE DATABASE USER ADDRESS METHOD\n")
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	b.WriteString("local all all trust\n")
	path := filepath.Join(s.dataDir, "pg_hba.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return s.acct.chown(path)
}

// serverArgs returns the postgres command line.
func (s *Server) serverArgs(opts Options) []string {
	settings := map[string]string{"listen_addresses": ""}
	if opts.Fast {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	}
	maps.Copy(settings, opts.Settings)
	args := []string{"-D", s.dataDir, "-k", s.socketDir, "-p", strconv.Itoa(s.port)}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		args = append(args, "-c", k+"="+settings[k])
	}
	return args
}

// spawn starts the postmaster with its output appended to the server log and
// a goroutine that reaps it.
func (s *Server) spawn(opts Options) error {
	logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening server log: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor
	if err := s.acct.chown(s.logPath); err != nil {
		return fmt.Errorf("opening server log: %w", err)
	}
	if fi, err := logf.Stat(); err == nil {
		s.logStart = fi.Size()
	}
	fmt.Fprintf(logf, "--- pgserver: starting postgres at %s ---\n", time.Now().Format(time.RFC3339))

	// Not CommandContext: the server outlives the start-up context.
	cmd := exec.Command(filepath.Join(s.binDir, "postgres"), s.serverArgs(opts)...)
	cmd.SysProcAttr = s.acct.sysProcAttr()
	setParentDeathSignal(cmd.SysProcAttr)
	cmd.Dir = "/"
	cmd.Stdout = logf
	cmd.Stderr = logf
	s.logger.Debug("starting postgres", "args", cmd.Args)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	s.cmd = cmd
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	return nil
}

// waitReady polls until a real connection to the database postgres
// succeeds, the process exits, or the start-up deadline passes.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	cfg, err := pgconn.ParseConfig(s.ConnString(SuperUser, "postgres"))
	if err != nil {
		return err
	}
	var lastErr error
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgconn.ConnectConfig(attemptCtx, cfg)
		cancelAttempt()
		if err == nil {
			return conn.Close(ctx)
		}
		lastErr = err

		select {
		case <-s.done:
			return fmt.Errorf("postgres exited during start-up (%v)", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections on %s: %w (last attempt: %v)",
				socketPath(s.socketDir, s.port), ctx.Err(), lastErr)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// stopStale stops a server left running on DataDir by an earlier run, as
// named by postmaster.pid. A pid that is dead, or alive but not a postgres
// process, is left for postgres itself to judge at start-up.
func (s *Server) stopStale(ctx context.Context) error {
	b, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 || !isPostgresProcess(pid) {
		return nil
	}
	s.logger.Warn("stopping a PostgreSQL server left running on the data directory", "pid", pid)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	out, err := s.command(ctx, "pg_ctl", "stop", "-D", s.dataDir, "-m", "fast", "-w", "-t", "60").CombinedOutput()
	if err != nil {
		return fmt.Errorf("stopping the server (pid %d) left running on %s: pg_ctl stop: %w\n%s",
			pid, s.dataDir, err, tail(out, logTailBytes))
	}
	return nil
}

// isPostgresProcess reports whether pid is alive and, where /proc tells,
// runs a postgres binary. A postmaster keeps its original command line
// (".../bin/postgres -D ..."); its children show "postgres: ..." titles.
func isPostgresProcess(pid int) bool {
	if pid == os.Getpid() {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		// Alive but unreadable, or no /proc to ask: assume the pid file is right.
		return !errors.Is(err, fs.ErrNotExist) || !procMounted()
	}
	argv0, _, _ := strings.Cut(string(cmdline), "\x00")
	base := filepath.Base(argv0)
	return base == "postgres" || base == "postmaster" || strings.HasPrefix(argv0, "postgres:")
}

func procMounted() bool {
	_, err := os.Stat("/proc/self")
	return err == nil
}

// SocketDir returns the directory holding the server's Unix socket. It is the
// host to give libpq or pgx.
func (s *Server) SocketDir() string { return s.socketDir }

// Port returns the port that names the socket file .s.PGSQL.<port>.
func (s *Server) Port() int { return s.port }

// DataDir returns the absolute path of the data directory.
func (s *Server) DataDir() string { return s.dataDir }

// Pid returns the process ID of the postmaster.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// LogPath returns the file that receives the server's output.
func (s *Server) LogPath() string { return s.logPath }

// Done returns a channel closed once the server process has exited, whether
// through Stop or on its own.
func (s *Server) Done() <-chan struct{} { return s.done }

// ConnString returns a keyword/value connection string for user and
// database over the Unix socket, e.g.
// "host=/tmp/fq123 port=5432 user=postgres dbname=postgres sslmode=disable".
// Values are quoted as libpq requires. See
// https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING-KEYWORD-VALUE.
func (s *Server) ConnString(user, database string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable",
		quoteValue(s.socketDir), s.port, quoteValue(user), quoteValue(database))
}

// Stop shuts the server down: SIGINT (fast shutdown: roll back open
// transactions, disconnect clients, checkpoint), then, after 10 seconds,
// SIGQUIT, then SIGKILL. It returns once the process has exited and is
// idempotent: later calls return the first call's result. It returns nil if
// the server had already exited.
func (s *Server) Stop() error { return s.stop(syscall.SIGINT) }

// StopImmediate shuts the server down with SIGQUIT (immediate shutdown: no
// checkpoint, crash recovery at the next start), then SIGKILL after 10
// seconds. Tests use it because their clusters are thrown away. Like Stop it
// is idempotent.
func (s *Server) StopImmediate() error { return s.stop(syscall.SIGQUIT) }

func (s *Server) stop(sig syscall.Signal) error {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	select {
	case <-s.done:
		return s.stopErr
	default:
	}

	start := time.Now()
	steps := []syscall.Signal{sig}
	if sig != syscall.SIGQUIT {
		steps = append(steps, syscall.SIGQUIT)
	}
	steps = append(steps, syscall.SIGKILL)
	for i, step := range steps {
		if err := s.cmd.Process.Signal(step); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("pgserver: signalling postgres: %w", err)
		}
		select {
		case <-s.done:
			if i > 0 {
				s.stopErr = fmt.Errorf("pgserver: postgres ignored %v for %v and was stopped with %v", sig, stopTimeout, step)
			}
			s.logger.Info("PostgreSQL stopped", "signal", step.String(), "elapsed", time.Since(start))
			return s.stopErr
		case <-time.After(stopTimeout):
		}
	}
	<-s.done
	return s.stopErr
}

// logTail returns the end of what the server wrote to its log since this
// Start, framed for inclusion in an error.
func (s *Server) logTail() string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	defer f.Close()
	if _, err := f.Seek(s.logStart, io.SeekStart); err != nil {
		return fmt.Sprintf("(reading server log: %v)", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(reading server log: %v)", err)
	}
	return fmt.Sprintf("--- end of %s ---\n%s", s.logPath, tail(b, logTailBytes))
}

// tail returns at most the last n bytes of b, starting at a line boundary.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}

func socketPath(dir string, port int) string {
	return filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port))
}

// quoteValue quotes a keyword/value connection string value when needed:
// empty values and values with spaces, quotes or backslashes go in single
// quotes with ' and \ escaped by a backslash.
func quoteValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\\'") {
		return v
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'"
}
