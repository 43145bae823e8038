package settings_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/proxy/settings"
	"github.com/keywarden/keywarden/providers"
)

func TestListenAddrs(t *testing.T) {
	for _, tc := range []struct{ listen, unix, metrics, wantListen, wantMetrics string }{
		{"", "", "", settings.DefaultListen, settings.DefaultMetricsListen},
		{"", "/run/kw.sock", "off", "", ""},
		{"127.0.0.1:1", "/run/kw.sock", "127.0.0.1:2", "127.0.0.1:1", "127.0.0.1:2"},
	} {
		l, m := settings.ListenAddrs(tc.listen, tc.unix, tc.metrics)
		if l != tc.wantListen || m != tc.wantMetrics {
			t.Errorf("ListenAddrs(%q, %q, %q) = %q, %q", tc.listen, tc.unix, tc.metrics, l, m)
		}
	}
}

// TestSpellingsAreProviders checks that the auth and version-policy
// spellings parsed here are the ones providers writes, so that neither is
// defined twice.
func TestSpellingsAreProviders(t *testing.T) {
	for _, a := range []providers.Auth{providers.AuthAPIKey, providers.AuthBearer} {
		if got, err := settings.ParseAuth(a.String()); err != nil || got != a {
			t.Errorf("ParseAuth(%q) = %v, %v", a, got, err)
		}
	}
	for _, p := range []providers.VersionPolicy{providers.VersionSetIfAbsent, providers.VersionEnforce} {
		if got, err := settings.ParseVersionPolicy(p.String()); err != nil || got != p {
			t.Errorf("ParseVersionPolicy(%q) = %v, %v", p, got, err)
		}
	}
	if _, err := settings.ParseAuth("basic"); err == nil {
		t.Error("ParseAuth accepted basic")
	}
	if settings.RouteVersion("", providers.AuthAPIKey) != providers.DefaultAnthropicVersion || settings.RouteVersion("", providers.AuthBearer) != "" ||
		settings.RouteVersion("2024-01-01", providers.AuthBearer) != "2024-01-01" {
		t.Error("RouteVersion")
	}
}

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"loopback listen", settings.CheckListen("127.0.0.1:1", false), true},
		{"public listen without token", settings.CheckListen("0.0.0.0:1", false), false},
		{"public listen with token", settings.CheckListen("0.0.0.0:1", true), true},
		{"listen not host:port", settings.CheckListen("8787", true), false},
		{"allow path", settings.CheckAllowPath("/v1/messages"), true},
		{"admin allow path", settings.CheckAllowPath("/v1/organizations/api_keys"), false},
		{"allow path /v1", settings.CheckAllowPath("/v1"), false},
		{"unclean allow path", settings.CheckAllowPath("/v1/models/../organizations"), false},
		{"prefix", settings.CheckPrefix("/staging"), true},
		{"prefix hiding the API", settings.CheckPrefix("/v1"), false},
		// A prefix or path no request can match: a query, a fragment, an
		// escape, a space, a control or non-ASCII character.
		{"prefix with a query", settings.CheckPrefix("/staging?x=1"), false},
		{"prefix with a fragment", settings.CheckPrefix("/staging#a"), false},
		{"prefix with an escape", settings.CheckPrefix("/a%2Fb"), false},
		{"prefix with a space", settings.CheckPrefix("/my app"), false},
		{"prefix non-ASCII", settings.CheckPrefix("/é"), false},
		{"prefix of pchars", settings.CheckPrefix("/team:a@b/x~y_z-1.2!$&'()*+,;="), true},
		{"allow path with a query", settings.CheckAllowPath("/v1/messages?x"), false},
		{"allow path with a tab", settings.CheckAllowPath("/v1/mess\tages"), false},
		{"allow path with a colon", settings.CheckAllowPath("/v1/models/m:count"), true},
		{"timeout", settings.CheckTimeout(-1), false},
		{"retry body", settings.CheckMaxRetryBody(settings.MaxRetryBodyLimit + 1), false},
		{"version", settings.CheckVersion("latest"), false},
	} {
		if (tc.err == nil) != tc.ok {
			t.Errorf("%s: got %v, want ok=%v", tc.name, tc.err, tc.ok)
		}
	}
	for raw, ok := range map[string]bool{
		"https://api.anthropic.com": true, "http://127.0.0.1:9000/": true, "http://localhost": true,
		"http://api.example.com": false, "ftp://x": false, "api.example.com": false, "https://u:p@x": false, "https://x/?q=1": false,
		"http://LOCALHOST:9000": true, "https://:443": false, "https://api.anthropic.com:99999": false, "https://127.0.0.1:0": false,
	} {
		if _, err := settings.ParseUpstream(raw); (err == nil) != ok {
			t.Errorf("ParseUpstream(%q): %v, want ok=%v", raw, err, ok)
		}
	}
}

func TestCheckAddrAndSameAddr(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8787": true, "[::1]:1": true, "localhost:65535": true, ":8787": true,
		"127.0.0.1:0": false, "127.0.0.1:65536": false, "127.0.0.1:99999": false, "127.0.0.1:-1": false,
		"127.0.0.1:+80": false, "127.0.0.1:http": false, "127.0.0.1:": false, "127.0.0.1": false,
		"127.0.0.1:99999999999999999999": false,
	} {
		if err := settings.CheckAddr(addr); (err == nil) != ok {
			t.Errorf("CheckAddr(%q) = %v", addr, err)
		}
	}
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"127.0.0.1:8787", "127.0.0.1:8787", true},
		{"localhost:8787", "127.0.0.1:8787", true},
		{"LOCALHOST:8787", "127.0.0.1:08787", true},
		{"0.0.0.0:8787", "127.0.0.1:8787", true},
		{":8787", "[::1]:8787", true},
		{"[::]:8787", "10.0.0.1:8787", true},
		{"[::ffff:127.0.0.1]:8787", "127.0.0.1:8787", true},
		{"127.0.0.1:8787", "127.0.0.1:8788", false},
		{"127.0.0.1:8787", "127.0.0.2:8787", false},
		{"127.0.0.1:8787", "", false},
		{"127.0.0.1:http", "127.0.0.1:80", false},
	} {
		if got := settings.SameAddr(tc.a, tc.b); got != tc.same {
			t.Errorf("SameAddr(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

// FuzzRoutePaths: a prefix or allowlisted path the config accepts is one a
// request can carry as it is: a request to it parses back to a path that
// starts with it, with no query or fragment taken out of it.
func FuzzRoutePaths(f *testing.F) {
	for _, s := range []string{"/", "/staging", "/staging?x=1", "/a#b", "/a%2Fb", "/my app", "/v1/messages", "/v1/models/m:count", "/é", "/a/../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		for _, check := range []func(string) error{settings.CheckPrefix, settings.CheckAllowPath} {
			if check(p) != nil {
				continue
			}
			u, err := url.Parse("http://127.0.0.1:1" + p + "/x")
			if err != nil || u.RawQuery != "" || u.Fragment != "" || !strings.HasPrefix(u.Path, p) || u.EscapedPath() != u.Path {
				t.Fatalf("accepted %q, which a request carries as %v (path %q, err %v)", p, u, u.Path, err)
			}
		}
	})
}
