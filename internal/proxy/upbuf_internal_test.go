package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// upPair returns an upstream connection over a real TCP socket, with the
// raw I/O the proxy gives its sockets, and the upstream's end.
func upPair(t *testing.T) (*upConn, net.Conn) {
	t.Helper()
	conn, peer := socketPair(t, "tcp")
	conn = withRawIO(conn)
	rw, _ := conn.(*rawConn)
	c := &upConn{Conn: conn, rw: rw, pool: &hostPool{}}
	c.br = newUpReader(c)
	return c, peer
}

// TestStreamWaitHoldsNoBuffer: while a stream waits for the upstream, the
// connection's read buffer is lent back (seen from the read that waits);
// what arrives, of any size, is read whole and in order through the same
// *bufio.Reader, which has its buffer again; an end of stream is reported
// by the next read.
func TestStreamWaitHoldsNoBuffer(t *testing.T) {
	c, peer := upPair(t)
	br := c.br
	var waits, lentWaits int
	c.onRead(func() error {
		waits++
		if c.lent && c.br.Size() == 0 {
			lentWaits++
		}
		return nil
	})
	sizes := []int{1, firstReadSize - 1, firstReadSize, firstReadSize + 1, upReadBufferSize - 1, upReadBufferSize, upReadBufferSize + 1, 5 * upReadBufferSize}
	for i, n := range sizes {
		want := strings.Repeat(string(rune('a'+i)), n)
		go func() {
			time.Sleep(20 * time.Millisecond) // the wait blocks first
			peer.Write([]byte(want))
		}()
		waits, lentWaits = 0, 0
		if err := c.awaitStream(nil); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if waits == 0 || lentWaits == 0 {
			t.Fatalf("%d bytes: the wait read with the buffer held (%d reads, %d with it lent)", n, waits, lentWaits)
		}
		if c.lent || c.br != br || c.br.Size() != upReadBufferSize {
			t.Fatalf("%d bytes: after the wait the reader has no buffer (lent %v, size %d)", n, c.lent, c.br.Size())
		}
		got := make([]byte, n)
		if _, err := io.ReadFull(c.br, got); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if string(got) != want {
			t.Fatalf("%d bytes: read %q..., want %q...", n, got[:min(n, 8)], want[:min(n, 8)])
		}
		if c.buffered() != 0 {
			t.Fatalf("%d bytes: %d left buffered", n, c.buffered())
		}
	}
	peer.Close()
	if err := c.awaitStream(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.br.Peek(1); err != io.EOF {
		t.Fatalf("after the upstream closed: %v, want EOF", err)
	}
}

// TestStreamWaitAsksWhetherClientGone: a stream whose upstream sends
// nothing asks every watchTick whether the client went away, and ends
// when it did, its buffer taken back.
func TestStreamWaitAsksWhetherClientGone(t *testing.T) {
	c, _ := upPair(t)
	asked := 0
	err := c.awaitStream(func() bool { asked++; return asked == 2 })
	if !errors.Is(err, errClientGone) || asked != 2 {
		t.Fatalf("got %v after %d questions, want errClientGone after 2", err, asked)
	}
	if c.lent || c.br.Size() != upReadBufferSize {
		t.Fatal("the buffer was not taken back")
	}
}

// TestLendAllocatesNothing: lending a buffer and taking one back moves
// bufio.Reader values between the connection and the pool; once a spare
// exists, a cycle allocates nothing. A reader enlarged for a large header
// is kept, not lent.
func TestLendAllocatesNothing(t *testing.T) {
	c, _ := upPair(t)
	c.lendReader()
	c.takeReader()
	if n := testing.AllocsPerRun(100, func() { c.lendReader(); c.takeReader() }); n != 0 {
		t.Errorf("a lend and take allocate %v times, want 0", n)
	}
	c.br = bufio.NewReaderSize(c.br, upMaxHeaderSize) // as readHeader does for a large header
	c.lendReader()
	if c.lent {
		t.Error("an enlarged reader was lent")
	}
}
