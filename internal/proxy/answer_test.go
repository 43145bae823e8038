package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/proxy"
)

// The upstream's answers the sidecar reads itself (its HTTP/1.1 client
// is the sidecar's own, on fasthttp's parser): interim answers, malformed
// ones, and a client that leaves while an answer's header is under way.

// TestUpstreamInterimAnswers: interim answers (100 Continue, 103 Early
// Hints; RFC 9110 §15.2: a client must take them unasked) are skipped,
// however long the final answer takes after them: here longer than the
// tick at which the sidecar checks that its client is still there (the
// sidecar answered 504 at that tick before).
func TestUpstreamInterimAnswers(t *testing.T) {
	for _, interim := range []int{http.StatusContinue, http.StatusEarlyHints} {
		t.Run(strconv.Itoa(interim), func(t *testing.T) {
			up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Link", "</style.css>; rel=preload")
				w.WriteHeader(interim) // sent at once (net/http)
				w.WriteHeader(interim) // twice: several may come
				time.Sleep(1500 * time.Millisecond)
				w.Header().Del("Link")
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"ok":true}`)
			})
			e := newEnv(t, up, nil)
			code, h, body := e.do(t, "POST", "/v1/messages", msgBody)
			if code != 200 || body != `{"ok":true}` || h.Get("Link") != "" {
				t.Fatalf("got %d %q (Link %q), want the final answer alone", code, body, h.Get("Link"))
			}
		})
	}
}

// rawUpstream answers every request with raw, then keeps the connection
// open until the sidecar closes it (an answer the sidecar waited on would
// hang the test, not pass it).
func rawUpstream(t *testing.T, raw string) *upstream {
	return hijackUpstream(t, true, raw, func(r *bufio.Reader) { _, _ = io.Copy(io.Discard, r) })
}

// hijackUpstream answers every request with raw on its net.Conn, after
// reading its body whole when readBody, then calls after with the
// connection's reader (a minute's read deadline).
func hijackUpstream(t *testing.T, readBody bool, raw string, after func(r *bufio.Reader)) *upstream {
	return newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		if readBody {
			_, _ = io.ReadAll(r.Body)
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, raw)
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
		after(brw.Reader)
	})
}

// TestUpstreamMalformedAnswers: answers the sidecar cannot forward get a
// 502 at once, and their connection is not used again.
func TestUpstreamMalformedAnswers(t *testing.T) {
	interims := strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 6)
	for _, tc := range []struct{ name, raw string }{
		// The sidecar never asks to switch protocols (it strips Upgrade).
		{"101 unasked", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"},
		// fasthttp's parser only ends a header at CRLF CRLF and would
		// wait for one until the header timeout (10 minutes).
		{"bare LF lines", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"},
		{"LF then CRLF", "HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok"},
		{"CRLF then LF", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok"},
		{"status under 100", "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok"},
		{"too many interim answers", interims + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"not HTTP", "SSH-2.0-OpenSSH_9.2\r\n\r\n"},
		{"two Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk"},
		{"a CR inside a value", "HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok"},
		{"an unknown transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, rawUpstream(t, tc.raw), nil)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/messages", strings.NewReader(msgBody))
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway || apiErrorType(t, string(b)) != "api_error" {
				t.Fatalf("got %d %s, want a 502 api_error", resp.StatusCode, b)
			}
			if !strings.Contains(e.logs.String(), "proxy: upstream request failed") {
				t.Errorf("the failure was not logged:\n%s", e.logs.String())
			}
		})
	}
}

// TestClientGoneWhileAnswerHeaderUnderWay: a client that goes away after
// the upstream began its answer's header, or sent an interim answer, and
// before the final header is whole, stops the upstream request (the
// sidecar waited for the rest with the header timeout, 10 minutes by
// default, without looking at the client).
func TestClientGoneWhileAnswerHeaderUnderWay(t *testing.T) {
	for _, tc := range []struct{ name, raw string }{
		{"a partial header", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"},
		{"an interim answer", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started, cancelled := make(chan struct{}), make(chan struct{})
			up := hijackUpstream(t, true, tc.raw, func(r *bufio.Reader) {
				close(started)
				if _, err := r.ReadByte(); err == io.EOF {
					close(cancelled) // the sidecar closed the connection
				}
			})
			abandonCall(t, newEnv(t, up, nil), started, cancelled)
		})
	}
}

// TestUpstreamEarlyAnswer: an answer the upstream sends before it read
// the request's body (a 413 for a body too large), closing the connection
// on the rest, is the client's answer. The sidecar answered 502 (writing
// the body failed), which SDKs retry, uploading the body again. The
// client, still sending its body, reads the answer: the sidecar reads and
// drops the rest of the body before it closes (it dropped 256 KiB and
// reset the connection, and the reset could destroy the answer).
func TestUpstreamEarlyAnswer(t *testing.T) {
	const tooLarge = `{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}`
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		// net/http's server: the body unread, it closes the connection.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		io.WriteString(w, tooLarge)
	})
	body := `{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("a", 8<<20) + `"}]}`
	for _, tc := range []struct {
		name string
		keep int64
	}{
		{"a body kept for a retry", 16 << 20},
		{"a streamed body", 0}, // the default: 1 MiB kept at most
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, up, func(o *proxy.Options) { o.MaxRetryBody = tc.keep })
			w := dialWire(t, e.srv.Addr())
			w.send("POST /v1/messages HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\nContent-Length: " +
				strconv.Itoa(len(body)) + "\r\n\r\n" + body)
			resp, got := w.answer("POST")
			if resp.StatusCode != http.StatusRequestEntityTooLarge || got != tooLarge {
				t.Fatalf("got %d %s, want the upstream's 413", resp.StatusCode, got)
			}
			if tc.keep == 0 && !w.closed() {
				t.Error("the connection was kept after a body left unread")
			}
		})
	}
}

// stalledUpstream takes a request's header and then reads nothing more,
// keeping the connection open: it answers with answer first, when given.
func stalledUpstream(t *testing.T, answer string) *upstream {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return hijackUpstream(t, false, answer, func(*bufio.Reader) { <-release })
}

// TestUpstreamStopsReading: an upstream that stops reading a large
// request body without closing the connection does not strand the
// request: an answer it sent meanwhile is the client's (within a watch
// tick), and one that neither reads nor answers for the header timeout
// gets a 504. The sidecar waited for room in the socket until the
// upstream closed the connection, holding the request, its client and
// its goroutine.
func TestUpstreamStopsReading(t *testing.T) {
	big := `{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("a", 16<<20) + `"}]}`
	t.Run("answered", func(t *testing.T) {
		const tooLarge = `{"type":"error","error":{"type":"request_too_large","message":"too large"}}`
		up := stalledUpstream(t, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\nContent-Length: "+
			strconv.Itoa(len(tooLarge))+"\r\n\r\n"+tooLarge)
		e := newEnv(t, up, nil)
		code, _, body := e.do(t, "POST", "/v1/messages", big)
		if code != http.StatusRequestEntityTooLarge || body != tooLarge {
			t.Fatalf("got %d %s, want the upstream's 413", code, body)
		}
	})
	t.Run("silent", func(t *testing.T) {
		e := newEnv(t, stalledUpstream(t, ""), func(o *proxy.Options) { o.HeaderTimeout = 2 * time.Second })
		code, _, body := e.do(t, "POST", "/v1/messages", big)
		if code != http.StatusGatewayTimeout || apiErrorType(t, body) != "api_error" {
			t.Fatalf("got %d %s, want a 504", code, body)
		}
	})
}

// TestClientGoneAfterPipelining: a client that pipelined a next request
// behind a long call and then closed its connection stops the call: the
// sidecar's peek at the socket saw the pipelined bytes, not the end
// behind them, and the abandoned call ran to its end.
func TestClientGoneAfterPipelining(t *testing.T) {
	up, started, cancelled := longCallUpstream(t)
	e := newEnv(t, up, nil)
	w := dialWire(t, e.srv.Addr())
	w.send(messagesReq(helloBody, ""))
	<-started
	w.send(modelsReq) // left in the socket: the sidecar reads it after the call
	w.c.Close()
	awaitStopped(t, cancelled, "the upstream request was not stopped when the client went away")
}

// TestClientStopsReading: a client that reads nothing of a stream for the
// idle timeout is cut off, and its upstream request stopped (as nginx's
// send_timeout). The sidecar waited to write to it for as long as it
// stayed connected, holding the stream upstream.
func TestClientStopsReading(t *testing.T) {
	cancelled := make(chan struct{})
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		event := "event: ping\ndata: " + strings.Repeat("p", 32<<10) + "\n\n"
		for r.Context().Err() == nil {
			if _, err := io.WriteString(w, event); err != nil {
				break
			}
			http.NewResponseController(w).Flush()
		}
		close(cancelled)
	})
	e := newEnv(t, up, func(o *proxy.Options) { o.IdleTimeout = 2 * time.Second })
	w := dialWire(t, e.srv.Addr())
	w.send(messagesReq(`{"model":"claude-sonnet-4-6","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"Hi"}]}`, ""))
	awaitStopped(t, cancelled, "the stream went on for a client that read nothing of it") // reading nothing
	_ = w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, w.br); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Error("the client's connection was kept") // else it ends, closed or reset
	}
}

// TestUpstreamHandshakeNeverEnds: an https upstream that takes the
// connection and never completes the TLS handshake gets a 504 that says
// the upstream could not be reached, within the header timeout (connecting
// is part of that wait); the log names the handshake. It was a 504 after
// the handshake's own 10 s, saying no header came, logged as "context
// deadline exceeded".
func TestUpstreamHandshakeNeverEnds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, silent
			mu.Unlock()
		}
	}()
	target := &url.URL{Scheme: "https", Host: ln.Addr().String()}
	e := newEnv(t, newUpstreamFunc(t, nil), func(o *proxy.Options) {
		o.Routes[0].Upstream = target
		o.HeaderTimeout = time.Second
	})
	code, _, body := e.do(t, "GET", "/v1/models", "")
	if code != http.StatusGatewayTimeout || !strings.Contains(body, "could not be reached in time") {
		t.Fatalf("got %d %s, want a 504 saying the upstream could not be reached", code, body)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "TLS handshake") {
		t.Errorf("the log does not name the handshake:\n%s", logs)
	}
}

// TestAnswerHeaderLines: the upstream's header lines reach the client as
// the upstream spelled them, each once, but for the hop-by-hop headers,
// those its Connection header lists, its Content-Length (the sidecar
// frames the body) and its Date (the sidecar sends its own, as nginx
// does); a name with a space in it is dropped.
func TestAnswerHeaderLines(t *testing.T) {
	const body = `{"ok":true}`
	up := rawUpstream(t, "HTTP/1.1 200 OK\r\n"+
		"content-type: application/json\r\n"+
		"Date: Mon, 01 Jan 2001 00:00:00 GMT\r\n"+
		"request-id: req_1\r\n"+
		"X-mIxEd-Case: a, b\r\n"+
		"Set-Cookie: a=1\r\n"+
		"set-cookie: b=2\r\n"+
		"Server: upstream\r\n"+
		"connection: X-Drop, keep-alive\r\n"+
		"x-drop: listed\r\n"+
		"Keep-Alive: timeout=5\r\n"+
		"Proxy-Connection: keep-alive\r\n"+
		"Proxy-Authenticate: Basic\r\n"+
		"upgrade: h2c\r\n"+
		"Bad Name: x\r\n"+
		"anthropic-ratelimit-requests-remaining: 7\r\n"+
		"Content-Length: 11\r\n"+
		"\r\n"+body)
	e := newEnv(t, up, nil)
	w := dialWire(t, e.srv.Addr())
	w.send("POST /v1/messages HTTP/1.1\r\nHost: sidecar\r\nContent-Length: " + strconv.Itoa(len(msgBody)) + "\r\n\r\n" + msgBody)
	status, err := w.br.ReadString('\n')
	if err != nil || status != "HTTP/1.1 200 OK\r\n" {
		t.Fatalf("status line %q (%v)", status, err)
	}
	var lines []string
	for {
		l, err := w.br.ReadString('\n')
		if err != nil {
			t.Fatalf("header: %v after %q", err, lines)
		}
		if l == "\r\n" {
			break
		}
		lines = append(lines, strings.TrimSuffix(l, "\r\n"))
	}
	count := func(name string) (n int, last string) {
		for _, l := range lines {
			if k, v, _ := strings.Cut(l, ":"); strings.EqualFold(k, name) {
				n, last = n+1, strings.TrimSpace(v)
			}
		}
		return n, last
	}
	for _, want := range []string{"request-id: req_1", "X-mIxEd-Case: a, b", "anthropic-ratelimit-requests-remaining: 7"} {
		if !slices.Contains(lines, want) {
			t.Errorf("line %q not sent as the upstream spelled it: %q", want, lines)
		}
	}
	for name, want := range map[string]string{"Content-Type": "application/json", "Server": "upstream", "Content-Length": "11"} {
		if n, v := count(name); n != 1 || v != want {
			t.Errorf("%s sent %d times, last %q; want once, %q", name, n, v, want)
		}
	}
	if n, _ := count("Set-Cookie"); n != 2 {
		t.Errorf("Set-Cookie sent %d times, want 2: %q", n, lines)
	}
	if n, v := count("Date"); n != 1 || strings.Contains(v, "2001") {
		t.Errorf("Date sent %d times, last %q; want the sidecar's, once", n, v)
	}
	for _, name := range []string{"Connection", "X-Drop", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Upgrade", "Bad Name", "Bad"} {
		if n, _ := count(name); n != 0 {
			t.Errorf("%s sent to the client: %q", name, lines)
		}
	}
	got := make([]byte, len(body))
	if _, err := io.ReadFull(w.br, got); err != nil || string(got) != body {
		t.Fatalf("body %q (%v), want %q", got, err, body)
	}
}
