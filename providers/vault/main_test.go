package vault_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/vault"
	"github.com/keywarden/keywarden/providers/vault/vaulttest"
)

func TestMain(m *testing.M) { vaulttest.Main(m) }

// uniqueName returns a fresh secret name; tests share one server.
func uniqueName(kind string) string { return providertest.UniqueName("anthropic/kwt-" + kind) }

// token and fakeKey make rotation tokens and Anthropic-shaped fake keys.
var token, fakeKey = providertest.Token, providertest.FakeKey

// fingerprint is what tests may log about a key.
func fingerprint(v []byte) string {
	h := sha256.Sum256(v)
	return hex.EncodeToString(h[:4])
}

// clientWith returns a new client for the test server holding token.
func clientWith(t *testing.T, tok string) *api.Client {
	t.Helper()
	addr, ca, _ := vaulttest.Start(t)
	c, err := vaulttest.NewClient(addr, ca, tok)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newStore opens a driver on client c (a root client when nil) with opts,
// closed at the end of the test.
func newStore(t *testing.T, c *api.Client, opts vault.Options) *vault.Store {
	t.Helper()
	if c == nil {
		c = vaulttest.Client(t)
	}
	opts.Client = c
	s, err := vault.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("vault.New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// putByHand writes value as `vault kv put secret/NAME value=...` would.
func putByHand(ctx context.Context, c *api.Client, name string, value []byte) error {
	_, err := c.KVv2(vault.DefaultMount).Put(ctx, name, map[string]any{"value": string(value)})
	return err
}

// writePolicies loads deploy/policies/vault-*.hcl into the server as
// keywarden-reader and keywarden-rotator.
func writePolicies(t *testing.T) {
	t.Helper()
	root := vaulttest.Client(t)
	for _, p := range []string{"reader", "rotator"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "policies", "vault-"+p+".hcl"))
		if err != nil {
			t.Fatal(err)
		}
		if err := root.Sys().PutPolicyWithContext(context.Background(), "keywarden-"+p, string(b)); err != nil {
			t.Fatalf("write policy %s: %v", p, err)
		}
	}
}

// tokenWith creates a token with policies (and the default policy).
func tokenWith(t *testing.T, ttl string, policies ...string) string {
	t.Helper()
	sec, err := vaulttest.Client(t).Auth().Token().CreateWithContext(context.Background(), &api.TokenCreateRequest{Policies: policies, TTL: ttl})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return sec.Auth.ClientToken
}

// writeFile writes s into a new file in a temp dir and returns its path.
func writeFile(t *testing.T, name, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
