package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/proxy"
)

// TestClientGoneCancelsLongCall: a client that goes away while a
// non-streaming call waits for its answer stops the upstream request at
// once, not at the header timeout (an abandoned long call is paid for).
func TestClientGoneCancelsLongCall(t *testing.T) {
	up, started, cancelled := longCallUpstream(t)
	e := newEnv(t, up, nil) // the header timeout is the default 10 minutes
	abandonCall(t, e, started, cancelled)
}

// longCallUpstream answers nothing: it closes started once it has read a
// request whole, and cancelled once that request was stopped.
func longCallUpstream(t *testing.T) (up *upstream, started, cancelled <-chan struct{}) {
	s, c := make(chan struct{}), make(chan struct{})
	up = newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // net/http watches the connection from the body's end
		close(s)
		<-r.Context().Done()
		close(c)
	})
	return up, s, c
}

// awaitStopped fails t unless stopped is closed within 20 s (the upstream
// saw its request stopped); fail says what went wrong otherwise.
func awaitStopped(t *testing.T, stopped <-chan struct{}, fail string) {
	t.Helper()
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal(fail)
	}
}

// abandonCall sends a Messages call through e and goes away once started
// is closed; it fails unless cancelled is closed soon after (the upstream
// saw its request stopped).
func abandonCall(t *testing.T, e *env, started, cancelled <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/messages", strings.NewReader(msgBody))
	go func() {
		<-started
		cancel()
	}()
	if resp, err := e.srv.Client().Do(req); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("the call returned an answer: %d %s", resp.StatusCode, b)
	}
	awaitStopped(t, cancelled, "the upstream request was not stopped when the client went away")
}

// TestHTTPSUpstream: an https upstream is verified against the roots, is
// spoken to in HTTP/1.1, and a new connection resumes the TLS session of
// an earlier one.
func TestHTTPSUpstream(t *testing.T) {
	var mu sync.Mutex
	var resumed []bool
	var protos []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		protos = append(protos, r.Proto+" "+r.Header.Get("X-Api-Key"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":[]}`)
	}))
	srv.TLS = &tls.Config{VerifyConnection: func(cs tls.ConnectionState) error {
		mu.Lock()
		resumed = append(resumed, cs.DidResume)
		mu.Unlock()
		return nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	e := newEnv(t, &upstream{srv: srv}, nil)
	// Not trusted yet: the certificate is refused.
	if code, _, _ := e.do(t, "GET", "/v1/models", ""); code != http.StatusBadGateway {
		t.Fatalf("an upstream of an unknown CA: got %d, want 502", code)
	}
	proxy.TrustUpstream(e.p, srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs)
	for i := range 2 {
		if code, _, body := e.do(t, "GET", "/v1/models", ""); code != 200 {
			t.Fatalf("request %d: got %d %s", i, code, body)
		}
		e.p.CloseIdleConnections()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(resumed) != 3 || resumed[1] || !resumed[2] {
		t.Errorf("handshakes resumed: %v, want the third to resume the second's session", resumed)
	}
	for _, p := range protos {
		if p != "HTTP/1.1 "+keyA {
			t.Errorf("the upstream got %q, want HTTP/1.1 with the key", p)
		}
	}
}

// TestUpstreamThroughProxyEnv: with HTTP_PROXY set, the upstream is
// reached through the proxy with CONNECT and the proxy's credentials.
func TestUpstreamThroughProxyEnv(t *testing.T) {
	up := newUpstream(t, keyA)
	upURL, _ := url.Parse(up.URL())
	var mu sync.Mutex
	var seen []string
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	fwd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.Host+" "+r.Header.Get("Proxy-Authorization"))
		mu.Unlock()
		if r.Method != http.MethodConnect || !strings.HasPrefix(r.Host, "upstream.test:") {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		// upstream.test is the test upstream.
		dst, err := net.Dial("tcp", upURL.Host)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			dst.Close()
			return
		}
		_ = brw.Flush()
		wg.Add(2)
		pipe := func(a net.Conn, b io.Reader) {
			defer wg.Done()
			_, _ = io.Copy(a, b)
			a.Close()
			conn.Close()
		}
		go pipe(dst, bufio.NewReader(io.MultiReader(brw.Reader, conn)))
		go pipe(conn, dst)
	}))
	t.Cleanup(fwd.Close)
	pu, _ := url.Parse(fwd.URL)
	pu.User = url.UserPassword("u", "p w")
	t.Setenv("HTTP_PROXY", pu.String())
	t.Setenv("NO_PROXY", "")
	target := &url.URL{Scheme: "http", Host: "upstream.test:" + upURL.Port()}
	e := newEnv(t, up, func(o *proxy.Options) { o.Routes[0].Upstream = target })
	// The tunnel is up at once (reading the CONNECT answer as a GET's
	// waited for its body until the 30-second dial timeout).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/v1/models", nil)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("got %d", resp.StatusCode)
	}
	e.p.CloseIdleConnections()
	mu.Lock()
	defer mu.Unlock()
	want := "CONNECT " + target.Host + " Basic " + base64.StdEncoding.EncodeToString([]byte("u:p w"))
	if len(seen) != 1 || seen[0] != want {
		t.Fatalf("the proxy saw %q, want [%q]", seen, want)
	}
	if reqs := up.Requests(); len(reqs) != 1 || reqs[0].Key != keyA {
		t.Fatalf("the upstream saw %d requests", len(reqs))
	}
}

// TestClosedIdleConnectionNotUsed: an upstream connection idle for a while
// is checked before it is used again, so that a request is not sent on a
// connection the upstream has closed meanwhile (it could not be sent
// again).
func TestClosedIdleConnectionNotUsed(t *testing.T) {
	up := newUpstream(t, keyA)
	e := newEnv(t, up, nil)
	if code, _, _ := e.do(t, "POST", "/v1/messages", msgBody); code != 200 {
		t.Fatalf("first request: %d", code)
	}
	up.srv.CloseClientConnections()
	proxy.AgeIdleConnections(e.p, 2*time.Second)
	if code, _, body := e.do(t, "POST", "/v1/messages", msgBody); code != 200 {
		t.Fatalf("after the upstream closed the idle connection: got %d %s", code, body)
	}
}

// TestResetIdleConnectionRetried: a request sent on a reused connection
// that the upstream reset meanwhile (too recently used for the idle check
// to look) does not reach it, and is sent again once on a new connection
// when its body is kept.
func TestResetIdleConnectionRetried(t *testing.T) {
	var mu sync.Mutex
	var conns []net.Conn
	served := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		served++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"type":"message"}`)
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	e := newEnv(t, &upstream{srv: srv}, nil)
	if code, _, body := e.do(t, "POST", "/v1/messages", msgBody); code != 200 {
		t.Fatalf("first request: %d %s", code, body)
	}
	mu.Lock()
	for _, c := range conns {
		_ = c.(*net.TCPConn).SetLinger(0) // close with a reset
		_ = c.Close()
	}
	mu.Unlock()
	time.Sleep(50 * time.Millisecond) // the reset reaches the sidecar's socket
	if code, _, body := e.do(t, "POST", "/v1/messages", msgBody); code != 200 {
		t.Fatalf("on a reset keep-alive connection: got %d %s, want the request sent again on a new one", code, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 2 || served != 2 {
		t.Fatalf("%d connections, %d requests served; want 2 and 2", len(conns), served)
	}
}

// TestStreamEventsOfEverySize: a stream of events of every size around
// the stream wait's first read and the connection's read buffer, each
// after a pause (the proxy waits for it with its buffer lent), arrives
// whole and in order, over a plain and a TLS upstream; the upstream
// connection serves the next stream after it.
func TestStreamEventsOfEverySize(t *testing.T) {
	sizes := []int{1, 511, 512, 513, 1500, 4095, 4096, 4097, 9000, 40000}
	var want strings.Builder
	for i, n := range sizes {
		want.WriteString(strings.Repeat(string(rune('a'+i)), n))
	}
	for _, tlsUp := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[tlsUp], func(t *testing.T) {
			var mu sync.Mutex
			conns := 0
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				for i, n := range sizes {
					time.Sleep(5 * time.Millisecond)
					io.WriteString(w, strings.Repeat(string(rune('a'+i)), n))
					w.(http.Flusher).Flush()
				}
			}))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					mu.Lock()
					conns++
					mu.Unlock()
				}
			}
			if tlsUp {
				srv.StartTLS()
			} else {
				srv.Start()
			}
			t.Cleanup(srv.Close)
			e := newEnv(t, &upstream{srv: srv}, nil)
			if tlsUp {
				proxy.TrustUpstream(e.p, srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs)
			}
			for i := range 2 {
				code, _, body := e.do(t, "POST", "/v1/messages", `{"stream":true}`)
				if code != 200 || body != want.String() {
					t.Fatalf("stream %d: %d, %d bytes; want 200 and %d bytes as sent", i, code, len(body), want.Len())
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if conns != 1 {
				t.Fatalf("%d upstream connections for two streams in turn, want 1", conns)
			}
		})
	}
}

// TestHandshakesBounded: a burst of requests that each need a new TLS
// connection runs at most MaxHandshakes handshakes at once; the others
// wait for a slot before they dial, and every request is answered once
// handshakes end.
func TestHandshakesBounded(t *testing.T) {
	var mu sync.Mutex
	inflight, most := 0, 0
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"type":"message"}`)
	}))
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		mu.Lock()
		inflight++
		most = max(most, inflight)
		mu.Unlock()
		<-release
		mu.Lock()
		inflight--
		mu.Unlock()
		return nil, nil
	}}
	dialled := 0
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			dialled++
			mu.Unlock()
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before the server closes, when the test fails
	e := newEnv(t, &upstream{srv: srv}, func(o *proxy.Options) { o.HeaderTimeout = time.Minute })
	proxy.TrustUpstream(e.p, srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs)
	n := proxy.MaxHandshakes + 16
	codes := make(chan int, n)
	for range n {
		go func() {
			resp, err := e.srv.Client().Post(e.srv.URL+"/v1/messages", "application/json", strings.NewReader(msgBody))
			if err != nil {
				codes <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	waitFor(t, func() bool { // every slot's handshake reached the upstream
		mu.Lock()
		defer mu.Unlock()
		return inflight >= proxy.MaxHandshakes
	})
	time.Sleep(300 * time.Millisecond) // room for a handshake past the bound to arrive
	mu.Lock()
	seen, conns := most, dialled
	mu.Unlock()
	free()
	for range n {
		if code := <-codes; code != 200 {
			t.Errorf("a request of the burst got %d, want 200", code)
		}
	}
	if seen != proxy.MaxHandshakes {
		t.Fatalf("%d handshakes under way at once, want at most %d", seen, proxy.MaxHandshakes)
	}
	if conns != proxy.MaxHandshakes {
		t.Fatalf("%d connections dialled while %d handshakes waited; want the others to wait before dialling", conns, proxy.MaxHandshakes)
	}
	// The wait is seen in the metrics: the connections past the bound, each
	// having waited at least the pause above; those within it did not.
	m := e.scrape(t)
	waits, _ := strconv.Atoi(metricValue(m, "\nkeywarden_sidecar_upstream_connect_waits_total"))
	waited, _ := strconv.ParseFloat(metricValue(m, "\nkeywarden_sidecar_upstream_connect_wait_seconds_total"), 64)
	if want := n - proxy.MaxHandshakes; waits != want || waited < float64(want)*0.3 {
		t.Fatalf("metrics: %d waits for a handshake slot, %.2f s in all; want %d, at least %.1f s", waits, waited, want, float64(want)*0.3)
	}
}

// TestHeldStreamHoldsNoGoroutine: a stream waiting on its upstream is
// parked: no goroutine stays in the answer's copy (its stack would be held
// for as long as the stream is), a small one waits for the upstream. The
// parked stream keeps its client's concurrency slot, ends whole once the
// upstream sends the rest, and its connection serves the next request.
func TestHeldStreamHoldsNoGoroutine(t *testing.T) {
	for _, tlsUp := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[tlsUp], func(t *testing.T) { testParked(t, tlsUp) })
	}
}

func testParked(t *testing.T, tlsUp bool) {
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodGet {
			io.WriteString(w, `{"data":[]}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: ping\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "event: message_stop\ndata: {}\n\n")
	}))
	if tlsUp {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	e := newEnv(t, &upstream{srv: srv}, func(o *proxy.Options) { o.Concurrency = 1 })
	if tlsUp {
		proxy.TrustUpstream(e.p, srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs)
	}
	cl := e.srv.Client()
	resp, err := cl.Post(e.srv.URL+"/v1/messages", "application/json", strings.NewReader(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "event: ping\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}
	waitFor(t, func() bool {
		st := goroutines()
		return !strings.Contains(st, "proxy.(*Proxy).respond") && strings.Contains(st, "proxy.(*stream).wait")
	})
	if code, _, body := e.do(t, "GET", "/v1/models", ""); code != http.StatusTooManyRequests {
		t.Fatalf("a request while the stream is parked: %d %s; want 429 (its slot is held)", code, body)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || !strings.HasSuffix(string(rest), "event: message_stop\ndata: {}\n\n") {
		t.Fatalf("the rest of the stream: %q, %v", rest, err)
	}
	resp.Body.Close()
	resp, err = cl.Get(e.srv.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"data":[]}` {
		t.Fatalf("after the stream: %d %s", resp.StatusCode, body)
	}
}

// goroutines returns the stacks of every goroutine.
func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// TestLongCallWaitsOutsideTLS: a call whose answer takes longer than a
// watchTick (a long non-streaming Messages call) waits for its upstream's
// socket to be readable, not inside crypto/tls's read; its answer then
// comes whole, a client that leaves still ends the upstream request, and
// the header timeout still holds.
func TestLongCallWaitsOutsideTLS(t *testing.T) {
	for _, tlsUp := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[tlsUp], func(t *testing.T) { testLongCall(t, tlsUp) })
	}
}

func testLongCall(t *testing.T, tlsUp bool) {
	release := make(chan struct{})
	cancelled := make(chan struct{}, 4)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hold := release
		if r.Header.Get("X-Test-Hold") == "forever" {
			hold = nil
		}
		select {
		case <-hold:
		case <-r.Context().Done():
			cancelled <- struct{}{}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"type":"message","usage":{"input_tokens":1,"output_tokens":2}}`)
	}))
	if tlsUp {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	e := newEnv(t, &upstream{srv: srv}, func(o *proxy.Options) { o.HeaderTimeout = 3 * time.Second })
	if tlsUp {
		proxy.TrustUpstream(e.p, srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs)
	}
	type result struct {
		code int
		body string
		err  error
	}
	call := func(ctx context.Context, hold string) chan result {
		done := make(chan result, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/messages", strings.NewReader(msgBody))
			req.Header.Set("X-Test-Hold", hold)
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				done <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			done <- result{resp.StatusCode, string(b), err}
		}()
		return done
	}
	waiting := func() {
		t.Helper()
		waitFor(t, func() bool { return strings.Contains(goroutines(), "proxy.(*upConn).awaitReadable") })
		for _, g := range strings.Split(goroutines(), "\n\n") {
			if strings.Contains(g, "keywarden/internal/proxy.") && strings.Contains(g, "crypto/tls.(*Conn).Read") {
				t.Fatalf("a proxy goroutine waits in a TLS read:\n%s", g)
			}
		}
	}

	// Past a watchTick the call waits for readability, in no TLS read; its
	// answer comes whole.
	done := call(context.Background(), "")
	waiting()
	close(release)
	if r := <-done; r.err != nil || r.code != 200 || !strings.Contains(r.body, `"output_tokens":2`) {
		t.Fatalf("the long call: %d %q %v", r.code, r.body, r.err)
	}

	// A client that leaves during such a wait ends the upstream request.
	ctx, cancel := context.WithCancel(context.Background())
	call(ctx, "forever")
	waiting()
	cancel()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request went on after its client left")
	}

	// The header timeout ends such a wait: a 504.
	if r := <-call(context.Background(), "forever"); r.code != http.StatusGatewayTimeout {
		t.Fatalf("a call past the header timeout: %d %q %v; want 504", r.code, r.body, r.err)
	}
}
