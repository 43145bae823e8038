package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// The client engine. Each client connection is served on one goroutine
// that reads requests in fasthttp's HTTP/1.1 wire format (its request
// header parser: strict about framing, duplicate Content-Length, and
// Transfer-Encoding other than chunked), admits or refuses them, sends
// them upstream (upstream.go) and writes the answers back with this file's
// response writer: the upstream's Content-Length is kept, other bodies are
// chunked, and every write of a stream is flushed at once. Nothing else
// runs per request: no goroutine, no context; a stream waiting on its
// upstream parks, and the small goroutine of its wait serves on (stream.go).
//
// A client that goes away while its request waits for the upstream's
// answer is seen without reading its connection: the wait wakes every
// watchTick and peeks at the client's socket (MSG_PEEK|MSG_DONTWAIT); an
// end of stream or a reset ends the upstream request. During an answer, a
// failed write to the client does the same.

const (
	// clientReadBufferSize bounds a request's header (as nginx's
	// large_client_header_buffers: 8 KiB); larger ones get a 431.
	clientReadBufferSize  = 8 << 10
	clientWriteBufferSize = 4 << 10
	// watchTick is how often a request waiting for the upstream's answer
	// checks that its client is still there. Measured with 1,000 held
	// streams pinging every second: 0.89 s of CPU per 10 s at 1 s, 1.09 s
	// at 250 ms (net/http's server, which watches every connection with a
	// reader goroutine: 0.59 s); a call abandoned costs at most a second.
	watchTick = time.Second
	// maxDiscard is the most of an unread request body (after a refusal)
	// read and dropped to keep the connection; past it, it is closed.
	maxDiscard = 256 << 10
)

var (
	clientReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, clientReadBufferSize) }}
	clientWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, clientWriteBufferSize) }}
)

// Connection states, for a graceful shutdown: an idle connection waits
// for the first byte of its next request and may be closed at once.
const (
	connActive int32 = iota
	connIdle
)

// clientConn is one client connection and the request it serves.
type clientConn struct {
	net.Conn
	raw syscall.RawConn // nil when the connection has no file descriptor
	// goneFn and sendFn are gone and sendPending as func values, made once.
	goneFn func() bool
	sendFn func() error
	srv    *Server
	h      handler
	br     *bufio.Reader
	bw     *bufio.Writer // nil while lent back (see w)
	addr   string        // the client's address, for per-address limits

	state atomic.Int32

	req  *fasthttp.RequestHeader // lent while a stream is parked (see lendRequest)
	hdr  fields                  // req's fields, for the key rule and the guards
	vals []string                // backing store of hdr's values
	body bodyReader
	out  *fasthttp.ResponseHeader // the answer's, until written (see header)
	open bool                     // the answer's header is being written (openHeader)

	// The answer under way.
	status    int
	wrote     bool  // the header is written
	chunked   bool  // the body is chunked
	noBody    bool  // the answer has no body (1xx, 204, 304)
	remaining int64 // bytes of a fixed-length body still to write, -1: not fixed
	werr      error // the first failed write
	close     bool  // close the connection after this answer
	expect    bool  // the client waits for "100 Continue" before its body
	linger    bool  // input may be left unread: close with lingerClose

	// parked is the answer's stream, once it parked (see stream), until
	// serveFrom starts its wait.
	parked *stream
	// closed, when not nil, is closed once the connection is (ServeConn
	// waits for it: a stream's wait serves on another goroutine).
	closed chan struct{}
}

// bodyReader is a request's body as read from the connection: it records
// whether it reached its end, so that the connection can be kept.
type bodyReader struct {
	br        *bufio.Reader
	remaining int64     // of a body of known length
	chunked   io.Reader // the decoder of a chunked body, or nil
	eof       bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	if b.chunked != nil {
		n, err := b.chunked.Read(p)
		if err == io.EOF {
			if terr := readTrailers(b.br); terr != nil {
				return n, terr
			}
			b.eof = true
		}
		return n, err
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.br.Read(p)
	b.remaining -= int64(n)
	if b.remaining == 0 {
		b.eof = true
		if err == nil {
			err = io.EOF
		}
	} else if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// continueIfAsked answers "100 Continue" to a client that waits for it
// before sending its body (Expect: 100-continue): the request was admitted
// and its body is about to be read. The Expect header is not forwarded.
func (cc *clientConn) continueIfAsked() {
	if cc.expect {
		cc.expect = false
		if !cc.body.eof {
			_, _ = cc.w().WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			_ = cc.w().Flush()
		}
	}
	cc.hdr.Del("Expect")
}

// readTrailers reads the trailer section of a chunked body up to its
// empty line; the trailers are dropped.
func readTrailers(br *bufio.Reader) error {
	for range 64 {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return errors.New("proxy: malformed chunked body trailer")
		}
		if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
			return nil
		}
	}
	return errors.New("proxy: too many chunked body trailers")
}

// serve serves the connection's requests until it closes, goes idle for
// too long, breaks the protocol, or the server shuts down; or until a
// stream parks (see stream): its wait serves on.
func (cc *clientConn) serve() { cc.serveFrom(nil) }

// serveFrom serves the connection's requests as serve does, first
// finishing s, a parked stream whose upstream sent more, when not nil.
func (cc *clientConn) serveFrom(s *stream) {
	defer func() {
		// As net/http's server: a panic ends the connection, not the
		// process. The stack is logged; the value is an error of this
		// package, never a key.
		if v := recover(); v != nil {
			cc.parked = nil
			cc.srv.p.log.Error("proxy: panic serving a request; the connection is closed",
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
		if s := cc.parked; s != nil {
			// Every frame that parked it has returned: its wait may
			// serve on.
			cc.parked = nil
			go s.wait()
			return
		}
		cc.release()
		cc.srv.untrack(cc)
		if cc.closed != nil {
			close(cc.closed)
		}
	}()
	if s != nil {
		if !s.copy() {
			s.park()
			return
		}
		s.finish()
		if !cc.end() {
			return
		}
	}
	o := &cc.srv.p.opts
	first := s == nil
	for {
		cc.state.Store(connIdle)
		wait := o.IdleTimeout
		if first {
			wait = o.ClientHeaderTimeout
		}
		first = false
		if cc.br == nil || cc.br.Buffered() == 0 {
			_ = cc.SetReadDeadline(time.Now().Add(wait))
			// After the deadline: a Shutdown that began before it set its
			// own (see Server.stop) is seen here.
			if cc.srv.closing.Load() {
				return
			}
			if cc.br == nil {
				// A new connection, or one after a stream: its read buffer
				// is taken once a request is there to read, so that
				// connections that wait hold none.
				if err := cc.awaitRequest(); err != nil {
					return
				}
				cc.br = clientReaders.Get().(*bufio.Reader)
				cc.br.Reset(cc.Conn)
			} else if _, err := cc.br.Peek(1); err != nil {
				return
			}
		}
		cc.state.Store(connActive)
		// The header within its timeout, unless it is all there (the
		// common case: a deadline costs as much as parsing it).
		if !headerIn(cc.br) {
			_ = cc.SetReadDeadline(time.Now().Add(o.ClientHeaderTimeout))
		}
		if cc.req == nil {
			cc.req = requestHeaderPool.Get().(*fasthttp.RequestHeader)
		}
		cc.req.Reset()
		if err := cc.req.Read(cc.br); err != nil {
			cc.badRequest(err)
			return
		}
		cc.begin()
		if !cc.body.buffered() {
			_ = cc.SetReadDeadline(time.Time{}) // nothing bounds a body (as net/http)
		}
		cc.h.serve(cc)
		if cc.parked != nil {
			return
		}
		if !cc.end() {
			return
		}
	}
}

// buffered reports whether the rest of the body, if any, is in the read
// buffer: reading it cannot wait.
func (b *bodyReader) buffered() bool {
	return b.eof || b.chunked == nil && b.remaining <= int64(b.br.Buffered())
}

// begin prepares the answer to the request just read.
func (cc *clientConn) begin() {
	cc.status, cc.wrote, cc.chunked, cc.noBody, cc.remaining, cc.werr = 0, false, false, false, -1, nil
	cc.close = cc.req.ConnectionClose() || cc.srv.closing.Load()
	cc.lendHeader() // left by an answer cut before its header was written
	cc.fillHeader()
	if v := cc.hdr.Values("Expect"); len(v) > 0 {
		cc.expect = strings.EqualFold(v[0], "100-continue")
	} else {
		cc.expect = false
	}
	cc.body = bodyReader{br: cc.br}
	switch n := cc.req.ContentLength(); {
	case n > 0:
		cc.body.remaining = int64(n)
	case n == -1:
		cc.body.chunked = newChunkedReader(cc.br)
	default:
		cc.body.eof = true
	}
}

// end finishes the answer and reports whether the connection serves
// another request.
func (cc *clientConn) end() bool {
	if !cc.wrote {
		cc.writeHeader(http.StatusOK, 0)
	}
	if cc.chunked && cc.werr == nil {
		_, _ = cc.w().WriteString(lastChunk)
	}
	if cc.remaining > 0 {
		cc.close = true // an answer cut short: the client must see the end
	}
	if err := cc.w().Flush(); err != nil || cc.werr != nil {
		return false
	}
	cc.lendWriter()
	if !cc.body.eof {
		// The body was not read (a refusal): read and drop a small one to
		// keep the connection, as net/http does.
		if cc.close || cc.expect || cc.body.chunked != nil || cc.req.ContentLength() > maxDiscard {
			cc.linger = !cc.expect // the client may still be sending it
			return false
		}
		_ = cc.SetReadDeadline(time.Now().Add(cc.srv.p.opts.ClientHeaderTimeout))
		if _, err := io.Copy(io.Discard, &cc.body); err != nil {
			return false
		}
	}
	return !cc.close
}

// abort ends the answer at once: the client sees a cut answer (no final
// chunk, or a short body) and the connection closes, as net/http's
// http.ErrAbortHandler does.
func (cc *clientConn) abort() {
	cc.close = true
	if cc.werr == nil {
		cc.werr = errAborted
	}
}

var errAborted = errors.New("proxy: answer aborted")

// newChunkedReader decodes a chunked request body, up to its last chunk
// (the trailers are bodyReader's).
var newChunkedReader = httputil.NewChunkedReader

// fillHeader puts the request's header fields into hdr, by canonical
// name, as net/http's server would: the guards and the key rule read and
// change them there. Names and values share one allocation, written once
// and never changed (the strings are views of it).
func (cc *clientConn) fillHeader() {
	n, size := 0, 0
	for k, v := range cc.req.All() {
		n++
		size += len(k) + len(v)
	}
	arena := make([]byte, 0, size)
	if cap(cc.vals) < n {
		cc.vals = make([]string, n)
	}
	vals, i := cc.vals[:n], 0
	cc.hdr = cc.hdr[:0]
	index := newFieldsIndex(n)
	for k, v := range cc.req.All() {
		start := len(arena)
		arena = append(append(arena, k...), v...)
		vals[i] = view(arena[start+len(k):])
		cc.hdr.add(view(arena[start:start+len(k)]), vals[i:i+1:i+1], index)
		i++
	}
}

// view returns b as a string without copying it: b must never change
// after (fillHeader's arena is written once).
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// badRequest answers a request that could not be read, unless the client
// went away or sent nothing in time.
func (cc *clientConn) badRequest(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isTimeout(err) {
		return
	}
	code := http.StatusBadRequest
	if errors.As(err, new(*fasthttp.ErrSmallBuffer)) || errors.Is(err, bufio.ErrBufferFull) {
		code = http.StatusRequestHeaderFieldsTooLarge
	}
	status := strconv.Itoa(code) + " " + http.StatusText(code)
	cc.srv.p.refused.Request(code)
	_ = cc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = cc.w().WriteString("HTTP/1.1 " + status + "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" + status)
	_ = cc.w().Flush()
	cc.linger = true
}

// A connection closed with input still unread (a body refused, or
// answered early by the upstream while the client was still sending it)
// keeps reading and dropping that input first: closing at once would
// reset the connection, and the reset can destroy the answer before the
// client read it. It reads while the client keeps sending, lingerTime at
// most between two reads and lingerMax in all (nginx's lingering_timeout
// and lingering_time, 5 s and 30 s), so that a client still uploading a
// large body gets to read the answer; net/http's server drops at most
// 256 KiB, after which a large upload loses the answer to the reset.
const (
	lingerTime = 500 * time.Millisecond
	lingerMax  = 5 * time.Second
)

// lingerClose closes the sending side, then reads and drops what the
// client still sends (see lingerTime), and closes.
func (cc *clientConn) lingerClose() {
	if cw, ok := cc.Conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		_, _ = io.Copy(io.Discard, &lingerReader{Conn: cc.Conn, end: time.Now().Add(lingerMax)})
	}
	_ = cc.Conn.Close()
}

// lingerReader reads a connection within lingerTime of each read and
// until end.
type lingerReader struct {
	net.Conn
	end time.Time
}

func (r *lingerReader) Read(p []byte) (int, error) {
	now := time.Now()
	if !now.Before(r.end) {
		return 0, io.EOF
	}
	_ = r.SetReadDeadline(nextDeadline(now, lingerTime, r.end))
	return r.Conn.Read(p)
}

// header returns the answer's header, to be filled before writeHeader;
// its Content-Length and Transfer-Encoding are writeHeader's.
func (cc *clientConn) header() *fasthttp.ResponseHeader {
	if cc.out == nil {
		cc.out = responseHeaders.Get().(*fasthttp.ResponseHeader)
		cc.out.SetNoDefaultContentType(true)
	}
	return cc.out
}

// requestHeaderPool lends the requests' headers: a parked stream, its
// request read whole and its answer's header written, keeps none.
var requestHeaderPool = sync.Pool{New: func() any { return new(fasthttp.RequestHeader) }}

// lendRequest gives the request's header back to the pool: once the
// connection closes, or once nothing reads it any more (stream.park).
func (cc *clientConn) lendRequest() { lend(&requestHeaderPool, &cc.req) }

// responseHeaders lend the answers' headers, held from the first header
// set until the header is written: a held stream keeps none.
var responseHeaders = sync.Pool{New: func() any { return new(fasthttp.ResponseHeader) }}

// lendHeader gives the answer's header back to the pool.
func (cc *clientConn) lendHeader() { lend(&responseHeaders, &cc.out) }

// lend resets *x and gives it back to pool, when it is not nil.
func lend[T any, P interface {
	*T
	Reset()
}](pool *sync.Pool, x *P) {
	if *x != nil {
		(*x).Reset()
		pool.Put(*x)
		*x = nil
	}
}

// writeHeader writes the answer's status line and header. The body is
// length bytes long, or of unknown length when length is negative: then
// it is chunked (or, to an HTTP/1.0 client, ended by closing).
func (cc *clientConn) writeHeader(status int, length int64) {
	cc.openHeader(status, length)
	cc.closeHeader()
}

// openHeader writes the answer's status line and header (see writeHeader)
// but the blank line that ends it: the lines headerLine writes follow,
// until closeHeader.
func (cc *clientConn) openHeader(status int, length int64) {
	if h := cc.frame(status, length); h != nil {
		b := h.Header()
		cc.writeRaw(b[:len(b)-len(crlf)])
		cc.lendHeader()
		cc.open = true
	}
}

// headerLine writes a header line, between openHeader and closeHeader.
func (cc *clientConn) headerLine(k, v []byte) {
	if cc.open {
		bw := cc.bw
		_, _ = bw.Write(k)
		_, _ = bw.WriteString(": ")
		_, _ = bw.Write(v)
		_, _ = bw.WriteString("\r\n")
	}
}

// closeHeader ends the header openHeader began.
func (cc *clientConn) closeHeader() {
	if cc.open {
		cc.open = false
		cc.writeRaw(crlf)
	}
}

var crlf = []byte("\r\n")

// writeRaw writes b to the client's write buffer, keeping a failure in
// cc.werr.
func (cc *clientConn) writeRaw(b []byte) {
	if _, err := cc.w().Write(b); err != nil && cc.werr == nil {
		cc.werr = err
	}
}

// frame sets the answer's status and framing (see writeHeader) in its
// header, and returns the header, to be written and lent (lendHeader);
// nil when the header was written already.
func (cc *clientConn) frame(status int, length int64) *fasthttp.ResponseHeader {
	if cc.wrote {
		return nil
	}
	cc.wrote, cc.status = true, status
	h := cc.header()
	h.SetStatusCode(status)
	cc.noBody = status < 200 || status == http.StatusNoContent || status == http.StatusNotModified
	switch {
	case cc.noBody:
		cc.remaining = -1
	case length >= 0:
		h.SetContentLength(int(length))
		cc.remaining = length
	case cc.req.IsHTTP11():
		h.SetContentLength(-1)
		cc.chunked = true
	default:
		h.SetContentLength(-2)
		cc.close = true
	}
	if cc.close {
		h.SetConnectionClose()
	}
	return h
}

// Write writes p to the answer's body.
func (cc *clientConn) Write(p []byte) (int, error) {
	if !cc.wrote {
		cc.writeHeader(http.StatusOK, -1)
	}
	if cc.werr != nil {
		return 0, cc.werr
	}
	if len(p) == 0 || cc.noBody {
		return len(p), nil
	}
	n := len(p)
	switch {
	case cc.chunked:
		cc.werr = writeChunk(cc.w(), p)
	case cc.remaining >= 0:
		if int64(n) > cc.remaining {
			n = int(cc.remaining)
			cc.werr = errors.New("proxy: answer longer than its Content-Length")
		}
		cc.remaining -= int64(n)
		if _, err := cc.w().Write(p[:n]); err != nil {
			cc.werr = err
		}
	default:
		_, cc.werr = cc.w().Write(p)
	}
	if cc.werr != nil {
		return 0, cc.werr
	}
	return n, nil
}

// Flush sends what was written so far.
func (cc *clientConn) Flush() error {
	if cc.werr != nil || cc.bw == nil {
		return cc.werr
	}
	cc.werr = cc.bw.Flush()
	return cc.werr
}

// sendPending sends what was written of the answer and lends the write
// buffer back until more is written: a stream runs it before it waits on
// the upstream, so that a held stream holds no write buffer.
func (cc *clientConn) sendPending() error {
	err := cc.Flush()
	if err == nil {
		cc.lendWriter()
	}
	return err
}

// w returns the connection's write buffer, taken from the pool when the
// connection has none: connections waiting for a request, or for the
// upstream during a stream, hold none.
func (cc *clientConn) w() *bufio.Writer {
	if cc.bw == nil {
		cc.bw = clientWriters.Get().(*bufio.Writer)
		cc.bw.Reset(cc.Conn)
	}
	return cc.bw
}

// lendWriter gives the (flushed) write buffer back to the pool.
func (cc *clientConn) lendWriter() {
	if cc.bw != nil {
		cc.bw.Reset(nil)
		clientWriters.Put(cc.bw)
		cc.bw = nil
	}
}

// gone reports whether the client closed or reset its connection, without
// reading from it: bytes it sent meanwhile (a pipelined request, the rest
// of a body) are left for the next read. Behind such bytes a peek does not
// see the end; TCP's state does (peerClosed).
func (cc *clientConn) gone() bool {
	cc.releaseReader() // the request waited a watchTick: it may wait long
	if cc.raw == nil {
		return false
	}
	st := sockClosed
	if err := cc.raw.Control(func(fd uintptr) {
		if st = peekSocket(fd); st == sockData && peerClosed(fd) {
			st = sockClosed
		}
	}); err != nil {
		return true
	}
	return st == sockClosed
}

// whileFull runs every watchTick while writing to the client has made no
// progress (rawConn.whileFull): a client that reads nothing of its answer
// for the idle timeout is cut off, which stops its upstream request (as
// nginx's send_timeout). It held the stream, its upstream request and its
// goroutine for as long as it stayed connected.
func (cc *clientConn) whileFull(stalled time.Duration) error {
	if stalled >= cc.srv.p.opts.IdleTimeout {
		return errClientStalled
	}
	return nil
}

// errClientStalled ends an answer its client stopped reading.
var errClientStalled = errors.New("proxy: the client read nothing of its answer for the idle timeout")

// awaitRequest waits, within the read deadline, until the client sent
// something (or closed the connection), without reading it.
func (cc *clientConn) awaitRequest() error {
	if cc.raw == nil {
		return nil // no descriptor to watch (an in-memory pipe): the read waits
	}
	st := sockClosed
	if err := cc.raw.Read(func(fd uintptr) bool {
		st = peekSocket(fd)
		return st != sockEmpty // empty: wait until readable
	}); err != nil {
		return err
	}
	if st == sockClosed {
		return io.EOF
	}
	return nil
}

// sockState is what a non-blocking peek at a socket finds.
type sockState uint8

const (
	sockEmpty  sockState = iota // open, nothing to read yet
	sockData                    // bytes are waiting
	sockClosed                  // the peer closed or reset it
)

// peekSocket looks at the socket fd without reading from it
// (MSG_PEEK|MSG_DONTWAIT): the one reading of a socket's state, for a
// client that may have gone (gone, awaitRequest) and for an idle upstream
// connection that may have been closed (upConn.alive).
func peekSocket(fd uintptr) sockState {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return sockEmpty
	case err != nil || n == 0:
		return sockClosed
	}
	return sockData
}

func (cc *clientConn) release() {
	if cc.linger {
		cc.lingerClose()
	} else {
		_ = cc.Conn.Close()
	}
	cc.releaseReader()
	cc.lendWriter()
	cc.lendHeader()
	cc.lendRequest()
}

// releaseReader lends the read buffer back while the connection has no
// use for it, once the request was read whole (serve takes one again once
// the next request is there): during a stream, while a new upstream
// connection is made for the request, and once the request waited a
// watchTick for its answer. A thousand held streams keep 8 MiB less; a
// short request on a kept connection keeps its buffer (taking it again
// costs a system call).
func (cc *clientConn) releaseReader() {
	if cc.br == nil || cc.br.Buffered() > 0 || !cc.body.eof {
		return
	}
	cc.br.Reset(nil)
	clientReaders.Put(cc.br)
	cc.br = nil
	cc.body.br = nil
}

// newClientConn wraps an accepted connection.
func newClientConn(s *Server, h handler, c net.Conn) *clientConn {
	c = withRawIO(c)
	cc := &clientConn{Conn: c, srv: s, h: h, addr: c.RemoteAddr().String()}
	cc.goneFn, cc.sendFn = cc.gone, cc.sendPending
	if rc, ok := c.(*rawConn); ok {
		rc.whileFull = cc.whileFull
	}
	if sc, ok := c.(syscall.Conn); ok {
		cc.raw, _ = sc.SyscallConn()
	}
	return cc
}
