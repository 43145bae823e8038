package federation

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseURL: any wif:// URL either parses into valid parameters and one
// identity source, or fails with an error that does not quote an
// identity-looking value.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"wif://fdrl_1?organization_id=o&token_file=/var/run/secrets/anthropic/token",
		"wif://fdrl_1?organization_id=o&token_source=gcp-metadata&audience=a",
		"wif://fdrl_1?organization_id=o&token_source=github-actions&workspace_id=wrkspc_1",
		"wif://fdrl_1?organization_id=o&token_command=gcloud%20auth&service_account_id=svac_1",
		"wif://fdrl_1?organization_id=o&token_env=X&base_url=https://api.anthropic.com",
		"wif://x?organization_id=&token_file=",
		"wif://fdrl_1?organization_id=o&token_file=/t&base_url=http://127.0.0.1:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		p, id, err := ParseURL(u)
		if err != nil {
			if strings.Contains(err.Error(), "eyJ") && !strings.Contains(raw, "eyJ") {
				t.Fatalf("error invents a token: %v", err)
			}
			return
		}
		if id == nil || p.validate() != nil {
			t.Fatalf("ParseURL(%q) returned invalid params %+v or no source", raw, p)
		}
		if !strings.HasPrefix(p.FederationRuleID, "fdrl_") || p.OrganizationID == "" {
			t.Fatalf("ParseURL(%q) = %+v", raw, p)
		}
	})
}

// FuzzDescribeError: any error body gives a short, printable, one-line
// description; a JWT or key in the body never comes through whole.
func FuzzDescribeError(f *testing.F) {
	for _, s := range []string{
		`{"error":"invalid_grant","error_description":"assertion audience does not match the federation rule"}`,
		`{"type":"error","error":{"type":"authentication_error","message":"invalid assertion"},"request_id":"req_1"}`,
		`{"error":"invalid_grant"}`,
		`{"error":123}`,
		`{"error":{"type":""}}`,
		`<html>bad gateway</html>`,
		`{"error":"x","error_description":"echo eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}`,
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		d := DescribeError(body)
		if len(d) > 60+2+300+2*len("…") {
			t.Fatalf("description of %d bytes", len(d))
		}
		if !utf8.ValidString(d) || strings.ContainsAny(d, "\n\r\x00") {
			t.Fatalf("description not one printable line: %q", d)
		}
		s := scrub(d)
		if strings.Contains(s, "eyJhbGciOiJSUzI1NiJ9.eyJ") {
			t.Fatalf("scrub kept a JWT: %q", s)
		}
	})
}

// FuzzExchangeAnswer: whatever the token endpoint answers, Exchange
// returns a valid token with an expiry in the future, or an error without
// the assertion.
func FuzzExchangeAnswer(f *testing.F) {
	for _, tc := range []struct {
		status int
		body   string
	}{
		{200, `{"access_token":"sk-ant-oat01-abc","token_type":"Bearer","expires_in":3600}`},
		{200, `{"access_token":"sk-ant-oat01-abc","expires_in":0}`},
		{200, `{"access_token":"sk-ant-oat01-abc"}`},
		{200, `{"access_token":"sk ant","expires_in":10}`},
		{200, `{"access_token":"{\"api_key\":\"x\"}","expires_in":10}`},
		{200, `{"access_token":"a","token_type":"mac","expires_in":10}`},
		{200, `not json`},
		{400, `{"error":"invalid_grant","error_description":"invalid assertion"}`},
		{429, `{}`},
		{503, ``},
	} {
		f.Add(tc.status, []byte(tc.body))
	}
	const assertion = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmdXp6In0.ZnV6ei1zaWduYXR1cmU"
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 999 {
			return
		}
		client := &http.Client{Transport: rtFunc(func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: status, Header: http.Header{"Request-Id": {"req_fuzz"}},
				Body: io.NopCloser(strings.NewReader(string(body))), Request: r}, nil
		})}
		r, err := New(Params{FederationRuleID: "fdrl_fuzz", OrganizationID: "org", BaseURL: "http://127.0.0.1:1"},
			Env{Name: "A", Lookup: func(string) (string, bool) { return assertion, true }}, client)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := r.Exchange(context.Background())
		if err != nil {
			if strings.Contains(err.Error(), "ZnV6ei1zaWduYXR1cmU") {
				t.Fatalf("error holds the assertion: %v", err)
			}
			return
		}
		if status < 200 || status > 299 {
			t.Fatalf("status %d gave a token", status)
		}
		if tok.AccessToken.IsZero() || !tok.Expires.After(time.Now().Add(-time.Second)) {
			t.Fatalf("token %v expiring %v", tok.AccessToken, tok.Expires)
		}
	})
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
