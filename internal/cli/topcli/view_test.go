package topcli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// prevBody and curBody are two scrapes 10 s apart. Between them client
// payments sent 22 requests (2 of them rate-limited) over two routes,
// spent 2400 tokens and $0.012 on one model, and client search appeared
// with 5 requests; budget pay-day refused 3.
const prevBody = `# TYPE keywarden_sidecar_client_requests_total counter
keywarden_sidecar_client_requests_total{route="/",client="payments",error_type="none"} 10
keywarden_sidecar_client_requests_total{route="/",client="payments",error_type="rate_limit_error"} 2
keywarden_sidecar_client_requests_total{route="/v2",client="payments",error_type="none"} 5
# TYPE keywarden_sidecar_tokens_total counter
keywarden_sidecar_tokens_total{route="/",client="payments",model="claude-sonnet-4-6",kind="input"} 1000
keywarden_sidecar_tokens_total{route="/",client="payments",model="claude-sonnet-4-6",kind="output"} 200
# TYPE keywarden_sidecar_cost_usd_total counter
keywarden_sidecar_cost_usd_total{route="/",client="payments",model="claude-sonnet-4-6"} 0.006
# TYPE keywarden_sidecar_budget_used_ratio gauge
keywarden_sidecar_budget_used_ratio{budget="pay-day"} 0.25
# TYPE keywarden_sidecar_budget_refused_total counter
keywarden_sidecar_budget_refused_total{budget="pay-day"} 0
# TYPE keywarden_upstream_ratelimit_limit gauge
keywarden_upstream_ratelimit_limit{key="prod",resource="requests"} 50
# TYPE keywarden_upstream_ratelimit_remaining gauge
keywarden_upstream_ratelimit_remaining{key="prod",resource="requests"} 40
`

const curBody = `# TYPE keywarden_sidecar_client_requests_total counter
keywarden_sidecar_client_requests_total{route="/",client="payments",error_type="none"} 30
keywarden_sidecar_client_requests_total{route="/",client="payments",error_type="rate_limit_error"} 4
keywarden_sidecar_client_requests_total{route="/v2",client="payments",error_type="none"} 5
keywarden_sidecar_client_requests_total{route="/",client="search",error_type="none"} 5
# TYPE keywarden_sidecar_tokens_total counter
keywarden_sidecar_tokens_total{route="/",client="payments",model="claude-sonnet-4-6",kind="input"} 3000
keywarden_sidecar_tokens_total{route="/",client="payments",model="claude-sonnet-4-6",kind="output"} 600
keywarden_sidecar_tokens_total{route="/",client="search",model="other",kind="input"} 70
# TYPE keywarden_sidecar_cost_usd_total counter
keywarden_sidecar_cost_usd_total{route="/",client="payments",model="claude-sonnet-4-6"} 0.018
# TYPE keywarden_sidecar_unpriced_tokens_total counter
keywarden_sidecar_unpriced_tokens_total{route="/",client="search",model="other"} 70
# TYPE keywarden_sidecar_budget_used_ratio gauge
keywarden_sidecar_budget_used_ratio{budget="pay-day"} 1.25
# TYPE keywarden_sidecar_budget_refused_total counter
keywarden_sidecar_budget_refused_total{budget="pay-day"} 3
# TYPE keywarden_upstream_ratelimit_limit gauge
keywarden_upstream_ratelimit_limit{key="prod",resource="requests"} 50
# TYPE keywarden_upstream_ratelimit_remaining gauge
keywarden_upstream_ratelimit_remaining{key="prod",resource="requests"} 5
`

func mustParse(t testing.TB, body string, at time.Time) *snapshot {
	t.Helper()
	s, err := parse([]byte(body), at)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cur, prev float64
		dt        time.Duration
		want      float64
	}{
		{"increase", 30, 10, 10 * time.Second, 2},
		{"no change", 7, 7, 2 * time.Second, 0},
		{"new series", 5, 0, 10 * time.Second, 0.5},
		{"reset: all of cur is new", 3, 100, 2 * time.Second, 1.5},
		{"no time passed", 30, 10, 0, 0},
	} {
		if got := rate(tc.cur, tc.prev, tc.dt); got != tc.want {
			t.Errorf("%s: rate(%v, %v, %v) = %v, want %v", tc.name, tc.cur, tc.prev, tc.dt, got, tc.want)
		}
	}
}

// TestViewRatesFromTwoScrapes computes the view of two synthetic scrapes
// 10 s apart with known numbers.
func TestViewRatesFromTwoScrapes(t *testing.T) {
	prev, cur := mustParse(t, prevBody, t0), mustParse(t, curBody, t0.Add(10*time.Second))
	v := newView(prev, cur)
	if !v.hasRates || len(v.clients) != 2 {
		t.Fatalf("view %+v", v)
	}
	near := func(what string, got, want float64) {
		t.Helper()
		if d := got - want; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	pay, search := v.clients[0], v.clients[1]
	if pay.name != "payments" || search.name != "search" {
		t.Fatalf("clients %+v", v.clients)
	}
	near("payments requests", pay.requests, 39) // summed over routes
	near("payments req/s", pay.reqRate, 2.2)    // (39-17)/10
	near("payments errors", pay.errs, 4)
	near("payments err/s", pay.errRate, 0.2)
	near("payments tokens", pay.tokens, 3600)
	near("payments tok/s", pay.tokRate, 240)
	near("payments spend", pay.cost, 0.018)
	near("payments $/s", pay.costRate, 0.0012)
	near("search req/s", search.reqRate, 0.5) // a client new since prev
	near("search tok/s", search.tokRate, 7)
	near("total req/s", v.total.reqRate, 2.7)
	near("total $/s", v.total.costRate, 0.0012)
	if len(v.errors) != 1 || v.errors[0] != (errorRow{client: "payments", errType: "rate_limit_error", count: 4, rate: 0.2}) {
		t.Errorf("errors %+v", v.errors)
	}
	if len(v.budgets) != 1 || v.budgets[0] != (budgetRow{name: "pay-day", used: 1.25, hasUsed: true, refused: 3, refusedRate: 0.3}) {
		t.Errorf("budgets %+v", v.budgets)
	}
	if len(v.limits) != 1 || v.limits[0].remaining != 5 || v.limits[0].limit != 50 {
		t.Errorf("limits %+v", v.limits)
	}
	near("unpriced", v.unpriced, 70)

	var out bytes.Buffer
	render(&out, header{url: "http://127.0.0.1:9787/metrics", at: cur.at, interval: 10 * time.Second}, &v, nil)
	text := out.String()
	for _, want := range [][]string{
		{"CLIENT", "REQS", "REQ/S", "ERRORS", "ERR/S", "TOKENS", "TOK/S", "SPEND", "$", "$/H"},
		{"payments", "39", "2.20", "4", "0.20", "3600", "240.00", "0.018000", "4.3200"},
		{"search", "5", "0.50", "0", "0.00", "70", "7.00", "0.000000", "0.000000"},
		{"TOTAL", "44", "2.70", "4", "0.20", "3670", "247.00", "0.018000", "4.3200"},
		{"payments", "claude-sonnet-4-6", "3000", "600", "0", "0", "240.00", "0.018000", "4.3200"},
		{"search", "other", "70", "0", "0", "0", "7.00", "unpriced", "0.000000"},
		{"payments", "rate_limit_error", "4", "0.20"},
		{"pay-day", "125.0%", "0.0%", "3", "0.30"},
		{"prod", "requests", "5", "50", "10.0%"},
	} {
		if !hasRow(text, want...) {
			t.Errorf("no row %q in\n%s", want, text)
		}
	}
	if !strings.Contains(text, "rates: per second over the last 10s\n") {
		t.Errorf("no rates line in\n%s", text)
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.HasSuffix(line, " ") {
			t.Errorf("trailing space in %q", line)
		}
	}
	if !strings.Contains(text, "70 tokens of models without a price") {
		t.Errorf("no unpriced note in\n%s", text)
	}
}

// TestViewOneScrape shows totals without rates.
func TestViewOneScrape(t *testing.T) {
	v := newView(nil, mustParse(t, curBody, t0))
	if v.hasRates || v.clients[0].reqRate != 0 {
		t.Fatalf("rates from one scrape: %+v", v)
	}
	var out bytes.Buffer
	render(&out, header{url: "u", at: t0}, &v, nil)
	if !hasRow(out.String(), "payments", "39", "-", "4", "-", "3600", "-", "0.018000", "-") ||
		!strings.Contains(out.String(), "rates: after the next scrape") {
		t.Fatalf("got\n%s", out.String())
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"not keywarden", "# TYPE go_goroutines gauge\ngo_goroutines 7\n", "no keywarden metrics"},
		{"empty", "", "no keywarden metrics"},
		{"malformed", "keywarden_sidecar_tokens_total{client=\"a\" 1\n", "top: parse metrics"},
	} {
		if _, err := parse([]byte(tc.body), t0); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
	// Values a sidecar never exports are skipped, not summed.
	s := mustParse(t, `keywarden_sidecar_client_requests_total{client="a",error_type="none"} NaN
keywarden_sidecar_client_requests_total{client="a",error_type="x"} -4
keywarden_sidecar_client_requests_total{client="a",error_type="y"} +Inf
keywarden_sidecar_client_requests_total{client="a",error_type="none",route="/"} 2
`, t0)
	if c := s.clients["a"]; c == nil || c.requests != 2 || len(c.errors) != 0 {
		t.Fatalf("got %+v", s.clients["a"])
	}
}

// TestRenderSanitizes shows that label values from the body cannot put
// escape codes, tabs or newlines on the terminal.
func TestRenderSanitizes(t *testing.T) {
	body := "keywarden_sidecar_client_requests_total{client=\"evil\\n\x1b[2Jx\x1b]0;t\x07\",error_type=\"a\tb\"} 1\n" +
		"keywarden_sidecar_budget_used_ratio{budget=\"" + strings.Repeat("b", 100) + "\"} 0.5\n"
	v := newView(nil, mustParse(t, body, t0))
	var out bytes.Buffer
	render(&out, header{url: "u", at: t0}, &v, errors.New("x"))
	render(&out, header{url: "u", at: t0}, &v, nil)
	checkPlain(t, out.Bytes())
	if !strings.Contains(out.String(), "evil?") || !strings.Contains(out.String(), strings.Repeat("b", nameWidth)+"…") {
		t.Fatalf("got\n%s", out.String())
	}
}

// checkPlain fails when b holds a control character other than newline.
func checkPlain(t testing.TB, b []byte) {
	t.Helper()
	for i, c := range b {
		if (c < 0x20 && c != '\n') || c == 0x7f {
			t.Fatalf("control byte %#x at %d in\n%q", c, i, b)
		}
	}
}

func TestInPlace(t *testing.T) {
	frame := []byte("a\nbb\n")
	if got := string(inPlace(frame, true)); got != "\x1b[2J\x1b[Ha\x1b[K\nbb\x1b[K\n\x1b[J" {
		t.Errorf("first frame %q", got)
	}
	if got := string(inPlace(frame, false)); got != "\x1b[Ha\x1b[K\nbb\x1b[K\n\x1b[J" {
		t.Errorf("next frame %q", got)
	}
}

func TestParseMetricsURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9787":                  "http://127.0.0.1:9787/metrics",
		"0.0.0.0:9787":                    "http://127.0.0.1:9787/metrics",
		"[::]:9787":                       "http://[::1]:9787/metrics",
		"http://10.0.0.7:9787/":           "http://10.0.0.7:9787/metrics",
		"https://kw.example:443/m/x":      "https://kw.example:443/m/x",
		"http://sidecar:9787/metrics?x=1": "http://sidecar:9787/metrics?x=1",
	} {
		if got, err := parseMetricsURL(in); err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"ftp://h/metrics", "http://", "://x"} {
		if _, err := parseMetricsURL(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

// hasRow reports whether a line of text has fields starting with want.
func hasRow(text string, want ...string) bool {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(want) && fmt.Sprint(f[:len(want)]) == fmt.Sprint(want) {
			return true
		}
	}
	return false
}

// TestSeedCorpus keeps testdata/sidecar.prom, a scrape of a real sidecar,
// parseable: it is the fuzz target's main seed.
func TestSeedCorpus(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "sidecar.prom"))
	if err != nil {
		t.Fatal(err)
	}
	s := mustParse(t, string(b), t0)
	if len(s.clients) == 0 || len(s.models) == 0 {
		t.Fatalf("no usage in the seed: %+v", s)
	}
}
