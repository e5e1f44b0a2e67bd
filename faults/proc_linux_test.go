package faults

import "syscall"

// childAttr makes a child process die with the test binary, so a crashed
// test run leaves no proxy behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
