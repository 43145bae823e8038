package proxy

import (
	"net/url"
	"testing"
)

// FuzzParseTarget holds parseTarget to url.ParseRequestURI (net/http's
// server's reading of a target): the same error or none, and the same
// path, raw path, query, escaped path, user, host and form, whether or not
// the target took the plain path. (The proxy refuses a target that does not
// start with '/' before it reads it; the fuzz does not.)
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"/v1/messages", "/v1/messages?beta=true", "/v1/models?limit=5&after_id=x", "/a%2Fb", "/a b", "/x?", "/x??y",
		"/x?a#b", "//evil/x", "/x/../y", "*", "http://h/x", "/é", "/x?a\x7f", "/a:b@c;d=e", "/x#f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		var got url.URL
		gerr := parseTarget(target, &got)
		want, werr := url.ParseRequestURI(target)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("%q: error %v, ParseRequestURI's %v", target, gerr, werr)
		}
		if werr != nil {
			return
		}
		if got.String() != want.String() || got.Path != want.Path || got.RawPath != want.RawPath ||
			got.RawQuery != want.RawQuery || got.ForceQuery != want.ForceQuery || got.EscapedPath() != want.EscapedPath() ||
			got.Scheme != want.Scheme || got.Host != want.Host || got.Opaque != want.Opaque ||
			(got.User == nil) != (want.User == nil) || got.User.String() != want.User.String() {
			t.Fatalf("%q (plain %v): got %#v, want %#v", target, plainTarget(target), got, *want)
		}
	})
}

func TestParseTargetAllocs(t *testing.T) {
	var u url.URL
	if n := testing.AllocsPerRun(100, func() { _ = parseTarget("/v1/messages?beta=true", &u) }); n != 0 {
		t.Fatalf("a plain target costs %v allocations", n)
	}
	if !plainTarget("/v1/messages") || plainTarget("/v1/%6Dessages") || plainTarget("/x?") {
		t.Fatal("plainTarget")
	}
}
