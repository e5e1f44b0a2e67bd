//go:build !linux

package pgserver

import "syscall"

// setParentDeathSignal is a no-op where the kernel has no parent-death
// signal; an orphaned server is then stopped by the next Start on the same
// data directory.
func setParentDeathSignal(*syscall.SysProcAttr) {}
