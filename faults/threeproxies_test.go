package faults

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/fetchq/fetchq-proxy/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// TestThreeProxies: three proxies share one database; 32 workers are
// spread over them. Halfway through, the proxy that leads maintenance is
// killed with SIGKILL and started again. Throughout, the holders of the
// maintainers' advisory lock are sampled from pg_locks: never more than
// one, and after the kill another proxy leads within a few seconds. Every
// document ends up completed, no two workers hold one within its lock.
func TestThreeProxies(t *testing.T) {
	t.Parallel()
	n := size(8000, 200_000)
	const workers = 32
	const lock = 2 * time.Second

	db := pgtest.NewDB(t)
	pool := db.Pool(t)
	var proxies []*proxyProc
	var dsns []string
	for i := range 3 {
		name := fmt.Sprintf("fqp%d", i+1)
		// The service pool (and so the leader's lock connection) carries
		// the proxy's name; clients' sessions carry their own.
		p := newProxy(t, name, db.ConnString("")+" application_name="+name)
		proxies = append(proxies, p)
		dsns = append(dsns, p.dsn(db.Name))
	}
	initFetchq(t, dsns[0], "q")

	began := time.Now()
	r := newRun("q", lock, 4, dsns...)
	ctx, cancel := context.WithCancel(context.Background())
	defer r.wait()
	defer cancel()

	s := &leaderSampler{pool: pool}
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		s.run(ctx, 20*time.Millisecond)
	}()
	defer func() { cancel(); <-sampled }()

	pushed := make(chan error, 1)
	go func() { pushed <- r.push(ctx, dsns[1], n, 1000) }()
	r.start(ctx, workers)

	killed := ""
	var failover time.Duration
	waitCompleted(t, pool, "q", n, size(3*time.Minute, 30*time.Minute), r, func(done int) {
		if killed != "" || done < n/2 {
			return
		}
		leader := s.current()
		require.NotEmpty(t, leader, "a proxy leads maintenance halfway through the run")
		i := slices.IndexFunc(proxies, func(p *proxyProc) bool { return p.name == leader })
		require.GreaterOrEqual(t, i, 0, "the lock holder %q is one of the proxies", leader)
		killed = leader
		t0 := time.Now()
		proxies[i].kill()
		// Postgres releases the lock when the killed proxy's connection
		// ends; another maintainer takes it at its next attempt (1 s).
		require.Eventually(t, func() bool {
			l := s.current()
			return l != "" && l != killed
		}, 5*time.Second, 10*time.Millisecond, "another proxy leads after the leader was killed")
		failover = time.Since(t0)
		proxies[i].start()
	})
	require.NoError(t, <-pushed)
	cancel()
	r.wait()
	<-sampled

	rp := verify(t, pool, r, n)
	samples, most, leaders := s.summary()
	t.Logf("3 proxies, %d workers: %s; leader samples %d, most holders at once %d, leaders seen %v, leader %s killed, next leader after %v; errors seen by workers: %s; wall time %v",
		workers, rp, samples, most, leaders, killed, failover.Round(time.Millisecond), r.tr.errorSummary(), time.Since(began).Round(time.Millisecond))
	require.NotEmpty(t, killed, "the leader was killed")
	require.Greater(t, samples, 20, "pg_locks was sampled throughout the run")
	require.LessOrEqual(t, most, 1, "maintainers holding the leader lock at once")
	require.GreaterOrEqual(t, len(leaders), 2, "leadership moved after the kill")
}

// leaderSampler samples pg_locks for the holders of the maintainers'
// advisory lock, named by the application_name of their connection.
type leaderSampler struct {
	pool *pgxpool.Pool

	mu      sync.Mutex
	samples int
	most    int
	last    string
	seen    []string
}

func (s *leaderSampler) run(ctx context.Context, every time.Duration) {
	key := uint64(backend.DefaultMaintainerLockKey)
	for ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rows, err := s.pool.Query(qctx, `SELECT coalesce(a.application_name, '') FROM pg_locks l
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1`, int64(key>>32), int64(key&0xffffffff))
		var holders []string
		if err == nil {
			holders, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		cancel()
		if err == nil {
			s.mu.Lock()
			s.samples++
			s.most = max(s.most, len(holders))
			s.last = ""
			if len(holders) == 1 {
				s.last = holders[0]
				if !slices.Contains(s.seen, holders[0]) {
					s.seen = append(s.seen, holders[0])
				}
			}
			s.mu.Unlock()
		}
		sleep(ctx, every)
	}
}

// current is the leader of the latest sample, "" if none.
func (s *leaderSampler) current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *leaderSampler) summary() (samples, most int, seen []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples, s.most, slices.Clone(s.seen)
}
