package proxy_test

import (
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/settings"
)

const (
	tokPayments = "client-token-PAYMENTS-0123456789"
	tokSearch   = "client-token-SEARCH-0123456789"
	tokDefault  = "client-token-DEFAULT-0123456789"
)

func TestNamedClients(t *testing.T) {
	e := newEnv(t, newUsageUpstream(t), func(o *proxy.Options) {
		o.ClientToken = tokDefault
		o.Clients = []proxy.Client{
			{Name: "payments", Token: tokPayments, RPS: 0.001, Burst: 1}, // one request, then 429
			{Name: "search", Token: tokSearch},
		}
	})
	body := messageBody("claude-sonnet-4-6", false)
	for _, tc := range []struct {
		hdr  []string
		want int
	}{
		{[]string{"x-api-key", tokPayments}, 200},
		{[]string{"authorization", "Bearer " + tokSearch}, 200},
		{[]string{"x-keywarden-token", tokDefault}, 200},
		{[]string{"x-api-key", tokSearch}, 200},
		{[]string{"x-api-key", tokPayments}, 429}, // the client's own rate limit, whatever its address
		{[]string{"x-api-key", "client-token-UNKNOWN-0123456789"}, 401},
		{nil, 401},
	} {
		if code, _, resp := e.do(t, "POST", "/v1/messages", body, tc.hdr...); code != tc.want {
			t.Fatalf("%v: got %d %s, want %d", tc.hdr, code, resp, tc.want)
		}
	}
	text := e.scrape(t)
	for client, n := range map[string]float64{"payments": 1, "search": 2, settings.DefaultClient: 1} {
		if got := metric(t, text, "keywarden_sidecar_client_requests_total", "route", "/", "client", client, "error_type", "none"); got != n {
			t.Errorf("client %s: %v requests, want %v", client, got, n)
		}
		if got := metric(t, text, "keywarden_sidecar_tokens_total", "route", "/", "client", client, "model", "claude-sonnet-4-6", "kind", "output"); got != 8*n {
			t.Errorf("client %s: %v output tokens, want %v", client, got, 8*n)
		}
	}
	if strings.Contains(text, `client="local"`) {
		t.Error("a sidecar with tokens counted a local client")
	}
	// No client token in a label or a log line, nor a key.
	logs := e.logs.String()
	for _, tok := range []string{"PAYMENTS", "SEARCH-0123", "DEFAULT-0123", "UNKNOWN"} {
		if strings.Contains(text, tok) || strings.Contains(logs, tok) {
			t.Errorf("a metric or log line holds client token %s", tok)
		}
	}
	e.assertNoKeys(t)
}

func TestClientsRefused(t *testing.T) {
	up := newUsageUpstream(t)
	for _, tc := range []struct {
		name    string
		o       func(*proxy.Options)
		want    string
		secrets []string
	}{
		{"same token", func(o *proxy.Options) {
			o.Clients = []proxy.Client{{Name: "a", Token: tokSearch}, {Name: "b", Token: tokSearch}}
		}, "same token", []string{tokSearch}},
		{"default twice", func(o *proxy.Options) {
			o.ClientToken = tokDefault
			o.Clients = []proxy.Client{{Name: settings.DefaultClient, Token: tokSearch}}
		}, "twice", nil},
		{"local", func(o *proxy.Options) { o.Clients = []proxy.Client{{Name: settings.LocalClient, Token: tokSearch}} }, "reserved", nil},
		{"no token", func(o *proxy.Options) { o.Clients = []proxy.Client{{Name: "a"}} }, "no token", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, up, nil) // for its Source
			o := proxy.Options{Routes: []proxy.Route{{Prefix: "/", Key: "prod", Source: e.src}}}
			tc.o(&o)
			_, err := proxy.New(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			for _, s := range tc.secrets {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("the error holds a token: %v", err)
				}
			}
		})
	}
}

func TestLocalClientWithoutTokens(t *testing.T) {
	e := newEnv(t, newUsageUpstream(t), nil)
	if code, _, body := e.do(t, "GET", "/v1/models", "", "x-api-key", "placeholder"); code != 200 {
		t.Fatalf("got %d %s", code, body)
	}
	if got := metric(t, e.scrape(t), "keywarden_sidecar_client_requests_total", "route", "/", "client", settings.LocalClient, "error_type", "none"); got != 1 {
		t.Fatalf("local requests %v, want 1", got)
	}
}
