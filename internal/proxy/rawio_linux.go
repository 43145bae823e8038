package proxy

import (
	"os"
	"syscall"
)

// rawIO: the proxy's sockets use rawConn.
const rawIO = true

// syscallError names the system call of errno, as the net package does.
func syscallError(op string, errno syscall.Errno) error { return os.NewSyscallError(op, errno) }
