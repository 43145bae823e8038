package anthropictest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/keywarden/keywarden/internal/anthropictest"
)

type apiErr struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

func do(t *testing.T, method, url string, hdr map[string]string, body string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("request-id") == "" {
		t.Errorf("%s %s: no request-id header", method, url)
	}
	return resp, b
}

const msg = `{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`

func TestDocumentedErrors(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.Options{})
	active := s.AddKey(anthropictest.StatusActive)
	inactive := s.AddKey(anthropictest.StatusInactive)
	archived := s.AddKey(anthropictest.StatusArchived)
	expired := s.AddKey(anthropictest.StatusActive)
	s.Expire(expired.ID)
	h := func(key string) map[string]string {
		return map[string]string{"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
	}
	for _, tc := range []struct {
		name       string
		method     string
		path       string
		hdr        map[string]string
		body       string
		status     int
		typ, inMsg string
	}{
		{"ok", "POST", "/v1/messages", h(active.Value), msg, 200, "", ""},
		{"missing key", "POST", "/v1/messages", map[string]string{"anthropic-version": "2023-06-01", "content-type": "application/json"}, msg, 401, "authentication_error", "x-api-key"},
		{"unknown key", "POST", "/v1/messages", h("sk-ant-api03-nope"), msg, 401, "authentication_error", "invalid x-api-key"},
		{"inactive key", "GET", "/v1/models", h(inactive.Value), "", 401, "authentication_error", "invalid x-api-key"},
		{"archived key", "GET", "/v1/models", h(archived.Value), "", 401, "authentication_error", "invalid x-api-key"},
		{"expired key", "GET", "/v1/models", h(expired.Value), "", 401, "authentication_error", "expired"},
		{"admin key on data plane", "GET", "/v1/models", h(s.AdminKey()), "", 401, "authentication_error", ""},
		{"api key on admin", "GET", "/v1/organizations/api_keys", h(active.Value), "", 401, "authentication_error", "admin key"},
		{"missing version", "GET", "/v1/models", map[string]string{"x-api-key": active.Value}, "", 400, "invalid_request_error", "anthropic-version"},
		{"wrong content type", "POST", "/v1/messages", map[string]string{"x-api-key": active.Value, "anthropic-version": "2023-06-01", "content-type": "text/plain"}, msg, 400, "invalid_request_error", "content-type"},
		{"missing max_tokens", "POST", "/v1/messages", h(active.Value), `{"model":"m","messages":[{"role":"user"}]}`, 400, "invalid_request_error", "max_tokens"},
		{"not json", "POST", "/v1/messages", h(active.Value), `{`, 400, "invalid_request_error", "JSON"},
		{"unknown model", "GET", "/v1/models/claude-nope", h(active.Value), "", 404, "not_found_error", "claude-nope"},
		{"unknown path", "GET", "/v1/nope", h(active.Value), "", 404, "not_found_error", ""},
		{"browser origin", "GET", "/v1/models", map[string]string{"x-api-key": active.Value, "anthropic-version": "2023-06-01", "Origin": "https://evil.example"}, "", 401, "authentication_error", "CORS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := do(t, tc.method, s.URL()+tc.path, tc.hdr, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if tc.status == 200 {
				return
			}
			var e apiErr
			if err := json.Unmarshal(b, &e); err != nil || e.Type != "error" || e.Error.Type != tc.typ || !strings.Contains(e.Error.Message, tc.inMsg) || !strings.HasPrefix(e.RequestID, "req_") {
				t.Fatalf("body %s, want error type %s with %q", b, tc.typ, tc.inMsg)
			}
		})
	}
	if s.Rejected() != 3 {
		t.Errorf("Rejected() = %d, want 3 (inactive, archived, expired)", s.Rejected())
	}
	if s.Served(active.ID) != 1 {
		t.Errorf("Served(active) = %d, want 1", s.Served(active.ID))
	}
}

func TestFaultInjection(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.Options{})
	k := s.AddKey(anthropictest.StatusActive)
	hdr := map[string]string{"x-api-key": k.Value, "anthropic-version": "2023-06-01"}
	s.FailNext(1, 429, "/v1/models")
	s.FailNext(1, 529, "")
	s.FailNext(1, 500, "")
	resp, b := do(t, "GET", s.URL()+"/v1/models", hdr, "")
	if resp.StatusCode != 429 || resp.Header.Get("retry-after") == "" || !strings.Contains(string(b), "rate_limit_error") {
		t.Fatalf("first: %d %s retry-after %q", resp.StatusCode, b, resp.Header.Get("retry-after"))
	}
	resp, b = do(t, "GET", s.URL()+"/v1/models", hdr, "")
	if resp.StatusCode != 529 || !strings.Contains(string(b), "overloaded_error") {
		t.Fatalf("second: %d %s", resp.StatusCode, b)
	}
	resp, b = do(t, "GET", s.URL()+"/v1/models", hdr, "")
	if resp.StatusCode != 500 || !strings.Contains(string(b), "api_error") {
		t.Fatalf("third: %d %s", resp.StatusCode, b)
	}
	resp, _ = do(t, "GET", s.URL()+"/v1/models", hdr, "")
	if resp.StatusCode != 200 {
		t.Fatalf("after the faults: %d", resp.StatusCode)
	}
	if s.Count(429) != 1 || s.Count(529) != 1 || s.Count(500) != 1 || s.Count(200) != 1 {
		t.Fatalf("counts %v", s.Statuses())
	}
}

func TestAdminAPI(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.Options{})
	var ids []string
	for i := 0; i < 25; i++ {
		ids = append(ids, s.AddKey(anthropictest.StatusInactive).ID)
		time.Sleep(time.Millisecond) // distinct created_at, listed newest first
	}
	hdr := map[string]string{"x-api-key": s.AdminKey(), "anthropic-version": "2023-06-01", "content-type": "application/json"}
	type page struct {
		Data []struct {
			ID             string `json:"id"`
			Status         string `json:"status"`
			PartialKeyHint string `json:"partial_key_hint"`
		} `json:"data"`
		HasMore bool   `json:"has_more"`
		FirstID string `json:"first_id"`
		LastID  string `json:"last_id"`
	}
	var seen []string
	after := ""
	for pages := 0; ; pages++ {
		url := s.URL() + "/v1/organizations/api_keys?limit=10"
		if after != "" {
			url += "&after_id=" + after
		}
		resp, b := do(t, "GET", url, hdr, "")
		var p page
		if resp.StatusCode != 200 || json.Unmarshal(b, &p) != nil {
			t.Fatalf("list: %d %s", resp.StatusCode, b)
		}
		for _, d := range p.Data {
			seen = append(seen, d.ID)
		}
		if !p.HasMore {
			if pages != 2 || len(p.Data) != 5 {
				t.Fatalf("pagination: %d pages, last of %d", pages+1, len(p.Data))
			}
			break
		}
		after = p.LastID
	}
	if len(seen) != 25 || seen[0] != ids[24] || seen[24] != ids[0] {
		t.Fatalf("listed %d keys, newest first expected", len(seen))
	}
	resp, b := do(t, "GET", s.URL()+"/v1/organizations/api_keys?limit=0", hdr, "")
	if resp.StatusCode != 400 {
		t.Fatalf("limit=0: %d %s", resp.StatusCode, b)
	}
	// Activate, check the hint, archive, and archived is final.
	k, _ := s.Key(ids[3])
	resp, b = do(t, "POST", s.URL()+"/v1/organizations/api_keys/"+k.ID, hdr, `{"status":"active"}`)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"status":"active"`) || !strings.Contains(string(b), `"partial_key_hint":"`+k.Hint()+`"`) {
		t.Fatalf("activate: %d %s", resp.StatusCode, b)
	}
	if !strings.HasPrefix(k.Hint(), "sk-ant-api03-") || !strings.Contains(k.Hint(), "...") || len(k.Hint()) != 22 {
		t.Fatalf("hint %q", k.Hint())
	}
	dresp, _ := do(t, "GET", s.URL()+"/v1/models", map[string]string{"x-api-key": k.Value, "anthropic-version": "2023-06-01"}, "")
	if dresp.StatusCode != 200 {
		t.Fatalf("an activated key does not work: %d", dresp.StatusCode)
	}
	resp, _ = do(t, "POST", s.URL()+"/v1/organizations/api_keys/"+k.ID, hdr, `{"status":"archived"}`)
	if resp.StatusCode != 200 {
		t.Fatal("archive failed")
	}
	resp, b = do(t, "POST", s.URL()+"/v1/organizations/api_keys/"+k.ID, hdr, `{"status":"active"}`)
	if resp.StatusCode != 400 || !strings.Contains(string(b), "archived") {
		t.Fatalf("reactivating an archived key: %d %s", resp.StatusCode, b)
	}
	resp, _ = do(t, "POST", s.URL()+"/v1/organizations/api_keys/"+k.ID, hdr, `{"status":"deleted"}`)
	if resp.StatusCode != 400 {
		t.Fatal("a bad status was accepted")
	}
	resp, _ = do(t, "GET", s.URL()+"/v1/organizations/api_keys/apikey_nope", hdr, "")
	if resp.StatusCode != 404 {
		t.Fatal("unknown key id not 404")
	}
	resp, b = do(t, "GET", s.URL()+"/v1/organizations/api_keys?status=archived", hdr, "")
	if resp.StatusCode != 200 || strings.Count(string(b), `"type":"api_key"`) != 1 {
		t.Fatalf("status filter: %s", b)
	}
}

func TestActivationDelay(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.Options{ActivationDelay: 200 * time.Millisecond})
	k := s.AddKey(anthropictest.StatusInactive)
	s.SetStatus(k.ID, anthropictest.StatusActive)
	hdr := map[string]string{"x-api-key": k.Value, "anthropic-version": "2023-06-01"}
	if resp, _ := do(t, "GET", s.URL()+"/v1/models", hdr, ""); resp.StatusCode != 401 {
		t.Fatalf("a just-activated key worked at once: %d", resp.StatusCode)
	}
	time.Sleep(250 * time.Millisecond)
	if resp, _ := do(t, "GET", s.URL()+"/v1/models", hdr, ""); resp.StatusCode != 200 {
		t.Fatalf("the key does not work after the delay: %d", resp.StatusCode)
	}
}

// TestStreamingOrderAndFlush reads the SSE stream event by event: each
// event must arrive before the next is written (EventDelay apart).
func TestStreamingOrderAndFlush(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.Options{Deltas: 3, EventDelay: 30 * time.Millisecond})
	k := s.AddKey(anthropictest.StatusActive)
	req, _ := http.NewRequest("POST", s.URL()+"/v1/messages", strings.NewReader(strings.Replace(msg, `"max_tokens"`, `"stream":true,"max_tokens"`, 1)))
	req.Header.Set("x-api-key", k.Value)
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("content-type"); ct != "text/event-stream" {
		t.Fatalf("content-type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var events []string
	var firstAt time.Time
	start := time.Now()
	for sc.Scan() {
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			if len(events) == 0 {
				firstAt = time.Now()
			}
			events = append(events, ev)
		}
	}
	want := "message_start content_block_start ping content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
	if got := strings.Join(events, " "); got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	// The first event arrives before the 8 delayed ones are written:
	// it was flushed, not buffered to the end.
	if total := time.Since(start); firstAt.Sub(start) > total/2 {
		t.Fatalf("first event after %v of %v: not flushed", firstAt.Sub(start), total)
	}
}

func TestStreamErrorEvent(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.Options{})
	k := s.AddKey(anthropictest.StatusActive)
	s.FailStreams(1)
	c := anthropic.NewClient(option.WithBaseURL(s.URL()), option.WithAPIKey(k.Value), option.WithMaxRetries(0))
	st := c.Messages.NewStreaming(context.Background(), params())
	for st.Next() {
	}
	if st.Err() == nil || !strings.Contains(st.Err().Error(), "overloaded") {
		t.Fatalf("a mid-stream error event did not surface: %v", st.Err())
	}
}

func params() anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model: anthropic.ModelClaudeSonnet4_5, MaxTokens: 16,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	}
}

// TestOfficialSDK drives the fake with github.com/anthropics/anthropic-sdk-go:
// a message, a stream, models, and a revoked key surfacing as a 401.
func TestOfficialSDK(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.Options{})
	k := s.AddKey(anthropictest.StatusActive)
	c := anthropic.NewClient(option.WithBaseURL(s.URL()), option.WithAPIKey(k.Value), option.WithMaxRetries(0))
	ctx := context.Background()
	m, err := c.Messages.New(ctx, params())
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Content) != 1 || m.Content[0].Text == "" || m.StopReason != "end_turn" {
		t.Fatalf("message %+v", m)
	}
	st := c.Messages.NewStreaming(ctx, params())
	var acc anthropic.Message
	for st.Next() {
		if err := acc.Accumulate(st.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if st.Err() != nil || len(acc.Content) != 1 || !strings.HasPrefix(acc.Content[0].Text, "tok0 ") {
		t.Fatalf("stream: %v %+v", st.Err(), acc.Content)
	}
	models, err := c.Models.List(ctx, anthropic.ModelListParams{})
	if err != nil || len(models.Data) == 0 {
		t.Fatalf("models: %v", err)
	}
	ct, err := c.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
		Model:    anthropic.ModelClaudeSonnet4_5,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	if err != nil || ct.InputTokens == 0 {
		t.Fatalf("count_tokens: %v", err)
	}
	s.SetStatus(k.ID, anthropictest.StatusInactive)
	_, err = c.Messages.New(ctx, params())
	var apierr *anthropic.Error
	if !errors.As(err, &apierr) || apierr.StatusCode != 401 || !strings.Contains(err.Error(), "authentication_error") {
		t.Fatalf("revoked key: %v", err)
	}
	if s.Served(k.ID) != 4 {
		t.Fatalf("Served = %d, want 4", s.Served(k.ID))
	}
}

func BenchmarkHandlerMessages(b *testing.B) {
	s := anthropictest.Start(b, anthropictest.Options{})
	k := s.AddKey(anthropictest.StatusActive)
	h := s.Handler()
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("POST", "/v1/messages", strings.NewReader(msg))
		req.Header.Set("x-api-key", k.Value)
		req.Header.Set("anthropic-version", "2023-06-01")
		req.Header.Set("content-type", "application/json")
		h.ServeHTTP(discard{http.Header{}}, req)
	}
}

type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(p []byte) (int, error) { return len(p), nil }
func (d discard) WriteHeader(int)             {}
