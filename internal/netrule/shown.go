package netrule

import "net/url"

// WithoutQuery returns a copy of u without its query and fragment: the
// rule for a URL keywarden shows (a header, a status line, an error).
// Neither is needed to name an endpoint, and either may hold a token (an
// access_token parameter pasted into a flag or a config). Print the copy
// with Redacted, which hides a password too.
func WithoutQuery(u *url.URL) *url.URL {
	c := *u
	c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = "", false, "", ""
	return &c
}
