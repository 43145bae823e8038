// Package federation is keywarden's keyless source: Workload Identity
// Federation with the Claude API. There is no stored key at all. On every
// read it takes the workload's identity token (a JWT from Kubernetes, GCP,
// GitHub Actions, a file, a variable or a command), exchanges it at
// POST /v1/oauth/token (RFC 7523 jwt-bearer grant) for a short-lived,
// workspace-scoped access token (sk-ant-oat01-…), and hands that to the
// Source as the CURRENT version, with its expiry. The Source refreshes it
// from its expiry, never serves it past it, and the Transport (the library
// client and the sidecar) sends it as "Authorization: Bearer" with
// anthropic-beta oauth-2025-04-20.
//
// URL form (scheme wif):
//
//	wif://fdrl_RULE?organization_id=ORG&token_file=/var/run/secrets/anthropic/token
//
// Parameters: organization_id (required); service_account_id and
// workspace_id (optional, as the exchange takes them); base_url (the API,
// https://api.anthropic.com by default; plain http only on loopback, for
// tests); exactly one identity token source:
//
//   - token_file=PATH: a file re-read on every exchange (a Kubernetes
//     projected service account token with the rule's audience: the main
//     case);
//   - token_env=NAME: an environment variable;
//   - token_command=PROGRAM ARGS…: a program run without a shell, its
//     output the token (arguments split on spaces);
//   - token_source=gcp-metadata: the GCP metadata server's identity
//     endpoint, with audience=AUD;
//   - token_source=github-actions: the GitHub Actions OIDC request
//     variables, with audience=AUD (optional).
//
// The portable parameters (refresh, jitter, max_stale, field) are accepted
// but do not apply: a token is refreshed from its expiry, and never served
// past it whatever max_stale says.
package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/anthropics/anthropic-sdk-go/config"
	"github.com/keywarden/keywarden/internal/netrule"

	"github.com/keywarden/keywarden/internal/version"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// Scheme is the URL scheme of the federation source.
const Scheme = "wif"

func init() { providers.Register(Scheme, openURL) }

// Params are the exchange's parameters other than the assertion.
type Params struct {
	// FederationRuleID is the rule (fdrl_…) that governs the exchange.
	FederationRuleID string
	// OrganizationID is the organization whose token is minted.
	OrganizationID string
	// ServiceAccountID (svac_…) and WorkspaceID are optional.
	ServiceAccountID, WorkspaceID string
	// BaseURL is the API (https://api.anthropic.com when empty).
	BaseURL string
}

// Reader exchanges an identity token for an access token on every read. It
// implements driver.Reader only: there is nothing to store or rotate.
type Reader struct {
	params   Params
	identity IdentitySource
	client   *http.Client
	n        atomic.Uint64 // exchanges made, for version ids
}

var _ driver.Keyless = (*Reader)(nil)

// New returns a Reader exchanging identity's tokens with p. client sends
// the exchange (a client with a 30 s timeout when nil); it never follows a
// redirect.
func New(p Params, identity IdentitySource, client *http.Client) (*Reader, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	if identity == nil {
		return nil, codes.Errorf(codes.InvalidArgument, "federation: no identity token source")
	}
	return &Reader{params: p, identity: identity, client: client}, nil
}

// The shapes of ids, at most maxID bytes after any prefix (checked apart:
// a counted repetition compiles into one copy of the class per count).
var (
	validRule = regexp.MustCompile(`^fdrl_[A-Za-z0-9_-]+$`)
	validID   = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

const maxID = 200

// isRule and isID say whether s is a federation rule id or another id.
func isRule(s string) bool { return len(s) <= len("fdrl_")+maxID && validRule.MatchString(s) }
func isID(s string) bool   { return len(s) <= maxID && validID.MatchString(s) }

func (p Params) validate() error {
	switch {
	case !isRule(p.FederationRuleID):
		return codes.Errorf(codes.InvalidArgument, "federation: federation rule id %q is not of the form fdrl_…", clip(p.FederationRuleID))
	case !isID(p.OrganizationID):
		return codes.Errorf(codes.InvalidArgument, "federation: organization_id is required (letters, digits, _ and -)")
	case p.ServiceAccountID != "" && !isID(p.ServiceAccountID):
		return codes.Errorf(codes.InvalidArgument, "federation: service_account_id %q is malformed", clip(p.ServiceAccountID))
	case p.WorkspaceID != "" && !isID(p.WorkspaceID):
		return codes.Errorf(codes.InvalidArgument, "federation: workspace_id %q is malformed", clip(p.WorkspaceID))
	}
	if p.BaseURL != "" {
		u, err := url.Parse(p.BaseURL)
		if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return codes.Errorf(codes.InvalidArgument, "federation: base_url is not an http(s) URL of the API without credentials or query")
		}
		if err := netrule.CheckSecure(u); err != nil {
			return codes.Errorf(codes.InvalidArgument, "federation: base_url must be https (plain http only to this machine): %v", err)
		}
	}
	return nil
}

// clip shortens a user-given value for an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// Read exchanges the identity token for an access token and returns it as
// the CURRENT version, with its expiry. PREVIOUS is always NotFound: an
// access token that was replaced is never a fallback.
func (r *Reader) Read(ctx context.Context, name string, stage driver.Stage) (*driver.Version, error) {
	if stage != driver.Current {
		return nil, codes.Errorf(codes.NotFound, "federation: no %s token: every token comes from a new exchange", stage)
	}
	if name != r.params.FederationRuleID {
		return nil, codes.Errorf(codes.NotFound, "federation: this source exchanges with rule %s, not %q", r.params.FederationRuleID, clip(name))
	}
	tok, err := r.Exchange(ctx)
	if err != nil {
		return nil, err
	}
	return &driver.Version{
		ID:      "exchange-" + strconv.FormatUint(r.n.Add(1), 10),
		Value:   []byte(tok.AccessToken.Reveal()),
		Created: tok.Issued,
		Expires: tok.Expires,
		OAuth:   true,
	}, nil
}

// NothingToRotate explains why a federation source has no key to put,
// rotate or revoke.
func (r *Reader) NothingToRotate() string {
	return "a " + Scheme + ":// source holds no key: it exchanges the workload's identity token for a short-lived access token, refreshed before it expires; there is nothing to put, rotate or revoke (to cut access, disable federation rule " + r.params.FederationRuleID + " in the Console or Admin API)"
}

// Close does nothing; it is safe to call more than once.
func (r *Reader) Close() error { return nil }

// Token is the answer of one exchange.
type Token struct {
	AccessToken providers.Secret
	Issued      time.Time // when the exchange was sent
	Expires     time.Time // Issued plus expires_in (at most)
}

// Exchange takes an identity token and exchanges it once.
//
// It uses the official Go SDK's config.ExchangeFederationAssertion: it
// takes the context, the HTTP client (wrapped so that it never follows a
// redirect) and the base URL, sends the documented body and the
// anthropic-beta values, refuses a cleartext base URL off loopback, and
// returns the status, body and request id of a refusal. So keywarden does
// not keep a second copy of the wire contract. What the SDK does not do is
// this package's: retry, scheduling (the Source's), mapping refusals to
// portable codes, and keeping the assertion and the token out of every
// message.
func (r *Reader) Exchange(ctx context.Context) (*Token, error) {
	assertion, err := r.identity.IdentityToken(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	creds, err := config.ExchangeFederationAssertion(ctx, config.FederationExchangeParams{
		Assertion:        assertion,
		FederationRuleID: r.params.FederationRuleID,
		OrganizationID:   r.params.OrganizationID,
		ServiceAccountID: r.params.ServiceAccountID,
		WorkspaceID:      r.params.WorkspaceID,
		BaseURL:          r.params.BaseURL,
		HTTPClient:       r.client,
		UserAgent:        "keywarden/" + version.Version,
	})
	end := time.Now()
	if err != nil {
		return nil, exchangeError(ctx, err, assertion)
	}
	if creds.ExpiresAt != nil {
		// The SDK counts expires_in from when the answer arrived; the
		// token was minted before that. Count from when the request was
		// sent, so that the expiry kept is never later than the real one.
		exp := start.Add(creds.ExpiresAt.Sub(end))
		creds.ExpiresAt = &exp
	}
	return checkCredentials(creds.AccessToken, creds.ExpiresAt, start, end, assertion)
}

// checkCredentials validates an exchange's answer: an exchange sent at
// issued whose answer arrived at arrived. A token that expires before it
// arrived, or that has no more life left at its arrival than the exchange
// took (it would expire before an exchange as slow as this one could
// replace it), is refused Unavailable: a token whose life is shorter than
// the round trip never enters service, and the Source backs off as after
// any failed exchange.
func checkCredentials(access string, expiresAt *time.Time, issued, arrived time.Time, assertion string) (*Token, error) {
	tok := providers.NewSecret(access)
	if _, err := providers.DecodePayload([]byte(access), providers.DefaultField); err != nil || strings.HasPrefix(access, "{") {
		return nil, codes.Errorf(codes.Internal, "federation: the token endpoint answered an access token that is no token (%s)", scrub(errString(err), assertion, access))
	}
	if expiresAt == nil {
		return nil, codes.Errorf(codes.Internal, "federation: the token endpoint's answer has no expires_in; a token without expiry cannot be refreshed in time")
	}
	if !expiresAt.After(issued) {
		return nil, codes.Errorf(codes.Unavailable, "federation: the token endpoint answered a token that is already expired (expires_in %v)", expiresAt.Sub(issued).Round(time.Second))
	}
	if left, took := expiresAt.Sub(arrived), arrived.Sub(issued); left <= took {
		return nil, codes.Errorf(codes.Unavailable, "federation: the token endpoint answered a token that expires %v after it arrived, no more than the exchange took (%v): its life (expires_in %v) is too short to serve",
			left.Round(time.Millisecond), took.Round(time.Millisecond), expiresAt.Sub(issued).Round(time.Millisecond))
	}
	return &Token{AccessToken: tok, Issued: issued, Expires: *expiresAt}, nil
}

func errString(err error) string {
	if err == nil {
		return "it starts with {"
	}
	return err.Error()
}

// exchangeError maps an exchange error to a portable code with a clear
// message: the status, the request id, and the endpoint's own error code
// and description; never the assertion.
func exchangeError(ctx context.Context, err error, assertion string) error {
	var fe *config.FederationExchangeError
	if !errors.As(err, &fe) {
		if ctx.Err() != nil {
			return codes.FromContext(ctx.Err())
		}
		// Transport errors: the SDK's message names the URL and the cause.
		return codes.Errorf(codes.Unavailable, "federation: exchange: %s", scrub(err.Error(), assertion))
	}
	var c codes.Code
	switch {
	case fe.StatusCode == http.StatusTooManyRequests:
		c = codes.ResourceExhausted
	case fe.StatusCode >= 500:
		c = codes.Unavailable
	case fe.StatusCode == http.StatusUnauthorized:
		c = codes.Unauthenticated
	case fe.StatusCode == http.StatusForbidden:
		c = codes.PermissionDenied
	case fe.StatusCode == http.StatusNotFound:
		c = codes.NotFound
	default:
		c = codes.InvalidArgument
	}
	reqID := fe.RequestID
	if reqID == "" {
		reqID = "none"
	}
	return codes.Errorf(c, "federation: exchange refused (status %d, request-id %s): %s",
		fe.StatusCode, clip(reqID), scrub(DescribeError([]byte(fe.Body)), assertion))
}

// DescribeError returns a one-line description of a token endpoint's error
// body: the RFC 6749 error and error_description, or the Claude API's
// error type and message; anything else is not quoted (it might echo a
// credential). Descriptions are cut at 300 bytes.
func DescribeError(body []byte) string {
	var e struct {
		Error       json.RawMessage `json:"error"`
		Description string          `json:"error_description"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Error) == 0 {
		return "the answer is not an error in a known shape"
	}
	var code string
	if json.Unmarshal(e.Error, &code) != nil {
		var api struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		}
		if json.Unmarshal(e.Error, &api) != nil || api.Type == "" {
			return "the answer is not an error in a known shape"
		}
		code, e.Description = api.Type, api.Message
	}
	s := printable(code, 60)
	if e.Description != "" {
		s += ": " + printable(e.Description, 300)
	}
	return s
}

// printable keeps the printable ASCII of s, at most n bytes.
func printable(s string, n int) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() >= n {
			b.WriteString("…")
			break
		}
		if c >= 0x20 && c < 0x7f {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// scrub removes known secrets from a message, and anything shaped like a
// key or a JWT (providers.RedactKeys).
func scrub(s string, secrets ...string) string {
	for _, v := range secrets {
		if len(v) >= 8 {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
	}
	return providers.RedactKeys(s)
}

// openURL opens a wif:// URL.
func openURL(_ context.Context, u *url.URL) (driver.Reader, string, error) {
	p, id, err := ParseURL(u)
	if err != nil {
		return nil, "", err
	}
	r, err := New(p, id, nil)
	if err != nil {
		return nil, "", err
	}
	return r, p.FederationRuleID, nil
}

// Known parameters, for messages.
var knownParams = []string{"organization_id", "service_account_id", "workspace_id", "base_url",
	"token_file", "token_env", "token_command", "token_source", "audience"}

// ParseURL parses a wif:// URL whose portable parameters were removed.
func ParseURL(u *url.URL) (Params, IdentitySource, error) {
	if u.Scheme != Scheme {
		return Params{}, nil, codes.Errorf(codes.InvalidArgument, "federation: URL scheme %q is not %s", clip(u.Scheme), Scheme)
	}
	if u.Path != "" && u.Path != "/" {
		return Params{}, nil, codes.Errorf(codes.InvalidArgument, "federation: URL has a path; want wif://fdrl_RULE?organization_id=…")
	}
	q := providers.NewQuery(u.Query())
	p := Params{
		FederationRuleID: u.Host,
		OrganizationID:   q.String("organization_id", ""),
		ServiceAccountID: q.String("service_account_id", ""),
		WorkspaceID:      q.String("workspace_id", ""),
		BaseURL:          q.String("base_url", ""),
	}
	file, env := q.String("token_file", ""), q.String("token_env", "")
	command, source := q.String("token_command", ""), q.String("token_source", "")
	audience := q.String("audience", "")
	if err := q.Done(knownParams...); err != nil {
		return Params{}, nil, fmt.Errorf("federation: %w", err)
	}
	if err := p.validate(); err != nil {
		return Params{}, nil, err
	}
	var ids []IdentitySource
	if file != "" {
		ids = append(ids, File{Path: file})
	}
	if env != "" {
		ids = append(ids, Env{Name: env})
	}
	if command != "" {
		ids = append(ids, Command{Argv: strings.Fields(command)})
	}
	switch source {
	case "":
	case "gcp-metadata":
		if audience == "" {
			return Params{}, nil, codes.Errorf(codes.InvalidArgument, "federation: token_source=gcp-metadata needs audience= (the federation issuer's expected audience)")
		}
		ids = append(ids, GCPMetadata{Audience: audience})
	case "github-actions":
		ids = append(ids, GitHubActions{Audience: audience})
	default:
		return Params{}, nil, codes.Errorf(codes.InvalidArgument, "federation: token_source %q is unknown (gcp-metadata, github-actions)", clip(source))
	}
	if audience != "" && source == "" {
		return Params{}, nil, codes.Errorf(codes.InvalidArgument, "federation: audience applies only to token_source=gcp-metadata or github-actions; a token file's audience is set where it is projected")
	}
	if len(ids) != 1 {
		return Params{}, nil, codes.Errorf(codes.InvalidArgument,
			"federation: want exactly one identity token source (token_file, token_env, token_command or token_source), got %d", len(ids))
	}
	return p, ids[0], nil
}
