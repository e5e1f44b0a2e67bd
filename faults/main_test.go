package faults

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/internal/pgtest"
)

// full selects the full sizes: go test ./faults -full.
var full = flag.Bool("full", false, "run the fault tests at full size (100,000 and 200,000 documents, more kills and restarts)")

// EnvProxyBin names an environment variable holding the path of a
// fetchq-proxy binary to test instead of building ./cmd/fetchq-proxy.
const EnvProxyBin = "FETCHQ_FAULTS_PROXY_BIN"

// proxyBin is the fetchq-proxy binary built by TestMain.
var proxyBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "fetchq-faults-bin")
	if err != nil {
		fmt.Fprintf(os.Stderr, "faults: %v\n", err)
		os.Exit(1)
	}
	proxyBin = filepath.Join(dir, "fetchq-proxy")
	if bin := os.Getenv(EnvProxyBin); bin != "" {
		proxyBin = bin
	} else if err := build(proxyBin); err != nil {
		fmt.Fprintf(os.Stderr, "faults: building the fetchq-proxy binary: %v\n", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := pgtest.Run(m, pgtest.Options{
		// Three proxies, 32 workers and their reconnects, with room to spare.
		Settings: map[string]string{"max_connections": "400"},
	})
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles ./cmd/fetchq-proxy into out.
func build(out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/fetchq/fetchq-proxy/cmd/fetchq-proxy")
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w\n%s", err, b)
	}
	return nil
}

// size picks the short or the full value of a parameter.
func size[T any](short, fullSize T) T {
	if *full {
		return fullSize
	}
	return short
}

// proxySources lists the Go files the fetchq-proxy binary is built from.
func proxySources() ([]string, error) {
	var all []string
	for _, dir := range []string{"cmd/fetchq-proxy", "proxy", "backend", "rewrite", "internal/pgserver"} {
		files, err := filepath.Glob(filepath.Join("..", dir, "*.go"))
		if err != nil {
			return nil, err
		}
		all = append(all, files...)
	}
	return all, nil
}

// TestProxySources reads every Go file the tested binary is built from.
// This package does not import what it builds, so `go test` would not see
// a change to it and could replay a cached result; it records the files a
// test opens (while tests run, not in TestMain) and runs the package again
// when one changes.
func TestProxySources(t *testing.T) {
	files, err := proxySources()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("found only %d source files of the proxy", len(files))
	}
	for _, f := range files {
		if _, err := os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
}
