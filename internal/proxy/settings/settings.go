// Package settings owns the sidecar proxy's settings: their defaults and
// their rules, in one place for package proxy (which applies them) and
// internal/config (which copies what a config file sets and checks it at
// load with these same rules). It imports no more than the standard
// library, package providers and package netrule, so the config loader stays light.
package settings

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/netrule"
	"github.com/keywarden/keywarden/providers"
)

// The sidecar's defaults. This package owns them: internal/config copies
// only what a config file sets, and a zero Options field takes the default
// noted on it.
const (
	// DefaultListen is the sidecar's TCP address when none is configured
	// (see ListenAddrs).
	DefaultListen = "127.0.0.1:8787"
	// DefaultMetricsListen serves /healthz, /readyz and /metrics when no
	// address is configured (see ListenAddrs).
	DefaultMetricsListen = "127.0.0.1:9787"
	// MetricsOff is the metrics address that turns the metrics listener off.
	MetricsOff = "off"
	// DefaultUpstream is a route's upstream when it names none.
	DefaultUpstream = "https://api.anthropic.com"
	// DefaultRPS and DefaultConcurrency are the sidecar's per-client limits
	// when its config leaves them unset (Options.RPS and
	// Options.Concurrency themselves are off at zero, for library use).
	DefaultRPS         = 100
	DefaultConcurrency = 1024
	// DefaultHeaderTimeout bounds the wait for upstream response headers: a
	// non-streaming Messages request sends them only when done.
	DefaultHeaderTimeout = 10 * time.Minute
	// DefaultClientHeaderTimeout bounds reading a client's request headers.
	DefaultClientHeaderTimeout = 30 * time.Second
	// DefaultIdleTimeout closes idle keep-alive connections.
	DefaultIdleTimeout = 90 * time.Second
	// DefaultShutdownTimeout bounds the drain after SIGTERM.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultStartTimeout bounds how long a sidecar waits at start for the
	// first read of its keys before it gives up.
	DefaultStartTimeout = 2 * time.Minute
	// MaxRetryBodyLimit is the largest MaxRetryBody accepted.
	MaxRetryBodyLimit = 256 << 20
)

// ListenAddrs returns the TCP address and the metrics address a sidecar
// opens for its configured listen, unix socket and metrics settings: listen
// defaults to DefaultListen unless only a unix socket is set (then ""),
// metrics to DefaultMetricsListen, and MetricsOff gives "".
func ListenAddrs(listen, unixSocket, metrics string) (listenAddr, metricsAddr string) {
	listenAddr = listen
	if listen == "" && unixSocket == "" {
		listenAddr = DefaultListen
	}
	switch metrics {
	case "":
		metricsAddr = DefaultMetricsListen
	case MetricsOff:
	default:
		metricsAddr = metrics
	}
	return listenAddr, metricsAddr
}

// IsLoopback reports whether a host:port address listens on loopback only
// (netrule.IsLoopback, the one rule).
func IsLoopback(addr string) bool { return netrule.IsLoopback(addr) }

// CheckAddr checks a TCP address a sidecar's config names (listen,
// metrics_listen, a route's listener): host:port with a numeric port from
// 1 to 65535. A service name such as http is refused (it hides the port a
// client must use), and so is port 0 (a random port no client could know),
// which the proxy itself accepts for tests and library use.
func CheckAddr(addr string) error {
	if _, err := addrPort(addr); err != nil {
		return err
	}
	return nil
}

// addrPort returns the port of a host:port address, checked as CheckAddr
// says.
func addrPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("%q is not host:port; write it like %s", addr, DefaultListen)
	}
	n := 0
	for i := 0; i < len(port) && n <= 65535; i++ {
		if port[i] < '0' || port[i] > '9' {
			n = -1
			break
		}
		n = n*10 + int(port[i]-'0')
	}
	if port == "" || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q: the port must be a number from 1 to 65535; write it like %s", addr, DefaultListen)
	}
	return n, nil
}

// SameAddr reports whether two addresses that CheckAddr accepts would
// bind the same port: the same port number, and the same host, where
// localhost is 127.0.0.1, IP addresses are compared as addresses, and an
// empty or unspecified host (0.0.0.0, ::) takes the port on every host.
func SameAddr(a, b string) bool {
	ha, _, errA := net.SplitHostPort(a)
	hb, _, errB := net.SplitHostPort(b)
	pa, errPA := addrPort(a)
	pb, errPB := addrPort(b)
	if errA != nil || errB != nil || errPA != nil || errPB != nil || pa != pb {
		return false
	}
	na, nb := bindHost(ha), bindHost(hb)
	return na == "" || nb == "" || na == nb
}

// bindHost normalizes a listen host for SameAddr: "" for every host.
func bindHost(h string) string {
	if strings.EqualFold(h, "localhost") {
		return "127.0.0.1"
	}
	if ip := net.ParseIP(h); ip != nil {
		if ip.IsUnspecified() {
			return ""
		}
		return ip.String()
	}
	return strings.ToLower(h)
}

// CheckListen checks an address that serves the API: host:port, and
// loopback unless clients must present a token.
func CheckListen(addr string, clientToken bool) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%q is not host:port; write it like %s", addr, DefaultListen)
	}
	if !clientToken && !IsLoopback(addr) {
		return fmt.Errorf("%q is not a loopback address and no client token is set: anyone who reaches it could spend the key; set client_token_file to a file holding a random token, or listen on 127.0.0.1", addr)
	}
	return nil
}

// CheckAllowPath checks one allowlisted path prefix: a clean path under
// /v1/ that does not open the Admin API.
func CheckAllowPath(p string) error {
	switch {
	case p == "/v1" || p == "/v1/" || UnderPrefix(p, AdminPrefix):
		return fmt.Errorf("%q would expose the Admin API, which the sidecar never forwards; list data-plane paths such as /v1/messages", p)
	case !strings.HasPrefix(p, "/v1/"):
		return fmt.Errorf("%q must be an API path under /v1/, e.g. /v1/messages", p)
	case !plainPath(p):
		return fmt.Errorf("%q: a path is letters, digits, / and - . _ ~ ! $ & ' ( ) * + , ; = : @ (no query, fragment, escape or space: no request path would match it)", p)
	case path.Clean(p) != p:
		return fmt.Errorf("%q is not a clean path; write it as %q", p, path.Clean(p))
	}
	return nil
}

// plainPath reports whether p holds only the characters a request's path
// carries literally (RFC 3986 pchar without escapes, and /): letters,
// digits, - . _ ~ ! $ & ' ( ) * + , ; = : @. A ? or # starts a query or a
// fragment, % an escape, and a space, a control or a non-ASCII character
// cannot be sent as they are: a prefix with one never matches a request.
func plainPath(p string) bool {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// CheckPrefix checks a route's path prefix: "/" or a clean path that does
// not hide API paths, and not shaped like a key (providers.KeyShaped: the prefix
// names the route in metrics and logs), which is refused unquoted.
func CheckPrefix(p string) error {
	switch {
	case providers.KeyShaped(p):
		return errors.New(keyShapedHint)
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q must start with /", p)
	case !plainPath(p):
		return fmt.Errorf("%q: a prefix is letters, digits, / and - . _ ~ ! $ & ' ( ) * + , ; = : @ (no query, fragment, escape or space: no request path would match it)", p)
	case p != "/" && path.Clean(p) != p:
		return fmt.Errorf("%q is not a clean path; write it as %q", p, path.Clean(p))
	case UnderPrefix(p, "/v1"):
		return fmt.Errorf("%q would hide API paths; use a name such as /staging (it is removed before forwarding)", p)
	}
	return nil
}

// ParseUpstream parses an upstream base URL: https, or http to this
// machine only, so that a key never crosses a network in clear
// (netrule.CheckSecure), with a host, a port from 1 to 65535 and without
// credentials, query or fragment.
func ParseUpstream(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return nil, fmt.Errorf("upstream %q is not an absolute URL; write it like %s", raw, DefaultUpstream)
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("upstream %q: scheme must be https (or http on loopback)", raw)
	case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("upstream %q must not carry credentials, a query or a fragment", raw)
	}
	if err := netrule.CheckSecure(u); err != nil {
		return nil, fmt.Errorf("upstream %q: %w", raw, err)
	}
	return u, nil
}

// ParseAuth parses an auth spelling, as providers.Auth.String writes it:
// "x-api-key" or "bearer"; "" is x-api-key.
func ParseAuth(s string) (providers.Auth, error) {
	for _, a := range []providers.Auth{providers.AuthAPIKey, providers.AuthBearer} {
		if s == a.String() {
			return a, nil
		}
	}
	if s == "" {
		return providers.AuthAPIKey, nil
	}
	return 0, fmt.Errorf("%q; use %s (the Claude API) or %s", s, providers.AuthAPIKey, providers.AuthBearer)
}

// ParseVersionPolicy parses a version policy spelling, as
// providers.VersionPolicy.String writes it: "set-if-absent" or "enforce";
// "" is set-if-absent.
func ParseVersionPolicy(s string) (providers.VersionPolicy, error) {
	for _, p := range []providers.VersionPolicy{providers.VersionSetIfAbsent, providers.VersionEnforce} {
		if s == p.String() {
			return p, nil
		}
	}
	if s == "" {
		return providers.VersionSetIfAbsent, nil
	}
	return 0, fmt.Errorf("%q; use %s or %s", s, providers.VersionSetIfAbsent, providers.VersionEnforce)
}

// CheckVersion checks an anthropic-version value: a date such as
// providers.DefaultAnthropicVersion.
func CheckVersion(v string) error {
	if _, err := time.Parse("2006-01-02", v); err != nil {
		return fmt.Errorf("%q is not a date such as %s", v, providers.DefaultAnthropicVersion)
	}
	return nil
}

// RouteVersion returns the anthropic-version a route sends: its own, else
// providers.DefaultAnthropicVersion with x-api-key auth and none with
// bearer auth.
func RouteVersion(version string, auth providers.Auth) string {
	if version == "" && auth == providers.AuthAPIKey {
		return providers.DefaultAnthropicVersion
	}
	return version
}

// MinConfigTimeout is the shortest timeout a config file sets: below it
// (1ns, 1ms) every request or start would time out. The proxy's Options,
// for library use and tests, take any positive value (CheckTimeout).
const MinConfigTimeout = time.Second

// CheckConfigTimeout checks a timeout a config file sets: zero (the
// default) or at least MinConfigTimeout.
func CheckConfigTimeout(d time.Duration) error {
	if err := CheckTimeout(d); err != nil {
		return err
	}
	if d != 0 && d < MinConfigTimeout {
		return fmt.Errorf("%v is shorter than %v: every wait would time out; use a duration such as 30s, or leave it unset for the default", d, MinConfigTimeout)
	}
	return nil
}

// CheckTimeout checks a timeout: zero (the default) or positive.
func CheckTimeout(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%v is negative; use a positive duration such as 30s, or leave it unset for the default", d)
	}
	return nil
}

// CheckMaxRetryBody checks the largest body kept for a retry after a 401:
// up to MaxRetryBodyLimit (negative: none is kept).
func CheckMaxRetryBody(n int64) error {
	if n > MaxRetryBodyLimit {
		return fmt.Errorf("%d bytes is above the limit of 256MiB; use 0 (keep none) up to 256MiB", n)
	}
	return nil
}

// DefaultAllowPaths are the upstream path prefixes forwarded by default:
// Messages (with count_tokens and batches), Models and Files.
var DefaultAllowPaths = []string{"/v1/messages", "/v1/models", "/v1/files"}

// AdminPrefix is the Admin API, never forwarded whatever the allowlist says.
const AdminPrefix = "/v1/organizations"

// UnderPrefix reports whether p is prefix or below it.
func UnderPrefix(p, prefix string) bool {
	return strings.HasPrefix(p, prefix) && (len(p) == len(prefix) || p[len(prefix)] == '/')
}

// Client names the sidecar gives itself.
const (
	// LocalClient is the client of a sidecar without client tokens (which
	// listens on loopback or a unix socket only).
	LocalClient = "local"
	// DefaultClient is the client of the single client token
	// (client_token_file).
	DefaultClient = "default"
)

// checkLabelName checks a name that becomes a metric label value (of a
// client or a budget): 1–63 letters, digits, '_', '.' or '-', starting with
// a letter or digit, and not shaped like a key (providers.KeyShaped), which is
// refused without being quoted.
func checkLabelName(what, name string) error {
	if providers.KeyShaped(name) {
		return fmt.Errorf("%s name: %s", what, keyShapedHint)
	}
	ok := name != "" && len(name) <= 63
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || i > 0 && (c == '_' || c == '.' || c == '-')
	}
	if !ok {
		return fmt.Errorf("%s name %q: use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", what, name)
	}
	return nil
}

// keyShapedHint is the refusal of a value providers.KeyShaped matches.
const keyShapedHint = "the value is " + providers.KeyShapes + "; give a name, never a key"

// CheckClientName checks a client's name, a metric label (see
// checkLabelName), and not LocalClient (which names the clients of a
// sidecar without tokens).
func CheckClientName(name string) error {
	if err := checkLabelName("client", name); err != nil {
		return err
	}
	if name == LocalClient {
		return fmt.Errorf("client name %q is reserved for the clients of a sidecar without tokens; pick another", name)
	}
	return nil
}

// BudgetWindows are the windows a budget may have.
var BudgetWindows = map[string]time.Duration{"minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}

// CheckBudget checks a budget: a name (CheckClientName's rules, "local"
// aside), a window of BudgetWindows, and exactly one positive limit, in
// tokens or US dollars.
func CheckBudget(name string, window time.Duration, tokens int64, usd float64) error {
	if err := checkLabelName("budget", name); err != nil {
		return err
	}
	ok := false
	for _, w := range BudgetWindows {
		ok = ok || w == window
	}
	switch {
	case !ok:
		return fmt.Errorf("budget %s: the window must be a minute, an hour or a day", name)
	case (tokens > 0) == (usd > 0) || tokens < 0 || usd < 0 || math.IsNaN(usd) || math.IsInf(usd, 0):
		return fmt.Errorf("budget %s: set one positive limit, tokens or usd", name)
	}
	return nil
}
