package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpproxy"

	"github.com/keywarden/keywarden/internal/proxy/usage"
	"github.com/keywarden/keywarden/providers"
)

// The upstream engine. Requests go to the upstream, and answers come back,
// in fasthttp's HTTP/1.1 wire format (fasthttp.Request's writer and
// fasthttp.Response's parser, with the body streamed), over keep-alive
// connections pooled per upstream host. The request runs on the calling
// goroutine from start to end: no reader or writer goroutine per
// connection, which is where net/http's Transport spends its time. The
// pool is kept here rather than in fasthttp.HostClient so that a client
// that goes away can stop its upstream request at once, while waiting for
// the headers of a long call as well as during a stream: fasthttp's client
// takes no context.
//
// HTTP/1.1 only: the Claude API serves HTTP/1.1, and HTTP/2 to the
// upstream would bring back the goroutines per connection.

// Sizes of a connection's buffers. The reader holds the response headers
// whole (the API's are about 2 KiB; larger ones grow it, see readHeader); the writer is lent from a pool only
// while a request is written, so a held stream costs the reader alone.
const (
	upReadBufferSize = 4 << 10
	// upMaxHeaderSize bounds an answer's header: a connection whose
	// answer's header does not fit upReadBufferSize reads through a buffer
	// this large from then on.
	upMaxHeaderSize   = 64 << 10
	upWriteBufferSize = 4 << 10
	// upCheckIdle: a connection idle this long is checked before it is
	// used again, as the upstream may have closed it meanwhile (a request
	// sent on it could not be sent again safely); busier ones never are.
	upCheckIdle = time.Second
	// upMaxIdleTime closes upstream connections idle this long, well
	// before any upstream closes them itself: a request is never sent on a
	// connection the upstream is closing (fasthttp's default too).
	upMaxIdleTime = 10 * time.Second
	dialTimeout   = 30 * time.Second
	tlsTimeout    = 10 * time.Second
)

// aLongTimeAgo is a deadline in the past: it wakes every read and write of
// a connection at once.
var aLongTimeAgo = time.Unix(1, 0)

// nextDeadline returns the deadline of a wait that wakes step after now,
// or at end when that comes first (none when zero).
func nextDeadline(now time.Time, step time.Duration, end time.Time) time.Time {
	if next := now.Add(step); end.IsZero() || next.Before(end) {
		return next
	}
	return end
}

var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, upWriteBufferSize) }}

// hostPool is the keep-alive connections to one upstream host.
type hostPool struct {
	addr     string // host:port of the upstream
	host     string // the Host header
	tls      *tls.Config
	proxy    *url.URL // the proxy of the environment, or nil
	maxIdle  int
	idleTime time.Duration
	waited   func(time.Duration) // counts a wait for a handshake slot

	mu     sync.Mutex
	idle   []*upConn // the most recently used last
	sweep  *time.Timer
	closed bool
}

// upConn is one upstream connection.
type upConn struct {
	net.Conn
	raw    syscall.RawConn // of the TCP connection under TLS
	rw     *rawConn        // the TCP connection under TLS, when it has raw I/O
	pool   *hostPool
	br     *bufio.Reader
	idleAt time.Time
	reused bool
	// beforeRead, when set, runs before each read of a connection
	// without raw I/O (see onRead).
	beforeRead func() error

	deadline time.Time // the read deadline set (zero: none)

	// The read buffer lent back while waiting (upbuf.go): whether it is,
	// the empty reader kept for the next lend, and what a stream's wait
	// read meanwhile (firstRead[firstOff:firstN]) or the error it met.
	lent             bool
	spare            *bufio.Reader
	firstRead        *[firstReadSize]byte // allocated by the first awaitStream
	firstOff, firstN int
	firstErr         error

	// While a request is written (see whileFull): whether its client went
	// away, and how long the upstream may read nothing of it.
	gone       func() bool
	stallLimit time.Duration
}

// newHostPool returns the pool of the upstream u: TLS with the system roots
// (SSL_CERT_FILE and SSL_CERT_DIR honoured) and a session cache for
// resumption; the proxy of HTTPS_PROXY, HTTP_PROXY and NO_PROXY, reached
// with CONNECT; at most maxIdle idle connections.
func newHostPool(u *url.URL, maxIdle int, idleTime time.Duration) (*hostPool, error) {
	isTLS := u.Scheme == "https"
	if !isTLS && u.Scheme != "http" {
		return nil, fmt.Errorf("proxy: upstream %s: the scheme must be http or https", u.Redacted())
	}
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if isTLS {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	pu, err := httpproxy.FromEnvironment().ProxyFunc()(&url.URL{Scheme: u.Scheme, Host: addr})
	if err != nil {
		return nil, fmt.Errorf("proxy: upstream %s: proxy environment: %w", u.Redacted(), err)
	}
	if pu != nil && pu.Scheme != "http" && pu.Scheme != "https" {
		return nil, fmt.Errorf("proxy: upstream %s: proxy %s: the scheme must be http or https", u.Redacted(), pu.Redacted())
	}
	p := &hostPool{addr: addr, host: u.Host, proxy: pu, maxIdle: maxIdle, idleTime: min(idleTime, upMaxIdleTime)}
	if isTLS {
		p.tls = &tls.Config{
			ServerName:         u.Hostname(),
			MinVersion:         tls.VersionTLS12,
			NextProtos:         []string{"http/1.1"},
			ClientSessionCache: tls.NewLRUClientSessionCache(maxIdle),
		}
	}
	return p, nil
}

// get returns an idle connection, or a new one, connected within
// timeout (when not zero: connecting is part of the wait for the answer's
// header).
func (p *hostPool) get(ctx context.Context, timeout time.Duration) (*upConn, error) {
	now := time.Now()
	p.mu.Lock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if idle := now.Sub(c.idleAt); idle < p.idleTime && c.buffered() == 0 && (idle < upCheckIdle || c.alive()) {
			p.mu.Unlock()
			c.reused = true
			return c, nil
		}
		_ = c.Conn.Close()
	}
	p.mu.Unlock()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if p.tls != nil {
		// One of handshakeSlots, waited for within ctx; a wait is counted.
		select {
		case handshakeSlots <- struct{}{}:
		default:
			start := time.Now()
			select {
			case handshakeSlots <- struct{}{}:
				p.waited(time.Since(start))
			case <-ctx.Done():
				p.waited(time.Since(start))
				return nil, fmt.Errorf("waiting for one of %d handshakes under way to end: %w", maxHandshakes, ctx.Err())
			}
		}
		defer func() { <-handshakeSlots }()
	}
	return p.connect(ctx)
}

// errConnect: connecting to the upstream failed (dialling, the proxy's
// tunnel, or the TLS handshake).
var errConnect = errors.New("proxy: connecting to")

// connect dials a new connection (through the environment's proxy when one
// applies) and, for https, completes the TLS handshake.
func (p *hostPool) connect(ctx context.Context) (*upConn, error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	var conn net.Conn
	var err error
	if p.proxy == nil {
		conn, err = d.DialContext(ctx, "tcp", p.addr)
	} else {
		conn, err = p.tunnel(ctx, &d)
	}
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", errConnect, p.addr, err)
	}
	conn = withRawIO(conn)
	rw, _ := conn.(*rawConn)
	var raw syscall.RawConn
	if sc, ok := conn.(syscall.Conn); ok {
		raw, _ = sc.SyscallConn()
	}
	if p.tls != nil {
		tc := tls.Client(conn, p.tls)
		err := handshake(ctx, tc)
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("%w %s: TLS handshake: %w", errConnect, p.addr, err)
		}
		conn = tc
	}
	c := &upConn{Conn: conn, raw: raw, rw: rw, pool: p}
	c.br = newUpReader(c)
	if rw != nil {
		rw.whileFull = c.whileFull
	}
	return c, nil
}

// whileFull runs every watchTick while writing a request has made no
// progress (rawConn.whileFull): the upstream stopped reading it. It ends
// the write when the upstream answered meanwhile (a 413 for a body too
// large, the connection left open: the answer is read then, earlyAnswer),
// when the client went away (seen once the client's end reached the
// sidecar: a client whose own unsent body waits behind the stall cannot
// be seen leaving), or when the upstream has read nothing for the header
// timeout (a 504, as nginx's proxy_send_timeout). An answer is seen as
// bytes on a socket that holds nothing else: a plain one, or a TLS one
// past its first answer (until then the server's session tickets may wait
// there unread).
func (c *upConn) whileFull(stalled time.Duration) error {
	if (c.pool.tls == nil || c.reused) && c.peek() == sockData {
		return errEarlyAnswer
	}
	if c.gone != nil && c.gone() {
		return errClientGone
	}
	if c.stallLimit > 0 && stalled >= c.stallLimit {
		return errHeaderTimeout
	}
	return nil
}

// errEarlyAnswer ends writing a request the upstream answered already.
var errEarlyAnswer = errors.New("proxy: the upstream answered before it read the whole request")

// onRead sets f to run before each read from the network, or none (nil):
// during a stream it sends the client what was written to it, so that
// nothing waits in the sidecar while it waits on the upstream. It runs
// below TLS when the connection has raw I/O: records TLS already holds are
// read without it, so that events that came together go out together.
func (c *upConn) onRead(f func() error) {
	if c.rw != nil {
		c.rw.beforeRead = f
		return
	}
	c.beforeRead = f
}

// handshakeSlots bounds the new connections to HTTPS upstreams under way
// at once (dial and TLS handshake), across upstreams. A handshake holds
// tens of KiB while it runs (the hybrid post-quantum key share's ML-KEM
// key alone is about 8 KiB, the server's certificates, a deep stack) and
// is CPU-bound once the server answered: a burst of a thousand new
// streams ran a thousand at once, and the heap they held set the
// collector's goal for long after (1,000 streams over TLS: RSS 83-105 MiB
// across runs, 65-67 MiB with 64 slots; 32 slots measured the same). The
// dial is inside the slot too: a request waiting for one holds no socket
// yet, and waits before dialling deepens its stack (56-57 MiB, against
// 62-64 with the dial outside; 128 slots: 59-62). Each slot is held for
// two round trips to the upstream (TCP's and TLS 1.3's) and the
// handshake's CPU: 64 slots open about 1,000 connections a second at a
// 30 ms round trip.
var handshakeSlots = make(chan struct{}, maxHandshakes)

const maxHandshakes = 64

// handshake runs tc's handshake within tlsTimeout, on a goroutine of its
// own (get holds one of handshakeSlots meanwhile). Verifying a
// certificate chain takes a deep stack, and the goroutine that asks for a
// connection serves its client for the connection's whole life: its stack
// would keep that depth (a thousand held streams over TLS kept 8 MiB more
// of stacks), where the handshake's own goroutine gives it back as it
// ends.
func handshake(ctx context.Context, tc *tls.Conn) error {
	hctx, cancel := context.WithTimeout(ctx, tlsTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tc.HandshakeContext(hctx) }()
	return <-done
}

// tunnel opens a connection to the upstream through the proxy, with
// CONNECT (for http upstreams too).
func (p *hostPool) tunnel(ctx context.Context, d *net.Dialer) (net.Conn, error) {
	pu := p.proxy
	paddr := pu.Host
	if pu.Port() == "" {
		paddr = net.JoinHostPort(pu.Hostname(), map[bool]string{true: "443", false: "80"}[pu.Scheme == "https"])
	}
	conn, err := d.DialContext(ctx, "tcp", paddr)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", pu.Redacted(), err)
	}
	fail := func(err error) (net.Conn, error) {
		_ = conn.Close()
		return nil, fmt.Errorf("proxy %s: %w", pu.Redacted(), err)
	}
	if pu.Scheme == "https" {
		tc := tls.Client(conn, &tls.Config{ServerName: pu.Hostname(), MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(err)
		}
		conn = tc
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
	defer stop()
	_ = conn.SetDeadline(time.Now().Add(dialTimeout))
	req := "CONNECT " + p.addr + " HTTP/1.1\r\nHost: " + p.addr + "\r\n"
	if u := pu.User; u != nil {
		pw, _ := u.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)) + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(conn, 1024)
	// The answer's body is never read nor closed (as net/http's client):
	// net/http takes a CONNECT's 200 without a length as a body running to
	// the end of the connection, so closing it read the tunnel until the
	// dial timeout, 30 s per new connection. A refusal closes the
	// connection.
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("CONNECT answered %s", resp.Status))
	}
	if br.Buffered() > 0 {
		return fail(errors.New("CONNECT: data after the answer"))
	}
	_ = conn.SetDeadline(time.Time{})
	if !stop() {
		return fail(ctx.Err())
	}
	return conn, nil
}

// alive reports that the upstream has not closed c nor sent anything on
// it: a non-blocking peek finds nothing to read.
func (c *upConn) alive() bool { return c.peek() == sockEmpty }

// peek looks at c's socket without reading from it (peekSocket);
// sockEmpty when c has no descriptor to look at.
func (c *upConn) peek() sockState {
	if c.raw == nil {
		return sockEmpty
	}
	st := sockClosed
	if err := c.raw.Read(func(fd uintptr) bool { st = peekSocket(fd); return true }); err != nil {
		return sockClosed
	}
	return st
}

// hasIdle reports whether p holds an idle connection.
func (p *hostPool) hasIdle() bool {
	p.mu.Lock()
	n := len(p.idle)
	p.mu.Unlock()
	return n > 0
}

// put keeps c for another request, or closes it when the pool is full.
func (p *hostPool) put(c *upConn) {
	c.idleAt = time.Now()
	c.lendReader()
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		_ = c.Conn.Close()
		return
	}
	p.idle = append(p.idle, c)
	if p.sweep == nil {
		p.sweep = time.AfterFunc(p.idleTime, p.closeExpired)
	}
	p.mu.Unlock()
}

// closeExpired closes the connections idle for idleTime, and comes back
// while any are left.
func (p *hostPool) closeExpired() {
	now := time.Now()
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleAt) >= p.idleTime {
		_ = p.idle[n].Conn.Close()
		n++
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	p.sweep = nil
	if len(p.idle) > 0 {
		p.sweep = time.AfterFunc(p.idleTime, p.closeExpired)
	}
	p.mu.Unlock()
}

// closeIdle closes the idle connections.
func (p *hostPool) closeIdle() {
	p.mu.Lock()
	for _, c := range p.idle {
		_ = c.Conn.Close()
	}
	clear(p.idle)
	p.idle = p.idle[:0]
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	p.mu.Unlock()
}

// setReadDeadline sets the read deadline.
func (c *upConn) setReadDeadline(t time.Time) {
	_ = c.Conn.SetReadDeadline(t)
	c.deadline = t
}

// exchange is one request under way upstream: its connection and its
// answer, the body of which streams from the connection.
type exchange struct {
	c      *upConn
	resp   *fasthttp.Response
	gone   func() bool // whether the client went away
	length int64       // of the body, or negative: unknown
	stream bool        // a stream: its waits hold no read buffer (awaitStream)
	read   int64       // of the body, so far
}

// errClientGone: the client went away while its request waited for the
// upstream's answer.
var errClientGone = errors.New("proxy: the client went away")

// send writes req on a connection of p and reads the answer's headers
// within headerTimeout (none when 0); the body is left to stream. While it
// waits for them, it asks gone every watchTick whether the client went
// away, and then ends the request (errClientGone). When ctx ends, the
// connection is woken at once and the request fails. A request that could
// not be written on a reused connection (the upstream closed it) is sent
// again once on a new one when its body can be had again.
func (p *hostPool) send(ctx context.Context, req *upRequest, resp *fasthttp.Response, headerTimeout time.Duration, replayable bool, gone func() bool) (exchange, error) {
	for try := 0; ; try++ {
		c, err := p.get(ctx, headerTimeout)
		if err != nil {
			return exchange{}, err
		}
		if c.rw != nil && replayable {
			// The request goes out with the first read of its answer
			// (rawConn.holdWrites): one system call less.
			c.rw.holdWrites()
		}
		var end time.Time
		if headerTimeout > 0 {
			end = time.Now().Add(headerTimeout)
		}
		bw := writerPool.Get().(*bufio.Writer)
		bw.Reset(c.Conn)
		c.gone, c.stallLimit = gone, headerTimeout
		err = req.write(bw)
		if err == nil {
			err = bw.Flush()
		}
		bw.Reset(nil)
		writerPool.Put(bw)
		sent := err == nil
		if sent {
			err = c.readHeader(resp, end, gone) // a held request is written with its first read
			sent = !c.rw.heldWriteFailed()
		}
		c.gone, c.stallLimit = nil, 0
		if err != nil && !sent && c.earlyAnswer(resp, end, gone) {
			err = nil
		}
		if err != nil {
			_ = c.Conn.Close()
			// A request that did not reach the upstream on a reused
			// connection (the upstream closed it meanwhile) goes again
			// once, unless its client went away or the upstream took it
			// and then stalled.
			if !sent && c.reused && try == 0 && replayable && ctx.Err() == nil &&
				!errors.Is(err, errClientGone) && !errors.Is(err, errHeaderTimeout) {
				continue
			}
			if errors.Is(err, fasthttp.ErrTimeout) {
				err = errHeaderTimeout
			}
			return exchange{}, err
		}
		return exchange{c: c, resp: resp, gone: gone, length: int64(resp.Header.ContentLength())}, nil
	}
}

// readHeader reads the answer's header into resp, its body left to
// stream. Each header block is read once it is buffered whole (see
// awaitHeader), so that every wait for the upstream, before the first
// byte, within a header or between an interim answer and the final one,
// wakes every watchTick to ask gone whether the client went away, and
// ends at end (none when zero). Interim answers (1xx: 100 Continue, 103
// Early Hints) are skipped, at most maxInterim of them. Refused at once,
// as malformed: a 101 (the sidecar never asks to switch protocols) or a
// status under 100, and a header block ending in a blank line that is not
// a CRLF after a CRLF (fasthttp's parser would wait for one). A header
// larger than the connection's buffer (the API's are about 2 KiB) is read
// again through a larger one: fasthttp's parser only peeks until the
// header is whole, so nothing was consumed.
func (c *upConn) readHeader(resp *fasthttp.Response, end time.Time, gone func() bool) error {
	c.takeReader() // lent while the connection was idle in the pool (put)
	resp.Reset()
	resp.StreamBody = true
	resp.Header.SetNoDefaultContentType(true)
	resp.Header.DisableNormalizing() // its lines go out as the upstream spelled them (respond)
	for interim := 0; ; {
		if err := c.awaitHeader(end, gone); err != nil {
			return err
		}
		if err := resp.Header.Read(c.br); err != nil {
			// (small is declared here, not before: errors.As moves it to
			// the heap, and a request without an error allocates nothing.)
			var small *fasthttp.ErrSmallBuffer
			if errors.As(err, &small) && c.br.Size() < upMaxHeaderSize {
				c.br = bufio.NewReaderSize(c.br, upMaxHeaderSize) // reads what the small one holds first
				continue
			}
			return err
		}
		status := resp.Header.StatusCode()
		if status == http.StatusSwitchingProtocols || status < 100 {
			return fmt.Errorf("%w: status %d", errBadAnswer, status)
		}
		if status >= 200 {
			break
		}
		if interim++; interim > maxInterim {
			return fmt.Errorf("%w: more than %d interim (1xx) answers", errBadAnswer, maxInterim)
		}
	}
	if s := resp.StatusCode(); s == http.StatusNoContent || s == http.StatusNotModified {
		return nil // no body, whatever the header says
	}
	return resp.ReadBody(c.br, 0) // with StreamBody: the body is read as it is copied
}

// earlyAnswer reads the answer the upstream sent before it stopped
// reading the request, after writing the request failed: a 413 for a body
// too large, a 401 before the body, sent before the upstream closed the
// connection (which resets it: its unread request). What the upstream sent
// is still there to be read, and is the request's answer, as net/http's
// client takes it. False when nothing came, as from an idle connection
// the upstream had closed meanwhile; a 408 on a reused connection is such
// a server's farewell to an idle connection, not an answer. The
// connection is not used again.
func (c *upConn) earlyAnswer(resp *fasthttp.Response, end time.Time, gone func() bool) bool {
	if c.buffered() == 0 && c.peek() != sockData {
		return false
	}
	if err := c.readHeader(resp, end, gone); err != nil {
		return false
	}
	if c.reused && resp.StatusCode() == http.StatusRequestTimeout {
		return false
	}
	resp.SetConnectionClose()
	return true
}

// maxInterim bounds the interim answers before a final one (as net/http's
// client).
const maxInterim = 5

// errBadAnswer: the upstream's answer cannot be forwarded (502).
var errBadAnswer = errors.New("proxy: malformed upstream answer")

// awaitHeader waits until c's buffer holds a whole header block, or is
// full (readHeader then reads through a larger one), or a read failed
// (the header's read reports it). A block that ends in a blank line
// fasthttp's parser does not take for one is refused (headerEnd).
func (c *upConn) awaitHeader(end time.Time, gone func() bool) error {
	for {
		b, _ := c.br.Peek(c.br.Buffered())
		switch headerEnd(b) {
		case blockWhole:
			return nil
		case blockBareLF:
			return fmt.Errorf("%w: a header line ends in a bare LF", errBadAnswer)
		}
		n := len(b)
		if n >= c.br.Size() {
			return nil
		}
		if err := c.await(n+1, end, gone); err != nil {
			return err
		}
		if c.br.Buffered() == n {
			return nil // the read failed
		}
	}
}

// Where a buffered header block ends (headerEnd).
const (
	blockOpen   = iota // nowhere yet: more is to come
	blockWhole         // at a CRLF after a CRLF
	blockBareLF        // at another blank line: LF LF, LF CRLF or CRLF LF
)

// headerEnd reports where the header block at the start of b ends.
// Blank lines before the start line are skipped, as fasthttp's parser
// does; the first blank line after it ends the block. fasthttp only sees
// the end at a CRLF CRLF and waits past any other, where net/http and
// nginx accept a bare LF: such a block is reported, not waited on.
func headerEnd(b []byte) int {
	started := false
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return blockOpen
		}
		line := b[i : i+j]
		blank := len(line) == 0 || len(line) == 1 && line[0] == '\r'
		switch {
		case !blank:
			started = true
		case started && len(line) == 1 && b[i-2] == '\r':
			return blockWhole // b[i-1] is the LF of the line before
		case started:
			return blockBareLF
		}
		i += j + 1
	}
}

// await waits until c's buffer holds n bytes (or a read would fail at
// once: the read reports it), until end at most (none when zero), waking
// every watchTick to ask gone whether the client went away. It leaves a
// read deadline at most a watchTick away.
func (c *upConn) await(n int, end time.Time, gone func() bool) error {
	if c.br.Buffered() >= n {
		return nil
	}
	return c.awaitRead(n, end, gone, c.rw != nil)
}

// awaitReadable is await for a long wait (a watchTick passed) on a
// connection with raw I/O that holds nothing yet: the wait for the answer
// of a long call. It reads what came without waiting, and while nothing
// came it waits for the socket to be readable, with its read buffer and
// hold buffer lent, as a parked stream does, and not under crypto/tls's
// record read (eleven frames deeper). Bytes that are not the
// answer (a TLS 1.3 server's session tickets after the first handshake)
// wake the wait, are read, and it waits again. A part of the answer read,
// it waits for the rest reading (awaitRead). Answers that come within the
// first tick never get here: it costs them nothing.
func (c *upConn) awaitReadable(n int, end time.Time, gone func() bool) error {
	defer c.takeReader()
	now := time.Now()
	for {
		c.tick(now, end) // before any read: one past its deadline is not even tried
		if c.poll(n) == nil {
			return nil // n bytes came, or a read failed: the read reports it
		}
		if c.buffered() > 0 {
			return c.awaitRead(n, end, gone, false)
		}
		err := c.rw.rc.Read(readable)
		now = time.Now()
		switch {
		case err == nil:
		case !isTimeout(err):
			return nil // the read reports it
		case !end.IsZero() && !now.Before(end):
			return errHeaderTimeout
		case gone != nil && gone():
			return errClientGone
		}
	}
}

// awaitRead is await through reads that wait in the poller; once a
// watchTick passed with nothing read, it goes on in awaitReadable when
// long is set.
func (c *upConn) awaitRead(n int, end time.Time, gone func() bool, long bool) error {
	now := time.Now()
	for {
		c.tick(now, end)
		_, err := c.br.Peek(n)
		if err == nil {
			return nil
		}
		if !isTimeout(err) {
			return nil
		}
		now = time.Now()
		if !end.IsZero() && !now.Before(end) {
			return errHeaderTimeout
		}
		if gone != nil && gone() {
			return errClientGone
		}
		if long && c.br.Buffered() == 0 && !c.pending() {
			return c.awaitReadable(n, end, gone)
		}
	}
}

// headerIn reports whether br's buffer holds a whole header (request or
// response): reading it cannot wait for the network.
func headerIn(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, crlfcrlf)
}

var crlfcrlf = []byte("\r\n\r\n")

// errHeaderTimeout is a response header timeout.
var errHeaderTimeout = &timeoutError{"proxy: timeout awaiting response headers"}

type timeoutError struct{ s string }

func (e *timeoutError) Error() string { return e.s }
func (e *timeoutError) Timeout() bool { return true }
func (e *timeoutError) Temporary() bool {
	return true
}

var _ net.Error = (*timeoutError)(nil)

// Read reads the answer's body. While the upstream sends nothing, it
// asks every watchTick whether the client went away, and then fails with
// errClientGone; a read under way has no deadline (a stream may pause for
// as long as the upstream likes, and a chunk is never cut by a timeout).
func (x *exchange) Read(p []byte) (int, error) {
	b := x.resp.BodyStream()
	if b == nil {
		return 0, io.EOF
	}
	if err := x.wait(); err != nil {
		return 0, err
	}
	c := x.c
	if !c.deadline.IsZero() && (x.length < 0 || x.length-x.read > int64(c.buffered())) {
		c.setReadDeadline(time.Time{}) // this read may wait for the network
	}
	n, err := b.Read(p)
	x.read += int64(n)
	return n, err
}

// readFull reads the answer's body into p until p is full or the body
// ends, as io.ReadFull does (io.EOF when nothing was read,
// io.ErrUnexpectedEOF when part of p was): a method, so that the exchange
// is not passed as an io.Reader, which would move every request's exchange
// to the heap for the sake of a 401.
func (x *exchange) readFull(p []byte) (n int, err error) {
	for n < len(p) && err == nil {
		var m int
		m, err = x.Read(p[n:])
		n += m
	}
	switch {
	case n == len(p):
		return n, nil
	case n > 0 && err == io.EOF:
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

// wait waits until the upstream sent more of the body (or its end), when
// none is buffered, asking every watchTick whether the client went away.
func (x *exchange) wait() error {
	if !x.c.pending() && x.more() {
		if x.stream {
			return x.c.awaitStream(x.gone)
		}
		return x.c.await(1, time.Time{}, x.gone)
	}
	return nil
}

// more reports whether the body has more to read.
func (x *exchange) more() bool {
	return (x.length < 0 || x.read < x.length) && x.resp.BodyStream() != nil
}

// done ends the exchange: its connection goes back to the pool when the
// body was read whole, else it is closed.
func (x *exchange) done(whole bool) {
	x.c.onRead(nil)
	keep := whole && !x.resp.ConnectionClose()
	_ = x.resp.CloseBodyStream()
	if keep {
		x.c.pool.put(x.c)
	} else {
		_ = x.c.Conn.Close()
	}
}

// hopHeaders are the hop-by-hop headers, never forwarded either way
// (RFC 9110, section 7.6.1), as net/http's reverse proxy removes them.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// hopHeader reports whether the header k is in hopHeaders, in any case.
func hopHeader(k []byte) bool {
	for _, n := range hopHeaders {
		if foldEqual(k, n) {
			return true
		}
	}
	return false
}

// foldEqual reports whether k is name in any case (ASCII), comparing the
// lengths first: most header lines are none of the names asked about.
func foldEqual(k []byte, name string) bool {
	return len(k) == len(name) && bytes.EqualFold(k, []byte(name))
}

// answerHeaderKept reports whether the answer's header line named k is
// sent on to the client: not the hop-by-hop headers (hopHeaders), nor
// those the upstream's Connection header lists (listed, as
// connectionListed returns it), nor Content-Length (the client's framing
// is the sidecar's) and Date (the sidecar sends its own, as nginx does),
// nor a name with a space in it (fasthttp's parser tolerates one, closing
// the connection after).
func answerHeaderKept(k []byte, listed string) bool {
	if foldEqual(k, "Content-Length") || foldEqual(k, "Date") || hopHeader(k) || bytes.IndexByte(k, ' ') >= 0 {
		return false
	}
	if listed == "" {
		return true
	}
	kept := true
	eachListed(listed, func(name string) { kept = kept && !foldEqual(k, name) })
	return kept
}

// connectionListed returns the header names h's Connection header lists
// (eachListed reads it), comma separated, but close and keep-alive: ""
// mostly (close names no header, and Keep-Alive is not sent anyway).
func connectionListed(h *fasthttp.ResponseHeader) string {
	var listed string
	for k, v := range h.All() {
		if !foldEqual(k, "Connection") || foldEqual(v, "close") || foldEqual(v, "keep-alive") {
			continue
		}
		eachListed(string(v), func(name string) {
			if !strings.EqualFold(name, "close") && !strings.EqualFold(name, "keep-alive") {
				listed += name + ","
			}
		})
	}
	return listed
}

// removeHopHeaders removes the hop-by-hop headers from h, and those named
// in its Connection header.
func removeHopHeaders(h *fields) {
	for _, v := range h.Values("Connection") {
		deleteListed(h, v)
	}
	h.drop(func(name string) bool { return slices.Contains(hopHeaders, name) })
}

// deleteListed deletes from h the headers named in the list v (the value
// of a Connection header).
func deleteListed(h *fields, v string) {
	eachListed(v, func(name string) { h.Del(http.CanonicalHeaderKey(name)) })
}

// eachListed calls f with each header name in the list v (the value of a
// Connection header): the one reading of that list, for requests and
// answers (connectionListed, answerHeaderKept).
func eachListed(v string, f func(name string)) {
	for name := range strings.SplitSeq(v, ",") {
		if name = strings.TrimSpace(name); name != "" {
			f(name)
		}
	}
}

// upstreamTarget is a route's upstream: its pool and the base path and
// query the request's are joined to (as httputil.ProxyRequest.SetURL).
type upstreamTarget struct {
	pool  *hostPool
	path  string // escaped, without a trailing slash
	query string
}

// requestURI returns the request-target for path (escaped) and query.
func (u *upstreamTarget) requestURI(buf []byte, path, query string) []byte {
	buf = append(buf[:0], u.path...)
	buf = append(buf, path...)
	if len(buf) == 0 {
		buf = append(buf, '/')
	}
	switch {
	case u.query != "" && query != "":
		buf = append(append(append(append(buf, '?'), u.query...), '&'), query...)
	case u.query != "":
		buf = append(append(buf, '?'), u.query...)
	case query != "":
		buf = append(append(buf, '?'), query...)
	}
	return buf
}

// forward sends r upstream with the route's key and copies the answer to
// the client, flushing every write of a stream or of a body of unknown
// length; on a 401 that rejects the key it sends r once more with another
// (the 401 rule of providers.Attempt, shared with the library). mw, when
// not nil, reads the answer for the accounting.
func (p *Proxy) forward(rt *route, cc *clientConn, r *request, mw *meterWriter) {
	ctx := context.Background()
	h := r.header
	removeHopHeaders(h)
	stripClientHeaders(h)
	cc.continueIfAsked() // the body is read before the request goes upstream

	bb := p.bodies.get()
	defer p.bodies.put(bb)
	var kept []byte
	var rest io.Reader
	size := int64(cc.req.ContentLength())
	if !cc.body.eof {
		var err error
		if kept, rest, err = rt.tr.KeepBody(&cc.body, size, bb.b); err != nil {
			p.upstreamError(rt, cc, r, mw, fmt.Errorf("read request body: %w", err))
			cc.close = true
			return
		}
		bb.b = kept[:0]
		if rest != nil && size <= 0 {
			size = -1
		}
	} else {
		size = 0
	}
	replayable := rest == nil
	a, err := rt.tr.Begin(ctx, h)
	if err != nil {
		p.upstreamError(rt, cc, r, mw, err)
		return
	}
	// The request is released once it is not to be sent again, before the
	// answer is copied: a held stream keeps its answer only.
	req, resp := getUpRequest(), fasthttp.AcquireResponse()
	defer func() {
		if cc.parked == nil {
			fasthttp.ReleaseResponse(resp)
		} // else the stream's (stream.finish)
	}()
	defer func() {
		if req != nil {
			putUpRequest(req)
		}
	}()
	bb.uri = rt.target.requestURI(bb.uri, r.url.EscapedPath(), r.url.RawQuery)
	if err := rt.target.fillRequest(req, r.method, bb.uri, *h, kept, rest, size); err != nil {
		if mw != nil {
			mw.own = true
		}
		p.refuse(cc, rt.m, &errBadHeader)
		return
	}

	if !rt.target.pool.hasIdle() {
		cc.releaseReader() // a connection is made first: the wait may be long
	}
	start := time.Now()
	x, err := rt.target.pool.send(ctx, req, resp, p.opts.HeaderTimeout, replayable, cc.goneFn)
	rt.m.ObserveSince(start)
	if err != nil {
		if rest != nil && !cc.body.eof {
			cc.close = true // the body was not read to its end
		}
		p.upstreamError(rt, cc, r, mw, err)
		return
	}
	var prefix []byte // the start of the body, read to classify a 401
	if resp.StatusCode() == http.StatusUnauthorized {
		eb := errBufs.Get().(*[providers.MaxErrorBody + 1]byte)
		defer errBufs.Put(eb)
		n, err := x.readFull(eb[:])
		prefix = eb[:n]
		classified := err == io.EOF || err == io.ErrUnexpectedEOF
		next, kind := a.Rejected(ctx, prefix, classified, replayable)
		if next != nil {
			x.done(classified)
			a.Retry(h, next, kind)
			_ = rt.target.fillRequest(req, r.method, bb.uri, *h, kept, nil, size) // checked above
			start = time.Now()
			x, err = rt.target.pool.send(ctx, req, resp, p.opts.HeaderTimeout, replayable, cc.goneFn)
			rt.m.ObserveSince(start)
			if err != nil {
				p.upstreamError(rt, cc, r, mw, err)
				return
			}
			prefix = nil
		}
	}
	putUpRequest(req)
	req = nil
	p.respond(rt, cc, r, &x, prefix, mw)
}

// respond copies the answer of x to the client: headers, then the body
// (after prefix, its start already read). A stream (SSE, or a body of
// unknown length) is sent to the client whenever the upstream's connection
// has nothing more to read, before the sidecar waits on it: events that
// arrived together go out in one write, as nginx sends what it read, and
// none waits in the sidecar; then the stream parks (stream.go), and
// cc.parked is set. A failed write to the client, or a failed read from
// the upstream, ends the exchange at once and cuts the client's answer, as
// net/http's reverse proxy does.
func (p *Proxy) respond(rt *route, cc *clientConn, r *request, x *exchange, prefix []byte, mw *meterWriter) {
	resp := x.resp
	status := resp.StatusCode()
	rt.m.Request(status)
	length := int64(resp.Header.ContentLength())
	flush := length < 0 || usage.ContentFormat(resp.Header.ContentType()) == usage.SSE
	var limits *usage.RateLimits
	if mw != nil {
		limits = &mw.limits
	}
	writeAnswerHeader(cc, &resp.Header, length, limits)
	if mw != nil {
		mw.header(status, &resp.Header)
	}
	if len(prefix) > 0 {
		if writeOut(cc, mw, prefix); cc.werr != nil {
			x.done(false)
			cc.abort()
			return
		}
	}
	pool := p.buffers
	if flush {
		pool = p.streamBuffers
		x.stream = true
		cc.releaseReader()
		x.c.onRead(cc.sendFn)
		if s := newStream(p, rt, cc, r, x, mw); s != nil {
			if !s.copy() {
				s.park()
			}
			return
		}
	}
	// A stream's copy buffer is held while there is something to copy,
	// not while it waits on the upstream: a thousand held streams hold
	// none.
	for !p.copyStep(rt, cc, r.url.Path, x, mw, pool, x.wait()) {
	}
}

// writeAnswerHeader writes the answer's header h to the client, its body
// length bytes long (negative: unknown), and reads its rate-limit headers
// into limits (when not nil) in the same pass. The upstream's lines go
// out as they were read (names as the upstream spelled them: its header
// is read without normalizing), after the sidecar's own (the status line,
// Date, the framing), but those answerHeaderKept drops.
func writeAnswerHeader(cc *clientConn, h *fasthttp.ResponseHeader, length int64, limits *usage.RateLimits) {
	cc.openHeader(h.StatusCode(), length)
	listed := connectionListed(h)
	for k, v := range h.All() {
		if answerHeaderKept(k, listed) {
			cc.headerLine(k, v)
			if limits != nil {
				limits.Add(k, v)
			}
		}
	}
	cc.closeHeader()
}

// writeOut writes b to the client and hands it to the meter (when not
// nil); a failure is kept in cc.werr.
func writeOut(cc *clientConn, mw *meterWriter, b []byte) {
	if _, err := cc.Write(b); err == nil && mw != nil {
		mw.wrote(b)
	}
}

// copyStep copies to the client what the upstream sent of x's body, after
// a wait that returned rerr, and reports whether the answer ended: read
// whole, or cut by a failed write to the client or a failed read from the
// upstream (the exchange is then done, and the client's answer cut).
func (p *Proxy) copyStep(rt *route, cc *clientConn, path string, x *exchange, mw *meterWriter, pool bufferPool, rerr error) bool {
	if rerr == nil {
		buf := pool.Get()
		var n int
		n, rerr = x.Read(buf)
		if n > 0 {
			writeOut(cc, mw, buf[:n])
		}
		pool.Put(buf)
	}
	switch {
	case cc.werr != nil:
		x.done(false)
		cc.abort()
		rt.log.Debug("proxy: client went away during the answer", "path", path, "error", cc.werr)
		return true
	case rerr == io.EOF:
		x.done(true)
		return true
	case rerr != nil:
		x.done(false)
		cc.abort()
		rt.log.Warn("proxy: upstream answer cut", "path", path, "error", rerr)
		return true
	}
	return false
}

// reqBuffers are a request's pooled buffers: the body kept for a retry
// and the request-target.
type reqBuffers struct {
	b   []byte
	uri []byte
}

// errBufs lend the buffer a 401's body is read into to classify it: only
// such answers hold one.
var errBufs = sync.Pool{New: func() any { return new([providers.MaxErrorBody + 1]byte) }}

// bodyPool lends reqBuffers. Bodies larger than maxPooledBody are not kept.
type bodyPool struct{ p sync.Pool }

const maxPooledBody = 64 << 10

func (bp *bodyPool) get() *reqBuffers {
	if b, ok := bp.p.Get().(*reqBuffers); ok {
		return b
	}
	return new(reqBuffers)
}

func (bp *bodyPool) put(b *reqBuffers) {
	if cap(b.b) > maxPooledBody {
		b.b = nil
	}
	bp.p.Put(b)
}

// The buffers the answers are copied with: for a body of known length,
// large enough for most non-streaming answers in one read; for a stream,
// a few events' worth (taken only while there is something to copy).
const (
	copyBufferSize   = 16 << 10
	streamBufferSize = 4 << 10
)

// bufferPool lends copy buffers of one size. A channel, unlike sync.Pool,
// takes a []byte back without allocating.
type bufferPool struct {
	ch   chan []byte
	size int
}

func newBufferPool(size int) bufferPool { return bufferPool{ch: make(chan []byte, 256), size: size} }

func (p bufferPool) Get() []byte {
	select {
	case b := <-p.ch:
		return b
	default:
		return make([]byte, p.size)
	}
}

func (p bufferPool) Put(b []byte) {
	select {
	case p.ch <- b:
	default:
	}
}

// upstreamError answers a request whose upstream exchange failed: 502, or
// 504 after the header timeout; nothing when the client went away.
func (p *Proxy) upstreamError(rt *route, cc *clientConn, r *request, mw *meterWriter, err error) {
	if mw != nil {
		mw.own = true
	}
	if errors.Is(err, errClientGone) {
		if mw != nil {
			mw.gone = true
		}
		// The client went away: nobody to answer.
		rt.m.Request(499)
		rt.log.Debug("proxy: client went away", "path", r.url.Path, "error", err)
		cc.abort()
		return
	}
	e := errUpstream
	switch timeout := isTimeout(err) || errors.Is(err, context.DeadlineExceeded); {
	case timeout && errors.Is(err, errConnect):
		e = errConnectTimeout
	case timeout:
		e = errUpstreamTimeout
	}
	rt.m.Request(e.status)
	rt.log.Warn("proxy: upstream request failed", "path", r.url.Path, "status", e.status, "error", err)
	e.write(cc, 0)
}

func (p *Proxy) onEvent(rt *route, log *slog.Logger) func(providers.Event) {
	return func(ev providers.Event) {
		switch ev.Kind {
		case providers.EventUnauthorized:
			rt.m.Unauthorized.Inc()
			log.Warn("proxy: upstream rejected the key", "version", ev.Key.VersionID, "fingerprint", ev.Key.Fingerprint)
		case providers.EventRetryRefreshed:
			rt.m.RetryRefreshed.Inc()
			log.Info("proxy: retrying with the refreshed key", "version", ev.Key.VersionID, "fingerprint", ev.Key.Fingerprint)
		case providers.EventRetryPrevious:
			rt.m.RetryPrevious.Inc()
			log.Warn("proxy: the store still holds the rejected key; retrying with PREVIOUS", "version", ev.Key.VersionID, "fingerprint", ev.Key.Fingerprint)
		case providers.EventRefreshFailed:
			log.Warn("proxy: refresh after a 401 failed", "error", ev.Err)
		default:
			log.Warn("proxy: 401 not retried", "reason", ev.Kind.String())
		}
	}
}
