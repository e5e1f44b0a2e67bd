//go:build !linux

package faults

import "syscall"

// childAttr: no parent-death signal outside Linux; t.Cleanup kills the
// children.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
