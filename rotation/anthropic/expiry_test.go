package anthropic_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/rotation"
	claude "github.com/keywarden/keywarden/rotation/anthropic"
)

// Archived, expired and soon-expiring pool keys are skipped (dropped from
// the pool and logged); the first usable one is drawn.
func TestPoolSkipsUnusableKeys(t *testing.T) {
	ctx := context.Background()
	e := setup(t, true)
	ks := e.addPool(4, true) // archived, expired, expiring in 1h, fine
	if err := e.api.SetStatus(ks[0].ID, anthropictest.StatusArchived); err != nil {
		t.Fatal(err)
	}
	if err := e.api.ExpireAt(ks[1].ID, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := e.api.ExpireAt(ks[2].ID, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := e.api.ExpireAt(ks[3].ID, time.Now().Add(90*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	iss := e.issuer(func(o *claude.IssuerOptions) { o.MinValidity = 24 * time.Hour; o.Logger = e.log })
	c, err := iss.Create(ctx, "tok-1")
	if err != nil {
		t.Fatal(e.saw(err))
	}
	if c.KeyID != ks[3].ID {
		t.Fatalf("drew %s, want the usable %s", c.KeyID, ks[3].ID)
	}
	// Resuming the rotation gets the same key, with no more skips.
	again, err := iss.Create(ctx, "tok-1")
	if err != nil || again.KeyID != ks[3].ID {
		t.Fatalf("resumed Create: %s, %v", again.KeyID, err)
	}
	if n, _ := iss.Available(ctx); n != 0 {
		t.Fatalf("%d pool keys left, want 0 (3 dropped, 1 claimed)", n)
	}
	logs := e.logs.String()
	for i, want := range []string{"is archived", "is expired", "within 24h0m0s"} {
		if !strings.Contains(logs, "key_id="+ks[i].ID) || !strings.Contains(logs, want) {
			t.Errorf("the log does not report %s as %q:\n%s", ks[i].ID, want, logs)
		}
	}
}

// CURRENT expiring within rotate_before_expiry makes a rotation due though
// the schedule does not; the expiry is exported.
func TestRotateBeforeExpiry(t *testing.T) {
	week, err := rotation.ParseSchedule("@weekly")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		expires time.Duration // from now; 0: never
		window  time.Duration
		want    string
	}{
		{"expires within the window", 2 * time.Hour, 24 * time.Hour, rotation.OutcomeRevoked},
		{"expires after the window", 48 * time.Hour, 24 * time.Hour, rotation.OutcomeNothing},
		{"never expires", 0, 24 * time.Hour, rotation.OutcomeNothing},
		{"no window", 2 * time.Hour, 0, rotation.OutcomeNothing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, true)
			e.addPool(1, true)
			if tc.expires != 0 {
				if err := e.api.ExpireAt(e.first.ID, time.Now().Add(tc.expires)); err != nil {
					t.Fatal(err)
				}
			}
			reg := prometheus.NewRegistry()
			m := rotation.NewMetrics(reg)
			r, err := rotation.New(rotation.Options{Logger: e.log, Metrics: m}, &rotation.Key{
				Name: "claude", Store: e.st, Secret: secretName, Issuer: e.issuer(nil), Probe: e.probe(),
				Schedule: week, RotateBeforeExpiry: tc.window,
				Retry: rotation.Retry{MinBackoff: time.Millisecond, MaxBackoff: time.Second},
			})
			if err != nil {
				t.Fatal(err)
			}
			res, err := r.Run(context.Background(), "claude", rotation.RunOptions{Wait: true})
			if err != nil || res.Outcome != tc.want {
				t.Fatalf("outcome %s (%v), want %s", res.Outcome, err, tc.want)
			}
			if tc.window == 0 {
				return
			}
			got := gauge(t, reg, "keywarden_key_expiry_timestamp_seconds")
			want := 0.0
			if tc.expires != 0 {
				k, _ := e.api.Key(e.first.ID)
				want = float64(k.ExpiresAt.Unix())
			}
			if int64(got) != int64(want) {
				t.Fatalf("keywarden_key_expiry_timestamp_seconds %v, want %v", got, want)
			}
		})
	}
}

// gauge returns the value of the one series of the gauge name in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no single series of %s", name)
	return 0
}

// The daemon rotates a key whose CURRENT expires within the window at once,
// though its schedule is a week away.
func TestServeRotatesBeforeExpiry(t *testing.T) {
	week, err := rotation.ParseSchedule("@weekly")
	if err != nil {
		t.Fatal(err)
	}
	e := setup(t, true)
	e.addPool(1, true)
	if err := e.api.ExpireAt(e.first.ID, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r, err := rotation.New(rotation.Options{Logger: e.log}, &rotation.Key{
		Name: "claude", Store: e.st, Secret: secretName, Issuer: e.issuer(nil), Probe: e.probe(),
		Schedule: week, RotateBeforeExpiry: 24 * time.Hour,
		Retry: rotation.Retry{MinBackoff: time.Millisecond, MaxBackoff: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := make(chan string, 4)
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		_ = r.Serve(ctx, rotation.ServeOptions{OnResult: func(res *rotation.Result, err error) {
			got <- res.Outcome
			cancel()
		}})
	}()
	select {
	case out := <-got:
		if out != rotation.OutcomeRevoked {
			t.Fatalf("the daemon's first run: %s, want %s", out, rotation.OutcomeRevoked)
		}
	case <-ctx.Done():
		t.Fatal("the daemon did not rotate the expiring key within a minute")
	}
	if e.current().KeyID == e.first.ID {
		t.Fatal("CURRENT is still the expiring key")
	}
}
