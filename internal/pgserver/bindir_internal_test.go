package pgserver

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeInstall creates root/<version>/bin with the named executables.
func fakeInstall(t *testing.T, root, version string, names ...string) string {
	t.Helper()
	dir := filepath.Join(root, version, "bin")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for _, n := range names {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755))
	}
	return dir
}

func TestFindBinDirFallbacks(t *testing.T) {
	// Not parallel: t.Setenv.
	t.Setenv(EnvBinDir, "")
	t.Setenv("PATH", t.TempDir()) // no initdb, no pg_config

	t.Run("NothingFound", func(t *testing.T) {
		_, err := findBinDir(t.TempDir())
		require.ErrorIs(t, err, ErrNoBinaries)
		require.Equal(t,
			"PostgreSQL server binaries not found: install them (Debian/Ubuntu: apt-get install -y postgresql) or set FETCHQ_PG_BINDIR",
			err.Error())
	})

	t.Run("HighestCompleteVersion", func(t *testing.T) {
		root := t.TempDir()
		fakeInstall(t, root, "9.6", "initdb", "postgres")
		want := fakeInstall(t, root, "15", "initdb", "postgres")
		fakeInstall(t, root, "16", "psql") // client only
		fakeInstall(t, root, "10", "initdb", "postgres")
		require.NoError(t, os.Mkdir(filepath.Join(root, "not-a-version"), 0o755))

		got, err := findBinDir(root)
		require.NoError(t, err)
		require.Equal(t, want, got)
	})

	t.Run("PathBeforeVersions", func(t *testing.T) {
		root := t.TempDir()
		fakeInstall(t, root, "15", "initdb", "postgres")
		real := fakeInstall(t, t.TempDir(), "x", "initdb", "postgres")
		link := t.TempDir()
		require.NoError(t, os.Symlink(filepath.Join(real, "initdb"), filepath.Join(link, "initdb")))
		t.Setenv("PATH", link)

		got, err := findBinDir(root)
		require.NoError(t, err)
		require.Equal(t, real, got, "symbolic links on PATH are resolved to the installation directory")
	})
}

func TestQuoteValue(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/tmp/fq1":      "/tmp/fq1",
		"":              "''",
		"/my dir":       "'/my dir'",
		`it's`:          `'it\'s'`,
		`back\slash`:    `'back\\slash'`,
		"postgres":      "postgres",
		"t_123_4":       "t_123_4",
		"with\ttab":     "'with\ttab'",
		"/home/a b/c'd": `'/home/a b/c\'d'`,
	} {
		require.Equal(t, want, quoteValue(in), "quoteValue(%q)", in)
	}
}
