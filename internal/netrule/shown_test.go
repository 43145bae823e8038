package netrule_test

import (
	"net/url"
	"testing"

	"github.com/keywarden/keywarden/internal/netrule"
)

// TestWithoutQuery: the URL shown keeps scheme, user, host and path, drops
// the query and the fragment (even empty ones: "?" and "#"), and leaves
// the URL given as it was.
func TestWithoutQuery(t *testing.T) {
	for raw, want := range map[string]string{
		"http://127.0.0.1:9787/metrics?token=t0k#t0k":  "http://127.0.0.1:9787/metrics",
		"https://prom.example.com/prom/?access_token=": "https://prom.example.com/prom/",
		"https://prom.example.com/a%2Fb?#":             "https://prom.example.com/a%2Fb",
		"https://u:pw@prom.example.com/p?q=1":          "https://u:xxxxx@prom.example.com/p",
		"https://prom.example.com":                     "https://prom.example.com",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		before := *u
		if got := netrule.WithoutQuery(u).Redacted(); got != want {
			t.Errorf("%s: shown %q, want %q", raw, got, want)
		}
		if *u != before {
			t.Errorf("%s: changed to %q", raw, u.String())
		}
	}
}
