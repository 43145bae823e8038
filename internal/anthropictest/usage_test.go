package anthropictest_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/keywarden/keywarden/internal/anthropictest"
)

// wireUsage is the usage object with every field the fake may send; the
// pointers tell a missing field from a zero.
type wireUsage struct {
	InputTokens              *int64 `json:"input_tokens"`
	OutputTokens             *int64 `json:"output_tokens"`
	CacheCreationInputTokens *int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     *int64 `json:"cache_read_input_tokens"`
	CacheCreation            *struct {
		Ephemeral5m *int64 `json:"ephemeral_5m_input_tokens"`
		Ephemeral1h *int64 `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation"`
}

// cacheOf returns the cache fields of u as "total read 5m 1h", "-" for a
// missing one.
func cacheOf(u wireUsage) string {
	f := func(p *int64) string {
		if p == nil {
			return "-"
		}
		return strconv.FormatInt(*p, 10)
	}
	s := f(u.CacheCreationInputTokens) + " " + f(u.CacheReadInputTokens)
	if u.CacheCreation == nil {
		return s + " - -"
	}
	return s + " " + f(u.CacheCreation.Ephemeral5m) + " " + f(u.CacheCreation.Ephemeral1h)
}

func postMessage(t *testing.T, s *anthropictest.Server, key, model string, stream bool) (*http.Response, []byte) {
	t.Helper()
	body := `{"model":"` + model + `","max_tokens":16,"stream":` + strconv.FormatBool(stream) + `,"messages":[{"role":"user","content":"hi"}]}`
	return call(t, "POST", s.URL()+"/v1/messages", headers(key), body)
}

// TestCacheUsageJSON: without WithCacheUsage the usage is today's, byte
// for byte; with it, the cache fields and the cache_creation object carry
// the server's or the model's setting, and SetCacheUsage changes later
// answers.
func TestCacheUsageJSON(t *testing.T) {
	plain := anthropictest.Start(t)
	k := plain.AddKey("", anthropictest.StatusActive)
	resp, b := postMessage(t, plain, k.Value, "claude-sonnet-4-5", false)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":8,"service_tier":"standard"}`) ||
		strings.Contains(string(b), `"cache_creation":`) {
		t.Fatalf("default usage changed: %d %s", resp.StatusCode, b)
	}
	for name := range resp.Header {
		if strings.HasPrefix(name, "Anthropic-Ratelimit-") {
			t.Fatalf("default answer carries %s", name)
		}
	}

	s := anthropictest.Start(t,
		anthropictest.WithCacheUsage("", anthropictest.CacheUsage{Read: 2000, Write5m: 300, Write1h: 700}),
		anthropictest.WithCacheUsage("claude-opus-4-7", anthropictest.CacheUsage{Write1h: 4096}))
	k = s.AddKey("", anthropictest.StatusActive)
	for _, tc := range []struct{ model, want string }{
		{"claude-sonnet-4-5", "1000 2000 300 700"},
		{"claude-opus-4-7", "4096 0 0 4096"},
	} {
		_, b := postMessage(t, s, k.Value, tc.model, false)
		var m struct {
			Usage wireUsage `json:"usage"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if got := cacheOf(m.Usage); got != tc.want || *m.Usage.OutputTokens != 8 || *m.Usage.InputTokens < 1 {
			t.Errorf("%s: cache %s, want %s: %s", tc.model, got, tc.want, b)
		}
	}
	s.SetCacheUsage("claude-opus-4-7", anthropictest.CacheUsage{Read: 1})
	_, b = postMessage(t, s, k.Value, "claude-opus-4-7", false)
	if !strings.Contains(string(b), `"cache_creation_input_tokens":0,"cache_read_input_tokens":1,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0}`) {
		t.Fatalf("after SetCacheUsage: %s", b)
	}
}

// TestCacheUsageStream reads the usage of message_start and message_delta:
// without a setting, message_delta has output_tokens only, as before; with
// one, message_start has the cache fields and the cache_creation object,
// and message_delta repeats the cumulative input and cache counts.
func TestCacheUsageStream(t *testing.T) {
	for _, tc := range []struct {
		name        string
		opts        []anthropictest.Option
		start, last string // cacheOf of message_start's and message_delta's usage
	}{
		{"default", nil, "0 0 - -", "- - - -"},
		{"cache", []anthropictest.Option{anthropictest.WithCacheUsage("claude-sonnet-4-5", anthropictest.CacheUsage{Read: 5, Write5m: 6, Write1h: 7})}, "13 5 6 7", "13 5 - -"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := anthropictest.Start(t, append(tc.opts, anthropictest.WithStream(2, 0))...)
			k := s.AddKey("", anthropictest.StatusActive)
			_, rd := openStream(t, context.Background(), s, k.Value)
			var start, last wireUsage
			var in int64
			for {
				ev, err := rd.next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if ev.data["type"] != ev.name {
					t.Fatalf("event %s carries data of type %v", ev.name, ev.data["type"])
				}
				switch ev.name {
				case "message_start":
					start = usageOf(t, ev.data["message"].(map[string]any)["usage"])
					in = *start.InputTokens
				case "message_delta":
					last = usageOf(t, ev.data["usage"])
				}
			}
			if got := cacheOf(start); got != tc.start || *start.OutputTokens != 1 {
				t.Errorf("message_start usage %s, want %s", got, tc.start)
			}
			if got := cacheOf(last); got != tc.last || *last.OutputTokens != 2 {
				t.Errorf("message_delta usage %s, want %s", got, tc.last)
			}
			if (last.InputTokens != nil) != (tc.opts != nil) || last.InputTokens != nil && *last.InputTokens != in {
				t.Errorf("message_delta input_tokens %v, message_start %d", last.InputTokens, in)
			}
		})
	}
}

func usageOf(t *testing.T, v any) wireUsage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var u wireUsage
	if err := json.Unmarshal(b, &u); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestCacheUsageSDK: the official Go SDK reads the cache usage of a
// message and of a stream it accumulates, and the stream is well-formed
// for it (every event parses, in order).
func TestCacheUsageSDK(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.WithCacheUsage("", anthropictest.CacheUsage{Read: 2000, Write5m: 300, Write1h: 700}), anthropictest.WithStream(3, 0))
	k := s.AddKey("", anthropictest.StatusActive)
	c := anthropic.NewClient(option.WithBaseURL(s.URL()), option.WithAPIKey(k.Value), option.WithMaxRetries(0))
	params := anthropic.MessageNewParams{
		Model: anthropic.ModelClaudeSonnet4_5, MaxTokens: 16,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	}
	check := func(how string, u anthropic.Usage, out int64) {
		t.Helper()
		if u.CacheCreationInputTokens != 1000 || u.CacheReadInputTokens != 2000 || u.CacheCreation.Ephemeral5mInputTokens != 300 ||
			u.CacheCreation.Ephemeral1hInputTokens != 700 || u.OutputTokens != out || u.InputTokens < 1 {
			t.Errorf("%s: usage %s", how, u.RawJSON())
		}
	}
	msg, err := c.Messages.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	check("message", msg.Usage, 8)

	stream := c.Messages.NewStreaming(context.Background(), params)
	var acc anthropic.Message
	for stream.Next() {
		if err := acc.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.StopReason != anthropic.StopReasonEndTurn || len(acc.Content) != 1 || acc.Content[0].Text != "tok0 tok1 tok2 " {
		t.Fatalf("accumulated %s", acc.RawJSON())
	}
	check("stream", acc.Usage, 3)
}

// TestRateLimitHeaders: every Messages answer carries the configured
// anthropic-ratelimit-* headers; remaining counts down by the request and
// its tokens, reset is the window's end in RFC 3339 on the server's clock,
// and a window's end replenishes. An injected 429 names the configured
// requests limit.
func TestRateLimitHeaders(t *testing.T) {
	clock := newClock()
	s := anthropictest.Start(t, anthropictest.WithClock(clock.Now),
		anthropictest.WithCacheUsage("", anthropictest.CacheUsage{Read: 100, Write5m: 10, Write1h: 20}),
		anthropictest.WithStream(4, 0),
		anthropictest.WithRateLimits(anthropictest.RateLimits{
			Requests:     anthropictest.RateLimit{Limit: 50},
			Tokens:       anthropictest.RateLimit{Limit: 100000, Window: time.Hour},
			InputTokens:  anthropictest.RateLimit{Limit: 80000, Remaining: 1000},
			OutputTokens: anthropictest.RateLimit{Limit: 8000, Window: 2 * time.Minute},
		}))
	k := s.AddKey("", anthropictest.StatusActive)
	t0 := clock.Now()
	rfc := func(d time.Duration) string { return t0.Add(d).UTC().Format(time.RFC3339) }

	type hdrs [4][3]string // requests, tokens, input, output × limit, remaining, reset
	read := func(h http.Header) (got hdrs) {
		for i, r := range []string{"requests", "tokens", "input-tokens", "output-tokens"} {
			for j, f := range []string{"limit", "remaining", "reset"} {
				got[i][j] = h.Get("anthropic-ratelimit-" + r + "-" + f)
			}
		}
		return got
	}
	// The first answer: JSON, in input tokens (+30 cache writes), 8 output.
	resp, b := postMessage(t, s, k.Value, "claude-sonnet-4-5", false)
	var m struct {
		Usage wireUsage `json:"usage"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	in := *m.Usage.InputTokens + 30
	itoa := func(n int64) string { return strconv.FormatInt(n, 10) }
	want := hdrs{
		{"50", "49", rfc(time.Minute)},
		{"100000", itoa(100000 - in - 8), rfc(time.Hour)},
		{"80000", itoa(1000 - in), rfc(time.Minute)},
		{"8000", "7992", rfc(2 * time.Minute)},
	}
	if got := read(resp.Header); got != want {
		t.Fatalf("first answer\n got %v\nwant %v", got, want)
	}
	// The second: a stream of 4 output tokens, a minute later: requests
	// and input tokens start a new window; the others go on.
	clock.Advance(time.Minute)
	resp, b = postMessage(t, s, k.Value, "claude-sonnet-4-5", true)
	_, after, _ := strings.Cut(string(b), `"input_tokens":`)
	in2, err := strconv.ParseInt(after[:strings.IndexByte(after, ',')], 10, 64)
	if err != nil {
		t.Fatalf("stream %s: %v", b, err)
	}
	in2 += 30
	want = hdrs{
		{"50", "49", rfc(2 * time.Minute)},
		{"100000", itoa(100000 - in - 8 - in2 - 4), rfc(time.Hour)},
		{"80000", itoa(1000 - in2), rfc(2 * time.Minute)},
		{"8000", "7988", rfc(2 * time.Minute)},
	}
	if got := read(resp.Header); got != want {
		t.Fatalf("stream a minute later\n got %v\nwant %v", got, want)
	}
	s.FailNext(1, http.StatusTooManyRequests, "")
	resp, _ = postMessage(t, s, k.Value, "claude-sonnet-4-5", false)
	if resp.StatusCode != 429 || resp.Header.Get("anthropic-ratelimit-requests-limit") != "50" || resp.Header.Get("anthropic-ratelimit-requests-remaining") != "0" {
		t.Fatalf("429: %d %v", resp.StatusCode, resp.Header)
	}
	// Remaining stops at 0, and the fake still serves.
	s.SetRateLimits(anthropictest.RateLimits{Requests: anthropictest.RateLimit{Limit: 1}})
	for i := range 2 {
		resp, _ = postMessage(t, s, k.Value, "claude-sonnet-4-5", false)
		if got := read(resp.Header); resp.StatusCode != 200 || got[0] != [3]string{"1", "0", rfc(2 * time.Minute)} || got[1] != [3]string{} {
			t.Fatalf("answer %d after SetRateLimits: %d %v", i, resp.StatusCode, got)
		}
	}
}
