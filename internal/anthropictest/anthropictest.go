// Package anthropictest is a faithful fake of the Claude API and of the
// Admin API's key endpoints, for keywarden's rotation, sidecar and
// end-to-end tests.
//
// It fakes, as documented: POST /v1/messages (JSON, or SSE with
// "stream": true in the documented event order), POST
// /v1/messages/count_tokens, GET /v1/models and /v1/models/{id}, and the
// Admin API's GET /v1/organizations/api_keys (paginated),
// GET|POST /v1/organizations/api_keys/{id}. It enforces x-api-key (keys in
// the states active, inactive, archived, expired), anthropic-version and the
// JSON content type, refuses browser (Origin) requests, and answers errors
// in the documented shape with a request-id header on every response.
//
// It does not fake: model output (the text is fixed), token accounting
// beyond a byte count, batches or files, workspaces, rate-limit headers
// other than retry-after, or the Console's key creation (tests add keys).
package anthropictest

import (
	"crypto/rand"
	"encoding/hex"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Key statuses, as the Admin API spells them.
const (
	StatusActive   = "active"
	StatusInactive = "inactive"
	StatusArchived = "archived"
	StatusExpired  = "expired"
)

// Key is one API key as the fake knows it.
type Key struct {
	ID        string
	Value     string
	Name      string
	Status    string
	CreatedAt time.Time
	// ActiveFrom is when the key starts to work after its last activation
	// (Options.ActivationDelay).
	ActiveFrom time.Time
}

// Hint is the key's partial_key_hint: its first 15 characters, "...", and
// its last 4, as in "sk-ant-api03-R2D...igAA".
func (k Key) Hint() string { return Hint(k.Value) }

// Hint returns the partial_key_hint of a key value.
func Hint(v string) string {
	if len(v) < 20 {
		return v
	}
	return v[:15] + "..." + v[len(v)-4:]
}

// Options tune a Server.
type Options struct {
	// ActivationDelay is how long a key takes to work after it is
	// activated ("new keys can take seconds to work").
	ActivationDelay time.Duration
	// AllowOrigin accepts browser requests carrying an Origin header.
	AllowOrigin bool
	// Deltas is the number of content_block_delta events of a stream (3).
	Deltas int
	// EventDelay is slept before each SSE event after the first.
	EventDelay time.Duration
}

// Server is the fake. It is safe for concurrent use.
type Server struct {
	opts  Options
	admin string
	reqID atomic.Uint64

	mu    sync.RWMutex
	keys  map[string]*Key // by value
	byID  map[string]*Key
	order []*Key // creation order, for listing

	latency   atomic.Int64 // nanoseconds
	faultMu   sync.Mutex
	faults    []fault
	streamErr atomic.Int64 // next n streams end with an error event

	statsMu  sync.Mutex
	served   map[string]int64 // by key id: successful data-plane requests
	byStatus map[int]int64
	stale    atomic.Int64 // requests that arrived with a non-active key

	srv *httptest.Server
}

type fault struct {
	n      int
	status int
	prefix string
}

// New returns a Server with one admin key and no API keys.
func New(opts Options) *Server {
	if opts.Deltas <= 0 {
		opts.Deltas = 3
	}
	return &Server{
		opts:     opts,
		admin:    "sk-ant-admin01-" + randomString(40) + "AA",
		keys:     map[string]*Key{},
		byID:     map[string]*Key{},
		served:   map[string]int64{},
		byStatus: map[int]int64{},
	}
}

// Start serves s on a loopback port until the test ends, and returns s.
func (s *Server) Start(t testing.TB) *Server {
	t.Helper()
	s.srv = httptest.NewServer(s.Handler())
	t.Cleanup(s.srv.Close)
	return s
}

// Start is New(opts) then Start(t).
func Start(t testing.TB, opts Options) *Server { return New(opts).Start(t) }

// URL returns the base URL of a started server.
func (s *Server) URL() string { return s.srv.URL }

// AdminKey returns the admin key (sk-ant-admin01-...).
func (s *Server) AdminKey() string { return s.admin }

// AddKey makes a new realistic key with status and returns it.
func (s *Server) AddKey(status string) Key {
	return s.AddKeyValue("sk-ant-api03-"+randomString(86)+"AA", status)
}

// AddKeyValue adds a key with the given value and status and returns it.
func (s *Server) AddKeyValue(value, status string) Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := &Key{
		ID: "apikey_01" + randomString(22), Value: value, Status: status,
		Name: "key-" + randomString(4), CreatedAt: time.Now().UTC(),
	}
	s.keys[value] = k
	s.byID[k.ID] = k
	s.order = append(s.order, k)
	return *k
}

// SetStatus changes a key's status, as the Admin API would.
func (s *Server) SetStatus(id, status string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.byID[id]
	if !ok {
		return false
	}
	s.setStatusLocked(k, status)
	return true
}

func (s *Server) setStatusLocked(k *Key, status string) {
	if status == StatusActive && k.Status != StatusActive {
		k.ActiveFrom = time.Now().Add(s.opts.ActivationDelay)
	}
	k.Status = status
}

// Expire marks a key expired.
func (s *Server) Expire(id string) bool { return s.SetStatus(id, StatusExpired) }

// Key returns the key with id.
func (s *Server) Key(id string) (Key, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.byID[id]
	if !ok {
		return Key{}, false
	}
	return *k, true
}

// Keys returns every key, oldest first.
func (s *Server) Keys() []Key {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Key, len(s.order))
	for i, k := range s.order {
		out[i] = *k
	}
	return out
}

// SetLatency delays every response by d.
func (s *Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// FailNext makes the next n requests whose path starts with prefix ("" for
// any) answer status: 429 rate_limit_error (with retry-after), 500
// api_error or 529 overloaded_error (or any status of the error table).
func (s *Server) FailNext(n, status int, prefix string) {
	s.faultMu.Lock()
	s.faults = append(s.faults, fault{n: n, status: status, prefix: prefix})
	s.faultMu.Unlock()
}

// FailStreams makes the next n streams send an error event (overloaded_error)
// after message_start.
func (s *Server) FailStreams(n int) { s.streamErr.Store(int64(n)) }

// Served returns how many requests key id served successfully.
func (s *Server) Served(id string) int64 {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.served[id]
}

// Count returns how many responses had status.
func (s *Server) Count(status int) int64 {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.byStatus[status]
}

// Statuses returns the response count per status.
func (s *Server) Statuses() map[int]int64 {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	out := make(map[int]int64, len(s.byStatus))
	for k, v := range s.byStatus {
		out[k] = v
	}
	return out
}

// Rejected returns how many requests arrived with a key that was not
// active (inactive, archived, expired, or not yet working).
func (s *Server) Rejected() int64 { return s.stale.Load() }

func (s *Server) record(status int, keyID string) {
	s.statsMu.Lock()
	s.byStatus[status]++
	if keyID != "" && status < 300 {
		s.served[keyID]++
	}
	s.statsMu.Unlock()
}

func (s *Server) takeFault(path string) (int, bool) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	for i := range s.faults {
		f := &s.faults[i]
		if f.n > 0 && strings.HasPrefix(path, f.prefix) {
			f.n--
			st := f.status
			if f.n == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			return st, true
		}
	}
	return 0, false
}

// lookup authenticates a data-plane key. It returns the key id, or the
// error to answer.
func (s *Server) lookup(v string) (string, *apiError) {
	if v == "" {
		return "", errMissingKey
	}
	if v == s.admin {
		return "", errAdminOnDataPlane
	}
	s.mu.RLock()
	k, ok := s.keys[v]
	var id, status string
	var from time.Time
	if ok {
		id, status, from = k.ID, k.Status, k.ActiveFrom
	}
	s.mu.RUnlock()
	if !ok {
		return "", errInvalidKey
	}
	if status != StatusActive || time.Now().Before(from) {
		s.stale.Add(1)
		if status == StatusExpired {
			return "", errExpiredKey
		}
		return "", errInvalidKey
	}
	return id, nil
}

func (s *Server) list(status string) []*Key {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Key, 0, len(s.order))
	for _, k := range s.order {
		if status == "" || k.Status == status {
			c := *k
			out = append(out, &c)
		}
	}
	// Newest first, as the API lists.
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out
}

func randomString(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
