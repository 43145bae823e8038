package usage

import (
	"strconv"
	"time"
	"unsafe"
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

// ratePrefix is the names' common start, in lower case.
const ratePrefix = "anthropic-ratelimit-"

// Add reads one header line of a response: if name is one of the
// anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
// {limit,remaining,reset} headers, in any case, its value is parsed into
// rl (counts are non-negative integers, resets RFC 3339 times; a value
// that is neither is left out). It reports whether name was one. Nothing
// is kept of name or value. The proxy calls it for each line as it copies
// an answer's header: one pass, no lookups.
func (rl *RateLimits) Add(name, value []byte) bool {
	if !enabled || len(name) <= len(ratePrefix) || name[0]|0x20 != 'a' || !equalFold(name[:len(ratePrefix)], ratePrefix) {
		return false
	}
	rest := name[len(ratePrefix):]
	for i, r := range RateResources {
		if len(rest) <= len(r)+1 || rest[len(r)] != '-' || !equalFold(rest[:len(r)], r) {
			continue
		}
		for k, kind := range [3]string{"limit", "remaining", "reset"} {
			if equalFold(rest[len(r)+1:], kind) {
				// The value is parsed, never kept (a failed parse's
				// error, which would name it, is dropped): no copy.
				rl.set(i, k, unsafe.String(unsafe.SliceData(value), len(value)))
				return true
			}
		}
	}
	return false
}

// Any reports whether a rate-limit header was read.
func (rl *RateLimits) Any() bool {
	for i := range rl {
		if r := &rl[i]; r.HasLimit || r.HasRemaining || r.HasReset {
			return true
		}
	}
	return false
}

// set parses v as header k (0 limit, 1 remaining, 2 reset) of resource i:
// counts are non-negative integers, resets RFC 3339 times; anything else
// is left unset.
func (rl *RateLimits) set(i, k int, v string) {
	r := &rl[i]
	switch k {
	case 0, 1:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return
		}
		if k == 0 {
			r.Limit, r.HasLimit = n, true
		} else {
			r.Remaining, r.HasRemaining = n, true
		}
	case 2:
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			r.Reset, r.HasReset = t, true
		}
	}
}
