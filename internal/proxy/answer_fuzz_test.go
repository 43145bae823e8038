package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/keywarden/keywarden/internal/proxy/usage"
)

// FuzzReadHeader feeds arbitrary bytes to the upstream answer's reader as
// an upstream's answer, followed by the end of the connection. It must
// return (an answer or an error, never a wait past the bytes), and what it
// takes must be forwardable: a final status, a header block ended by CRLF
// CRLF; a block headerEnd calls bare-LF is refused as malformed.
func FuzzReadHeader(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno",
		"HTTP/1.1 101 Switching Protocols\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok",
		"\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: a\r\n  folded\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.0 200 OK\r\n\r\nold",
		"HTTP/1.1 099 Odd\r\n\r\n",
		"SSH-2.0-OpenSSH\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := readAnswer(t, b)
		if errors.Is(err, errHeaderTimeout) {
			t.Fatalf("readHeader waited for the header timeout on %q", b)
		}
		if headerEnd(b) == blockBareLF && len(b) <= upReadBufferSize && !errors.Is(err, errBadAnswer) {
			t.Fatalf("a bare-LF header %q was not refused as malformed: %v", b, err)
		}
		if err != nil {
			return
		}
		if s := resp.StatusCode(); s < 200 || s > 999 {
			t.Fatalf("status %d taken from %q", s, b)
		}
		if !bytes.Contains(b, crlfcrlf) {
			t.Fatalf("a header without CRLF CRLF taken from %q", b)
		}
	})
}

// readAnswer reads b, followed by the end of the connection, as an
// upstream's answer (readHeader, its body left unread); t fails if the
// reader still waits 20 s after.
func readAnswer(t *testing.T, b []byte) (*fasthttp.Response, error) {
	up, down := net.Pipe()
	go func() {
		_, _ = up.Write(b)
		_ = up.Close()
	}()
	t.Cleanup(func() { down.Close() })
	c := &upConn{Conn: down}
	c.br = bufio.NewReaderSize(c, upReadBufferSize)
	resp := new(fasthttp.Response)
	done := make(chan error, 1)
	go func() { done <- c.readHeader(resp, time.Now().Add(10*time.Second), nil) }()
	select {
	case err := <-done:
		return resp, err
	case <-time.After(20 * time.Second):
		t.Fatalf("readHeader still waits after the connection ended: %q", b)
		return nil, nil
	}
}

// FuzzAnswerHeader feeds arbitrary bytes to the upstream answer's reader,
// as FuzzReadHeader, and writes each answer it takes to a client as the
// sidecar does (writeAnswerHeader). The client's header must parse with
// net/http's strict reader, with the upstream's status and the sidecar's
// framing (its Content-Length, or chunked), one Date, and none of the
// hop-by-hop headers nor those the upstream's Connection header lists.
func FuzzAnswerHeader(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nrequest-id: r\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: X-Drop, close\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nDate: x\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 401 Unauthorized\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nServer: s\r\nContent-Length: 2\r\n\r\nno",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nUpgrade: h2c\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Name: x\r\nX-A: a\r\n  folded\r\n\r\n",
		"HTTP/1.0 200 OK\r\nanthropic-ratelimit-requests-remaining: 7\r\n\r\nold",
	} {
		f.Add([]byte(s))
	}
	hop := append(slices.Clone(hopHeaders), "Proxy-Connection")
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := readAnswer(t, b)
		if err != nil {
			return
		}
		var out bytes.Buffer
		cc := &clientConn{req: new(fasthttp.RequestHeader), bw: bufio.NewWriter(&out)}
		length := int64(resp.Header.ContentLength())
		var limits usage.RateLimits
		writeAnswerHeader(cc, &resp.Header, length, &limits)
		if err := cc.bw.Flush(); err != nil || cc.werr != nil {
			t.Fatalf("write: %v, %v", err, cc.werr)
		}
		got, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out.Bytes())), &http.Request{Method: http.MethodPost})
		if err != nil {
			t.Fatalf("the client cannot read the answer's header %q (from %q): %v", out.Bytes(), b, err)
		}
		if got.StatusCode != resp.StatusCode() {
			t.Fatalf("status %d sent for %d", got.StatusCode, resp.StatusCode())
		}
		for _, n := range hop {
			if v := got.Header.Values(n); len(v) > 0 {
				t.Fatalf("hop-by-hop %s: %q sent (from %q)", n, v, b)
			}
		}
		listed := connectionListed(&resp.Header)
		eachListed(listed, func(name string) {
			if v := got.Header.Values(name); len(v) > 0 {
				t.Fatalf("%s, listed in Connection, sent: %q (from %q)", name, v, b)
			}
		})
		if n := len(got.Header.Values("Date")); n != 1 {
			t.Fatalf("%d Date headers sent", n)
		}
		noBody := got.StatusCode == http.StatusNoContent || got.StatusCode == http.StatusNotModified
		switch {
		case noBody:
		case length >= 0 && got.ContentLength != length:
			t.Fatalf("Content-Length %d sent for a body of %d (from %q)", got.ContentLength, length, b)
		case length < 0 && !slices.Equal(got.TransferEncoding, []string{"chunked"}):
			t.Fatalf("a body of unknown length sent as %q (from %q)", got.TransferEncoding, b)
		}
	})
}
