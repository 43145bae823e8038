// Package backoff is keywarden's one implementation of retry waits:
// exponential growth from a minimum, a cap, and "equal jitter" (half the
// wait fixed, half random), plus a context-aware sleep. Every retry loop in
// keywarden (the Source's refresh, probes, the Admin API, Vault auth, the
// rotation daemon, the key pool, webhooks) takes its waits from a Policy so
// they all behave, and are tested, the same way.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy describes the waits between attempts. The zero value waits nothing.
type Policy struct {
	// Min is the wait after the first failure.
	Min time.Duration
	// Max caps every wait. When Max is below Min, Min is the cap.
	Max time.Duration
	// NoJitter disables jitter: every wait is exactly Min·2ⁿ capped at Max.
	// Use it where a schedule must be predictable (tests, fixed probes).
	NoJitter bool
}

// Delay returns the wait after failure n, counted from 0: Min·2ⁿ capped at
// Max; with jitter, a value drawn uniformly from [d/2, d].
func (p Policy) Delay(n int) time.Duration {
	d := p.Base(n)
	if p.NoJitter {
		return d
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(d-half+1)
}

// Base returns the wait after failure n without jitter: Min·2ⁿ capped at Max.
func (p Policy) Base(n int) time.Duration {
	limit := max(p.Max, p.Min)
	d := p.Min
	if d <= 0 {
		return 0
	}
	for i := 0; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// After returns the wait after failure n when the server asked for at least
// retryAfter (a Retry-After header, 0 for none): the larger of the two,
// capped at Max only when the server did not ask for more. A server's
// request is honoured: waiting less than it asked only earns another refusal.
func (p Policy) After(n int, retryAfter time.Duration) time.Duration {
	return max(p.Delay(n), retryAfter)
}

// Sleep waits d, or until ctx is done, and returns ctx.Err() in that case.
// A d of zero or less returns at once (with ctx.Err()).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
