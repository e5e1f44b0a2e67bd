package proxy

import "syscall"

// syscallEMFILE is "too many open files", a temporary accept failure.
const syscallEMFILE = syscall.EMFILE
