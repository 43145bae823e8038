package topcli_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/cli/clitest"
	"github.com/keywarden/keywarden/internal/cli/sidecarcli"
	"github.com/keywarden/keywarden/internal/cli/topcli"
	"github.com/keywarden/keywarden/internal/proxy/usage"
	"github.com/keywarden/keywarden/internal/tailbuf"
	_ "github.com/keywarden/keywarden/providers/all"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest"
)

// root returns keywarden's root command with the sidecar and top
// subcommands, as cmd/keywarden assembles it.
func root() *cobra.Command {
	r := cli.Root()
	r.AddCommand(sidecarcli.Commands()...)
	r.AddCommand(topcli.Commands()...)
	return r
}

// top runs `keywarden args...` to the end and returns its output and exit
// code.
func top(t *testing.T, args ...string) (out, errOut string, code int) {
	t.Helper()
	return clitest.Run(t, root(), "", args...)
}

// env is a sidecar started in-process against the fake Claude API, with
// two named clients.
type env struct {
	fake            *anthropictest.Server
	key             string
	cfg             string
	listen, metrics string
	tokens          map[string]string // by client
}

func startSidecar(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	// The 429's rate-limit reset is an hour away: top marks a limit
	// whose reset has passed stale, and the test must not race the clock.
	e := &env{fake: anthropictest.Start(t, anthropictest.WithRetryAfter(time.Hour)), listen: clitest.FreeAddr(t), metrics: clitest.FreeAddr(t),
		tokens: map[string]string{"payments": "payments-token-0123456789", "search": "search-token-0123456789"}}
	e.key = e.fake.AddKey("", "active").Value
	storePath := filepath.Join(dir, "keys.json")
	providertest.Rotate(t, file.New(storePath), "prod", []byte(e.key))
	var clients strings.Builder
	for _, name := range []string{"payments", "search"} {
		p := filepath.Join(dir, name+".token")
		if err := os.WriteFile(p, []byte(e.tokens[name]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&clients, "    - {name: %s, token_file: %s}\n", name, p)
	}
	e.cfg = filepath.Join(dir, "kw.yaml")
	if err := os.WriteFile(e.cfg, []byte(fmt.Sprintf(`
keys:
  prod: {store: "file://%s?name=prod"}
sidecar:
  listen: "%s"
  metrics_listen: "%s"
  routes: [{prefix: /, key: prod, upstream: "%s"}]
  clients:
%s  budgets:
    - {name: pay-day, client: payments, usd: 0.001, per: day}
    - {name: search-tokens, client: search, tokens: 40, per: day}
  timeouts: {shutdown: 5s}
`, storePath, e.listen, e.metrics, e.fake.URL(), clients.String())), 0o600); err != nil {
		t.Fatal(err)
	}
	r := root()
	logs := &tailbuf.Buffer{}
	r.SetArgs([]string{"sidecar", "--config", e.cfg})
	r.SetOut(logs)
	r.SetErr(logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sidecar: %v\n%s", err, logs.String())
		}
		if strings.Contains(logs.String(), e.key) {
			t.Error("the sidecar logged the key")
		}
	})
	clitest.WaitFor(t, "sidecar ready", func() bool {
		resp, err := http.Get("http://" + e.metrics + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return e
}

// send sends one Messages request as client and returns its status and
// body, read to the end.
func (e *env) send(t *testing.T, client, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+e.listen+"/v1/messages", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-api-key", e.tokens[client])
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// waitRow waits until `top --once` shows a row starting with want: the
// sidecar counts a request once its response has been sent, a moment
// after the client read it, and adds to its budgets after that.
func (e *env) waitRow(t *testing.T, want ...string) {
	t.Helper()
	clitest.WaitFor(t, fmt.Sprintf("row %q", want), func() bool {
		out, _, _ := top(t, "top", "--once", "--metrics-url", e.metrics)
		return hasRow(out, want...)
	})
}

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func message(model string, stream bool) string {
	return fmt.Sprintf(`{"model":%q,"max_tokens":64,"stream":%t,"messages":[{"role":"user","content":"How many tokens is this request?"}]}`, model, stream)
}

// inputTokens is the fake's input token count of a body: its length / 4.
func inputTokens(body string) int64 { return max(int64(len(body)/4), 1) }

// Output tokens of the fake: 8 per JSON answer, 3 per stream (its deltas).
const jsonOut, streamOut = 8, 3

func cost(model string, in, out int64) float64 {
	p := usage.DefaultPrices[model]
	return (float64(in)*p.Input + float64(out)*p.Output) / 1e6
}

// usd formats dollars as top does for spends under $1.
func usd(v float64) string { return fmt.Sprintf("%.6f", v) }

// percent formats a ratio as top does.
func percent(r float64) string { return fmt.Sprintf("%.1f%%", r*100) }

var hasRow = topcli.HasRow

// TestTopAgainstSidecar sends JSON and streamed Messages requests through
// a real sidecar as two named clients, one of them rate-limited upstream,
// and reads them back with `top --once`, then `-n 2`.
func TestTopAgainstSidecar(t *testing.T) {
	e := startSidecar(t)
	const sonnet, haiku, opus = "claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-7"
	bodies := map[string]string{sonnet: message(sonnet, false), haiku: message(haiku, true), opus: message(opus, false)}
	for range 2 {
		if code, b := e.send(t, "payments", bodies[sonnet]); code != 200 || !strings.Contains(b, `"output_tokens":8`) {
			t.Fatalf("payments JSON: %d %s", code, b)
		}
	}
	if code, b := e.send(t, "payments", bodies[haiku]); code != 200 || !strings.Contains(b, "message_stop") {
		t.Fatalf("payments stream: %d %s", code, b)
	}
	e.fake.FailNext(1, http.StatusTooManyRequests, "/v1/messages")
	if code, b := e.send(t, "search", bodies[opus]); code != http.StatusTooManyRequests || !strings.Contains(b, "rate_limit_error") {
		t.Fatalf("search rate-limited upstream: %d %s", code, b)
	}
	sonnetIn, haikuIn, opusIn := 2*inputTokens(bodies[sonnet]), inputTokens(bodies[haiku]), inputTokens(bodies[opus])
	if opusIn+jsonOut < 40 {
		t.Fatalf("the opus request's %d tokens do not spend budget search-tokens (40)", opusIn+jsonOut)
	}
	if code, b := e.send(t, "search", bodies[opus]); code != 200 {
		t.Fatalf("search JSON: %d %s", code, b)
	}
	payTokens, searchTokens := sonnetIn+2*jsonOut+haikuIn+streamOut, opusIn+jsonOut
	sonnetCost, haikuCost := cost(sonnet, sonnetIn, 2*jsonOut), cost(haiku, haikuIn, streamOut)
	opusCost := cost(opus, opusIn, jsonOut)
	payUsed := (sonnetCost + haikuCost) / 0.001
	e.waitRow(t, "TOTAL", "5")
	e.waitRow(t, "search-tokens", percent(float64(searchTokens)/40))
	e.waitRow(t, "pay-day", percent(payUsed))
	// search-tokens is spent: the sidecar refuses the next request itself.
	if code, b := e.send(t, "search", bodies[opus]); code != http.StatusTooManyRequests || !strings.Contains(b, "search-tokens") {
		t.Fatalf("search over budget: %d %s", code, b)
	}
	if os.Getenv("KW_TOP_UPDATE_SEED") != "" {
		updateSeed(t, e.metrics)
	}
	out, errOut, code := top(t, "top", "--once", "--metrics-url", e.metrics)
	if code != 0 {
		t.Fatalf("top --once: %d\n%s\n%s", code, out, errOut)
	}
	n := func(v int64) string { return fmt.Sprint(v) }
	for _, want := range [][]string{
		{"payments", "3", "-", "0", "-", n(payTokens), "-", usd(sonnetCost + haikuCost), "-"},
		{"search", "2", "-", "1", "-", n(searchTokens), "-", usd(opusCost), "-"},
		{"TOTAL", "5", "-", "1", "-", n(payTokens + searchTokens), "-", usd(sonnetCost + haikuCost + opusCost), "-"},
		{"payments", haiku, n(haikuIn), n(streamOut), "0", "0", "-", usd(haikuCost), "-"},
		{"payments", sonnet, n(sonnetIn), n(2 * jsonOut), "0", "0", "-", usd(sonnetCost), "-"},
		{"search", opus, n(opusIn), n(jsonOut), "0", "0", "-", usd(opusCost), "-"},
		{"search", "rate_limit_error", "1", "-"},
		{"BUDGET", "USED", "LEFT", "REFUSED"},
		{"pay-day", percent(payUsed), percent(1 - payUsed), "0", "-"},
		{"search-tokens", percent(float64(searchTokens) / 40), "0.0%", "1", "-"},
		{"prod", "requests", "0", "50", "0.0%"}, // the fake's 429 headers
	} {
		if !hasRow(out, want...) {
			t.Errorf("no row %q in\n%s", want, out)
		}
	}
	// The gauges of resources whose headers the 429 did not carry stay 0:
	// no row.
	if hasRow(out, "prod", "tokens") || hasRow(out, "prod", "input_tokens") {
		t.Errorf("rows of rate limits never reported:\n%s", out)
	}
	if strings.Contains(out, "\x1b") || strings.Contains(out, "sk-ant-") || strings.Contains(out, e.key) ||
		strings.Contains(out, e.tokens["payments"]) || strings.Contains(out, e.tokens["search"]) {
		t.Fatalf("top printed an escape code, a key or a client token:\n%s", out)
	}

	// --config finds the metrics address in the sidecar's config.
	fromConfig, errOut, code := top(t, "top", "--once", "--config", e.cfg)
	if code != 0 || !hasRow(fromConfig, "TOTAL", "5") || !strings.Contains(fromConfig, "http://"+e.metrics+"/metrics") {
		t.Fatalf("top --config: %d\n%s\n%s", code, fromConfig, errOut)
	}

	// Two scrapes without traffic between them: the second block has
	// rates, all zero.
	out, errOut, code = top(t, "top", "-n", "2", "--interval", "10ms", "--metrics-url", e.metrics)
	blocks := strings.Split(out, "\n\nkeywarden top ")
	if code != 0 || len(blocks) != 2 {
		t.Fatalf("top -n 2: %d, %d blocks\n%s\n%s", code, len(blocks), out, errOut)
	}
	if !hasRow(blocks[0], "TOTAL", "5", "-") || !hasRow(blocks[1], "TOTAL", "5", "0.00", "1", "0.00", n(payTokens+searchTokens), "0.00") ||
		!hasRow(blocks[1], "search", "rate_limit_error", "1", "0.00") || strings.Contains(out, "\x1b") {
		t.Fatalf("top -n 2:\n%s", out)
	}

	// Between two scrapes 10 s apart on the view's clock, payments sends
	// one more request and search one that its spent budget refuses: the
	// second refresh shows their rates.
	oneIn, oneCost := inputTokens(bodies[sonnet]), cost(sonnet, inputTokens(bodies[sonnet]), jsonOut)
	clock := t0
	now := func() time.Time { clock = clock.Add(10 * time.Second); return clock }
	var buf bytes.Buffer
	err := topcli.Run(context.Background(), "http://"+e.metrics+"/metrics", 2, false, &buf, now, func(i int) {
		if i != 0 {
			return
		}
		if code, b := e.send(t, "payments", bodies[sonnet]); code != 200 {
			t.Errorf("payments JSON: %d %s", code, b)
		}
		if code, _ := e.send(t, "search", bodies[opus]); code != http.StatusTooManyRequests {
			t.Errorf("search over budget: %d", code)
		}
		e.waitRow(t, "TOTAL", "6")
		e.waitRow(t, "pay-day", percent(payUsed+oneCost/0.001))
	})
	blocks = strings.Split(buf.String(), "\n\nkeywarden top ")
	if err != nil || len(blocks) != 2 {
		t.Fatalf("run: %v\n%s", err, buf.String())
	}
	rate := func(v float64) string { return fmt.Sprintf("%.2f", v/10) }
	for _, want := range [][]string{
		{"payments", "4", "0.10", "0", "0.00", n(payTokens + oneIn + jsonOut), rate(float64(oneIn + jsonOut)), usd(sonnetCost + haikuCost + oneCost), usd(oneCost * 360)},
		{"search", "2", "0.00", "1", "0.00", n(searchTokens), "0.00", usd(opusCost), usd(0)},
		{"payments", sonnet, n(sonnetIn + oneIn), n(3 * jsonOut), "0", "0", rate(float64(oneIn + jsonOut)), usd(sonnetCost + oneCost), usd(oneCost * 360)},
		{"pay-day", percent(payUsed + oneCost/0.001), percent(1 - payUsed - oneCost/0.001), "0", "0.00"},
		{"search-tokens", percent(float64(searchTokens) / 40), "0.0%", "2", "0.10"},
	} {
		if !hasRow(blocks[1], want...) {
			t.Errorf("no row %q in\n%s", want, blocks[1])
		}
	}
}

// TestTopUnreachable: --once fails with exit code 1 and a clear error; a
// live view (-n 2 here) shows the error line on every refresh and keeps
// trying.
func TestTopUnreachable(t *testing.T) {
	addr := clitest.FreeAddr(t)
	out, errOut, code := top(t, "top", "--once", "--metrics-url", addr)
	if code != cli.ExitFailed || out != "" || !strings.Contains(errOut, "top: scrape http://"+addr+"/metrics") ||
		!strings.Contains(errOut, "connection refused") {
		t.Fatalf("--once: %d\n%s\n%s", code, out, errOut)
	}
	out, errOut, code = top(t, "top", "-n", "2", "--interval", "1ms", "--metrics-url", addr)
	if code != cli.ExitFailed || strings.Count(out, "error: top: scrape") != 2 {
		t.Fatalf("-n 2: %d\n%s\n%s", code, out, errOut)
	}
	// Not a keywarden endpoint, and one too large to read.
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			line := []byte("keywarden_x 1\n")
			for range (9 << 20) / len(line) {
				w.Write(line)
			}
			return
		}
		io.WriteString(w, "go_goroutines 7\n")
	}))
	for path, want := range map[string]string{"/metrics": "no keywarden metrics", "/big": "larger than 8 MiB"} {
		_, errOut, code := top(t, "top", "--once", "--metrics-url", srv+path)
		if code != cli.ExitFailed || !strings.Contains(errOut, want) {
			t.Errorf("%s: %d %s", path, code, errOut)
		}
	}
}

func TestTopFlagErrors(t *testing.T) {
	dir := t.TempDir()
	off := filepath.Join(dir, "kw.yaml")
	os.WriteFile(off, []byte("keys: {prod: {store: \"env://P\"}}\nsidecar: {metrics_listen: \"off\"}\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--interval", "0s"}, "--interval"},
		{[]string{"-n", "-1"}, "-n -1"},
		{[]string{"--once", "-n", "3"}, "none of the others can be"},
		{[]string{"--metrics-url", "ftp://x/metrics"}, "--metrics-url"},
		{[]string{"--config", off}, "sidecar.metrics_listen is off"},
	} {
		_, errOut, code := top(t, append([]string{"top"}, tc.args...)...)
		if code != cli.ExitConfig || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: %d %q", tc.args, code, errOut)
		}
	}
}

// updateSeed writes the sidecar's metrics to testdata/sidecar.prom, the
// fuzz target's seed (KW_TOP_UPDATE_SEED=1 go test -run TestTopAgainstSidecar).
func updateSeed(t *testing.T, metrics string) {
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	// Only the families top reads: the key_info fingerprint and the Go
	// runtime's metrics are not needed.
	var seed bytes.Buffer
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, "keywarden_sidecar_") && !strings.Contains(line, "_duration_") ||
			strings.Contains(line, "keywarden_upstream_ratelimit_") {
			seed.WriteString(line)
		}
	}
	if err := os.WriteFile(filepath.Join("testdata", "sidecar.prom"), seed.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTopInPlace: on a terminal each refresh redraws the screen from the
// top left instead of adding lines.
func TestTopInPlace(t *testing.T) {
	seed, err := os.ReadFile(filepath.Join("testdata", "sidecar.prom"))
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(seed) }))
	clock := t0
	now := func() time.Time { clock = clock.Add(time.Second); return clock }
	var buf bytes.Buffer
	if err := topcli.Run(context.Background(), srv+"/metrics", 2, true, &buf, now, nil); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.HasPrefix(out, "\x1b[2J\x1b[Hkeywarden top ") || strings.Count(out, "\x1b[2J") != 1 ||
		strings.Count(out, "\x1b[H") != 2 || !strings.Contains(out, "\x1b[Hkeywarden top ") || !strings.HasSuffix(out, "\x1b[J") {
		t.Fatalf("got %q", out)
	}
}

// serve serves h on loopback until the test ends and returns its URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// TestInterruptEndsLiveView runs a live `keywarden top` in a child process
// against an endpoint where nothing listens: it shows the error on every
// refresh and keeps trying, and SIGINT ends it with exit code 0.
func TestInterruptEndsLiveView(t *testing.T) {
	if u := os.Getenv("KW_TOP_CHILD_URL"); u != "" {
		r := root()
		r.SetArgs([]string{"top", "--metrics-url", u, "--interval", "20ms"})
		os.Exit(cli.Main(r))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestInterruptEndsLiveView$")
	cmd.Env = append(os.Environ(), "KW_TOP_CHILD_URL="+clitest.FreeAddr(t))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for errs := 0; errs < 2 && sc.Scan(); {
		if strings.HasPrefix(sc.Text(), "error: top: scrape http://") {
			errs++
		}
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGINT: %v\n%s", err, stderr.String())
	}
}

// TestTopShowsNoKey: a token in --metrics-url's query or fragment (which
// no scrape of the sidecar needs) is not printed in top's header or its
// errors, and an error quoting the scraped body (an endpoint that is not
// the sidecar's) prints a key in it as its fingerprint, on stdout as on
// stderr.
func TestTopShowsNoKey(t *testing.T) {
	key := string(providertest.FakeKey())
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			io.WriteString(w, "keywarden_x "+key+"\n")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	for path, want := range map[string]string{"/metrics": "503 Service Unavailable", "/body": "parse metrics"} {
		out, errOut, code := top(t, "top", "-n", "2", "--interval", "1ms", "--metrics-url", srv+path+"?token="+key+"#"+key)
		if code == 0 || !strings.Contains(out, "keywarden top  "+srv+path+"  ") || !strings.Contains(out+errOut, want) ||
			strings.Contains(out+errOut, key[13:]) {
			t.Errorf("%s: exit %d, want the URL without its query and %q, the key nowhere:\n%s", path, code, want,
				strings.ReplaceAll(out+errOut, key[13:], "<the key>"))
		}
	}
}

// TestTopRedactsLabelValues: a label value of the scraped body shaped
// like a key (an endpoint that is not the sidecar's, or a client, model,
// budget or key name that is a key pasted by mistake) is printed as its
// fingerprint, in every table that shows label values.
func TestTopRedactsLabelValues(t *testing.T) {
	key := string(providertest.FakeKey())
	body := strings.NewReplacer("KEY", key).Replace(`# TYPE keywarden_sidecar_client_requests_total counter
keywarden_sidecar_client_requests_total{client="KEY",error_type="KEY"} 3
# TYPE keywarden_sidecar_tokens_total counter
keywarden_sidecar_tokens_total{client="KEY",model="KEY",kind="input"} 10
# TYPE keywarden_sidecar_budget_used_ratio gauge
keywarden_sidecar_budget_used_ratio{budget="KEY"} 0.5
# TYPE keywarden_upstream_ratelimit_limit gauge
keywarden_upstream_ratelimit_limit{key="KEY",resource="KEY"} 50
`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }))
	defer srv.Close()
	out, errOut, code := top(t, "top", "--once", "--metrics-url", srv.URL+"/metrics")
	// Every label is cut at 40 runes: a key shown as it is leaves its first
	// 40 characters, the 16 after its prefix among them.
	if code != 0 || strings.Count(out, "[redacted ") < 8 || strings.Contains(out+errOut, key[13:29]) {
		t.Fatalf("exit %d, want every label value redacted, the key nowhere:\n%s%s", code,
			strings.ReplaceAll(out, key[13:40], "<the key>"), strings.ReplaceAll(errOut, key[13:40], "<the key>"))
	}
}
