package pgserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// EnvBinDir names the environment variable that points at the directory
// holding the PostgreSQL server binaries (initdb, postgres, pg_ctl). When it is
// set, [FindBinDir] uses it and nothing else.
const EnvBinDir = "FETCHQ_PG_BINDIR"

// ErrNoBinaries reports that no PostgreSQL server binaries were found. Errors
// returned by [FindBinDir] and [Start] wrap it, so callers can test for it
// with [errors.Is]; the wrapping error's message says what to install.
var ErrNoBinaries = errors.New("PostgreSQL server binaries not found")

// installHint completes the one-line error a user sees when nothing is found.
const installHint = "install them (Debian/Ubuntu: apt-get install -y postgresql) or set " + EnvBinDir

// FindBinDir returns the directory holding the PostgreSQL server binaries
// initdb and postgres. It looks, in order, at:
//
//  1. the directory named by $FETCHQ_PG_BINDIR;
//  2. the directory of an initdb found on $PATH (after resolving symbolic
//     links, so /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb
//     yields the real installation directory), if postgres is beside it;
//  3. the output of `pg_config --bindir`, if initdb and postgres are there
//     (Debian's pg_config can belong to the client package alone);
//  4. the highest-numbered /usr/lib/postgresql/N/bin holding both.
//
// An explicit $FETCHQ_PG_BINDIR is trusted: if it lacks the binaries,
// FindBinDir returns an error instead of silently falling back to another
// installation. When nothing is found the error wraps [ErrNoBinaries] and its
// message is one line saying what to install.
func FindBinDir() (string, error) {
	return findBinDir("/usr/lib/postgresql")
}

// findBinDir is FindBinDir with the root of the versioned layout as a
// parameter, for tests.
func findBinDir(versionsRoot string) (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		if hasServerBinaries(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("%w in %s=%s: point it at the directory holding initdb and postgres, "+
			"or unset it and install them (Debian/Ubuntu: apt-get install -y postgresql)",
			ErrNoBinaries, EnvBinDir, dir)
	}

	if p, err := exec.LookPath("initdb"); err == nil {
		var candidates []string
		if real, err := filepath.EvalSymlinks(p); err == nil {
			candidates = append(candidates, filepath.Dir(real))
		}
		candidates = append(candidates, filepath.Dir(p))
		for _, dir := range candidates {
			if hasServerBinaries(dir) {
				return dir, nil
			}
		}
	}

	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" && hasServerBinaries(dir) {
			return dir, nil
		}
	}

	if dir := highestVersionDir(versionsRoot); dir != "" {
		return dir, nil
	}

	return "", fmt.Errorf("%w: %s", ErrNoBinaries, installHint)
}

// highestVersionDir returns root/N/bin for the highest version N whose bin
// directory holds the server binaries, or "" if there is none. Versions are
// compared numerically component by component, so 10 sorts above 9.6.
func highestVersionDir(root string) string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return ""
	}
	type versioned struct {
		parts []int
		dir   string
	}
	var found []versioned
	for _, e := range entries {
		parts, ok := parseVersion(e.Name())
		if !ok {
			continue
		}
		dir := filepath.Join(root, e.Name(), "bin")
		if hasServerBinaries(dir) {
			found = append(found, versioned{parts: parts, dir: dir})
		}
	}
	if len(found) == 0 {
		return ""
	}
	best := slices.MaxFunc(found, func(a, b versioned) int { return slices.Compare(a.parts, b.parts) })
	return best.dir
}

// parseVersion parses "15" or "9.6" into its numeric components.
func parseVersion(s string) ([]int, bool) {
	var parts []int
	for f := range strings.SplitSeq(s, ".") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, false
		}
		parts = append(parts, n)
	}
	return parts, len(parts) > 0
}

// hasServerBinaries reports whether dir holds executable initdb and postgres.
func hasServerBinaries(dir string) bool {
	return isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres"))
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
