package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/backoff"
)

// Probe verifies that a key works before it is promoted.
type Probe interface {
	// Type names the probe for messages ("anthropic", "http").
	Type() string
	// Probe tries key once. It returns nil when the key works, a
	// *ProbeError saying whether trying again may help, or the context's
	// error. Errors never hold the key.
	Probe(ctx context.Context, key providers.Secret) error
}

// ProbeError is one failed probe attempt.
type ProbeError struct {
	// Retryable reports that a later attempt may pass (rate limited,
	// overloaded, server or network error).
	Retryable bool
	// RetryAfter is the wait the server asked for (retry-after), or 0.
	RetryAfter time.Duration
	// Err is the reason: for the Claude API, the status and error type.
	Err error
}

func (e *ProbeError) Error() string { return e.Err.Error() }

// Unwrap returns the reason.
func (e *ProbeError) Unwrap() error { return e.Err }

// Retry bounds the attempts of a probe. Zero fields take the defaults.
type Retry struct {
	// Attempts is the most probe attempts (default 6).
	Attempts int
	// MinBackoff is the wait after the first failed attempt, doubled after
	// each further one (default 1s).
	MinBackoff time.Duration
	// MaxBackoff caps the wait between attempts, retry-after included
	// (default 30s).
	MaxBackoff time.Duration
	// Timeout bounds one attempt (default 30s).
	Timeout time.Duration
	// Settle is how long a key the issuer just activated (an Activator)
	// may take to start working: its probe's refusals (a ProbeError that
	// is not Retryable, such as the Claude API's 401 and 403) are tried
	// again, with the same backoff and without counting against Attempts,
	// while the waits so far are shorter than Settle (default
	// DefaultProbeSettle; negative: refusals fail at once). A key that is
	// truly refused fails after at most Settle + MaxBackoff of waits.
	Settle time.Duration
}

// Defaults of Retry.
const (
	DefaultProbeAttempts   = 6
	DefaultProbeMinBackoff = time.Second
	DefaultProbeMaxBackoff = 30 * time.Second
	DefaultProbeTimeout    = 30 * time.Second
	// DefaultProbeSettle is Retry.Settle's default: the Claude API can
	// take seconds before a key set active works ("new keys can take
	// seconds to work"); it answers 401 meanwhile.
	DefaultProbeSettle = 30 * time.Second
)

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = DefaultProbeAttempts
	}
	if r.MinBackoff <= 0 {
		r.MinBackoff = DefaultProbeMinBackoff
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = DefaultProbeMaxBackoff
	}
	if r.MaxBackoff < r.MinBackoff {
		r.MaxBackoff = r.MinBackoff
	}
	if r.Timeout <= 0 {
		r.Timeout = DefaultProbeTimeout
	}
	if r.Settle == 0 {
		r.Settle = DefaultProbeSettle
	}
	return r
}

// Budget is the longest a probe with these bounds can take:
// Attempts × Timeout + (Attempts − 1) × MaxBackoff. A just-activated key's
// refusals add at most Settle + MaxBackoff of waits (and their attempts,
// each within Timeout).
func (r Retry) Budget() time.Duration {
	r = r.withDefaults()
	return time.Duration(r.Attempts)*r.Timeout + time.Duration(r.Attempts-1)*r.MaxBackoff
}

// wait is the wait after failed attempt n (1-based) when the server asked
// for after: the backoff policy's (MinBackoff doubling, jittered), or the
// server's retry-after when longer, capped at MaxBackoff either way so the
// probe stays within its Budget.
func (r Retry) wait(n int, after time.Duration) time.Duration {
	p := backoff.Policy{Min: r.MinBackoff, Max: r.MaxBackoff}
	return min(p.After(n-1, after), r.MaxBackoff)
}

// runProbe probes key with retries: retryable failures are tried again
// after a backoff that honours retry-after, others fail at once, except
// that, when activated (the issuer just activated the key), refusals are
// tried again while the waits so far are shorter than r.Settle. It returns
// the number of attempts made.
func runProbe(ctx context.Context, p Probe, key providers.Secret, r Retry, activated bool, sleep func(context.Context, time.Duration) error) (int, error) {
	r = r.withDefaults()
	var waited time.Duration
	tries := 0 // retryable failures, bounded by r.Attempts
	for n := 1; ; n++ {
		actx, cancel := context.WithTimeout(ctx, r.Timeout)
		err := p.Probe(actx, key)
		cancel()
		if err == nil {
			return n, nil
		}
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		var pe *ProbeError
		retryable := errors.As(err, &pe) && pe.Retryable
		if !retryable && errors.Is(err, context.DeadlineExceeded) {
			retryable = true // the attempt's own timeout
		}
		if retryable {
			tries++
			if tries >= r.Attempts {
				return n, fmt.Errorf("%s probe: gave up after %d attempts: %w", p.Type(), n, err)
			}
		} else {
			settling := activated && pe != nil && r.Settle > 0
			if !settling {
				return n, fmt.Errorf("%s probe: %w", p.Type(), err)
			}
			if waited >= r.Settle {
				return n, fmt.Errorf("%s probe: still refused after %d attempts over %v since the key was activated: %w", p.Type(), n, waited.Round(time.Millisecond), err)
			}
		}
		var after time.Duration
		if pe != nil {
			after = pe.RetryAfter
		}
		d := r.wait(n, after)
		if err := sleep(ctx, d); err != nil {
			return n, err
		}
		waited += d
	}
}

// sleepCtx waits d or until ctx is done.
var sleepCtx = backoff.Sleep
