package sidecarcli_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/cli/sidecarcli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/usage"
)

func TestOptionsClientsAndPrices(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "payments.token")
	os.WriteFile(tok, []byte("payments-token-0123456789\n"), 0o600)
	t.Setenv("KW_TEST_SEARCH_TOKEN", "search-token-0123456789")
	c, err := config.Parse([]byte(fmt.Sprintf(`
keys: {prod: {store: "env://P"}}
sidecar:
  listen: "0.0.0.0:8787"
  clients:
    - {name: payments, token_file: %s, rate_limit: {rps: 2, concurrency: 3}}
    - {name: search, token_env: KW_TEST_SEARCH_TOKEN}
  usage:
    prices:
      claude-sonnet-5: {input: 3, output: 15}
  budgets:
    - {name: pay-day, client: payments, usd: 20, per: day}
`, tok)))
	if err != nil {
		t.Fatal(err)
	}
	o, err := sidecarcli.Options(c)
	if err != nil {
		t.Fatal(err)
	}
	want := []proxy.Client{
		{Name: "payments", Token: "payments-token-0123456789", RPS: 2, Concurrency: 3},
		{Name: "search", Token: "search-token-0123456789"},
	}
	if len(o.Budgets) != 1 || o.Budgets[0] != (proxy.Budget{Name: "pay-day", Client: "payments", USD: 20, Window: 24 * time.Hour}) {
		t.Fatalf("budgets %+v", o.Budgets)
	}
	if fmt.Sprint(o.Clients) != fmt.Sprint(want) || o.Prices["claude-sonnet-5"] != (usage.Price{Input: 3, Output: 15}) {
		t.Fatalf("clients %+v prices %+v", o.Clients, o.Prices)
	}
	// A short environment token is refused, and the error names the
	// setting, never the value.
	t.Setenv("KW_TEST_SEARCH_TOKEN", "short-secret")
	if _, err := sidecarcli.Options(c); err == nil || !strings.Contains(err.Error(), "sidecar.clients[1].token_env") || strings.Contains(err.Error(), "short-secret") {
		t.Fatalf("got %v", err)
	}
	os.Chmod(tok, 0o644)
	if _, err := sidecarcli.Options(c); err == nil || !strings.Contains(err.Error(), "sidecar.clients[0].token_file") {
		t.Fatalf("got %v", err)
	}
}

// TestCheckReadsClientTokens: `keywarden check` fails (exit 2) on a config
// whose client tokens the sidecar would refuse at its start, naming the
// setting and never the token; it passes the same config once fixed.
func TestCheckReadsClientTokens(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KW_CHECK_KEY", keyA)
	tokA, tokB := filepath.Join(dir, "a.token"), filepath.Join(dir, "b.token")
	const shared = "shared-client-token-0123456789"
	os.WriteFile(tokA, []byte(shared+"\n"), 0o600)
	os.WriteFile(tokB, []byte(shared), 0o600)
	cfg := filepath.Join(dir, "kw.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
keys: {prod: {store: "env://KW_CHECK_KEY"}}
sidecar:
  listen: "0.0.0.0:8787"
  clients:
    - {name: a, token_file: %s}
    - {name: b, token_file: %s}
`, tokA, tokB)), 0o600)
	for _, tc := range []struct {
		name  string
		setup func()
		want  string // "" : passes
	}{
		{"two clients share a token", func() {}, "clients a and b have the same token"},
		{"a short token", func() { os.WriteFile(tokB, []byte("short-b"), 0o600) }, "sidecar.clients[1].token_file"},
		{"a token readable by others", func() {
			os.WriteFile(tokB, []byte("client-b-token-0123456789"), 0o600)
			os.Chmod(tokA, 0o644)
		}, "sidecar.clients[0].token_file"},
		{"a missing token file", func() { os.Chmod(tokA, 0o600); os.Remove(tokB) }, "sidecar.clients[1].token_file"},
		{"fixed", func() { os.WriteFile(tokB, []byte("client-b-token-0123456789"), 0o600) }, ""},
	} {
		tc.setup()
		out, err := run(t, "check", "--config", cfg)
		text := out.String()
		if err != nil {
			text += err.Error()
		}
		if strings.Contains(text, shared) || strings.Contains(text, "short-b") || strings.Contains(text, keyA) {
			t.Fatalf("%s: a token or the key in the output:\n%s", tc.name, text)
		}
		if tc.want == "" {
			if err != nil {
				t.Fatalf("%s: %v\n%s", tc.name, err, text)
			}
			continue
		}
		var ee *cli.ExitError
		if !errors.As(err, &ee) || ee.Code != cli.ExitConfig || !strings.Contains(text, tc.want) {
			t.Errorf("%s: got %v, output %q; want exit %d naming %q", tc.name, err, text, cli.ExitConfig, tc.want)
		}
	}
}
