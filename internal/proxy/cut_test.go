package proxy_test

import (
	"bufio"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/proxy"
)

// A stream's opening event: 1200 input tokens of claude-opus-4-7, billed
// whatever happens to the rest of the stream.
const cutStart = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_cut\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-7\",\"content\":[],\"usage\":{\"input_tokens\":1200,\"output_tokens\":1}}}\n\n"

// budgetEnv is a proxy on up with a day's token budget over every request.
func budgetEnv(t *testing.T, up *upstream) *env {
	return newEnv(t, up, func(o *proxy.Options) {
		o.Budgets = []proxy.Budget{{Name: "day", Tokens: 1_000_000, Window: 24 * time.Hour}}
	})
}

// waitCounted waits until the proxy has counted the input tokens of a cut
// stream in the metrics and in the budget.
func waitCounted(t *testing.T, e *env, in float64) {
	t.Helper()
	waitFor(t, func() bool {
		text := e.scrape(t)
		return metric(t, text, "keywarden_sidecar_tokens_total", "route", "/", "client", "local", "model", "claude-opus-4-7", "kind", "input") == in &&
			metric(t, text, "keywarden_sidecar_budget_used_ratio", "budget", "day") > 0
	})
}

// TestClientGoneMidStreamIsCounted: a client that leaves after
// message_start does not take the stream's tokens out of the accounting
// (they were billed), nor out of its budgets.
func TestClientGoneMidStreamIsCounted(t *testing.T) {
	up := newUpstream(t, keyA)
	up.fake.SetStream(50, 50*time.Millisecond) // a long stream
	e := budgetEnv(t, up)
	body := messageBody("claude-opus-4-7", true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/messages", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "event: message_start") {
	}
	cancel() // the client leaves mid-stream
	resp.Body.Close()
	waitCounted(t, e, float64(len(body)/4))
}

// TestUpstreamCutMidStreamIsCounted: an upstream that breaks off after
// message_start leaves its tokens counted too.
func TestUpstreamCutMidStreamIsCounted(t *testing.T) {
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, cutStart)
		w.(http.Flusher).Flush()
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close() // no message_stop, no terminating chunk
		}
	})
	e := budgetEnv(t, up)
	resp, err := e.srv.Client().Post(e.srv.URL+"/v1/messages", "application/json", strings.NewReader(messageBody("claude-opus-4-7", true)))
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	waitCounted(t, e, 1200)
}

// TestCompressedAnswersAreMetered: a client asking for gzip (the SDKs'
// HTTP clients do by default) still has its Messages call counted: the
// sidecar asks the upstream for identity, which answers plainly; a GET keeps
// the client's compression.
func TestCompressedAnswersAreMetered(t *testing.T) {
	fake := anthropictest.New()
	h := fake.Handler()
	var mu sync.Mutex
	seen := map[string]string{}
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Method] = r.Header.Get("Accept-Encoding")
		mu.Unlock()
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			h.ServeHTTP(w, r)
			return
		}
		// As the Claude API does for a client that accepts it.
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		h.ServeHTTP(gzipWriter{w, zw}, r)
		zw.Close()
	})
	up.fake, up.ids = fake, map[string]string{}
	up.Add(keyA)
	e := newEnv(t, up, nil)
	body := messageBody("claude-opus-4-7", false)
	code, hdr, resp := e.do(t, "POST", "/v1/messages", body, "Accept-Encoding", "gzip")
	if code != 200 || hdr.Get("Content-Encoding") != "" || !strings.Contains(resp, `"usage"`) {
		t.Fatalf("got %d %v %q", code, hdr, resp)
	}
	if got := metric(t, e.scrape(t), "keywarden_sidecar_tokens_total", "route", "/", "client", "local", "model", "claude-opus-4-7", "kind", "input"); got != float64(len(body)/4) {
		t.Fatalf("input tokens of a gzip-accepting call: %v", got)
	}
	if code, hdr, _ := e.do(t, "GET", "/v1/models", "", "Accept-Encoding", "gzip"); code != 200 || hdr.Get("Content-Encoding") != "gzip" {
		t.Fatalf("GET: %d %v", code, hdr)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["POST"] != "identity" || seen["GET"] != "gzip" {
		t.Fatalf("the upstream saw Accept-Encoding %q", seen)
	}
}

// gzipWriter compresses what the fake writes.
type gzipWriter struct {
	http.ResponseWriter
	zw *gzip.Writer
}

func (g gzipWriter) Write(p []byte) (int, error) { return g.zw.Write(p) }
func (g gzipWriter) Flush() {
	g.zw.Flush()
	g.ResponseWriter.(http.Flusher).Flush()
}
