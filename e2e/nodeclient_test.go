// Package e2e runs real Fetchq clients against fetchq-proxy.
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/fetchq/fetchq-proxy/internal/pgtest"
	"github.com/fetchq/fetchq-proxy/proxy"
	"github.com/fetchq/fetchq-proxy/rewrite"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Node packages under test. fetchq@4.1.1 is the newest release of the
// Node client that installs from the registry; it expects info() 4.0.0.
const (
	nodeClient        = "fetchq@4.1.1"
	nodeClientVersion = "4.0.0"
)

// nodeModules installs the Node client and its test tools once per machine
// (in the temp dir) and returns the directory holding node_modules.
func nodeModules(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		_, err := exec.LookPath(tool)
		require.NoError(t, err, "%s is needed for the Node client tests: install nodejs and npm (apt-get install -y nodejs npm)", tool)
	}
	dir := filepath.Join(os.TempDir(), "fetchq_proxy_node_e2e_"+strings.NewReplacer("@", "_", ".", "_").Replace(nodeClient))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "fetchq", "package.json")); err == nil {
		return dir
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"init", "-y"},
		{"install", "--no-audit", "--no-fund", "--loglevel=error", nodeClient, "jest@26", "envalid@7"},
	} {
		cmd := exec.CommandContext(ctx, "npm", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "npm %v:\n%s", args, out)
	}
	return dir
}

// startProxy serves a fresh database through an intercepting proxy and
// returns the connection URL for Node clients.
func startProxy(t *testing.T) string {
	t.Helper()
	db := pgtest.NewDB(t)
	up, err := pgconn.ParseConfig(pgtest.AdminConnString())
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	metrics := backend.NewMetrics()
	store := backend.New(backend.Config{Version: nodeClientVersion, Metrics: metrics, Logger: logger})
	maint, err := backend.NewMaintainer(backend.MaintainerConfig{Pool: db.Pool(t), Store: store, Metrics: metrics, Logger: logger})
	require.NoError(t, err)
	require.NoError(t, maint.Start(context.Background()))
	t.Cleanup(maint.Stop)
	srv := proxy.NewServer(proxy.Config{
		Upstream: up,
		Logger:   logger,
		Rewriter: rewrite.New(1024),
		Queue:    store,
		Counters: metrics,
		Batcher:  backend.NewBatcher(backend.BatcherConfig{Pool: db.Pool(t), Store: store}),
		Database: db.Name,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return fmt.Sprintf("postgresql://postgres:postgres@%s/%s", ln.Addr(), db.Name)
}

// testWriter sends log lines to the test's log, shown when it fails.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // a late line after the test ended
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var jestSummary = regexp.MustCompile(`(?m)^Tests:\s+(.*)$`)

// TestNodeClientE2E runs the Node client's own end-to-end test files
// (lib/**/*.test.e2e.js, jest 26) against the proxy on a database without
// any Fetchq extension.
func TestNodeClientE2E(t *testing.T) {
	mods := nodeModules(t)
	// Jest ignores files under node_modules: run from a copy of the package.
	// The package's own script passes --testTimeout=5000; a loaded CI
	// machine gets 20 s per test instead, nothing else changes.
	work := t.TempDir()
	pkg := filepath.Join(work, "fetchq")
	out, err := exec.Command("cp", "-r", filepath.Join(mods, "node_modules", "fetchq"), pkg).CombinedOutput()
	require.NoError(t, err, string(out))
	require.NoError(t, os.Symlink(filepath.Join(mods, "node_modules"), filepath.Join(pkg, "node_modules")))

	// The suite's own teardown races (pg-pubsub raising "Failed to stop
	// listening to channel" when client.end() closes its connection under
	// an UNLISTEN) made a run fail now and then on a loaded machine. A
	// failed run is logged in full and tried once more, on a fresh
	// database; two failures fail the test.
	var summary []string
	for attempt := 1; attempt <= 2; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, filepath.Join(pkg, "node_modules", ".bin", "jest"),
			"--projects", "test/e2e", "--runInBand", "--testTimeout=20000", "--ci", "--forceExit")
		cmd.Dir = pkg
		cmd.Env = append(os.Environ(), "PGSTRING="+startProxy(t))
		out, err = cmd.CombinedOutput()
		cancel()
		summary = jestSummary.FindStringSubmatch(string(out))
		if err == nil {
			break
		}
		t.Logf("jest attempt %d failed (%v):\n%s", attempt, err, out)
	}
	require.NoError(t, err, "jest failed twice; last output:\n%s", out)
	require.NotNil(t, summary, string(out))
	require.NotContains(t, summary[1], "failed", string(out))
	require.Regexp(t, `\d+ passed`, summary[1])
	if missing := regexp.MustCompile(`.*does not exist.*`).FindString(string(out)); missing != "" {
		t.Fatalf("the client called something the proxy does not provide: %s", strings.TrimSpace(missing))
	}
	t.Logf("jest: %s", summary[1])
}

// TestNodeWorkerExample runs a worker written with the Node client: it
// creates its queue, pushes documents and completes each exactly once.
func TestNodeWorkerExample(t *testing.T) {
	mods := nodeModules(t)
	script, err := filepath.Abs("testdata/worker-example.js")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = mods
	cmd.Env = append(os.Environ(), "PGSTRING="+startProxy(t), "NODE_PATH="+filepath.Join(mods, "node_modules"))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "worker example failed:\n%s", out)
	require.Contains(t, string(out), "completed 200/200, handled 200, handled more than once 0, note it's")
}
