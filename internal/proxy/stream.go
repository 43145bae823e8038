package proxy

import (
	"time"

	"github.com/valyala/fasthttp"
)

// A stream that waits on its upstream holds no goroutine. Blocked in its
// read, a request's goroutine kept its whole stack (8 KiB: the handler's
// frames, then crypto/tls's read path; Go halves a stack only when under a
// quarter of it is used): a thousand held streams kept 8 MiB of stacks,
// and about 13 MiB less memory in all once parked. Instead, once
// the upstream has nothing more to read, the stream is parked: the
// goroutine returns, leaving the stream's state here, and a small one (a
// 2 KiB stack) waits for the upstream's socket to be readable, asking
// every watchTick whether the client went away, then serves on: it copies
// what came and parks again, or finishes the answer and reads the
// connection's next request.
//
// What the frames above respond did once the answer ended (forward's and
// handler.serve's deferred work) is done by finish; clientConn.serveFrom
// starts the wait once the goroutine that parked has left every frame.
// Connections without raw I/O (elsewhere than Linux) wait in respond.

// stream is an answer being streamed, parked while its upstream sends
// nothing.
type stream struct {
	p    *Proxy
	rt   *route
	cc   *clientConn
	path string // the request's, for the log
	x    exchange
	mw   *meterWriter

	// What the frames above respond leave for finish.
	lim       *limiter // the limiter to release limClient to
	limClient *client
	settle    bool // account for the answer (handler.serve's settle)
	ci        int

	gone bool // the wait saw the client go away
}

// newStream returns the stream respond copies, to be parked while it
// waits; nil when its upstream connection has no raw I/O (respond then
// copies it waiting itself).
func newStream(p *Proxy, rt *route, cc *clientConn, r *request, x *exchange, mw *meterWriter) *stream {
	if x.c.rw == nil {
		return nil
	}
	return &stream{p: p, rt: rt, cc: cc, path: r.url.Path, x: *x, mw: mw}
}

// copy copies what the upstream sent until the answer ends (true) or the
// upstream has nothing more to read (false: the stream is to be parked).
func (s *stream) copy() bool {
	x := &s.x
	for {
		var rerr error
		switch {
		case s.gone:
			s.gone = false
			x.c.takeReader() // ending: the body's close may read
			rerr = errClientGone
		case !x.c.pending() && x.more():
			if rerr = x.c.poll(1); rerr == errWouldBlock {
				return false
			}
		}
		if s.p.copyStep(s.rt, s.cc, s.path, x, s.mw, s.p.streamBuffers, rerr) {
			return true
		}
	}
}

// park readies s to wait: its client's request is not kept (its header
// and the header map made of it, a thousand held streams' worth of them).
func (s *stream) park() {
	s.cc.parked = s
	s.cc.hdr, s.cc.vals = nil, nil
	if s.cc.body.eof {
		// Its answer's header is written: only a body left unread
		// (end) would read the request again.
		s.cc.lendRequest()
	}
}

// finish does, once the answer ended, what the frames above respond would
// have done as they returned: forward releases the answer, handler.serve
// accounts for it and releases the client's concurrency.
func (s *stream) finish() {
	fasthttp.ReleaseResponse(s.x.resp)
	if s.settle {
		s.p.settle(s.rt, s.ci, s.mw)
	}
	if s.lim != nil {
		s.lim.release(s.limClient)
	}
}

// wait waits until the upstream's socket is readable (or closed), waking
// every watchTick to ask whether the client went away, then serves the
// connection on from the stream. It runs on a goroutine of its own.
func (s *stream) wait() {
	c := s.x.c
	now := time.Now()
	for {
		c.tick(now, time.Time{})
		err := c.rw.rc.Read(readable)
		if err == nil || !isTimeout(err) {
			break // readable, or a failure the next read reports
		}
		now = time.Now()
		if s.cc.gone() {
			s.gone = true
			break
		}
	}
	s.cc.serveFrom(s)
}
