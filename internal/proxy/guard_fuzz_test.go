package proxy_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/settings"
	"github.com/keywarden/keywarden/internal/telemetry"
	"github.com/keywarden/keywarden/providers"
)

// captured records the request an upstream got from the sidecar, over a
// real socket, and answers 200.
type captured struct {
	mu  sync.Mutex
	out *http.Request // URL.Host set to the upstream's host
	err error
}

// upstream starts an upstream that records into c, and returns its URL.
func (c *captured) upstream(t testing.TB) *url.URL {
	var host string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		c.mu.Lock()
		if c.out != nil {
			c.err = errors.New("two upstream requests for one client request")
		}
		r.URL.Host = host
		c.out = r
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	host = u.Host
	return u
}

func (c *captured) take() (*http.Request, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out, err := c.out, c.err
	c.out, c.err = nil, nil
	return out, err
}

// clientAddress is the fuzz target's own statement of the headers that
// must not leave, independent of proxy.ClientAddressHeader.
func clientAddress(name string) bool {
	n := strings.ToLower(name)
	return strings.HasPrefix(n, "x-forwarded-") || slices.Contains([]string{"forwarded", "via", "x-real-ip",
		"true-client-ip", "cf-connecting-ip", "fastly-client-ip", "x-client-ip", "x-cluster-client-ip",
		"x-originating-ip", "client-ip", "x-envoy-external-address", "x-proxyuser-ip", "x-appengine-user-ip"}, n)
}

// FuzzRequestGuard sends arbitrary request lines and headers, parsed as the
// server parses them, through the sidecar's handler with a client token and
// two prefix routes. Property: no panic; a forwarded request has an
// allowlisted method, a clean allowlisted path outside the Admin API that
// means on the wire what was checked, the route's upstream as its host,
// the sidecar's key as its only credential, no client token and no
// client-address header; and it carried the client token. Anything refused
// is a 4xx in the API's error shape.
func FuzzRequestGuard(f *testing.F) {
	const tok = "client-token-0123456789abcdef"
	for _, s := range [][4]string{
		{"POST", "/v1/messages", "X-Keywarden-Token", tok},
		{"GET", "/staging/v1/models", "Authorization", "Bearer " + tok},
		{"DELETE", "/v1/files/file_01", "X-Api-Key", tok},
		{"OPTIONS", "*", "X-Keywarden-Token", tok},
		{"TRACK", "/v1/messages", "X-Keywarden-Token", tok},
		{"CONNECT", "api.anthropic.com:443", "X-Keywarden-Token", tok},
		{"GET", "http://evil.example.com/v1/models", "X-Keywarden-Token", tok},
		{"GET", "/v1/models/%2e%2e/%2e%2e/v1/organizations", "X-Keywarden-Token", tok},
		{"GET", "/v1/models%2F..%2Fv1%2Forganizations", "X-Keywarden-Token", tok},
		{"GET", "/v1//organizations/api_keys", "X-Keywarden-Token", tok},
		{"GET", "/staging/../v1/organizations", "X-Keywarden-Token", tok},
		{"GET", "/v1/models\\..\\organizations", "X-Keywarden-Token", tok},
		{"POST", "/v1/messages", "X-Real-Ip", "203.0.113.7\r\nX-Keywarden-Token: " + tok},
		{"POST", "/v1/messages", "X-Envoy-External-Address", "203.0.113.7\r\nX-Keywarden-Token: " + tok},
		{"POST", "/v1/messages", "X-Proxyuser-Ip", "203.0.113.7\r\nX-Keywarden-Token: " + tok},
		{"POST", "/v1/messages", "X-Forwarded-Port", "443\r\nX-Keywarden-Token: " + tok},
		{"POST", "/v1/messages", "Via", "1.1 edge\r\nForwarded: for=203.0.113.7\r\nX-Keywarden-Token: " + tok},
		{"POST", "/v1/messages", "Cf-Connecting-Ip", "203.0.113.7\r\nX-Api-Key: sk-ant-api03-client\r\nX-Keywarden-Token: " + tok},
		{"GET", "/v1/models", "Proxy-Authorization", "Basic eDp5\r\nX-Keywarden-Token: " + tok},
		{"GET", "/v1/models?beta=true", "Connection", "X-Keywarden-Token, Via\r\nX-Keywarden-Token: " + tok},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}

	base := &captured{}
	up := base.upstream(f)
	stagingUp := base.upstream(f)
	stagingUp.Path = "/base"
	src, _ := newKeyStore(f, "prod", keyS).source(f, providers.Options{})
	p, err := proxy.New(proxy.Options{
		Routes: []proxy.Route{
			{Prefix: "/", Key: "prod", Source: src, Upstream: up},
			{Prefix: "/staging", Key: "prod", Source: src, Upstream: stagingUp},
		},
		ClientToken: tok,
		Metrics:     telemetry.New(),
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, method, target, name, value string) {
		raw := method + " " + target + " HTTP/1.1\r\nHost: sidecar\r\n" + name + ": " + value + "\r\nContent-Length: 0\r\n\r\n"
		// The token as net/http reads the request; a request it cannot
		// read is forwarded only if it holds the token at all.
		sentToken := strings.Contains(raw, tok)
		if in, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw))); err == nil {
			sentToken = in.Header.Get(proxy.TokenHeader) == tok || in.Header.Get("X-Api-Key") == tok ||
				strings.EqualFold(in.Header.Get("Authorization"), "bearer "+tok)
		}
		code, ctype, body := serveRaw(t, p, raw)
		out, err := base.take()
		if err != nil {
			t.Fatal(err)
		}
		if out == nil {
			if (code == 400 || code == 431) && strings.HasPrefix(ctype, "text/plain") {
				return // not HTTP: the server's own answer
			}
			var e struct {
				Type  string `json:"type"`
				Error struct{ Type, Message string }
			}
			if code < 400 || code > 499 || json.Unmarshal(body, &e) != nil || e.Type != "error" || e.Error.Type == "" {
				t.Fatalf("refused with %d %q, want a 4xx in the API's error shape", code, body)
			}
			return
		}
		if !sentToken {
			t.Fatal("forwarded without the client token")
		}
		if !slices.Contains(proxy.AllowMethods, out.Method) {
			t.Fatalf("forwarded method %q", out.Method)
		}
		path := out.URL.Path
		if out.URL.Host == stagingUp.Host {
			path = strings.TrimPrefix(path, stagingUp.Path)
		} else if out.URL.Host != up.Host {
			t.Fatalf("forwarded to host %q", out.URL.Host)
		}
		if out.Host != out.URL.Host {
			t.Fatalf("forwarded with Host %q to %q", out.Host, out.URL.Host)
		}
		if wire, err := url.PathUnescape(out.URL.EscapedPath()); err != nil || wire != out.URL.Path {
			t.Fatalf("the path on the wire %q means %q, not the checked %q", out.URL.EscapedPath(), wire, out.URL.Path)
		}
		allowed := false
		for _, a := range settings.DefaultAllowPaths {
			allowed = allowed || path == a || strings.HasPrefix(path, a+"/")
		}
		if !allowed || settings.UnderPrefix(path, settings.AdminPrefix) || strings.Contains(path, "//") ||
			strings.Contains(path, "/./") || strings.Contains(path, "/../") || strings.HasSuffix(path, "/..") ||
			strings.HasSuffix(path, "/.") || strings.Contains(path, "\\") {
			t.Fatalf("forwarded path %q", out.URL.Path)
		}
		if v := out.Header.Values("X-Api-Key"); len(v) != 1 || v[0] != keyS {
			t.Fatal("the forwarded request does not carry exactly the sidecar's key")
		}
		for n := range out.Header {
			switch strings.ToLower(n) {
			case "authorization", "proxy-authorization", "x-keywarden-token":
				t.Fatalf("forwarded the client's %s header", n)
			}
			if clientAddress(n) {
				t.Fatalf("forwarded the client-address header %s", n)
			}
		}
	})
}

// serveRaw sends the raw request bytes to p over an in-memory connection
// and returns the answer's status, content type and body.
func serveRaw(t *testing.T, p *proxy.Proxy, raw string) (int, string, []byte) {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() { p.ServeConn(server); close(done) }()
	defer func() { client.Close(); <-done }()
	_ = client.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = io.WriteString(client, raw) }()
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("the answer's body: %v", err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}
