package anthropictest

import (
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// WIFStore sets up a federation rule on s for a workload whose identity
// token (a JWT minted by a test issuer, with the rule's audience) is in a
// file, and returns the wif:// store URL that exchanges it at s, the rule,
// and the assertion (a secret: tests scan output for it).
func (s *Server) WIFStore(t testing.TB, lifetime time.Duration) (store string, rule FederationRule, assertion string) {
	t.Helper()
	const aud = "https://api.anthropic.com"
	iss := NewIssuer("https://token.actions.githubusercontent.com")
	rule = s.AddFederationRule(FederationRule{OrganizationID: "org_1", Issuer: iss, Audience: aud, TokenLifetime: lifetime})
	assertion = iss.Mint(Claims{Subject: "repo:acme/app:ref:refs/heads/main", Audience: aud})
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(assertion), 0o600); err != nil {
		t.Fatal(err)
	}
	store = "wif://" + rule.ID + "?organization_id=org_1&base_url=" + url.QueryEscape(s.URL()) + "&token_file=" + url.QueryEscape(file)
	return store, rule, assertion
}
