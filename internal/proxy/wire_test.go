package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/providers"
)

// The client side of the wire, byte by byte, over real sockets: what a
// client written against any HTTP/1.1 server expects of the sidecar.

// wireConn is one client connection to the sidecar.
type wireConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialWire(t *testing.T, addr string) *wireConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &wireConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (w *wireConn) send(raw string) {
	w.t.Helper()
	if _, err := io.WriteString(w.c, raw); err != nil {
		w.t.Fatal(err)
	}
}

// answer reads one answer: status, header and whole body.
func (w *wireConn) answer(method string) (*http.Response, string) {
	w.t.Helper()
	resp, err := http.ReadResponse(w.br, &http.Request{Method: method})
	if err != nil {
		w.t.Fatalf("no answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatalf("the answer's body: %v", err)
	}
	resp.Body.Close()
	return resp, string(b)
}

// closed reports whether the sidecar closed the connection (nothing more
// to read).
func (w *wireConn) closed() bool {
	_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := w.br.ReadByte()
	return err == io.EOF
}

// wireEnv starts an upstream that takes keyA and a sidecar to it (edited
// by edit), and opens one client connection to the sidecar.
func wireEnv(t *testing.T, edit func(*proxy.Options)) (*upstream, *env, *wireConn) {
	t.Helper()
	up := newUpstream(t, keyA)
	e := newEnv(t, up, edit)
	return up, e, dialWire(t, e.srv.Addr())
}

const modelsReq = "GET /v1/models HTTP/1.1\r\nHost: sidecar\r\n\r\n"

// helloBody is a valid Messages request body.
const helloBody = `{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}`

// chunk frames s as one chunk of a chunked body, with the extension ext.
func chunk(s, ext string) string {
	return strconv.FormatInt(int64(len(s)), 16) + ext + "\r\n" + s + "\r\n"
}

func messagesReq(body string, extra string) string {
	return "POST /v1/messages HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n" + extra +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

func TestWireKeepAliveAndPipelining(t *testing.T) {
	up, _, w := wireEnv(t, nil)
	// Three requests written at once: three answers, in order, on one
	// connection.
	w.send(modelsReq + messagesReq(helloBody, "") + modelsReq)
	for i, method := range []string{"GET", "POST", "GET"} {
		resp, body := w.answer(method)
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("answer %d: %d close=%v %s", i, resp.StatusCode, resp.Close, body)
		}
	}
	if reqs := up.Requests(); len(reqs) != 3 || reqs[1].Path != "/v1/messages" || reqs[1].Key != keyA {
		t.Fatalf("the upstream saw %d requests", len(reqs))
	}
}

func TestWireExpectContinue(t *testing.T) {
	up := newUpstream(t, keyA)
	e := newEnv(t, up, func(o *proxy.Options) { o.ClientToken = "client-token-0123456789abcdef" })
	body := helloBody

	// Admitted: "100 Continue" first, then the body goes upstream.
	w := dialWire(t, e.srv.Addr())
	head, _, _ := strings.Cut(messagesReq(body, "Expect: 100-continue\r\nX-Keywarden-Token: client-token-0123456789abcdef\r\n"), "\r\n\r\n")
	w.send(head + "\r\n\r\n")
	line, err := w.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q, %v; want 100 Continue before the body", line, err)
	}
	if l, _ := w.br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("100 Continue not ended: %q", l)
	}
	w.send(body)
	if resp, b := w.answer("POST"); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	reqs := up.Requests()
	if len(reqs) != 1 || reqs[0].Body != body || reqs[0].Header.Get("Expect") != "" {
		t.Fatalf("the upstream got %d requests; body %q, Expect %q", len(reqs), reqs[0].Body, reqs[0].Header.Get("Expect"))
	}

	// Refused before the body: no 100, the refusal, and the connection
	// closes (the body the client did not send is not waited for).
	w = dialWire(t, e.srv.Addr())
	head, _, _ = strings.Cut(messagesReq(body, "Expect: 100-continue\r\n"), "\r\n\r\n")
	w.send(head + "\r\n\r\n")
	resp, b := w.answer("POST")
	if resp.StatusCode != 401 || apiErrorType(t, b) != "authentication_error" || !w.closed() {
		t.Fatalf("refusal: %d %s", resp.StatusCode, b)
	}
	if len(up.Requests()) != 1 {
		t.Fatal("a refused request reached the upstream")
	}
}

func TestWireChunkedRequestBody(t *testing.T) {
	up, _, w := wireEnv(t, nil)
	body := helloBody
	w.send("POST /v1/messages HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
		chunk(body[:10], ";ext=1") + chunk(body[10:], "") + "0\r\nX-Trailer: dropped\r\n\r\n" + modelsReq)
	if resp, b := w.answer("POST"); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	// The trailer was read: the next request on the connection is served.
	if resp, b := w.answer("GET"); resp.StatusCode != 200 {
		t.Fatalf("after a chunked body: %d %s", resp.StatusCode, b)
	}
	if reqs := up.Requests(); len(reqs) != 2 || reqs[0].Body != body || reqs[0].Header.Get("X-Trailer") != "" {
		t.Fatalf("the upstream got %d requests, first body %q", len(reqs), reqs[0].Body)
	}
}

func TestWireHTTP10(t *testing.T) {
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: ping\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		io.WriteString(w, "event: message_stop\ndata: {}\n\n")
	})
	e := newEnv(t, up, nil)
	// A body of unknown length to an HTTP/1.0 client: not chunked (it
	// does not know chunks), ended by closing the connection.
	w := dialWire(t, e.srv.Addr())
	w.send("POST /v1/messages HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	resp, b := w.answer("POST")
	if resp.StatusCode != 200 || len(resp.TransferEncoding) != 0 || !strings.HasSuffix(b, "event: message_stop\ndata: {}\n\n") {
		t.Fatalf("%d %v %q", resp.StatusCode, resp.TransferEncoding, b)
	}
	if !w.closed() {
		t.Fatal("the connection of an HTTP/1.0 client stayed open")
	}
}

func TestWireMalformedRequests(t *testing.T) {
	up := newUpstream(t, keyA)
	e := newEnv(t, up, nil)
	for _, tc := range []struct {
		name, raw string
		code      int
	}{
		{"garbage", "NOT HTTP AT ALL\r\n\r\n", 400},
		{"duplicate content-length", "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400},
		{"transfer-encoding other than chunked", "POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
		{"header over 8 KiB", "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 9000) + "\r\n\r\n", 431},
		{"bad escape in the path", "GET /v1/models/%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	} {
		w := dialWire(t, e.srv.Addr())
		w.send(tc.raw)
		resp, b := w.answer("GET")
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %d %q, want %d", tc.name, resp.StatusCode, b, tc.code)
		}
	}
	if n := len(up.Requests()); n != 0 {
		t.Fatalf("%d malformed requests reached the upstream", n)
	}
}

func TestWireSmugglingClosesConnection(t *testing.T) {
	up, _, w := wireEnv(t, nil)
	// Content-Length and chunked together: the body is the chunked one
	// (RFC 9112, 6.3), and the connection closes after the answer, so
	// nothing the two readings disagree on is read as a next request.
	body := helloBody
	w.send("POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
		chunk(body, "") + "0\r\n\r\n" + modelsReq)
	resp, b := w.answer("POST")
	if resp.StatusCode != 200 || !w.closed() {
		t.Fatalf("%d %s, or the connection stayed open", resp.StatusCode, b)
	}
	if reqs := up.Requests(); len(reqs) != 1 || reqs[0].Body != body {
		t.Fatalf("the upstream got %d requests", len(reqs))
	}
}

func TestWireRefusalKeepsConnection(t *testing.T) {
	up := newUpstream(t, keyA)
	e := newEnv(t, up, func(o *proxy.Options) { o.ClientToken = "client-token-0123456789abcdef" })
	// A refused request's small body is read and dropped: the next request
	// on the connection is served.
	w := dialWire(t, e.srv.Addr())
	w.send(messagesReq(`{"a":1}`, "") + "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Keywarden-Token: client-token-0123456789abcdef\r\n\r\n")
	if resp, b := w.answer("POST"); resp.StatusCode != 401 || resp.Close {
		t.Fatalf("%d close=%v %s", resp.StatusCode, resp.Close, b)
	}
	if resp, b := w.answer("GET"); resp.StatusCode != 200 {
		t.Fatalf("after a refusal: %d %s", resp.StatusCode, b)
	}
}

func TestWireTimeouts(t *testing.T) {
	up := newUpstream(t, keyA)
	e := newEnv(t, up, func(o *proxy.Options) {
		o.ClientHeaderTimeout = 300 * time.Millisecond
		o.IdleTimeout = 300 * time.Millisecond
	})
	// A header that never ends (slowloris) is cut at the header timeout.
	w := dialWire(t, e.srv.Addr())
	w.send("GET /v1/models HTTP/1.1\r\nHost: x\r\n")
	if !w.closed() {
		t.Fatal("a request header that never ends kept its connection")
	}
	// An idle keep-alive connection is closed at the idle timeout.
	w = dialWire(t, e.srv.Addr())
	w.send(modelsReq)
	if resp, _ := w.answer("GET"); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	if !w.closed() {
		t.Fatal("an idle connection was kept past the idle timeout")
	}
}

func TestUpstreamLargeAnswerHeader(t *testing.T) {
	big := strings.Repeat("b", 20<<10) // five times the upstream read buffer
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", big)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	})
	e := newEnv(t, up, nil)
	// Twice on one upstream connection: the grown buffer keeps working.
	for i := range 2 {
		code, h, body := e.do(t, "GET", "/v1/models", "")
		if code != 200 || h.Get("X-Big") != big || body != `{"ok":true}` {
			t.Fatalf("request %d: %d, X-Big of %d bytes, body %q", i, code, len(h.Get("X-Big")), body)
		}
	}
}

// TestUpstreamRequestFraming: the request the upstream gets is framed as
// the client's body allows: a body kept for a retry (up to MaxRetryBody)
// goes with its Content-Length, a larger one is streamed with the
// client's Content-Length, one of unknown length past the bound is
// streamed chunked; a GET without a body has no Content-Length, a POST
// without one "Content-Length: 0". Each arrives whole, byte for byte.
func TestUpstreamRequestFraming(t *testing.T) {
	type seen struct {
		method   string
		length   int64
		te       []string
		clHeader string
		sum      [32]byte
		n        int
	}
	got := make(chan seen, 1)
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("upstream read the body: %v", err)
		}
		got <- seen{r.Method, r.ContentLength, r.TransferEncoding, r.Header.Get("Content-Length"), sha256.Sum256(b), len(b)}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
	})
	e := newEnv(t, up, nil) // MaxRetryBody: the default 1 MiB
	big := []byte(`{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("a", 3<<20) + `"}]}`)
	small := []byte(helloBody)
	for _, tc := range []struct {
		name    string
		method  string
		body    []byte
		chunked bool // the client sends the body chunked (no length)
		length  int64
		te      []string
	}{
		{"GET without a body", "GET", nil, false, 0, nil},
		{"POST without a body", "POST", []byte{}, false, 0, nil},
		{"a small body", "POST", small, false, int64(len(small)), nil},
		{"a small chunked body, kept", "POST", small, true, int64(len(small)), nil},
		{"a large body, streamed", "POST", big, false, int64(len(big)), nil},
		{"a large chunked body, streamed chunked", "POST", big, true, -1, []string{"chunked"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
				if tc.chunked {
					body = io.MultiReader(body) // no length known: net/http sends it chunked
				}
			}
			req, err := http.NewRequest(tc.method, e.srv.URL+"/v1/messages", body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.method == "GET" {
				req.URL.Path = "/v1/models"
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			s := <-got
			if s.method != tc.method || s.length != tc.length || !slices.Equal(s.te, tc.te) {
				t.Fatalf("upstream got %s, length %d, transfer-encoding %q; want %s, %d, %q", s.method, s.length, s.te, tc.method, tc.length, tc.te)
			}
			if want := map[string]string{"GET": "", "POST": "0"}[tc.method]; tc.body == nil || len(tc.body) == 0 {
				if s.clHeader != want {
					t.Fatalf("a %s without a body went with Content-Length %q, want %q", tc.method, s.clHeader, want)
				}
			}
			if s.n != len(tc.body) || s.sum != sha256.Sum256(tc.body) {
				t.Fatalf("upstream got %d bytes of body, not the client's %d", s.n, len(tc.body))
			}
		})
	}
}

// TestUnauthorizedBodyBound: a 401 is classified by the start of its body,
// at most providers.MaxErrorBody bytes. A rejection of that size is
// classified, so the request goes again with the rotated key; one byte
// larger, it cannot be, and stands as the upstream sent it, whole. (The
// boundary of io.ReadFull's reading, which the proxy's own loop keeps.)
func TestUnauthorizedBodyBound(t *testing.T) {
	for _, tc := range []struct {
		size  int
		retry bool
	}{{providers.MaxErrorBody, true}, {providers.MaxErrorBody + 1, false}, {3 * providers.MaxErrorBody, false}} {
		rejection := `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`
		rejection += strings.Repeat(" ", tc.size-len(rejection))
		var calls atomic.Int32
		up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.Header().Set("Content-Type", "application/json")
			if r.Header.Get("X-Api-Key") != keyB {
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, rejection)
				return
			}
			io.WriteString(w, `{"ok":true}`)
		})
		e := newEnv(t, up, nil)
		e.store.rotate(t, keyB)
		code, _, body := e.do(t, "POST", "/v1/messages", msgBody)
		switch {
		case tc.retry && (code != 200 || calls.Load() != 2):
			t.Errorf("a %d-byte rejection: %d after %d upstream calls, want 200 after 2", tc.size, code, calls.Load())
		case !tc.retry && (code != 401 || body != rejection || calls.Load() != 1):
			t.Errorf("a %d-byte rejection: %d (%d body bytes, whole %v) after %d upstream calls, want it as sent after 1",
				tc.size, code, len(body), body == rejection, calls.Load())
		}
		e.assertNoKeys(t)
	}
}
