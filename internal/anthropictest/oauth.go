package anthropictest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	b64enc "encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Workload Identity Federation: the token endpoint and OAuth bearer tokens
// on the data plane.
//
// POST /v1/oauth/token takes the RFC 7523 jwt-bearer grant as a JSON body
// (grant_type, assertion, federation_rule_id, organization_id, optional
// service_account_id and workspace_id) with anthropic-beta
// oauth-2025-04-20,oidc-federation-2026-04-01. The assertion's RS256
// signature is checked against the JWKS of the rule's issuer, and its iss,
// aud, sub and exp against the rule. The answer is
// {"access_token":"sk-ant-oat01-…","token_type":"Bearer","expires_in":N},
// and refusals are RFC 6749 §5.2 bodies ({"error","error_description"})
// with a request-id header, the shape the official SDKs parse.
//
// The data plane accepts "Authorization: Bearer sk-ant-oat01-…" only with
// anthropic-beta oauth-2025-04-20 and only until the token expires or is
// revoked (RevokeToken).

// Token endpoint constants.
const (
	TokenPath        = "/v1/oauth/token"
	GrantJWTBearer   = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	OAuthBeta        = "oauth-2025-04-20"
	FederationBeta   = "oidc-federation-2026-04-01"
	accessPrefix     = "sk-ant-oat01-"
	defaultTokenLife = time.Hour
)

// Issuer is a test OIDC issuer: it signs identity tokens (JWTs, RS256) that
// the fake verifies against its JWKS. Safe for concurrent use.
type Issuer struct {
	URL string // the iss claim
	kid string
	key *rsa.PrivateKey
}

// NewIssuer returns an issuer with a fresh 2048-bit RSA key.
func NewIssuer(url string) *Issuer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic("anthropictest: NewIssuer: " + err.Error())
	}
	return &Issuer{URL: url, kid: "kid-" + randomID(8), key: k}
}

// JWKS returns the issuer's public keys as a JWK set, as an issuer
// publishes them at its jwks_uri.
func (i *Issuer) JWKS() []byte {
	pub := i.key.PublicKey
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": i.kid,
		"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
	}}})
	return b
}

// Claims are an identity token's claims.
type Claims struct {
	Subject, Audience string
	Expires           time.Time // zero: an hour from now
	IssuedAt          time.Time // zero: now
}

// Mint returns a signed identity token with c's claims.
func (i *Issuer) Mint(c Claims) string {
	now := time.Now()
	if c.IssuedAt.IsZero() {
		c.IssuedAt = now
	}
	if c.Expires.IsZero() {
		c.Expires = now.Add(time.Hour)
	}
	h, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": i.kid})
	p, _ := json.Marshal(map[string]any{"iss": i.URL, "sub": c.Subject, "aud": c.Audience,
		"exp": c.Expires.Unix(), "iat": c.IssuedAt.Unix(), "jti": randomID(12)})
	signing := b64(h) + "." + b64(p)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, i.key, crypto.SHA256, sum[:])
	if err != nil {
		panic("anthropictest: Mint: " + err.Error())
	}
	return signing + "." + b64(sig)
}

func b64(b []byte) string { return b64enc.RawURLEncoding.EncodeToString(b) }

// FederationRule lets identity tokens of one issuer, audience and subject
// be exchanged for tokens of an organization.
type FederationRule struct {
	ID             string // fdrl_…; set by AddFederationRule when ""
	OrganizationID string
	Issuer         *Issuer // its JWKS verifies the assertions
	Audience       string
	Subject        string // "" accepts any subject
	// ServiceAccountID, when set, must be what the exchange names.
	ServiceAccountID string
	// TokenLifetime is the expires_in of minted tokens (an hour when 0).
	TokenLifetime time.Duration
}

// OAuthToken is a snapshot of a minted access token. Its String never
// shows the value.
type OAuthToken struct {
	Value    string
	RuleID   string
	Issued   time.Time
	Expires  time.Time
	Revoked  bool
	Subject  string
	keyStats *key
}

// String describes t by hint and expiry.
func (t OAuthToken) String() string {
	return "oauth token " + Hint(t.Value) + " (rule " + t.RuleID + ", expires " + t.Expires.Format(time.RFC3339Nano) + ")"
}

// GoString is String.
func (t OAuthToken) GoString() string { return t.String() }

// oauthState is a Server's federation state.
type oauthState struct {
	mu     sync.Mutex
	rules  map[string]*FederationRule
	tokens map[string]*key // by value; key.expiresAt and key.st carry expiry and revocation
	order  []*OAuthToken
	byVal  map[string]*OAuthToken
	// assertions presented to the token endpoint, in order, for tests
	// proving that an identity file is read again.
	assertions []string

	exchanges, refusals atomic.Int64
}

func (o *oauthState) init() {
	if o.rules == nil {
		o.rules = map[string]*FederationRule{}
		o.tokens = map[string]*key{}
		o.byVal = map[string]*OAuthToken{}
	}
}

// AddFederationRule adds rule and returns it with its id.
func (s *Server) AddFederationRule(rule FederationRule) FederationRule {
	o := &s.oauth
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	if rule.ID == "" {
		rule.ID = "fdrl_01" + randomID(22)
	}
	if rule.TokenLifetime <= 0 {
		rule.TokenLifetime = defaultTokenLife
	}
	r := rule
	o.rules[r.ID] = &r
	return r
}

// SetTokenLifetime changes the lifetime of the tokens rule id mints next.
func (s *Server) SetTokenLifetime(id string, d time.Duration) {
	o := &s.oauth
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := o.rules[id]; r != nil {
		r.TokenLifetime = d
	}
}

// OAuthTokens returns every minted token, oldest first.
func (s *Server) OAuthTokens() []OAuthToken {
	o := &s.oauth
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]OAuthToken, 0, len(o.order))
	for _, t := range o.order {
		c := *t
		c.Revoked = t.keyStats.st.Load() != stActive
		out = append(out, c)
	}
	return out
}

// Assertions returns the assertions presented to the token endpoint, in
// order.
func (s *Server) Assertions() []string {
	o := &s.oauth
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.assertions...)
}

// Exchanges returns the number of successful and refused exchanges.
func (s *Server) Exchanges() (ok, refused int64) {
	return s.oauth.exchanges.Load(), s.oauth.refusals.Load()
}

// RevokeToken makes the access token value fail from now on, before its
// expiry. It reports whether the token was known.
func (s *Server) RevokeToken(value string) bool {
	o := &s.oauth
	o.mu.Lock()
	defer o.mu.Unlock()
	k := o.tokens[value]
	if k == nil {
		return false
	}
	k.st.Store(stInactive)
	return true
}

// TokenServed returns how many data-plane requests token value had served.
func (s *Server) TokenServed(value string) int64 {
	o := &s.oauth
	o.mu.Lock()
	defer o.mu.Unlock()
	if k := o.tokens[value]; k != nil {
		return k.served.Load()
	}
	return 0
}

// LeakedOAuth returns the hints of the minted access tokens whose secret part
// appears in text, and "assertion" for each given assertion found in it.
func (s *Server) LeakedOAuth(text string, assertions ...string) []string {
	var out []string
	for _, t := range s.OAuthTokens() {
		if strings.Contains(text, strings.TrimPrefix(t.Value, accessPrefix)) {
			out = append(out, Hint(t.Value))
		}
	}
	for _, a := range assertions {
		// The signature alone identifies the assertion.
		if i := strings.LastIndexByte(a, '.'); i >= 0 && strings.Contains(text, a[i+1:]) {
			out = append(out, "assertion")
		}
	}
	return out
}

// OAuth data-plane errors.
var (
	errOAuthBeta    = &apiError{401, "authentication_error", "OAuth authentication is currently not supported: send anthropic-beta: " + OAuthBeta}
	errOAuthInvalid = &apiError{401, "authentication_error", "Invalid bearer token"}
	errOAuthExpired = &apiError{401, "authentication_error", "OAuth token has expired"}
	errOAuthRevoked = &apiError{401, "authentication_error", "OAuth token has been revoked"}
)

// bearer authenticates a data-plane request by its Authorization header:
// the token's state, or nil and the error when it is unknown.
func (s *Server) bearer(r *http.Request, admin bool) (*key, *apiError) {
	v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return nil, errOAuthInvalid
	}
	o := &s.oauth
	o.mu.Lock()
	k := o.tokens[v]
	o.mu.Unlock()
	switch {
	case k == nil:
		return nil, errOAuthInvalid
	case admin:
		return k, errNotAdmin
	case !hasBeta(r.Header.Values("Anthropic-Beta"), OAuthBeta):
		return k, errOAuthBeta
	case k.st.Load() != stActive:
		return k, errOAuthRevoked
	case s.now().UnixNano() >= k.expiresAt.Load():
		return k, errOAuthExpired
	}
	return k, nil
}

// hasBeta reports whether one of the comma-separated values is beta.
func hasBeta(vals []string, beta string) bool {
	for _, v := range vals {
		for p := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(p) == beta {
				return true
			}
		}
	}
	return false
}

// oauthError is an RFC 6749 §5.2 refusal.
type oauthError struct {
	status int
	code   string
	desc   string
}

// tokenEndpoint serves POST /v1/oauth/token.
func (s *Server) tokenEndpoint(w http.ResponseWriter, r *http.Request, reqID string) int {
	tok, life, e := s.exchange(r)
	if e != nil {
		s.oauth.refusals.Add(1)
		b, _ := json.Marshal(map[string]string{"error": e.code, "error_description": e.desc})
		w.Header()["Content-Type"] = hdrJSON
		w.WriteHeader(e.status)
		_, _ = w.Write(b)
		return e.status
	}
	s.oauth.exchanges.Add(1)
	b, _ := json.Marshal(map[string]any{"access_token": tok, "token_type": "Bearer",
		"expires_in": int64(life / time.Second), "scope": "user:inference"})
	w.Header()["Cache-Control"] = []string{"no-store"}
	return writeJSON(w, b)
}

func (s *Server) exchange(r *http.Request) (string, time.Duration, *oauthError) {
	if r.Method != http.MethodPost {
		return "", 0, &oauthError{405, "invalid_request", "the token endpoint takes POST"}
	}
	if b := r.Header.Values("Anthropic-Beta"); !hasBeta(b, OAuthBeta) || !hasBeta(b, FederationBeta) {
		return "", 0, &oauthError{400, "invalid_request", "anthropic-beta must include " + OAuthBeta + " and " + FederationBeta}
	}
	var req struct {
		GrantType        string `json:"grant_type"`
		Assertion        string `json:"assertion"`
		FederationRuleID string `json:"federation_rule_id"`
		OrganizationID   string `json:"organization_id"`
		ServiceAccountID string `json:"service_account_id"`
		WorkspaceID      string `json:"workspace_id"`
	}
	body, tooLarge, err := readBody(r.Body, nil, 64<<10)
	if err != nil || tooLarge || json.Unmarshal(body, &req) != nil {
		return "", 0, &oauthError{400, "invalid_request", "the body must be a JSON object of at most 64 KiB"}
	}
	switch {
	case req.GrantType != GrantJWTBearer:
		return "", 0, &oauthError{400, "unsupported_grant_type", "grant_type must be " + GrantJWTBearer}
	case req.Assertion == "" || req.FederationRuleID == "" || req.OrganizationID == "":
		return "", 0, &oauthError{400, "invalid_request", "assertion, federation_rule_id and organization_id are required"}
	}
	o := &s.oauth
	o.mu.Lock()
	o.init()
	o.assertions = append(o.assertions, req.Assertion)
	rule := o.rules[req.FederationRuleID]
	var rc FederationRule
	if rule != nil {
		rc = *rule
	}
	o.mu.Unlock()
	if rule == nil || rc.OrganizationID != req.OrganizationID {
		return "", 0, &oauthError{400, "invalid_grant", "federation rule not found in this organization"}
	}
	if rc.ServiceAccountID != "" && req.ServiceAccountID != "" && req.ServiceAccountID != rc.ServiceAccountID {
		return "", 0, &oauthError{400, "invalid_grant", "service_account_id does not match the federation rule"}
	}
	claims, err := verifyJWT(req.Assertion, rc.Issuer)
	if err != nil {
		return "", 0, &oauthError{400, "invalid_grant", "invalid assertion: " + err.Error()}
	}
	now := s.now()
	switch {
	case claims.Iss != rc.Issuer.URL:
		return "", 0, &oauthError{400, "invalid_grant", "assertion issuer does not match the federation rule"}
	case !claims.hasAud(rc.Audience):
		return "", 0, &oauthError{400, "invalid_grant", "assertion audience does not match the federation rule"}
	case rc.Subject != "" && claims.Sub != rc.Subject:
		return "", 0, &oauthError{400, "invalid_grant", "assertion subject does not match the federation rule"}
	case claims.Exp == 0 || now.Unix() >= claims.Exp:
		return "", 0, &oauthError{400, "invalid_grant", "assertion has expired"}
	}
	value := accessPrefix + randomString(93) + "AA"
	k := &key{id: "oat_" + randomID(22), value: value, hint: Hint(value), createdAt: now.UTC()}
	k.expiresAt.Store(now.Add(rc.TokenLifetime).UnixNano())
	o.mu.Lock()
	o.tokens[value] = k
	t := &OAuthToken{Value: value, RuleID: rc.ID, Issued: now, Expires: now.Add(rc.TokenLifetime), Subject: claims.Sub, keyStats: k}
	o.order = append(o.order, t)
	o.byVal[value] = t
	o.mu.Unlock()
	return value, rc.TokenLifetime, nil
}

type jwtClaims struct {
	Iss string          `json:"iss"`
	Sub string          `json:"sub"`
	Aud json.RawMessage `json:"aud"`
	Exp int64           `json:"exp"`
}

func (c jwtClaims) hasAud(want string) bool {
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		return one == want
	}
	var many []string
	if json.Unmarshal(c.Aud, &many) == nil {
		for _, a := range many {
			if a == want {
				return true
			}
		}
	}
	return false
}

// verifyJWT checks an RS256 JWT's signature against the issuer's JWKS
// and returns its claims.
func verifyJWT(tok string, iss *Issuer) (jwtClaims, error) {
	var c jwtClaims
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, errors.New("not a JWT")
	}
	hb, err1 := b64enc.RawURLEncoding.DecodeString(parts[0])
	pb, err2 := b64enc.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := b64enc.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return c, errors.New("not a JWT")
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if json.Unmarshal(hb, &h) != nil || h.Alg != "RS256" {
		return c, errors.New("unsupported signing algorithm")
	}
	pub, err := jwksKey(iss.JWKS(), h.Kid)
	if err != nil {
		return c, err
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) != nil {
		return c, errors.New("signature does not verify against the issuer's JWKS")
	}
	if json.Unmarshal(pb, &c) != nil {
		return c, errors.New("claims are not a JSON object")
	}
	return c, nil
}

// jwksKey finds key kid in a JWK set.
func jwksKey(jwks []byte, kid string) (*rsa.PublicKey, error) {
	var set struct {
		Keys []struct{ Kty, Kid, N, E string } `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		return nil, fmt.Errorf("bad JWKS: %w", err)
	}
	for _, k := range set.Keys {
		if k.Kid != kid || k.Kty != "RSA" {
			continue
		}
		n, err1 := b64enc.RawURLEncoding.DecodeString(k.N)
		e, err2 := b64enc.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil {
			return nil, errors.New("bad JWKS key")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	}
	return nil, errors.New("key id " + strconv.Quote(kid) + " is not in the issuer's JWKS")
}
