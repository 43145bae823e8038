package config_test

import (
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/proxy/usage"
)

func TestSidecarClientsAndPrices(t *testing.T) {
	c, err := config.Parse([]byte(`
keys: {prod: {store: "env://P"}}
sidecar:
  listen: 0.0.0.0:8787
  clients:
    - {name: payments, token_file: /etc/kw/payments, rate_limit: {rps: 5}}
    - {name: search, token_env: SEARCH_TOKEN}
  usage: {prices: {claude-sonnet-5: {input: 3, output: 15, cache_read: 0.2, cache_write_1h: 7}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sidecar
	if len(s.Clients) != 2 || s.Clients[0].Name != "payments" || *s.Clients[0].RateLimit.RPS != 5 || s.Clients[1].TokenEnv != "SEARCH_TOKEN" ||
		s.Usage.Prices["claude-sonnet-5"] != (config.Price{Input: 3, Output: 15, CacheRead: 0.2, CacheWrite1h: 7}) ||
		s.Usage.Prices["claude-sonnet-5"].UsagePrice() != (usage.Price{Input: 3, Output: 15, CacheRead: 0.2, CacheWrite1h: 7}) {
		t.Fatalf("got %+v", s)
	}
	for _, tc := range []struct{ yaml, want string }{
		{`clients: [{name: a, token_file: /f, token_env: E}]`, "sidecar.clients[0]: set token_file"},
		{`clients: [{name: a}]`, "sidecar.clients[0]: set token_file"},
		{`clients: [{name: local, token_file: /f}]`, "reserved"},
		{`clients: [{name: "a b", token_file: /f}]`, "sidecar.clients[0].name"},
		{`clients: [{name: a, token_file: /f}, {name: a, token_env: E}]`, "also clients[0]'s name"},
		{`{client_token_file: /t, clients: [{name: default, token_file: /f}]}`, "client of client_token_file"},
		{`clients: [{name: a, token_env: "1X"}]`, "token_env"},
		{`clients: [{name: a, token_file: /f, rate_limit: {rps: -1}}]`, "sidecar.clients[0].rate_limit.rps"},
		{`clients: [{name: a, token_file: /f, token: inline}]`, `unknown field "token"`},
		{`usage: {prices: {other: {input: 1, output: 1}}}`, "sidecar.usage.prices"},
		{`usage: {prices: {m: {input: -1, output: 1}}}`, "sidecar.usage.prices.m"},
		{`usage: {prices: {m: {}}}`, "sidecar.usage.prices.m"},
		{`usage: {prices: {m: {input: 1, output: 1, cache_write_1h: -2}}}`, "sidecar.usage.prices.m"},
		{`usage: {prices: {m: {input: 1, output: 1, cache_write_1h: .nan}}}`, "sidecar.usage.prices.m"},
		{`listen: 0.0.0.0:1`, "not a loopback address"},
	} {
		doc := "keys: {prod: {store: \"env://P\"}}\nsidecar: " + tc.yaml
		if !strings.HasPrefix(tc.yaml, "{") {
			doc = "keys: {prod: {store: \"env://P\"}}\nsidecar: {" + tc.yaml + "}"
		}
		if _, err := config.Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
