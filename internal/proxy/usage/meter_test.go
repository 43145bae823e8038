package usage_test

import (
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/proxy/usage"
)

const (
	jsonMessage = `{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-6",` +
		`"content":[{"type":"tool_use","id":"t1","name":"f","input":{"usage":{"input_tokens":999},"model":"fake"}}],` +
		`"stop_reason":"end_turn","stop_sequence":null,` +
		`"usage":{"input_tokens":12,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":6,"service_tier":"standard"}}`
	jsonError = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}`
	sseStream = "event: message_start\r\n" +
		`data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-haiku-4-5-20251001","content":[],"usage":{"input_tokens":25,"cache_creation_input_tokens":7,"cache_read_input_tokens":3,"output_tokens":1}}}` + "\r\n\r\n" +
		": a comment\n" +
		"event: content_block_delta\n" +
		`data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"usage\":{\"output_tokens\":77}"}}` + "\n\n" +
		"event: ping\ndata: {\"type\": \"ping\"}\n\n" +
		"event: message_delta\n" +
		"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\n" +
		"data: \"usage\":{\"output_tokens\":15}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	sseError = "event: message_start\n" +
		`data: {"type":"message_start","message":{"model":"claude-opus-4-7","usage":{"input_tokens":5,"output_tokens":1}}}` + "\n\n" +
		"event: error\n" + `data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}` + "\n\n"
	// jsonCache and sseCache have the usage shape of today's API, with the
	// cache writes split by cache (cache_creation).
	jsonCache = `{"id":"msg_02","type":"message","role":"assistant","model":"claude-opus-4-7",` +
		`"content":[{"type":"tool_use","id":"t1","name":"f","input":{"usage":{"cache_creation":{"ephemeral_1h_input_tokens":999}}}}],` +
		`"stop_reason":"tool_use","stop_sequence":null,` +
		`"usage":{"input_tokens":3,"cache_creation_input_tokens":1000,"cache_read_input_tokens":500,` +
		`"cache_creation":{"ephemeral_5m_input_tokens":300,"ephemeral_1h_input_tokens":700},"output_tokens":9,"service_tier":"standard"}}`
	sseCache = "event: message_start\n" +
		`data: {"type":"message_start","message":{"id":"msg_03","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[],"stop_reason":null,"stop_sequence":null,` +
		`"usage":{"input_tokens":10,"cache_creation_input_tokens":4096,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":4096},"output_tokens":1,"service_tier":"standard"}}}` + "\n\n" +
		"event: content_block_delta\n" +
		`data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"cache_creation\":{\"ephemeral_1h_input_tokens\":5}"}}` + "\n\n" +
		"event: message_delta\n" +
		`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":10,"cache_creation_input_tokens":4096,"cache_read_input_tokens":0,"output_tokens":42}}` + "\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
)

type result struct {
	tokens  usage.Tokens
	model   string
	err     string
	cache1h int64 // usage.Usage.CacheCreation1h
}

func meter(f usage.Format, chunks ...string) result {
	var m usage.Meter
	m.Reset(f)
	for _, c := range chunks {
		m.Write([]byte(c))
	}
	return resultOf(&m)
}

func resultOf(m *usage.Meter) result {
	u := m.Usage()
	if t, _ := m.Tokens(); t != u.Tokens {
		panic("Tokens and Usage disagree")
	}
	return result{u.Tokens, string(m.Model()), string(m.ErrorType()), u.CacheCreation1h}
}

func TestMeter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format usage.Format
		body   string
		want   result
	}{
		{"json message", usage.JSON, jsonMessage, result{usage.Tokens{12, 6, 100, 2000}, "claude-sonnet-4-6", "", 0}},
		{"json error", usage.JSON, jsonError, result{model: "", err: "overloaded_error"}},
		{"sse cumulative output", usage.SSE, sseStream, result{usage.Tokens{25, 15, 7, 3}, "claude-haiku-4-5-20251001", "", 0}},
		{"sse error event", usage.SSE, sseError, result{usage.Tokens{5, 1, 0, 0}, "claude-opus-4-7", "overloaded_error", 0}},
		{"sse delta repeats input (cumulative)", usage.SSE, "data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":4,\"output_tokens\":30}}\n\n", result{usage.Tokens{5, 30, 0, 4}, "m", "", 0}},
		{"not read", usage.None, jsonMessage, result{}},
		{"count_tokens shape", usage.JSON, `{"input_tokens":42}`, result{}},
		{"nested and escaped", usage.JSON, `{"a":[[{"usage":{"input_tokens":1}}]],"model":"m\"x","usage":{"output_tokens":2.5,"input_tokens":-3,"cache_read_input_tokens":"9"}}`, result{model: `m\"x`}},
		// The 1-hour cache's share of the writes: usage.cache_creation in
		// JSON (depth 3) and message.usage.cache_creation in message_start
		// (depth 4, the deepest value read); a decoy in a tool input is
		// not read.
		{"json 1h cache", usage.JSON, jsonCache, result{usage.Tokens{3, 9, 1000, 500}, "claude-opus-4-7", "", 700}},
		{"sse 1h cache", usage.SSE, sseCache, result{usage.Tokens{10, 42, 4096, 0}, "claude-sonnet-4-6", "", 4096}},
		{"sse 1h cache, delta's last value wins", usage.SSE, sseCache +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"cache_creation\":{\"ephemeral_1h_input_tokens\":96},\"output_tokens\":43}}\n\n",
			result{usage.Tokens{10, 43, 4096, 0}, "claude-sonnet-4-6", "", 96}},
		{"1h cache before the total", usage.JSON, `{"usage":{"cache_creation":{"ephemeral_1h_input_tokens":5,"ephemeral_5m_input_tokens":6},"cache_creation_input_tokens":11}}`, result{tokens: usage.Tokens{0, 0, 11, 0}, cache1h: 5}},
		{"1h cache misplaced", usage.JSON, `{"cache_creation":{"ephemeral_1h_input_tokens":1},"message":{"cache_creation":{"ephemeral_1h_input_tokens":2}},` +
			`"usage":{"x":{"cache_creation":{"ephemeral_1h_input_tokens":3}},"cache_creation":[{"ephemeral_1h_input_tokens":4}],"ephemeral_1h_input_tokens":5},` +
			`"error":{"cache_creation":{"ephemeral_1h_input_tokens":6}}}`, result{}},
		{"1h cache too deep", usage.SSE, `data: {"message":{"usage":{"cache_creation":{"x":{"ephemeral_1h_input_tokens":7}},"input_tokens":8}}}` + "\n\n", result{tokens: usage.Tokens{8, 0, 0, 0}}},
		{"1h cache not a count", usage.JSON, `{"usage":{"cache_creation":{"ephemeral_1h_input_tokens":-4}}}{"usage":{"cache_creation":{"ephemeral_1h_input_tokens":"4"}}}{"usage":{"cache_creation":{"ephemeral_1h_input_tokens":1.5}}}`, result{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := meter(tc.format, tc.body); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			// Byte by byte: the same.
			if got := meter(tc.format, strings.Split(tc.body, "")...); got != tc.want {
				t.Fatalf("byte by byte: got %+v, want %+v", got, tc.want)
			}
			// Cut in two at every byte boundary: the same.
			for i := range len(tc.body) + 1 {
				if got := meter(tc.format, tc.body[:i], tc.body[i:]); got != tc.want {
					t.Fatalf("cut at %d: got %+v, want %+v", i, got, tc.want)
				}
			}
		})
	}
}

func TestMeterBoundedValues(t *testing.T) {
	long := strings.Repeat("x", 200)
	got := meter(usage.JSON, `{"model":"`+long+`","`+long+`":{"input_tokens":3},"usage":{"input_tokens":99999999999999999999}}`)
	if len(got.model) != 64 || got.model[63] != 0xff || got.tokens[usage.Input] != 0 {
		t.Fatalf("got %+v", got)
	}
}

func TestFormatOf(t *testing.T) {
	for ct, want := range map[string]usage.Format{
		"application/json": usage.JSON, "Application/JSON; charset=utf-8": usage.JSON,
		"text/event-stream; charset=utf-8": usage.SSE, "text/plain": usage.None, "": usage.None,
	} {
		if got := usage.FormatOf(ct); got != want {
			t.Errorf("FormatOf(%q) = %v, want %v", ct, got, want)
		}
		if got := usage.ContentFormat([]byte(ct)); got != want {
			t.Errorf("ContentFormat([]byte(%q)) = %v, want %v", ct, got, want)
		}
	}
}

func TestCatalog(t *testing.T) {
	c, err := usage.NewCatalog(map[string]usage.Price{"claude-sonnet-4-6": {Input: 2, Output: 10}, "my-model": {Input: 1, Output: 1, CacheRead: 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	for model, want := range map[string]string{
		"claude-opus-4-7": "claude-opus-4-7", "claude-haiku-4-5-20251001": "claude-haiku-4-5",
		"claude-haiku-4-5-2025100": usage.OtherModel, "claude-sonnet-5": usage.OtherModel, "": usage.OtherModel, "my-model": "my-model",
	} {
		if got := c.Name(c.Lookup([]byte(model))); got != want {
			t.Errorf("Lookup(%q) = %s, want %s", model, got, want)
		}
	}
	for _, tc := range []struct {
		model  string
		tokens usage.Tokens
		want   float64
		priced bool
	}{
		// 1M input at 5, 1M output at 25, 1M cache writes at 1.25×5, 1M cache reads at 0.1×5.
		{"claude-opus-4-7", usage.Tokens{1e6, 1e6, 1e6, 1e6}, 5 + 25 + 6.25 + 0.5, true},
		{"claude-sonnet-4-6", usage.Tokens{1e6, 1e6, 0, 0}, 12, true}, // overridden
		{"my-model", usage.Tokens{0, 0, 2e6, 2e6}, 2*1.25 + 2*0.5, true},
		{"claude-sonnet-5", usage.Tokens{1e6, 0, 0, 0}, 0, false},
	} {
		got, ok := c.Cost(c.Lookup([]byte(tc.model)), usage.Usage{Tokens: tc.tokens})
		if ok != tc.priced || got < tc.want-1e-9 || got > tc.want+1e-9 {
			t.Errorf("Cost(%s) = %v %v, want %v %v", tc.model, got, ok, tc.want, tc.priced)
		}
	}
	for _, bad := range []map[string]usage.Price{{"other": {Input: 1}}, {"Bad Model": {Input: 1}}, {"m": {}}, {"m": {Input: -1}}} {
		if _, err := usage.NewCatalog(bad); err == nil {
			t.Errorf("NewCatalog(%v) took it", bad)
		}
	}
}

// TestCost prices the 1-hour cache's writes at their own price (2×
// input by default, or as set), the rest of the writes at the 5-minute
// price (1.25×), and checks the arithmetic to the last digit.
func TestCost(t *testing.T) {
	c, err := usage.NewCatalog(map[string]usage.Price{"my-model": {Input: 1, Output: 2, CacheWrite: 1.5, CacheWrite1h: 3, CacheRead: 0.25}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		model string
		u     usage.Usage
		want  float64
	}{
		// Opus 4.7 ($5 input): 600k 5-minute writes at $6.25, 400k 1-hour
		// writes at $10, 1M reads at $0.50, 1M input, 1M output at $25.
		{"opus split", "claude-opus-4-7", usage.Usage{Tokens: usage.Tokens{1e6, 1e6, 1e6, 1e6}, CacheCreation1h: 4e5}, 5 + 25 + 3.75 + 4 + 0.5},
		// Sonnet 4.6 ($3): the fake API's answer of TestMeterFakeAPI: 12
		// input, 6 output, 300 5-minute writes at $3.75, 700 1-hour at $6,
		// 2000 reads at $0.30.
		{"sonnet answer", "claude-sonnet-4-6", usage.Usage{Tokens: usage.Tokens{12, 6, 1000, 2000}, CacheCreation1h: 700}, (12*3 + 6*15 + 300*3.75 + 700*6 + 2000*0.3) / 1e6},
		{"all 1h", "claude-haiku-4-5", usage.Usage{Tokens: usage.Tokens{0, 0, 2e6, 0}, CacheCreation1h: 2e6}, 4},
		{"1h above the total counts as the total", "claude-haiku-4-5", usage.Usage{Tokens: usage.Tokens{0, 0, 1e6, 0}, CacheCreation1h: 3e6}, 2},
		{"negative 1h counts as none", "claude-haiku-4-5", usage.Usage{Tokens: usage.Tokens{0, 0, 1e6, 0}, CacheCreation1h: -5}, 1.25},
		{"configured prices", "my-model", usage.Usage{Tokens: usage.Tokens{1e6, 1e6, 4e6, 4e6}, CacheCreation1h: 1e6}, 1 + 2 + 3*1.5 + 3 + 1},
	} {
		got, ok := c.Cost(c.Lookup([]byte(tc.model)), tc.u)
		if !ok || got != tc.want {
			t.Errorf("%s: Cost = %v %v, want %v", tc.name, got, ok, tc.want)
		}
	}
	// Cost knows no split: every write at the 5-minute price, as before.
	if got, _ := c.Cost(c.Lookup([]byte("claude-opus-4-7")), usage.Usage{Tokens: usage.Tokens{0, 0, 1e6, 0}}); got != 6.25 {
		t.Errorf("Cost of 1M writes = %v, want 6.25", got)
	}
	if _, ok := c.Cost(c.Other(), usage.Usage{Tokens: usage.Tokens{1, 1, 1, 1}, CacheCreation1h: 1}); ok {
		t.Error("an unpriced model was priced")
	}
	for _, bad := range []usage.Price{{Input: 1, CacheWrite1h: -1}, {Input: 1, CacheWrite1h: math.NaN()}, {Output: 1, CacheWrite1h: math.Inf(1)}} {
		if err := usage.CheckPrice(bad); err == nil {
			t.Errorf("CheckPrice(%+v) took it", bad)
		}
	}
}

// limitsOf reads h's rate-limit headers as the proxy does, a line at a
// time.
func limitsOf(h map[string][]string) (rl usage.RateLimits, ok bool) {
	for k, vs := range h {
		for _, v := range vs {
			rl.Add([]byte(k), []byte(v))
		}
	}
	return rl, rl.Any()
}

func TestRateLimitsAdd(t *testing.T) {
	var rl usage.RateLimits
	for _, kv := range [][2]string{
		{"anthropic-ratelimit-requests-limit", "50"}, {"ANTHROPIC-RATELIMIT-REQUESTS-REMAINING", "49"},
		{"Anthropic-Ratelimit-Requests-Reset", "2026-12-02T09:00:00Z"}, {"anthropic-ratelimit-output-tokens-remaining", "7"},
		{"anthropic-ratelimit-tokens-limit", "x"}, {"anthropic-ratelimit-tokens", "5"}, {"anthropic-ratelimit-requests-limits", "5"},
		{"x-anthropic-ratelimit-requests-limit", "5"}, {"content-type", "application/json"},
	} {
		rl.Add([]byte(kv[0]), []byte(kv[1]))
	}
	if r := rl[0]; !rl.Any() || r.Limit != 50 || r.Remaining != 49 || r.Reset.Unix() != 1796202000 ||
		!rl[3].HasRemaining || rl[3].Remaining != 7 || rl[3].HasLimit || rl[1].HasLimit || rl[1].HasRemaining || rl[2].HasLimit {
		t.Fatalf("got %+v", rl)
	}
	if (&usage.RateLimits{}).Any() {
		t.Fatal("an empty set reads as some")
	}
	if n := testing.AllocsPerRun(100, func() {
		var rl usage.RateLimits
		rl.Add([]byte("anthropic-ratelimit-requests-reset"), []byte("2026-12-02T09:00:00Z"))
		rl.Add([]byte("anthropic-ratelimit-requests-limit"), []byte("50"))
	}); n != 0 {
		t.Fatalf("Add allocates %v times", n)
	}
}

// BenchmarkRateLimits reads the twelve rate-limit headers of an answer of
// the Claude API among its other header lines, as the proxy does while it
// copies them.
func BenchmarkRateLimits(b *testing.B) {
	lines := [][2]string{{"Content-Type", "application/json"}, {"Request-Id", "req_011CV"}, {"Date", "Thu, 03 Dec 2026 20:04:16 GMT"}}
	for _, r := range usage.RateResources {
		lines = append(lines, [2]string{"anthropic-ratelimit-" + r + "-limit", "4000"},
			[2]string{"anthropic-ratelimit-" + r + "-remaining", "3999"},
			[2]string{"anthropic-ratelimit-" + r + "-reset", "2026-12-03T20:05:00Z"})
	}
	// canonical: the names as net/http's servers write them (the load
	// run's upstream).
	canon := make([][2]string, len(lines))
	for i, kv := range lines {
		canon[i] = [2]string{http.CanonicalHeaderKey(kv[0]), kv[1]}
	}
	for _, c := range []struct {
		name  string
		lines [][2]string
	}{{"pass", lines}, {"canonical", canon}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var rl usage.RateLimits
				for _, kv := range c.lines {
					rl.Add([]byte(kv[0]), []byte(kv[1]))
				}
				if !rl.Any() {
					b.Fatal("none read")
				}
			}
		})
	}
}
