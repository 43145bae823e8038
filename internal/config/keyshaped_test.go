package config_test

import (
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/providers/providertest"
)

// TestNamesShapedLikeKeys: a key pasted by mistake as a name the sidecar
// prints as it is — a key's name, a client's or a budget's (label values
// of /metrics, lines of /readyz, check's table), a route's prefix (the
// route label) — is refused, and the refusal does not quote it. A name
// that only holds "sk-" inside a word is no key, and is kept.
func TestNamesShapedLikeKeys(t *testing.T) {
	key := string(providertest.FakeKey())
	for _, doc := range []string{
		"keys: {" + key + ": {store: \"env://P\"}}",
		"keys: {prod: {store: \"env://P\"}}\nsidecar: {clients: [{name: " + key + ", token_env: T}]}",
		"keys: {prod: {store: \"env://P\"}}\nsidecar: {budgets: [{name: " + key + ", tokens: 5, per: hour}]}",
		"keys: {prod: {store: \"env://P\"}}\nsidecar: {routes: [{prefix: /" + key + ", key: prod}]}",
		"keys: {prod: {store: \"env://P\"}}\nsidecar: {routes: [{prefix: /team/" + key + ", key: prod}]}",
	} {
		_, err := config.Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), "shaped like a key") || strings.Contains(err.Error(), key[13:]) {
			shown := strings.ReplaceAll(strings.ReplaceAll(doc, key[13:], "<the key>"), "\n", `\n`)
			got := "accepted"
			if err != nil {
				got = strings.ReplaceAll(err.Error(), key[13:], "<the key>")
			}
			t.Errorf("Parse(%s): %s; want a refusal naming the shape and not the key", shown, got)
		}
	}
	c, err := config.Parse([]byte(`
keys: {task-summary-prod: {store: "env://P"}}
sidecar:
  clients: [{name: risk-scoring-service, token_env: T}]
  budgets: [{name: desk-assistant-daily, tokens: 5, per: day}]
  routes: [{prefix: /disk-cleanup-jobs, key: task-summary-prod}]
`))
	if err != nil {
		t.Fatalf("names with sk- inside a word: %v", err)
	}
	if c.Sidecar.Clients[0].Name != "risk-scoring-service" {
		t.Fatalf("got %+v", c.Sidecar.Clients)
	}
}
