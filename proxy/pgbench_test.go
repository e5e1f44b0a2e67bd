package proxy_test

import (
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

var (
	pgbenchFailed    = regexp.MustCompile(`number of failed transactions: (\d+)`)
	pgbenchProcessed = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
)

// TestPgbenchThroughProxy: pgbench -i -s 10, then TPC-B with 16 clients in
// each protocol mode, all through the proxy: no failed transaction.
func TestPgbenchThroughProxy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pgbench, err := exec.LookPath("pgbench")
	require.NoError(t, err, "pgbench is needed: install postgresql-contrib or postgresql-client")
	dsn := b.proxyDSN("", "")

	out, err := exec.Command(pgbench, "-i", "-s", "10", "-q", dsn).CombinedOutput()
	require.NoError(t, err, string(out))

	for _, mode := range []string{"simple", "extended", "prepared"} {
		t.Run(mode, func(t *testing.T) {
			out, err := exec.Command(pgbench, "-c", "16", "-j", "2", "-T", "10", "-M", mode, dsn).CombinedOutput()
			require.NoError(t, err, string(out))
			m := pgbenchFailed.FindStringSubmatch(string(out))
			require.NotNil(t, m, string(out))
			require.Equal(t, "0", m[1], string(out))
			p := pgbenchProcessed.FindStringSubmatch(string(out))
			require.NotNil(t, p, string(out))
			n, _ := strconv.Atoi(p[1])
			require.Greater(t, n, 100, string(out))
			t.Logf("%s: %s transactions", mode, p[1])
		})
	}
}
