// Command benchtool is the sidecar load run's helper: a small upstream that
// answers like the Messages API (JSON or SSE), and clients that measure SSE
// time to first byte and hold many streams open while reading a process's
// RSS, and the smallest fasthttp proxy as a floor to compare with
// (minproxy.go). bench/run.sh drives it; see docs/benchmarks.md.
//
//	benchtool upstream -listen 127.0.0.1:18080
//	benchtool upstream -listen 127.0.0.1:18443 -tls-dir /tmp/out   # HTTPS, CA in /tmp/out/ca.pem
//	benchtool latency -url http://127.0.0.1:8787 -d 5s          # concurrency 1
//	benchtool ttfb -url http://127.0.0.1:8787 -n 2000 -c 16
//	benchtool streams -url http://127.0.0.1:8787 -n 1000 -hold 10s -pid 1234
//	benchtool streams -json -url http://127.0.0.1:8787 -n 1000 -hold 10s -pid 1234   # long non-streaming calls
//	benchtool rss -pid 1234
//	benchtool minproxy -listen 127.0.0.1:18099 -upstream http://127.0.0.1:18080 -key-file KEY
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool upstream|latency|ttfb|streams|rss|minproxy [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "upstream":
		err = upstream(os.Args[2:])
	case "ttfb":
		err = ttfb(os.Args[2:])
	case "latency":
		err = latency(os.Args[2:])
	case "streams":
		err = streams(os.Args[2:])
	case "minproxy":
		err = minproxy(os.Args[2:])
	case "rss":
		fs := flag.NewFlagSet("rss", flag.ExitOnError)
		pids := fs.String("pid", "", "process ids, separated by commas or spaces (their memory is summed)")
		_ = fs.Parse(os.Args[2:])
		var m memory
		if m, err = memOf(*pids); err == nil {
			fmt.Println(m.RSS, m.Anon)
		}
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}

const message = `{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[{"type":"text","text":"Hello! How can I help you today?"}],"model":"claude-sonnet-4-5","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":10}}`

var sseEvents = []string{
	`event: message_start` + "\n" + `data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}}` + "\n\n",
	`event: content_block_start` + "\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n",
	`event: content_block_delta` + "\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}` + "\n\n",
	`event: content_block_stop` + "\n" + `data: {"type":"content_block_stop","index":0}` + "\n\n",
	`event: message_delta` + "\n" + `data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":10}}` + "\n\n",
	`event: message_stop` + "\n" + `data: {"type":"message_stop"}` + "\n\n",
}

const ping = "event: ping\ndata: {\"type\": \"ping\"}\n\n"

// upstream answers POST /v1/messages with a fixed message, or with an SSE
// stream when the body asks for one; x-bench-hold delays a message that
// long (a long call), or keeps a stream open that
// long with a ping every x-bench-interval (default 1s). A request without
// x-api-key gets the API's 401. With -tls-dir it serves HTTPS (HTTP/1.1
// only, as the Claude API does) with a certificate for 127.0.0.1 and
// localhost signed by a CA it generates and writes to DIR/ca.pem.
func upstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:18080", "address")
	tlsDir := fs.String("tls-dir", "", "serve HTTPS; write the generated CA to DIR/ca.pem")
	_ = fs.Parse(args)
	// Every answer of the Claude API carries a request id and the twelve
	// anthropic-ratelimit-* headers (the sidecar reads them into gauges;
	// nginx passes them on); the bench's answers too.
	reset := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	var lines [][2]string
	for _, r := range []string{"Requests", "Tokens", "Input-Tokens", "Output-Tokens"} {
		base := "Anthropic-Ratelimit-" + r + "-"
		lines = append(lines, [2]string{base + "Limit", "4000"}, [2]string{base + "Remaining", "3999"}, [2]string{base + "Reset", reset})
	}
	var held atomic.Int64 // long non-streaming calls waiting
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Api-Key") == "" && r.Header.Get("Authorization") == "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"type":"error","error":{"type":"authentication_error","message":"x-api-key header is required"}}`)
			return
		}
		w.Header().Set("Request-Id", "req_bench")
		for _, kv := range lines {
			w.Header()[kv[0]] = []string{kv[1]}
		}
		if !strings.Contains(string(body), `"stream":true`) {
			if hold, _ := time.ParseDuration(r.Header.Get("X-Bench-Hold")); hold > 0 {
				// A long call: the answer comes after hold; X-Bench-Held
				// says how many such calls were waiting when it did.
				n := held.Add(1)
				select {
				case <-time.After(hold):
				case <-r.Context().Done():
				}
				w.Header().Set("X-Bench-Held", strconv.FormatInt(max(n, held.Load()), 10))
				held.Add(-1)
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, message)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		f := w.(http.Flusher)
		io.WriteString(w, sseEvents[0])
		f.Flush()
		if hold, _ := time.ParseDuration(r.Header.Get("X-Bench-Hold")); hold > 0 {
			every, _ := time.ParseDuration(r.Header.Get("X-Bench-Interval"))
			if every <= 0 {
				every = time.Second
			}
			t := time.NewTicker(every)
			end := time.After(hold)
		loop:
			for {
				select {
				case <-t.C:
					io.WriteString(w, ping)
					f.Flush()
				case <-end:
					break loop
				case <-r.Context().Done():
					t.Stop()
					return
				}
			}
			t.Stop()
		}
		for _, ev := range sseEvents[1:] {
			io.WriteString(w, ev)
			f.Flush()
		}
	})
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if *tlsDir == "" {
		return srv.ListenAndServe()
	}
	cfg, err := selfSignedTLS(*tlsDir)
	if err != nil {
		return err
	}
	srv.TLSConfig = cfg
	// HTTP/1.1 only: an empty TLSNextProto turns net/http's HTTP/2 off.
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	return srv.ListenAndServeTLS("", "")
}

// selfSignedTLS generates a CA and a server certificate for 127.0.0.1 and
// localhost signed by it, writes the CA to dir/ca.pem, and returns the
// server's TLS config.
func selfSignedTLS(dir string) (*tls.Config, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keywarden bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
	}, nil
}

// latency sends one request at a time for a duration and reports the
// latency percentiles: the added latency of a proxy is its numbers minus
// those of a direct call.
func latency(args []string) error {
	fs := flag.NewFlagSet("latency", flag.ExitOnError)
	url := fs.String("url", "", "base URL")
	d := fs.Duration("d", 5*time.Second, "duration")
	caFile := fs.String("ca", "", "PEM file of the CA to trust (https)")
	_ = fs.Parse(args)
	cl, err := trustingClient(1, *caFile)
	if err != nil {
		return err
	}
	body := []byte(`{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}`)
	var lat []time.Duration
	failed := 0
	for end := time.Now().Add(*d); time.Now().Before(end); {
		req, _ := http.NewRequest("POST", *url+"/v1/messages", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Api-Key", "placeholder")
		req.Header.Set("Anthropic-Version", "2023-06-01")
		start := time.Now()
		resp, err := cl.Do(req)
		if err != nil {
			failed++
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			failed++
			continue
		}
		lat = append(lat, time.Since(start))
	}
	return printJSON(map[string]any{
		"requests": len(lat), "failed": failed,
		"p50_us": pctF(lat, 50), "p99_us": pctF(lat, 99),
	})
}

// pctF is pct in fractional microseconds.
func pctF(d []time.Duration, p int) float64 { return float64(percentile(d, p).Nanoseconds()) / 1e3 }

// trustingClient is client trusting the CA in caFile too, when not "".
func trustingClient(conns int, caFile string) (*http.Client, error) {
	cl := client(conns)
	if caFile == "" {
		return cl, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	cl.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool}
	return cl, nil
}

func client(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: conns, MaxConnsPerHost: 0, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}}
}

// streamRequest is a streaming Messages request.
func streamRequest(ctx context.Context, url string, hdr map[string]string) *http.Request {
	return messagesRequest(ctx, url, `{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"Hi"}]}`, hdr)
}

// messagesRequest is a Messages request with body, as an SDK sends it.
func messagesRequest(ctx context.Context, url, body string, hdr map[string]string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/messages", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Api-Key", "placeholder")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return req
}

// ttfb sends n streaming requests, c at a time, and reports the time to
// the first SSE event and to the end of the stream.
func ttfb(args []string) error {
	fs := flag.NewFlagSet("ttfb", flag.ExitOnError)
	url := fs.String("url", "", "base URL")
	n := fs.Int("n", 2000, "requests")
	c := fs.Int("c", 16, "concurrency")
	caFile := fs.String("ca", "", "PEM file of the CA to trust (https)")
	_ = fs.Parse(args)
	cl, err := trustingClient(*c, *caFile)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var first, total []time.Duration
	var failed atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range *c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(*n) {
				start := time.Now()
				resp, err := cl.Do(streamRequest(context.Background(), *url, nil))
				if err != nil {
					failed.Add(1)
					continue
				}
				br := bufio.NewReader(resp.Body)
				_, err = br.ReadString('\n')
				f := time.Since(start)
				_, _ = io.Copy(io.Discard, br)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				mu.Lock()
				first, total = append(first, f), append(total, time.Since(start))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return printJSON(map[string]any{
		"requests": *n, "failed": failed.Load(),
		"ttfb_p50_us": pct(first, 50), "ttfb_p99_us": pct(first, 99),
		"total_p50_us": pct(total, 50), "total_p99_us": pct(total, 99),
	})
}

// streams opens n streams at once, each held open by the upstream for
// hold, reads the memory of pid (or of several, summed) while all are
// open — the largest of five samples in the first half of the hold, and
// one late in it — and reports it.
func streams(args []string) error {
	fs := flag.NewFlagSet("streams", flag.ExitOnError)
	url := fs.String("url", "", "base URL")
	n := fs.Int("n", 1000, "concurrent streams")
	hold := fs.Duration("hold", 10*time.Second, "how long the upstream holds each stream open")
	pids := fs.String("pid", "", "processes whose memory to read while the streams are open, separated by commas or spaces (summed)")
	long := fs.Bool("json", false, "long non-streaming calls instead of streams: each answer comes whole after -hold")
	_ = fs.Parse(args)
	if *long {
		return longCalls(*url, *n, *hold, *pids)
	}
	cl := client(*n)
	ctx, cancel := context.WithTimeout(context.Background(), *hold+2*time.Minute)
	defer cancel()
	var open, failed, completed atomic.Int64
	allOpen := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for range *n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := cl.Do(streamRequest(ctx, *url, map[string]string{"X-Bench-Hold": hold.String()}))
			if err != nil {
				failed.Add(1)
				return
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			if _, err := br.ReadString('\n'); err != nil || resp.StatusCode != 200 {
				failed.Add(1)
				return
			}
			if open.Add(1) == int64(*n) {
				once.Do(func() { close(allOpen) })
			}
			b, err := io.ReadAll(br)
			if err == nil && strings.Contains(string(b), "message_stop") {
				completed.Add(1)
			} else {
				failed.Add(1)
			}
		}()
	}
	var peak, settled memory
	select {
	case <-allOpen:
		// Sample a few times while every stream is open; keep the largest.
		opened := time.Now()
		for i := 0; i < 5; i++ {
			if m, err := memOf(*pids); err == nil && m.RSS > peak.RSS {
				peak = m
			}
			time.Sleep(*hold / 10)
		}
		// And once more late in the hold, every stream still open: the
		// memory they keep, the burst that opened them past.
		time.Sleep(time.Until(opened.Add(*hold * 8 / 10)))
		settled, _ = memOf(*pids)
	case <-ctx.Done():
	}
	wg.Wait()
	if open.Load() != int64(*n) {
		return fmt.Errorf("only %d of %d streams opened (%d failed)", open.Load(), *n, failed.Load())
	}
	return printJSON(map[string]any{"streams": *n, "completed": completed.Load(), "failed": failed.Load(), "rss_kb_all_open": peak.RSS, "anon_kb_all_open": peak.Anon,
		"rss_kb_settled": settled.RSS, "anon_kb_settled": settled.Anon})
}

// longCalls sends n non-streaming calls at once, each answered by the
// upstream after hold, and reads the memory of pids while they wait: the
// largest of five samples from a fifth of the hold on (the burst of
// connections is over by then), and one at 8/10 of it. held is the most
// calls the upstream saw waiting at once (n when all waited together).
func longCalls(url string, n int, hold time.Duration, pids string) error {
	cl := client(n)
	ctx, cancel := context.WithTimeout(context.Background(), hold+2*time.Minute)
	defer cancel()
	var failed, completed, most atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := cl.Do(messagesRequest(ctx, url, `{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}`,
				map[string]string{"X-Bench-Hold": hold.String()}))
			if err != nil {
				failed.Add(1)
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"usage"`)) {
				failed.Add(1)
				return
			}
			completed.Add(1)
			if h, err := strconv.ParseInt(resp.Header.Get("X-Bench-Held"), 10, 64); err == nil {
				for m := most.Load(); h > m && !most.CompareAndSwap(m, h); m = most.Load() {
				}
			}
		}()
	}
	var peak, settled memory
	time.Sleep(time.Until(start.Add(hold / 5)))
	for i := 0; i < 5; i++ {
		if m, err := memOf(pids); err == nil && m.RSS > peak.RSS {
			peak = m
		}
		time.Sleep(hold / 10)
	}
	time.Sleep(time.Until(start.Add(hold * 8 / 10)))
	settled, _ = memOf(pids)
	wg.Wait()
	return printJSON(map[string]any{"calls": n, "held_at_once": most.Load(), "completed": completed.Load(), "failed": failed.Load(),
		"rss_kb_all_open": peak.RSS, "anon_kb_all_open": peak.Anon, "rss_kb_settled": settled.RSS, "anon_kb_settled": settled.Anon})
}

// memory is what processes hold in RAM, in kB: RSS (VmRSS) and its
// anonymous part (RssAnon: heap, stacks, the runtime's own), the rest
// being pages of files mapped, mostly the executable's, which the page
// cache shares between every process that runs the same file.
type memory struct{ RSS, Anon int }

// memOf sums the memory of the process ids in pids, separated by commas
// or spaces.
func memOf(pids string) (memory, error) {
	var sum memory
	if pids == "" {
		return sum, errors.New("no -pid")
	}
	for _, p := range strings.FieldsFunc(pids, func(r rune) bool { return r == ',' || r == ' ' }) {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return sum, fmt.Errorf("bad process id %q", p)
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			return sum, err
		}
		var m memory
		seen := 0
		for _, line := range strings.Split(string(b), "\n") {
			for name, v := range map[string]*int{"VmRSS:": &m.RSS, "RssAnon:": &m.Anon} {
				if rest, ok := strings.CutPrefix(line, name); ok {
					if *v, err = strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB"))); err != nil {
						return sum, fmt.Errorf("process %d: %s: %w", pid, name, err)
					}
					seen++
				}
			}
		}
		if seen != 2 {
			return sum, fmt.Errorf("process %d: no VmRSS or RssAnon", pid)
		}
		sum.RSS += m.RSS
		sum.Anon += m.Anon
	}
	return sum, nil
}

// pct returns the p-th percentile of d in whole microseconds.
func pct(d []time.Duration, p int) int64 { return percentile(d, p).Microseconds() }

// percentile returns the p-th percentile of d (nearest rank), 0 when d is
// empty.
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}
