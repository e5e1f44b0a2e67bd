package proxy

import (
	"net"
	"syscall"
)

// syscallEMFILE is "too many open files", a temporary accept failure.
const syscallEMFILE = syscall.EMFILE

// hasPendingInput reports whether conn has bytes waiting to be read,
// without reading them or blocking. Connections it cannot inspect report
// false.
func hasPendingInput(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	pending := false
	_ = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		pending = err == nil && n > 0
		return true
	})
	return pending
}
