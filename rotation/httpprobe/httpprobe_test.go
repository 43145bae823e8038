package httpprobe_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/httpprobe"
)

const good = "sk-test-goodgoodgoodgoodgood"

func server(t *testing.T) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/busy":
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
		case "/down":
			w.WriteHeader(http.StatusBadGateway)
		case "/redirect":
			http.Redirect(w, r, "http://example.invalid/steal", http.StatusFound)
		case "/created":
			if r.Method == http.MethodPost && r.Header.Get("X-Key") == good {
				w.WriteHeader(http.StatusCreated)
				return
			}
			w.WriteHeader(http.StatusUnauthorized)
		default:
			if r.Header.Get("Authorization") == "Bearer "+good {
				return
			}
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func TestProbe(t *testing.T) {
	s := server(t)
	bearer := map[string]string{"Authorization": "Bearer {{key}}"}
	for _, tc := range []struct {
		name      string
		o         httpprobe.Options
		key       string
		ok        bool
		retryable bool
		after     bool
	}{
		{"good key", httpprobe.Options{URL: s.URL + "/v1/check", Headers: bearer}, good, true, false, false},
		{"bad key", httpprobe.Options{URL: s.URL + "/v1/check", Headers: bearer}, "sk-test-badbadbadbadbad", false, false, false},
		{"rate limited", httpprobe.Options{URL: s.URL + "/busy", Headers: bearer}, good, false, true, true},
		{"server error", httpprobe.Options{URL: s.URL + "/down", Headers: bearer}, good, false, true, false},
		{"redirect not followed", httpprobe.Options{URL: s.URL + "/redirect", Headers: bearer}, good, false, false, false},
		{"method, header, status", httpprobe.Options{Method: "post", URL: s.URL + "/created", Headers: map[string]string{"x-key": "{{key}}"}, ExpectStatus: 201}, good, true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := httpprobe.New(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Probe(context.Background(), providers.NewSecret(tc.key))
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var pe *rotation.ProbeError
			if !errors.As(err, &pe) || pe.Retryable != tc.retryable || (pe.RetryAfter > 0) != tc.after {
				t.Fatalf("got %#v", err)
			}
			if strings.Contains(err.Error(), tc.key) {
				t.Fatal("the error holds the key")
			}
		})
	}
	// Unreachable: retryable.
	p, _ := httpprobe.New(httpprobe.Options{URL: "http://127.0.0.1:1/x", Headers: bearer})
	var pe *rotation.ProbeError
	if err := p.Probe(context.Background(), providers.NewSecret(good)); !errors.As(err, &pe) || !pe.Retryable {
		t.Fatalf("unreachable: %v", err)
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		o    httpprobe.Options
		want string
	}{
		{httpprobe.Options{URL: "ftp://x", Headers: map[string]string{"A": "{{key}}"}}, "not an absolute http(s) URL"},
		// The request carries the key: never in clear text over the
		// network, never to a URL with credentials.
		{httpprobe.Options{URL: "http://192.0.2.2/check", Headers: map[string]string{"A": "{{key}}"}}, "clear text"},
		{httpprobe.Options{URL: "http://svc.internal:8080/check", Headers: map[string]string{"A": "{{key}}"}}, "clear text"},
		{httpprobe.Options{URL: "https://u:S3CRET@x/check", Headers: map[string]string{"A": "{{key}}"}}, "credentials"},
		{httpprobe.Options{URL: "https://x/check?key={{key}}", Headers: map[string]string{"A": "{{key}}"}}, "must not carry"},
		{httpprobe.Options{URL: "https://x/check", Headers: map[string]string{"A": "static"}}, "no header carries"},
		{httpprobe.Options{URL: "https://x/check", Headers: map[string]string{"Bad Name": "{{key}}"}}, "not a valid header"},
		{httpprobe.Options{URL: "https://x/check", Headers: map[string]string{"A": "{{key}}"}, ExpectStatus: 42}, "not an HTTP status"},
	} {
		_, err := httpprobe.New(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want %q", tc.o, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "S3CRET") {
			t.Errorf("the error holds the URL's password: %v", err)
		}
	}
	for _, u := range []string{"https://x/check", "http://127.0.0.1:8080/check", "http://localhost/check"} {
		if _, err := httpprobe.New(httpprobe.Options{URL: u, Headers: map[string]string{"A": "{{key}}"}}); err != nil {
			t.Errorf("url %s: %v", u, err)
		}
	}
}
