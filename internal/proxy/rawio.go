package proxy

import (
	"io"
	"net"
	"syscall"
)

// Reads and writes of the proxy's sockets, client and upstream, without
// the scheduler's system call protocol. A read or write of a non-blocking
// socket never blocks: it copies what the socket buffer holds or has room
// for and returns (EAGAIN when there is nothing to do; the wait is the
// runtime poller's, as for any net.Conn). Go's own Read and Write enter
// and leave a system call state around it (entersyscall/exitsyscall), and
// a loopback write, which delivers the segment to its reader within the
// call, often outlasts the runtime's monitor tick: the monitor then hands
// the processor to another thread and keeps waking every 20 µs. Measured
// under load (perf, wrk -c64): the monitor alone took 8.7% of the
// sidecar's CPU, and the hand-offs more in thread switches.
//
// rawConn keeps the connection's deadlines, closing and poller: only the
// system call itself is made with RawSyscall, from the poller's own
// callback (syscall.RawConn).

// rawConn is a connection whose Read and Write use raw system calls.
type rawConn struct {
	net.Conn
	rc syscall.RawConn
}

// withRawIO returns c with raw reads and writes when it has a file
// descriptor (a TCP or unix connection), or c itself.
func withRawIO(c net.Conn) net.Conn {
	if !rawIO {
		return c
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &rawConn{Conn: c, rc: rc}
}

// Read reads from the socket, waiting in the poller while it is empty.
func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, errno = rawRead(fd, p)
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes p whole, waiting in the poller while the socket is full.
func (c *rawConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var done int
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			n, e := rawWrite(fd, p[done:])
			switch e {
			case 0:
				done += n
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return done, c.opError("write", err)
	case errno != 0:
		return done, c.opError("write", errno)
	}
	return done, nil
}

// opError wraps err as net.Conn's methods do.
func (c *rawConn) opError(op string, err error) error {
	if errno, ok := err.(syscall.Errno); ok {
		err = syscallError(op, errno)
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// CloseWrite shuts down the sending side, when the connection can.
func (c *rawConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SyscallConn returns the connection's raw access.
func (c *rawConn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }
