package rotation_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// scripted answers the gate from a list the test changes, and counts the
// questions about the old key. Every other key is held by pod "fresh",
// unless nobody is set.
type scripted struct {
	mu      sync.Mutex
	oldFP   string
	holders []rotation.Holder
	err     error
	nobody  bool
	asked   int
}

func (s *scripted) Holders(_ context.Context, key, fp string) ([]rotation.Holder, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	if fp != s.oldFP {
		if s.nobody {
			return nil, nil
		}
		return []rotation.Holder{{"pod": "fresh"}}, nil
	}
	s.asked++
	return s.holders, nil
}

func (s *scripted) Describe() string { return "scripted" }

func (s *scripted) set(hs []rotation.Holder, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holders, s.err = hs, err
}

func (s *scripted) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked
}

var quiet = slog.New(slog.DiscardHandler)

func gateRotator(t *testing.T, l *rotationtest.Ledger, g *rotation.RevokeGate, afterStep func(context.Context, string, rotation.Boundary) error) (*rotation.Rotator, rotation.Credential) {
	t.Helper()
	st, old := seeded(t, l)
	g.Consumers.(*scripted).oldFP = old.Key.Fingerprint()
	r, err := rotation.New(rotation.Options{Logger: quiet, AfterStep: afterStep},
		&rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil), RevokeGate: g})
	if err != nil {
		t.Fatal(err)
	}
	return r, old
}

// A killed run's clear checks are kept in the record: the next run needs
// only the checks that are missing.
func TestGateResumesAfterKill(t *testing.T) {
	l := rotationtest.NewLedger()
	c := &scripted{}
	g := &rotation.RevokeGate{Consumers: c, Checks: 3, Interval: 10 * time.Millisecond}
	kill := errors.New("killed")
	checks := 0
	st, old := seeded(t, l)
	c.oldFP = old.Key.Fingerprint()
	key := &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil), RevokeGate: g}
	r1, err := rotation.New(rotation.Options{Logger: quiet, AfterStep: func(_ context.Context, _ string, b rotation.Boundary) error {
		if b == rotation.AfterGateCheck {
			if checks++; checks == 2 {
				return kill
			}
		}
		return nil
	}}, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r1.Run(context.Background(), "k", rotation.RunOptions{Force: true}); !errors.Is(err, kill) {
		t.Fatalf("run 1: %v, want the kill", err)
	}
	if c.count() != 2 || !l.Valid(old.Key) {
		t.Fatalf("asked %d times, old key valid %v", c.count(), l.Valid(old.Key))
	}
	r2, err := rotation.New(rotation.Options{Logger: quiet}, key)
	if err != nil {
		t.Fatal(err)
	}
	st2, err := r2.Status(context.Background(), "k")
	if err != nil || st2.Gate == nil || st2.Gate.Zeros != 2 || st2.Gate.Checks != 3 {
		t.Fatalf("status after the kill: %+v, %v", st2.Gate, err)
	}
	res, err := r2.Run(context.Background(), "k", rotation.RunOptions{})
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("run 2: %+v, %v", res, err)
	}
	// status asked once, run 2 once: 2 + 1 + 1.
	if c.count() != 4 {
		t.Fatalf("asked %d times in all, want 4 (the resumed run needs 1 more check)", c.count())
	}
	if l.Valid(old.Key) {
		t.Fatal("old key still valid")
	}
}

func TestGateOutcomes(t *testing.T) {
	pod := []rotation.Holder{{"pod": "web-1", "instance": "10.0.0.1:9090", "fingerprint": "x"}}
	tests := []struct {
		name       string
		holders    []rotation.Holder
		err        error
		nobody     bool
		policy     rotation.GatePolicy
		maxWait    time.Duration
		wait       bool
		wantExit   int
		wantOut    string
		wantValid  bool
		wantInText string
	}{
		{name: "held before max_wait: exit 0, outcome gate", holders: pod, maxWait: time.Hour, wantOut: rotation.OutcomeGate, wantValid: true, wantInText: "instance=10.0.0.1:9090,pod=web-1"},
		{name: "held past max_wait, hold", holders: pod, maxWait: 30 * time.Millisecond, wait: true, wantExit: rotation.ExitGateHeld, wantOut: "gate_held", wantValid: true, wantInText: "pod=web-1"},
		{name: "held past max_wait, revoke", holders: pod, policy: rotation.GateRevoke, maxWait: 30 * time.Millisecond, wait: true, wantOut: rotation.OutcomeRevoked},
		{name: "Prometheus fails: not clear", err: errors.New("promgate: connection refused"), maxWait: 30 * time.Millisecond, wait: true, wantExit: rotation.ExitGateHeld, wantOut: "gate_held", wantValid: true, wantInText: "unknown: promgate: connection refused"},
		{name: "nobody holds it", maxWait: time.Hour, wantOut: rotation.OutcomeRevoked},
		{name: "nobody holds either key: cannot tell", nobody: true, maxWait: 30 * time.Millisecond, wait: true, wantExit: rotation.ExitGateHeld, wantOut: "gate_held", wantValid: true, wantInText: "no consumer reports the new key either"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := rotationtest.NewLedger()
			c := &scripted{}
			c.set(tc.holders, tc.err)
			c.nobody = tc.nobody
			r, old := gateRotator(t, l, &rotation.RevokeGate{Consumers: c, Checks: 2, Interval: 5 * time.Millisecond, MaxWait: tc.maxWait, Policy: tc.policy}, nil)
			res, err := r.Run(context.Background(), "k", rotation.RunOptions{Force: true, Wait: tc.wait})
			if rotation.ExitCode(err) != tc.wantExit || res.Outcome != tc.wantOut {
				t.Fatalf("got %s exit %d (%v), want %s exit %d", res.Outcome, rotation.ExitCode(err), err, tc.wantOut, tc.wantExit)
			}
			if l.Valid(old.Key) != tc.wantValid {
				t.Fatalf("old key valid %v, want %v", l.Valid(old.Key), tc.wantValid)
			}
			text := res.Message
			if tc.wantInText != "" && !strings.Contains(text, tc.wantInText) {
				t.Fatalf("message %q lacks %q", text, tc.wantInText)
			}
			if tc.policy == rotation.GateRevoke && res.Gate != "forced" {
				t.Fatalf("gate %q, want forced", res.Gate)
			}
		})
	}
}

// A key held before max_wait is revoked by a later run once its holders
// let go.
func TestGateClearsOnLaterRun(t *testing.T) {
	l := rotationtest.NewLedger()
	c := &scripted{}
	c.set([]rotation.Holder{{"pod": "p"}}, nil)
	r, old := gateRotator(t, l, &rotation.RevokeGate{Consumers: c, Checks: 2, Interval: 5 * time.Millisecond}, nil)
	res, err := r.Run(context.Background(), "k", rotation.RunOptions{Force: true})
	if err != nil || res.Outcome != rotation.OutcomeGate || len(res.GateHolders) != 1 {
		t.Fatalf("run 1: %+v, %v", res, err)
	}
	c.set(nil, nil)
	res, err = r.Run(context.Background(), "k", rotation.RunOptions{})
	if err != nil || res.Outcome != rotation.OutcomeRevoked || l.Valid(old.Key) {
		t.Fatalf("run 2: %+v, %v", res, err)
	}
	// A new rotation starts with a fresh gate: its first held answer stops it.
	c.set([]rotation.Holder{{"pod": "p"}}, nil)
	res, err = r.Run(context.Background(), "k", rotation.RunOptions{Force: true})
	if err != nil || res.Outcome != rotation.OutcomeGate {
		t.Fatalf("run 3: %+v, %v", res, err)
	}
}

func TestGateConfig(t *testing.T) {
	c := &scripted{}
	for _, tc := range []struct {
		g    rotation.RevokeGate
		want string
	}{
		{rotation.RevokeGate{}, "nothing to ask"},
		{rotation.RevokeGate{Consumers: c, Checks: -1}, "checks -1 is negative"},
		{rotation.RevokeGate{Consumers: c, Interval: -time.Second}, "interval -1s is negative"},
		{rotation.RevokeGate{Consumers: c, MaxWait: -time.Second}, "max_wait -1s is negative"},
		{rotation.RevokeGate{Consumers: c, Policy: "maybe"}, `policy "maybe": want hold or revoke`},
	} {
		l := rotationtest.NewLedger()
		st, _ := seeded(t, l)
		_, err := rotation.New(rotation.Options{}, &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, RevokeGate: &tc.g})
		if rotation.KindOf(err) != rotation.KindConfig || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want config error %q", tc.g, err, tc.want)
		}
	}
}

// A dry run in grace shows the gate's answer, before and after the grace,
// and changes nothing.
func TestGateDryRun(t *testing.T) {
	l := rotationtest.NewLedger()
	c := &scripted{}
	c.set([]rotation.Holder{{"pod": "web-3", "instance": "10.0.0.3:9090"}}, nil)
	st, old := seeded(t, l)
	c.oldFP = old.Key.Fingerprint()
	r, err := rotation.New(rotation.Options{Logger: quiet},
		&rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil), Grace: time.Hour,
			RevokeGate: &rotation.RevokeGate{Consumers: c}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := r.Run(context.Background(), "k", rotation.RunOptions{Force: true}); err != nil || res.Outcome != rotation.OutcomeRotated {
		t.Fatalf("rotate: %+v, %v", res, err)
	}
	res, err := r.Run(context.Background(), "k", rotation.RunOptions{DryRun: true})
	if err != nil || !strings.Contains(res.Message, "revoke gate (scripted): 1 consumers still report the old key: instance=10.0.0.3:9090,pod=web-3") {
		t.Fatalf("dry run: %q, %v", res.Message, err)
	}
	if !l.Valid(old.Key) {
		t.Fatal("a dry run revoked the old key")
	}
}
