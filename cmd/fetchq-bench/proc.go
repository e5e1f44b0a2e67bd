package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat. Linux reports
// them in USER_HZ, which is 100 on every architecture Go supports, whatever
// the kernel's internal HZ (see proc(5), "times(2)").
const userHZ = 100

// cpuTime returns the user+system CPU time a process has used so far, all
// threads included, from fields 14 and 15 of /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU extracts utime+stime from the text of /proc/<pid>/stat. The
// command name (field 2) is in parentheses and may hold spaces, so fields
// are counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("malformed /proc stat: too few fields")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("malformed /proc stat: %w", err)
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// rssBytes returns the resident set size of a process (VmRSS of
// /proc/<pid>/status).
func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return statusField(f, "VmRSS")
}

// memAvailable returns MemAvailable of /proc/meminfo: the kernel's estimate
// of the memory that can be allocated without swapping.
func memAvailable() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return statusField(f, "MemAvailable")
}

// statusField reads a "Name:   1234 kB" line of a /proc status-like file and
// returns its value in bytes.
func statusField(r io.Reader, name string) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != name {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			break
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s field", name)
}

// loadAverage returns the three load averages of /proc/loadavg as printed
// there, e.g. "1.02 0.87 0.55".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// cpuModel returns the model name of the first CPU in /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// raiseFileLimit raises RLIMIT_NOFILE as far as allowed: the hard limit to
// fs.nr_open when running as root, the soft limit to the hard limit. W5
// holds N client sockets here and 2N in the proxy. Since Go 1.21, calling
// Setrlimit also stops os/exec from restoring the original soft limit in
// children, so the proxy inherits the raised limit.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if os.Geteuid() == 0 {
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n > lim.Max {
				lim.Max = n
			}
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		// Fall back to the soft limit only.
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// osAccount is the identity child processes that refuse root (PgBouncer)
// run as.
type osAccount struct {
	uid, gid uint32
}

// postgresAccount returns the postgres OS user when running as root, nil
// (the current user) otherwise.
func postgresAccount() (*osAccount, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PgBouncer must run as the OS user postgres: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	return &osAccount{uid: uint32(uid), gid: uint32(gid)}, nil
}

// chown gives path to the account; a no-op for the current user.
func (a *osAccount) chown(path string) error {
	if a == nil {
		return nil
	}
	return os.Chown(path, int(a.uid), int(a.gid))
}

// process is a long-running child (the proxy, PgBouncer) with its output in
// a log file. It is not safe for concurrent use.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	// debugAddr is a proxy's --debug-addr.
	debugAddr string
}

// startProcess starts name with args, output appended to logPath. The
// child gets SIGKILL if this process dies (Pdeathsig), so an interrupted
// benchmark leaves nothing running.
func startProcess(name, logPath string, acct *osAccount, bin string, args ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if acct != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: acct.uid, Gid: acct.gid}
		cmd.Dir = "/"
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid returns the child's process id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the child has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to 15 seconds, then SIGKILL. It is a no-op
// once the child has exited.
func (p *process) stop() {
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// logTail returns the last lines of the child's log, for error messages.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	return tailLines(string(b), 15)
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitTCP waits until addr accepts TCP connections, the process exits or
// ctx ends.
func waitTCP(ctx context.Context, p *process, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if p.exited() {
			return fmt.Errorf("%s exited during start-up (%v):\n%s", p.name, p.waitErr, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept connections on %s after %v:\n%s", p.name, addr, timeout, p.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// systemCPU returns the busy and total CPU time of all CPUs so far, in
// USER_HZ ticks, from the "cpu" line of /proc/stat (idle and iowait are not
// busy; guest time is already counted in user time).
func systemCPU() (busy, total int64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0, errors.New("malformed /proc/stat")
	}
	for i, v := range f[1:min(len(f), 9)] { // user .. steal
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("malformed /proc/stat: %w", err)
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

// procStat is what the CPU accounting reads of a process in
// /proc/<pid>/stat, times in USER_HZ ticks.
type procStat struct {
	ppid  int
	ticks int64 // utime + stime
	// reaped is cutime + cstime: the CPU of the children it has waited
	// for.
	reaped int64
}

// readProcs reads every process's procStat, by pid. Processes that end
// while it reads are left out.
func readProcs() (map[int]procStat, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	procs := map[int]procStat{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15,
		// cutime 16, cstime 17.
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		n := func(k int) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
		procs[pid] = procStat{ppid: ppid, ticks: n(11) + n(12), reaped: n(13) + n(14)}
	}
	return procs, nil
}

// descends reports whether pid is root or one of its descendants.
func descends(procs map[int]procStat, pid, root int) bool {
	for range 64 { // bounded walk up the tree
		if pid == root {
			return true
		}
		p, ok := procs[pid]
		if !ok || pid <= 1 {
			return false
		}
		pid = p.ppid
	}
	return false
}

// treeCPU returns the user+system CPU time, in USER_HZ ticks, of this
// process and each of its descendants alive now (the benchmark, Postgres
// and its backends, the proxy, PgBouncer, pgbench), by pid.
func treeCPU() map[int]int64 {
	procs, err := readProcs()
	if err != nil {
		return nil
	}
	self := os.Getpid()
	out := map[int]int64{}
	for pid, p := range procs {
		if descends(procs, pid, self) {
			out[pid] = p.ticks
		}
	}
	return out
}

// treeDelta is the CPU our processes used between two treeCPU snapshots:
// the growth of those in both, and all of those that started in between.
// Processes that exited in between (the backends of the previous
// measurement's clients) are left out, not subtracted.
func treeDelta(before, after map[int]int64) int64 {
	var d int64
	for pid, t1 := range after {
		t0, ok := before[pid]
		if ok && t1 >= t0 {
			d += t1 - t0
		} else if !ok {
			d += t1
		}
	}
	return d
}

// otherCPU returns the share of all CPUs' time, in percent, that processes
// other than this benchmark and its children used during window; -1 if
// /proc cannot tell. Measured just before a measurement, it shows how
// contested the machine was.
func otherCPU(window time.Duration) float64 {
	b0, t0, err0 := systemCPU()
	o0 := treeCPU()
	time.Sleep(window)
	b1, t1, err1 := systemCPU()
	o1 := treeCPU()
	if err0 != nil || err1 != nil || t1 <= t0 {
		return -1
	}
	other := (b1 - b0) - treeDelta(o0, o1)
	return min(100, max(0, float64(other)/float64(t1-t0)*100))
}

// familyCPU returns the user+system CPU time that process root and all its
// descendants have used so far: those alive now, and those root has
// reaped (its cutime and cstime), which is how the CPU of Postgres
// backends that ended with their client's connection stays counted.
func familyCPU(root int) (time.Duration, error) {
	procs, err := readProcs()
	if err != nil {
		return 0, err
	}
	r, ok := procs[root]
	if !ok {
		return 0, fmt.Errorf("process %d is gone", root)
	}
	ticks := r.reaped
	for pid, p := range procs {
		if descends(procs, pid, root) {
			ticks += p.ticks
		}
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// selfCPU returns the user+system CPU time this process has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuWindow measures where the CPU went during one measurement: the whole
// machine's busy time and that of Postgres (every process of it) and of
// the process in the middle (the proxy or PgBouncer), if any. The load
// generator's own CPU is measured by whoever runs it: pgbench's from its
// rusage, the Go load generator's as this process's.
type cpuWindow struct {
	mid                      *process
	pg0, pg1, mid0, mid1     time.Duration
	busy0, busy1, tot0, tot1 int64
	err                      error
}

// startCPU opens a cpuWindow; mid may be nil.
func (b *bench) startCPU(mid *process) *cpuWindow {
	w := &cpuWindow{mid: mid}
	w.pg0, w.mid0, w.busy0, w.tot0 = w.snap(b)
	return w
}

func (w *cpuWindow) snap(b *bench) (pg, mid time.Duration, busy, total int64) {
	var err error
	if pg, err = familyCPU(b.pg.Pid()); err != nil {
		w.err = errors.Join(w.err, err)
	}
	if w.mid != nil {
		if mid, err = cpuTime(w.mid.pid()); err != nil {
			w.err = errors.Join(w.err, err)
		}
	}
	if busy, total, err = systemCPU(); err != nil {
		w.err = errors.Join(w.err, err)
	}
	return pg, mid, busy, total
}

// end closes the window.
func (w *cpuWindow) end(b *bench) {
	w.pg1, w.mid1, w.busy1, w.tot1 = w.snap(b)
}

// record puts in s, per operation of s.Ops, what each party used in the
// window, client being the load generator's CPU, and the machine's busy
// share.
func (w *cpuWindow) record(s *sample, client time.Duration) {
	if w.err != nil {
		s.problemf("measuring CPU: %v", w.err)
		return
	}
	if s.Ops <= 0 {
		return
	}
	perOp := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(s.Ops) }
	if w.mid != nil {
		s.CPUPerOp = perOp(w.mid1 - w.mid0)
	}
	s.PgCPUPerOp = perOp(w.pg1 - w.pg0)
	if client > 0 {
		s.ClientCPUPerOp = perOp(client)
	}
	if w.tot1 > w.tot0 {
		s.BusyPct = float64(w.busy1-w.busy0) / float64(w.tot1-w.tot0) * 100
	}
}
