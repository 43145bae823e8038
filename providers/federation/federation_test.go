package federation_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/proxy/proxytest"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/federation"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, proxytest.IgnoreDateTicker) }

const (
	org      = "org_01test"
	audience = "https://api.anthropic.com"
	subject  = "system:serviceaccount:ai:app"
)

// fixture is a fake Claude API with one issuer and one rule, and a token
// file holding a valid identity token.
type fixture struct {
	srv    *anthropictest.Server
	iss    *anthropictest.Issuer
	rule   anthropictest.FederationRule
	file   string
	minted []string // every assertion written to the file
}

func newFixture(t *testing.T, life time.Duration) *fixture {
	t.Helper()
	f := &fixture{srv: anthropictest.Start(t), iss: anthropictest.NewIssuer("https://kubernetes.default.svc")}
	f.rule = f.srv.AddFederationRule(anthropictest.FederationRule{
		OrganizationID: org, Issuer: f.iss, Audience: audience, Subject: subject, TokenLifetime: life,
	})
	f.file = filepath.Join(t.TempDir(), "token")
	f.writeToken(t, anthropictest.Claims{Subject: subject, Audience: audience})
	return f
}

func (f *fixture) writeToken(t *testing.T, c anthropictest.Claims) string {
	t.Helper()
	a := f.iss.Mint(c)
	f.minted = append(f.minted, a)
	if err := os.WriteFile(f.file, []byte(a+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return a
}

func (f *fixture) url(extra string) string {
	return "wif://" + f.rule.ID + "?organization_id=" + org + "&base_url=" + url.QueryEscape(f.srv.URL()) +
		"&token_file=" + url.QueryEscape(f.file) + extra
}

// A federation source exchanges the projected token, holds the access
// token with its expiry, and the library client sends it as a bearer token
// with the OAuth beta; the fake accepts it.
func TestOpenExchangeAndUse(t *testing.T) {
	f := newFixture(t, time.Hour)
	src, err := providers.Open(context.Background(), f.url(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	k := src.Current()
	if !k.OAuth || !strings.HasPrefix(k.Value.Reveal(), "sk-ant-oat01-") {
		t.Fatalf("CURRENT = %v (oauth %v), want an OAuth access token", k, k.OAuth)
	}
	if d := time.Until(k.Expires); d <= 59*time.Minute || d > time.Hour {
		t.Fatalf("expires in %v, want about an hour", d)
	}
	if src.Previous() != nil {
		t.Fatal("a federation source has a PREVIOUS")
	}
	resp, err := providers.NewClient(src).Get(f.srv.URL() + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d with the access token", resp.StatusCode)
	}
	if n := f.srv.TokenServed(k.Value.Reveal()); n != 1 {
		t.Fatalf("the fake served %d requests with the token, want 1", n)
	}
}

// The data plane of the fake refuses the token without the beta header,
// after its expiry and after its revocation.
func TestFakeBearerRules(t *testing.T) {
	f := newFixture(t, time.Hour)
	r, err := federation.New(federation.Params{FederationRuleID: f.rule.ID, OrganizationID: org, BaseURL: f.srv.URL()},
		federation.File{Path: f.file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := r.Exchange(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	get := func(beta string) int {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL()+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken.Reveal())
		req.Header.Set("Anthropic-Version", "2023-06-01")
		if beta != "" {
			req.Header.Set("Anthropic-Beta", beta)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(""); st != http.StatusUnauthorized {
		t.Fatalf("without the beta: %d, want 401", st)
	}
	if st := get("x," + anthropictest.OAuthBeta); st != http.StatusOK {
		t.Fatalf("with the beta: %d, want 200", st)
	}
	f.srv.RevokeToken(tok.AccessToken.Reveal())
	if st := get(anthropictest.OAuthBeta); st != http.StatusUnauthorized {
		t.Fatalf("revoked: %d, want 401", st)
	}
}

// The token file is read again on every exchange (the kubelet rotates it).
func TestFileReadOnEveryExchange(t *testing.T) {
	f := newFixture(t, time.Hour)
	src, err := providers.Open(context.Background(), f.url(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// The rotated token carries another jti and a later iat: a stale
	// read would present the first one again.
	f.writeToken(t, anthropictest.Claims{Subject: subject, Audience: audience, IssuedAt: time.Now().Add(time.Second)})
	if _, err := src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	toks := f.srv.OAuthTokens()
	if len(toks) != 2 {
		t.Fatalf("%d exchanges, want 2", len(toks))
	}
	if got := f.srv.Assertions(); len(got) != 2 || got[0] != f.minted[0] || got[1] != f.minted[1] {
		t.Fatal("the second exchange did not present the rewritten token")
	}
}

// Refusals of the exchange come through with the status, the request id
// and the endpoint's reason, never the assertion; they are not retried by
// the first load.
func TestExchangeRefusals(t *testing.T) {
	f := newFixture(t, time.Hour)
	other := anthropictest.NewIssuer(f.iss.URL) // same iss, another key
	for _, tc := range []struct {
		name   string
		token  func() string
		rule   string
		reason string
	}{
		{"invalid assertion", func() string { return other.Mint(anthropictest.Claims{Subject: subject, Audience: audience}) }, "", "invalid assertion: key id"},
		{"unknown rule", func() string { return f.iss.Mint(anthropictest.Claims{Subject: subject, Audience: audience}) }, "fdrl_unknown", "federation rule not found"},
		{"wrong audience", func() string { return f.iss.Mint(anthropictest.Claims{Subject: subject, Audience: "other"}) }, "", "audience does not match"},
		{"expired JWT", func() string {
			return f.iss.Mint(anthropictest.Claims{Subject: subject, Audience: audience, Expires: time.Now().Add(-time.Minute)})
		}, "", "assertion has expired"},
		{"wrong subject", func() string { return f.iss.Mint(anthropictest.Claims{Subject: "other", Audience: audience}) }, "", "subject does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.token()
			if err := os.WriteFile(f.file, []byte(a), 0o600); err != nil {
				t.Fatal(err)
			}
			u := f.url("")
			if tc.rule != "" {
				u = strings.Replace(u, f.rule.ID, tc.rule, 1)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := providers.Open(ctx, u, nil)
			if err == nil {
				t.Fatal("open succeeded")
			}
			msg := err.Error()
			for _, want := range []string{"status 400", "request-id req_", "invalid_grant", tc.reason} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			if codes.Of(err).Retryable() || ctx.Err() != nil {
				t.Errorf("a refusal was retried until the deadline: %v", err)
			}
			if leaks := f.srv.LeakedOAuth(msg, a); len(leaks) > 0 {
				t.Errorf("error leaks %v: %s", leaks, msg)
			}
		})
	}
}

// Identity token sources: environment, command, GCP metadata, GitHub
// Actions; each exchanged against the fake.
func TestIdentitySources(t *testing.T) {
	f := newFixture(t, time.Hour)
	assertion := f.iss.Mint(anthropictest.Claims{Subject: subject, Audience: audience})

	var gcpSeen, ghSeen []string
	var mu sync.Mutex
	gcp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gcpSeen = append(gcpSeen, r.URL.Path+"?"+r.URL.RawQuery+" flavor="+r.Header.Get("Metadata-Flavor"))
		mu.Unlock()
		if r.Header.Get("Metadata-Flavor") != "Google" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		fmt.Fprint(w, assertion)
	}))
	defer gcp.Close()
	gh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ghSeen = append(ghSeen, r.URL.RawQuery+" auth="+r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer gh-request-token" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, `{"count":1,"value":%q}`, assertion)
	}))
	defer gh.Close()
	tokenFile := filepath.Join(t.TempDir(), "t")
	if err := os.WriteFile(tokenFile, []byte(assertion), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"MY_ID_TOKEN":                    assertion,
		"ACTIONS_ID_TOKEN_REQUEST_URL":   gh.URL + "/token?api-version=2.0",
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "gh-request-token",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	gcpHost := strings.TrimPrefix(gcp.URL, "http://")
	for _, tc := range []struct {
		name string
		id   federation.IdentitySource
	}{
		{"env", federation.Env{Name: "MY_ID_TOKEN", Lookup: lookup}},
		{"command", federation.Command{Argv: []string{"cat", tokenFile}}},
		{"gcp metadata", federation.GCPMetadata{Audience: audience, Host: gcpHost}},
		{"github actions", federation.GitHubActions{Audience: audience, Lookup: lookup}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := federation.New(federation.Params{FederationRuleID: f.rule.ID, OrganizationID: org, BaseURL: f.srv.URL()}, tc.id, nil)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := r.Exchange(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(tok.AccessToken.Reveal(), "sk-ant-oat01-") {
				t.Fatal("no access token")
			}
		})
	}
	wantGCP := "/computeMetadata/v1/instance/service-accounts/default/identity?audience=" + url.QueryEscape(audience) + "&format=full flavor=Google"
	if len(gcpSeen) != 1 || gcpSeen[0] != wantGCP {
		t.Errorf("metadata server saw %q, want %q", gcpSeen, wantGCP)
	}
	wantGH := "api-version=2.0&audience=" + url.QueryEscape(audience) + " auth=Bearer gh-request-token"
	if len(ghSeen) != 1 || ghSeen[0] != wantGH {
		t.Errorf("GitHub saw %q, want %q", ghSeen, wantGH)
	}
}

func TestIdentitySourceErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	spaced := filepath.Join(dir, "spaced")
	os.WriteFile(spaced, []byte("eyJhbGciOi.secret part.sig"), 0o600)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) (string, bool) { return "", false }
	forbidden := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, "eyJleaked.body.sig")
	}))
	defer forbidden.Close()
	for _, tc := range []struct {
		name string
		id   federation.IdentitySource
		code codes.Code
		want string
	}{
		{"missing file", federation.File{Path: filepath.Join(dir, "none")}, codes.Unavailable, "no such file"},
		{"empty file", federation.File{Path: empty}, codes.Unavailable, "is empty"},
		// A named pipe: refused at once (reading it blocked every exchange).
		{"named pipe", federation.File{Path: fifo}, codes.InvalidArgument, "is a named pipe, not a regular file"},
		{"directory", federation.File{Path: dir}, codes.InvalidArgument, "is a directory"},
		{"white space inside", federation.File{Path: spaced}, codes.InvalidArgument, "offset 17"},
		{"unset env", federation.Env{Name: "NOPE", Lookup: noEnv}, codes.Unavailable, "NOPE is not set"},
		{"failing command", federation.Command{Argv: []string{"false"}}, codes.Unavailable, "exit status 1"},
		{"github without permission", federation.GitHubActions{Lookup: noEnv}, codes.FailedPrecondition, "id-token: write"},
		{"metadata refuses", federation.GCPMetadata{Audience: "a", Host: strings.TrimPrefix(forbidden.URL, "http://")}, codes.PermissionDenied, "status 403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Bounded: reading a named pipe used to block for ever.
			done := make(chan error, 1)
			go func() { _, err := tc.id.IdentityToken(ctx); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("IdentityToken blocked")
			}
			if err == nil || codes.Of(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v (%v), want %v with %q", err, codes.Of(err), tc.code, tc.want)
			}
			if strings.Contains(err.Error(), "secret part") || strings.Contains(err.Error(), "eyJleaked") {
				t.Fatalf("error quotes the token: %v", err)
			}
		})
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url, want string // want: "" for success, else a part of the error
	}{
		{"wif://fdrl_1?organization_id=o&token_file=/t", ""},
		{"wif://fdrl_1?organization_id=o&token_env=X&workspace_id=wrkspc_1&service_account_id=svac_1", ""},
		{"wif://fdrl_1?organization_id=o&token_source=gcp-metadata&audience=a", ""},
		{"wif://fdrl_1?organization_id=o&token_source=github-actions", ""},
		{"wif://fdrl_1?organization_id=o&token_command=gcloud+auth+print-identity-token", ""},
		// Ids of at most 200 bytes (after fdrl_ for the rule).
		{"wif://fdrl_" + strings.Repeat("r", 200) + "?organization_id=" + strings.Repeat("o", 200) + "&token_file=/t&workspace_id=" + strings.Repeat("w", 200), ""},
		{"wif://fdrl_" + strings.Repeat("r", 201) + "?organization_id=o&token_file=/t", "fdrl_"},
		{"wif://fdrl_1?organization_id=" + strings.Repeat("o", 201) + "&token_file=/t", "organization_id is required"},
		{"wif://fdrl_1?organization_id=o&token_file=/t&service_account_id=" + strings.Repeat("s", 201), "service_account_id"},
		{"wif://fdrl_?organization_id=o&token_file=/t", "fdrl_"},
		{"wif://rule?organization_id=o&token_file=/t", "fdrl_"},
		{"wif://fdrl_1?token_file=/t", "organization_id is required"},
		{"wif://fdrl_1?organization_id=o", "exactly one identity token source"},
		{"wif://fdrl_1?organization_id=o&token_file=/t&token_env=X", "got 2"},
		{"wif://fdrl_1?organization_id=o&token_source=gcp-metadata", "needs audience"},
		{"wif://fdrl_1?organization_id=o&token_source=aws", "unknown"},
		{"wif://fdrl_1?organization_id=o&token_file=/t&audience=a", "audience applies only"},
		{"wif://fdrl_1?organization_id=o&token_file=/t&base_url=http://api.example.com", "must be https"},
		{"wif://fdrl_1?organization_id=o&token_file=/t&base_url=http://LOCALHOST:8080", ""},
		{"wif://fdrl_1?organization_id=o&token_file=/t&base_url=https://api.example.com:99999", "must be https"},
		{"wif://fdrl_1?organization_id=o&token_file=/t&bogus=1", "unknown parameter(s) bogus"},
		{"wif://fdrl_1/path?organization_id=o&token_file=/t", "has a path"},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = federation.ParseURL(u)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.url, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err %v, want %q", tc.url, err, tc.want)
		}
	}
}

// Nothing the source logs or returns holds the access token or the
// assertion: a leak scan over the logs of a source that refreshes, is
// rejected and fails.
func TestNoTokenOrAssertionInOutput(t *testing.T) {
	f := newFixture(t, 2*time.Second)
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	src, err := providers.Open(context.Background(), f.url(""), &providers.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "%v %+v %#v %s\n", src.Current(), src.Current(), src.Current(), src.Key())
	waitFor(t, "two refreshes", func() bool { return src.Current().VersionID == "exchange-3" })
	// Break the identity file (every exchange from now on is refused),
	// revoke the current token, and send.
	f.writeToken(t, anthropictest.Claims{Subject: subject, Audience: "wrong"})
	f.srv.RevokeToken(src.Current().Value.Reveal())
	resp, err := providers.NewClient(src).Get(f.srv.URL() + "/v1/models")
	if err != nil {
		fmt.Fprintln(&out, err)
	} else {
		resp.Body.Close()
	}
	_, err = src.Fresh(context.Background())
	fmt.Fprintln(&out, err, src.CheckHealth())
	src.Close()
	mu.Lock()
	text := out.String() + logs.String()
	mu.Unlock()
	if leaks := f.srv.LeakedOAuth(text, f.minted...); len(leaks) > 0 {
		t.Fatalf("output leaks %v:\n%s", leaks, text)
	}
	if !strings.Contains(text, "audience does not match") {
		t.Fatalf("the refusal's reason is not in the output:\n%s", text)
	}
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A token whose life is shorter than the exchange's round trip arrives
// expired: the exchange fails Unavailable, Open never returns a Source
// holding it, and the failed exchanges back off.
func TestTokenExpiredOnArrival(t *testing.T) {
	var exchanges atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := exchanges.Add(1)
		select { // a 1 s token, answered after 1.2 s
		case <-time.After(1200 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("content-type", "application/json")
		fmt.Fprintf(w, `{"access_token":"sk-ant-oat01-slow%060d","token_type":"Bearer","expires_in":1}`, n)
	}))
	defer slow.Close()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw := "wif://fdrl_slow?organization_id=" + org + "&base_url=" + url.QueryEscape(slow.URL) + "&token_file=" + url.QueryEscape(file)

	u, _ := url.Parse(raw)
	p, id, err := federation.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	r, err := federation.New(p, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := r.Exchange(context.Background())
	if err == nil {
		t.Fatalf("Exchange returned a token expiring %v ago", time.Since(tok.Expires).Round(time.Millisecond))
	}
	if !codes.Is(err, codes.Unavailable) || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("Exchange: %v, want Unavailable naming the short life", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if src, err := providers.Open(ctx, raw, nil); err == nil {
		src.Close()
		t.Fatalf("Open returned a Source holding a token expiring at %v", src.Current().Expires)
	} else if !codes.Is(err, codes.Unavailable) {
		t.Fatalf("Open: %v, want Unavailable", err)
	}
}
