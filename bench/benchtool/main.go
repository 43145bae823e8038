// Command benchtool is the sidecar load run's helper: a small upstream that
// answers like the Messages API (JSON or SSE), and clients that measure SSE
// time to first byte and hold many streams open while reading a process's
// RSS. bench/run.sh drives it; see docs/benchmarks.md.
//
//	benchtool upstream -listen 127.0.0.1:18080
//	benchtool ttfb -url http://127.0.0.1:8787 -n 2000 -c 16
//	benchtool streams -url http://127.0.0.1:8787 -n 1000 -hold 10s -pid 1234
//	benchtool rss -pid 1234
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool upstream|ttfb|streams|rss [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "upstream":
		err = upstream(os.Args[2:])
	case "ttfb":
		err = ttfb(os.Args[2:])
	case "streams":
		err = streams(os.Args[2:])
	case "rss":
		fs := flag.NewFlagSet("rss", flag.ExitOnError)
		pid := fs.Int("pid", 0, "process id")
		_ = fs.Parse(os.Args[2:])
		var kb int
		if kb, err = rssKB(*pid); err == nil {
			fmt.Println(kb)
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
// stream when the body asks for one; x-bench-hold keeps a stream open that
// long with a ping every x-bench-interval (default 1s). A request without
// x-api-key gets the API's 401.
func upstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:18080", "address")
	_ = fs.Parse(args)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Api-Key") == "" && r.Header.Get("Authorization") == "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"type":"error","error":{"type":"authentication_error","message":"x-api-key header is required"}}`)
			return
		}
		w.Header().Set("Request-Id", "req_bench")
		if !strings.Contains(string(body), `"stream":true`) {
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
	return srv.ListenAndServe()
}

func client(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: conns, MaxConnsPerHost: 0, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}}
}

func streamRequest(ctx context.Context, url string, hdr map[string]string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/messages",
		strings.NewReader(`{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"Hi"}]}`))
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
	_ = fs.Parse(args)
	cl := client(*c)
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
// hold, reads the RSS of pid while all are open, and reports it.
func streams(args []string) error {
	fs := flag.NewFlagSet("streams", flag.ExitOnError)
	url := fs.String("url", "", "base URL")
	n := fs.Int("n", 1000, "concurrent streams")
	hold := fs.Duration("hold", 10*time.Second, "how long the upstream holds each stream open")
	pid := fs.Int("pid", 0, "process whose RSS to read while the streams are open")
	_ = fs.Parse(args)
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
	peak := 0
	select {
	case <-allOpen:
		// Sample a few times while every stream is open; keep the largest.
		for i := 0; i < 5; i++ {
			if kb, err := rssKB(*pid); err == nil && kb > peak {
				peak = kb
			}
			time.Sleep(*hold / 10)
		}
	case <-ctx.Done():
	}
	wg.Wait()
	if open.Load() != int64(*n) {
		return fmt.Errorf("only %d of %d streams opened (%d failed)", open.Load(), *n, failed.Load())
	}
	return printJSON(map[string]any{"streams": *n, "completed": completed.Load(), "failed": failed.Load(), "rss_kb_all_open": peak})
}

func rssKB(pid int) (int, error) {
	if pid == 0 {
		return 0, errors.New("no -pid")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	return 0, errors.New("no VmRSS")
}

func pct(d []time.Duration, p int) int64 {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)].Microseconds()
}

func printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}
