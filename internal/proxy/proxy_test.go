package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/settings"
	"github.com/keywarden/keywarden/providers"
)

func TestInjectsKeyAndStripsClientAuth(t *testing.T) {
	up := newUpstream(t, keyA)
	e := newEnv(t, up, func(o *proxy.Options) { o.ClientToken = "client-token-0123456789" })
	code, hdr, body := e.do(t, "POST", "/v1/messages", msgBody,
		"x-api-key", "client-token-0123456789", "authorization", "Bearer placeholder",
		"x-keywarden-token", "client-token-0123456789", "anthropic-beta", "files-api-2025-04-14")
	if code != 200 || !strings.HasPrefix(hdr.Get("request-id"), "req_") || !strings.Contains(body, `"type":"message"`) {
		t.Fatalf("got %d %s", code, body)
	}
	got := up.Requests()[0]
	if got.Key != keyA {
		t.Fatalf("upstream got key %s, want %s", providers.Fingerprint(got.Key), providers.Fingerprint(keyA))
	}
	for _, h := range []string{"Authorization", "X-Keywarden-Token"} {
		if got.Header.Get(h) != "" {
			t.Errorf("upstream got the client's %s header", h)
		}
	}
	if got.Header.Get("anthropic-beta") != "files-api-2025-04-14" || got.Header.Get("anthropic-version") != "2023-06-01" {
		t.Errorf("headers not passed or version not set: %v", got.Header)
	}
	if got.Header.Get("X-Forwarded-For") != "" {
		t.Error("the proxy added X-Forwarded-For")
	}
	e.assertNoKeys(t)
}

func TestVersionPolicyAndBearer(t *testing.T) {
	for _, tc := range []struct {
		name       string
		route      func(*proxy.Route)
		clientVer  string
		wantVer    string
		wantBearer bool
	}{
		{"set when absent", func(r *proxy.Route) {}, "", "2023-06-01", false},
		{"client's kept", func(r *proxy.Route) {}, "2023-01-01", "2023-01-01", false},
		{"enforced", func(r *proxy.Route) { r.VersionPolicy = providers.VersionEnforce }, "2023-01-01", "2023-06-01", false},
		{"bearer", func(r *proxy.Route) { r.Auth = providers.AuthBearer; r.Version = "" }, "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, keyA)
			e := newEnv(t, up, func(o *proxy.Options) { tc.route(&o.Routes[0]) })
			var hdr []string
			if tc.clientVer != "" {
				hdr = []string{"anthropic-version", tc.clientVer}
			}
			code, _, body := e.do(t, "GET", "/v1/models", "", append(hdr, "x-api-key", "placeholder")...)
			// The Claude API takes x-api-key only: a bearer route to it is
			// refused, which is beside the point here.
			if want := map[bool]int{false: 200, true: 401}[tc.wantBearer]; code != want {
				t.Fatalf("got %d %s, want %d", code, body, want)
			}
			got := up.Requests()[0]
			if v := got.Header.Get("anthropic-version"); v != tc.wantVer {
				t.Errorf("anthropic-version %q, want %q", v, tc.wantVer)
			}
			if bearer := got.Header.Get("authorization") == "Bearer "+keyA; bearer != tc.wantBearer {
				t.Errorf("bearer auth %v, want %v", bearer, tc.wantBearer)
			}
			if tc.wantBearer && got.Header.Get("x-api-key") != "" {
				t.Error("the client's x-api-key reached a bearer upstream")
			}
		})
	}
}

func TestAllowlist(t *testing.T) {
	up := newUpstream(t, keyA)
	// An allowlist naming the Admin API, or a path that is not clean, is
	// refused at New (the same rule config applies at load).
	for _, bad := range []string{"/v1/organizations", "/v1/organizations/api_keys", "/v1", "/v1/", "/v1/models/../organizations", "/v2/x"} {
		src, _ := newKeyStore(t, "prod", keyA).source(t, providers.Options{})
		u, _ := url.Parse(up.URL())
		if _, err := proxy.New(proxy.Options{Routes: []proxy.Route{{Prefix: "/", Source: src, Upstream: u}}, AllowPaths: []string{bad}}); err == nil {
			t.Errorf("New accepted allow path %q", bad)
		}
	}
	e := newEnv(t, up, nil)
	for _, tc := range []struct {
		method, path string
		forwarded    bool
	}{
		{"POST", "/v1/messages", true},
		{"POST", "/v1/messages/count_tokens", true},
		{"GET", "/v1/messages/batches/msgbatch_01", true},
		{"GET", "/v1/models", true},
		{"GET", "/v1/models/claude-sonnet-4-5", true},
		{"DELETE", "/v1/files/file_01", true},
		{"GET", "/v1/organizations/api_keys", false},
		{"GET", "/v1/organizations", false},
		{"GET", "/v1/complete", false},
		{"GET", "/v1/messagesX", false},
		{"GET", "/v2/messages", false},
		{"GET", "/", false},
		{"GET", "/v1/messages/../organizations/api_keys", false},
		{"GET", "/v1/models/%2e%2e/%2e%2e/v1/organizations", false},
		{"GET", "/v1/models%2F..%2F..%2Fv1%2Forganizations", false},
		{"GET", "/v1//organizations", false},
		{"GET", "/v1/models/.", false},
	} {
		// Send the path raw, as a client could, without Go's cleaning.
		before := len(up.Requests())
		code, body := rawRequest(t, e.srv.Addr(), tc.method+" "+tc.path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
		if forwarded := len(up.Requests()) > before; forwarded != tc.forwarded {
			t.Errorf("%s %s: forwarded %v, want %v (status %d)", tc.method, tc.path, forwarded, tc.forwarded, code)
			continue
		}
		if !tc.forwarded && (code != 403 || apiErrorType(t, body) != "permission_error") {
			t.Errorf("%s %s: got %d %s, want 403 permission_error", tc.method, tc.path, code, body)
		}
	}
	for _, r := range up.Requests() {
		if strings.Contains(r.Path, "organizations") {
			t.Fatalf("the upstream saw %s", r.Path)
		}
	}
	if m := e.scrape(t); !strings.Contains(m, `keywarden_sidecar_requests_total{code="403",route="/"}`) {
		t.Error("refusals not counted")
	}
}

// rawRequest writes a raw HTTP/1.1 request and returns the status and body.
func rawRequest(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	code, _, body := rawExchange(t, addr, raw)
	return code, body
}

// rawExchange is rawRequest with the response headers.
func rawExchange(t *testing.T, addr, raw string) (int, http.Header, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	// The answer to a HEAD has no body, whatever its Content-Length says.
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: strings.Fields(raw)[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestNeverAnOpenProxy(t *testing.T) {
	up := newUpstream(t, keyA)
	e := newEnv(t, up, nil)
	addr := e.srv.Addr()
	for _, raw := range []string{
		"GET " + up.URL() + "/v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET http://example.com/v1/models HTTP/1.1\r\nHost: example.com\r\n\r\n",
	} {
		code, body := rawRequest(t, addr, raw)
		if code != 403 || apiErrorType(t, body) != "permission_error" {
			t.Errorf("%q: got %d %s, want 403 permission_error", strings.SplitN(raw, "\r\n", 2)[0], code, body)
		}
	}
	if n := len(up.Requests()); n != 0 {
		t.Fatalf("the upstream saw %d requests", n)
	}
	// A Host header naming another server changes nothing: the request
	// goes to the configured upstream.
	code, _ := rawRequest(t, addr, "GET /v1/models HTTP/1.1\r\nHost: evil.example.com\r\n\r\n")
	if code != 200 || len(up.Requests()) != 1 {
		t.Fatalf("got %d after %d upstream requests", code, len(up.Requests()))
	}
	if h := up.Requests()[0].Header.Get("Host"); strings.Contains(h, "evil") {
		t.Fatal("the client's Host reached the upstream")
	}
}

// TestMethodAllowlist sends every refused method, extension methods and
// "OPTIONS *" included, to a real listener of the sidecar (net/http answers
// "OPTIONS *" itself unless told not to): each gets 405 in the API's error
// shape with an Allow header, and none reaches the upstream, even with the
// right client token.
func TestMethodAllowlist(t *testing.T) {
	const tok = "client-token-0123456789abcdef"
	up := newUpstream(t, keyA)
	e := newEnv(t, up, func(o *proxy.Options) { o.Listen = "127.0.0.1:0"; o.ClientToken = tok })
	srv, err := e.p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() { srv.Close(); <-served })
	addr := srv.Addr("listen").String()
	for _, target := range []string{
		"OPTIONS *", "OPTIONS /v1/messages", "TRACE /v1/messages", "TRACK /v1/messages", "HEAD /v1/models",
		"PUT /v1/files/file_01", "PATCH /v1/messages", "get /v1/models", "PROPFIND /v1/models",
		"CONNECT api.anthropic.com:443", "FOO-BAR /v1/messages",
	} {
		code, hdr, body := rawExchange(t, addr, target+" HTTP/1.1\r\nHost: x\r\nX-Keywarden-Token: "+tok+"\r\nContent-Length: 0\r\n\r\n")
		if strings.HasPrefix(target, "HEAD ") {
			if code != 405 || hdr.Get("Allow") != "GET, POST, DELETE" {
				t.Errorf("%s: got %d, allow %q, want 405", target, code, hdr.Get("Allow"))
			}
			continue // a HEAD answer has no body
		}
		if code != 405 || hdr.Get("Allow") != "GET, POST, DELETE" || apiErrorType(t, body) != "invalid_request_error" {
			t.Errorf("%s: got %d %s (allow %q), want 405 invalid_request_error", target, code, body, hdr.Get("Allow"))
		}
	}
	if n := len(up.Requests()); n != 0 {
		t.Fatalf("the upstream saw %d requests", n)
	}
	for _, target := range []string{"GET /v1/models", "POST /v1/messages/count_tokens", "DELETE /v1/files/file_01"} {
		// The fake upstream judges the empty bodies; what matters is that
		// the requests reach it.
		rawRequest(t, addr, target+" HTTP/1.1\r\nHost: x\r\nX-Keywarden-Token: "+tok+"\r\nContent-Length: 0\r\n\r\n")
	}
	if n := len(up.Requests()); n != 3 {
		t.Fatalf("the upstream saw %d requests, want 3", n)
	}
}

// TestClientAddressHeadersStripped checks the one rule for the headers
// that name the client or its proxy chain: none reaches the upstream,
// while other headers pass.
func TestClientAddressHeadersStripped(t *testing.T) {
	up := newUpstream(t, keyA)
	e := newEnv(t, up, nil)
	hdr := []string{"anthropic-beta", "files-api-2025-04-14", "x-stainless-lang", "go"}
	names := []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port",
		"X-Forwarded-Server", "X-Real-Ip", "Forwarded", "Via", "True-Client-Ip", "Cf-Connecting-Ip",
		"Fastly-Client-Ip", "X-Client-Ip", "X-Cluster-Client-Ip", "X-Originating-Ip", "Client-Ip",
		"X-Envoy-External-Address", "X-Proxyuser-Ip", "X-Appengine-User-Ip"}
	for _, n := range names {
		if !proxy.ClientAddressHeader(n) {
			t.Errorf("ClientAddressHeader(%q) = false", n)
		}
		hdr = append(hdr, n, "203.0.113.7")
	}
	for _, n := range []string{"Anthropic-Beta", "X-Forwarded", "Content-Type", "X-Request-Id"} {
		if proxy.ClientAddressHeader(n) {
			t.Errorf("ClientAddressHeader(%q) = true", n)
		}
	}
	if code, _, body := e.do(t, "GET", "/v1/models", "", hdr...); code != 200 {
		t.Fatalf("got %d %s", code, body)
	}
	got := up.Requests()[0].Header
	for name, v := range got {
		if strings.Contains(strings.Join(v, ","), "203.0.113.7") {
			t.Errorf("the upstream got the client's address in %s", name)
		}
	}
	if got.Get("anthropic-beta") != "files-api-2025-04-14" || got.Get("x-stainless-lang") != "go" {
		t.Errorf("other headers did not pass: %v", got)
	}
}

func TestClientToken(t *testing.T) {
	const tok = "client-token-0123456789abcdef"
	up := newUpstream(t, keyA)
	e := newEnv(t, up, func(o *proxy.Options) { o.ClientToken = tok })
	for _, tc := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"none", nil, 401},
		{"wrong", []string{"x-keywarden-token", "client-token-0123456789abcdeX"}, 401},
		{"prefix", []string{"x-keywarden-token", tok[:10]}, 401},
		{"placeholder key", []string{"x-api-key", "placeholder"}, 401},
		{"header", []string{"x-keywarden-token", tok}, 200},
		{"as x-api-key", []string{"x-api-key", tok}, 200},
		{"as bearer", []string{"authorization", "Bearer " + tok}, 200},
	} {
		code, _, body := e.do(t, "GET", "/v1/models", "", tc.hdr...)
		if code != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, code, tc.want)
		}
		if code == 401 && apiErrorType(t, body) != "authentication_error" {
			t.Errorf("%s: %s", tc.name, body)
		}
	}
	for _, r := range up.Requests() {
		if r.Key != keyA || r.Header.Get("x-keywarden-token") != "" || r.Header.Get("authorization") != "" {
			t.Fatal("the client token reached the upstream")
		}
	}
	if strings.Contains(e.logs.String(), tok) {
		t.Fatal("the client token was logged")
	}
}

func TestRateLimit(t *testing.T) {
	up := newUpstream(t, keyA)
	e := newEnv(t, up, func(o *proxy.Options) { o.RPS, o.Burst = 0.001, 2 })
	var codes []int
	var last http.Header
	var lastBody string
	for i := 0; i < 3; i++ {
		code, hdr, body := e.do(t, "GET", "/v1/models", "")
		codes = append(codes, code)
		last, lastBody = hdr, body
	}
	if fmt.Sprint(codes) != "[200 200 429]" {
		t.Fatalf("codes %v, want [200 200 429]", codes)
	}
	if ra, err := strconv.Atoi(last.Get("retry-after")); err != nil || ra < 1 {
		t.Fatalf("retry-after %q", last.Get("retry-after"))
	}
	if apiErrorType(t, lastBody) != "rate_limit_error" {
		t.Fatal(lastBody)
	}
	if m := e.scrape(t); !strings.Contains(m, `keywarden_sidecar_rate_limited_total{limit="rate",route="/"} 1`) {
		t.Fatal("rate-limited request not counted")
	}
}

func TestConcurrencyLimit(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})
	e := newEnv(t, up, func(o *proxy.Options) { o.Concurrency = 1 })
	done := make(chan int)
	go func() {
		code, _, _ := e.do(t, "GET", "/v1/models", "")
		done <- code
	}()
	<-entered
	code, hdr, body := e.do(t, "GET", "/v1/models", "")
	if code != 429 || hdr.Get("retry-after") != "1" || apiErrorType(t, body) != "rate_limit_error" {
		t.Fatalf("second request under way: got %d %s", code, body)
	}
	close(release)
	if c := <-done; c != 200 {
		t.Fatalf("first request: %d", c)
	}
	// The slot is free again.
	go func() { <-entered }()
	if code, _, _ := e.do(t, "GET", "/v1/models", ""); code != 200 {
		t.Fatalf("after the first finished: %d", code)
	}
}

func TestStreamingIsNeverHeldBack(t *testing.T) {
	// SSE, and any chunked body (no content-length), pass through unbuffered:
	// what the upstream sent reaches the client before the sidecar waits
	// for more.
	for _, ct := range []string{"text/event-stream", "application/x-ndjson"} {
		t.Run(ct, func(t *testing.T) { testFlushed(t, ct, false) })
	}
	// Over TLS, each event is a record of its own.
	t.Run("https", func(t *testing.T) { testFlushed(t, "text/event-stream", true) })
}

// testFlushed: the upstream sends one event, then waits until the client
// has read it through the proxy before it sends the next. A proxy that
// buffers deadlocks here, which the test's context turns into a failure.
func testFlushed(t *testing.T, contentType string, overTLS bool) {
	next := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", contentType)
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "event: content_block_delta\ndata: {\"i\":%d}\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	})
	up := &upstream{srv: httptest.NewUnstartedServer(h)}
	if overTLS {
		up.srv.StartTLS()
	} else {
		up.srv.Start()
	}
	t.Cleanup(up.srv.Close)
	e := newEnv(t, up, nil)
	if overTLS {
		proxy.TrustUpstream(e.p, up.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/messages", strings.NewReader(`{"stream":true}`))
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("content-type") != contentType {
		t.Fatalf("content-type %q", resp.Header.Get("content-type"))
	}
	br := bufio.NewReader(resp.Body)
	for i := 0; i < 3; i++ {
		var ev string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("event %d: %v (the proxy buffered the stream)", i, err)
			}
			if line == "\n" {
				break
			}
			ev += line
		}
		if !strings.Contains(ev, fmt.Sprintf(`{"i":%d}`, i)) {
			t.Fatalf("event %d: %q", i, ev)
		}
		next <- struct{}{}
	}
}

func TestSDKStreamsThroughSidecar(t *testing.T) {
	// The official Go SDK, pointed at the sidecar, streams a message while
	// the key rotates underneath: the first stream is answered 401 and
	// retried with the new key before any event reaches the SDK.
	up := newUpstream(t, keyA)
	e := newEnv(t, up, nil)
	hc := &http.Client{}
	defer hc.CloseIdleConnections()
	client := anthropic.NewClient(option.WithBaseURL(e.srv.URL), option.WithAPIKey("placeholder"), option.WithHTTPClient(hc))
	for i, rotate := range []bool{false, true} {
		if rotate {
			e.store.rotate(t, keyB)
			up.SetValid(keyB)
		}
		stream := client.Messages.NewStreaming(context.Background(), anthropic.MessageNewParams{
			Model: anthropic.ModelClaudeSonnet4_5, MaxTokens: 64,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hi"))},
		})
		var msg anthropic.Message
		for stream.Next() {
			if err := msg.Accumulate(stream.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if len(msg.Content) != 1 || msg.Content[0].Text == "" || msg.StopReason != "end_turn" {
			t.Fatalf("stream %d: accumulated %+v", i, msg)
		}
	}
	reqs := up.Requests()
	if len(reqs) != 3 || reqs[0].Key != keyA || reqs[1].Key != keyA || reqs[2].Key != keyB {
		t.Fatalf("upstream saw %d requests, want A, A (rejected), B", len(reqs))
	}
	if ua := reqs[0].Header.Get("User-Agent"); !strings.Contains(ua, "Anthropic") && !strings.Contains(ua, "Go") {
		t.Errorf("the SDK's User-Agent was not passed: %q", ua)
	}
	e.assertNoKeys(t)
}

func TestClientGoneCancelsUpstream(t *testing.T) {
	cancelled := make(chan struct{})
	started := make(chan struct{})
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/event-stream")
		io.WriteString(w, "event: message_start\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
		close(cancelled)
	})
	e := newEnv(t, up, nil)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/messages", strings.NewReader(`{"stream":true}`))
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	resp.Body.Close()
	awaitStopped(t, cancelled, "the upstream request was not cancelled when the client went away")
}

func TestRetryOnceAfterRotation(t *testing.T) {
	up := newUpstream(t, keyA)
	e := newEnv(t, up, nil)
	// The key is rotated in the store and the old one revoked upstream
	// before the Source's next refresh.
	e.store.rotate(t, keyB)
	up.SetValid(keyB)
	code, _, body := e.do(t, "POST", "/v1/messages", msgBody)
	if code != 200 {
		t.Fatalf("got %d %s, want 200 after one retry", code, body)
	}
	reqs := up.Requests()
	if len(reqs) != 2 || reqs[0].Key != keyA || reqs[1].Key != keyB || reqs[1].Body != reqs[0].Body {
		t.Fatalf("upstream saw %d requests, want A then B with the same body", len(reqs))
	}
	m := e.scrape(t)
	for _, want := range []string{
		`keywarden_sidecar_retries_total{reason="refreshed",route="/"} 1`,
		`keywarden_sidecar_upstream_unauthorized_total{route="/"} 1`,
		`keywarden_sidecar_requests_total{code="200",route="/"} 1`,
		`keywarden_key_info{fingerprint="` + providers.Fingerprint(keyB) + `"`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Both keys rejected: one retry, then the 401 as the upstream sent it.
	up.SetValid()
	code, _, body = e.do(t, "POST", "/v1/messages", msgBody)
	if code != 401 || apiErrorType(t, body) != "authentication_error" {
		t.Fatalf("got %d %s", code, body)
	}
	if n := len(up.Requests()); n != 4 {
		t.Fatalf("%d upstream requests after a double rejection, want 4 (one retry, via PREVIOUS)", n)
	}
	e.assertNoKeys(t)
}

func TestUpstreamDown(t *testing.T) {
	up := newUpstream(t, keyA)
	up.srv.Close()
	e := newEnv(t, up, nil)
	code, _, body := e.do(t, "GET", "/v1/models", "")
	if code != 502 || apiErrorType(t, body) != "api_error" {
		t.Fatalf("got %d %s", code, body)
	}
	e.assertNoKeys(t)
}

func TestUpstreamHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	e := newEnv(t, up, func(o *proxy.Options) { o.HeaderTimeout = 50 * time.Millisecond })
	code, _, body := e.do(t, "GET", "/v1/models", "")
	if code != 504 || apiErrorType(t, body) != "api_error" {
		t.Fatalf("got %d %s", code, body)
	}
}

func TestRoutesByPrefixAndListener(t *testing.T) {
	up := newUpstream(t, keyA, keyS)
	staging := newKeyStore(t, "staging", keyS)
	ssrc, _ := staging.source(t, providers.Options{})
	u, _ := url.Parse(up.URL())
	e := newEnv(t, up, func(o *proxy.Options) {
		o.Routes = append(o.Routes,
			proxy.Route{Prefix: "/staging/", Key: "staging", Source: ssrc, Upstream: u, Version: "2023-06-01"},
			proxy.Route{Listener: "127.0.0.1:0", Key: "staging", Source: ssrc, Upstream: u, Version: "2023-06-01"})
	})
	if code, _, _ := e.do(t, "GET", "/staging/v1/models", ""); code != 200 {
		t.Fatalf("prefix route: %d", code)
	}
	if code, _, _ := e.do(t, "GET", "/v1/models", ""); code != 200 {
		t.Fatalf("root route: %d", code)
	}
	if code, _, _ := e.do(t, "GET", "/staging/v1/organizations/api_keys", ""); code != 403 {
		t.Fatalf("admin path under a prefix: %d", code)
	}
	reqs := up.Requests()
	if reqs[0].Key != keyS || reqs[0].Path != "/v1/models" || reqs[1].Key != keyA {
		t.Fatalf("routing: %s %s then %s", providers.Fingerprint(reqs[0].Key), reqs[0].Path, providers.Fingerprint(reqs[1].Key))
	}
	// The route's own listener serves it alone, without a prefix.
	srv, err := e.p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Close()
	if srv.Addr("127.0.0.1:0") == nil || srv.Addr("127.0.0.1:1") != nil {
		t.Fatal("the route's listener is not open")
	}
	resp, err := http.Get("http://" + srv.Addr("127.0.0.1:0").String() + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if reqs := up.Requests(); resp.StatusCode != 200 || reqs[len(reqs)-1].Key != keyS || reqs[len(reqs)-1].Path != "/v1/models" {
		t.Fatalf("the route's listener: %d", resp.StatusCode)
	}
	if e.p.Transport("/") == nil || e.p.Transport("/staging") == nil || e.p.Transport("nope") != nil {
		t.Fatal("Transport by route name")
	}
	if m := e.scrape(t); !strings.Contains(m, `keywarden_key_info{fingerprint="`+providers.Fingerprint(keyS)+`",key="staging"`) {
		t.Fatal("the staging key is not exported")
	}
	e.assertNoKeys(t)
}

func TestManyConcurrentStreamsAcrossRotation(t *testing.T) {
	up := newUpstream(t, keyA)
	e := newEnv(t, up, nil)
	var failed atomic.Int32
	var wg sync.WaitGroup
	rotated := make(chan struct{})
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 20 {
				e.store.rotate(t, keyB)
				up.SetValid(keyB)
				close(rotated)
			}
			if i > 20 {
				<-rotated
			}
			code, _, body := e.do(t, "POST", "/v1/messages", streamBody)
			if code != 200 || !strings.Contains(body, "message_stop") {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of 40 streams failed across a rotation", failed.Load())
	}
	if n := e.faulty.Reads(); n > 2 {
		t.Fatalf("%d store reads, want at most 2 (the first load and one refresh)", n)
	}
}

func TestNewErrors(t *testing.T) {
	u, _ := url.Parse("https://api.anthropic.com")
	for _, o := range []proxy.Options{
		{},
		{Routes: []proxy.Route{{Prefix: "/"}}},
		{Routes: []proxy.Route{{Upstream: u}}},
	} {
		if _, err := proxy.New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	if _, err := settings.ParseUpstream("ftp://x"); err == nil {
		t.Error("ParseUpstream accepted ftp")
	}
}
