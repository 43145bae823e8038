package usage

import (
	"net/textproto"
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

// rateKinds are the headers of each resource, in the order of a
// RateLimit's fields.
var rateKinds = [3]string{"limit", "remaining", "reset"}

// rateHeaders maps each rate-limit header's name,
// anthropic-ratelimit-{resource}-{kind}, to its resource (RateResources
// index) times 3 plus its kind (rateKinds index), in the two spellings
// answers carry: lower case (the Claude API's) and canonical
// (Anthropic-Ratelimit-Requests-Limit: Go's net/http and other servers
// that write header names as net/http.CanonicalHeaderKey does).
// rateNameMin and rateNameMax are the shortest and longest names' lengths.
var rateHeaders, rateNameMin, rateNameMax = func() (map[string]int, int, int) {
	m, shortest, longest := map[string]int{}, 1<<30, 0
	for i, r := range RateResources {
		for k, kind := range rateKinds {
			n := "anthropic-ratelimit-" + r + "-" + kind
			m[n], m[textproto.CanonicalMIMEHeaderKey(n)] = i*3+k, i*3+k
			shortest, longest = min(shortest, len(n)), max(longest, len(n))
		}
	}
	if longest > rateNameBuf {
		panic("usage: a rate-limit header name is longer than rateNameBuf")
	}
	return m, shortest, longest
}()

// rateNameBuf holds a header name in lower case: a fixed size, so that it
// stays on the stack (rateHeaders' start-up checks every name fits).
const rateNameBuf = 64

// Add reads one header line of a response: if name is one of the
// anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
// {limit,remaining,reset} headers, in any case, its value is parsed into
// rl (counts are non-negative integers, resets RFC 3339 times; a value
// that is neither is left out). It reports whether name was one. Nothing
// is kept of name or value. The proxy calls it for each line as it copies
// an answer's header: one pass; a name of another length or first letter
// costs no lookup, a lower-case (the API's spelling) or canonical one one,
// any other two.
func (rl *RateLimits) Add(name, value []byte) bool {
	if !enabled || len(name) < rateNameMin || len(name) > rateNameMax || name[0]|0x20 != 'a' {
		return false
	}
	ik, ok := rateHeaders[unsafe.String(unsafe.SliceData(name), len(name))]
	if !ok {
		var low [rateNameBuf]byte
		upper := false
		for i, c := range name {
			if 'A' <= c && c <= 'Z' {
				c, upper = c+'a'-'A', true
			}
			low[i] = c
		}
		if !upper {
			return false
		}
		if ik, ok = rateHeaders[string(low[:len(name)])]; !ok {
			return false
		}
	}
	// The value is parsed, never kept (a failed parse's error, which
	// would name it, is dropped): no copy.
	rl.set(ik/3, ik%3, unsafe.String(unsafe.SliceData(value), len(value)))
	return true
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
