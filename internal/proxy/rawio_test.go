package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// rawPair returns a connection with raw reads and writes (the proxy's
// side) and its peer, over TCP or a unix socket.
func rawPair(t *testing.T, network string) (*rawConn, net.Conn) {
	t.Helper()
	c, p := socketPair(t, network)
	rc, ok := withRawIO(c).(*rawConn)
	if !ok {
		t.Fatalf("withRawIO(%T) made no rawConn", c)
	}
	return rc, p
}

// socketPair returns both ends of a connection over TCP or a unix
// socket, closed when the test ends.
func socketPair(t *testing.T, network string) (net.Conn, net.Conn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		peer <- c
	}()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p := <-peer
	t.Cleanup(func() { c.Close(); p.Close() })
	return c, p
}

// resetPair returns a rawConn whose peer reset the connection.
func resetPair(t *testing.T) *rawConn {
	rc, peer := rawPair(t, "tcp")
	_ = peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	time.Sleep(20 * time.Millisecond)
	return rc
}

func TestRawConnCarriesBytesBothWays(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			rc, peer := rawPair(t, network)
			// 16 MiB: far more than the socket buffers hold, so writes
			// are partial and wait for room in the poller.
			want := bytes.Repeat([]byte("0123456789abcdef"), 1<<20)
			got := make(chan []byte, 1)
			go func() {
				b, err := io.ReadAll(io.LimitReader(peer, int64(len(want))))
				if err != nil {
					t.Error(err)
				}
				got <- b
			}()
			n, err := rc.Write(want)
			if err != nil || n != len(want) {
				t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(want))
			}
			if b := <-got; !bytes.Equal(b, want) {
				t.Fatalf("the peer read %d bytes, not the %d written", len(b), len(want))
			}
			// And back: reads wait in the poller until bytes arrive.
			go func() {
				time.Sleep(20 * time.Millisecond)
				_, _ = peer.Write(want)
			}()
			b, err := io.ReadAll(io.LimitReader(rc, int64(len(want))))
			if err != nil || !bytes.Equal(b, want) {
				t.Fatalf("read back %d bytes, err %v; want %d", len(b), err, len(want))
			}
			if n, err := rc.Write(nil); n != 0 || err != nil {
				t.Fatalf("Write(nil) = %d, %v", n, err)
			}
			if n, err := rc.Read(nil); n != 0 || err != nil {
				t.Fatalf("Read(nil) = %d, %v", n, err)
			}
		})
	}
}

func TestRawConnDeadlines(t *testing.T) {
	rc, _ := rawPair(t, "tcp")
	_ = rc.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	_, err := rc.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v, want a timeout", err)
	}
	// A peer that reads nothing: the write fills the buffers, then times
	// out, watched (whileFull) or not: the watch keeps the deadline set.
	big := make([]byte, 64<<20)
	for _, watched := range []bool{false, true} {
		rc.whileFull = nil
		if watched {
			rc.whileFull = func(time.Duration) error { return nil }
		}
		_ = rc.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := rc.Write(big)
		if !errors.As(err, &ne) || !ne.Timeout() || n >= len(big) {
			t.Fatalf("write past its deadline (watched %v): %d, %v; want a timeout", watched, n, err)
		}
	}
	rc.whileFull = nil
	// A deadline in the past wakes a read under way (how a request is stopped).
	_ = rc.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := rc.Read(make([]byte, 10)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	_ = rc.SetReadDeadline(aLongTimeAgo)
	if err := <-done; !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read woken by a past deadline: %v", err)
	}
}

func TestRawConnEndings(t *testing.T) {
	t.Run("peer closes", func(t *testing.T) {
		rc, peer := rawPair(t, "tcp")
		_, _ = peer.Write([]byte("last"))
		peer.Close()
		b, err := io.ReadAll(rc)
		if err != nil || string(b) != "last" {
			t.Fatalf("ReadAll = %q, %v; want the last bytes and io.EOF", b, err)
		}
		if _, err := rc.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read after the end: %v, want io.EOF", err)
		}
	})
	t.Run("peer resets", func(t *testing.T) {
		rc := resetPair(t)
		_, err := rc.Read(make([]byte, 1))
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" || oe.Source == nil || oe.Addr == nil {
			t.Fatalf("read of a reset connection: %v, want a *net.OpError naming the read and addresses", err)
		}
		_, err = rc.Write([]byte("x"))
		for i := 0; err == nil && i < 10; i++ {
			_, err = rc.Write([]byte("x")) // the first may be buffered before the reset is seen
		}
		if !errors.As(err, &oe) || oe.Op != "write" {
			t.Fatalf("write to a reset connection: %v, want a *net.OpError", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		rc, _ := rawPair(t, "tcp")
		done := make(chan error, 1)
		go func() { _, err := rc.Read(make([]byte, 1)); done <- err }()
		time.Sleep(20 * time.Millisecond)
		rc.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read woken by Close: %v, want net.ErrClosed", err)
		}
		if _, err := rc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after Close: %v, want net.ErrClosed", err)
		}
	})
	t.Run("close write", func(t *testing.T) {
		rc, peer := rawPair(t, "unix")
		if err := rc.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if n, err := peer.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("the peer read %d, %v after CloseWrite; want io.EOF", n, err)
		}
		if _, err := rc.SyscallConn(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestWithRawIONeedsADescriptor(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if c := withRawIO(a); c != a {
		t.Fatalf("withRawIO(net.Pipe) = %T, want the pipe itself", c)
	}
}

func TestRawConnHeldWrites(t *testing.T) {
	t.Run("sent with the first read", func(t *testing.T) {
		rc, peer := rawPair(t, "tcp")
		rc.holdWrites()
		if n, err := rc.Write([]byte("GET / HTTP/1.1\r\n\r\n")); n != 18 || err != nil {
			t.Fatalf("held Write = %d, %v", n, err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, err := peer.Read(make([]byte, 64)); n != 0 {
			t.Fatalf("the peer read %d bytes (%v) before the first read: the write was not held", n, err)
		}
		go func() {
			_ = peer.SetReadDeadline(time.Time{})
			b := make([]byte, 18)
			if _, err := io.ReadFull(peer, b); err != nil || string(b) != "GET / HTTP/1.1\r\n\r\n" {
				t.Errorf("the peer read %q, %v", b, err)
			}
			_, _ = peer.Write([]byte("answer"))
		}()
		b := make([]byte, 6)
		if _, err := io.ReadFull(rc, b); err != nil || string(b) != "answer" {
			t.Fatalf("Read = %q, %v", b, err)
		}
		if rc.heldWriteFailed() {
			t.Fatal("heldWriteFailed after a held write went out")
		}
	})
	t.Run("more than the socket takes", func(t *testing.T) {
		rc, peer := rawPair(t, "tcp")
		_ = rc.Conn.(*net.TCPConn).SetWriteBuffer(4 << 10)
		_ = peer.(*net.TCPConn).SetReadBuffer(4 << 10)
		want := bytes.Repeat([]byte("x"), maxHeld)
		rc.holdWrites()
		_, _ = rc.Write(want)
		go func() {
			time.Sleep(20 * time.Millisecond) // the socket fills first
			b := make([]byte, len(want))
			if _, err := io.ReadFull(peer, b); err != nil || !bytes.Equal(b, want) {
				t.Errorf("the peer read %d bytes, %v", len(b), err)
			}
			_, _ = peer.Write([]byte("ok"))
		}()
		b := make([]byte, 2)
		if _, err := io.ReadFull(rc, b); err != nil || string(b) != "ok" {
			t.Fatalf("Read = %q, %v", b, err)
		}
	})
	t.Run("too large to hold", func(t *testing.T) {
		rc, peer := rawPair(t, "tcp")
		rc.holdWrites()
		_, _ = rc.Write([]byte("head "))
		big := bytes.Repeat([]byte("y"), maxHeld)
		got := make(chan []byte, 1)
		go func() {
			b := make([]byte, 5+len(big))
			_, _ = io.ReadFull(peer, b)
			got <- b
		}()
		if n, err := rc.Write(big); n != len(big) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		// Sent at once, after what was held, without a read.
		if b := <-got; string(b[:5]) != "head " || !bytes.Equal(b[5:], big) {
			t.Fatalf("the peer read %.20q…", b)
		}
	})
	t.Run("peer gone", func(t *testing.T) {
		rc := resetPair(t)
		rc.holdWrites()
		_, _ = rc.Write([]byte("request"))
		_, err := rc.Read(make([]byte, 10))
		if err == nil {
			t.Fatal("Read after a held write to a reset peer succeeded")
		}
		// The write may be taken before the reset is seen (then the read
		// fails): either way the request is known not to have an answer.
		var oe *net.OpError
		if !errors.As(err, &oe) {
			t.Fatalf("error %v, want a *net.OpError", err)
		}
	})
	t.Run("deadline already past", func(t *testing.T) {
		rc, peer := rawPair(t, "tcp")
		rc.holdWrites()
		_, _ = rc.Write([]byte("late"))
		_ = rc.SetReadDeadline(aLongTimeAgo)
		var ne net.Error
		if _, err := rc.Read(make([]byte, 4)); !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Read past its deadline: %v", err)
		}
		_ = rc.SetReadDeadline(time.Time{})
		go func() {
			b := make([]byte, 4)
			_, _ = io.ReadFull(peer, b)
			_, _ = peer.Write(b)
		}()
		b := make([]byte, 4)
		if _, err := io.ReadFull(rc, b); err != nil || string(b) != "late" {
			t.Fatalf("the held write was lost: %q, %v", b, err)
		}
	})
}

// TestRawConnAllocatesNothing: a Read or a Write allocates nothing (their
// poller callbacks are made once per connection; closures over a call's
// variables were two allocations a request and its answer).
func TestRawConnAllocatesNothing(t *testing.T) {
	c, peer := rawPair(t, "tcp")
	msg := []byte("0123456789")
	buf := make([]byte, 64)
	if n := testing.AllocsPerRun(200, func() {
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(buf); err != nil || n == 0 {
			t.Fatal(n, err)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	}); n > 0 {
		t.Fatalf("%v allocations a Read and a Write; want none", n)
	}
}
