package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"
)

// GatePolicy says what a revoke gate does when it has not cleared within
// its MaxWait.
type GatePolicy string

// The gate policies.
const (
	// GateHold keeps both keys valid: the run fails with KindGateHeld
	// (exit 15), emits EventGateHeld, and the next run checks again.
	GateHold GatePolicy = "hold"
	// GateRevoke revokes the old key anyway and says so (EventGateForced).
	GateRevoke GatePolicy = "revoke"
)

// Defaults of a RevokeGate.
const (
	DefaultGateChecks   = 3
	DefaultGateInterval = 30 * time.Second
	DefaultGateMaxWait  = time.Hour
)

// Holder is a consumer that still reports a key: its labels as its
// monitoring reports them (instance, pod, job, ...), never a key value.
type Holder map[string]string

// holderHidden are the labels a Holder's String leaves out: they are the
// same for every holder of a key.
var holderHidden = map[string]bool{"__name__": true, "fingerprint": true, "version": true}

// String returns the holder's labels as name=value, sorted, without the
// metric name, version and fingerprint.
func (h Holder) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(h)) {
		if !holderHidden[k] {
			parts = append(parts, k+"="+h[k])
		}
	}
	return strings.Join(parts, ",")
}

// Consumers tells who still holds a key.
type Consumers interface {
	// Holders returns the consumers that still report the key of
	// fingerprint fp, the old key of the rotated key named key.
	Holders(ctx context.Context, key, fp string) ([]Holder, error)
	// Describe says where the answer comes from, for logs and plans.
	Describe() string
}

// RevokeGate holds back the revocation of an old key, after the grace
// period, until no consumer reports it any more: Consumers must have
// answered "nobody" Checks times in a row, Interval apart. When that has
// not happened MaxWait after the end of the grace, Policy decides.
type RevokeGate struct {
	// Consumers answers the gate's question. Required.
	Consumers Consumers
	// Checks is how many consecutive checks must find no holder
	// (DefaultGateChecks).
	Checks int
	// Interval is the time between two checks (DefaultGateInterval).
	Interval time.Duration
	// MaxWait bounds the wait after the grace (DefaultGateMaxWait).
	MaxWait time.Duration
	// Policy is GateHold (default) or GateRevoke.
	Policy GatePolicy
}

func (g *RevokeGate) checks() int {
	if g.Checks == 0 {
		return DefaultGateChecks
	}
	return g.Checks
}

func (g *RevokeGate) interval() time.Duration {
	if g.Interval == 0 {
		return DefaultGateInterval
	}
	return g.Interval
}

func (g *RevokeGate) maxWait() time.Duration {
	if g.MaxWait == 0 {
		return DefaultGateMaxWait
	}
	return g.MaxWait
}

func (g *RevokeGate) policy() GatePolicy {
	if g.Policy == "" {
		return GateHold
	}
	return g.Policy
}

// validate checks the gate's settings; path names it in errors.
func (g *RevokeGate) validate(path string) error {
	switch {
	case g.Consumers == nil:
		return failf(KindConfig, "rotation: %s: revoke_gate has nothing to ask (no Prometheus URL)", path)
	case g.Checks < 0:
		return failf(KindConfig, "rotation: %s: revoke_gate.checks %d is negative", path, g.Checks)
	case g.Interval < 0:
		return failf(KindConfig, "rotation: %s: revoke_gate.interval %v is negative", path, g.Interval)
	case g.MaxWait < 0:
		return failf(KindConfig, "rotation: %s: revoke_gate.max_wait %v is negative", path, g.MaxWait)
	case g.Policy != "" && g.Policy != GateHold && g.Policy != GateRevoke:
		return failf(KindConfig, "rotation: %s: revoke_gate.policy %q: want hold or revoke", path, g.Policy)
	}
	return nil
}

// maxHoldersShown bounds the holders listed in records, messages and
// events.
const maxHoldersShown = 10

// describeHolders lists holders for people, at most maxHoldersShown.
func describeHolders(hs []Holder) string {
	names := make([]string, 0, len(hs))
	for _, h := range hs {
		names = append(names, h.String())
	}
	slices.Sort(names)
	more := ""
	if len(names) > maxHoldersShown {
		more = fmt.Sprintf(" and %d more", len(names)-maxHoldersShown)
		names = names[:maxHoldersShown]
	}
	return strings.Join(names, "; ") + more
}

// gateDeadline is when the gate's MaxWait ends.
func (ru *run) gateDeadline() time.Time {
	return ru.revokeDue().Add(ru.k.RevokeGate.maxWait())
}

// gate runs the revoke gate of a rotation whose grace is over: checks,
// Interval apart, until Checks of them in a row found no holder (then the
// record goes to revoking), or a holder is seen (the run ends: exit 0
// before MaxWait, unless RunOptions.Wait; past MaxWait the policy decides).
// Each check is written to the record, so a killed run's successor goes
// on counting. done reports that the run ends here.
func (ru *run) gate(ctx context.Context) (done bool, err error) {
	g, k := ru.k.RevokeGate, ru.k
	for {
		s := ru.s
		if !s.GateLast.IsZero() {
			if wait := s.GateLast.Add(g.interval()).Sub(ru.now()); wait > 0 {
				t0 := time.Now()
				err := sleepCtx(ctx, wait)
				ru.waited += time.Since(t0)
				if err != nil {
					return true, ctxError(err)
				}
			}
		}
		holders, qerr := ru.askGate(ctx)
		if e := ctxError(qerr); e != nil {
			return true, e
		}
		now := ru.now()
		next := s.clone()
		if next.GateSince.IsZero() {
			next.GateSince = now
		}
		next.GateLast = now
		clear := qerr == nil && len(holders) == 0
		if clear {
			next.GateZeros++
			next.GateHolders = ""
		} else {
			next.GateZeros = 0
			if qerr != nil {
				next.GateHolders = "unknown: " + qerr.Error()
			} else {
				next.GateHolders = fmt.Sprintf("%d: %s", len(holders), describeHolders(holders))
			}
		}
		if qerr == nil {
			ru.r.opts.Metrics.gateHolders(k.Name, len(holders))
		} else {
			ru.log().Warn("revoke gate: could not ask who holds the old key", slog.String("consumers", g.Consumers.Describe()), slog.String("error", qerr.Error()))
		}
		deadline := ru.gateDeadline()
		expired := !now.Before(deadline)
		cleared := next.GateZeros >= g.checks()
		ru.started = true // this run's work is this revocation: no new rotation after it
		if cleared || (expired && g.policy() == GateRevoke) {
			next.Phase = PhaseRevoking
			if err := ru.save(ctx, next); err != nil {
				return true, err
			}
			if err := ru.step(ctx, AfterGateCheck); err != nil {
				return true, err
			}
			if cleared {
				ru.log().Info("revoke gate cleared: no consumer reports the old key", slog.Int("checks", next.GateZeros),
					slog.Duration("gate_wait", now.Sub(next.GateSince)))
			} else {
				ru.r.opts.Metrics.gateTimeout(k.Name, GateRevoke)
				ru.res.Gate = "forced"
				ru.log().Warn("revoke gate did not clear within max_wait; revoking anyway (policy revoke)",
					slog.String("holders", next.GateHolders), slog.Time("deadline", deadline))
				ru.emit(ctx, Event{Type: EventGateForced, Reason: "still held by " + next.GateHolders})
			}
			return false, ru.step(ctx, AfterRecordRevoking)
		}
		if err := ru.save(ctx, next); err != nil {
			return true, err
		}
		if err := ru.step(ctx, AfterGateCheck); err != nil {
			return true, err
		}
		if clear {
			continue // the next check, Interval later
		}
		ru.res.RevokeDue, ru.res.GateHolders = deadline, holders
		if expired {
			ru.r.opts.Metrics.gateTimeout(k.Name, GateHold)
			reason := fmt.Sprintf("the old key (version %s, %s) is still held by %s; revoke_gate max_wait ended at %s: both keys stay valid (policy hold); the next run checks again",
				orNone(s.OldVersion), s.OldFP, next.GateHolders, deadline.UTC().Format(time.RFC3339))
			ru.emit(ctx, Event{Type: EventGateHeld, Reason: reason})
			return true, failf(KindGateHeld, "rotation: %s: %s", k.Name, reason)
		}
		if !ru.o.Wait {
			ru.res.Outcome = OutcomeGate
			ru.res.Message = fmt.Sprintf("new version %s (%s) is CURRENT; old version %s (%s) is still held by %s; revoke gate waits until %s",
				s.PendingVersion, s.NewFP, orNone(s.OldVersion), s.OldFP, next.GateHolders, deadline.UTC().Format(time.RFC3339))
			return true, nil
		}
		ru.log().Info("revoke gate: the old key is still held; waiting", slog.String("holders", next.GateHolders), slog.Time("deadline", deadline))
	}
}

// errNobody is the gate's answer when no consumer reports the old key nor
// the new one: the question reaches nobody (a wrong selector or URL, no
// scrape), so "nobody holds the old key" cannot be told.
var errNobody = errors.New("no consumer reports the new key either: the query reaches no consumer (check revoke_gate.prometheus_url and selector, and that Prometheus scrapes the consumers)")

// askGate asks who holds the old key. An empty answer counts only when
// some consumer reports the new key: otherwise it is errNobody.
func (ru *run) askGate(ctx context.Context) ([]Holder, error) {
	return ru.askHolders(ctx, ru.s.OldFP, ru.s.NewFP)
}

// askHolders asks the revoke gate who holds the key of fingerprint fp. An
// empty answer counts only when some consumer reports freshFP, the key
// that replaced it: otherwise it is errNobody.
func (ru *run) askHolders(ctx context.Context, fp, freshFP string) ([]Holder, error) {
	g, k := ru.k.RevokeGate, ru.k
	holders, err := g.Consumers.Holders(ctx, k.Name, fp)
	if err != nil || len(holders) > 0 {
		return holders, err
	}
	fresh, err := g.Consumers.Holders(ctx, k.Name, freshFP)
	if err != nil {
		return nil, err
	}
	if len(fresh) == 0 {
		return nil, errNobody
	}
	return nil, nil
}

// planGate describes, for a dry run, the gate's answer now.
func (ru *run) planGate(ctx context.Context) string {
	g, s := ru.k.RevokeGate, ru.s
	holders, err := ru.askGate(ctx)
	var answer string
	switch {
	case err != nil:
		answer = "cannot tell (" + err.Error() + ")"
	case len(holders) == 0:
		answer = fmt.Sprintf("no consumer reports the old key (%d of %d consecutive clear checks recorded)", s.GateZeros, g.checks())
	default:
		answer = fmt.Sprintf("%d consumers still report the old key: %s", len(holders), describeHolders(holders))
	}
	then := "revoke once clear"
	if !ru.now().Before(ru.gateDeadline()) {
		then = fmt.Sprintf("max_wait is over: policy %s", g.policy())
	}
	return fmt.Sprintf("revoke gate (%s): %s; %s (max_wait ends %s)", g.Consumers.Describe(), answer, then, ru.gateDeadline().UTC().Format(time.RFC3339))
}
