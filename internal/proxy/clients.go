package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"

	"github.com/keywarden/keywarden/internal/proxy/settings"
)

// Client is a named client of the sidecar: a service known by its token.
type Client struct {
	// Name labels the client's metrics and logs; it must pass
	// settings.CheckClientName.
	Name string
	// Token identifies the client: it sends it in x-keywarden-token, or
	// as its x-api-key or bearer token. Required, unique.
	Token string
	// RPS, Burst and Concurrency, when RPS or Concurrency is set, replace
	// the per-address limits of Options for this client's requests: they
	// hold for the client as a whole, whatever its addresses.
	RPS         float64
	Burst       int
	Concurrency int
}

// clientEntry is a client as the Proxy checks it.
type clientEntry struct {
	name   string
	digest [sha256.Size]byte
	limit  *limiter // nil: the per-address limiter
}

// newClients returns the clients of o: the named clients, with
// ClientToken as the client settings.DefaultClient; or, without any
// token, the one client settings.LocalClient.
func newClients(o *Options) ([]clientEntry, error) {
	all := o.Clients
	if o.ClientToken != "" {
		all = append([]Client{{Name: settings.DefaultClient, Token: o.ClientToken}}, all...)
	}
	if len(all) == 0 {
		return []clientEntry{{name: settings.LocalClient}}, nil
	}
	out := make([]clientEntry, 0, len(all))
	names, digests := map[string]bool{}, map[[sha256.Size]byte]string{}
	for i, c := range all {
		if err := settings.CheckClientName(c.Name); err != nil {
			return nil, fmt.Errorf("proxy: client %d: %w", i, err)
		}
		if names[c.Name] {
			return nil, fmt.Errorf("proxy: client %s is defined twice (ClientToken is client %s)", c.Name, settings.DefaultClient)
		}
		names[c.Name] = true
		if c.Token == "" {
			return nil, fmt.Errorf("proxy: client %s has no token", c.Name)
		}
		d := sha256.Sum256([]byte(c.Token))
		if other, dup := digests[d]; dup {
			// Never the token itself: only the names.
			return nil, fmt.Errorf("proxy: clients %s and %s have the same token; give each its own", other, c.Name)
		}
		digests[d] = c.Name
		e := clientEntry{name: c.Name, digest: d}
		if c.RPS > 0 || c.Concurrency > 0 {
			e.limit = newLimiter(c.RPS, c.Burst, c.Concurrency)
		}
		out = append(out, e)
	}
	return out, nil
}

// tokens reports whether clients must present a token.
func (p *Proxy) tokens() bool {
	return len(p.clients) > 0 && p.clients[0].digest != [sha256.Size]byte{}
}

// identify returns the index of the client whose token r carries, in
// TokenHeader, x-api-key or as a bearer token (in h); ok is false when none
// matches. The token's digest is compared with every client's in constant
// time, so that neither a token, its length nor which client matched
// leaks through timing.
func (p *Proxy) identify(h *fields) (idx int, ok bool) {
	tok, found := presentedToken(h)
	if !found {
		return 0, false
	}
	sum := sha256.Sum256([]byte(tok))
	match := -1
	for i := range p.clients {
		if subtle.ConstantTimeCompare(sum[:], p.clients[i].digest[:]) == 1 {
			match = i
		}
	}
	return match, match >= 0
}

func presentedToken(h *fields) (string, bool) {
	if v := h.Values(TokenHeader); len(v) == 1 {
		return v[0], true
	}
	if v := h.Values("X-Api-Key"); len(v) == 1 {
		return v[0], true
	}
	if v := h.Values("Authorization"); len(v) == 1 && len(v[0]) > 7 && strings.EqualFold(v[0][:7], "bearer ") {
		return v[0][7:], true
	}
	return "", false
}
