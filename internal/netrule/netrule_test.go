package netrule_test

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/netrule"
)

func TestCheckSecure(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"https://api.anthropic.com", ""},
		{"https://api.anthropic.com:8443/v1", ""},
		{"http://127.0.0.1:8080", ""},
		{"http://127.9.9.9", ""},
		{"http://[::1]:80", ""},
		{"http://localhost:9000", ""},
		{"http://LOCALHOST:9000", ""},
		{"http://api.example.com", "clear text"},
		{"http://192.0.2.2:18901", "clear text"},
		{"http://localhost.example.com", "clear text"},
		{"http://127.0.0.1.nip.io", "clear text"},
		{"https://admin:S3CRET@vault.example.com", "credentials"},
		{"http://u@127.0.0.1", "credentials"},
		{"ftp://x", "not an absolute"},
		{"https:opaque", "not an absolute"},
		{"/relative", "not an absolute"},
		{"https://:443", "no host name"},
		{"https://api.anthropic.com:99999", "port"},
		{"https://127.0.0.1:0", "port"},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		err = netrule.CheckSecure(u)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.url, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.url, err, tc.want)
		case err != nil && strings.Contains(err.Error(), "S3CRET"):
			t.Errorf("%s: the error names the password: %v", tc.url, err)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"localhost:1": true, "LocalHost:8787": true, "[::1]:1": true, "127.0.0.2:5": true,
		"0.0.0.0:1": false, "x": false, "10.0.0.1:80": false, ":80": false, "localhost.:80": false,
	} {
		if netrule.IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%q) = %v", addr, !want)
		}
	}
}

// FuzzCheckSecure: whatever URL a config or a store URL names, CheckSecure
// accepts it only when a secret sent there cannot cross a network in clear
// or carry credentials, and its error never quotes the URL's password.
func FuzzCheckSecure(f *testing.F) {
	for _, s := range []string{
		"https://api.anthropic.com", "http://127.0.0.1:8080", "http://LOCALHOST:1", "http://[::1]/x",
		"http://api.example.com", "https://u:S3CRET@h", "https://h:0", "https://:1", "http://127.0.0.1.nip.io",
		"http://[::ffff:127.0.0.1]:80", "http://0x7f.0.0.1", "http://127.1", "http://localhost%2eexample.com",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		err = netrule.CheckSecure(u)
		if err != nil {
			if p, ok := u.User.Password(); ok && len(p) >= 4 && strings.Contains(err.Error(), p) {
				t.Fatalf("error quotes the password: %v", err)
			}
			return
		}
		if u.User != nil {
			t.Fatalf("accepted user info: %q", raw)
		}
		switch u.Scheme {
		case "https":
		case "http":
			host := u.Hostname()
			ip := net.ParseIP(host)
			if !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
				t.Fatalf("accepted plain http to %q (%q)", host, raw)
			}
		default:
			t.Fatalf("accepted scheme %q", u.Scheme)
		}
		if u.Hostname() == "" {
			t.Fatalf("accepted no host: %q", raw)
		}
		if p := u.Port(); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				t.Fatalf("accepted port %q", p)
			}
		}
	})
}
