package anthropictest

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// AdminKeyID is the KeyID that Log gives requests made with the admin key.
const AdminKeyID = "admin"

// Stats is a snapshot of what the server answered since it started (or
// since Reset).
type Stats struct {
	Requests int64
	// ByStatus counts responses by HTTP status. A stream ended by an
	// injected error event counts as the 200 it started with, and in
	// StreamErrors.
	ByStatus map[int]int64
	// Keys counts requests per API key id, for the keys that had any.
	Keys map[string]KeyStats
	// UnknownKey counts requests whose x-api-key was missing or matched no
	// key (nor the admin key).
	UnknownKey int64
	// StreamErrors counts streams ended by an injected error event.
	StreamErrors int64
}

// KeyStats counts the requests that carried one API key.
type KeyStats struct {
	// Served counts requests the key authenticated and that were answered
	// with success (a stream counts when it started).
	Served int64
	// Rejected counts requests refused with 401 because the key was
	// inactive, archived, expired or not yet working: a client still
	// sending a revoked key shows here.
	Rejected int64
	// Failed counts requests the key authenticated that failed anyway:
	// injected faults, invalid requests, streams ended by an error event.
	Failed int64
}

// Errors returns the number of error responses (status 400 and above)
// plus the streams ended by an error event: what "zero requests failed"
// asserts on.
func (st Stats) Errors() int64 {
	n := st.StreamErrors
	for code, c := range st.ByStatus {
		if code >= 400 {
			n += c
		}
	}
	return n
}

// Entry is one request of the log.
type Entry struct {
	Time      time.Time
	RequestID string
	Method    string
	Path      string
	// KeyID is the id of the API key the request carried, AdminKeyID for
	// the admin key, or "" when it carried none that the server knows.
	KeyID       string
	Status      int
	StreamError bool // the stream ended with an injected error event
}

// recorder counts with atomics; only the optional log takes a lock.
type recorder struct {
	total        atomic.Int64
	unknown      atomic.Int64
	streamErrors atomic.Int64
	byStatus     [600]atomic.Int64

	logMu sync.Mutex
	log   []Entry // ring of cap size
	next  int
	full  bool
}

func (r *recorder) init(size int) {
	if size > 0 {
		r.log = make([]Entry, size)
	}
}

// outcome is what one request came to, for the recorder.
type outcome struct {
	status    int
	key       *key
	admin     bool
	unknown   bool // no known key
	rejected  bool // the key was known but not usable
	streamErr bool
}

func (s *Server) record(o outcome, reqID string, r *http.Request) {
	rec := &s.rec
	rec.total.Add(1)
	if o.status > 0 && o.status < len(rec.byStatus) {
		rec.byStatus[o.status].Add(1)
	}
	if o.streamErr {
		rec.streamErrors.Add(1)
	}
	if o.unknown {
		rec.unknown.Add(1)
	}
	keyID := ""
	switch {
	case o.key != nil:
		keyID = o.key.id
		switch {
		case o.rejected:
			o.key.rejected.Add(1)
		case o.status < 300 && !o.streamErr:
			o.key.served.Add(1)
		default:
			o.key.failed.Add(1)
		}
	case o.admin:
		keyID = AdminKeyID
	}
	if rec.log == nil {
		return
	}
	e := Entry{Time: s.now(), RequestID: reqID, Method: r.Method, Path: r.URL.Path, KeyID: keyID, Status: o.status, StreamError: o.streamErr}
	rec.logMu.Lock()
	rec.log[rec.next] = e
	if rec.next++; rec.next == len(rec.log) {
		rec.next, rec.full = 0, true
	}
	rec.logMu.Unlock()
}

// Stats returns the counts so far.
func (s *Server) Stats() Stats {
	rec := &s.rec
	st := Stats{
		Requests: rec.total.Load(), UnknownKey: rec.unknown.Load(), StreamErrors: rec.streamErrors.Load(),
		ByStatus: map[int]int64{}, Keys: map[string]KeyStats{},
	}
	for code := range rec.byStatus {
		if n := rec.byStatus[code].Load(); n > 0 {
			st.ByStatus[code] = n
		}
	}
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	for _, k := range s.keys.order {
		ks := KeyStats{Served: k.served.Load(), Rejected: k.rejected.Load(), Failed: k.failed.Load()}
		if ks != (KeyStats{}) {
			st.Keys[k.id] = ks
		}
	}
	return st
}

// Served returns how many requests key id served with success.
func (s *Server) Served(id string) int64 {
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	if k := s.keys.byID[id]; k != nil {
		return k.served.Load()
	}
	return 0
}

// Count returns how many responses had status.
func (s *Server) Count(status int) int64 {
	if status <= 0 || status >= len(s.rec.byStatus) {
		return 0
	}
	return s.rec.byStatus[status].Load()
}

// Log returns the last requests (up to WithLog's size), oldest first.
func (s *Server) Log() []Entry {
	rec := &s.rec
	rec.logMu.Lock()
	defer rec.logMu.Unlock()
	if !rec.full {
		return append([]Entry(nil), rec.log[:rec.next]...)
	}
	out := make([]Entry, 0, len(rec.log))
	out = append(out, rec.log[rec.next:]...)
	return append(out, rec.log[:rec.next]...)
}

// Reset zeroes every count and empties the log; keys and faults stay.
func (s *Server) Reset() {
	rec := &s.rec
	rec.total.Store(0)
	rec.unknown.Store(0)
	rec.streamErrors.Store(0)
	for i := range rec.byStatus {
		rec.byStatus[i].Store(0)
	}
	s.keys.mu.Lock()
	for _, k := range s.keys.order {
		k.served.Store(0)
		k.rejected.Store(0)
		k.failed.Store(0)
	}
	s.keys.mu.Unlock()
	rec.logMu.Lock()
	clear(rec.log)
	rec.next, rec.full = 0, false
	rec.logMu.Unlock()
}

// Rejected returns the number of requests refused with 401 because their
// key was inactive, archived, expired or not yet working, over all keys:
// requests a client made with a revoked key.
func (st Stats) Rejected() int64 {
	var n int64
	for _, k := range st.Keys {
		n += k.Rejected
	}
	return n
}
