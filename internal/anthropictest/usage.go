package anthropictest

import (
	"net/http"
	"strconv"
	"sync"
	"time"
)

// CacheUsage is the prompt-cache part of a Messages answer's usage, as the
// API reports it: cache_read_input_tokens, and the cache writes by cache in
// cache_creation {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens},
// whose sum is cache_creation_input_tokens.
type CacheUsage struct {
	// Read is cache_read_input_tokens.
	Read int64
	// Write5m and Write1h are the tokens written to the 5-minute and the
	// 1-hour cache.
	Write5m, Write1h int64
}

// WithCacheUsage makes the Messages answers of model (every model without
// a setting of its own: "") report u: JSON and message_start carry
// cache_creation_input_tokens, cache_read_input_tokens and the
// cache_creation object, and message_delta's cumulative usage repeats
// input_tokens, cache_creation_input_tokens and cache_read_input_tokens
// besides output_tokens, as the API sends them. Without it an answer
// reports zero cache tokens and no cache_creation object, and message_delta
// only output_tokens. [Server.SetCacheUsage] changes it later.
func WithCacheUsage(model string, u CacheUsage) Option {
	return func(c *config) {
		if c.cache == nil {
			c.cache = map[string]CacheUsage{}
		}
		c.cache[model] = u
	}
}

// SetCacheUsage makes later Messages answers of model ("": every model
// without a setting of its own) report u, as [WithCacheUsage].
func (s *Server) SetCacheUsage(model string, u CacheUsage) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	m := map[string]CacheUsage{model: u}
	if old := s.cache.Load(); old != nil {
		for k, v := range *old {
			if k != model {
				m[k] = v
			}
		}
	}
	s.cache.Store(&m)
}

// cacheUsage returns the cache usage of model's answers, nil when none is
// set (today's usage shape).
func (s *Server) cacheUsage(model []byte) *CacheUsage {
	m := s.cache.Load()
	if m == nil {
		return nil
	}
	if u, ok := (*m)[string(model)]; ok {
		return &u
	}
	if u, ok := (*m)[""]; ok {
		return &u
	}
	return nil
}

// appendUsage appends a usage object: input and output tokens, the cache
// fields (zero without cu), and with cu the cache_creation object.
func appendUsage(b []byte, in, out int, cu *CacheUsage) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(in), 10)
	if cu == nil {
		b = append(b, `,"cache_creation_input_tokens":0,"cache_read_input_tokens":0`...)
	} else {
		b = appendCacheTotals(b, cu)
		b = append(b, `,"cache_creation":{"ephemeral_5m_input_tokens":`...)
		b = strconv.AppendInt(b, cu.Write5m, 10)
		b = append(b, `,"ephemeral_1h_input_tokens":`...)
		b = strconv.AppendInt(b, cu.Write1h, 10)
		b = append(b, '}')
	}
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(out), 10)
	return append(b, `,"service_tier":"standard"}`...)
}

func appendCacheTotals(b []byte, cu *CacheUsage) []byte {
	b = append(b, `,"cache_creation_input_tokens":`...)
	b = strconv.AppendInt(b, cu.Write5m+cu.Write1h, 10)
	b = append(b, `,"cache_read_input_tokens":`...)
	return strconv.AppendInt(b, cu.Read, 10)
}

// appendMessageDelta appends the message_delta event of a stream whose
// answer has cache usage cu: its usage is cumulative, the whole answer's.
func appendMessageDelta(b []byte, in, out int, cu *CacheUsage) []byte {
	b = append(b, "event: message_delta\ndata: "+messageDeltaHead+`"input_tokens":`...)
	b = strconv.AppendInt(b, int64(in), 10)
	b = appendCacheTotals(b, cu)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(out), 10)
	return append(b, "}}\n\n"...)
}

// RateLimit is one resource of the anthropic-ratelimit-* headers.
type RateLimit struct {
	// Limit is the -limit header; 0: the resource's headers are not sent.
	Limit int64
	// Remaining is what is left at the start of each window (0: Limit).
	Remaining int64
	// Window is the time from a window's first answer until the resource
	// is replenished (0: a minute); the -reset header is the window's end,
	// in RFC 3339, on the server's clock ([WithClock]).
	Window time.Duration
}

// RateLimits are the anthropic-ratelimit-{requests,tokens,input-tokens,
// output-tokens}-{limit,remaining,reset} headers of Messages answers.
type RateLimits struct {
	Requests, Tokens, InputTokens, OutputTokens RateLimit
}

// WithRateLimits sends rl's headers on every 200 answer of /v1/messages
// (JSON and SSE). Each such answer uses one request, its input tokens
// (input_tokens and cache writes; cache reads are free), its output tokens,
// and both as tokens; the -remaining headers count what is left after it,
// down to 0, and a window's end replenishes them. The fake still serves
// at 0 (it has no rate limiting of its own: [Server.FailNext] injects
// 429s, whose anthropic-ratelimit-requests-limit is then rl's). Without it
// a 200 carries no such header. [Server.SetRateLimits] changes it later.
func WithRateLimits(rl RateLimits) Option { return func(c *config) { c.rateLimits = &rl } }

// SetRateLimits sends rl's headers on later Messages answers, as
// [WithRateLimits], with every window starting afresh.
func (s *Server) SetRateLimits(rl RateLimits) { s.rate.Store(newRateState(rl)) }

// rateState is the windows of the configured rate limits.
type rateState struct {
	mu  sync.Mutex
	res [4]rateWindow // by rateNames
}

type rateWindow struct {
	RateLimit
	remaining int64
	end       time.Time
}

// rateNames are the header name prefixes of the resources, in RateLimits'
// order.
var rateNames = [4]string{
	"Anthropic-Ratelimit-Requests-", "Anthropic-Ratelimit-Tokens-",
	"Anthropic-Ratelimit-Input-Tokens-", "Anthropic-Ratelimit-Output-Tokens-",
}

func newRateState(rl RateLimits) *rateState {
	st := &rateState{}
	for i, r := range [4]RateLimit{rl.Requests, rl.Tokens, rl.InputTokens, rl.OutputTokens} {
		if r.Remaining <= 0 {
			r.Remaining = r.Limit
		}
		if r.Window <= 0 {
			r.Window = time.Minute
		}
		st.res[i].RateLimit = r
	}
	return st
}

// setRateHeaders uses one request and its tokens from the windows and
// writes the headers of what is left.
func (s *Server) setRateHeaders(h http.Header, in, out int64) {
	st := s.rate.Load()
	if st == nil {
		return
	}
	now := s.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	for i, used := range [4]int64{1, in + out, in, out} {
		w := &st.res[i]
		if w.Limit <= 0 {
			continue
		}
		if w.end.IsZero() || !now.Before(w.end) {
			w.remaining, w.end = w.Remaining, now.Add(w.Window)
		}
		w.remaining = max(w.remaining-used, 0)
		h[rateNames[i]+"Limit"] = []string{strconv.FormatInt(w.Limit, 10)}
		h[rateNames[i]+"Remaining"] = []string{strconv.FormatInt(w.remaining, 10)}
		h[rateNames[i]+"Reset"] = []string{w.end.UTC().Format(time.RFC3339)}
	}
}

// requestLimit is the anthropic-ratelimit-requests-limit of a 429.
func (s *Server) requestLimit() string {
	if st := s.rate.Load(); st != nil && st.res[0].Limit > 0 {
		return strconv.FormatInt(st.res[0].Limit, 10)
	}
	return "50"
}
