package anthropictest_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
)

// TestDocumentedErrors sends one request per documented refusal and checks
// status, error type and message, and the request-id header (in call).
func TestDocumentedErrors(t *testing.T) {
	clk := newClock()
	s := anthropictest.Start(t, anthropictest.WithClock(clk.Now))
	active := s.AddKey("", anthropictest.StatusActive)
	inactive := s.AddKey("", anthropictest.StatusInactive)
	archived := s.AddKey("", anthropictest.StatusArchived)
	expired := s.AddKey("", anthropictest.StatusActive)
	if err := s.Expire(expired.ID); err != nil {
		t.Fatal(err)
	}
	without := func(key string, drop ...string) map[string]string {
		h := headers(key)
		for _, d := range drop {
			delete(h, d)
		}
		return h
	}
	with := func(key, k, v string) map[string]string {
		h := headers(key)
		h[k] = v
		return h
	}
	for _, tc := range []struct {
		name         string
		method, path string
		hdr          map[string]string
		body         string
		status       int
		typ, message string // message: a substring
	}{
		{"ok", "POST", "/v1/messages", headers(active.Value), msgBody, 200, "", ""},
		{"missing key", "POST", "/v1/messages", without(active.Value, "x-api-key"), msgBody, 401, "authentication_error", "x-api-key header is required"},
		{"unknown key", "POST", "/v1/messages", headers("sk-ant-api03-unknown"), msgBody, 401, "authentication_error", "invalid x-api-key"},
		{"inactive key", "GET", "/v1/models", headers(inactive.Value), "", 401, "authentication_error", "invalid x-api-key"},
		{"archived key", "GET", "/v1/models", headers(archived.Value), "", 401, "authentication_error", "invalid x-api-key"},
		{"expired key", "POST", "/v1/messages/count_tokens", headers(expired.Value), msgBody, 401, "authentication_error", "expired"},
		{"admin key on the data plane", "GET", "/v1/models", headers(s.AdminKey()), "", 401, "authentication_error", "invalid x-api-key"},
		{"API key on the Admin API", "GET", "/v1/organizations/api_keys", headers(active.Value), "", 403, "permission_error", "Admin API key"},
		{"unknown key on the Admin API", "GET", "/v1/organizations/api_keys", headers("sk-ant-admin01-nope"), "", 401, "authentication_error", "invalid x-api-key"},
		{"missing version", "GET", "/v1/models", without(active.Value, "anthropic-version"), "", 400, "invalid_request_error", "anthropic-version: header is required"},
		{"missing version on the Admin API", "GET", "/v1/organizations/api_keys", without(s.AdminKey(), "anthropic-version"), "", 400, "invalid_request_error", "anthropic-version: header is required"},
		{"unknown version", "GET", "/v1/models", with(active.Value, "anthropic-version", "2024-13-01"), "", 400, "invalid_request_error", `anthropic-version: "2024-13-01" is not a valid version`},
		{"no content type", "POST", "/v1/messages", without(active.Value, "content-type"), msgBody, 400, "invalid_request_error", "content-type"},
		{"text content type", "POST", "/v1/messages", with(active.Value, "content-type", "text/plain"), msgBody, 400, "invalid_request_error", "content-type"},
		{"json with charset", "POST", "/v1/messages", with(active.Value, "content-type", "application/json; charset=utf-8"), msgBody, 200, "", ""},
		{"not json", "POST", "/v1/messages", headers(active.Value), `{"model":`, 400, "invalid_request_error", "JSON"},
		{"not an object", "POST", "/v1/messages", headers(active.Value), `[1]`, 400, "invalid_request_error", "object"},
		{"missing model", "POST", "/v1/messages", headers(active.Value), `{"max_tokens":1,"messages":[{}]}`, 400, "invalid_request_error", "model: Field required"},
		{"model not a string", "POST", "/v1/messages", headers(active.Value), `{"model":7,"max_tokens":1,"messages":[{}]}`, 400, "invalid_request_error", "model: Input should be a valid string"},
		{"missing max_tokens", "POST", "/v1/messages", headers(active.Value), `{"model":"claude-sonnet-4-5","messages":[{}]}`, 400, "invalid_request_error", "max_tokens: Field required"},
		{"max_tokens zero", "POST", "/v1/messages", headers(active.Value), `{"model":"claude-sonnet-4-5","max_tokens":0,"messages":[{}]}`, 400, "invalid_request_error", "greater than or equal to 1"},
		{"max_tokens not an integer", "POST", "/v1/messages", headers(active.Value), `{"model":"claude-sonnet-4-5","max_tokens":1.5,"messages":[{}]}`, 400, "invalid_request_error", "valid integer"},
		{"missing messages", "POST", "/v1/messages", headers(active.Value), `{"model":"claude-sonnet-4-5","max_tokens":1}`, 400, "invalid_request_error", "messages: Field required"},
		{"empty messages", "POST", "/v1/messages", headers(active.Value), `{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[]}`, 400, "invalid_request_error", "at least one message"},
		{"stream not a boolean", "POST", "/v1/messages", headers(active.Value), `{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[{}],"stream":"yes"}`, 400, "invalid_request_error", "stream"},
		{"count_tokens needs no max_tokens", "POST", "/v1/messages/count_tokens", headers(active.Value), `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}`, 200, "", ""},
		{"unknown model", "POST", "/v1/messages", headers(active.Value), `{"model":"claude-nope","max_tokens":1,"messages":[{}]}`, 404, "not_found_error", "model: claude-nope"},
		{"unknown model id", "GET", "/v1/models/claude-nope", headers(active.Value), "", 404, "not_found_error", "model: claude-nope"},
		{"unknown path", "GET", "/v1/files", headers(active.Value), "", 404, "not_found_error", "Not found"},
		{"wrong method", "GET", "/v1/messages", headers(active.Value), "", 405, "invalid_request_error", "Method"},
		{"unknown API key id", "GET", "/v1/organizations/api_keys/apikey_01nope", headers(s.AdminKey()), "", 404, "not_found_error", "apikey_01nope"},
		{"browser origin", "GET", "/v1/models", with(active.Value, "origin", "https://app.example"), "", 401, "authentication_error", "CORS requests must set 'anthropic-dangerous-direct-browser-access' header"},
		{"browser origin without a key", "POST", "/v1/messages", with("", "origin", "https://app.example"), msgBody, 401, "authentication_error", "CORS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := call(t, tc.method, s.URL()+tc.path, tc.hdr, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if tc.status < 400 {
				return
			}
			if e := errorOf(t, b); e.Error.Type != tc.typ || !strings.Contains(e.Error.Message, tc.message) {
				t.Fatalf("error %s %q, want %s with %q", e.Error.Type, e.Error.Message, tc.typ, tc.message)
			}
		})
	}
	st := s.Stats()
	if got := st.Keys[inactive.ID].Rejected + st.Keys[archived.ID].Rejected + st.Keys[expired.ID].Rejected; got != 3 {
		t.Errorf("rejected requests of the unusable keys: %d, want 3", got)
	}
	if st.Keys[active.ID].Served != 3 {
		t.Errorf("active key served %d, want 3 (%+v)", st.Keys[active.ID].Served, st.Keys[active.ID])
	}
}

// TestOrigin: a browser request is refused unless it opts in with
// anthropic-dangerous-direct-browser-access (then CORS headers answer), or
// the server allows origins.
func TestOrigin(t *testing.T) {
	s := anthropictest.Start(t)
	k := s.AddKey("", anthropictest.StatusActive)
	h := headers(k.Value)
	h["origin"] = "https://app.example"
	h["anthropic-dangerous-direct-browser-access"] = "true"
	resp, b := call(t, "GET", s.URL()+"/v1/models", h, "")
	if resp.StatusCode != 200 || resp.Header.Get("access-control-allow-origin") != "*" {
		t.Fatalf("opted-in browser request: %d, allow-origin %q: %s", resp.StatusCode, resp.Header.Get("access-control-allow-origin"), b)
	}

	open := anthropictest.Start(t, anthropictest.WithOriginAllowed())
	k = open.AddKey("", anthropictest.StatusActive)
	h = headers(k.Value)
	h["origin"] = "https://app.example"
	if resp, b := call(t, "GET", open.URL()+"/v1/models", h, ""); resp.StatusCode != 200 {
		t.Fatalf("WithOriginAllowed: %d %s", resp.StatusCode, b)
	}
}

// TestResponses checks the shapes of the successful answers.
func TestResponses(t *testing.T) {
	s := anthropictest.Start(t)
	k := s.AddKey("", anthropictest.StatusActive)
	_, b := call(t, "POST", s.URL()+"/v1/messages", headers(k.Value), msgBody)
	var m struct {
		ID, Type, Role, Model, StopReason string
		Content                           []struct{ Type, Text string }
		Usage                             struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
		}
	}
	if err := json.Unmarshal(b, &m); err != nil || !strings.HasPrefix(m.ID, "msg_01") || len(m.ID) != 28 || m.Type != "message" ||
		m.Role != "assistant" || m.Model != "claude-sonnet-4-5" || len(m.Content) != 1 || m.Content[0].Type != "text" ||
		m.Usage.InputTokens == 0 || m.Usage.OutputTokens == 0 {
		t.Fatalf("message %s", b)
	}
	_, b = call(t, "POST", s.URL()+"/v1/messages", headers(k.Value), msgBody)
	var m2 struct{ ID string }
	if json.Unmarshal(b, &m2); m2.ID == m.ID {
		t.Fatalf("two messages share the id %s", m.ID)
	}
	// An escaped model id is read and echoed in valid JSON.
	s2 := anthropictest.Start(t, anthropictest.WithAnyModel())
	k2 := s2.AddKey("", anthropictest.StatusActive)
	resp, b := call(t, "POST", s2.URL()+"/v1/messages", headers(k2.Value), `{"model":"my\"model\u00e9","max_tokens":1,"messages":[{}]}`)
	if resp.StatusCode != 200 || json.Unmarshal(b, &m) != nil || m.Model != "my\"model\u00e9" {
		t.Fatalf("escaped model: %d %s", resp.StatusCode, b)
	}
	_, b = call(t, "GET", s.URL()+"/v1/models/claude-opus-4-6", headers(k.Value), "")
	var mi struct {
		Type, ID    string
		DisplayName string `json:"display_name"`
	}
	if json.Unmarshal(b, &mi); mi.Type != "model" || mi.ID != "claude-opus-4-6" || mi.DisplayName == "" {
		t.Fatalf("model %s", b)
	}
}

// TestRetryAfter: a 429 carries retry-after in whole seconds and the
// request rate-limit headers.
func TestRetryAfter(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.WithRetryAfter(1500*time.Millisecond))
	k := s.AddKey("", anthropictest.StatusActive)
	s.FailNext(1, 429, "")
	resp, b := call(t, "GET", s.URL()+"/v1/models", headers(k.Value), "")
	if resp.StatusCode != 429 || errorOf(t, b).Error.Type != "rate_limit_error" {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if ra := resp.Header.Get("retry-after"); ra != "2" {
		t.Errorf("retry-after %q, want 2", ra)
	}
	if resp.Header.Get("anthropic-ratelimit-requests-remaining") != "0" || resp.Header.Get("anthropic-ratelimit-requests-reset") == "" {
		t.Errorf("rate-limit headers missing: %v", resp.Header)
	}
}
