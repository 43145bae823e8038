package proxy

import (
	"net/http"
	"strings"

	"github.com/keywarden/keywarden/internal/proxy/settings"
)

// TokenHeader carries the client token. Clients may instead send the token
// as their x-api-key or bearer token, so that SDKs need no extra header.
const TokenHeader = "X-Keywarden-Token"

// AllowMethods are the request methods forwarded: those of the Claude API's
// data plane (POST for Messages, count_tokens and batches, GET for Models,
// batch results and Files, DELETE for batches and Files). Every other
// method (OPTIONS, TRACE, CONNECT, HEAD, PUT, PATCH, and any extension
// method such as TRACK) is refused before the token check and never
// reaches the upstream.
var AllowMethods = []string{http.MethodGet, http.MethodPost, http.MethodDelete}

// allowHeader is the Allow header of a method refusal.
var allowHeader = strings.Join(AllowMethods, ", ")

// allowedMethod returns m as its constant name when it is in AllowMethods
// (case-sensitive, as methods are), and false otherwise.
func allowedMethod(m []byte) (string, bool) {
	switch string(m) {
	case http.MethodGet:
		return http.MethodGet, true
	case http.MethodPost:
		return http.MethodPost, true
	case http.MethodDelete:
		return http.MethodDelete, true
	}
	return "", false
}

// forwardProxyRequest reports a request whose target is not a plain path:
// the absolute form, the authority form (CONNECT) or the asterisk form
// ("OPTIONS *"). The sidecar is never an open proxy.
func forwardProxyRequest(target []byte) bool {
	return len(target) == 0 || target[0] != '/'
}

// ClientAddressHeader reports whether a request header (in canonical form)
// names the client or the chain of proxies it came through: Forwarded,
// Via, every X-Forwarded-* header, and the single-address headers that
// proxies and CDNs set (X-Real-Ip, True-Client-Ip, Cf-Connecting-Ip,
// Fastly-Client-Ip, X-Client-Ip, X-Cluster-Client-Ip, X-Originating-Ip,
// Client-Ip, Envoy's X-Envoy-External-Address, Google's X-Proxyuser-Ip and
// X-Appengine-User-Ip). It is the one rule for these headers: the sidecar
// removes every one of them before forwarding and adds none, so the upstream never
// learns the client's address or the network's layout.
func ClientAddressHeader(name string) bool {
	switch name {
	case "Forwarded", "Via", "X-Real-Ip", "True-Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip",
		"X-Client-Ip", "X-Cluster-Client-Ip", "X-Originating-Ip", "Client-Ip",
		"X-Envoy-External-Address", "X-Proxyuser-Ip", "X-Appengine-User-Ip":
		return true
	}
	return strings.HasPrefix(name, "X-Forwarded-")
}

// stripClientHeaders removes the client token and every client-address
// header from h.
func stripClientHeaders(h *fields) {
	h.drop(func(name string) bool { return name == TokenHeader || ClientAddressHeader(name) })
}

// cleanPath reports whether p is a plain absolute path: no empty, "." or
// ".." segment (a trailing slash aside) and no backslash, so that no
// allowlisted prefix can be walked out of, upstream or here.
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' || strings.IndexByte(p, '\\') >= 0 {
		return false
	}
	for i := 1; i < len(p); {
		j := strings.IndexByte(p[i:], '/')
		seg := p[i:]
		if j >= 0 {
			seg = p[i : i+j]
		}
		if seg == "." || seg == ".." || (seg == "" && j >= 0) {
			return false
		}
		if j < 0 {
			break
		}
		i += j + 1
	}
	return true
}

// checkPath returns the refusal for an upstream path, or nil.
func (p *Proxy) checkPath(path string) *apiError {
	if !cleanPath(path) {
		return &errBadPath
	}
	if settings.UnderPrefix(path, settings.AdminPrefix) {
		return &errAdmin
	}
	for _, a := range p.allow {
		if settings.UnderPrefix(path, a) {
			return nil
		}
	}
	return &errNotAllowed
}
