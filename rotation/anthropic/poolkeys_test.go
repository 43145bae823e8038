package anthropic_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/rotation"
	claude "github.com/keywarden/keywarden/rotation/anthropic"
)

// Each key waiting in the pool has its expiry exported (by fingerprint,
// never a value) on every run, also when nothing is due; keywarden_pool_keys
// counts only the keys a draw can use; the series of keys that left the
// pool disappear.
func TestPoolKeyExpiryMetrics(t *testing.T) {
	ctx := context.Background()
	week, err := rotation.ParseSchedule("@weekly")
	if err != nil {
		t.Fatal(err)
	}
	e := setup(t, true)
	ks := e.addPool(4, true) // archived, expires in 30 days, expires in 1h, never
	if err := e.api.SetStatus(ks[0].ID, anthropictest.StatusArchived); err != nil {
		t.Fatal(err)
	}
	month := time.Now().Add(30 * 24 * time.Hour)
	if err := e.api.ExpireAt(ks[1].ID, month); err != nil {
		t.Fatal(err)
	}
	if err := e.api.ExpireAt(ks[2].ID, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	noID := e.api.AddKey("", anthropictest.StatusInactive) // added without --key-id: found by hint
	twoMonths := time.Now().Add(60 * 24 * time.Hour)
	if err := e.api.ExpireAt(noID.ID, twoMonths); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Add(ctx, providers.NewSecret(noID.Value), ""); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	r, err := rotation.New(rotation.Options{Logger: e.log, Metrics: rotation.NewMetrics(reg)}, &rotation.Key{
		Name: "claude", Store: e.st, Secret: secretName, Probe: e.probe(), Schedule: week,
		Issuer: e.issuer(func(o *claude.IssuerOptions) { o.MinValidity = 24 * time.Hour; o.Logger = e.log }),
		Retry:  rotation.Retry{MinBackoff: time.Millisecond, MaxBackoff: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	fp := func(k anthropictest.Key) string { return providers.NewSecret(k.Value).Fingerprint() }
	unix := func(t time.Time) float64 { return float64(t.Unix()) }

	res, err := r.Run(ctx, "claude", rotation.RunOptions{})
	if err != nil || res.Outcome != rotation.OutcomeNothing {
		t.Fatalf("run: %s %v", res.Outcome, err)
	}
	checkPoolSeries(t, reg, 3, map[string]float64{ // ks[0] archived, ks[2] within MinValidity
		fp(ks[0]) + " false": 0, fp(ks[1]) + " true": unix(month), fp(ks[2]) + " false": unix(time.Now().Add(time.Hour)),
		fp(ks[3]) + " true": 0, fp(noID) + " true": unix(twoMonths),
	})
	st, err := r.Status(ctx, "claude")
	if err != nil || st.PoolKeys != 3 || len(st.Pool) != 5 || !strings.Contains(st.Pool[0].Unusable, "archived") || st.Pool[4].KeyID != noID.ID {
		t.Fatalf("status: %v pool_keys %d %+v", err, st.PoolKeys, st)
	}

	dry, err := r.Run(ctx, "claude", rotation.RunOptions{Force: true, DryRun: true})
	if err != nil || !strings.Contains(strings.Join(dry.Plan, "\n"), "pool: 3 usable keys left; 2 unusable") {
		t.Fatalf("dry run: %v\n%s", err, strings.Join(dry.Plan, "\n"))
	}

	// A rotation drops the archived key and draws ks[1]: their series go.
	res, err = e.run(r)
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("rotation: %s %v", res.Outcome, err)
	}
	checkPoolSeries(t, reg, 2, map[string]float64{
		fp(ks[2]) + " false": unix(time.Now().Add(time.Hour)), fp(ks[3]) + " true": 0, fp(noID) + " true": unix(twoMonths),
	})
	for _, k := range append(ks, noID) {
		if strings.Contains(e.logs.String(), k.Value) {
			t.Fatal("a key value was logged")
		}
	}
}

// checkPoolSeries checks keywarden_pool_keys and the series of
// keywarden_pool_key_expiry_timestamp_seconds ("fingerprint usable" ->
// value, to the minute).
func checkPoolSeries(t *testing.T, reg *prometheus.Registry, usable float64, want map[string]float64) {
	t.Helper()
	if n := gauge(t, reg, "keywarden_pool_keys"); n != usable {
		t.Errorf("keywarden_pool_keys %v, want %v", n, usable)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "keywarden_pool_key_expiry_timestamp_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["key"] != "claude" {
				t.Errorf("series of key %q", l["key"])
			}
			got[l["fingerprint"]+" "+l["usable"]] = m.GetGauge().GetValue()
		}
	}
	if len(got) != len(want) {
		t.Errorf("series %v, want %v", got, want)
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok || (g-w) > 60 || (w-g) > 60 {
			t.Errorf("series %s: %v (present %v), want %v", k, g, ok, w)
		}
	}
}
