package rotation_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/stage"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// recorder keeps the events it is sent.
type recorder struct {
	mu     sync.Mutex
	events []rotation.Event
}

func (r *recorder) Notify(_ context.Context, e rotation.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) last(typ rotation.EventType) *rotation.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i].Type == typ {
			e := r.events[i]
			return &e
		}
	}
	return nil
}

// TestRollbackDuringGrace: an operator puts the old key back as CURRENT
// during the grace. The revocation refuses to revoke it and the rotation
// ends as rolled back (it stayed in revoking forever, exit 11 on every
// run); neither key is revoked; the key rotates again later.
func TestRollbackDuringGrace(t *testing.T) {
	l := rotationtest.NewLedger()
	st, seed := seeded(t, l)
	clock := rotationtest.NewClock(time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC))
	rec := &recorder{}
	r := newRotator(t, rotation.Options{Now: clock.Now, Notifiers: []rotation.Notifier{rec}},
		&rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil), Grace: 10 * time.Minute})
	ctx := context.Background()
	res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true})
	if err != nil || res.Phase != rotation.PhaseGrace {
		t.Fatalf("rotate: %v (%+v)", err, res)
	}
	newKey := res.NewFingerprint
	if _, err := stage.Put(ctx, st, "k", providers.EncodePayload(providers.Payload{Key: seed.Key, KeyID: seed.KeyID})); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	res, err = r.Run(ctx, "k", rotation.RunOptions{})
	if err != nil || res.Outcome != rotation.OutcomeRolledBack || res.Phase != rotation.PhaseIdle {
		t.Fatalf("run after the rollback: exit %d %v (%+v); want rolled_back, idle", rotation.ExitCode(err), err, res)
	}
	if !l.Valid(seed.Key) {
		t.Fatal("the rolled-back key (CURRENT) was revoked")
	}
	if k := l.ByValue(l.Keys()[1].Value); k == nil || !k.Active || k.Revoked {
		t.Fatalf("the new key (now PREVIOUS) was revoked: %+v", k)
	}
	ev := rec.last(rotation.EventRolledBack)
	if ev == nil || ev.NewFingerprint != newKey || !strings.Contains(ev.Reason, "revoke it") {
		t.Fatalf("rolled-back event %+v", ev)
	}
	clock.Advance(time.Hour)
	if res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true}); err != nil || res.Phase != rotation.PhaseGrace {
		t.Fatalf("the next rotation: %v (%+v)", err, res)
	}
	clock.Advance(time.Hour)
	if res, err := r.Run(ctx, "k", rotation.RunOptions{}); err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("the next revocation: %v (%+v)", err, res)
	}
	if l.Valid(seed.Key) {
		t.Fatal("the next rotation did not revoke the rolled-back key")
	}
}

// TestBadCurrentNotCopiedForward: CURRENT hand-edited into a payload
// consumers cannot read ({"apikey": old key}): the new CURRENT holds the
// new key only (the old value was carried over under "apikey"), and the
// revocation ends with a warning (nothing to revoke by) instead of failing
// on every run.
func TestBadCurrentNotCopiedForward(t *testing.T) {
	l := rotationtest.NewLedger()
	st, seed := seeded(t, l)
	ctx := context.Background()
	if err := st.PutByHand(ctx, "k", []byte(`{"apikey":"`+seed.Key.Reveal()+`"}`)); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	r := newRotator(t, rotation.Options{Notifiers: []rotation.Notifier{rec}},
		&rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil)})
	res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true})
	if err != nil || res.Outcome != rotation.OutcomeNotRevoked || res.Phase != rotation.PhaseIdle {
		t.Fatalf("run: exit %d %v (%+v); want not_revoked, idle", rotation.ExitCode(err), err, res)
	}
	cur, err := st.Read(ctx, "k", driver.Current)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cur.Value), seed.Key.Reveal()) || strings.Contains(string(cur.Value), `"apikey"`) {
		t.Fatal("the new CURRENT carries the bad payload's fields (the old key) forward")
	}
	if ev := rec.last(rotation.EventNotRevoked); ev == nil || !strings.Contains(ev.Reason, "NOT revoked") {
		t.Fatalf("not-revoked event %+v", ev)
	}
}

// TestAbandonRevocation: a revocation the issuer keeps refusing is ended
// by --abandon (it was refused "past its probe"), loudly: the old key is
// named as not revoked; the key rotates again afterwards.
func TestAbandonRevocation(t *testing.T) {
	l := rotationtest.NewLedger()
	st, seed := seeded(t, l)
	refuse := true
	l.Fail = func(op string) error {
		if op == "revoke" && refuse {
			return errors.New("ledger: revoke refused")
		}
		return nil
	}
	rec := &recorder{}
	r := newRotator(t, rotation.Options{Notifiers: []rotation.Notifier{rec}},
		&rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil)})
	ctx := context.Background()
	for range 2 {
		if res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true}); rotation.ExitCode(err) != rotation.ExitIssuer || res.Phase != rotation.PhaseRevoking {
			t.Fatalf("run: exit %d %v (%+v); want 13 in revoking", rotation.ExitCode(err), err, res)
		}
	}
	res, err := r.Run(ctx, "k", rotation.RunOptions{Abandon: true})
	if err != nil || res.Phase != rotation.PhaseIdle {
		t.Fatalf("abandon: exit %d %v (%+v)", rotation.ExitCode(err), err, res)
	}
	ev := rec.last(rotation.EventNotRevoked)
	if ev == nil || ev.OldKeyID != seed.KeyID || !strings.Contains(ev.Reason, "NOT revoked") {
		t.Fatalf("not-revoked event %+v", ev)
	}
	if !l.Valid(seed.Key) {
		t.Fatal("the old key was revoked")
	}
	refuse = false
	if res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true}); err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("the next rotation: %v (%+v)", err, res)
	}
}
