package pushgw_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keywarden/keywarden/rotation/promgate/promtest"
	"github.com/keywarden/keywarden/rotation/pushgw"
)

// state is a registry with a gauge per name for keys a and b, and a
// counter.
func state(names ...string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	for _, n := range names {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: n}, []string{"key"})
		g.WithLabelValues("a").Set(1)
		g.WithLabelValues("b").Set(2)
		reg.MustRegister(g)
	}
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "runs_total"}, []string{"key"})
	c.WithLabelValues("a").Inc()
	reg.MustRegister(c)
	return reg
}

// Against a real Pushgateway: a key's group holds its gauges only (no
// other key's series, no counter); a complete push replaces the group, so
// a gauge no longer pushed goes; a partial one keeps it.
func TestPush(t *testing.T) {
	pg := promtest.StartPushgateway(t)
	o := pushgw.Options{URL: pg.URL, Labels: map[string]string{"namespace": "llm"}}
	ctx := context.Background()
	group := map[string]string{"job": pushgw.Job, pushgw.GroupLabel: "a", "namespace": "llm", "key": "a"}
	has := func(name string) bool {
		t.Helper()
		samples, _ := pg.Samples(t)
		return len(promtest.Find(samples, name, group)) == 1
	}
	if err := pushgw.Push(ctx, o, state("g1", "g2"), "a", true); err != nil {
		t.Fatal(err)
	}
	samples, _ := pg.Samples(t)
	if !has("g1") || !has("g2") || len(promtest.Find(samples, "g1", map[string]string{"key": "b"})) != 0 || len(promtest.Find(samples, "runs_total", nil)) != 0 {
		t.Fatalf("after the first push: %v", samples)
	}
	if err := pushgw.Push(ctx, o, state("g1"), "a", false); err != nil {
		t.Fatal(err)
	}
	if !has("g1") || !has("g2") {
		t.Fatal("a partial push dropped a gauge it did not push")
	}
	if err := pushgw.Push(ctx, o, state("g1"), "a", true); err != nil {
		t.Fatal(err)
	}
	if !has("g1") || has("g2") {
		t.Fatal("a complete push kept a gauge it did not push")
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		o  pushgw.Options
		ok bool
	}{
		{pushgw.Options{}, true},
		{pushgw.Options{URL: "https://pg.example:9091", Labels: map[string]string{"namespace": "llm", "instance": "x"}}, true},
		{pushgw.Options{Labels: map[string]string{"namespace": "llm"}}, false},
		{pushgw.Options{URL: "pg:9091"}, false},
		{pushgw.Options{URL: "http://pg:9091", Labels: map[string]string{"rotation": "x"}}, false},
		{pushgw.Options{URL: "http://pg:9091", Labels: map[string]string{"__name__": "x"}}, false},
		{pushgw.Options{URL: "http://pg:9091", Labels: map[string]string{"namespace": ""}}, false},
		{pushgw.Options{URL: "http://pg:9091", Timeout: -1}, false},
	} {
		if err := tc.o.Check(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v, want ok=%v", tc.o, err, tc.ok)
		}
	}
}
