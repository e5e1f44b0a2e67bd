package pgtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

func TestIsLeak(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		stack string
		leak  bool
	}{
		"ProjectCodeStartedByTest": {leak: true, stack: `goroutine 7 [select]:
github.com/fetchq/fetchq-proxy/proxy.(*Server).Serve(0xc000123456, {0x7f, 0xc0})
	/work/main/proxy/server.go:10 +0x1d
created by github.com/fetchq/fetchq-proxy/proxy_test.TestServe in goroutine 6
	/work/main/proxy/server_test.go:20 +0x1d`},
		"ProjectCreator": {leak: true, stack: `goroutine 8 [chan receive]:
time.Sleep(0x3b9aca00)
	/usr/local/go/src/runtime/time.go:300 +0x1d
created by github.com/fetchq/fetchq-proxy/backend.(*Maintainer).Start in goroutine 1
	/work/main/backend/maintenance.go:42 +0x1d`},
		"UnclosedPool": {leak: true, stack: `goroutine 9 [select]:
github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck(0xc000)
	/root/go/pkg/mod/github.com/jackc/pgx/v5@v5.12.0/pgxpool/pool.go:500 +0x1d
created by github.com/jackc/pgx/v5/pgxpool.NewWithConfig in goroutine 1
	/root/go/pkg/mod/github.com/jackc/pgx/v5@v5.12.0/pgxpool/pool.go:300 +0x1d`},
		"TestCodeOnly": {leak: false, stack: `goroutine 10 [chan receive]:
github.com/fetchq/fetchq-proxy/proxy_test.TestX.func1()
	/work/main/proxy/server_test.go:30 +0x1d
created by github.com/fetchq/fetchq-proxy/proxy_test.TestX in goroutine 6
	/work/main/proxy/server_test.go:29 +0x1d`},
		"PgtestMain": {leak: false, stack: `goroutine 1 [running]:
github.com/fetchq/fetchq-proxy/internal/pgtest.allStacks()
	/work/main/internal/pgtest/leak.go:50 +0x1d
github.com/fetchq/fetchq-proxy/internal/pgtest.run(0xc000, {0x0})
	/work/main/internal/pgtest/pgtest.go:150 +0x1d
github.com/fetchq/fetchq-proxy/proxy_test.TestMain(0xc000)
	/work/main/proxy/main_test.go:9 +0x1d
main.main()
	_testmain.go:45 +0x1d`},
		"Unrelated": {leak: false, stack: `goroutine 11 [syscall]:
os/signal.signal_recv()
	/usr/local/go/src/runtime/sigqueue.go:152 +0x29
created by os/signal.Notify.func1.1 in goroutine 1
	/usr/local/go/src/os/signal/signal.go:151 +0x1f`},
		"ElidedFrames": {leak: true, stack: `goroutine 12 [select]:
github.com/fetchq/fetchq-proxy/rewrite.walk(0x1)
	/work/main/rewrite/walk.go:10 +0x1d
...additional frames elided...
created by github.com/fetchq/fetchq-proxy/rewrite_test.TestDeep in goroutine 6
	/work/main/rewrite/walk_test.go:5 +0x1d`},
	} {
		require.Equal(t, tc.leak, isLeak(tc.stack), name)
	}

	dump := strings.Join([]string{
		"goroutine 1 [running]:\ngithub.com/fetchq/fetchq-proxy/internal/pgtest.run()\n\t/x/pgtest.go:1 +0x1",
		"goroutine 2 [select]:\ngithub.com/fetchq/fetchq-proxy/proxy.serve()\n\t/x/proxy.go:1 +0x1",
	}, "\n\n") + "\n"
	leaked := leaks(dump)
	require.Len(t, leaked, 1)
	require.Contains(t, leaked[0], "goroutine 2 ")
}

func TestLeakedPoolIsFound(t *testing.T) {
	// Not parallel: parallel tests wait until this one ends, so the only
	// other pool is pgtest's own admin pool.
	healthChecks := func() int {
		n := 0
		for _, g := range leaks(allStacks()) {
			// Not the function name: a goroutine not yet scheduled shows only its creator.
			if strings.Contains(g, "created by github.com/jackc/pgx/v5/pgxpool.NewWithConfig") {
				n++
			}
		}
		return n
	}
	before := healthChecks()

	pool, err := pgxpool.New(context.Background(), "host=/nonexistent user=nobody")
	require.NoError(t, err) // it connects lazily
	t.Cleanup(pool.Close)
	require.Eventually(t, func() bool { return healthChecks() == before+1 }, 5*time.Second, 10*time.Millisecond,
		"an open pool's health-check goroutine is a leak")

	pool.Close()
	require.Eventually(t, func() bool { return healthChecks() == before }, 5*time.Second, 10*time.Millisecond,
		"closing the pool ends the leak")
}
