// Command fetchq-proxy is a Postgres wire-protocol proxy that runs Fetchq
// queue calls in Go and forwards everything else to Postgres untouched.
//
// With --upstream it proxies to an existing Postgres. Without it, it starts
// a private Postgres from the binaries installed on the machine (the
// embedded default) and proxies to that.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil && !errors.Is(err, errUsage) {
		fmt.Fprintln(os.Stderr, "fetchq-proxy:", err)
	}
	if err != nil {
		os.Exit(1)
	}
}

// errUsage reports bad command-line arguments; flag has already printed
// the reason and the usage.
var errUsage = errors.New("usage")
