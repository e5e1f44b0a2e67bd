package pgtest

import (
	"runtime"
	"strings"
	"time"
)

const (
	// modulePrefix marks frames of this project's code.
	modulePrefix = "github.com/fetchq/fetchq-proxy/"

	// selfPrefix marks pgtest's own frames: the goroutine running Main.
	selfPrefix = modulePrefix + "internal/pgtest."
)

// leakPrefixes mark frames whose goroutines must not outlive the tests:
// this project's non-test code, and pgx and its pool, whose goroutines mean
// a connection or pool was never closed.
var leakPrefixes = []string{
	modulePrefix,
	"github.com/jackc/pgx/",
	"github.com/jackc/puddle/",
}

// leakedGoroutines polls for up to wait until no goroutine leaks and returns
// the stacks of those that still do, or "" if none. Goroutines get the time
// to finish what Close and Cancel started.
func leakedGoroutines(wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for {
		leaked := leaks(allStacks())
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func allStacks() string {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// leaks returns the goroutines in a runtime.Stack(all) dump that leak: those
// with a frame (or creator) in leakPrefixes outside a _test.go file, except
// the goroutine running pgtest itself.
func leaks(dump string) []string {
	var leaked []string
	for _, g := range strings.Split(strings.TrimSpace(dump), "\n\n") {
		if isLeak(g) {
			leaked = append(leaked, g)
		}
	}
	return leaked
}

// isLeak reports whether one goroutine's stack is a leak. A stack is a
// header line, then a function line (or "created by ...") followed by a
// tab-indented file:line for each frame.
func isLeak(stack string) bool {
	lines := strings.Split(stack, "\n")
	leak := false
	for i := 1; i < len(lines); i++ {
		fn := lines[i]
		if strings.HasPrefix(fn, "\t") {
			continue
		}
		fn = strings.TrimPrefix(fn, "created by ")
		var file string
		if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t") {
			file = lines[i+1]
		}
		if strings.HasPrefix(fn, selfPrefix) {
			return false
		}
		if strings.Contains(file, "_test.go:") {
			continue
		}
		for _, p := range leakPrefixes {
			if strings.HasPrefix(fn, p) {
				leak = true
			}
		}
	}
	return leak
}
