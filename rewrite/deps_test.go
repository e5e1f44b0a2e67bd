package rewrite

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDependencies keeps rewrite a leaf: it must not depend on the
// backend or proxy packages (STYLE.md, "Layout and dependency direction").
func TestDependencies(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	require.NoError(t, err, string(out))
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/fetchq/fetchq-proxy/backend",
			"github.com/fetchq/fetchq-proxy/proxy",
		} {
			require.False(t, pkg == banned || strings.HasPrefix(pkg, banned+"/"), "rewrite depends on %s", pkg)
		}
	}
	require.Contains(t, strings.Fields(string(out)), "github.com/pganalyze/pg_query_go/v5")
}
