package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// recovery is one documented command of docs/operations.md's runbook: a
// `keywarden rotate` run with its flags, after the clock moved by wait,
// and the exit code the runbook says it ends with.
type recovery struct {
	cmd  string // the command as the runbook writes it
	opts rotation.RunOptions
	wait time.Duration
	exit int
}

// TestEveryPhaseHasAWayOut walks every phase of the state machine (and a
// stray PENDING and a dead holder's lease), each left the way a killed or
// failed run leaves it, and runs the command sequence docs/operations.md
// gives for it. Each ends idle with no lease and no PENDING, with CURRENT a
// valid key, no key revoked twice and no CURRENT key ever revoked. No
// sequence waits for a lease to expire.
func TestEveryPhaseHasAWayOut(t *testing.T) {
	rotate := func(exit int) recovery { return recovery{cmd: "rotate", exit: exit} }
	breakLease := recovery{cmd: "rotate --break-lease", opts: rotation.RunOptions{BreakLease: true, Wait: true}}
	abandon := recovery{cmd: "rotate --abandon", opts: rotation.RunOptions{Abandon: true}}
	force := recovery{cmd: "rotate --force --wait", opts: rotation.RunOptions{Force: true, Wait: true}}
	for _, tc := range []struct {
		name  string
		phase rotation.Phase // the phase the stuck state has
		// stuck leaves the key in the state; it may use the rotator
		// "dead", whose runs stop at crashAt as if killed.
		crashAt rotation.Boundary
		discard bool // OnProbeFailure: Discard
		badNew  bool // the probe fails until the recovery
		grace   time.Duration
		stray   string // a PENDING written outside any rotation, with this token
		steps   []recovery
	}{
		{name: "idle", phase: rotation.PhaseIdle, steps: []recovery{force}},
		{name: "creating before the key exists", phase: rotation.PhaseCreating, crashAt: rotation.AfterLease, steps: []recovery{breakLease}},
		{name: "creating with the key PENDING", phase: rotation.PhaseCreating, crashAt: rotation.AfterPutPending, steps: []recovery{breakLease}},
		{name: "probing", phase: rotation.PhaseProbing, crashAt: rotation.AfterActivate, steps: []recovery{breakLease}},
		{name: "parked, probed again", phase: rotation.PhaseParked, badNew: true, steps: []recovery{rotate(0)}},
		{name: "parked, abandoned", phase: rotation.PhaseParked, badNew: true, steps: []recovery{abandon, force}},
		{name: "discarding", phase: rotation.PhaseDiscarding, discard: true, badNew: true, crashAt: rotation.AfterRecordDiscarding,
			steps: []recovery{{cmd: "rotate --break-lease", opts: rotation.RunOptions{BreakLease: true}, exit: rotation.ExitProbe}, force}},
		{name: "promoting", phase: rotation.PhasePromoting, crashAt: rotation.AfterRecordPromote, steps: []recovery{breakLease}},
		{name: "promoted, not recorded", phase: rotation.PhasePromoting, crashAt: rotation.AfterPromote, steps: []recovery{breakLease}},
		{name: "grace", phase: rotation.PhaseGrace, grace: time.Hour, steps: []recovery{{cmd: "rotate (after revoke_due)", wait: time.Hour}}},
		{name: "revoking", phase: rotation.PhaseRevoking, crashAt: rotation.AfterRecordRevoking, steps: []recovery{breakLease}},
		{name: "revoked, not recorded", phase: rotation.PhaseRevoking, crashAt: rotation.AfterRevoke, steps: []recovery{breakLease}},
		{name: "stray PENDING of an interrupted put", phase: rotation.PhaseIdle, stray: "put-0123", steps: []recovery{abandon, force}},
		{name: "stray PENDING of an unknown writer", phase: rotation.PhaseIdle, stray: "foreign", steps: []recovery{abandon, force}},
		{name: "revoking, abandoned: the old key left valid", phase: rotation.PhaseRevoking, crashAt: rotation.AfterRecordRevoking,
			steps: []recovery{{cmd: "rotate --abandon --break-lease", opts: rotation.RunOptions{Abandon: true, BreakLease: true}}, {cmd: "rotate --revoke-left-valid", opts: rotation.RunOptions{RevokeLeftValid: true}}}},
		{name: "dead holder's lease (creating)", phase: rotation.PhaseCreating, crashAt: rotation.AfterCreate,
			steps: []recovery{{cmd: "rotate --dry-run", opts: rotation.RunOptions{DryRun: true}}, breakLease}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := rotationtest.NewLedger()
			st, seed := seeded(t, l)
			ctx := context.Background()
			clock := rotationtest.NewClock(time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC))
			var bad atomic.Bool
			bad.Store(tc.badNew)
			probe := l.Probe(func(int) error {
				if bad.Load() {
					return &rotation.ProbeError{Err: errors.New("403 permission_error")}
				}
				return nil
			})
			key := func() *rotation.Key {
				k := &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: probe, Grace: tc.grace, Retry: rotation.Retry{Settle: -1}}
				if tc.discard {
					k.OnProbeFailure = rotation.Discard
				}
				return k
			}
			// Leave the key stuck.
			dead := newRotator(t, rotation.Options{Holder: "dead", Now: clock.Now, AfterStep: func(_ context.Context, _ string, b rotation.Boundary) error {
				if b == tc.crashAt {
					return errors.New("killed")
				}
				return nil
			}}, key())
			switch {
			case tc.stray != "":
				if _, err := st.PutPending(ctx, "k", tc.stray, providers.EncodePayload(providers.Payload{Key: providers.NewSecret("sk-ant-api03-stray-stray-stray-stray-0000")})); err != nil {
					t.Fatal(err)
				}
			case tc.phase != rotation.PhaseIdle:
				_, _ = dead.Run(ctx, "k", rotation.RunOptions{Force: true})
			}
			if got := phaseOf(t, st); got != tc.phase {
				t.Fatalf("stuck state: phase %s, want %s", got, tc.phase)
			}
			// Recover with the documented commands, as an operator on
			// another machine, without waiting for any lease.
			bad.Store(false)
			op := newRotator(t, rotation.Options{Holder: "operator", Now: clock.Now}, key())
			for _, s := range tc.steps {
				clock.Advance(s.wait)
				res, err := op.Run(ctx, "k", s.opts)
				if got := rotation.ExitCode(err); got != s.exit {
					t.Fatalf("%s: exit %d, want %d: %v (%+v)", s.cmd, got, s.exit, err, res)
				}
			}
			checkIdleAndUsable(t, st, l, seed, tc.crashAt == rotation.AfterRevoke || tc.crashAt == rotation.AfterRevokeNew)
		})
	}
}

func phaseOf(t *testing.T, st driver.Stager) rotation.Phase {
	t.Helper()
	rec, err := st.ReadRecord(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if p := rec.Data["phase"]; p != "" {
		return rotation.Phase(p)
	}
	return rotation.PhaseIdle
}

// checkIdleAndUsable checks the end of a recovery: idle, no lease, no
// PENDING, CURRENT a valid key of the ledger, no key revoked twice.
func checkIdleAndUsable(t *testing.T, st driver.Stager, l *rotationtest.Ledger, seed rotation.Credential, repeated bool) {
	t.Helper()
	ctx := context.Background()
	rec, err := st.ReadRecord(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if p := rec.Data["phase"]; p != string(rotation.PhaseIdle) || rec.Data["holder"] != "" {
		t.Fatalf("after recovery: phase %q, holder %q", p, rec.Data["holder"])
	}
	// No way out leaves a key valid that nothing revokes.
	if lv := rec.Data["left_valid"]; lv != "" {
		t.Fatalf("after recovery, keys left valid: %s", lv)
	}
	if _, err := st.ReadPending(ctx, "k"); !codes.Is(err, codes.NotFound) {
		t.Fatalf("a PENDING version is left: %v", err)
	}
	cur, err := st.Read(ctx, "k", driver.Current)
	if err != nil {
		t.Fatal(err)
	}
	p, err := providers.DecodePayload(cur.Value, "")
	if err != nil || !l.Valid(p.Key) {
		t.Fatalf("CURRENT (version %s) is not a valid key: %v", cur.ID, err)
	}
	// A revocation interrupted after the issuer applied it is repeated
	// (Revoke is idempotent): at most one repeat, and never of CURRENT.
	limit := 1
	if repeated {
		limit = 2
	}
	for _, k := range l.Keys() {
		if k.RevokeCalls > limit {
			t.Errorf("key %s revoked %d times", k.ID, k.RevokeCalls)
		}
		if k.Value.Equal(p.Key) && k.RevokeCalls > 0 {
			t.Errorf("CURRENT's key %s was revoked", k.ID)
		}
	}
	if p.Key.Equal(seed.Key) {
		return // the seed stayed CURRENT (abandoned or discarded rotations)
	}
	if k := l.ByValue(seed.Key); k == nil || !k.Revoked {
		t.Errorf("the seed key was replaced but not revoked (found: %s)", fmt.Sprint(k != nil))
	}
}
