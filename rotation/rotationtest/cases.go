package rotationtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/stage"
	"github.com/keywarden/keywarden/rotation"
)

var force = rotation.RunOptions{Force: true}

func testRotate(t *testing.T, h Harness) {
	f := newFixture(t, h)
	old := f.seed()
	r := f.rotator("a", nil)
	res, err := r.Run(context.Background(), "k", force)
	f.checkErr("run", err, 0)
	if res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("outcome %q (%s), want revoked", res.Outcome, res.Message)
	}
	if !slices.Equal(res.Steps, rotation.Boundaries) {
		t.Fatalf("steps %v, want %v", res.Steps, rotation.Boundaries)
	}
	f.checkConverged(old, 1)
	if res.OldKeyID != old.KeyID || res.NewFingerprint == "" || res.ProbeAttempts != 1 {
		t.Fatalf("result %+v", res)
	}
	if got := f.events.types(); !slices.Equal(got, []rotation.EventType{rotation.EventRotated, rotation.EventRevoked}) {
		t.Fatalf("events %v", got)
	}
	// Not due again: the schedule is weekly.
	res, err = r.Run(context.Background(), "k", rotation.RunOptions{})
	f.checkErr("second run", err, 0)
	if res.Outcome != rotation.OutcomeNothing || res.NextDue.IsZero() {
		t.Fatalf("second run: %+v", res)
	}
	if f.ledger.Minted() != 1 {
		t.Fatal("a run that was not due minted a key")
	}
}

func testRotateTwice(t *testing.T, h Harness) {
	f := newFixture(t, h)
	first := f.seed()
	r := f.rotator("a", nil)
	if _, err := r.Run(context.Background(), "k", force); err != nil {
		t.Fatal(err)
	}
	mid, _ := f.read(driver.Current)
	if _, err := r.Run(context.Background(), "k", force); err != nil {
		t.Fatal(err)
	}
	f.checkConverged(f.ledger.credOf(mid.Key), 2)
	if k := f.ledger.Key(first.KeyID); k.RevokeCalls != 1 {
		t.Fatalf("first key revoked %d times", k.RevokeCalls)
	}
	if f.record()["rotations"] != "2" {
		t.Fatalf("record rotations %q", f.record()["rotations"])
	}
}

func testFirstKey(t *testing.T, h Harness) {
	f := newFixture(t, h)
	r := f.rotator("a", nil)
	res, err := r.Run(context.Background(), "k", force)
	f.checkErr("run", err, 0)
	if res.Outcome != rotation.OutcomeRotated {
		t.Fatalf("outcome %q: %s", res.Outcome, res.Message)
	}
	cur, _ := f.read(driver.Current)
	if cur == nil || !f.ledger.Valid(cur.Key) {
		t.Fatal("no valid CURRENT after the first rotation")
	}
	if rec := f.record(); rec["phase"] != "idle" {
		t.Fatalf("phase %q", rec["phase"])
	}
}

// testCrashes kills a rotation at every boundary and checks that the next
// run converges.
func testCrashes(t *testing.T, h Harness) {
	for _, b := range rotation.Boundaries {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, h)
			old := f.seed()
			ctx := context.Background()
			_, err := f.rotator("a", func(_ *rotation.Key, o *rotation.Options) { o.AfterStep = crashAt(b) }).Run(ctx, "k", force)
			if !errors.Is(err, errKilled) {
				t.Fatalf("run killed at %s: %v", b, err)
			}
			f.checkInvariants("after the kill")
			// A new process: a new rotator. Its holder differs; the dead
			// one's lease is taken over once expired, so use the same
			// holder identity here (a restarted pod) and test expiry apart.
			res, err := f.rotator("a", nil).Run(ctx, "k", rotation.RunOptions{})
			f.checkErr("resumed run", err, 0)
			f.checkInvariants("after the resumed run")
			if b == rotation.AfterDone {
				if res.Outcome != rotation.OutcomeNothing {
					t.Fatalf("after a complete rotation: outcome %q", res.Outcome)
				}
			} else if res.Outcome != rotation.OutcomeRevoked {
				t.Fatalf("resumed run: outcome %q: %s", res.Outcome, res.Message)
			}
			f.checkConverged(old, 1)
			if k := f.ledger.Key(old.KeyID); b != rotation.AfterRevoke && k.RevokeCalls != 1 {
				t.Fatalf("old key revoked %d times", k.RevokeCalls)
			}
			// Only a run killed between Create and PutPending may ask the
			// issuer again (with the same token); a PENDING written is
			// resumed, not duplicated.
			cur, _ := f.read(driver.Current)
			if n := f.ledger.ByValue(cur.Key).CreateCalls; n != 1 && !(b == rotation.AfterCreate && n == 2) {
				t.Fatalf("Create called %d times for the rotation", n)
			}
		})
	}
}

// testDiscardCrashes kills a rotation whose probe fails under Discard at
// every boundary: the next run finishes the discard; CURRENT stays.
func testDiscardCrashes(t *testing.T, h Harness) {
	for _, b := range rotation.DiscardBoundaries {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, h)
			old := f.seed()
			ctx := context.Background()
			bad := func(k *rotation.Key, _ *rotation.Options) {
				k.OnProbeFailure = rotation.Discard
				k.Probe = f.ledger.Probe(func(int) error {
					return &rotation.ProbeError{Err: errors.New("403 permission_error: no access")}
				})
			}
			_, err := f.rotator("a", func(k *rotation.Key, o *rotation.Options) { bad(k, o); o.AfterStep = crashAt(b) }).Run(ctx, "k", force)
			if !errors.Is(err, errKilled) {
				t.Fatalf("run killed at %s: %v", b, err)
			}
			_, err = f.rotator("a", bad).Run(ctx, "k", rotation.RunOptions{})
			if b == rotation.AfterDone {
				f.checkErr("resumed run", err, 0)
			} else {
				f.checkErr("resumed run", err, rotation.ExitProbe)
			}
			cur, _ := f.read(driver.Current)
			if !cur.Key.Equal(old.Key) || !f.ledger.Valid(old.Key) {
				t.Fatal("CURRENT changed or the old key was revoked after a failed probe")
			}
			if p, _ := f.read(driver.Pending); p != nil {
				t.Fatal("PENDING left behind after a discard")
			}
			if f.ledger.Minted() != 1 {
				t.Fatalf("minted %d keys", f.ledger.Minted())
			}
			for _, k := range f.ledger.Keys() {
				if k.Token != "" && (!k.Revoked || k.Active) {
					t.Fatalf("the discarded key was not revoked: %+v", k)
				}
			}
			if rec := f.record(); rec["phase"] != "idle" || rec["last_outcome"] != rotation.OutcomeDiscarded {
				t.Fatalf("record %q/%q", rec["phase"], rec["last_outcome"])
			}
		})
	}
}

func testPark(t *testing.T, h Harness) {
	f := newFixture(t, h)
	old := f.seed()
	ctx := context.Background()
	var broken sync.Mutex
	failing := true
	probe := f.ledger.Probe(func(int) error {
		broken.Lock()
		defer broken.Unlock()
		if failing {
			return &rotation.ProbeError{Err: errors.New("401 authentication_error: invalid x-api-key")}
		}
		return nil
	})
	r := f.rotator("a", func(k *rotation.Key, _ *rotation.Options) { k.Probe = probe })
	res, err := r.Run(ctx, "k", force)
	f.checkErr("run", err, rotation.ExitProbe)
	if !strings.Contains(err.Error(), "authentication_error") || !strings.Contains(err.Error(), "parked") {
		t.Fatalf("error does not say why: %v", err)
	}
	if res.ProbeAttempts != 1 {
		t.Fatalf("a 401 was retried: %d attempts", res.ProbeAttempts)
	}
	cur, _ := f.read(driver.Current)
	if !cur.Key.Equal(old.Key) {
		t.Fatal("CURRENT changed after a failed probe")
	}
	pend, pv := f.read(driver.Pending)
	if pend == nil || f.record()["phase"] != "parked" {
		t.Fatal("the new key is not parked as PENDING")
	}
	// Still failing: parked again, same key.
	_, err = r.Run(ctx, "k", rotation.RunOptions{})
	f.checkErr("second run", err, rotation.ExitProbe)
	if _, pv2 := f.read(driver.Pending); pv2 == nil || pv2.ID != pv.ID {
		t.Fatal("the parked key was replaced")
	}
	// Fixed: the next run promotes the parked key.
	broken.Lock()
	failing = false
	broken.Unlock()
	res, err = r.Run(ctx, "k", rotation.RunOptions{})
	f.checkErr("third run", err, 0)
	f.checkConverged(old, 1)
	if res.NewVersion != pv.ID {
		t.Fatalf("promoted %s, want the parked %s", res.NewVersion, pv.ID)
	}
	if ev := f.events.types(); !slices.Contains(ev, rotation.EventFailed) {
		t.Fatalf("no failure event: %v", ev)
	}
	// Abandoning a parked rotation.
	g := newFixture(t, h)
	g.seed()
	r2 := g.rotator("a", func(k *rotation.Key, _ *rotation.Options) {
		k.Probe = g.ledger.Probe(func(int) error { return &rotation.ProbeError{Err: errors.New("403 permission_error")} })
	})
	_, err = r2.Run(ctx, "k", force)
	g.checkErr("park", err, rotation.ExitProbe)
	recBefore := g.record()
	res, err = r2.Run(ctx, "k", rotation.RunOptions{Abandon: true, DryRun: true})
	g.checkErr("abandon dry run", err, 0)
	if p, _ := g.read(driver.Pending); p == nil || !strings.Contains(res.Message, "discard PENDING") || fmt.Sprint(g.record()) != fmt.Sprint(recBefore) {
		t.Fatalf("abandon dry run changed the store or said %q", res.Message)
	}
	res, err = r2.Run(ctx, "k", rotation.RunOptions{Abandon: true})
	g.checkErr("abandon", err, 0)
	if p, _ := g.read(driver.Pending); p != nil || res.Outcome != rotation.OutcomeDiscarded {
		t.Fatalf("abandon left PENDING or said %q", res.Outcome)
	}
}

func testDiscard(t *testing.T, h Harness) {
	f := newFixture(t, h)
	old := f.seed()
	r := f.rotator("a", func(k *rotation.Key, _ *rotation.Options) {
		k.OnProbeFailure = rotation.Discard
		k.Probe = f.ledger.Probe(func(int) error {
			return &rotation.ProbeError{Err: errors.New("403 permission_error: no access to model")}
		})
	})
	res, err := r.Run(context.Background(), "k", force)
	f.checkErr("run", err, rotation.ExitProbe)
	if !strings.Contains(err.Error(), "permission_error") {
		t.Fatalf("error does not say why: %v", err)
	}
	cur, _ := f.read(driver.Current)
	if !cur.Key.Equal(old.Key) || !f.ledger.Valid(old.Key) {
		t.Fatal("CURRENT touched")
	}
	if p, _ := f.read(driver.Pending); p != nil {
		t.Fatal("PENDING not discarded")
	}
	if res.NewKeyID == "" || !f.ledger.Key(res.NewKeyID).Revoked {
		t.Fatal("the discarded key was not revoked at the issuer")
	}
}

func testProbeRetries(t *testing.T, h Harness) {
	f := newFixture(t, h)
	old := f.seed()
	r := f.rotator("a", func(k *rotation.Key, _ *rotation.Options) {
		k.Probe = f.ledger.Probe(func(n int) error {
			if n < 3 {
				return &rotation.ProbeError{Retryable: true, RetryAfter: time.Millisecond, Err: fmt.Errorf("529 overloaded_error (attempt %d)", n)}
			}
			return nil
		})
	})
	res, err := r.Run(context.Background(), "k", force)
	f.checkErr("run", err, 0)
	if res.ProbeAttempts != 3 {
		t.Fatalf("probe attempts %d, want 3", res.ProbeAttempts)
	}
	f.checkConverged(old, 1)
	// Retryable failures past the attempts: a probe failure.
	g := newFixture(t, h)
	g.seed()
	r = g.rotator("a", func(k *rotation.Key, _ *rotation.Options) {
		k.Probe = g.ledger.Probe(func(n int) error {
			return &rotation.ProbeError{Retryable: true, Err: errors.New("500 api_error")}
		})
	})
	res, err = r.Run(context.Background(), "k", force)
	g.checkErr("run", err, rotation.ExitProbe)
	if res.ProbeAttempts != 3 || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Fatalf("attempts %d: %v", res.ProbeAttempts, err)
	}
}

// barrier is a Stager whose first n ReadRecord calls wait for each other,
// so that n rotators read the same revision before any writes it.
type barrier struct {
	driver.Stager
	mu      sync.Mutex
	n       int
	arrived chan struct{}
	once    sync.Once
}

func (b *barrier) ReadRecord(ctx context.Context, name string) (*driver.Record, error) {
	b.mu.Lock()
	b.n--
	last := b.n == 0
	first := b.n >= 0
	b.mu.Unlock()
	if last {
		b.once.Do(func() { close(b.arrived) })
	}
	if first {
		select {
		case <-b.arrived:
		case <-time.After(20 * time.Second):
		case <-ctx.Done():
		}
	}
	return b.Stager.ReadRecord(ctx, name)
}

func testConcurrent(t *testing.T, h Harness) {
	const n = 4
	f := newFixture(t, h)
	old := f.seed()
	bar := &barrier{Stager: f.st, n: n, arrived: make(chan struct{})}
	var wg sync.WaitGroup
	errs := make([]error, n)
	res := make([]*rotation.Result, n)
	for i := range n {
		r := f.rotator(fmt.Sprintf("r%d", i), func(k *rotation.Key, _ *rotation.Options) { k.Store = bar })
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = r.Run(context.Background(), "k", force)
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
			if res[i].Outcome != rotation.OutcomeRevoked {
				t.Fatalf("winner outcome %q", res[i].Outcome)
			}
		case errors.Is(err, rotation.ErrInProgress):
			f.checkErr("loser", err, rotation.ExitConflict)
			if !strings.Contains(err.Error(), "in progress") {
				t.Fatalf("loser's message: %v", err)
			}
		default:
			t.Fatalf("rotator %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d rotators rotated, want exactly 1", won)
	}
	f.checkConverged(old, 1)
}

func testGrace(t *testing.T, h Harness) {
	f := newFixture(t, h)
	f.clock = NewClock(time.Now())
	old := f.seed()
	ctx := context.Background()
	grace := func(k *rotation.Key, _ *rotation.Options) { k.Grace = time.Hour }
	r := f.rotator("a", grace)
	res, err := r.Run(ctx, "k", force)
	f.checkErr("run", err, 0)
	if res.Outcome != rotation.OutcomeRotated || res.RevokeDue.IsZero() {
		t.Fatalf("first run: %q due %v", res.Outcome, res.RevokeDue)
	}
	if !f.ledger.Valid(old.Key) {
		t.Fatal("old key revoked before the grace ended")
	}
	cur, _ := f.read(driver.Current)
	if cur.Key.Equal(old.Key) {
		t.Fatal("not promoted")
	}
	// A CronJob run before the grace is over: exit 0, says when.
	f.clock.Advance(30 * time.Minute)
	res, err = f.rotator("b", grace).Run(ctx, "k", rotation.RunOptions{})
	f.checkErr("run in grace", err, 0)
	if res.Outcome != rotation.OutcomeWaiting || !strings.Contains(res.Message, "due at") || !f.ledger.Valid(old.Key) {
		t.Fatalf("run in grace: %q %s", res.Outcome, res.Message)
	}
	// A forced run does not start a rotation over one in grace.
	if _, err := f.rotator("b", grace).Run(ctx, "k", force); err != nil || f.ledger.Minted() != 1 {
		t.Fatalf("forced run in grace: %v, minted %d", err, f.ledger.Minted())
	}
	// Raising the grace in the config pushes the revocation back.
	res, _ = f.rotator("b", func(k *rotation.Key, _ *rotation.Options) { k.Grace = 2 * time.Hour }).Run(ctx, "k", rotation.RunOptions{})
	if res.Outcome != rotation.OutcomeWaiting {
		t.Fatalf("with a longer grace: %q", res.Outcome)
	}
	f.clock.Advance(31 * time.Minute)
	res, err = f.rotator("b", grace).Run(ctx, "k", rotation.RunOptions{})
	f.checkErr("run after grace", err, 0)
	if res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("after grace: %q %s", res.Outcome, res.Message)
	}
	f.checkConverged(old, 1)
}

func testGraceWait(t *testing.T, h Harness) {
	f := newFixture(t, h)
	old := f.seed()
	r := f.rotator("a", func(k *rotation.Key, _ *rotation.Options) { k.Grace = 100 * time.Millisecond })
	res, err := r.Run(context.Background(), "k", rotation.RunOptions{Force: true, Wait: true})
	f.checkErr("run", err, 0)
	if res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("outcome %q", res.Outcome)
	}
	f.checkConverged(old, 1)
}

func testDryRun(t *testing.T, h Harness) {
	f := newFixture(t, h)
	f.clock = NewClock(time.Now())
	old := f.seed()
	ctx := context.Background()
	snapshot := func() string {
		r, err := f.st.ReadRecord(ctx, f.name)
		if err != nil {
			t.Fatal(err)
		}
		_, c := f.read(driver.Current)
		_, p := f.read(driver.Pending)
		pid := ""
		if p != nil {
			pid = p.ID
		}
		return fmt.Sprintf("rec=%s cur=%s pend=%s minted=%d", r.Rev, c.ID, pid, f.ledger.Minted())
	}
	grace := func(k *rotation.Key, _ *rotation.Options) { k.Grace = time.Hour }
	for i, phase := range []string{"idle", "grace"} {
		before := snapshot()
		res, err := f.rotator("a", grace).Run(ctx, "k", rotation.RunOptions{DryRun: true, Force: true})
		f.checkErr("dry run", err, 0)
		if after := snapshot(); after != before {
			t.Fatalf("dry run in %s changed the store: %s -> %s", phase, before, after)
		}
		if len(res.Plan) == 0 || !strings.Contains(res.Message, "would") {
			t.Fatalf("dry run in %s: no plan: %+v", phase, res)
		}
		t.Logf("dry run in %s: %s", phase, res.Message)
		if i == 0 {
			if _, err := f.rotator("a", grace).Run(ctx, "k", force); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !f.ledger.Valid(old.Key) || f.ledger.Minted() != 1 {
		t.Fatal("dry runs called the issuer")
	}
}

func testLeaseExpiry(t *testing.T, h Harness) {
	f := newFixture(t, h)
	f.clock = NewClock(time.Now())
	old := f.seed()
	ctx := context.Background()
	lease := func(k *rotation.Key, o *rotation.Options) { o.Lease = time.Minute }
	_, err := f.rotator("dead", func(k *rotation.Key, o *rotation.Options) {
		lease(k, o)
		o.AfterStep = crashAt(rotation.AfterRecordProbing)
	}).Run(ctx, "k", force)
	if !errors.Is(err, errKilled) {
		t.Fatal(err)
	}
	other := f.rotator("other", lease)
	_, err = other.Run(ctx, "k", rotation.RunOptions{})
	f.checkErr("run under a live lease", err, rotation.ExitConflict)
	if !errors.Is(err, rotation.ErrInProgress) || !strings.Contains(err.Error(), "dead") {
		t.Fatalf("want in progress, held by dead: %v", err)
	}
	f.clock.Advance(2 * time.Minute)
	res, err := other.Run(ctx, "k", rotation.RunOptions{})
	f.checkErr("run after the lease expired", err, 0)
	if res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("outcome %q", res.Outcome)
	}
	f.checkConverged(old, 1)
}

// testStrayPending: a PENDING version that no recorded rotation wrote, with
// a rotation-style token (another tool, a lost record), stops a run with a
// hint to --abandon, which discards it without revoking its key.
func testStrayPending(t *testing.T, h Harness) {
	f := newFixture(t, h)
	old := f.seed()
	ctx := context.Background()
	stray := f.ledger.Seed()
	if _, err := f.st.PutPending(ctx, f.name, providertest.Token(), []byte(stray.Key.Reveal())); err != nil {
		t.Fatal(err)
	}
	r := f.rotator("a", nil)
	_, err := r.Run(ctx, "k", force)
	f.checkErr("run over a stray PENDING", err, rotation.ExitConflict)
	if !strings.Contains(err.Error(), "--abandon") {
		t.Fatalf("no hint: %v", err)
	}
	res, err := r.Run(ctx, "k", rotation.RunOptions{Abandon: true})
	f.checkErr("abandon", err, 0)
	if p, _ := f.read(driver.Pending); p != nil || res.Outcome != rotation.OutcomeDiscarded {
		t.Fatal("stray PENDING not discarded")
	}
	if !f.ledger.Valid(stray.Key) {
		t.Fatal("abandoning a stray PENDING revoked its key at the issuer")
	}
	if _, err := r.Run(ctx, "k", force); err != nil {
		t.Fatal(err)
	}
	f.checkConverged(old, 1)
}

// testInterruptedPut: the PENDING version of a one-shot write (`put`, a pool
// update) that died before its Promote is discarded by the next run, which
// rotates; the interrupted write's key is not revoked.
func testInterruptedPut(t *testing.T, h Harness) {
	f := newFixture(t, h)
	old := f.seed()
	ctx := context.Background()
	stray := f.ledger.Seed()
	if _, err := f.st.PutPending(ctx, f.name, stage.OneShotToken(), []byte(stray.Key.Reveal())); err != nil {
		t.Fatal(err)
	}
	res, err := f.rotator("a", nil).Run(ctx, "k", force)
	f.checkErr("run over an interrupted put", err, 0)
	if res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("outcome %q: %s", res.Outcome, res.Message)
	}
	if !f.ledger.Valid(stray.Key) {
		t.Fatal("the interrupted put's key was revoked at the issuer")
	}
	f.checkConverged(old, 1)
}

func testPoolEmpty(t *testing.T, h Harness) {
	f := newFixture(t, h)
	old := f.seed()
	f.ledger.LimitPool(0)
	ctx := context.Background()
	r := f.rotator("a", nil)
	_, err := r.Run(ctx, "k", force)
	f.checkErr("run on an empty pool", err, rotation.ExitPoolEmpty)
	if !errors.Is(err, rotation.ErrPoolEmpty) {
		t.Fatalf("not ErrPoolEmpty: %v", err)
	}
	if cur, _ := f.read(driver.Current); !cur.Key.Equal(old.Key) {
		t.Fatal("CURRENT touched")
	}
	if ev := f.events.types(); !slices.Contains(ev, rotation.EventPoolLow) || !slices.Contains(ev, rotation.EventFailed) {
		t.Fatalf("events %v", ev)
	}
	f.ledger.LimitPool(1)
	if _, err := r.Run(ctx, "k", rotation.RunOptions{}); err != nil {
		t.Fatalf("after refilling the pool: %v", err)
	}
	f.checkConverged(old, 1)
}

func testIssuerErrors(t *testing.T, h Harness) {
	for _, op := range []string{"create", "activate", "revoke"} {
		t.Run(op, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, h)
			old := f.seed()
			ctx := context.Background()
			var mu sync.Mutex
			down := true
			f.ledger.Fail = func(got string) error {
				mu.Lock()
				defer mu.Unlock()
				if got == op && down {
					return errors.New("ledger: 503 service unavailable")
				}
				return nil
			}
			r := f.rotator("a", nil)
			_, err := r.Run(ctx, "k", force)
			f.checkErr("run with a failing issuer", err, rotation.ExitIssuer)
			f.checkInvariants("after the issuer failed")
			if rec := f.record(); rec["holder"] != "" || rec["last_outcome"] != "issuer_error" {
				t.Fatalf("lease kept or outcome not recorded: %v", rec)
			}
			mu.Lock()
			down = false
			mu.Unlock()
			if _, err := r.Run(ctx, "k", rotation.RunOptions{}); err != nil {
				t.Fatalf("after the issuer recovered: %v", err)
			}
			f.checkConverged(old, 1)
		})
	}
}

func testRevokeRefusesCurrent(t *testing.T, h Harness) {
	f := newFixture(t, h)
	f.clock = NewClock(time.Now())
	old := f.seed()
	ctx := context.Background()
	grace := func(k *rotation.Key, _ *rotation.Options) { k.Grace = time.Minute }
	if _, err := f.rotator("a", grace).Run(ctx, "k", force); err != nil {
		t.Fatal(err)
	}
	// An operator rolls back: the old key is CURRENT again.
	_, cv := f.read(driver.Current)
	v, err := f.st.PutPending(ctx, f.name, "put-rollback", []byte(old.Key.Reveal()))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.Promote(ctx, f.name, v.ID, cv.ID); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Minute)
	// The rotation ends as rolled back: nothing is revoked (the old key is
	// in use; the new one, now PREVIOUS, is the consumers' fallback), the
	// record is idle, and later runs go on as usual.
	res, err := f.rotator("a", grace).Run(ctx, "k", rotation.RunOptions{})
	f.checkErr("revoke after a rollback", err, 0)
	if res.Outcome != rotation.OutcomeRolledBack {
		t.Fatalf("outcome %q, want %q", res.Outcome, rotation.OutcomeRolledBack)
	}
	if !f.ledger.Valid(old.Key) {
		t.Fatal("revoked the key that is CURRENT")
	}
	if prev, _ := f.read(driver.Previous); prev == nil || !f.ledger.Valid(prev.Key) {
		t.Fatal("revoked the rotated key, the consumers' fallback")
	}
	if rec := f.record(); rec["phase"] != "idle" || rec["last_outcome"] != rotation.OutcomeRolledBack {
		t.Fatalf("record %q/%q", rec["phase"], rec["last_outcome"])
	}
	f.checkInvariants("after the rollback")
}

// failingStager fails record writes while down.
type failingStager struct {
	driver.Stager
	mu   sync.Mutex
	down bool
}

func (s *failingStager) WriteRecord(ctx context.Context, name, rev string, data map[string]string) (*driver.Record, error) {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		return nil, codes.Errorf(codes.Unavailable, "test: store unavailable")
	}
	return s.Stager.WriteRecord(ctx, name, rev, data)
}

func testStoreErrors(t *testing.T, h Harness) {
	f := newFixture(t, h)
	old := f.seed()
	ctx := context.Background()
	fs := &failingStager{Stager: f.st}
	r := f.rotator("a", func(k *rotation.Key, o *rotation.Options) {
		k.Store = fs
		o.AfterStep = func(_ context.Context, _ string, b rotation.Boundary) error {
			if b == rotation.AfterProbe {
				fs.mu.Lock()
				fs.down = true
				fs.mu.Unlock()
			}
			return nil
		}
	})
	_, err := r.Run(ctx, "k", force)
	f.checkErr("run with a failing store", err, rotation.ExitStore)
	f.checkInvariants("after the store failed")
	if cur, _ := f.read(driver.Current); !cur.Key.Equal(old.Key) {
		t.Fatal("promoted although the record could not be written")
	}
	fs.mu.Lock()
	fs.down = false
	fs.mu.Unlock()
	// The lease could not be released (the store was down): same holder
	// resumes at once.
	if _, err := f.rotator("a", func(k *rotation.Key, _ *rotation.Options) { k.Store = fs }).Run(ctx, "k", rotation.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	f.checkConverged(old, 1)
}

// credOf returns the ledger's credential for value v.
func (l *Ledger) credOf(v providers.Secret) rotation.Credential {
	if k := l.ByValue(v); k != nil {
		return rotation.Credential{Key: k.Value, KeyID: k.ID}
	}
	return rotation.Credential{}
}
