package main

import (
	"bytes"
	"io"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParsePgbench(t *testing.T) {
	t.Parallel()
	t.Run("Summary", func(t *testing.T) {
		t.Parallel()
		res := parsePgbench(`pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
number of transactions actually processed: 321
number of failed transactions: 2 (0.623%)
latency average = 0.527 ms
initial connection time = 12.345 ms
tps = 30353.123456 (without initial connection time)
`)
		require.Equal(t, int64(321), res.Processed)
		require.Equal(t, int64(2), res.Failed)
		require.InDelta(t, 30353.123456, res.TPS, 1e-9)
		require.Zero(t, res.Aborted)
	})
	t.Run("Aborted", func(t *testing.T) {
		t.Parallel()
		res := parsePgbench(`number of transactions actually processed: 0
number of failed transactions: 0 (NaN%)
pgbench: error: client 0 script 0 command 0 query 0: expected one row, got 0
pgbench: error: client 1 script 0 aborted in command 1 query 0: ERROR:  boom
pgbench: error: Run was aborted; the above results are incomplete.
`)
		require.Equal(t, 2, res.Aborted)
		require.Contains(t, res.FirstError, "expected one row, got 0")
	})
}

func TestParseStatCPU(t *testing.T) {
	t.Parallel()
	// The command name holds spaces and a ')'; utime 250 and stime 50
	// ticks are fields 14 and 15.
	stat := "4242 (fetchq (proxy)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 200000 300\n"
	d, err := parseStatCPU([]byte(stat))
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, d)
	_, err = parseStatCPU([]byte("garbage"))
	require.Error(t, err)
}

func TestStatusField(t *testing.T) {
	t.Parallel()
	status := "Name:\tfetchq-proxy\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t7\n"
	n, err := statusField(strings.NewReader(status), "VmRSS")
	require.NoError(t, err)
	require.Equal(t, int64(12345*1024), n)
	n, err = statusField(strings.NewReader(status), "Threads")
	require.NoError(t, err)
	require.Equal(t, int64(7), n)
	_, err = statusField(strings.NewReader(status), "VmSwap")
	require.Error(t, err)
}

func TestMedianAndSpread(t *testing.T) {
	t.Parallel()
	nan := math.NaN()
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 3, 2}))
	require.Equal(t, 2.0, median([]float64{nan, 3, 1}), "unmeasured repetitions are ignored")
	require.True(t, math.IsNaN(median([]float64{nan})))
	require.True(t, math.IsNaN(median(nil)))
	require.InDelta(t, 10.0, spread([]float64{90, 100, 110}), 1e-9)
	require.True(t, math.IsNaN(spread(nil)))
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 30353.6: "30,354", 1234567: "1,234,567", -4200: "-4,200"} {
		require.Equal(t, want, fmtNum(v), "fmtNum(%v)", v)
	}
	require.Equal(t, "-", fmtNum(math.NaN()))
	require.Equal(t, "0.56x", fmtRatio(0.5612))
	require.Equal(t, "-", fmtRatio(math.Inf(1)))
	require.Equal(t, "1.5 MiB", fmtBytes(3<<19))
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	o, err := parseFlags([]string{"-workloads", "w4, W1,w4", "-w2-clients", "1,32", "-idle-conns", "1_000,3000", "-duration", "2500ms"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{"W1", "W4"}, o.workloads)
	require.Equal(t, []int{1, 32}, o.w2Clients)
	require.Equal(t, []int{1000, 3000}, o.idleConns)
	require.Equal(t, 3, o.seconds(), "pgbench -T takes whole seconds, rounded up")
	require.Empty(t, o.proxyArgs)

	o, err = parseFlags([]string{"-proxy-args", " --batch-in-flight 2  --relay-loop=false "}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{"--batch-in-flight", "2", "--relay-loop=false"}, o.proxyArgs)

	for _, args := range [][]string{
		{"-workloads", "W9"},
		{"-workloads", ","},
		{"-w2-clients", "0"},
		{"-reps", "0"},
		{"-duration", "100ms"},
		{"-extension-sql", "/nonexistent/fetchq.sql"},
		{"-proxy-args", "--upstream postgres://elsewhere"},
		{"-proxy-args", "--procs 1 -listen=:1"},
		{"stray"},
	} {
		_, err := parseFlags(args, io.Discard)
		require.Error(t, err, "%v", args)
	}
}

func TestPlanRotatesTargets(t *testing.T) {
	t.Parallel()
	o, err := parseFlags([]string{"-workloads", "W1,W4,W5", "-idle-conns", "1000,10000"}, io.Discard)
	require.NoError(t, err)
	b := &bench{o: o}
	targets := func(rep int, wl, mode string) []string {
		var out []string
		for _, c := range b.plan(rep) {
			if c.Workload == wl && c.Mode == mode {
				out = append(out, c.Target)
			}
		}
		return out
	}
	require.Equal(t, []string{tProxy, tSQL}, targets(0, "W1", ""))
	require.Equal(t, []string{tSQL, tProxy}, targets(1, "W1", ""))
	require.Equal(t, []string{tDirect, tBouncer, tProxy}, targets(0, "W4", "tpcb"))
	require.Equal(t, []string{tBouncer, tProxy, tDirect}, targets(1, "W4", "tpcb"))
	require.Equal(t, []string{tProxy, tDirect, tBouncer}, targets(2, "W4", "simple"))
	require.Len(t, b.plan(0), 2+4*3+2)

	o.extensionSQL = "x.sql" // adds the extension to W1-W3
	require.Equal(t, []string{tExt, tProxy, tSQL}, targets(2, "W1", ""))
}

func TestTable(t *testing.T) {
	t.Parallel()
	tb := &table{align: "lrr"}
	tb.add("mode", "tps", "µs")
	tb.add("-S simple", "30,353", "34.2")
	tb.add("extension", "-", "-", "not measured")
	var buf bytes.Buffer
	tb.write(&buf, "  ")
	require.Equal(t, ""+
		"  mode          tps    µs\n"+
		"  -S simple  30,353  34.2\n"+
		"  extension       -     -  not measured\n", buf.String())
}

func TestCheckPicked(t *testing.T) {
	t.Parallel()
	s := &sample{}
	s.checkPicked(statusCounts{1: 900, 3: 100}, 1000, 100, 1000)
	require.Empty(t, s.Problems)

	s = &sample{}
	s.checkPicked(statusCounts{1: 890, 2: 5, 3: 105}, 1000, 100, 1000)
	require.Len(t, s.Problems, 2, "a completed count that differs and documents left active")

	s = &sample{}
	s.checkPicked(statusCounts{1: 50, 3: 950}, 1000, 950, 1000)
	require.Len(t, s.Problems, 1)
	require.Contains(t, s.Problems[0], "raise -docs")
}

func TestTreeDelta(t *testing.T) {
	t.Parallel()
	before := map[int]int64{1: 100, 2: 500, 3: 40}
	after := map[int]int64{1: 110, 3: 45, 4: 7} // 2 exited, 4 started
	require.Equal(t, int64(10+5+7), treeDelta(before, after))
}

// TestFamilyCPU: the CPU of a child that ran and was reaped in between
// stays counted in its parent's family (Postgres' backends end with their
// clients' connections, before the window closes).
func TestFamilyCPU(t *testing.T) {
	before, err := familyCPU(os.Getpid())
	require.NoError(t, err)
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
	require.NoError(t, cmd.Run()) // Run waits: the child is reaped
	child := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	require.Greater(t, child, 50*time.Millisecond, "the child burnt too little CPU to tell")
	after, err := familyCPU(os.Getpid())
	require.NoError(t, err)
	// /proc counts in ticks of 10 ms; the test process itself only adds.
	require.GreaterOrEqual(t, after-before, child-20*time.Millisecond)

	_, err = familyCPU(1 << 30)
	require.Error(t, err, "a process that does not exist")
}
