package pgserver

import "syscall"

// setParentDeathSignal asks the kernel to send the server SIGINT (a fast
// shutdown) when its parent dies, so a test binary killed by -timeout or a
// crashed proxy does not leave an orphaned postmaster behind.
//
// Linux delivers the signal when the OS thread that started the child exits
// (https://go.dev/issue/27505). Go keeps its threads for the life of the
// process unless a goroutine exits while locked with runtime.LockOSThread, so
// do not start a server from such a goroutine.
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	attr.Pdeathsig = syscall.SIGINT
}
