package proxy_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/telemetry"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/httpprobe"
)

// testIssuer mints keys the test upstream accepts once activated, and
// revokes them there: an Admin API in miniature. Keys are found by id.
type testIssuer struct {
	up *upstream

	mu      sync.Mutex
	byToken map[string]rotation.Credential
	byID    map[string]string
}

func (i *testIssuer) Type() string { return "test" }

func (i *testIssuer) Create(_ context.Context, token string) (rotation.Credential, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if c, ok := i.byToken[token]; ok {
		return c, nil
	}
	n := len(i.byToken) + 1
	v := fmt.Sprintf("sk-ant-api03-E2EROTATED%03d-%s", n, strings.Repeat("k", 64))
	c := rotation.Credential{Key: providers.NewSecret(v), KeyID: fmt.Sprintf("apikey_%03d", n)}
	i.byToken[token], i.byID[c.KeyID] = c, v
	return c, nil
}

func (i *testIssuer) Activate(_ context.Context, c rotation.Credential) error {
	i.up.Add(c.Key.Reveal())
	return nil
}

func (i *testIssuer) Revoke(_ context.Context, c rotation.Credential) error {
	i.mu.Lock()
	v, ok := i.byID[c.KeyID]
	i.mu.Unlock()
	if ok {
		i.up.Remove(v)
	}
	return nil
}

// TestRotatorUnderLoad runs 20 complete rotations with the real Rotator
// (create, PENDING, activate, probe through the upstream, promote, grace,
// revoke) on the real file store, while clients stream and send Messages
// requests through the sidecar, whose Source refreshes in the background.
// No request fails, and at the end only the last key is valid upstream.
func TestRotatorUnderLoad(t *testing.T) {
	const (
		rotations = 20
		refresh   = 20 * time.Millisecond
		jitter    = 5 * time.Millisecond
	)
	up := newUpstream(t, keyA)
	e := newEnvWith(t, up, providers.Options{Refresh: refresh, Jitter: jitter}, nil)
	providers.MinForcedGap = refresh // scaled down with the intervals; restored by newEnv
	iss := &testIssuer{up: up, byToken: map[string]rotation.Credential{}, byID: map[string]string{}}
	probe, err := httpprobe.New(httpprobe.Options{URL: up.URL() + "/v1/models",
		Headers: map[string]string{"x-api-key": httpprobe.Placeholder, "anthropic-version": "2023-06-01"}})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	r, err := rotation.New(rotation.Options{Logger: telemetry.NewLogger(slog.NewTextHandler(&logs, nil))}, &rotation.Key{
		Name: "prod", Store: e.store.st, Secret: "prod", Issuer: iss, Probe: probe,
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
		res, err := r.Run(context.Background(), "prod", rotation.RunOptions{Force: true, Wait: true})
		if err != nil {
			l.stop(t)
			t.Fatalf("rotation %d: %v (%+v)", i+1, err, res)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ok, failed := l.stop(t)
	t.Logf("%d requests succeeded across %d rotations by the Rotator; %d failed", ok, rotations, failed)
	if failed != 0 {
		t.Fatalf("%d requests failed", failed)
	}
	if ok < 4*rotations {
		t.Fatalf("only %d requests ran: not a load", ok)
	}
	if got := e.src.Current().Value.Reveal(); !strings.HasPrefix(got, fmt.Sprintf("sk-ant-api03-E2EROTATED%03d-", rotations)) {
		t.Fatalf("the Source holds %s, not the last rotated key", providers.Fingerprint(got))
	}
	// keyA was never the issuer's, so it is still valid; every rotated key
	// but the last was revoked.
	if n := up.Valid(); n != 2 {
		t.Fatalf("%d keys valid upstream, want 2 (the first, never issued, and the last)", n)
	}
	m := e.scrape(t)
	for _, s := range []string{"E2EROTATED", "PROXYKEYAAAA"} {
		if strings.Contains(e.logs.String(), s) || strings.Contains(logs.String(), s) || strings.Contains(m, s) {
			t.Fatal("a log line or metric holds a key")
		}
	}
}
