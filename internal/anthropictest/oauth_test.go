package anthropictest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
)

const (
	fedOrg = "org_01fake"
	fedAud = "https://api.anthropic.com"
	fedSub = "system:serviceaccount:ai:app"
)

type fedFixture struct {
	srv   *anthropictest.Server
	iss   *anthropictest.Issuer
	rule  anthropictest.FederationRule
	clock *atomic.Int64 // unix nanos
}

func newFed(t *testing.T, life time.Duration) *fedFixture {
	t.Helper()
	clock := new(atomic.Int64)
	clock.Store(time.Now().UnixNano())
	srv := anthropictest.Start(t, anthropictest.WithClock(func() time.Time { return time.Unix(0, clock.Load()) }))
	iss := anthropictest.NewIssuer("https://issuer.example")
	rule := srv.AddFederationRule(anthropictest.FederationRule{OrganizationID: fedOrg, Issuer: iss, Audience: fedAud, Subject: fedSub, TokenLifetime: life})
	return &fedFixture{srv: srv, iss: iss, rule: rule, clock: clock}
}

// post sends an exchange and returns status, request id and the decoded body.
func (f *fedFixture) post(t *testing.T, beta string, body any) (int, string, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL()+anthropictest.TokenPath, strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	if beta != "" {
		req.Header.Set("Anthropic-Beta", beta)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(rb, &m); err != nil {
		t.Fatalf("answer is not JSON: %q", rb)
	}
	return resp.StatusCode, resp.Header.Get("Request-Id"), m
}

func (f *fedFixture) grant(assertion string) map[string]any {
	return map[string]any{"grant_type": anthropictest.GrantJWTBearer, "assertion": assertion,
		"federation_rule_id": f.rule.ID, "organization_id": fedOrg}
}

const bothBetas = anthropictest.OAuthBeta + "," + anthropictest.FederationBeta

func TestTokenEndpoint(t *testing.T) {
	f := newFed(t, 90*time.Second)
	good := f.iss.Mint(anthropictest.Claims{Subject: fedSub, Audience: fedAud})
	other := anthropictest.NewIssuer("https://issuer.example")
	with := func(k string, v any) map[string]any { g := f.grant(good); g[k] = v; return g }
	for _, tc := range []struct {
		name   string
		beta   string
		body   map[string]any
		status int
		code   string
		desc   string
	}{
		{"no beta", "", f.grant(good), 400, "invalid_request", "anthropic-beta"},
		{"oauth beta only", anthropictest.OAuthBeta, f.grant(good), 400, "invalid_request", anthropictest.FederationBeta},
		{"wrong grant", bothBetas, with("grant_type", "client_credentials"), 400, "unsupported_grant_type", "grant_type"},
		{"no organization", bothBetas, with("organization_id", ""), 400, "invalid_request", "required"},
		{"unknown rule", bothBetas, with("federation_rule_id", "fdrl_nope"), 400, "invalid_grant", "federation rule not found"},
		{"other organization", bothBetas, with("organization_id", "org_other"), 400, "invalid_grant", "federation rule not found"},
		{"bad signature", bothBetas, f.grant(other.Mint(anthropictest.Claims{Subject: fedSub, Audience: fedAud})), 400, "invalid_grant", "invalid assertion"},
		{"not a JWT", bothBetas, f.grant("abc"), 400, "invalid_grant", "not a JWT"},
		{"wrong audience", bothBetas, f.grant(f.iss.Mint(anthropictest.Claims{Subject: fedSub, Audience: "x"})), 400, "invalid_grant", "audience"},
		{"wrong subject", bothBetas, f.grant(f.iss.Mint(anthropictest.Claims{Subject: "x", Audience: fedAud})), 400, "invalid_grant", "subject"},
		{"expired JWT", bothBetas, f.grant(f.iss.Mint(anthropictest.Claims{Subject: fedSub, Audience: fedAud, Expires: time.Now().Add(-time.Second)})), 400, "invalid_grant", "expired"},
		{"ok", bothBetas, f.grant(good), 200, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, reqID, m := f.post(t, tc.beta, tc.body)
			if st != tc.status || !strings.HasPrefix(reqID, "req_011C") {
				t.Fatalf("status %d request-id %q, want %d: %v", st, reqID, tc.status, m)
			}
			if tc.status != 200 {
				if m["error"] != tc.code || !strings.Contains(m["error_description"].(string), tc.desc) {
					t.Fatalf("answer %v, want %s with %q", m, tc.code, tc.desc)
				}
				if _, ok := m["access_token"]; ok {
					t.Fatal("a refusal carries a token")
				}
				return
			}
			tok, _ := m["access_token"].(string)
			if !strings.HasPrefix(tok, "sk-ant-oat01-") || m["expires_in"] != float64(90) || m["token_type"] != "Bearer" {
				t.Fatalf("answer %v", m)
			}
		})
	}
	if ok, refused := f.srv.Exchanges(); ok != 1 || refused != 11 {
		t.Fatalf("exchanges ok %d refused %d, want 1 and 11", ok, refused)
	}
}

// Bearer tokens on the data plane: only with the OAuth beta, only until
// they expire or are revoked, never on the Admin API.
func TestBearerTokens(t *testing.T) {
	f := newFed(t, time.Minute)
	_, _, m := f.post(t, bothBetas, f.grant(f.iss.Mint(anthropictest.Claims{Subject: fedSub, Audience: fedAud})))
	tok := m["access_token"].(string)
	get := func(path, auth, beta string) (int, string) {
		h := map[string]string{"anthropic-version": version, "Authorization": auth}
		if beta != "" {
			h["anthropic-beta"] = beta
		}
		resp, b := call(t, http.MethodGet, f.srv.URL()+path, h, "")
		var e errBody
		json.Unmarshal(b, &e)
		return resp.StatusCode, e.Error.Message
	}
	if st, _ := get("/v1/models", "Bearer "+tok, "files-api-2025-04-14, "+anthropictest.OAuthBeta); st != 200 {
		t.Fatalf("valid token: %d", st)
	}
	if st, msg := get("/v1/models", "Bearer "+tok, ""); st != 401 || !strings.Contains(msg, anthropictest.OAuthBeta) {
		t.Fatalf("without the beta: %d %q", st, msg)
	}
	if st, _ := get("/v1/models", "Bearer sk-ant-oat01-unknown", anthropictest.OAuthBeta); st != 401 {
		t.Fatalf("unknown token: %d", st)
	}
	if st, _ := get("/v1/organizations/api_keys", "Bearer "+tok, anthropictest.OAuthBeta); st != 403 {
		t.Fatalf("Admin API with a token: %d", st)
	}
	if n := f.srv.TokenServed(tok); n != 1 {
		t.Fatalf("served %d, want 1", n)
	}
	// Expiry, by the server's clock.
	f.clock.Add(int64(time.Minute))
	if st, msg := get("/v1/models", "Bearer "+tok, anthropictest.OAuthBeta); st != 401 || !strings.Contains(msg, "expired") {
		t.Fatalf("expired token: %d %q", st, msg)
	}
	// Early revocation.
	f.clock.Add(-int64(30 * time.Second))
	if !f.srv.RevokeToken(tok) {
		t.Fatal("revoke of a known token failed")
	}
	if st, msg := get("/v1/models", "Bearer "+tok, anthropictest.OAuthBeta); st != 401 || !strings.Contains(msg, "revoked") {
		t.Fatalf("revoked token: %d %q", st, msg)
	}
	toks := f.srv.OAuthTokens()
	if len(toks) != 1 || !toks[0].Revoked || strings.Contains(toks[0].String(), tok) {
		t.Fatalf("OAuthTokens = %v", toks)
	}
	if leaks := f.srv.LeakedOAuth("x " + tok[5:]); len(leaks) != 1 {
		t.Fatalf("LeakedOAuth missed the token: %v", leaks)
	}
}
