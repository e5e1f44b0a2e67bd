package backend

import (
	osexec "os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDependencyDirection enforces cmd -> proxy -> {rewrite, backend}:
// backend is a leaf and must not depend on rewrite or proxy, nor on the
// test-only pgtest.
func TestDependencyDirection(t *testing.T) {
	t.Parallel()
	out, err := osexec.Command("go", "list", "-deps", "github.com/fetchq/fetchq-proxy/backend").CombinedOutput()
	require.NoError(t, err, "go list: %s", out)
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/fetchq/fetchq-proxy/rewrite",
			"github.com/fetchq/fetchq-proxy/proxy",
			"github.com/fetchq/fetchq-proxy/internal/pgtest",
		} {
			require.False(t, dep == banned || strings.HasPrefix(dep, banned+"/"), "backend depends on %s", dep)
		}
	}
	require.Contains(t, strings.Fields(string(out)), "github.com/fetchq/fetchq-proxy/backend")
}
