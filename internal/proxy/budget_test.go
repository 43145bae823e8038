package proxy_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/keywarden/keywarden/internal/proxy"
)

// clock is a settable time for budgets.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func TestBudgetsRefuseAndReset(t *testing.T) {
	clk := &clock{t: time.Date(2026, 12, 2, 10, 59, 15, 0, time.UTC)}
	e := newEnv(t, newUsageUpstream(t), func(o *proxy.Options) {
		o.Clients = []proxy.Client{{Name: "payments", Token: tokPayments}, {Name: "search", Token: tokSearch}}
		o.Budgets = []proxy.Budget{
			{Name: "payments-hourly", Client: "payments", Tokens: 100, Window: time.Hour},
			{Name: "all-daily-usd", USD: 1, Window: 24 * time.Hour},
		}
	})
	proxy.SetClock(e.p, clk.now)
	body := messageBody("claude-sonnet-4-6", false)
	pay := []string{"x-api-key", tokPayments}
	if code, _, resp := e.do(t, "POST", "/v1/messages", body, pay...); code != 200 {
		t.Fatalf("first request: %d %s", code, resp)
	}
	// More than 100 tokens are spent: payments is refused until 11:00.
	code, hdr, resp := e.do(t, "POST", "/v1/messages", body, pay...)
	if code != 429 || apiErrorType(t, resp) != "rate_limit_error" || !strings.Contains(resp, `budget \"payments-hourly\" (100 tokens per hour) is spent`) || hdr.Get("Retry-After") != "45" {
		t.Fatalf("over budget: %d %q retry-after %q", code, resp, hdr.Get("Retry-After"))
	}
	if v, ok := hdr["X-Should-Retry"]; ok {
		t.Fatalf("a reset 45 s away sends x-should-retry %q; the SDKs should wait it out", v)
	}
	// Another client is not under that budget.
	if code, _, resp := e.do(t, "POST", "/v1/messages", body, "x-api-key", tokSearch); code != 200 {
		t.Fatalf("search: %d %s", code, resp)
	}
	text := e.scrape(t)
	if metric(t, text, "keywarden_sidecar_budget_refused_total", "budget", "payments-hourly") != 1 || metric(t, text, "keywarden_sidecar_budget_used_ratio", "budget", "payments-hourly") < 1 {
		t.Fatalf("budget metrics:\n%s", text)
	}
	if r := metric(t, text, "keywarden_sidecar_budget_used_ratio", "budget", "all-daily-usd"); r <= 0 || r >= 1 {
		t.Fatalf("usd budget used %v", r)
	}
	// The window resets at 11:00.
	clk.set(time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC))
	if code, _, resp := e.do(t, "POST", "/v1/messages", body, pay...); code != 200 {
		t.Fatalf("after the reset: %d %s", code, resp)
	}
	// Spent again at 11:00: the reset is an hour away, too long for an SDK
	// to sleep on; x-should-retry: false makes the official SDK fail at
	// once with the 429 instead of waiting for retry-after (an hour).
	code, hdr, _ = e.do(t, "POST", "/v1/messages", body, pay...)
	if code != 429 || hdr.Get("Retry-After") != "3600" || hdr.Get("X-Should-Retry") != "false" {
		t.Fatalf("spent for an hour: %d retry-after %q x-should-retry %q", code, hdr.Get("Retry-After"), hdr.Get("X-Should-Retry"))
	}
	client := anthropic.NewClient(option.WithBaseURL(e.srv.URL), option.WithAPIKey(tokPayments), option.WithMaxRetries(2))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // only against a hang
	defer cancel()
	_, err := client.Messages.New(ctx, anthropic.MessageNewParams{
		Model: anthropic.ModelClaudeSonnet4_5, MaxTokens: 16,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hi"))},
	})
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 {
		t.Fatalf("the SDK's call over a spent hourly budget: %v, want the 429 at once", err)
	}
}

func TestBudgetUSDPerRoute(t *testing.T) {
	clk := &clock{t: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}
	e := newEnv(t, newUsageUpstream(t), func(o *proxy.Options) {
		// Each request costs about (input×3 + 8×15 + 100×3.75 + 2000×0.3)/1e6 USD, about 0.0011.
		o.Budgets = []proxy.Budget{{Name: "root-minute", Route: "/", USD: 0.002, Window: time.Minute}}
	})
	proxy.SetClock(e.p, clk.now)
	body := messageBody("claude-sonnet-4-6", false)
	var codes []string
	for range 3 {
		code, _, _ := e.do(t, "POST", "/v1/messages", body, "x-api-key", "p")
		codes = append(codes, strconv.Itoa(code))
	}
	if got := strings.Join(codes, ","); got != "200,200,429" {
		t.Fatalf("codes %s, want 200,200,429", got)
	}
}

func TestBudgetsRefused(t *testing.T) {
	up := newUsageUpstream(t)
	for _, b := range []proxy.Budget{
		{Name: "x", Tokens: 1, Window: 2 * time.Hour},
		{Name: "x", Window: time.Hour},
		{Name: "x", Tokens: 1, USD: 1, Window: time.Hour},
		{Name: "bad name", Tokens: 1, Window: time.Hour},
	} {
		e := newEnv(t, up, nil)
		if _, err := proxy.New(proxy.Options{Routes: []proxy.Route{{Prefix: "/", Key: "prod", Source: e.src}}, Budgets: []proxy.Budget{b}}); err == nil {
			t.Errorf("%+v taken", b)
		}
	}
}
