package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/keywarden/keywarden/internal/anthropictest"
)

// Request bodies the fake Claude API accepts.
const (
	msgBody    = `{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}`
	streamBody = `{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"Hi"}]}`
)

// upstream is the Claude API the proxy talks to in these tests: the fake of
// internal/anthropictest, behind a recorder of every request it gets (the
// headers the sidecar sent, which the fake does not expose).
type upstream struct {
	fake *anthropictest.Server
	srv  *httptest.Server

	mu   sync.Mutex
	ids  map[string]string // key value → fake key id
	reqs []recorded
}

// recorded is one request as the upstream saw it.
type recorded struct {
	Method, Path string
	Header       http.Header
	Body         string
	Key          string
}

// newUpstream starts the fake with the given keys active.
func newUpstream(t *testing.T, valid ...string) *upstream {
	t.Helper()
	u := &upstream{fake: anthropictest.New(), ids: map[string]string{}}
	h := u.fake.Handler()
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		key := r.Header.Get("x-api-key")
		if v, ok := strings.CutPrefix(r.Header.Get("authorization"), "Bearer "); ok {
			key = v
		}
		u.mu.Lock()
		u.reqs = append(u.reqs, recorded{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: string(b), Key: key})
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	u.SetValid(valid...)
	return u
}

// newUpstreamFunc serves h, recording nothing: for tests that need to
// control a response byte by byte.
func newUpstreamFunc(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{srv: httptest.NewServer(h)}
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) URL() string { return u.srv.URL }

// SetValid makes exactly keys active at the fake; every other key it knows
// becomes inactive, as the Admin API deactivates a key.
func (u *upstream) SetValid(keys ...string) {
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
		u.Add(k)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for v, id := range u.ids {
		if !want[v] {
			u.fake.SetStatus(id, anthropictest.StatusInactive)
		}
	}
}

// Add makes key active, adding it to the fake when new.
func (u *upstream) Add(key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if id, ok := u.ids[key]; ok {
		u.fake.SetStatus(id, anthropictest.StatusActive)
		return
	}
	u.ids[key] = u.fake.AddKey(key, anthropictest.StatusActive).ID
}

// Remove deactivates key.
func (u *upstream) Remove(key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if id, ok := u.ids[key]; ok {
		u.fake.SetStatus(id, anthropictest.StatusInactive)
	}
}

// Requests returns the requests seen so far.
func (u *upstream) Requests() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recorded(nil), u.reqs...)
}
