package proxy_test

import (
	"fmt"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/usage"
)

// Cache token counts the usage upstream reports on every answer: writes
// to the 5-minute and the 1-hour cache, and reads.
const (
	cacheWrite5m = 60
	cacheWrite1h = 40
	cacheWrite   = cacheWrite5m + cacheWrite1h
	cacheRead    = 2000
)

// rateStart is the fake's clock: each rate-limit window ends a window's
// length after it.
var rateStart = time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)

// rateLimits are the fake's limits: resource i has limit 1000·(i+1) and
// a window of i+1 minutes.
var rateLimits = anthropictest.RateLimits{
	Requests:     anthropictest.RateLimit{Limit: 1000, Window: time.Minute},
	Tokens:       anthropictest.RateLimit{Limit: 20000, Window: 2 * time.Minute},
	InputTokens:  anthropictest.RateLimit{Limit: 30000, Window: 3 * time.Minute},
	OutputTokens: anthropictest.RateLimit{Limit: 4000, Window: 4 * time.Minute},
}

// newUsageUpstream is the fake Claude API with keyA active, reporting cache
// usage on every Messages answer and the anthropic-ratelimit-* headers on
// every successful one.
func newUsageUpstream(t *testing.T) *upstream {
	t.Helper()
	fake := anthropictest.New(
		anthropictest.WithCacheUsage("", anthropictest.CacheUsage{Read: cacheRead, Write5m: cacheWrite5m, Write1h: cacheWrite1h}),
		anthropictest.WithRateLimits(rateLimits),
		anthropictest.WithClock(func() time.Time { return rateStart }),
	)
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	u := &upstream{fake: fake, srv: srv, ids: map[string]string{}}
	u.Add(keyA)
	return u
}

// metric returns the value of the series name{labels} in a scrape, 0
// when absent.
func metric(t *testing.T, text, name string, labels ...string) float64 {
	t.Helper()
	var pairs []string
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, labels[i]+`="`+labels[i+1]+`"`)
	}
	sort.Strings(pairs)
	series := name
	if len(pairs) > 0 {
		series += "{" + strings.Join(pairs, ",") + "}"
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func messageBody(model string, stream bool) string {
	return fmt.Sprintf(`{"model":%q,"max_tokens":16,"stream":%v,"messages":[{"role":"user","content":"Hi"}]}`, model, stream)
}

func TestUsageTokensAndCost(t *testing.T) {
	for _, tc := range []struct {
		name, model, label string
		stream             bool
		output             float64
		price              usage.Price // zero: unpriced
	}{
		{"json", "claude-sonnet-4-6", "claude-sonnet-4-6", false, 8, usage.Price{Input: 3, Output: 15}},
		{"sse dated snapshot", "claude-haiku-4-5-20251001", "claude-haiku-4-5", true, 3, usage.Price{Input: 1, Output: 5}},
		{"sse unpriced folds", "claude-sonnet-5", usage.OtherModel, true, 3, usage.Price{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, newUsageUpstream(t), nil)
			body := messageBody(tc.model, tc.stream)
			for range 2 {
				code, _, resp := e.do(t, "POST", "/v1/messages", body, "x-api-key", "placeholder")
				if code != 200 || !strings.Contains(resp, tc.model) {
					t.Fatalf("got %d %s", code, resp)
				}
			}
			in := float64(len(body) / 4) // the fake's estimate
			text := e.scrape(t)
			want := map[string]float64{"input": 2 * in, "output": 2 * tc.output, "cache_creation": 2 * cacheWrite, "cache_read": 2 * cacheRead}
			for kind, n := range want {
				if got := metric(t, text, "keywarden_sidecar_tokens_total", "route", "/", "client", "local", "model", tc.label, "kind", kind); got != n {
					t.Errorf("%s tokens: got %v, want %v", kind, got, n)
				}
			}
			cost := metric(t, text, "keywarden_sidecar_cost_usd_total", "route", "/", "client", "local", "model", tc.label)
			unpriced := metric(t, text, "keywarden_sidecar_unpriced_tokens_total", "route", "/", "client", "local", "model", tc.label)
			p := tc.price
			wantCost := 2 * (in*p.Input + tc.output*p.Output + cacheWrite5m*1.25*p.Input + cacheWrite1h*2*p.Input + cacheRead*0.1*p.Input) / 1e6
			if p == (usage.Price{}) {
				if cost != 0 || unpriced != 2*(in+tc.output+cacheWrite+cacheRead) {
					t.Errorf("unpriced model: cost %v, unpriced tokens %v", cost, unpriced)
				}
			} else if unpriced != 0 || cost < wantCost*(1-1e-9) || cost > wantCost*(1+1e-9) {
				t.Errorf("cost %v, want %v (unpriced %v)", cost, wantCost, unpriced)
			}
			if got := metric(t, text, "keywarden_sidecar_client_requests_total", "route", "/", "client", "local", "error_type", "none"); got != 2 {
				t.Errorf("requests: got %v, want 2", got)
			}
			if strings.Contains(text, `model="`+tc.model+`"`) && tc.label != tc.model {
				t.Errorf("the model label is not folded:\n%s", text)
			}
			e.assertNoKeys(t)
		})
	}
}

func TestUsagePriceOverride(t *testing.T) {
	e := newEnv(t, newUsageUpstream(t), func(o *proxy.Options) {
		o.Prices = map[string]usage.Price{"claude-sonnet-5": {Input: 2, Output: 10, CacheWrite: 1, CacheWrite1h: 3, CacheRead: 1}}
	})
	body := messageBody("claude-sonnet-5", false)
	if code, _, resp := e.do(t, "POST", "/v1/messages", body, "x-api-key", "p"); code != 200 {
		t.Fatalf("got %d %s", code, resp)
	}
	in := float64(len(body) / 4)
	want := (in*2 + 8*10 + cacheWrite5m + 3*cacheWrite1h + cacheRead) / 1e6
	if got := metric(t, e.scrape(t), "keywarden_sidecar_cost_usd_total", "route", "/", "client", "local", "model", "claude-sonnet-5"); got < want*(1-1e-9) || got > want*(1+1e-9) {
		t.Fatalf("cost %v, want %v", got, want)
	}
}

func TestUsageErrorTypes(t *testing.T) {
	up := newUsageUpstream(t)
	e := newEnv(t, up, nil)
	up.fake.FailNext(1, 529, "")
	up.fake.FailNext(1, 402, "")
	for range 2 {
		e.do(t, "POST", "/v1/messages", messageBody("claude-opus-4-7", false), "x-api-key", "p")
	}
	up.fake.FailStreams(1, 2, 529)
	code, _, body := e.do(t, "POST", "/v1/messages", messageBody("claude-opus-4-7", true), "x-api-key", "p")
	if code != 200 || !strings.Contains(body, "event: error") {
		t.Fatalf("got %d %s", code, body)
	}
	// count_tokens: a request, never tokens.
	if code, _, body := e.do(t, "POST", "/v1/messages/count_tokens", messageBody("claude-opus-4-7", false), "x-api-key", "p"); code != 200 {
		t.Fatalf("count_tokens: %d %s", code, body)
	}
	text := e.scrape(t)
	for typ, n := range map[string]float64{"overloaded_error": 2, "billing_error": 1, "none": 1} {
		if got := metric(t, text, "keywarden_sidecar_client_requests_total", "route", "/", "client", "local", "error_type", typ); got != n {
			t.Errorf("%s: got %v, want %v", typ, got, n)
		}
	}
	// The failed stream's message_start counted its input; the error
	// answers and count_tokens counted none.
	in := float64(len(messageBody("claude-opus-4-7", true)) / 4)
	if got := metric(t, text, "keywarden_sidecar_tokens_total", "route", "/", "client", "local", "model", "claude-opus-4-7", "kind", "input"); got != in {
		t.Errorf("input tokens %v, want %v", got, in)
	}
}

func TestRateLimitHeadroomGauges(t *testing.T) {
	e := newEnv(t, newUsageUpstream(t), nil)
	body := messageBody("claude-opus-4-7", false)
	for range 2 {
		if code, _, resp := e.do(t, "POST", "/v1/messages", body, "x-api-key", "p"); code != 200 {
			t.Fatalf("got %d %s", code, resp)
		}
	}
	// What two answers used: input counts input_tokens and cache writes,
	// output its 8 tokens (the fake's default answer).
	in, out := float64(len(body)/4+cacheWrite), 8.0
	used := [4]float64{1, in + out, in, out}
	limits := [4]anthropictest.RateLimit{rateLimits.Requests, rateLimits.Tokens, rateLimits.InputTokens, rateLimits.OutputTokens}
	text := e.scrape(t)
	for i, res := range []string{"requests", "tokens", "input_tokens", "output_tokens"} {
		lbl := []string{"key", "prod", "resource", res}
		l := limits[i]
		if got := metric(t, text, "keywarden_upstream_ratelimit_limit", lbl...); got != float64(l.Limit) {
			t.Errorf("%s limit %v, want %v", res, got, l.Limit)
		}
		if got, want := metric(t, text, "keywarden_upstream_ratelimit_remaining", lbl...), float64(l.Limit)-2*used[i]; got != want {
			t.Errorf("%s remaining %v, want %v", res, got, want)
		}
		if got, want := metric(t, text, "keywarden_upstream_ratelimit_reset_timestamp_seconds", lbl...), float64(rateStart.Add(l.Window).Unix()); got != want {
			t.Errorf("%s reset %v, want %v", res, got, want)
		}
	}
}

func TestModelLabelsBounded(t *testing.T) {
	e := newEnv(t, newUsageUpstream(t), nil)
	for _, m := range []string{"claude-sonnet-5", "claude-opus-5", "claude-fable-5", "claude-mythos-5-1", "claude-opus-4-7"} {
		if code, _, body := e.do(t, "POST", "/v1/messages", messageBody(m, false), "x-api-key", "p"); code != 200 {
			t.Fatalf("%s: %d %s", m, code, body)
		}
	}
	models := map[string]bool{}
	for _, m := range regexp.MustCompile(`keywarden_sidecar_tokens_total\{[^}]*model="([^"]*)"`).FindAllStringSubmatch(e.scrape(t), -1) {
		models[m[1]] = true
	}
	if len(models) != 2 || !models[usage.OtherModel] || !models["claude-opus-4-7"] {
		t.Fatalf("model labels %v, want other and claude-opus-4-7", models)
	}
}
