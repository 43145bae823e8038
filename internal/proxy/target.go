package proxy

import (
	"net/url"
	"strings"
)

// parseTarget reads a request's target (origin form, as the serve's
// forwardProxyRequest check leaves it) into u exactly as
// url.ParseRequestURI does, as net/http's server reads it: the path
// decoded, the query raw. A target whose path needs no decoding or
// escaping and whose query is printable (the SDKs' every request) is cut
// here, without ParseRequestURI's allocation; FuzzParseTarget holds the
// two readings equal.
func parseTarget(target string, u *url.URL) error {
	if plainTarget(target) {
		path, query, _ := strings.Cut(target, "?")
		*u = url.URL{Path: path, RawQuery: query}
		return nil
	}
	p, err := url.ParseRequestURI(target)
	if err != nil {
		return err
	}
	*u = *p
	return nil
}

// plainTarget reports a target that starts with '/', whose path holds only
// characters that url's path escaping leaves as they are (letters, digits,
// "-._~/$&+,:;=@"), and whose query, if any, is not empty and holds only
// printable ASCII.
func plainTarget(t string) bool {
	if t == "" || t[0] != '/' || t[len(t)-1] == '?' {
		return false
	}
	i := 0
	for ; i < len(t) && t[i] != '?'; i++ {
		if !pathByte[t[i]] {
			return false
		}
	}
	for i++; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return false
		}
	}
	return true
}

// pathByte holds the characters of plainTarget's path.
var pathByte = func() (t [256]bool) {
	for c := range 256 {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-._~/$&+,:;=@", byte(c)) >= 0:
			t[c] = true
		}
	}
	return t
}()
