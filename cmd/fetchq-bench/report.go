package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// report is the summary of a run: the samples grouped by cell, and what
// the table needs to print them.
type report struct {
	b        *bench
	byKey    map[string][]sample
	Goals    []goal        `json:"goals"`
	Samples  []sample      `json:"samples"`
	Settings reportHeader  `json:"settings"`
	Loads    []loadMark    `json:"load_average"`
	Took     time.Duration `json:"took_ns"`
}

// reportHeader describes the machine and the settings of the run.
type reportHeader struct {
	Reps         int      `json:"reps"`
	Duration     string   `json:"duration"`
	Workloads    []string `json:"workloads"`
	Docs         int      `json:"docs"`
	CPUs         int      `json:"cpus"`
	CPUModel     string   `json:"cpu_model"`
	MemTotal     string   `json:"mem_total"`
	Postgres     string   `json:"postgres"`
	Durable      bool     `json:"durable_commits"`
	PgBouncer    string   `json:"pgbouncer,omitempty"`
	ProxyRev     string   `json:"proxy_revision"`
	ProxyArgs    []string `json:"proxy_args,omitempty"`
	Go           string   `json:"go"`
	Extension    string   `json:"extension"`
	RiverWorkers int      `json:"river_workers"`
}

// goal is one target of the issue, evaluated on the medians.
type goal struct {
	Name     string  `json:"name"`
	Measured string  `json:"measured"`
	Want     string  `json:"goal"`
	Ratio    float64 `json:"value,omitempty"`
	Verdict  string  `json:"verdict"` // ok, MISS, not measured, ...
}

// report builds the summary of the run.
func (b *bench) report() *report {
	r := &report{b: b, byKey: map[string][]sample{}, Samples: b.samples, Loads: b.loads, Took: time.Since(b.started)}
	for _, s := range b.samples {
		r.byKey[s.key()] = append(r.byKey[s.key()], s)
	}
	ext := "not measured (pass -extension-sql)"
	if b.o.extensionSQL != "" {
		ext = b.o.extensionSQL
	}
	memTotal := "unknown"
	if f, err := os.Open("/proc/meminfo"); err == nil {
		if n, err := statusField(f, "MemTotal"); err == nil {
			memTotal = fmtBytes(n)
		}
		f.Close()
	}
	r.Settings = reportHeader{
		Reps: b.o.reps, Duration: b.o.duration.String(), Workloads: b.o.workloads, Docs: b.o.docs,
		CPUs: runtime.NumCPU(), CPUModel: cpuModel(), MemTotal: memTotal,
		Postgres: b.pgVer, Durable: !b.o.fast, PgBouncer: b.bouncerVer, ProxyRev: b.proxyRev, ProxyArgs: b.o.proxyArgs,
		Go: runtime.Version(), Extension: ext, RiverWorkers: b.o.riverWorkers,
	}
	r.Goals = r.goals()
	return r
}

// values returns the measured values of a cell, in repetition order; a
// repetition that measured nothing is NaN.
func (r *report) values(c cell) []float64 {
	var out []float64
	for _, s := range r.byKey[c.key()] {
		v := s.Value
		if v <= 0 || (s.Workload == "W5" && s.Measured == 0) {
			v = math.NaN()
		}
		out = append(out, v)
	}
	return out
}

// median returns the median of a cell's measured values, NaN if none.
func (r *report) median(c cell) float64 { return median(r.values(c)) }

// median returns the median of the values that are not NaN, NaN if none.
func median(vs []float64) float64 {
	var xs []float64
	for _, v := range vs {
		if !math.IsNaN(v) {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return math.NaN()
	}
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// sampleMedian is the median of a field of a cell's samples (field
// returns it, 0 when unmeasured), NaN if none was measured.
func (r *report) sampleMedian(c cell, field func(sample) float64) float64 {
	var vs []float64
	for _, s := range r.byKey[c.key()] {
		if v := field(s); v > 0 {
			vs = append(vs, v)
		}
	}
	return median(vs)
}

// cpuMedian is the median CPU per operation of a cell, NaN if unmeasured.
func (r *report) cpuMedian(c cell) float64 {
	return r.sampleMedian(c, func(s sample) float64 { return s.CPUPerOp })
}

// batchMedian is the median calls per batch of a cell, NaN if unmeasured.
func (r *report) batchMedian(c cell) float64 {
	return r.sampleMedian(c, func(s sample) float64 { return s.CallsPerBatch })
}

// spread is half the range of a cell's values relative to its median, in
// percent.
func spread(vs []float64) float64 {
	m := median(vs)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vs {
		if !math.IsNaN(v) {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if math.IsNaN(m) || m == 0 || math.IsInf(lo, 0) {
		return math.NaN()
	}
	return (hi - lo) / 2 / m * 100
}

// targetLabel names a target in the tables.
func (r *report) targetLabel(workload, target string) string {
	switch target {
	case tProxy:
		return "fetchq-proxy"
	case tExt:
		return "Fetchq 4.0.2 extension"
	case tRiver:
		return fmt.Sprintf("River burn-down (%d workers)", r.b.o.riverWorkers)
	case tDirect:
		return "direct"
	case tBouncer:
		return "PgBouncer"
	case tSQL:
		switch workload {
		case "W1":
			return "hand-written INSERT"
		case "W2":
			return "hand-written per-call SQL"
		case "W3":
			return "hand-written batched SQL"
		}
	}
	return target
}

// print writes the tables, the goals, the load average and the problems.
func (r *report) print(w io.Writer) {
	h := r.Settings
	fmt.Fprintf(w, "\nfetchq-bench: %d interleaved repetitions of %s per measurement, medians (target order rotated each repetition)\n", h.Reps, h.Duration)
	fmt.Fprintf(w, "  host       %d CPUs (%s), %s RAM, %s\n", h.CPUs, h.CPUModel, h.MemTotal, h.Go)
	commits := "durable commits (fsync on)"
	if !h.Durable {
		commits = "fsync, synchronous_commit and full_page_writes off (-fast)"
	}
	fmt.Fprintf(w, "  postgres   %s over TCP 127.0.0.1, %s, shared_buffers 256MB, max_connections %d\n", h.Postgres, commits, r.b.maxConnections())
	fmt.Fprintf(w, "  proxy      %s, a fresh process per measurement, --upstream = the measurement's own database\n", h.ProxyRev)
	if len(h.ProxyArgs) > 0 {
		fmt.Fprintf(w, "             with %s\n", strings.Join(h.ProxyArgs, " "))
	}
	if h.PgBouncer != "" {
		fmt.Fprintf(w, "  pgbouncer  %s, session mode\n", h.PgBouncer)
	}
	fmt.Fprintf(w, "  extension: %s\n", h.Extension)

	for _, wl := range r.b.o.workloads {
		fmt.Fprintln(w)
		switch wl {
		case "W1":
			r.printQueue(w, "W1  single push (doc_push), 8 clients, pgbench -M simple", "pushes/s", []int{w1Clients}, wl, []string{tProxy, tSQL, tExt})
		case "W2":
			r.printQueue(w, "W2  pick 1 + complete (two calls per document), pgbench -M simple", "documents/s", r.b.o.w2Clients, wl, []string{tProxy, tSQL, tExt})
		case "W3":
			r.printQueue(w, fmt.Sprintf("W3  pick %d + complete each (completes pipelined, a Sync each), 8 clients, Go load generator", w3Batch), "documents/s", []int{w3Clients}, wl, []string{tProxy, tSQL, tRiver, tExt})
		case "W4":
			r.printPassthrough(w)
		case "W5":
			r.printIdle(w)
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "Goals (on the medians)")
	t := &table{align: "lrll"}
	t.add("goal", "measured", "target", "verdict")
	for _, g := range r.Goals {
		t.add(g.Name, g.Measured, g.Want, g.Verdict)
	}
	t.write(w, "  ")

	fmt.Fprintln(w)
	var loads []string
	for _, l := range r.Loads {
		loads = append(loads, l.When+" "+l.Load)
	}
	fmt.Fprintf(w, "load average (1/5/15 min): %s\n", strings.Join(loads, "; "))
	var other []float64
	var waited float64
	for _, s := range r.Samples {
		if s.OtherCPU >= 0 {
			other = append(other, s.OtherCPU)
		}
		waited += max(0, s.Waited)
	}
	if len(other) > 0 {
		fmt.Fprintf(w, "CPU used by other processes in the 0.5 s before each measurement (share of all CPUs): median %s%%, max %s%%",
			fmtFloat(median(other), 0), fmtFloat(slices.Max(other), 0))
		if r.b.o.quiet > 0 {
			fmt.Fprintf(w, " (-quiet %.0f: waited %s in all)", r.b.o.quiet, time.Duration(waited*float64(time.Second)).Round(time.Second))
		}
		fmt.Fprintln(w)
	}
	var problems []string
	for _, s := range r.Samples {
		for _, p := range s.Problems {
			problems = append(problems, fmt.Sprintf("  rep %d %s: %s", s.Rep, strings.Join(strings.Fields(s.cell.String()), " "), p))
		}
	}
	if len(problems) == 0 {
		fmt.Fprintln(w, "problems: none")
	} else {
		fmt.Fprintf(w, "problems (%d):\n%s\n", len(problems), strings.Join(problems, "\n"))
	}
	fmt.Fprintf(w, "run took %s (set-up %s)\n", r.Took.Round(time.Second), r.b.setupTime.Round(time.Second))
}

// printQueue prints W1, W2 or W3: one row per client count and target.
func (r *report) printQueue(w io.Writer, title, unit string, clients []int, wl string, targets []string) {
	fmt.Fprintf(w, "%s, %s\n", title, unit)
	t := &table{align: "rlr" + strings.Repeat("r", r.b.o.reps) + "rrrrrl"}
	head := []string{"clients", "target", "median"}
	for i := range r.b.o.reps {
		head = append(head, fmt.Sprintf("rep %d", i+1))
	}
	t.add(append(head, "CPU µs/op: proxy", "Postgres", "client", "busy %", "calls/batch", "")...)
	for _, n := range clients {
		for _, tg := range targets {
			c := cell{Workload: wl, Target: tg, Clients: n}
			row := []string{strconv.Itoa(n), r.targetLabel(wl, tg)}
			if tg == tExt && r.b.o.extensionSQL == "" {
				row = append(row, slices.Repeat([]string{"-"}, r.b.o.reps+6)...) // median, reps, CPU x3, busy, batch
				t.add(append(row, "not measured (pass -extension-sql)")...)
				continue
			}
			row = append(row, fmtNum(r.median(c)))
			vs := r.values(c)
			for i := range r.b.o.reps {
				v := math.NaN()
				if i < len(vs) {
					v = vs[i]
				}
				row = append(row, fmtNum(v))
			}
			cpu, batch := "-", "-"
			if tg == tProxy {
				cpu, batch = fmtFloat(r.cpuMedian(c), 1), fmtFloat(r.batchMedian(c), 1)
			}
			pg := fmtFloat(r.sampleMedian(c, func(s sample) float64 { return s.PgCPUPerOp }), 1)
			client := fmtFloat(r.sampleMedian(c, func(s sample) float64 { return s.ClientCPUPerOp }), 1)
			busy := fmtFloat(r.sampleMedian(c, func(s sample) float64 { return s.BusyPct }), 0)
			note := ""
			for _, s := range r.byKey[c.key()] {
				if s.Note != "" {
					note = "burn-down: drained the preloaded queue before the deadline"
				}
			}
			t.add(append(row, cpu, pg, client, busy, batch, note)...)
		}
	}
	t.write(w, "  ")
}

// printPassthrough prints W4: one row per mode, the targets side by side.
func (r *report) printPassthrough(w io.Writer) {
	fmt.Fprintf(w, "W4  pass-through, pgbench %d clients, -j %d, scale %d, transactions/s (median ± half the range)\n",
		r.b.o.w4Clients, pgbenchThreads(r.b.o.w4Clients), r.b.o.scale)
	t := &table{align: "lrrrrrrr"}
	t.add("mode", "direct", "PgBouncer", "proxy", "proxy/PgBouncer", "proxy/direct", "proxy CPU µs/tx", "PgBouncer CPU µs/tx")
	for _, m := range w4Modes {
		at := func(tg string) cell { return cell{Workload: "W4", Target: tg, Clients: r.b.o.w4Clients, Mode: m} }
		d, pb, px := r.median(at(tDirect)), r.median(at(tBouncer)), r.median(at(tProxy))
		withSpread := func(c cell) string {
			vs := r.values(c)
			return fmt.Sprintf("%s ±%s%%", fmtNum(median(vs)), fmtFloat(spread(vs), 0))
		}
		t.add(modeLabel(m), withSpread(at(tDirect)), withSpread(at(tBouncer)), withSpread(at(tProxy)),
			fmtRatio(px/pb), fmtRatio(px/d), fmtFloat(r.cpuMedian(at(tProxy)), 1), fmtFloat(r.cpuMedian(at(tBouncer)), 1))
	}
	t.write(w, "  ")
}

func modeLabel(m string) string {
	if m == "tpcb" {
		return "TPC-B (simple)"
	}
	return "-S " + m
}

// printIdle prints W5.
func (r *report) printIdle(w io.Writer) {
	fmt.Fprintln(w, "W5  proxy memory per idle connection: VmRSS of a fresh proxy before and after N idle clients, KB per connection")
	t := &table{align: "rrrrr" + strings.Repeat("r", r.b.o.reps) + "r"}
	head := []string{"connections", "measured", "RSS before", "RSS after", "median"}
	for i := range r.b.o.reps {
		head = append(head, fmt.Sprintf("rep %d", i+1))
	}
	t.add(append(head, "system MB/conn")...)
	var notes []string
	for _, n := range r.b.o.idleConns {
		c := cell{Workload: "W5", Target: tProxy, Conns: n}
		var before, after, measured, sys []float64
		var perRep []string
		note := ""
		for _, s := range r.byKey[c.key()] {
			if s.Measured > 0 {
				before = append(before, float64(s.RSSBefore))
				after = append(after, float64(s.RSSAfter))
				measured = append(measured, float64(s.Measured))
				sys = append(sys, s.SysPerMB)
			}
			perRep = append(perRep, fmtNum(float64(s.Measured)))
			if s.Note != "" {
				_, note, _ = strings.Cut(s.Note, "limited by ")
			}
		}
		if note != "" {
			notes = append(notes, fmt.Sprintf("%s asked, %s measured (by repetition): limited by %s",
				fmtNum(float64(n)), strings.Join(perRep, " / "), note))
		}
		row := []string{fmtNum(float64(n)), fmtNum(median(measured)),
			fmtBytesF(median(before)), fmtBytesF(median(after)), fmtFloat(r.median(c), 1)}
		vs := r.values(c)
		for i := range r.b.o.reps {
			v := math.NaN()
			if i < len(vs) {
				v = vs[i]
			}
			row = append(row, fmtFloat(v, 1))
		}
		t.add(append(row, fmtFloat(median(sys), 2))...)
	}
	t.write(w, "  ")
	for _, n := range notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

// goals evaluates the goals on the medians.
func (r *report) goals() []goal {
	var out []goal
	has := r.b.o.has
	ext := r.b.o.extensionSQL != ""
	ratioGoal := func(name string, num, den cell, want float64, needExt bool) {
		g := goal{Name: name, Want: "≥ " + strconv.FormatFloat(want, 'f', -1, 64) + "x"}
		x := r.median(num) / r.median(den)
		switch {
		case needExt && !ext:
			g.Measured, g.Verdict = "-", "not measured (pass -extension-sql)"
		case math.IsNaN(x) || math.IsInf(x, 0):
			g.Measured, g.Verdict = "-", "no data"
		default:
			g.Ratio, g.Measured, g.Verdict = x, fmtRatio(x), verdict(x >= want)
			if x < want && g.Measured == fmtRatio(want) {
				// 0.997x would print as 1.00x next to a MISS.
				g.Measured = strconv.FormatFloat(x, 'f', 3, 64) + "x"
			}
		}
		out = append(out, g)
	}
	q := func(w, t string, n int) cell { return cell{Workload: w, Target: t, Clients: n} }
	if has("W1") {
		ratioGoal("W1 push, 8 clients: proxy / extension", q("W1", tProxy, w1Clients), q("W1", tExt, w1Clients), 4, true)
	}
	if has("W2") {
		n := slices.Max(r.b.o.w2Clients)
		ratioGoal(fmt.Sprintf("W2 pick+complete, %d clients: proxy / extension", n), q("W2", tProxy, n), q("W2", tExt, n), 10, true)
	}
	if has("W3") {
		ratioGoal("W3 pick 100+complete: proxy / River", q("W3", tProxy, w3Clients), q("W3", tRiver, w3Clients), 1.5, false)
		ratioGoal("W3 pick 100+complete: proxy / hand-written batched", q("W3", tProxy, w3Clients), q("W3", tSQL, w3Clients), 0.7, false)
	}
	if has("W4") {
		at := func(t, m string) cell { return cell{Workload: "W4", Target: t, Clients: r.b.o.w4Clients, Mode: m} }
		for _, m := range w4Modes {
			ratioGoal("W4 "+modeLabel(m)+": proxy / PgBouncer", at(tProxy, m), at(tBouncer, m), 1.0, false)
		}
		for _, m := range w4Modes[:3] {
			us := r.cpuMedian(at(tProxy, m))
			g := goal{Name: "W4 proxy CPU per forwarded " + modeLabel(m) + " transaction", Want: "≤ 30 µs", Measured: fmtFloat(us, 1) + " µs", Verdict: verdict(us <= 30)}
			if math.IsNaN(us) {
				g.Measured, g.Verdict = "-", "no data"
			}
			g.Ratio = us
			out = append(out, g)
		}
	}
	if has("W5") {
		for _, n := range r.b.o.idleConns {
			c := cell{Workload: "W5", Target: tProxy, Conns: n}
			kb := r.median(c)
			name := fmt.Sprintf("W5 proxy RSS per idle connection at %s", fmtNum(float64(n)))
			var measured []float64
			for _, s := range r.byKey[c.key()] {
				if s.Measured > 0 {
					measured = append(measured, float64(s.Measured))
				}
			}
			if m := median(measured); !math.IsNaN(m) && int(m) != n {
				name += fmt.Sprintf(" (measured at %s)", fmtNum(m))
			}
			g := goal{Name: name, Want: "≤ 16 KB", Measured: fmtFloat(kb, 1) + " KB", Verdict: verdict(kb <= 16), Ratio: kb}
			if math.IsNaN(kb) {
				g.Measured, g.Verdict = "-", "not measured"
			}
			out = append(out, g)
		}
	}
	var failed int64
	var checks, bad int
	for _, s := range r.Samples {
		failed += s.Failed
		if s.Workload != "W1" && s.Workload != "W2" && s.Workload != "W3" {
			continue // no documents to count
		}
		checks++
		for _, p := range s.Problems {
			if strings.HasPrefix(p, "exactly-once") || strings.HasPrefix(p, "the queue nearly ran dry") {
				bad++
				break
			}
		}
	}
	out = append(out, goal{Name: "failed transactions (all measurements)", Measured: strconv.FormatInt(failed, 10), Want: "0", Verdict: verdict(failed == 0)})
	out = append(out, goal{Name: "W1-W3 status counts after each measurement (exactly once)", Measured: fmt.Sprintf("%d of %d consistent", checks-bad, checks), Want: "all", Verdict: verdict(bad == 0)})
	return out
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISS"
}

// writeJSON writes the report to path.
func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// fmtNum formats a number with thousands separators and no decimals; "-"
// for NaN.
func fmtNum(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// fmtFloat formats v with prec decimals; "-" for NaN.
func fmtFloat(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// fmtRatio formats a ratio as "0.56x"; "-" for NaN.
func fmtRatio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + "x"
}

// fmtBytes formats a byte count in binary units.
func fmtBytes(n int64) string { return fmtBytesF(float64(n)) }

func fmtBytesF(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v >= 1<<30:
		return fmt.Sprintf("%.1f GiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}
