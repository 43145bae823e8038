package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
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
//
// A write can also be held until the next read (holdWrites): the read
// then writes it from the poller's read callback, after the poller's
// readiness was reset, and waits for the answer without first trying a
// read that cannot succeed yet. Go's Read always tries one (it returns
// EAGAIN, then waits): for a request and its answer, a system call in
// three. Only a connection whose peer sends nothing before it has the
// request may hold writes (an upstream): bytes that arrived before the
// write would not wake the wait (the watchTick deadline does, at most a
// second later).
type rawConn struct {
	net.Conn
	rc syscall.RawConn

	holding bool   // Write appends to held
	held    []byte // written, not yet sent
	heldErr error  // the failure of the last held write sent

	// The state of the Read and of the Write under way, and their poller
	// callbacks (onReadable, onWritable as func values, made once).
	r, w            rawOp
	readFn, writeFn func(fd uintptr) bool
	// nonblock: Read returns errWouldBlock instead of waiting for the
	// socket to be readable (upConn.poll).
	nonblock bool

	// beforeRead, when set, runs before each Read (upConn.onRead).
	beforeRead func() error
	// whileFull, when set, runs every watchTick while a Write waits for
	// room in the socket, told how long the Write has made no progress;
	// an error it returns ends the Write (upConn.whileFull).
	whileFull func(stalled time.Duration) error
	// wdl is the write deadline set (Unix nanoseconds, 0: none), which a
	// watched write keeps; set from any goroutine (a TLS handshake's
	// cancellation sets one).
	wdl atomic.Int64
}

// SetWriteDeadline sets the write deadline.
func (c *rawConn) SetWriteDeadline(t time.Time) error {
	c.wdl.Store(unixNano(t))
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline sets the read and write deadlines.
func (c *rawConn) SetDeadline(t time.Time) error {
	c.wdl.Store(unixNano(t))
	return c.Conn.SetDeadline(t)
}

// writeDeadline returns the write deadline set.
func (c *rawConn) writeDeadline() time.Time {
	if n := c.wdl.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// maxHeld bounds the bytes a connection holds: a larger write goes out at
// once.
const maxHeld = 64 << 10

// maxKeptHeld: a connection keeps a hold buffer this large for its next
// request (a Messages request is a few KiB); larger ones are dropped.
const maxKeptHeld = 8 << 10

// holdWrites holds the next writes until the next Read.
func (c *rawConn) holdWrites() { c.holding, c.heldErr = true, nil }

// heldWriteFailed reports whether the last held write failed: the request
// did not reach the upstream. False for a nil c (no raw I/O).
func (c *rawConn) heldWriteFailed() bool { return c != nil && c.heldErr != nil }

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
	rw := &rawConn{Conn: c, rc: rc}
	rw.readFn, rw.writeFn = rw.onReadable, rw.onWritable
	return rw
}

// Read reads from the socket, waiting in the poller while it is empty;
// it first sends what was held.
func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.beforeRead != nil {
		if err := c.beforeRead(); err != nil {
			return 0, err
		}
	}
	c.holding = false
	sending := len(c.held) > 0
	c.r = rawOp{p: p}
	err := c.rc.Read(c.readFn)
	n, errno := c.r.n, c.r.errno
	c.r = rawOp{}
	if err == nil && sending && (len(c.held) > 0 || c.heldErr != nil) {
		// The socket was full (the rest waits for room as any write
		// does), or the write failed.
		if c.heldErr == nil {
			c.heldErr = c.flushHeld()
		}
		if c.heldErr != nil {
			c.emptyHeld()
			return 0, c.heldErr
		}
		return c.Read(p)
	}
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno == syscall.EAGAIN:
		return 0, errWouldBlock
	case errno != 0:
		return 0, c.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// errWouldBlock: a non-blocking Read found nothing to read. A temporary
// net.Error, so that crypto/tls keeps what it read of a record and reads
// on later, as after a deadline.
var errWouldBlock = &timeoutError{"proxy: nothing to read yet"}

// rawOp is a Read's or a Write's state, which its poller callback
// (readFn, writeFn) works on: a callback made once per connection, where
// a closure over the call's variables was a heap allocation per call.
type rawOp struct {
	p     []byte
	n     int           // bytes read, or written so far
	errno syscall.Errno // the system call's error
	full  bool          // a write found the socket full
	watch bool          // a write deadline is set for whileFull
}

// onReadable is Read's poller callback: it sends what is held, or reads.
func (c *rawConn) onReadable(fd uintptr) bool {
	if len(c.held) > 0 {
		c.sendHeld(fd)
		if len(c.held) == 0 && c.heldErr == nil {
			c.emptyHeld()
			c.r.errno = syscall.EAGAIN // nothing read yet
			return c.nonblock          // sent: wait for the answer
		}
		return true // not sent whole: see Read
	}
	for {
		c.r.n, c.r.errno = rawRead(fd, c.r.p)
		if c.r.errno != syscall.EINTR {
			return c.r.errno != syscall.EAGAIN || c.nonblock
		}
	}
}

// onWritable is Write's poller callback.
func (c *rawConn) onWritable(fd uintptr) bool {
	n, e := writeSome(fd, c.w.p[c.w.n:])
	c.w.n += n
	if e == syscall.EAGAIN {
		c.w.full = true
		// Wait for room; first set a deadline when watched.
		return !c.w.watch && c.whileFull != nil
	}
	c.w.errno = e
	return true
}

// sendHeld writes the held bytes to fd, as far as the socket takes them.
func (c *rawConn) sendHeld(fd uintptr) {
	n, e := writeSome(fd, c.held)
	c.held = c.held[:copy(c.held, c.held[n:])]
	if e != 0 && e != syscall.EAGAIN {
		c.heldErr = c.opError("write", e)
	}
}

// flushHeld sends what is held with Write, which waits for room.
func (c *rawConn) flushHeld() error {
	rest := c.held
	c.emptyHeld()
	_, err := c.Write(rest)
	return err
}

// emptyHeld empties the hold buffer, keeping it for the next request
// unless it grew past maxKeptHeld.
func (c *rawConn) emptyHeld() {
	if cap(c.held) > maxKeptHeld {
		c.held = nil
	} else {
		c.held = c.held[:0]
	}
}

// dropHeld drops the (empty) hold buffer: a connection that waits long,
// for a stream's next event, keeps none.
func (c *rawConn) dropHeld() {
	if len(c.held) == 0 {
		c.held = nil
	}
}

// writeSome writes p to fd as far as the socket takes it: it returns the
// bytes written and 0 when all were, EAGAIN when the socket is full, or
// the error that stopped it.
func writeSome(fd uintptr, p []byte) (int, syscall.Errno) {
	done := 0
	for done < len(p) {
		n, e := rawWrite(fd, p[done:])
		switch e {
		case 0:
			done += n
		case syscall.EINTR:
		default:
			return done, e
		}
	}
	return done, 0
}

// Write writes p whole, waiting in the poller while the socket is full.
func (c *rawConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.holding {
		if len(c.held)+len(p) <= maxHeld {
			c.held = append(c.held, p...)
			return len(p), nil
		}
		c.holding = false // too large: out at once, after what was held
		if len(c.held) > 0 {
			if err := c.flushHeld(); err != nil {
				return 0, err
			}
		}
	}
	c.w = rawOp{p: p}
	defer func() { c.w = rawOp{} }()
	var progress time.Time
	var lastDone int
	for {
		c.w.full = false
		err := c.rc.Write(c.writeFn)
		done, errno, full, watching := c.w.n, c.w.errno, c.w.full, c.w.watch
		if full && c.whileFull != nil && (err == nil || watching && errors.Is(err, os.ErrDeadlineExceeded)) {
			now, wdl := time.Now(), c.writeDeadline()
			if !wdl.IsZero() && !now.Before(wdl) {
				err = os.ErrDeadlineExceeded // the deadline set, not a tick
			} else {
				if !watching || done > lastDone {
					progress, lastDone = now, done
				} else if werr := c.whileFull(now.Sub(progress)); werr != nil {
					_ = c.Conn.SetWriteDeadline(wdl)
					return done, werr
				}
				c.w.watch = true
				_ = c.Conn.SetWriteDeadline(nextDeadline(now, watchTick, wdl))
				continue
			}
		}
		if watching {
			_ = c.Conn.SetWriteDeadline(c.writeDeadline())
		}
		switch {
		case err != nil:
			return done, c.opError("write", err)
		case errno != 0:
			return done, c.opError("write", errno)
		}
		return done, nil
	}
}

// opError wraps err as net.Conn's methods do.
func (c *rawConn) opError(op string, err error) error {
	if errno, ok := err.(syscall.Errno); ok {
		err = syscallError(op, errno)
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// syscallError names the system call of errno, as the net package does.
func syscallError(op string, errno syscall.Errno) error { return os.NewSyscallError(op, errno) }

// CloseWrite shuts down the sending side, when the connection can.
func (c *rawConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SyscallConn returns the connection's raw access.
func (c *rawConn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }
