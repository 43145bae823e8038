package anthropic_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/stage"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// twin returns a key value with the same partial_key_hint as v (its first
// 16 and last 4 characters) and a middle of fill.
func twin(v string, fill byte) string {
	return v[:16] + strings.Repeat(string(fill), len(v)-20) + v[len(v)-4:]
}

// addTwinToPool adds an inactive Console key whose partial_key_hint is the
// one of the CURRENT key to the pool, with its id when withID.
func (e *env) addTwinToPool(withID bool) anthropictest.Key {
	e.t.Helper()
	k := e.api.AddKey(twin(e.first.Value, 'Z'), anthropictest.StatusInactive)
	if k.Hint() != e.first.Hint() {
		e.t.Fatalf("twin hint %s, want %s", k.Hint(), e.first.Hint())
	}
	id := ""
	if withID {
		id = k.ID
	}
	if _, err := e.pool.Add(context.Background(), providers.NewSecret(k.Value), id); err != nil {
		e.t.Fatal(err)
	}
	return k
}

// TestAmbiguousHint: CURRENT was put without a key id and a pool key has
// the same partial_key_hint. The rotation used to promote the pool key and
// then exit 13 in revoking forever ("2 API keys match"): the new key's own
// id must never count as a match for the old key, and among keys still
// matching, the active one is the key to revoke (the inactive one for a
// pool key to activate).
func TestAmbiguousHint(t *testing.T) {
	for _, tc := range []struct {
		name       string
		poolWithID bool
	}{
		{"pool key with id", true},
		{"pool key without id", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, false)
			next := e.addTwinToPool(tc.poolWithID)
			res, err := e.run(e.rotator(e.issuer(nil), nil))
			if err != nil || res.Outcome != rotation.OutcomeRevoked {
				t.Fatalf("run: exit %d: %v (%+v)", rotation.ExitCode(err), err, res)
			}
			if cur := e.current(); cur.Key.Reveal() != next.Value || cur.KeyID != next.ID {
				t.Errorf("CURRENT is not the pool key with its id (key id %q)", cur.KeyID)
			}
			if s := e.status(next.ID); s != anthropictest.StatusActive {
				t.Errorf("new key is %s, want active", s)
			}
			if s := e.status(e.first.ID); s != anthropictest.StatusInactive {
				t.Errorf("old key is %s, want inactive", s)
			}
		})
	}
}

// TestAmbiguousHintOldKeyDeactivatedByHand: the rotation is in grace when
// an operator deactivates the old key by hand; the revocation finds it
// (the only match once the new key's id is left out) and finishes.
func TestAmbiguousHintOldKeyDeactivatedByHand(t *testing.T) {
	e := setup(t, false)
	next := e.addTwinToPool(true)
	key := func() *rotation.Key {
		return &rotation.Key{Name: "claude", Store: e.st, Secret: secretName, Issuer: e.issuer(nil), Probe: e.probe(), Grace: time.Hour,
			Retry: rotation.Retry{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Second}}
	}
	r, err := rotation.New(rotation.Options{Logger: e.log}, key())
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Run(context.Background(), "claude", rotation.RunOptions{Force: true})
	if err != nil || res.Outcome != rotation.OutcomeRotated {
		t.Fatalf("rotate: %v (%+v)", err, res)
	}
	if err := e.api.SetStatus(e.first.ID, anthropictest.StatusInactive); err != nil {
		t.Fatal(err)
	}
	// Two hours later, the revocation is due.
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	if r, err = rotation.New(rotation.Options{Logger: e.log, Now: later}, key()); err != nil {
		t.Fatal(err)
	}
	res, err = e.run(r)
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("revoke: exit %d: %v (%+v)", rotation.ExitCode(err), err, res)
	}
	if s := e.status(next.ID); s != anthropictest.StatusActive {
		t.Errorf("new key is %s, want active", s)
	}
}

// TestKeyIDUnsticksRevocation: a third active key of the organization
// shares the hint, so the old key cannot be told apart by hint: the run
// stops in revoking (exit 13) naming `keywarden key-id`, revokes nothing,
// and after the operator attaches the old key's id to PREVIOUS the next run
// revokes exactly that key.
func TestKeyIDUnsticksRevocation(t *testing.T) {
	e := setup(t, false)
	next := e.addTwinToPool(true)
	other := e.api.AddKey(twin(e.first.Value, 'Y'), anthropictest.StatusActive)
	r := e.rotator(e.issuer(nil), nil)
	res, err := e.run(r)
	if rotation.ExitCode(err) != rotation.ExitIssuer || res.Phase != rotation.PhaseRevoking ||
		!strings.Contains(e.saw(err), "2 API keys match") || !strings.Contains(err.Error(), "keywarden key-id") {
		t.Fatalf("run: exit %d, phase %s: %v", rotation.ExitCode(err), res.Phase, err)
	}
	// Every layer named once.
	if msg := err.Error(); strings.Count(msg, "rotation: ") != 1 || strings.Count(msg, "anthropic: ") != 1 {
		t.Errorf("error repeats a prefix: %s", msg)
	}
	for _, k := range []anthropictest.Key{e.first, other, next} {
		if s := e.status(k.ID); s != anthropictest.StatusActive {
			t.Fatalf("key %s is %s before the id was attached, want active", k.ID, s)
		}
	}
	// A wrong id (the other key's value does not match PREVIOUS's hint? it
	// does: the hint is shared; but an id of another hint is refused).
	if _, err := r.SetKeyID(context.Background(), "claude", driver.Previous, "apikey_01doesnotexist"); rotation.ExitCode(err) != rotation.ExitIssuer {
		t.Fatalf("SetKeyID with an unknown id: exit %d: %v", rotation.ExitCode(err), err)
	}
	kr, err := r.SetKeyID(context.Background(), "claude", driver.Previous, e.first.ID)
	if err != nil || kr.KeyID != e.first.ID || kr.Replaced != "" {
		t.Fatalf("SetKeyID: %+v %v", kr, err)
	}
	res, err = e.run(r)
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("run after key-id: exit %d: %v (%+v)", rotation.ExitCode(err), err, res)
	}
	want := map[string]string{e.first.ID: anthropictest.StatusInactive, other.ID: anthropictest.StatusActive, next.ID: anthropictest.StatusActive}
	for id, s := range want {
		if got := e.status(id); got != s {
			t.Errorf("key %s is %s, want %s", id, got, s)
		}
	}
	st, err := r.Status(context.Background(), "claude")
	if err != nil || st.Previous == nil || st.Previous.KeyID != e.first.ID {
		t.Fatalf("status shows PREVIOUS's attached id? %+v %v", st.Previous, err)
	}
}

// TestPutDuringGraceOldKeyWithoutID: the old key was stored without its
// id; during the grace an operator puts another key, so the old key is no
// longer PREVIOUS and its value is gone from the store. The id resolved
// before the promotion (while it was CURRENT) still revokes it; it failed
// "neither the key nor its id is known" on every run.
func TestPutDuringGraceOldKeyWithoutID(t *testing.T) {
	e := setup(t, false)
	e.addPool(2, true)
	clock := rotationtest.NewClock(time.Now())
	r, err := rotation.New(rotation.Options{Logger: e.log, Now: clock.Now}, &rotation.Key{
		Name: "claude", Store: e.st, Secret: secretName, Issuer: e.issuer(nil), Probe: e.probe(), Grace: time.Hour,
		Retry: rotation.Retry{MinBackoff: time.Millisecond, MaxBackoff: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := r.Run(ctx, "claude", rotation.RunOptions{Force: true})
	if err != nil || res.Phase != rotation.PhaseGrace || res.OldKeyID != e.first.ID {
		t.Fatalf("rotate: %v (%+v); want grace with the old key's id %s recorded", err, res, e.first.ID)
	}
	manual := e.api.AddKey("", anthropictest.StatusActive)
	if _, err := stage.Put(ctx, e.st, secretName, []byte(manual.Value)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	res, err = r.Run(ctx, "claude", rotation.RunOptions{})
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("run after the grace: exit %d %v (%+v)", rotation.ExitCode(err), e.saw(err), res)
	}
	if s := e.status(e.first.ID); s != anthropictest.StatusInactive {
		t.Fatalf("old key is %s, want inactive", s)
	}
	if s := e.status(manual.ID); s != anthropictest.StatusActive {
		t.Fatalf("the key put by hand is %s, want active", s)
	}
}
