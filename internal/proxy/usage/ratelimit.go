package usage

import (
	"strconv"
	"time"
)

// RateResources are the resources of the anthropic-ratelimit-* headers, in
// the order of RateLimits.
var RateResources = [4]string{"requests", "tokens", "input-tokens", "output-tokens"}

// RateLimit is the upstream's word on one resource.
type RateLimit struct {
	// Limit and Remaining are the limit and what is left of it.
	Limit, Remaining int64
	// Reset is when the resource is fully replenished.
	Reset time.Time
	// HasLimit, HasRemaining and HasReset say which headers were present
	// and valid.
	HasLimit, HasRemaining, HasReset bool
}

// RateLimits are the rate-limit headers of one response, by RateResources.
type RateLimits [4]RateLimit

var rateHeaders = func() (h [4][3]string) {
	for i, r := range RateResources {
		base := "Anthropic-Ratelimit-" + canonical(r) + "-"
		h[i] = [3]string{base + "Limit", base + "Remaining", base + "Reset"}
	}
	return h
}()

func canonical(s string) string {
	b := []byte(s)
	up := true
	for i, c := range b {
		if up && 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
		up = c == '-'
	}
	return string(b)
}

// ReadRateLimits reads the anthropic-ratelimit-{requests,tokens,
// input-tokens,output-tokens}-{limit,remaining,reset} headers (reset is
// RFC 3339). ok is false when none is present, which costs one lookup.
func ReadRateLimits(h Header) (rl RateLimits, ok bool) {
	if !enabled {
		return rl, false
	}
	if h.Get(rateHeaders[0][0]) == "" && h.Get(rateHeaders[1][0]) == "" {
		return rl, false
	}
	for i, names := range rateHeaders {
		r := &rl[i]
		if v, err := strconv.ParseInt(h.Get(names[0]), 10, 64); err == nil && v >= 0 {
			r.Limit, r.HasLimit = v, true
		}
		if v, err := strconv.ParseInt(h.Get(names[1]), 10, 64); err == nil && v >= 0 {
			r.Remaining, r.HasRemaining = v, true
		}
		if t, err := time.Parse(time.RFC3339, h.Get(names[2])); err == nil {
			r.Reset, r.HasReset = t, true
		}
		ok = ok || r.HasLimit || r.HasRemaining || r.HasReset
	}
	return rl, ok
}
