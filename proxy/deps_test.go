package proxy_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDependencyDirection enforces cmd -> proxy -> {rewrite, backend}:
// rewrite and backend never import each other nor proxy, and no non-test
// code imports internal/pgtest.
func TestDependencyDirection(t *testing.T) {
	t.Parallel()
	const mod = "github.com/fetchq/fetchq-proxy/"
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		require.NoError(t, err, string(out))
		return strings.Fields(string(out))
	}
	for pkg, forbidden := range map[string][]string{
		mod + "rewrite":           {mod + "backend", mod + "proxy", mod + "internal/pgtest"},
		mod + "backend":           {mod + "rewrite", mod + "proxy", mod + "internal/pgtest"},
		mod + "proxy":             {mod + "internal/pgtest", mod + "cmd/fetchq-proxy"},
		mod + "cmd/fetchq-proxy":  {mod + "internal/pgtest"},
		mod + "internal/pgserver": {mod + "proxy", mod + "rewrite", mod + "backend"},
	} {
		got := deps(pkg)
		for _, f := range forbidden {
			require.NotContains(t, got, f, "%s must not depend on %s", pkg, f)
		}
	}
}
