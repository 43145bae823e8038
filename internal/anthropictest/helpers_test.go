package anthropictest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/rotation/rotationtest"
)

const (
	version = "2023-06-01"
	msgBody = `{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`
)

// errBody is the documented error shape.
type errBody struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

// call sends one request and returns its response (body read) and body.
// Every response must carry a request-id header; an error body must name
// the same request id.
func call(t *testing.T, method, url string, hdr map[string]string, body string) (*http.Response, []byte) {
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
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Header.Get("request-id")
	if !strings.HasPrefix(id, "req_011C") || len(id) != 28 {
		t.Errorf("%s %s: request-id %q, want req_011C and 20 characters", method, url, id)
	}
	if resp.StatusCode >= 400 {
		var e errBody
		if err := json.Unmarshal(b, &e); err != nil || e.Type != "error" || e.Error.Type == "" || e.Error.Message == "" {
			t.Errorf("%s %s: %d with a body not in the documented error shape: %s", method, url, resp.StatusCode, b)
		}
		if e.RequestID != id {
			t.Errorf("%s %s: body request_id %q, header %q", method, url, e.RequestID, id)
		}
		if ct := resp.Header.Get("content-type"); ct != "application/json" {
			t.Errorf("%s %s: error content-type %q", method, url, ct)
		}
	}
	return resp, b
}

// headers returns the headers of a well-formed request with key.
func headers(key string) map[string]string {
	return map[string]string{"x-api-key": key, "anthropic-version": version, "content-type": "application/json"}
}

func errorOf(t *testing.T, b []byte) errBody {
	t.Helper()
	var e errBody
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not an error body: %s", b)
	}
	return e
}

// newClock is a clock that tests move by hand (the rotation suite's).
func newClock() *rotationtest.Clock {
	return rotationtest.NewClock(time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC))
}
