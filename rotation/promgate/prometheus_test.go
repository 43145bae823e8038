package promgate_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/promgate"
	"github.com/keywarden/keywarden/rotation/promgate/promtest"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

var quiet = slog.New(slog.DiscardHandler)

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

func (r *recorder) types() []rotation.EventType {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []rotation.EventType
	for _, e := range r.events {
		out = append(out, e.Type)
	}
	return out
}

func has(list []rotation.EventType, t rotation.EventType) bool {
	for _, v := range list {
		if v == t {
			return true
		}
	}
	return false
}

// TestGateWithPrometheus rotates a key read by three real consumers that a
// real Prometheus scrapes. One consumer's store reads fail, so it keeps the
// old key: the gate holds the revocation (policy hold) until it recovers;
// a healthy rotation measures what the gate adds; with policy revoke the
// old key is revoked after max_wait, and said so.
func TestGateWithPrometheus(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.json")
	st := file.New(path)
	l := rotationtest.NewLedger()
	k0 := l.Seed()
	if err := st.PutByHand(ctx, "k", providers.EncodePayload(providers.Payload{Key: k0.Key, KeyID: k0.KeyID})); err != nil {
		t.Fatal(err)
	}
	a, b, c := promtest.NewConsumer(t, file.New(path), "k", "k", "a"), promtest.NewConsumer(t, file.New(path), "k", "k", "b"), promtest.NewConsumer(t, file.New(path), "k", "k", "c")
	prom := promtest.Start(t, time.Second, a.Target(), b.Target(), c.Target())
	client, err := promgate.New(promgate.Options{URL: prom.URL})
	if err != nil {
		t.Fatal(err)
	}
	promtest.Eventually(t, "Prometheus reports the three consumers", func() bool {
		hs, err := client.Holders(ctx, "k", k0.Key.Fingerprint())
		return err == nil && len(hs) == 3
	})

	rec := &recorder{}
	const checks, interval, maxWait = 2, time.Second, 4 * time.Second
	rotator := func(policy rotation.GatePolicy) *rotation.Rotator {
		r, err := rotation.New(rotation.Options{Logger: quiet, Notifiers: []rotation.Notifier{rec}},
			&rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil), Grace: time.Second,
				RevokeGate: &rotation.RevokeGate{Consumers: client, Checks: checks, Interval: interval, MaxWait: maxWait, Policy: policy}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	healthyHold := func(fp string) {
		t.Helper()
		promtest.Eventually(t, "the healthy consumers hold the new key", func() bool {
			return a.Fingerprint() == fp && b.Fingerprint() == fp
		})
	}

	// 1. c cannot read the store: it keeps k0, and the gate holds.
	c.Fail(true)
	r := rotator(rotation.GateHold)
	res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true})
	if err != nil || res.Outcome != rotation.OutcomeRotated {
		t.Fatalf("rotate: %+v, %v", res, err)
	}
	healthyHold(res.NewFingerprint)
	res, err = r.Run(ctx, "k", rotation.RunOptions{Wait: true})
	if rotation.ExitCode(err) != rotation.ExitGateHeld || rotation.KindOf(err) != rotation.KindGateHeld {
		t.Fatalf("run past max_wait with c stuck: %+v, %v; want exit %d", res, err, rotation.ExitGateHeld)
	}
	if len(res.GateHolders) != 1 || res.GateHolders[0]["pod"] != "c" || !strings.Contains(err.Error(), "pod=c") {
		t.Fatalf("holders %v, error %v; want pod c only", res.GateHolders, err)
	}
	if !l.Valid(k0.Key) {
		t.Fatal("the gate let the old key be revoked while c held it")
	}
	if !has(rec.types(), rotation.EventGateHeld) {
		t.Fatalf("events %v: no %s", rec.types(), rotation.EventGateHeld)
	}
	st1, err := r.Status(ctx, "k")
	if err != nil || st1.Gate == nil || len(st1.Gate.Holders) != 1 || st1.Gate.Holders[0]["pod"] != "c" {
		t.Fatalf("status gate %+v, %v", st1.Gate, err)
	}
	dry, err := r.Run(ctx, "k", rotation.RunOptions{DryRun: true})
	if err != nil || !strings.Contains(dry.Message, "1 consumers still report the old key") || !strings.Contains(dry.Message, "pod=c") {
		t.Fatalf("dry run: %v, %v", dry.Message, err)
	}

	// c recovers: it reads k1, Prometheus sees k0 gone, the gate clears.
	c.Fail(false)
	promtest.Eventually(t, "Prometheus sees c let go of k0", func() bool {
		hs, err := client.Holders(ctx, "k", k0.Key.Fingerprint())
		return err == nil && len(hs) == 0
	})
	res, err = r.Run(ctx, "k", rotation.RunOptions{Wait: true})
	if err != nil || res.Outcome != rotation.OutcomeRevoked || res.Gate != "" {
		t.Fatalf("run after c recovered: %+v, %v", res, err)
	}
	if l.Valid(k0.Key) {
		t.Fatal("k0 is still valid after the gate cleared")
	}

	// 2. Everyone healthy: what does the gate add to a rotation?
	res, err = r.Run(ctx, "k", rotation.RunOptions{Force: true})
	if err != nil || res.Outcome != rotation.OutcomeRotated {
		t.Fatalf("rotate: %+v, %v", res, err)
	}
	due := time.Now().Add(time.Second)
	res, err = r.Run(ctx, "k", rotation.RunOptions{Wait: true})
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("healthy rotation: %+v, %v", res, err)
	}
	added := time.Since(due)
	t.Logf("the revoke gate added %v after the grace (checks %d, interval %v, scrape 1s)", added.Round(10*time.Millisecond), checks, interval)
	k2fp := res.NewFingerprint
	promtest.Eventually(t, "every consumer holds the newest key", func() bool {
		return a.Fingerprint() == k2fp && b.Fingerprint() == k2fp && c.Fingerprint() == k2fp
	})

	// 3. Policy revoke: c stuck again; the old key goes after max_wait.
	c.Fail(true)
	r = rotator(rotation.GateRevoke)
	res, err = r.Run(ctx, "k", rotation.RunOptions{Force: true})
	if err != nil || res.Outcome != rotation.OutcomeRotated {
		t.Fatalf("rotate: %+v, %v", res, err)
	}
	healthyHold(res.NewFingerprint)
	res, err = r.Run(ctx, "k", rotation.RunOptions{Wait: true})
	if err != nil || res.Outcome != rotation.OutcomeRevoked || res.Gate != "forced" {
		t.Fatalf("policy revoke: %+v, %v", res, err)
	}
	if !has(rec.types(), rotation.EventGateForced) {
		t.Fatalf("events %v: no %s", rec.types(), rotation.EventGateForced)
	}
	for _, h := range []*promtest.Consumer{a, b} {
		if err := h.Source.CheckHealth(); err != nil {
			t.Fatalf("healthy consumer %s: %v", h.Pod, err)
		}
	}
}
