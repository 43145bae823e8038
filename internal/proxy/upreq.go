package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// upRequest is a request as it goes to the upstream: its head (request
// line and header, as fillRequest writes them, ending in the blank line)
// and its body, kept whole (body) or streamed (stream: size bytes, or
// chunked when size is negative). The head is written once, in one pass
// over the header the key rule and the guards left, and goes out as it
// is: no second header structure is filled from it, then serialised.
type upRequest struct {
	head   []byte
	body   []byte
	stream io.Reader
	size   int64
}

var upRequests = sync.Pool{New: func() any { return new(upRequest) }}

func getUpRequest() *upRequest { return upRequests.Get().(*upRequest) }

// putUpRequest gives r back to the pool, keeping its head's buffer.
func putUpRequest(r *upRequest) {
	*r = upRequest{head: r.head[:0]}
	upRequests.Put(r)
}

// errInvalidHeader: a header that net/http's client would not send either
// (net/http's server in front refuses them already; this is the upstream
// side's own check).
var errInvalidHeader = errors.New("proxy: invalid header field")

// fillRequest writes into req the request to the upstream: method, the
// request-target, Host (the upstream's), the fields of h but Host and
// Content-Length, and the body's framing; and sets its body: kept whole
// (body, stream nil), or streamed (stream, size bytes; negative: chunked).
// It fails on a header name or value that is not valid HTTP, as net/http's
// client does. Content-Length is sent as fasthttp's client sends it: for a
// body, and for every method but GET and HEAD even when empty.
func (u *upstreamTarget) fillRequest(req *upRequest, method string, target []byte, h fields, body []byte, stream io.Reader, size int64) error {
	b := append(req.head[:0], method...)
	b = append(b, ' ')
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, u.pool.host...)
	b = append(b, "\r\n"...)
	for _, f := range h {
		k, vs := f.name, f.vals
		switch k {
		case "Host", "Content-Length":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return errInvalidHeader
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return errInvalidHeader
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	switch {
	case stream != nil && size < 0:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	case stream != nil:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, size, 10)
		b = append(b, "\r\n"...)
	case len(body) > 0 || method != http.MethodGet && method != http.MethodHead:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	}
	req.head = append(b, "\r\n"...)
	req.body, req.stream, req.size = body, stream, size
	return nil
}

// write writes r to w: its head, then its body (a stream of known size
// exactly that long, or chunked, each chunk sent as it is read).
func (r *upRequest) write(w *bufio.Writer) error {
	if _, err := w.Write(r.head); err != nil {
		return err
	}
	switch {
	case r.stream == nil:
		_, err := w.Write(r.body)
		return err
	case r.size >= 0:
		n, err := io.Copy(w, io.LimitReader(r.stream, r.size))
		if err == nil && n < r.size {
			err = fmt.Errorf("proxy: request body ended after %d of its %d bytes: %w", n, r.size, io.ErrUnexpectedEOF)
		}
		return err
	}
	return writeChunked(w, r.stream)
}

// chunkBufs lend the buffer a chunked body is read through.
var chunkBufs = sync.Pool{New: func() any { return new([4 << 10]byte) }}

// writeChunked writes what src reads as chunks, each sent as it is read
// (a streamed upload reaches the upstream as it comes), then the last
// chunk.
func writeChunked(w *bufio.Writer, src io.Reader) error {
	buf := chunkBufs.Get().(*[4 << 10]byte)
	defer chunkBufs.Put(buf)
	for {
		n, err := src.Read(buf[:])
		if n > 0 {
			if werr := writeChunk(w, buf[:n]); werr != nil {
				return werr
			}
			if werr := w.Flush(); werr != nil {
				return werr
			}
		}
		switch {
		case err == io.EOF:
			_, err = w.WriteString(lastChunk)
			return err
		case err != nil:
			return err
		}
	}
}

// writeChunk writes p as one chunk of a chunked body (RFC 9112 §7.1): the
// one framing of a chunk, for answers to clients and requests upstream.
func writeChunk(w *bufio.Writer, p []byte) error {
	n, shift := len(p), 4
	for n>>shift != 0 {
		shift += 4
	}
	for shift -= 4; shift >= 0; shift -= 4 { // the size in hex, with no scratch to escape
		_ = w.WriteByte("0123456789abcdef"[n>>shift&0xf])
	}
	_, _ = w.WriteString("\r\n")
	_, _ = w.Write(p)
	_, err := w.WriteString("\r\n")
	return err
}

// lastChunk ends a chunked body (no trailer).
const lastChunk = "0\r\n\r\n"
