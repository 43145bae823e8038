package rotation_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// seeded returns a file store whose secret "k" holds a fresh ledger key.
func seeded(t *testing.T, l *rotationtest.Ledger) (*file.Store, rotation.Credential) {
	t.Helper()
	st := file.New(filepath.Join(t.TempDir(), "keys.json"))
	c := l.Seed()
	if err := st.PutByHand(context.Background(), "k", providers.EncodePayload(providers.Payload{Key: c.Key, KeyID: c.KeyID})); err != nil {
		t.Fatal(err)
	}
	return st, c
}

func TestWebhook(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			w.WriteHeader(http.StatusBadGateway) // the first delivery is retried
			return
		}
		if r.Header.Get("Content-Type") != "application/json" || r.Method != http.MethodPost {
			t.Errorf("got %s %s", r.Method, r.Header.Get("Content-Type"))
		}
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
	}))
	defer srv.Close()
	l := rotationtest.NewLedger()
	st, old := seeded(t, l)
	r, err := rotation.New(rotation.Options{Notifiers: []rotation.Notifier{&rotation.Webhook{URL: srv.URL + "/hook/secret-token"}}},
		&rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(context.Background(), "k", rotation.RunOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 {
		t.Fatalf("%d events delivered (%d calls), want 2", len(bodies), calls)
	}
	var ev rotation.Event
	if err := json.Unmarshal([]byte(bodies[1]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != rotation.EventRevoked || ev.Key != "k" || ev.OldKeyID != old.KeyID || ev.NewFingerprint == "" || ev.OldFingerprint != old.Key.Fingerprint() {
		t.Fatalf("event %+v", ev)
	}
	for _, k := range l.Keys() {
		for _, b := range bodies {
			if strings.Contains(b, k.Value.Reveal()) {
				t.Fatal("an event holds a key value")
			}
		}
	}
	// A failing webhook reports its host, never its path (tokens live there).
	err = (&rotation.Webhook{URL: "http://127.0.0.1:1/hook/secret-token"}).Notify(context.Background(), ev)
	if err == nil || strings.Contains(err.Error(), "secret-token") {
		t.Fatalf("unreachable webhook: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := rotation.NewMetrics(reg)
	l := rotationtest.NewLedger()
	l.LimitPool(2)
	st, _ := seeded(t, l)
	r, err := rotation.New(rotation.Options{Metrics: m}, &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 3 {
		_, _ = r.Run(ctx, "k", rotation.RunOptions{Force: true})
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			name := mf.GetName()
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "outcome" || lp.GetName() == "result" {
					name += "/" + lp.GetValue()
				}
			}
			switch {
			case mt.Counter != nil:
				got[name] = mt.Counter.GetValue()
			case mt.Gauge != nil:
				got[name] = mt.Gauge.GetValue()
			case mt.Histogram != nil:
				got[name] = float64(mt.Histogram.GetSampleCount())
			}
		}
	}
	for name, want := range map[string]float64{
		"keywarden_rotation_runs_total/revoked":           2,
		"keywarden_rotation_runs_total/pool_empty":        1,
		"keywarden_rotation_duration_seconds":             3,
		"keywarden_pool_keys":                             0,
		"keywarden_rotation_probe_attempts_total/pass":    2,
		"keywarden_rotation_revoke_due_timestamp_seconds": 0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if got["keywarden_rotation_last_success_timestamp_seconds"] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Error("last success not set")
	}
}

// every is a Schedule firing every d, for daemon tests that cannot wait
// for cron's minute.
type every time.Duration

func (e every) Next(t time.Time) time.Time { return t.Add(time.Duration(e)) }

// TestServe runs two daemons on one key (two processes, one store): they
// rotate on schedule, revoke when grace ends, never both at once, and
// stop gracefully.
func TestServe(t *testing.T) {
	l := rotationtest.NewLedger()
	st, first := seeded(t, l)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	revoked := 0
	inflight, overlap := 0, false
	done := make(chan struct{})
	var daemons sync.WaitGroup
	for _, holder := range []string{"a", "b"} {
		r, err := rotation.New(rotation.Options{Holder: holder, AfterStep: func(_ context.Context, _ string, b rotation.Boundary) error {
			mu.Lock()
			defer mu.Unlock()
			switch b {
			case rotation.AfterLease, rotation.AfterRecordRevoking:
				inflight++
				overlap = overlap || inflight > 1
			case rotation.AfterRecordGrace, rotation.AfterDone:
				inflight--
			}
			return nil
		}}, &rotation.Key{
			Name: "k", Store: st, Secret: "k", Issuer: l, Probe: l.Probe(nil),
			Grace: 30 * time.Millisecond, Schedule: every(50 * time.Millisecond), StartJitter: 10 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		daemons.Add(1)
		go func() {
			defer daemons.Done()
			err := r.Serve(ctx, rotation.ServeOptions{MinRetry: 10 * time.Millisecond, MaxRetry: 50 * time.Millisecond,
				OnResult: func(res *rotation.Result, err error) {
					mu.Lock()
					defer mu.Unlock()
					if err == nil && res.Outcome == rotation.OutcomeRevoked {
						revoked++
						if revoked == 4 {
							close(done)
						}
					}
				}})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the daemons did not complete 4 rotations")
	}
	cancel()
	daemons.Wait()
	mu.Lock()
	defer mu.Unlock()
	if overlap {
		t.Fatal("two runs of one key were under way at once")
	}
	if !l.Key(first.KeyID).Revoked {
		t.Fatal("the first key was not revoked")
	}
	cur, err := st.Read(context.Background(), "k", driver.Current)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := providers.DecodePayload(cur.Value, "")
	if !l.Valid(p.Key) {
		t.Fatal("CURRENT is not a valid key")
	}
	for _, k := range l.Keys() {
		if k.RevokeCalls > 1 {
			t.Fatalf("key %s revoked %d times", k.ID, k.RevokeCalls)
		}
		if k.Revoked && k.Value.Equal(p.Key) {
			t.Fatal("CURRENT was revoked")
		}
	}
}
