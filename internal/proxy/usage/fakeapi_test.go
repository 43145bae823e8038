package usage_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/proxy/usage"
)

// wireUsage is the usage object as encoding/json reads it: the reference
// the Meter's incremental reading is checked against.
type wireUsage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreation            struct {
		Ephemeral1h int64 `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation"`
}

// decodeUsage reads the model and the final usage of a Messages body with
// encoding/json: the whole JSON, or every data line of an SSE stream
// (message_delta's counts replace message_start's; a missing field keeps
// the earlier value).
func decodeUsage(t *testing.T, f usage.Format, body []byte) (model string, u usage.Usage) {
	t.Helper()
	type doc struct {
		Model   string          `json:"model"`
		Usage   json.RawMessage `json:"usage"`
		Message *struct {
			Model string          `json:"model"`
			Usage json.RawMessage `json:"usage"`
		} `json:"message"`
	}
	var w wireUsage
	apply := func(b []byte) {
		var d doc
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		raw := d.Usage
		if d.Message != nil {
			model, raw = d.Message.Model, d.Message.Usage
		} else if d.Model != "" {
			model = d.Model
		}
		if raw != nil {
			if err := json.Unmarshal(raw, &w); err != nil {
				t.Fatal(err)
			}
		}
	}
	if f == usage.JSON {
		apply(body)
	} else {
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				apply([]byte(d))
			}
		}
	}
	return model, usage.Usage{
		Tokens:          usage.Tokens{w.InputTokens, w.OutputTokens, w.CacheCreationInputTokens, w.CacheReadInputTokens},
		CacheCreation1h: w.CacheCreation.Ephemeral1h,
	}
}

// TestMeterFakeAPI feeds real answers of the fake Claude API, read over
// loopback HTTP in the pieces the connection delivers, through a Meter as
// the proxy does: a JSON message and an SSE stream, both with cache reads
// and writes split between the 5-minute and the 1-hour cache. The Meter
// must read what encoding/json reads, and the cost must price the 1-hour
// writes at 2× input; the rate-limit headers are read as well.
func TestMeterFakeAPI(t *testing.T) {
	api := anthropictest.Start(t,
		anthropictest.WithCacheUsage("", anthropictest.CacheUsage{Read: 2000, Write5m: 300, Write1h: 700}),
		anthropictest.WithStream(5, 0),
		anthropictest.WithRateLimits(anthropictest.RateLimits{
			Requests: anthropictest.RateLimit{Limit: 50},
			Tokens:   anthropictest.RateLimit{Limit: 1_000_000},
		}))
	key := api.AddKey("", anthropictest.StatusActive)
	cat, err := usage.NewCatalog(nil)
	if err != nil {
		t.Fatal(err)
	}
	sonnet := cat.Lookup([]byte("claude-sonnet-4-6"))
	for i, tc := range []struct {
		stream bool
		format usage.Format
		output int64
	}{{false, usage.JSON, 8}, {true, usage.SSE, 5}} {
		body := `{"model":"claude-sonnet-4-6","max_tokens":64,"stream":` + strconv.FormatBool(tc.stream) + `,"messages":[{"role":"user","content":"Hi"}]}`
		req, err := http.NewRequest("POST", api.URL()+"/v1/messages", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("x-api-key", key.Value)
		req.Header.Set("anthropic-version", "2023-06-01")
		req.Header.Set("content-type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		f := usage.FormatOf(resp.Header.Get("Content-Type"))
		if resp.StatusCode != 200 || f != tc.format {
			t.Fatalf("answer %d, %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var m usage.Meter
		m.Reset(f)
		var raw bytes.Buffer
		buf := make([]byte, 61) // an odd size: pieces end inside keys and numbers
		for {
			n, err := resp.Body.Read(buf)
			m.Write(buf[:n])
			raw.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		resp.Body.Close()

		model, want := decodeUsage(t, f, raw.Bytes())
		got := m.Usage()
		if got != want || string(m.Model()) != model || m.ErrorType() != nil {
			t.Fatalf("stream %v: Meter read %+v of %q, encoding/json %+v of %q", tc.stream, got, m.Model(), want, model)
		}
		in := want.Tokens[usage.Input]
		if model != "claude-sonnet-4-6" || in < 1 || want.Tokens[usage.Output] != tc.output || want.Tokens[usage.CacheCreation] != 1000 ||
			want.Tokens[usage.CacheRead] != 2000 || want.CacheCreation1h != 700 {
			t.Fatalf("stream %v: the fake answered %+v of %s", tc.stream, want, model)
		}

		// Sonnet 4.6: $3 input, $15 output, $3.75 5-minute writes, $6
		// 1-hour writes, $0.30 reads per million tokens.
		usd, ok := cat.Cost(sonnet, got)
		wantUSD := (float64(in)*3 + float64(tc.output)*15 + 300*3.75 + 700*6 + 2000*0.3) / 1e6
		if !ok || math.Abs(usd-wantUSD) > 1e-15 {
			t.Fatalf("stream %v: cost %v, want %v", tc.stream, usd, wantUSD)
		}
		// Priced as 5-minute writes, the 700 would cost $2.25/M less.
		if old, _ := cat.Cost(sonnet, usage.Usage{Tokens: got.Tokens}); math.Abs(usd-old-700*2.25/1e6) > 1e-15 {
			t.Fatalf("stream %v: 1-hour premium %v, want %v", tc.stream, usd-old, 700*2.25/1e6)
		}

		rl, ok := limitsOf(resp.Header)
		if r, tk := rl[0], rl[1]; !ok || r.Limit != 50 || r.Remaining != int64(49-i) || !r.HasReset || r.Reset.IsZero() ||
			tk.Limit != 1_000_000 || !tk.HasRemaining || tk.Remaining >= tk.Limit || rl[2].HasLimit || rl[3].HasLimit {
			t.Fatalf("stream %v: rate limits %+v", tc.stream, rl)
		}
	}
}
