//go:build !linux

package proxy

import "syscall"

// rawIO: elsewhere than Linux the proxy's sockets use Go's own reads and
// writes.
const rawIO = false

func rawRead(uintptr, []byte) (int, syscall.Errno)  { return 0, syscall.ENOSYS }
func rawWrite(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.ENOSYS }

// peerClosed: unknown elsewhere than Linux.
func peerClosed(uintptr) bool { return false }
