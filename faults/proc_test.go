package faults

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// proxyProc is a fetchq-proxy process on a fixed address, which can be
// killed and started again on the same address. Its methods are not safe for
// concurrent use; one goroutine (the test's) drives it.
type proxyProc struct {
	t        *testing.T
	name     string
	upstream string
	addr     string   // 127.0.0.1:port, the same across restarts
	extra    []string // more flags
	logPath  string

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	err  error         // cmd's exit status, read after done

	starts int
}

// newProxy starts a proxy in front of upstream (a DSN) on a free port. It is
// killed when the test ends if it still runs.
func newProxy(t *testing.T, name, upstream string, extra ...string) *proxyProc {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	p := &proxyProc{
		t: t, name: name, upstream: upstream, addr: addr, extra: extra,
		logPath: filepath.Join(t.TempDir(), name+".log"),
	}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s: errors in the proxy's log:\n%s", name, p.logErrors(30))
			t.Logf("%s: end of the proxy's log:\n%s", name, p.logTail(6000))
		}
	})
	p.start()
	return p
}

// port is the proxy's TCP port.
func (p *proxyProc) port() int {
	_, port, _ := net.SplitHostPort(p.addr)
	n, _ := strconv.Atoi(port)
	return n
}

// dsn is a connection string to database through the proxy.
func (p *proxyProc) dsn(database string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable connect_timeout=10", p.port(), database)
}

// start runs the proxy and returns once it accepts TCP connections.
func (p *proxyProc) start() {
	t := p.t
	t.Helper()
	require.True(t, p.cmd == nil, "%s is already running", p.name)
	logf, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	require.NoError(t, err)
	defer logf.Close() // the child keeps its own descriptor
	p.starts++
	fmt.Fprintf(logf, "--- start %d at %s ---\n", p.starts, time.Now().Format(time.RFC3339Nano))
	args := append([]string{"--upstream", p.upstream, "--listen", p.addr}, p.extra...)
	cmd := exec.Command(proxyBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	// Only flags configure it, never the environment of the test run.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		p.err = cmd.Wait()
		close(done)
	}()

	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("%s exited during start-up (%v):\n%s", p.name, p.err, p.logTail(4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept connections on %s: %v\n%s", p.name, p.addr, err, p.logTail(4000))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone. No-op when it is
// not running.
func (p *proxyProc) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// signal sends sig to the running proxy.
func (p *proxyProc) signal(sig syscall.Signal) error {
	if p.cmd == nil {
		return errors.New("not running")
	}
	return p.cmd.Process.Signal(sig)
}

// wait waits up to d for the process to exit and returns its exit status.
func (p *proxyProc) wait(d time.Duration) error {
	if p.cmd == nil {
		return errors.New("not running")
	}
	select {
	case <-p.done:
		p.cmd = nil
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %v", p.name, d)
	}
}

// running reports whether the process is alive.
func (p *proxyProc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// log returns what the proxy wrote so far, over all its runs.
func (p *proxyProc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// logErrors returns up to n lines of the log at level ERROR.
func (p *proxyProc) logErrors(n int) string {
	var out []string
	for line := range strings.SplitSeq(p.log(), "\n") {
		if strings.Contains(line, "level=ERROR") && len(out) < n {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func (p *proxyProc) logTail(n int) string {
	s := p.log()
	if len(s) > n {
		s = s[len(s)-n:]
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return s
}
