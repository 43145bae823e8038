package proxy

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"time"
)

// An upstream connection holds its read buffer (upReadBufferSize) only
// while it reads: a stream waiting for the upstream's next event, and a
// connection idle in the pool, lend it back to upReaders. A thousand held
// streams kept 4 MiB of empty buffers, doubled by the collector's headroom.
//
// The connection's *bufio.Reader is never replaced while lent, as the
// answer's body stream reads through that pointer: its contents (the
// buffer, and the reader's state) move into a spare bufio.Reader that goes
// to the pool, and come back from whichever pooled reader is taken next.
// The spare left empty stays with the connection for its next lend, so a
// lend allocates nothing.
//
// A parked stream's wait reads nothing (stream.wait): poll reads
// into the buffer once the socket is readable. On a connection without
// raw I/O, a stream's wait (awaitStream) reads the first bytes of the next
// event into firstRead (allocated then, a tenth of the buffer's size),
// not into the buffer: upConn.Read hands them to the buffer, once it is
// back, before reading the network again. Under TLS, records the
// connection already decrypted are read without a system call, as
// through the buffer.

// firstReadSize bounds the bytes a stream's wait reads before it takes a
// buffer again: an SSE event of the Messages API (a content_block_delta,
// a ping) fits, with its chunk framing.
const firstReadSize = 512

var upReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, upReadBufferSize) }}

// newUpReader returns a pooled read buffer reading from c.
func newUpReader(c *upConn) *bufio.Reader {
	br := upReaders.Get().(*bufio.Reader)
	br.Reset(c)
	return br
}

// lendReader lends c's read buffer back to the pool, when it holds
// nothing and is of the usual size (a header too large for it made c
// read through a larger one for good: that one is kept).
func (c *upConn) lendReader() {
	if c.lent || c.br.Buffered() > 0 || c.br.Size() != upReadBufferSize {
		return
	}
	spare := c.spare
	if spare == nil {
		spare = new(bufio.Reader)
	}
	*spare = *c.br
	spare.Reset(nil)
	*c.br = bufio.Reader{}
	upReaders.Put(spare)
	c.spare, c.lent = nil, true
}

// takeReader gives c a read buffer again after lendReader.
func (c *upConn) takeReader() {
	if !c.lent {
		return
	}
	r := upReaders.Get().(*bufio.Reader)
	*c.br = *r
	c.br.Reset(c)
	*r = bufio.Reader{}
	c.spare, c.lent = r, false
}

// buffered returns the bytes c holds that the upstream sent and nothing
// read yet.
func (c *upConn) buffered() int { return c.br.Buffered() + c.firstN - c.firstOff }

// pending reports whether c holds bytes the upstream sent, or the error
// its next read reports: reading it does not wait.
func (c *upConn) pending() bool { return c.buffered() > 0 || c.firstErr != nil }

// awaitStream waits, with c's read buffer lent, until the upstream sent
// more of a stream (or a read fails: the next read reports it), waking
// every watchTick to ask gone whether the client went away. What it read
// waits in firstRead for the buffer's next fill.
func (c *upConn) awaitStream(gone func() bool) error {
	if c.firstRead == nil {
		c.firstRead = new([firstReadSize]byte)
	}
	c.lendReader()
	defer c.takeReader()
	now := time.Now()
	for {
		c.tick(now, time.Time{})
		n, err := c.read(c.firstRead[:])
		if n > 0 {
			c.firstOff, c.firstN = 0, n
			return nil
		}
		if err != nil && !isTimeout(err) {
			c.firstErr = err
			return nil
		}
		now = time.Now()
		if err != nil && gone != nil && gone() {
			return errClientGone
		}
	}
}

// poll reads into the read buffer, without waiting, what the upstream
// sent, until the buffer holds n bytes. Nil when it does, or when a read
// failed (kept in firstErr: the next read reports it, after what the
// buffer holds); errWouldBlock when fewer came (or a deadline a wait left
// passed: the next wait sets its own). When nothing came, the buffer is
// lent, as are the connection's hold buffer and firstRead: a wait for the
// socket to be readable reads nothing (a parked stream's, a long call's).
// Only for a connection with raw I/O (c.rw set).
func (c *upConn) poll(n int) error {
	c.takeReader()
	c.rw.nonblock = true
	_, err := c.br.Peek(n)
	c.rw.nonblock = false
	switch {
	case err == nil:
		return nil
	case !isTimeout(err):
		c.firstErr = err // the Peek took it from the buffer
		return nil
	case c.br.Buffered() == 0:
		c.lendReader()
		c.rw.dropHeld()
	}
	return errWouldBlock
}

// readable reports whether the connection's socket holds bytes to read, or
// the upstream closed it; a poller's callback (syscall.RawConn.Read) that
// waits until then. It looks before the first wait, after the poller's
// readiness was reset: bytes that came since the last read are seen.
func readable(fd uintptr) bool { return peekSocket(fd) != sockEmpty }

// isTimeout reports whether err is a timeout (a deadline, errWouldBlock).
func isTimeout(err error) bool {
	if err == errWouldBlock {
		return true
	}
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}

// tick sets a read deadline a watchTick after now (or at end, when that
// comes first), unless the one left from the connection's last wait is at
// least 7/8 of a tick away: setting one costs as much as a small
// request's parsing.
func (c *upConn) tick(now, end time.Time) {
	next := nextDeadline(now, watchTick, end)
	if c.deadline.IsZero() || c.deadline.Sub(now) < watchTick-watchTick/8 || c.deadline.After(next) {
		c.setReadDeadline(next)
	}
}

// Read reads from the connection: what a stream's wait read first, then
// the network, after beforeRead.
func (c *upConn) Read(p []byte) (int, error) {
	if c.firstN > c.firstOff {
		n := copy(p, c.firstRead[c.firstOff:c.firstN])
		if c.firstOff += n; c.firstOff == c.firstN {
			c.firstOff, c.firstN = 0, 0
		}
		return n, nil
	}
	if err := c.firstErr; err != nil {
		c.firstErr = nil
		return 0, err
	}
	return c.read(p)
}

// read reads from the network, after beforeRead.
func (c *upConn) read(p []byte) (int, error) {
	if c.beforeRead != nil {
		if err := c.beforeRead(); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}
