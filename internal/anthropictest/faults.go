package anthropictest

import (
	"strings"
	"sync"
	"sync/atomic"
)

// faults are the injected failures still to serve. The data plane reads
// only the atomic counts while none is pending.
type faults struct {
	requests atomic.Int32 // len(reqs)
	streams  atomic.Int32 // len(strs)

	mu   sync.Mutex
	reqs []reqFault
	strs []streamFault
}

type reqFault struct {
	n, status int
	path      string
}

type streamFault struct {
	n, after, status int
}

// FailNext makes the next n authenticated requests whose path matches
// path answer status with its documented error type instead of being
// served: 429 rate_limit_error (with retry-after), 500 api_error, 529
// overloaded_error, or any status of the documented table. path is ""
// for any, an exact path ("/v1/messages"), or a prefix ending in "*"
// ("/v1/organizations/api_keys/*"). Calls add up: each is served in turn.
func (s *Server) FailNext(n, status int, path string) {
	if n <= 0 {
		return
	}
	f := &s.fault
	f.mu.Lock()
	f.reqs = append(f.reqs, reqFault{n: n, status: status, path: path})
	f.requests.Store(int32(len(f.reqs)))
	f.mu.Unlock()
}

// FailStreams makes the next n streams send an `event: error` frame of
// status's error type (529: overloaded_error, as the real API does under
// load) after their first `after` events (at least 1: message_start), and
// end there, after the 200 status was sent.
func (s *Server) FailStreams(n, after, status int) {
	if n <= 0 {
		return
	}
	f := &s.fault
	f.mu.Lock()
	f.strs = append(f.strs, streamFault{n: n, after: max(after, 1), status: status})
	f.streams.Store(int32(len(f.strs)))
	f.mu.Unlock()
}

// ClearFaults drops every injected failure not yet served.
func (s *Server) ClearFaults() {
	f := &s.fault
	f.mu.Lock()
	f.reqs, f.strs = nil, nil
	f.requests.Store(0)
	f.streams.Store(0)
	f.mu.Unlock()
}

// takeRequest returns the status of the injected failure for a request to
// path, if one is due.
func (f *faults) takeRequest(path string) (int, bool) {
	if f.requests.Load() == 0 {
		return 0, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.reqs {
		r := &f.reqs[i]
		if !pathMatches(r.path, path) {
			continue
		}
		st := r.status
		if r.n--; r.n == 0 {
			f.reqs = append(f.reqs[:i], f.reqs[i+1:]...)
			f.requests.Store(int32(len(f.reqs)))
		}
		return st, true
	}
	return 0, false
}

// takeStream returns the injected failure of the next stream, if one is
// due.
func (f *faults) takeStream() (streamFault, bool) {
	if f.streams.Load() == 0 {
		return streamFault{}, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.strs) == 0 {
		return streamFault{}, false
	}
	sf := f.strs[0]
	if f.strs[0].n--; f.strs[0].n == 0 {
		f.strs = f.strs[1:]
		f.streams.Store(int32(len(f.strs)))
	}
	return sf, true
}

func pathMatches(pattern, path string) bool {
	if pattern == "" || pattern == path {
		return true
	}
	pre, ok := strings.CutSuffix(pattern, "*")
	return ok && strings.HasPrefix(path, pre)
}
