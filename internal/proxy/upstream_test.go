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
		for _, ev := range sseEvents {
			io.WriteString(w, ev)
			f.Flush()
		}
		return
	}
	w.Header().Set("content-type", "application/json")
	fmt.Fprintf(w, `{"type":"message","path":%q,"content":[{"type":"text","text":"ok"}]}`, r.URL.Path)
}

// sseEvents is a Messages stream as the API sends it.
var sseEvents = []string{
	"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
	"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
	"event: ping\ndata: {\"type\": \"ping\"}\n\n",
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" there\"}}\n\n",
	"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
	"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}\n\n",
	"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
}
