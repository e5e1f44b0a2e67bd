package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// idleDB is the database W5's idle clients connect to.
	idleDB = "w5_idle"
	// idleConnectors is how many connections W5 opens at a time.
	idleConnectors = 32
	// idleGuessPerConn is the system memory assumed per idle connection
	// (proxy session, Postgres backend, client) before one was measured.
	idleGuessPerConn = 4 << 20
	// idleSettle is how long W5 waits before reading RSS, for the proxy's
	// sessions and the runtime to settle (longer than the second after
	// which an idle session gives its read buffers back).
	idleSettle = 3 * time.Second
)

// runIdle measures W5: a fresh proxy, its RSS, N idle client connections
// through it (each with its own upstream backend), its RSS again. The
// difference divided by N is the proxy's memory per idle connection. A
// count that would not fit in memory, in Postgres' max_connections or in
// the process table is lowered to what fits, and the sample says why.
func (b *bench) runIdle(ctx context.Context, s *sample) error {
	s.Unit = "KB/conn"
	n, note := b.idleCapacity(s.Conns)
	s.Note = note
	if n < 1 {
		return fmt.Errorf("no room for idle connections: %s", note)
	}
	if err := b.ensureIdleDB(ctx); err != nil {
		return err
	}
	proxy, port, err := b.startProxy(ctx, idleDB, "w5-"+strconv.Itoa(s.Conns))
	if err != nil {
		return err
	}
	defer proxy.stop()
	time.Sleep(idleSettle)
	rss0, err := rssBytes(proxy.pid())
	if err != nil {
		return err
	}
	mem0, _ := memAvailable()

	conns, err := openIdle(ctx, port, n)
	defer closeIdle(conns)
	if err != nil {
		return fmt.Errorf("opened %d of %d idle connections: %w", len(conns), n, err)
	}
	time.Sleep(idleSettle)
	rss1, err := rssBytes(proxy.pid())
	if err != nil {
		return err
	}
	mem1, _ := memAvailable()

	s.Measured = n
	s.RSSBefore, s.RSSAfter = rss0, rss1
	s.PerConnKB = float64(rss1-rss0) / float64(n) / 1024
	s.Value = s.PerConnKB
	if mem0 > mem1 {
		s.SysPerMB = float64(mem0-mem1) / float64(n) / (1 << 20)
		// Keep the smallest figure measured: a drop of MemAvailable
		// also counts whatever else grew meanwhile (page cache, the
		// previous repetition's backends still exiting), and an
		// overestimate would cap the next repetitions needlessly.
		if per := (mem0 - mem1) / int64(n); b.idlePerConn == 0 || per < b.idlePerConn {
			b.idlePerConn = per
		}
	}
	s.Checks = fmt.Sprintf("RSS %s -> %s with %d idle connections; system memory %.2f MB per connection (proxy + backend + client)",
		fmtBytes(rss0), fmtBytes(rss1), n, s.SysPerMB)
	if proxy.exited() {
		s.problemf("the proxy exited: %v", proxy.waitErr)
	}
	return nil
}

// idleCapacity returns how many idle connections fit, at most want, and
// why it is fewer.
func (b *bench) idleCapacity(want int) (int, string) {
	n := want
	var why []string
	if lim := b.maxConnections() - 100; n > lim {
		n = lim
		why = append(why, fmt.Sprintf("max_connections %d", b.maxConnections()))
	}
	per := b.idlePerConn
	if per <= 0 {
		per = idleGuessPerConn
	}
	if avail, err := memAvailable(); err == nil {
		budget := avail * int64(b.o.maxMemPercent) / 100
		if fit := int(budget / per); fit < n {
			n = fit
			why = append(why, fmt.Sprintf("memory: %.1f MB per connection (proxy + Postgres backend + client) and %d%% of MemAvailable %s",
				float64(per)/(1<<20), b.o.maxMemPercent, fmtBytes(avail)))
		}
	}
	if room := pidRoom(); room >= 0 && room < n {
		n = room
		why = append(why, "process table (kernel.pid_max)")
	}
	// The proxy (same limit, inherited) holds two descriptors per idle
	// session: the client's and the upstream's.
	if lim := (int(b.fileLimit) - 1000) / 2; n > lim {
		n = lim
		why = append(why, fmt.Sprintf("RLIMIT_NOFILE %d", b.fileLimit))
	}
	if n < want {
		if n > 1000 {
			n -= n % 500
		}
		return n, fmt.Sprintf("asked for %d, measured %d: limited by %s", want, n, strings.Join(why, ", "))
	}
	return n, ""
}

// pidRoom returns how many more processes can exist (kernel.pid_max minus
// the processes running now, keeping 2,000 spare), or -1 if unknown. Each
// idle connection is one Postgres backend process.
func pidRoom() int {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return -1
	}
	pidMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return -1
	}
	procs := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			procs++
		}
	}
	return max(0, pidMax-procs-2000)
}

// ensureIdleDB creates W5's database the first time.
func (b *bench) ensureIdleDB(ctx context.Context) error {
	if b.idleReady {
		return nil
	}
	if err := b.createDB(ctx, idleDB, ""); err != nil {
		return err
	}
	b.idleReady = true
	return nil
}

// openIdle opens n connections through the proxy on port, idleConnectors
// at a time, and returns those it opened.
func openIdle(ctx context.Context, port, n int) ([]*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(dsn(port, idleDB))
	if err != nil {
		return nil, err
	}
	cfg.ConnectTimeout = 60 * time.Second
	conns := make([]*pgconn.PgConn, n)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range idleConnectors {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := pgconn.ConnectConfig(ctx, cfg)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					next.Store(int64(n)) // stop the others
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	var out []*pgconn.PgConn
	for _, c := range conns {
		if c != nil {
			out = append(out, c)
		}
	}
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return out, firstErr
}

// closeIdle closes the connections, idleConnectors at a time.
func closeIdle(conns []*pgconn.PgConn) {
	ch := make(chan *pgconn.PgConn)
	var wg sync.WaitGroup
	for range idleConnectors {
		wg.Go(func() {
			for c := range ch {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = c.Close(ctx)
				cancel()
			}
		})
	}
	for _, c := range conns {
		ch <- c
	}
	close(ch)
	wg.Wait()
}
