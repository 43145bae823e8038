package rotation_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// expiring is a Ledger whose keys all expire at a set time.
type expiring struct {
	*rotationtest.Ledger
	at func() time.Time
}

func (e expiring) Expiry(context.Context, rotation.Credential) (time.Time, error) { return e.at(), nil }

// refused is a probe answer no retry fixes: a workspace without access.
var refused = &rotation.ProbeError{Err: errors.New("403 permission_error: no access to this workspace")}

// TestServeBacksOffAfterProbeFailure: CURRENT is inside its expiry window
// and the probe refuses every key: the daemon must not create and discard
// a key per loop (it burnt the pool in seconds); it waits its backoff.
func TestServeBacksOffAfterProbeFailure(t *testing.T) {
	week, err := rotation.ParseSchedule("@weekly")
	if err != nil {
		t.Fatal(err)
	}
	l := rotationtest.NewLedger()
	st, _ := seeded(t, l)
	r := newRotator(t, rotation.Options{}, &rotation.Key{
		Name: "k", Store: st, Secret: "k",
		Issuer: expiring{l, func() time.Time { return time.Now().Add(48 * time.Hour) }},
		Probe:  l.Probe(func(int) error { return refused }),
		Retry:  rotation.Retry{Settle: -1}, Schedule: week, RotateBeforeExpiry: 72 * time.Hour, OnProbeFailure: rotation.Discard,
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var mu sync.Mutex
	runs := 0
	if err := r.Serve(ctx, rotation.ServeOptions{OnResult: func(*rotation.Result, error) { mu.Lock(); runs++; mu.Unlock() }}); err != nil {
		t.Fatal(err)
	}
	if runs != 1 || l.Minted() != 1 {
		t.Fatalf("%d runs, %d keys minted in a second; want 1 (then the 1m backoff)", runs, l.Minted())
	}
	// A restarted daemon keeps no backoff: the record's discard sets it.
	wake, reason, err := rotation.NextWake(context.Background(), r, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if wait := time.Until(wake); wait < 50*time.Second {
		t.Fatalf("after a discarded rotation the key is due in %v (%s); want the backoff", wait, reason)
	}
}

// TestParkedWakesForExpiry: a key parked while CURRENT expires inside its
// window is probed again at once, not at the next weekly slot after
// CURRENT expired.
func TestParkedWakesForExpiry(t *testing.T) {
	week, err := rotation.ParseSchedule("@weekly")
	if err != nil {
		t.Fatal(err)
	}
	l := rotationtest.NewLedger()
	st, _ := seeded(t, l)
	clock := rotationtest.NewClock(time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)) // a Tuesday
	fails := true
	r := newRotator(t, rotation.Options{Now: clock.Now}, &rotation.Key{
		Name: "k", Store: st, Secret: "k",
		Issuer: expiring{l, func() time.Time { return clock.Now().Add(48 * time.Hour) }},
		Probe: l.Probe(func(int) error {
			if fails {
				return refused
			}
			return nil
		}),
		Retry: rotation.Retry{Settle: -1}, Schedule: week, RotateBeforeExpiry: 72 * time.Hour,
	})
	ctx := context.Background()
	if _, err := r.Run(ctx, "k", rotation.RunOptions{Force: true}); rotation.KindOf(err) != rotation.KindProbe {
		t.Fatalf("run: %v, want a probe failure (parked)", err)
	}
	wake, reason, err := rotation.NextWake(ctx, r, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if wake.After(clock.Now()) {
		t.Fatalf("parked key wakes at %v (%s); CURRENT expires at %v: want now", wake, reason, clock.Now().Add(48*time.Hour))
	}
}

// TestEarlyCronJobServesTheSlot: a weekly "0 3 * * 1" key, a CronJob every
// 30 minutes whose first run fires at 02:59:30 (within the slack): the
// rotation served the 03:00 slot, so the runs at 03:29:30, 03:59:30 and
// 04:29:30 find nothing due (they rotated and revoked again).
func TestEarlyCronJobServesTheSlot(t *testing.T) {
	sched, err := rotation.ParseSchedule("0 3 * * 1")
	if err != nil {
		t.Fatal(err)
	}
	l := rotationtest.NewLedger()
	l.LimitPool(2)
	st, _ := seeded(t, l)
	clock := rotationtest.NewClock(time.Date(2030, 12, 2, 2, 59, 30, 0, time.UTC)) // a Monday
	r := newRotator(t, rotation.Options{Now: clock.Now}, &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil), Schedule: sched})
	var got []string
	for range 4 {
		res, err := r.Run(context.Background(), "k", rotation.RunOptions{})
		if err != nil {
			t.Fatalf("run at %v: %v", clock.Now(), err)
		}
		got = append(got, res.Outcome)
		clock.Advance(30 * time.Minute)
	}
	want := []string{rotation.OutcomeRevoked, rotation.OutcomeNothing, rotation.OutcomeNothing, rotation.OutcomeNothing}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("outcomes %v, want %v", got, want)
	}
}
