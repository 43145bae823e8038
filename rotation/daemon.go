package rotation

import (
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/keywarden/keywarden/providers/backoff"
)

// ServeOptions tune Serve. Zero fields take the defaults.
type ServeOptions struct {
	// MinRetry and MaxRetry bound the backoff (backoff.Policy: doubling,
	// jittered) before a failed rotation is tried again (default 1m and
	// 30m). A parked rotation is probed again at the next scheduled time
	// (or once CURRENT enters its RotateBeforeExpiry window); after a
	// failed probe (parked or discarded) the key never runs again before
	// the backoff, even when it is due at once, so that a probe that
	// refuses every key cannot burn the issuer's pool.
	MinRetry, MaxRetry time.Duration
	// ShutdownTimeout bounds how long runs under way may go on after ctx is
	// done (default 30s); past it they are cancelled and leave their lease to
	// expire.
	ShutdownTimeout time.Duration
	// OnResult, when set, receives every run's result and error.
	OnResult func(*Result, error)
}

// Serve rotates every key that has a Schedule until ctx is done: one loop
// per key, so one key never has two runs at once in this process (the lease
// guards across processes). Each loop resumes a rotation under way at once,
// revokes old keys when their grace ends, and starts a rotation when the
// schedule makes the key due, after a random start jitter. When ctx is done,
// Serve lets runs under way finish (up to ShutdownTimeout) and returns.
func (r *Rotator) Serve(ctx context.Context, o ServeOptions) error {
	if o.MinRetry <= 0 {
		o.MinRetry = time.Minute
	}
	if o.MaxRetry < o.MinRetry {
		o.MaxRetry = 30 * time.Minute
		if o.MaxRetry < o.MinRetry {
			o.MaxRetry = o.MinRetry
		}
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	runCtx, cancelRuns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRuns()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(o.ShutdownTimeout, cancelRuns)
		context.AfterFunc(runCtx, func() { t.Stop() })
	})
	defer stop()
	var wg sync.WaitGroup
	n := 0
	for _, name := range r.Keys() {
		k := r.keys[name]
		if k.Schedule == nil {
			r.log.Info("key has no schedule; rotate it with `keywarden rotate`", slog.String("key", name))
			// Its record is still read now and then: the keys its
			// rotations left valid are exported (no run ever wakes it).
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.exportLeftValid(ctx, k)
				_ = r.sleepExporting(ctx, k, time.Duration(math.MaxInt64))
			}()
			continue
		}
		n++
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.serveKey(ctx, runCtx, k, o)
		}()
	}
	r.log.Info("rotator started", slog.Int("keys", n), slog.String("holder", r.opts.Holder))
	wg.Wait()
	r.log.Info("rotator stopped")
	return nil
}

func (r *Rotator) serveKey(ctx, runCtx context.Context, k *Key, o ServeOptions) {
	lg := r.log.With(slog.String("key", k.Name))
	policy := backoff.Policy{Min: o.MinRetry, Max: o.MaxRetry}
	failures := 0 // consecutive failures, for the backoff
	nextRetry := func() time.Duration {
		d := policy.Delay(failures)
		failures++
		return d
	}
	var notBefore time.Time // no run before: the backoff after a failed probe
	for {
		wake, reason, err := r.nextWake(ctx, k, o.MinRetry)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			retry := nextRetry()
			lg.Warn("could not read the rotation state; trying again", slog.String("error", err.Error()), slog.Duration("in", retry))
			wake, reason = r.opts.Now().Add(retry), "retry"
		}
		if reason == "schedule" && k.StartJitter > 0 {
			wake = wake.Add(rand.N(k.StartJitter))
		}
		if wake.Before(notBefore) {
			wake, reason = notBefore, "backoff after a failed probe"
		}
		if d := wake.Sub(r.opts.Now()); d > 0 {
			lg.Debug("next rotation run", slog.Time("at", wake), slog.String("reason", reason))
			if r.sleepExporting(ctx, k, d) != nil {
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		res, err := r.Run(runCtx, k.Name, RunOptions{})
		if o.OnResult != nil {
			o.OnResult(res, err)
		}
		switch {
		case err == nil:
			failures, notBefore = 0, time.Time{}
		case KindOf(err) == KindProbe || KindOf(err) == KindConfig:
			// Parked or discarded: the next scheduled time tries again,
			// but not before the backoff: a key due at once (CURRENT
			// inside its expiry window) whose probe keeps failing would
			// otherwise create and discard a key per loop.
			retry := nextRetry()
			notBefore = r.opts.Now().Add(retry)
			lg.Warn("rotation run failed; the key is not tried again before the backoff", slog.String("error", err.Error()),
				slog.Duration("backoff", retry))
		default:
			retry := nextRetry()
			lg.Warn("rotation run failed; trying again", slog.String("error", err.Error()), slog.Duration("in", retry))
			if sleepCtx(ctx, retry) != nil {
				return
			}
		}
	}
}

// leftValidRecheck is how often the daemon reads an idle key's record
// between runs, to export keywarden_rotation_keys_left_valid: a list
// cleared by `rotate --revoke-left-valid` elsewhere stops the alert
// within it.
const leftValidRecheck = 5 * time.Minute

// sleepExporting sleeps d, reading k's record every leftValidRecheck to
// export its keys left valid.
func (r *Rotator) sleepExporting(ctx context.Context, k *Key, d time.Duration) error {
	for d > leftValidRecheck {
		if err := sleepCtx(ctx, leftValidRecheck); err != nil {
			return err
		}
		d -= leftValidRecheck
		r.exportLeftValid(ctx, k)
	}
	return sleepCtx(ctx, d)
}

// exportLeftValid reads k's record, which exports the number of keys its
// rotations left valid (run.load); a failure is logged at debug level:
// the next run reports it.
func (r *Rotator) exportLeftValid(ctx context.Context, k *Key) {
	ru := &run{r: r, k: k, res: &Result{Key: k.Name}}
	if err := ru.load(ctx); err != nil && ctx.Err() == nil {
		r.log.Debug("could not read the rotation record", slog.String("key", k.Name), slog.String("error", err.Error()))
	}
}

// expiryRecheck bounds the daemon's sleep for a key with
// RotateBeforeExpiry, so that an expiry set on CURRENT meanwhile is seen.
const expiryRecheck = time.Hour

// nextWake returns when the key's loop should run next, and why. An idle
// key whose last rotation was discarded (its probe failed) is not due
// before minRetry after that discard, even when CURRENT's expiry makes it
// due at once (a restarted daemon keeps no backoff of its own).
func (r *Rotator) nextWake(ctx context.Context, k *Key, minRetry time.Duration) (time.Time, string, error) {
	ru := &run{r: r, k: k, res: &Result{Key: k.Name}}
	if err := ru.load(ctx); err != nil {
		return time.Time{}, "", err
	}
	s, now := ru.s, r.opts.Now()
	switch s.Phase {
	case PhaseIdle:
		_, next, err := ru.due(ctx)
		if err != nil {
			return time.Time{}, "", err
		}
		if next.IsZero() || next.Before(now) {
			next = now
		}
		wake, reason := ru.expiryWake(ctx, now, next)
		if s.LastOutcome == OutcomeDiscarded && !s.LastFinishedAt.IsZero() {
			if at := s.LastFinishedAt.Add(minRetry); wake.Before(at) {
				return at, "backoff after a discarded rotation", nil
			}
		}
		return wake, reason, nil
	case PhaseGrace:
		due := ru.revokeDue()
		if k.RevokeGate != nil && !s.GateLast.IsZero() {
			// The gate's next check.
			due = laterOf(due, s.GateLast.Add(k.RevokeGate.interval()))
		}
		return due, "revocation", nil
	case PhaseParked:
		// Probe the parked key again at the next scheduled time, or
		// sooner when CURRENT expires before it.
		wake, reason := ru.expiryWake(ctx, now, k.Schedule.Next(now))
		return wake, reason, nil
	default:
		if ru.leaseHeld() {
			return s.LeaseUntil, "lease", nil
		}
		return now, "resume", nil
	}
}

// expiryWake returns next, or an earlier time when the key has a
// RotateBeforeExpiry: when CURRENT enters its window (now when it is in it
// already), and at least every expiryRecheck (an expiry can be set on a
// key at any time).
func (ru *run) expiryWake(ctx context.Context, now, next time.Time) (time.Time, string) {
	if ru.k.RotateBeforeExpiry <= 0 {
		return next, "schedule"
	}
	if exp, ok := ru.currentExpiry(ctx); ok && !exp.IsZero() {
		if at := exp.Add(-ru.k.RotateBeforeExpiry); at.Before(next) {
			return laterOf(at, now), "expiry"
		}
	}
	if at := now.Add(expiryRecheck); at.Before(next) {
		return at, "expiry check"
	}
	return next, "schedule"
}

// laterOf returns the later of a and b.
func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
