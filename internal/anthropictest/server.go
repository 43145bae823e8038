package anthropictest

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Option configures a Server made by New or Start.
type Option func(*config)

type config struct {
	activationDelay time.Duration
	allowOrigin     bool
	deltas          int
	eventDelay      time.Duration
	latency         time.Duration
	clock           func() time.Time
	logSize         int
	adminKey        string
	retryAfter      time.Duration
	anyModel        bool
	cache           map[string]CacheUsage // usage.go
	rateLimits      *RateLimits           // usage.go
}

// WithActivationDelay makes a key activated through the Admin API or
// SetStatus start working only d later ("new keys can take seconds to
// work"). Keys added already active by AddKey work at once.
func WithActivationDelay(d time.Duration) Option {
	return func(c *config) { c.activationDelay = d }
}

// WithOriginAllowed serves requests carrying an Origin header even without
// anthropic-dangerous-direct-browser-access: true.
func WithOriginAllowed() Option { return func(c *config) { c.allowOrigin = true } }

// WithStream sets the number of content_block_delta events of a stream
// (default 3) and the delay before each event after message_start
// (default none). Server.SetStream changes them later.
func WithStream(deltas int, eventDelay time.Duration) Option {
	return func(c *config) { c.deltas, c.eventDelay = deltas, eventDelay }
}

// WithLatency delays every response by d before its status line.
func WithLatency(d time.Duration) Option { return func(c *config) { c.latency = d } }

// WithClock replaces time.Now for activation delays, expiry and
// timestamps, so that tests move time instead of sleeping. now must be
// safe for concurrent use.
func WithClock(now func() time.Time) Option { return func(c *config) { c.clock = now } }

// WithLog keeps the last n requests for Server.Log (default 1000; 0 keeps
// none, for load runs).
func WithLog(n int) Option { return func(c *config) { c.logSize = n } }

// WithAdminKey sets the admin key's value instead of a random
// sk-ant-admin01-… one.
func WithAdminKey(v string) Option { return func(c *config) { c.adminKey = v } }

// WithRetryAfter sets the retry-after of 429 answers (default 1s; the
// header carries whole seconds, rounded up).
func WithRetryAfter(d time.Duration) Option { return func(c *config) { c.retryAfter = d } }

// WithAnyModel accepts any model id on /v1/messages and count_tokens,
// instead of answering 404 not_found_error for ids not in /v1/models.
func WithAnyModel() Option { return func(c *config) { c.anyModel = true } }

// Server is the fake Claude API. It is safe for concurrent use: every
// method may be called while it serves.
type Server struct {
	cfg     config
	now     func() time.Time
	idSalt  [10]byte // random part of request and message ids
	counter atomic.Uint64
	latency atomic.Int64 // time.Duration
	plan    atomic.Pointer[streamPlan]
	cache   atomic.Pointer[map[string]CacheUsage] // by model; "": any (usage.go)
	cacheMu sync.Mutex                            // serializes SetCacheUsage
	rate    atomic.Pointer[rateState]             // nil: no rate-limit headers

	keys  keyring
	fault faults
	rec   recorder
	oauth oauthState // oauth.go

	srvMu sync.Mutex
	srv   *httptest.Server
}

// New returns a Server with one admin key and no API keys; it serves
// nothing until Start, or until its Handler is served.
func New(opts ...Option) *Server {
	c := config{deltas: 3, logSize: 1000, retryAfter: time.Second, clock: time.Now}
	for _, o := range opts {
		o(&c)
	}
	if c.adminKey == "" {
		c.adminKey = "sk-ant-admin01-" + randomString(86) + "AA"
	}
	if c.retryAfter <= 0 {
		c.retryAfter = time.Second
	}
	s := &Server{cfg: c, now: c.clock}
	copy(s.idSalt[:], randomID(len(s.idSalt)))
	s.latency.Store(int64(c.latency))
	s.SetStream(c.deltas, c.eventDelay)
	if c.cache != nil {
		s.cache.Store(&c.cache)
	}
	if c.rateLimits != nil {
		s.SetRateLimits(*c.rateLimits)
	}
	s.keys.init()
	s.rec.init(c.logSize)
	return s
}

// Start serves s on a loopback port until the test ends, and returns s.
func (s *Server) Start(t testing.TB) *Server {
	t.Helper()
	srv := httptest.NewServer(s.Handler())
	s.srvMu.Lock()
	s.srv = srv
	s.srvMu.Unlock()
	t.Cleanup(srv.Close)
	return s
}

// Start is New(opts...).Start(t).
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	return New(opts...).Start(t)
}

// URL returns the base URL of a started server ("" before Start), for
// option.WithBaseURL or a sidecar's upstream.
func (s *Server) URL() string {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	if s.srv == nil {
		return ""
	}
	return s.srv.URL
}

// Close stops a started server; the test's cleanup also does.
func (s *Server) Close() {
	s.srvMu.Lock()
	srv := s.srv
	s.srvMu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Handler returns the fake as an http.Handler, for a load run that serves
// it from its own listener.
func (s *Server) Handler() http.Handler { return (*handler)(s) }

// AdminKey returns the admin key (sk-ant-admin01-…) of the Admin API.
func (s *Server) AdminKey() string { return s.cfg.adminKey }

// SetLatency delays every response by d before its status line (0: none).
func (s *Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// SetStream sets the number of content_block_delta events of later
// streams (at least 1) and the delay before each of their events after
// message_start.
func (s *Server) SetStream(deltas int, eventDelay time.Duration) {
	s.plan.Store(newStreamPlan(deltas, eventDelay))
}
