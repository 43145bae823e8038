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
}

// Defaults of Retry.
const (
	DefaultProbeAttempts   = 6
	DefaultProbeMinBackoff = time.Second
	DefaultProbeMaxBackoff = 30 * time.Second
	DefaultProbeTimeout    = 30 * time.Second
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
	return r
}

// Budget is the longest a probe with these bounds can take:
// Attempts × Timeout + (Attempts − 1) × MaxBackoff.
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
// after a backoff that honours retry-after, others fail at once. It returns
// the number of attempts made.
func runProbe(ctx context.Context, p Probe, key providers.Secret, r Retry, sleep func(context.Context, time.Duration) error) (int, error) {
	r = r.withDefaults()
	var last error
	for n := 1; n <= r.Attempts; n++ {
		actx, cancel := context.WithTimeout(ctx, r.Timeout)
		err := p.Probe(actx, key)
		cancel()
		if err == nil {
			return n, nil
		}
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		last = err
		var pe *ProbeError
		retryable := errors.As(err, &pe) && pe.Retryable
		if !retryable && errors.Is(err, context.DeadlineExceeded) {
			retryable = true // the attempt's own timeout
		}
		if !retryable {
			return n, fmt.Errorf("%s probe: %w", p.Type(), err)
		}
		if n == r.Attempts {
			break
		}
		var after time.Duration
		if pe != nil {
			after = pe.RetryAfter
		}
		if err := sleep(ctx, r.wait(n, after)); err != nil {
			return n, err
		}
	}
	return r.Attempts, fmt.Errorf("%s probe: gave up after %d attempts: %w", p.Type(), r.Attempts, last)
}

// sleepCtx waits d or until ctx is done.
var sleepCtx = backoff.Sleep
