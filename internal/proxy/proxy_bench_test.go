package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/proxytest"
	"github.com/keywarden/keywarden/internal/telemetry"
	"github.com/keywarden/keywarden/providers"
)

const benchResponse = `{"id":"msg_01","type":"message","role":"assistant","content":[{"type":"text","text":"Hello!"}],"model":"claude-sonnet-4-5","stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":6}}`

// benchStream is a short streamed answer, as the Claude API sends it.
const benchStream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-6\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n" +
	"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n" +
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello there, how are you today?\"}}\n\n" +
	"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n" +
	"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":9}}\n\n" +
	"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"

// cannedUpstream starts an upstream over loopback that answers every
// request at once: a JSON message, or with sse a stream.
func cannedUpstream(b *testing.B, sse bool) string {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Request-Id", "req_01")
		if !sse {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, benchResponse)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		_, _ = io.WriteString(w, benchStream)
	}))
	b.Cleanup(up.Close)
	return up.URL
}

func benchProxy(b *testing.B, upstreamURL string) *proxy.Proxy {
	ks := newKeyStore(b, "prod", keyA)
	src, err := providers.New(b.Context(), ks.st, "prod", providers.Options{Refresh: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { src.Close() })
	u, _ := url.Parse(upstreamURL)
	p, err := proxy.New(proxy.Options{
		Routes:  []proxy.Route{{Prefix: "/", Key: "prod", Source: src, Upstream: u, Version: "2023-06-01"}},
		Metrics: telemetry.New(), RPS: 1e9, Burst: 1e9, Concurrency: 1 << 20,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.CloseIdleConnections)
	return p
}

// BenchmarkHandler is the proxy's per-request cost without the client's
// network I/O (the upstream is over loopback, in process): guards, limits,
// routing, header injection, the upstream exchange, metrics, response copy; with
// the usage accounting off and on, in one run, for a JSON answer and an
// SSE stream, so that the accounting's own cost is the difference.
func BenchmarkHandler(b *testing.B) {
	for _, tc := range []struct {
		name string
		sse  bool
	}{{"json", false}, {"sse", true}} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/accounting=%v", tc.name, on), func(b *testing.B) {
				p := benchProxy(b, cannedUpstream(b, tc.sse))
				proxy.SetAccounting(p, on)
				benchHandler(b, p)
			})
		}
	}
}

func benchHandler(b *testing.B, p *proxy.Proxy) {
	body := `{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}`
	raw := "POST /v1/messages HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\nX-Api-Key: placeholder\r\n" +
		"Anthropic-Version: 2023-06-01\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		// One keep-alive in-memory connection per goroutine: the client's
		// side costs no system calls.
		client, server := net.Pipe()
		go p.ServeConn(server)
		defer client.Close()
		br := bufio.NewReader(client)
		for pb.Next() {
			if _, err := io.WriteString(client, raw); err != nil {
				b.Error(err)
				return
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// BenchmarkLoopback compares a request through the proxy with the same
// request sent straight to the upstream, both over loopback TCP.
func BenchmarkLoopback(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, benchResponse)
	}))
	defer up.Close()
	p := benchProxy(b, up.URL)
	defer p.CloseIdleConnections()
	ps := proxytest.NewServer(p)
	defer ps.Close()
	for _, tc := range []struct{ name, url string }{{"direct", up.URL}, {"proxy", ps.URL}} {
		b.Run(tc.name, func(b *testing.B) {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer c.CloseIdleConnections()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Post(tc.url+"/v1/messages", "application/json", strings.NewReader(`{"max_tokens":16}`))
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

// BenchmarkSSEFirstByte is the time from sending a streamed Messages
// request through the proxy over loopback to reading the first byte of its
// answer, with the usage accounting off and on in one run (reported as
// first-byte-ns; ns/op is the whole stream).
func BenchmarkSSEFirstByte(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		for ev := range strings.SplitAfterSeq(benchStream, "\n\n") {
			io.WriteString(w, ev)
			w.(http.Flusher).Flush()
		}
	}))
	defer up.Close()
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("accounting=%v", on), func(b *testing.B) {
			p := benchProxy(b, up.URL)
			proxy.SetAccounting(p, on)
			defer p.CloseIdleConnections()
			ps := proxytest.NewServer(p)
			defer ps.Close()
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			defer c.CloseIdleConnections()
			var first time.Duration
			var one [1]byte
			cpu0 := processCPU()
			for b.Loop() {
				start := time.Now()
				resp, err := c.Post(ps.URL+"/v1/messages", "application/json", strings.NewReader(`{"stream":true}`))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(resp.Body, one[:]); err != nil {
					b.Fatal(err)
				}
				first += time.Since(start)
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			b.ReportMetric(float64(first.Nanoseconds())/float64(b.N), "first-byte-ns")
			// The whole process's CPU (client, proxy and upstream) per
			// request: the accounting's cost is the difference.
			b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU returns the CPU time (user and system) the process used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
