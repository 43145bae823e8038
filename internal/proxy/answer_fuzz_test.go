package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
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
		up, down := net.Pipe()
		go func() {
			_, _ = up.Write(b)
			_ = up.Close()
		}()
		defer down.Close()
		c := &upConn{Conn: down}
		c.br = bufio.NewReaderSize(c, upReadBufferSize)
		var resp fasthttp.Response
		done := make(chan error, 1)
		go func() { done <- c.readHeader(&resp, time.Now().Add(10*time.Second), nil) }()
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("readHeader still waits after the connection ended: %q", b)
		}
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
