package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// upstream is the Claude API the proxy talks to in these tests.
type upstream struct {
	srv *httptest.Server

	mu    sync.Mutex
	valid map[string]bool
	reqs  []recorded
}

// recorded is one request as the upstream saw it.
type recorded struct {
	Method, Path string
	Header       http.Header
	Body         string
	Key          string
}

func newUpstream(t *testing.T, valid ...string) *upstream {
	t.Helper()
	u := &upstream{}
	u.SetValid(valid...)
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
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

// SetValid replaces the keys the upstream accepts.
func (u *upstream) SetValid(keys ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.valid = map[string]bool{}
	for _, k := range keys {
		u.valid[k] = true
	}
}

// Add makes key valid; Remove revokes it.
func (u *upstream) Add(key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.valid[key] = true
}

// Remove revokes key.
func (u *upstream) Remove(key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.valid, key)
}

// Valid returns how many keys are valid.
func (u *upstream) Valid() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.valid)
}

// Requests returns the requests seen so far.
func (u *upstream) Requests() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recorded(nil), u.reqs...)
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	key := r.Header.Get("x-api-key")
	if v, ok := strings.CutPrefix(r.Header.Get("authorization"), "Bearer "); ok {
		key = v
	}
	u.mu.Lock()
	u.reqs = append(u.reqs, recorded{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: string(b), Key: key})
	ok := u.valid[key]
	u.mu.Unlock()
	w.Header().Set("request-id", "req_test")
	if !ok {
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`)
		return
	}
	var req struct {
		Stream bool `json:"stream"`
	}
	_ = json.Unmarshal(b, &req)
	if req.Stream {
		w.Header().Set("content-type", "text/event-stream")
		f := w.(http.Flusher)
		for _, ev := range []string{"message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"} {
			fmt.Fprintf(w, "event: %s\ndata: {\"type\":%q}\n\n", ev, ev)
			f.Flush()
		}
		return
	}
	w.Header().Set("content-type", "application/json")
	fmt.Fprintf(w, `{"type":"message","path":%q,"content":[{"type":"text","text":"ok"}]}`, r.URL.Path)
}
