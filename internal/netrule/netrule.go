// Package netrule holds the one rule for where keywarden may send a secret
// over the network: https anywhere, plain http only to this machine, and
// never credentials inside a URL. Every URL that will carry a key, an
// admin key, a store's token or a secret read back (the sidecar's
// upstreams, the Admin API's base URL, probes, store endpoints) is checked
// here. It imports only the standard library.
package netrule

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// IsLoopbackHost reports whether host (a name or an IP address, without a
// port or brackets) is this machine: localhost in any case, or a loopback
// address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsLoopback reports whether a host:port address is on this machine only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && IsLoopbackHost(host)
}

// IsHTTP reports whether u is an absolute http or https URL with a host:
// the shape every URL keywarden calls must have, secret or not.
func IsHTTP(u *url.URL) bool {
	return (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// CheckSecure checks that u can carry a secret: https, or http to this
// machine, with a host and no user info. Its error names neither u's user
// info nor anything else of u; callers prefix what the URL is for.
func CheckSecure(u *url.URL) error {
	switch {
	case !IsHTTP(u): // a host means no opaque part
		return fmt.Errorf("not an absolute http(s) URL")
	case u.User != nil:
		return fmt.Errorf("must not carry credentials (user info)")
	case u.Hostname() == "":
		return fmt.Errorf("has no host name")
	case u.Scheme == "http" && !IsLoopbackHost(u.Hostname()):
		return fmt.Errorf("would cross the network in clear text; use https (plain http only to this machine)")
	}
	if p := u.Port(); p != "" {
		n := 0
		for i := 0; i < len(p) && n <= 65535; i++ {
			if p[i] < '0' || p[i] > '9' {
				n = -1
				break
			}
			n = n*10 + int(p[i]-'0')
		}
		if n < 1 || n > 65535 {
			return fmt.Errorf("port %q: must be a number from 1 to 65535", p)
		}
	}
	return nil
}
