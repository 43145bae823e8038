package usage_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/proxy/usage"
)

// FuzzMeter feeds a body whole and in chunks cut at the fuzzer's chosen
// points: the tokens, the 1-hour cache's share, model and error type must
// be the same whatever the boundaries, for JSON and SSE, and nothing may
// panic.
func FuzzMeter(f *testing.F) {
	for _, s := range []string{jsonMessage, jsonError, sseStream, sseError, `{"usage":{"input_tokens":1`, "data: {\r\r\n", `[[[[[[[[[[{"a":1}]]]]]]]]]]`,
		jsonCache, sseCache, `{"usage":{"cache_creation":{"ephemeral_1h_input_tokens":12`,
		`data: {"message":{"usage":{"cache_creation":{"ephemeral_1h_input_tokens":3,"x":{"ephemeral_1h_input_tokens":4}}}}}`,
		`{"usage":{"cache_creation":[{"ephemeral_1h_input_tokens":1}],"cache_creation":{"ephemeral_1h_input_tokens":2}}}`} {
		f.Add([]byte(s), false, []byte{3, 7, 1})
		f.Add([]byte(s), true, []byte{1, 250, 2})
	}
	f.Fuzz(func(t *testing.T, body []byte, sse bool, cuts []byte) {
		format := usage.JSON
		if sse {
			format = usage.SSE
		}
		whole := meterBytes(format, body)
		var chunks [][]byte
		rest := body
		for _, c := range cuts {
			n := min(int(c), len(rest))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		chunks = append(chunks, rest)
		if got := meterBytes(format, chunks...); got != whole {
			t.Fatalf("chunked %q: got %+v, whole gives %+v", chunks, got, whole)
		}
	})
}

func meterBytes(f usage.Format, chunks ...[]byte) result {
	var m usage.Meter
	m.Reset(f)
	for _, c := range chunks {
		m.Write(c)
	}
	return resultOf(&m)
}

// FuzzRateLimitHeader feeds one header line to RateLimits.Add: it must
// take exactly the twelve rate-limit headers' names, in any case, read a
// count only if it is a non-negative integer and a reset only if it is an
// RFC 3339 time, and set nothing else.
func FuzzRateLimitHeader(f *testing.F) {
	for _, s := range [][2]string{
		{"anthropic-ratelimit-requests-limit", "50"}, {"Anthropic-Ratelimit-Tokens-Reset", "2026-12-02T09:00:00Z"},
		{"ANTHROPIC-RATELIMIT-OUTPUT-TOKENS-REMAINING", "7"}, {"anthropic-ratelimit-input-tokens-limit", "-1"},
		{"anthropic-ratelimit-requests", "1"}, {"anthropic-ratelimit-requests-limitx", "1"}, {"anthropic-ratelimit-", "1"},
		{"anthropic-ratelimit-tokens-reset", "yesterday"}, {"request-id", "req_1"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		var rl usage.RateLimits
		took := rl.Add([]byte(name), []byte(value))
		canon := ""
		for _, r := range usage.RateResources {
			for _, k := range []string{"limit", "remaining", "reset"} {
				if n := "anthropic-ratelimit-" + r + "-" + k; strings.EqualFold(name, n) {
					canon = http.CanonicalHeaderKey(n)
				}
			}
		}
		if took != (canon != "") {
			t.Fatalf("Add(%q) = %v", name, took)
		}
		if !took {
			if rl.Any() {
				t.Fatalf("Add(%q) = false but read %+v", name, rl)
			}
			return
		}
		var set []string
		for i, r := range rl {
			if r.HasLimit {
				set = append(set, usage.RateResources[i]+"-limit")
			}
			if r.HasRemaining {
				set = append(set, usage.RateResources[i]+"-remaining")
			}
			if r.HasReset {
				set = append(set, usage.RateResources[i]+"-reset")
			}
		}
		n, nerr := strconv.ParseInt(value, 10, 64)
		tm, terr := time.Parse(time.RFC3339, value)
		want := 0
		switch kind := strings.ToLower(canon[strings.LastIndexByte(canon, '-')+1:]); {
		case kind == "reset" && terr == nil, kind != "reset" && nerr == nil && n >= 0:
			want = 1
		}
		if len(set) != want || want == 1 && !strings.EqualFold("anthropic-ratelimit-"+set[0], canon) {
			t.Fatalf("Add(%q, %q) set %v", name, value, set)
		}
		for _, r := range rl {
			if r.HasLimit && r.Limit != n || r.HasRemaining && r.Remaining != n || r.HasReset && !r.Reset.Equal(tm) {
				t.Fatalf("Add(%q, %q) read %+v", name, value, r)
			}
		}
	})
}
