package rotation_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// probeFunc adapts a function to rotation.Probe.
type probeFunc func(ctx context.Context, key providers.Secret) error

func (probeFunc) Type() string { return "func" }
func (f probeFunc) Probe(ctx context.Context, key providers.Secret) error {
	return f(ctx, key)
}

// leaseUntil reads the lease expiry in the record of "k".
func leaseUntil(t *testing.T, st *file.Store) (string, string) {
	t.Helper()
	rec, err := st.ReadRecord(context.Background(), "k")
	if err != nil {
		t.Error(err)
		return "", ""
	}
	return rec.Data["holder"], rec.Data["lease_until"]
}

func newRotator(t *testing.T, o rotation.Options, k *rotation.Key) *rotation.Rotator {
	t.Helper()
	r, err := rotation.New(o, k)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestLeaseRenewedWhileProbing: a probe that takes far longer than the
// lease (the clock moves 3 minutes while it runs; the lease is 45s) keeps
// the lease, because the run renews it in the background: another rotator
// finds it held (exit 11) throughout, and the first run completes.
func TestLeaseRenewedWhileProbing(t *testing.T) {
	l := rotationtest.NewLedger()
	st, _ := seeded(t, l)
	clock := rotationtest.NewClock(time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC))
	other := newRotator(t, rotation.Options{Holder: "other", Now: clock.Now},
		&rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil)})
	var otherErrs []error
	probe := probeFunc(func(ctx context.Context, _ providers.Secret) error {
		for range 12 {
			_, before := leaseUntil(t, st)
			clock.Advance(15 * time.Second)
			// Wait for a renewal: the expiry moves.
			for {
				if _, now := leaseUntil(t, st); now != before {
					break
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				time.Sleep(time.Millisecond)
			}
			_, err := other.Run(ctx, "k", rotation.RunOptions{Force: true})
			otherErrs = append(otherErrs, err)
		}
		return nil
	})
	r := newRotator(t, rotation.Options{Holder: "prober", Now: clock.Now},
		&rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: probe})
	rotation.SetRenewEvery(r, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang, not a timing
	defer cancel()
	res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true, Wait: true})
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("run: %v (%+v)", err, res)
	}
	if len(otherErrs) != 12 {
		t.Fatalf("the other rotator ran %d times", len(otherErrs))
	}
	for i, err := range otherErrs {
		if !errors.Is(err, rotation.ErrInProgress) || rotation.ExitCode(err) != rotation.ExitConflict {
			t.Fatalf("other run %d (clock +%ds): %v, want exit 11 (lease held)", i, 15*(i+1), err)
		}
	}
	if n := l.Minted(); n != 1 {
		t.Fatalf("%d keys minted, want 1", n)
	}
}

// TestDeadHolderTakenOverWithinAMinute: a run killed mid-rotation leaves
// its lease; with the default lease another rotator takes over once a
// minute has passed, not ten.
func TestDeadHolderTakenOverWithinAMinute(t *testing.T) {
	if rotation.DefaultLease > time.Minute {
		t.Fatalf("DefaultLease %v: a dead holder blocks longer than a minute", rotation.DefaultLease)
	}
	l := rotationtest.NewLedger()
	st, _ := seeded(t, l)
	clock := rotationtest.NewClock(time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC))
	key := func() *rotation.Key {
		return &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil)}
	}
	dead := newRotator(t, rotation.Options{Holder: "dead", Now: clock.Now, AfterStep: func(_ context.Context, _ string, b rotation.Boundary) error {
		if b == rotation.AfterActivate {
			return errors.New("killed")
		}
		return nil
	}}, key())
	if _, err := dead.Run(context.Background(), "k", rotation.RunOptions{Force: true}); err == nil {
		t.Fatal("the killed run succeeded")
	}
	next := newRotator(t, rotation.Options{Holder: "next", Now: clock.Now}, key())
	clock.Advance(30 * time.Second)
	if _, err := next.Run(context.Background(), "k", rotation.RunOptions{}); !errors.Is(err, rotation.ErrInProgress) {
		t.Fatalf("30s after the kill: %v, want the lease held", err)
	}
	clock.Advance(30 * time.Second)
	res, err := next.Run(context.Background(), "k", rotation.RunOptions{Wait: true})
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("a minute after the kill: %v (%+v)", err, res)
	}
}

// TestBreakLease: --break-lease frees a lease at once, logs the holder and
// its expiry, emits an event and goes on with the rotation; a holder that
// was alive after all loses the lease at its next renewal and stops with
// exit 11, and the rotation completes once.
func TestBreakLease(t *testing.T) {
	l := rotationtest.NewLedger()
	st, old := seeded(t, l)
	key := func(p rotation.Probe) *rotation.Key {
		return &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: p}
	}
	entered := make(chan struct{})
	var once sync.Once
	stuck := probeFunc(func(ctx context.Context, _ providers.Secret) error {
		once.Do(func() { close(entered) })
		<-ctx.Done() // a probe that hangs until its run is cancelled
		return ctx.Err()
	})
	holder := newRotator(t, rotation.Options{Holder: "stuck-holder"}, key(stuck))
	rotation.SetRenewEvery(holder, 20*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang, not a timing
	defer cancel()
	holderErr := make(chan error, 1)
	go func() {
		_, err := holder.Run(ctx, "k", rotation.RunOptions{Force: true})
		holderErr <- err
	}()
	<-entered

	var logs bytes.Buffer
	var events []rotation.Event
	breaker := newRotator(t, rotation.Options{Holder: "operator", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Notifiers: []rotation.Notifier{rotation.NotifierFunc(func(_ context.Context, e rotation.Event) error {
			events = append(events, e)
			return nil
		})}}, key(l.Probe(nil)))
	if _, err := breaker.Run(ctx, "k", rotation.RunOptions{}); !errors.Is(err, rotation.ErrInProgress) {
		t.Fatalf("without --break-lease: %v, want the lease held", err)
	}
	if res, err := breaker.Run(ctx, "k", rotation.RunOptions{BreakLease: true, DryRun: true}); err != nil ||
		len(res.Plan) < 2 || !strings.HasPrefix(res.Plan[0], "break the lease of stuck-holder") {
		t.Fatalf("--break-lease --dry-run: %v %q", err, res.Plan)
	}
	if h, _ := leaseUntil(t, st); h != "stuck-holder" {
		t.Fatalf("a dry run broke the lease: holder %q", h)
	}
	res, err := breaker.Run(ctx, "k", rotation.RunOptions{BreakLease: true, Wait: true})
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("--break-lease: %v (%+v)", err, res)
	}
	if !strings.Contains(logs.String(), "rotation lease broken") || !strings.Contains(logs.String(), "holder=stuck-holder") {
		t.Fatalf("the break is not logged with its holder:\n%s", logs.String())
	}
	if len(events) == 0 || events[0].Type != rotation.EventLeaseBroken || events[0].Holder != "stuck-holder" || events[0].LeaseUntil.IsZero() {
		t.Fatalf("events %+v, want lease_broken first with the holder and its expiry", events)
	}
	err = <-holderErr
	if rotation.ExitCode(err) != rotation.ExitConflict || !strings.Contains(err.Error(), "lease was broken") {
		t.Fatalf("the holder whose lease was broken: exit %d: %v", rotation.ExitCode(err), err)
	}
	if n := l.Minted(); n != 1 {
		t.Fatalf("%d keys minted, want 1", n)
	}
	if k := l.ByValue(old.Key); k == nil || !k.Revoked || k.RevokeCalls != 1 {
		t.Fatalf("old key %+v, want revoked once", k)
	}
	if h, _ := leaseUntil(t, st); h != "" {
		t.Fatalf("lease still held by %q", h)
	}
}

// TestLeaseValidation: the lease has a floor; zero takes the default.
func TestLeaseValidation(t *testing.T) {
	l := rotationtest.NewLedger()
	st, _ := seeded(t, l)
	k := &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil), Retry: rotation.Retry{Attempts: 50, Timeout: time.Minute}}
	if _, err := rotation.New(rotation.Options{Lease: 5 * time.Second}, k); rotation.ExitCode(err) != rotation.ExitConfig || !strings.Contains(err.Error(), "shorter than 10s") {
		t.Fatalf("lease 5s: %v", err)
	}
	// A probe longer than the lease is fine: the run renews the lease.
	if _, err := rotation.New(rotation.Options{}, k); err != nil {
		t.Fatalf("long probe under the default lease: %v", err)
	}
}

// TestIssuerErrorsByCode: an issuer error that carries a store code (the
// pool's store) exits by that code: a corrupt pool 12 (it was 13), a pool
// write that lost its race 11 (it was 13, pointing at the Admin key), bad
// input 2; an issuer's own failure 13.
func TestIssuerErrorsByCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		exit int
	}{
		{fmt.Errorf("ledger: %w", codes.Errorf(codes.Internal, "pool: p (version 3): not a pool document")), rotation.ExitStore},
		{fmt.Errorf("ledger: %w", codes.Errorf(codes.Unavailable, "pool: read p: aws: connection refused")), rotation.ExitStore},
		{fmt.Errorf("ledger: %w", codes.Errorf(codes.Aborted, "pool: p: other writers changed the pool 8 times in a row")), rotation.ExitConflict},
		{fmt.Errorf("ledger: %w", codes.Errorf(codes.InvalidArgument, "pool: key x already in the pool")), rotation.ExitConfig},
		{errors.New("ledger: 500 api_error"), rotation.ExitIssuer},
	} {
		l := rotationtest.NewLedger()
		st, _ := seeded(t, l)
		l.Fail = func(op string) error {
			if op == "create" {
				return tc.err
			}
			return nil
		}
		r := newRotator(t, rotation.Options{}, &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l})
		_, err := r.Run(context.Background(), "k", rotation.RunOptions{Force: true})
		if got := rotation.ExitCode(err); got != tc.exit {
			t.Errorf("%v: exit %d, want %d", tc.err, got, tc.exit)
		}
		if want := "rotation: k: create a key: " + tc.err.Error(); err == nil || err.Error() != want {
			t.Errorf("error %v, want %q", err, want)
		}
	}
	// Store codes alone.
	for c, exit := range map[codes.Code]int{codes.InvalidArgument: rotation.ExitConfig, codes.Aborted: rotation.ExitConflict,
		codes.FailedPrecondition: rotation.ExitConflict, codes.Internal: rotation.ExitStore, codes.NotFound: rotation.ExitStore} {
		if got := rotation.ExitCode(codes.Errorf(c, "x")); got != exit {
			t.Errorf("code %v: exit %d, want %d", c, got, exit)
		}
	}
}

// TestKeyIDDuringRotation: `keywarden key-id` during a live rotation (a
// compare-and-swap write of the record) does not break the holder's lease:
// its next renewal found the revision changed and stopped the run (exit
// 11, lease not released). The run goes on and keeps the attached id.
func TestKeyIDDuringRotation(t *testing.T) {
	l := rotationtest.NewLedger()
	st, _ := seeded(t, l)
	inProbe, release := make(chan struct{}), make(chan struct{})
	probe := probeFunc(func(ctx context.Context, _ providers.Secret) error {
		close(inProbe)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	key := func(p rotation.Probe) *rotation.Key {
		return &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: p}
	}
	r := newRotator(t, rotation.Options{Holder: "prober"}, key(probe))
	rotation.SetRenewEvery(r, 20*time.Millisecond)
	other := newRotator(t, rotation.Options{Holder: "operator"}, key(l.Probe(nil)))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang, not a timing
	defer cancel()
	type result struct {
		res *rotation.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true})
		done <- result{res, err}
	}()
	<-inProbe
	if _, err := other.SetKeyID(ctx, "k", driver.Current, "id-attached"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // several renewals
	close(release)
	got := <-done
	if got.err != nil || got.res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("run: exit %d %v (%+v)", rotation.ExitCode(got.err), got.err, got.res)
	}
	rec, err := st.ReadRecord(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rec.Data["key_ids"], "id-attached") {
		t.Fatalf("the attached id was lost: key_ids %q", rec.Data["key_ids"])
	}
}
