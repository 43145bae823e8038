package usage_test

import (
	"testing"

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
