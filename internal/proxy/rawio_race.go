//go:build linux && race

package proxy

import "syscall"

// Under the race detector, rawConn's reads and writes go through package
// syscall's: they tell the detector that what a goroutine did before a
// write happened before what a reader of the bytes does after its read
// (a raw system call cannot, and the detector would see races that are
// not there). The rest of rawConn is the same; make test-go runs the
// proxy's tests without -race too, on the raw calls.

func rawRead(fd uintptr, p []byte) (int, syscall.Errno) { return errno(syscall.Read(int(fd), p)) }

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) { return errno(syscall.Write(int(fd), p)) }

func errno(n int, err error) (int, syscall.Errno) {
	if err != nil {
		return 0, err.(syscall.Errno)
	}
	return n, 0
}
