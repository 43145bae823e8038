package usage_test

import (
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
)

type result struct {
	tokens usage.Tokens
	model  string
	err    string
}

func meter(f usage.Format, chunks ...string) result {
	var m usage.Meter
	m.Reset(f)
	for _, c := range chunks {
		m.Write([]byte(c))
	}
	t, _ := m.Tokens()
	return result{t, string(m.Model()), string(m.ErrorType())}
}

func TestMeter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format usage.Format
		body   string
		want   result
	}{
		{"json message", usage.JSON, jsonMessage, result{usage.Tokens{12, 6, 100, 2000}, "claude-sonnet-4-6", ""}},
		{"json error", usage.JSON, jsonError, result{model: "", err: "overloaded_error"}},
		{"sse cumulative output", usage.SSE, sseStream, result{usage.Tokens{25, 15, 7, 3}, "claude-haiku-4-5-20251001", ""}},
		{"sse error event", usage.SSE, sseError, result{usage.Tokens{5, 1, 0, 0}, "claude-opus-4-7", "overloaded_error"}},
		{"sse delta repeats input (cumulative)", usage.SSE, "data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":4,\"output_tokens\":30}}\n\n", result{usage.Tokens{5, 30, 0, 4}, "m", ""}},
		{"not read", usage.None, jsonMessage, result{}},
		{"count_tokens shape", usage.JSON, `{"input_tokens":42}`, result{}},
		{"nested and escaped", usage.JSON, `{"a":[[{"usage":{"input_tokens":1}}]],"model":"m\"x","usage":{"output_tokens":2.5,"input_tokens":-3,"cache_read_input_tokens":"9"}}`, result{model: `m\"x`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := meter(tc.format, tc.body); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			// Byte by byte: the same.
			if got := meter(tc.format, strings.Split(tc.body, "")...); got != tc.want {
				t.Fatalf("byte by byte: got %+v, want %+v", got, tc.want)
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
		got, ok := c.Cost(c.Lookup([]byte(tc.model)), tc.tokens)
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

type hdr map[string]string

func (h hdr) Get(k string) string { return h[k] }

func TestReadRateLimits(t *testing.T) {
	rl, ok := usage.ReadRateLimits(hdr{
		"Anthropic-Ratelimit-Requests-Limit": "50", "Anthropic-Ratelimit-Requests-Remaining": "49",
		"Anthropic-Ratelimit-Requests-Reset": "2026-12-02T09:00:00Z", "Anthropic-Ratelimit-Output-Tokens-Remaining": "7",
		"Anthropic-Ratelimit-Tokens-Limit": "x",
	})
	if !ok || rl[0].Limit != 50 || rl[0].Remaining != 49 || rl[0].Reset.Unix() != 1796202000 || !rl[3].HasRemaining || rl[3].Remaining != 7 || rl[3].HasLimit || rl[1].HasLimit {
		t.Fatalf("got %+v %v", rl, ok)
	}
	if _, ok := usage.ReadRateLimits(hdr{}); ok {
		t.Fatal("no headers read as some")
	}
}

// BenchmarkMeter is the accounting's scan cost per answer: a Messages JSON
// body and a short SSE stream, fed in the chunks a proxy reads.
func BenchmarkMeter(b *testing.B) {
	for _, tc := range []struct {
		name   string
		format usage.Format
		body   string
	}{{"json", usage.JSON, jsonMessage}, {"sse", usage.SSE, sseStream}} {
		b.Run(tc.name, func(b *testing.B) {
			body := []byte(tc.body)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			var m usage.Meter
			for b.Loop() {
				m.Reset(tc.format)
				for c := body; len(c) > 0; {
					n := min(len(c), 128)
					m.Write(c[:n])
					c = c[n:]
				}
			}
		})
	}
}
