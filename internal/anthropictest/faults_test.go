package anthropictest_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
)

// TestFailNext injects each documented server-side error in turn, by path.
func TestFailNext(t *testing.T) {
	s := anthropictest.Start(t)
	k := s.AddKey("", anthropictest.StatusActive)
	h := headers(k.Value)
	s.FailNext(1, 429, "/v1/messages")
	s.FailNext(1, 500, "")
	s.FailNext(2, 529, "/v1/models")
	for i, tc := range []struct {
		method, path, body string
		status             int
		typ                string
	}{
		{"GET", "/v1/models", "", 500, "api_error"},             // the 429 is for /v1/messages only
		{"POST", "/v1/messages/count_tokens", msgBody, 200, ""}, // exact path: not /v1/messages
		{"POST", "/v1/messages", msgBody, 429, "rate_limit_error"},
		{"GET", "/v1/models", "", 529, "overloaded_error"},
		{"GET", "/v1/models", "", 529, "overloaded_error"},
		{"GET", "/v1/models", "", 200, ""},
		{"POST", "/v1/messages", msgBody, 200, ""},
	} {
		resp, b := call(t, tc.method, s.URL()+tc.path, h, tc.body)
		if resp.StatusCode != tc.status {
			t.Fatalf("request %d (%s): %d, want %d: %s", i, tc.path, resp.StatusCode, tc.status, b)
		}
		if tc.status == 429 && resp.Header.Get("retry-after") != "1" {
			t.Errorf("429 without retry-after: %v", resp.Header)
		}
		if tc.typ != "" && errorOf(t, b).Error.Type != tc.typ {
			t.Errorf("request %d: %s, want %s", i, b, tc.typ)
		}
	}
	st := s.Stats()
	if st.ByStatus[429] != 1 || st.ByStatus[500] != 1 || st.ByStatus[529] != 2 || st.ByStatus[200] != 3 {
		t.Fatalf("by status %v", st.ByStatus)
	}
	if ks := st.Keys[k.ID]; ks.Served != 3 || ks.Failed != 4 || ks.Rejected != 0 {
		t.Fatalf("key stats %+v", ks)
	}
	// Faults hit authenticated requests only: a bad key is still a 401.
	s.FailNext(1, 529, "")
	if resp, _ := call(t, "GET", s.URL()+"/v1/models", headers("sk-ant-api03-unknown"), ""); resp.StatusCode != 401 {
		t.Fatalf("bad key under a pending fault: %d", resp.StatusCode)
	}
	s.ClearFaults()
	if resp, _ := call(t, "GET", s.URL()+"/v1/models", h, ""); resp.StatusCode != 200 {
		t.Fatalf("after ClearFaults: %d", resp.StatusCode)
	}
}

// TestFaultsConcurrent: under concurrent requests, exactly n of them get
// the injected failure (run with -race).
func TestFaultsConcurrent(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.WithLog(0))
	k := s.AddKey("", anthropictest.StatusActive)
	s.FailNext(37, 529, "")
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				req, _ := http.NewRequest("POST", s.URL()+"/v1/messages", strings.NewReader(msgBody))
				for k, v := range headers(k.Value) {
					req.Header.Set(k, v)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	// Flip another key's status and add keys while requests run.
	other := s.AddKey("", anthropictest.StatusInactive)
	for range 20 {
		_ = s.SetStatus(other.ID, anthropictest.StatusActive)
		_ = s.SetStatus(other.ID, anthropictest.StatusInactive)
		s.AddKey("", anthropictest.StatusInactive)
		_ = s.Stats()
	}
	wg.Wait()
	if codes[529] != 37 || codes[200] != 200-37 {
		t.Fatalf("codes %v, want 37 529s and 163 200s", codes)
	}
	if st := s.Stats(); st.Requests != 200 || st.Keys[k.ID].Served != 163 || st.Keys[k.ID].Failed != 37 {
		t.Fatalf("stats %+v", st)
	}
}

// TestLatency: a request under latency gives up with its client, and
// SetLatency(0) serves at once again.
func TestLatency(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.WithLatency(time.Hour))
	k := s.AddKey("", anthropictest.StatusActive)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL()+"/v1/models", nil)
	for k, v := range headers(k.Value) {
		req.Header.Set(k, v)
	}
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a request under an hour of latency answered")
	}
	s.SetLatency(0)
	if resp, _ := call(t, "GET", s.URL()+"/v1/models", headers(k.Value), ""); resp.StatusCode != 200 {
		t.Fatalf("after SetLatency(0): %d", resp.StatusCode)
	}
}
