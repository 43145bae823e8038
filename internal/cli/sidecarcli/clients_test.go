package sidecarcli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
