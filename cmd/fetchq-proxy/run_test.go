package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/internal/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// startRun runs the command in the background and returns the first line
// it prints that matches re, and a function that stops it (SIGINT-like
// cancel) and returns run's error.
func startRun(t *testing.T, re *regexp.Regexp, args ...string) (match []string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, args, pw, io.Discard)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	stop = func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			t.Fatal("run did not return after cancel")
			return nil
		}
	}
	lines := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				lines <- m
				break
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case match = <-lines:
	case err := <-done:
		t.Fatalf("run ended early: %v", err)
	case <-time.After(90 * time.Second):
		cancel()
		t.Fatal("no startup line")
	}
	return match, stop
}

func query(t *testing.T, dsn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	res, err := conn.Exec(ctx, sql).ReadAll()
	require.NoError(t, err)
	if len(res) == 0 || len(res[0].Rows) == 0 {
		return ""
	}
	return string(res[0].Rows[0][0])
}

// TestRunWithUpstream: --upstream proxies to an existing Postgres.
func TestRunWithUpstream(t *testing.T) {
	db := pgtest.NewDB(t)
	m, stop := startRun(t, regexp.MustCompile(`listening on 127\.0\.0\.1:(\d+)`),
		"--listen", "127.0.0.1:0", "--upstream", pgtest.AdminConnString(), "--log-level", "debug")
	got := query(t, "host=127.0.0.1 port="+m[1]+" user=postgres sslmode=disable dbname="+db.Name, "SELECT current_database()")
	require.Equal(t, db.Name, got)
	require.NoError(t, stop())
}

// TestDebugAddr: --debug-addr serves pprof, the group commit counters,
// which count the batched calls clients make, and the relay loop's, which
// count the sessions it serves and those it handed back.
func TestDebugAddr(t *testing.T) {
	db := pgtest.NewDB(t)
	free, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	debug := free.Addr().String()
	require.NoError(t, free.Close())
	m, stop := startRun(t, regexp.MustCompile(`listening on 127\.0\.0\.1:(\d+)`),
		"--listen", "127.0.0.1:0", "--upstream", db.ConnString("postgres"), "--debug-addr", debug)
	defer func() { require.NoError(t, stop()) }()
	dsn := "host=127.0.0.1 port=" + m[1] + " user=postgres sslmode=disable dbname=" + db.Name

	counters := func() (calls, batches int64) {
		resp, err := http.Get("http://" + debug + "/debug/group_commit")
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var v struct{ Calls, Batches int64 }
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
		return v.Calls, v.Batches
	}
	relay := func() (sessions, handedBack int64) {
		resp, err := http.Get("http://" + debug + "/debug/relay")
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var v struct {
			Sessions   int64
			HandedBack int64 `json:"handed_back"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
		return v.Sessions, v.HandedBack
	}
	plain, err := pgconn.Connect(context.Background(), dsn)
	require.NoError(t, err)
	_, err = plain.Exec(context.Background(), "SELECT 1").ReadAll()
	require.NoError(t, err)
	sessions, back := relay()
	require.Equal(t, int64(1), sessions, "a session passing statements through is in the relay loop")
	require.Zero(t, back)
	require.NoError(t, plain.Close(context.Background()))

	calls0, batches0 := counters()
	query(t, dsn, "SELECT * FROM fetchq.init()")
	query(t, dsn, "SELECT * FROM fetchq.queue_create('dbg')")
	for i := range 5 {
		require.Equal(t, "1", query(t, dsn, fmt.Sprintf("SELECT queued_docs FROM fetchq.doc_push('dbg', 'd%d', 0, 0, NOW(), '{}')", i)))
	}
	require.Equal(t, "d0", query(t, dsn, "SELECT subject FROM fetchq.doc_pick('dbg', 0, 1, '5m')"))
	calls, batches := counters()
	require.Equal(t, int64(6), calls-calls0, "batched calls")
	require.Equal(t, int64(6), batches-batches0, "one client's calls run one per batch")
	_, back = relay()
	require.Equal(t, int64(9), back, "each of the 8 sessions calling Fetchq left the relay loop, and the plain one to end (its Terminate)")

	resp, err := http.Get("http://" + debug + "/debug/pprof/cmdline")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestRunEmbedded: without --upstream the command starts its own Postgres
// in --data-dir, prints the psql line, and stops it on exit; a second run
// reuses the data directory.
func TestRunEmbedded(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "fqcmd")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })

	re := regexp.MustCompile(`^\s+psql '(host=127\.0\.0\.1 port=\d+ user=postgres dbname=postgres)'$`)
	for i := range 2 {
		m, stop := startRun(t, re, "--listen", "127.0.0.1:0", "--data-dir", dir)
		_ = query(t, m[1]+" sslmode=disable", "SELECT 1")
		if i == 0 {
			_ = query(t, m[1]+" sslmode=disable", "CREATE TABLE kept (x int)")
		} else {
			require.Equal(t, "0", query(t, m[1]+" sslmode=disable", "SELECT count(*) FROM kept"))
		}
		require.NoError(t, stop())
		_, err = os.Stat(dir + "/pgdata/postmaster.pid")
		require.True(t, os.IsNotExist(err), "embedded Postgres still running after exit")
	}
}

// TestFlagsFromEnvironment: every flag falls back to its FETCHQ_ variable.
func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv("FETCHQ_LISTEN", "127.0.0.1:7777")
	t.Setenv("FETCHQ_UPSTREAM", "host=/tmp port=5")
	t.Setenv("FETCHQ_DATA_DIR", "/x/y")
	t.Setenv("FETCHQ_LOG_LEVEL", "warn")
	t.Setenv("FETCHQ_SHUTDOWN_TIMEOUT", "3s")
	t.Setenv("FETCHQ_MAX_CLIENTS", "12")
	t.Setenv("FETCHQ_RELAY_LOOP", "false")
	o, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:7777", o.listen)
	require.Equal(t, "host=/tmp port=5", o.upstream)
	require.Equal(t, "/x/y", o.dataDir)
	require.Equal(t, "warn", o.logLevel)
	require.Equal(t, 3*time.Second, o.shutdownTimeout)
	require.Equal(t, 12, o.maxClients)
	require.False(t, o.relayLoop)

	o, err = parseFlags([]string{"--listen", ":1", "--max-clients", "3", "--relay-loop"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, ":1", o.listen)
	require.Equal(t, 3, o.maxClients)
	require.True(t, o.relayLoop)
}

// TestBadEnvironmentValue: a variable that does not parse as its flag's
// type is an error naming the variable and the type, without its value,
// not a silent default, even when the command line also sets the flag; an
// empty variable counts as unset.
func TestBadEnvironmentValue(t *testing.T) {
	for _, c := range []struct{ env, value, flag, want string }{
		{"FETCHQ_MAX_CLIENTS", "twelve", "--max-clients=3", "--max-clients) is not a valid int"},
		{"FETCHQ_BATCH_IN_FLIGHT", "1.5", "--batch-in-flight=2", "--batch-in-flight) is not a valid int"},
		{"FETCHQ_SHUTDOWN_TIMEOUT", "30", "--shutdown-timeout=3s", "--shutdown-timeout) is not a valid duration"},
		{"FETCHQ_RELAY_LOOP", "yes please", "--relay-loop=false", "--relay-loop) is not a valid boolean (true or false)"},
	} {
		t.Run(c.env, func(t *testing.T) {
			t.Setenv(c.env, c.value)
			want := "environment variable " + c.env + " (" + c.want
			_, err := parseFlags(nil, io.Discard)
			require.EqualError(t, err, want)
			_, err = parseFlags([]string{c.flag}, io.Discard)
			require.EqualError(t, err, want)
			var stderr strings.Builder
			err = run(context.Background(), nil, io.Discard, &stderr)
			require.ErrorContains(t, err, want)
			require.NotContains(t, err.Error()+stderr.String(), c.value)
		})
	}
	t.Setenv("FETCHQ_MAX_CLIENTS", "")
	t.Setenv("FETCHQ_LISTEN", "")
	o, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 0, o.maxClients)
	require.Equal(t, "127.0.0.1:6432", o.listen)
}

// TestBadUpstreamNeverEchoesPassword: a malformed --upstream is reported
// without its password.
func TestBadUpstreamNeverEchoesPassword(t *testing.T) {
	var stderr strings.Builder
	err := run(context.Background(), []string{"--upstream", "postgres://u:hunter2@localhost:notaport/db"}, io.Discard, &stderr)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "hunter2")
	require.NotContains(t, stderr.String(), "hunter2")
}

// TestBadFlags: unknown flags and half a TLS pair are rejected.
func TestBadFlags(t *testing.T) {
	require.Error(t, run(context.Background(), []string{"--nope"}, io.Discard, io.Discard))
	err := run(context.Background(), []string{"--tls-cert", "x.pem"}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "--tls-cert and --tls-key must be given together")
}

// TestProcs: --procs wins; without it the GOMAXPROCS environment variable
// is left alone; else half the CPUs, at least one.
func TestProcs(t *testing.T) {
	require.Equal(t, 3, procs(3, true, 8))
	require.Equal(t, 3, procs(3, false, 8))
	require.Equal(t, 0, procs(0, true, 8))
	require.Equal(t, 4, procs(0, false, 8))
	require.Equal(t, 1, procs(0, false, 2))
	require.Equal(t, 1, procs(0, false, 1))
	_, err := parseFlags([]string{"--procs", "-1"}, io.Discard)
	require.Error(t, err)
	t.Setenv("FETCHQ_PROCS", "2")
	o, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 2, o.procs)
}
