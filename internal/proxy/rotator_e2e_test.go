package proxy_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/telemetry"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/anthropic"
	"github.com/keywarden/keywarden/rotation/pool"
)

// TestRotatorUnderLoad is the whole system at work: the real Rotator with
// the Anthropic issuer (a pool of Console-created keys, activated and
// deactivated through the fake's Admin API) and the Anthropic probe runs 20
// complete rotations — create, PENDING, activate, probe, promote, grace,
// revoke — on the real file store, while clients stream and send Messages
// requests through the sidecar, whose Source refreshes in the background.
// No request fails; at the end only the last pool key is active.
func TestRotatorUnderLoad(t *testing.T) {
	const (
		rotations = 20
		refresh   = 20 * time.Millisecond
		jitter    = 5 * time.Millisecond
	)
	ctx := context.Background()
	up := newUpstream(t, keyA)
	e := newEnvWith(t, up, providers.Options{Refresh: refresh, Jitter: jitter}, nil)
	providers.MinForcedGap = refresh // scaled down with the intervals; restored by newEnv

	// The Admin key and the pool of inactive Console keys, in the same store.
	if err := e.store.st.PutByHand(ctx, "admin", []byte(up.fake.AdminKey())); err != nil {
		t.Fatal(err)
	}
	p := pool.New(e.store.st, "pool")
	var last string
	for i := 0; i < rotations; i++ {
		k := up.fake.AddKey("", anthropictest.StatusInactive)
		if _, err := p.Add(ctx, providers.NewSecret(k.Value), k.ID); err != nil {
			t.Fatal(err)
		}
		last = k.Value
	}
	iss, err := anthropic.NewIssuer(anthropic.IssuerOptions{
		BaseURL: up.URL(), AdminKey: anthropic.KeyFromStore(e.store.st, "admin", ""), Pool: p, Backoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	r, err := rotation.New(rotation.Options{Logger: telemetry.NewLogger(slog.NewTextHandler(&logs, nil))}, &rotation.Key{
		Name: "prod", Store: e.store.st, Secret: "prod", Issuer: iss,
		Probe: anthropic.NewProbe(anthropic.ProbeOptions{BaseURL: up.URL(), Model: "claude-sonnet-4-5"}),
		// refresh + jitter with room for a loaded machine's scheduling
		// delays: a store read that began before a promotion must end
		// before the revocation.
		Grace: 250 * time.Millisecond,
		Retry: rotation.Retry{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}

	l := startLoad(e)
	for i := 0; i < rotations; i++ {
		res, err := r.Run(ctx, "prod", rotation.RunOptions{Force: true, Wait: true})
		if err != nil {
			l.stop(t)
			t.Fatalf("rotation %d: %v (%+v)", i+1, err, res)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ok, failed := l.stop(t)
	t.Logf("%d requests succeeded across %d rotations by the Rotator; %d failed; the fake saw %d requests with a revoked key",
		ok, rotations, failed, up.fake.Stats().Rejected())
	if failed != 0 {
		t.Fatalf("%d requests failed", failed)
	}
	if ok < 4*rotations {
		t.Fatalf("only %d requests ran: not a load", ok)
	}
	if got := e.src.Current().Value.Reveal(); got != last {
		t.Fatalf("the Source holds %s, not the last pool key %s", providers.Fingerprint(got), providers.Fingerprint(last))
	}
	// Every old key, the first one included, was deactivated.
	if n := up.Valid(); n != 1 {
		t.Fatalf("%d keys active at the API, want 1 (the last)", n)
	}
	if n, err := p.Available(ctx); err != nil || n != 0 {
		t.Fatalf("pool: %d keys left (%v), want 0", n, err)
	}
	m := e.scrape(t)
	for _, k := range up.fake.Keys() {
		secret := k.Value[len("sk-ant-api03-"):]
		if strings.Contains(e.logs.String(), secret) || strings.Contains(logs.String(), secret) || strings.Contains(m, secret) {
			t.Fatal("a log line or metric holds a key")
		}
	}
}
