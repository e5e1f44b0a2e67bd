package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// psql runs psql with args against dsn and returns its combined output.
func psql(t *testing.T, dsn string, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath("psql")
	require.NoError(t, err, "psql is needed: install postgresql-client")
	cmd := exec.Command(path, append([]string{"-X", "-v", "ON_ERROR_STOP=1", "-d", dsn}, args...)...)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=30")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustPsql(t *testing.T, dsn string, args ...string) string {
	t.Helper()
	out, err := psql(t, dsn, args...)
	require.NoError(t, err, out)
	return out
}

// TestPsqlDescribe: psql's \d catalog queries give the same output.
func TestPsqlDescribe(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mustPsql(t, b.directDSN("", ""), "-c", `CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, doc jsonb, at timestamptz DEFAULT now());
		CREATE INDEX items_name ON items (name); CREATE VIEW v AS SELECT id FROM items`)
	// \l names only this test's database: the other tests create and drop
	// theirs meanwhile.
	for _, cmd := range []string{`\d`, `\d items`, `\dt+`, `\l ` + b.db.Name, `\df`} {
		direct := mustPsql(t, b.directDSN("", ""), "-c", cmd)
		proxied := mustPsql(t, b.proxyDSN("", ""), "-c", cmd)
		require.Equal(t, direct, proxied, cmd)
	}
	require.Contains(t, mustPsql(t, b.proxyDSN("", ""), "-c", `\d items`), `"items_pkey" PRIMARY KEY, btree (id)`)
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

// TestPsqlCopyMillionRows: \copy of 1M rows in and out through the proxy
// produces files identical to those of direct Postgres.
func TestPsqlCopyMillionRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.csv")
	const gen = `SELECT g, md5(g::text), (timestamptz '2020-01-01 UTC' + g * interval '1 second')::text, CASE WHEN g % 7 = 0 THEN NULL ELSE g * 1.5 END FROM generate_series(1, 1000000) g`
	mustPsql(t, b.directDSN("", ""), "-c", `\copy (`+gen+`) to '`+src+`' csv`)
	mustPsql(t, b.directDSN("", ""), "-c", "CREATE TABLE c_direct (a int, b text, c text, d numeric); CREATE TABLE c_proxy (LIKE c_direct)")

	out := mustPsql(t, b.directDSN("", ""), "-c", `\copy c_direct from '`+src+`' csv`)
	require.Contains(t, out, "COPY 1000000")
	out = mustPsql(t, b.proxyDSN("", ""), "-c", `\copy c_proxy from '`+src+`' csv`)
	require.Contains(t, out, "COPY 1000000")

	outDirect := filepath.Join(dir, "direct.csv")
	outProxy := filepath.Join(dir, "proxy.csv")
	mustPsql(t, b.directDSN("", ""), "-c", `\copy (SELECT * FROM c_direct ORDER BY a) to '`+outDirect+`' csv`)
	mustPsql(t, b.proxyDSN("", ""), "-c", `\copy (SELECT * FROM c_proxy ORDER BY a) to '`+outProxy+`' csv`)
	require.Equal(t, fileSHA(t, src), fileSHA(t, outDirect))
	require.Equal(t, fileSHA(t, outDirect), fileSHA(t, outProxy))

	// A bad row in the middle fails the COPY with Postgres' error and
	// leaves the session usable.
	bad := filepath.Join(dir, "bad.csv")
	require.NoError(t, os.WriteFile(bad, []byte("1,a,b,1\nnot-a-number,a,b,1\n"), 0o644))
	out, err := psql(t, b.proxyDSN("", ""), "-c", `\copy c_proxy from '`+bad+`' csv`)
	require.Error(t, err)
	require.Contains(t, out, `invalid input syntax for type integer: "not-a-number"`)
	require.Contains(t, mustPsql(t, b.proxyDSN("", ""), "-At", "-c", "SELECT count(*) FROM c_proxy"), "1000000")
}

// TestPsqlCancelOnInterrupt: SIGINT to psql sends a CancelRequest through
// the proxy; the statement ends with 57014 after about 2 s, not 10.
func TestPsqlCancelOnInterrupt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	psqlPath, err := exec.LookPath("psql")
	require.NoError(t, err)
	start := time.Now()
	cmd := exec.Command("timeout", "-s", "INT", "2", psqlPath, "-X", "-v", "VERBOSITY=verbose", "-d", b.proxyDSN("", ""), "-c", "select pg_sleep(10)")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	elapsed := time.Since(start)
	require.Error(t, err)
	require.Contains(t, out.String(), "57014")
	require.Contains(t, out.String(), "canceling statement due to user request")
	require.Less(t, elapsed, 5*time.Second, "cancel took %s", elapsed)
	require.Greater(t, elapsed, 1500*time.Millisecond)
	require.False(t, strings.Contains(out.String(), "server closed the connection"), out.String())
}
