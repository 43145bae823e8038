package e2e_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/proxytest"
	"github.com/keywarden/keywarden/internal/tailbuf"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/redact"
	"github.com/keywarden/keywarden/rotation"
	claude "github.com/keywarden/keywarden/rotation/anthropic"
	"github.com/keywarden/keywarden/rotation/pool"
	"github.com/keywarden/keywarden/rotation/promgate"
	"github.com/keywarden/keywarden/rotation/promgate/promtest"
)

// TestRevokeGateWithSidecars is issue 14's proof, end to end: three real
// sidecars, each with a Source of its own on one file store and its own
// /metrics (keywarden_key_info), are scraped by a real Prometheus while
// plain HTTP clients (no retries) send Messages requests through each of
// them to the fake Claude API, which rejects revoked keys. One sidecar's
// store reads fail, so it keeps serving the old key. The real rotator,
// with the Anthropic issuer and pool and a revoke gate asking Prometheus:
//
//   - policy hold: the gate holds the revocation while that sidecar reports
//     the old key (the key stays active at the API; the run past max_wait
//     ends with exit 15 naming the pod); once the sidecar's reads work
//     again and Prometheus sees it on the new key, the next run revokes.
//     Not one request fails on any sidecar, the stuck one included.
//   - policy revoke: past max_wait the old key is revoked anyway and said
//     so (gate "forced", EventGateForced); the healthy sidecars still have
//     no failed request, and the stuck one now fails, which shows what the
//     gate protected it from.
func TestRevokeGateWithSidecars(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with a real Prometheus: not under -short")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.json")
	st := file.New(path)
	const secret, adminName, poolName, keyName = "claude", "admin", "pool", "claude"

	api := anthropictest.Start(t)
	first := api.AddKey("", anthropictest.StatusActive)
	providertest.Rotate(t, st, secret, providers.EncodePayload(providers.Payload{Key: providers.NewSecret(first.Value), KeyID: first.ID}))
	providertest.Rotate(t, st, adminName, []byte(api.AdminKey()))
	p := pool.New(st, poolName)
	for range 2 {
		k := api.AddKey("", anthropictest.StatusInactive)
		if _, err := p.Add(ctx, providers.NewSecret(k.Value), k.ID); err != nil {
			t.Fatal(err)
		}
	}

	logs := &tailbuf.Buffer{}
	logger := redact.NewLogger(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pods := []string{"sidecar-a", "sidecar-b", "sidecar-stuck"}
	cars := map[string]*gateSidecar{}
	var targets []promtest.Target
	for _, pod := range pods {
		c := startGateSidecar(t, path, secret, keyName, pod, api.URL(), logger)
		cars[pod] = c
		targets = append(targets, promtest.Target{Addr: strings.TrimPrefix(c.metrics.URL, "http://"), Labels: map[string]string{"pod": pod}})
	}
	stuck := cars["sidecar-stuck"]
	healthy := []*gateSidecar{cars["sidecar-a"], cars["sidecar-b"]}

	prom := promtest.Start(t, time.Second, targets...)
	client, err := promgate.New(promgate.Options{URL: prom.URL})
	if err != nil {
		t.Fatal(err)
	}
	firstFP := providers.NewSecret(first.Value).Fingerprint()
	promtest.Eventually(t, "Prometheus reports the three sidecars on the first key", func() bool {
		hs, err := client.Holders(ctx, keyName, firstFP)
		return err == nil && len(hs) == 3
	})

	load := startHTTPLoad(pods, cars)
	t.Cleanup(func() { load.stop(t) }) // before the servers close (cleanups run last first)

	marks := &gateMarks{}
	rec := &recorder{}
	rotator := func(policy rotation.GatePolicy) *rotation.Rotator {
		t.Helper()
		r, err := rotation.New(rotation.Options{Logger: logger, Notifiers: []rotation.Notifier{rec}, AfterStep: marks.afterStep}, &rotation.Key{
			Name: keyName, Store: st, Secret: secret, Grace: time.Second,
			Issuer: mustIssuer(t, claude.IssuerOptions{
				BaseURL: api.URL(), AdminKey: claude.KeyFromStore(st, adminName, ""), Pool: p, Backoff: 10 * time.Millisecond,
			}),
			Probe:      claude.NewProbe(claude.ProbeOptions{BaseURL: api.URL(), Model: "claude-sonnet-4-5"}),
			Retry:      rotation.Retry{MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
			RevokeGate: &rotation.RevokeGate{Consumers: client, Checks: 2, Interval: time.Second, MaxWait: 3 * time.Second, Policy: policy},
		})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// rotate starts a rotation with the stuck sidecar's reads failing and
	// returns once the healthy sidecars hold the new key.
	rotate := func(r *rotation.Rotator) *rotation.Result {
		t.Helper()
		stuck.reader.Fail(codes.Errorf(codes.Unavailable, "e2e: the store is unreachable from this pod"))
		res, err := r.Run(ctx, keyName, rotation.RunOptions{Force: true})
		if err != nil || res.Outcome != rotation.OutcomeRotated {
			t.Fatalf("rotate: %+v, %v", res, err)
		}
		promtest.Eventually(t, "the healthy sidecars hold the new key", func() bool {
			return healthy[0].src.Current().Fingerprint == res.NewFingerprint && healthy[1].src.Current().Fingerprint == res.NewFingerprint
		})
		if got := stuck.src.Current().Fingerprint; got != res.OldFingerprint {
			t.Fatalf("the stuck sidecar holds %s, want the old key %s", got, res.OldFingerprint)
		}
		promtest.Eventually(t, "Prometheus sees only the stuck sidecar on the old key", func() bool {
			hs, err := client.Holders(ctx, keyName, res.OldFingerprint)
			return err == nil && holdersAre(hs, "sidecar-stuck")
		})
		return res
	}
	keyStatus := func(id string) string {
		k, ok := api.Key(id)
		if !ok {
			t.Fatalf("no key %s at the API", id)
		}
		return k.Status
	}

	var heldFor, recoveryToRevoke time.Duration
	held := t.Run("hold", func(t *testing.T) {
		r := rotator(rotation.GateHold)
		rot := rotate(r)

		// Grace over, the stuck sidecar still reports the old key: a run
		// without Wait ends at the gate, one with Wait past max_wait
		// holds (exit 15) and names the pod.
		time.Sleep(time.Until(rot.RevokeDue))
		res, err := r.Run(ctx, keyName, rotation.RunOptions{})
		if err != nil || res.Outcome != rotation.OutcomeGate || !holdersAre(res.GateHolders, "sidecar-stuck") {
			t.Fatalf("run after the grace: %+v, %v; want outcome %s held by sidecar-stuck", res, err, rotation.OutcomeGate)
		}
		res, err = r.Run(ctx, keyName, rotation.RunOptions{Wait: true})
		if rotation.ExitCode(err) != rotation.ExitGateHeld || rotation.KindOf(err) != rotation.KindGateHeld ||
			!holdersAre(res.GateHolders, "sidecar-stuck") || !strings.Contains(err.Error(), "pod=sidecar-stuck") {
			t.Fatalf("run past max_wait: %+v, %v; want exit %d held by sidecar-stuck", res, err, rotation.ExitGateHeld)
		}
		if !rec.has(rotation.EventGateHeld) {
			t.Fatalf("events %v: no %s", rec.types(), rotation.EventGateHeld)
		}
		if s := keyStatus(rot.OldKeyID); s != anthropictest.StatusActive {
			t.Fatalf("the old key is %s at the API while the gate holds; want active", s)
		}
		// The stuck sidecar is still serving with the old key (its
		// requests keep succeeding: checked at the end).
		before := load.snapshot()["sidecar-stuck"].ok
		promtest.Eventually(t, "the stuck sidecar serves requests while held", func() bool {
			return load.snapshot()["sidecar-stuck"].ok > before
		})

		// It recovers: reads work, it takes the new key, Prometheus sees
		// it let go of the old one, and the next run revokes.
		recovered := time.Now()
		stuck.reader.Fail(nil)
		promtest.Eventually(t, "the stuck sidecar holds the new key", func() bool {
			return stuck.src.Current().Fingerprint == rot.NewFingerprint
		})
		promtest.Eventually(t, "Prometheus sees the stuck sidecar let go of the old key", func() bool {
			hs, err := client.Holders(ctx, keyName, rot.OldFingerprint)
			return err == nil && len(hs) == 0
		})
		res, err = r.Run(ctx, keyName, rotation.RunOptions{Wait: true})
		if err != nil || res.Outcome != rotation.OutcomeRevoked || res.Gate != "" {
			t.Fatalf("run after the recovery: %+v, %v", res, err)
		}
		if s := keyStatus(rot.OldKeyID); s != anthropictest.StatusInactive {
			t.Fatalf("the old key is %s after the gate cleared; want inactive", s)
		}
		firstCheck, revoking := marks.get()
		heldFor, recoveryToRevoke = revoking.Sub(firstCheck), revoking.Sub(recovered)

		for pod, r := range load.snapshot() {
			if r.failed != 0 {
				t.Errorf("%s: %d of %d requests failed under policy hold", pod, r.failed, r.ok+r.failed)
			}
		}
	})

	if !held {
		return // the revoke case starts from the hold case's end
	}
	t.Run("revoke", func(t *testing.T) {
		promtest.Eventually(t, "every sidecar holds the same key", func() bool {
			fp := healthy[0].src.Current().Fingerprint
			return healthy[1].src.Current().Fingerprint == fp && stuck.src.Current().Fingerprint == fp
		})
		r := rotator(rotation.GateRevoke)
		rot := rotate(r)
		stuckBefore := load.snapshot()["sidecar-stuck"]
		res, err := r.Run(ctx, keyName, rotation.RunOptions{Wait: true})
		if err != nil || res.Outcome != rotation.OutcomeRevoked || res.Gate != "forced" {
			t.Fatalf("policy revoke past max_wait: %+v, %v; want revoked, gate forced", res, err)
		}
		if !rec.has(rotation.EventGateForced) {
			t.Fatalf("events %v: no %s", rec.types(), rotation.EventGateForced)
		}
		if s := keyStatus(rot.OldKeyID); s != anthropictest.StatusInactive {
			t.Fatalf("the old key is %s after a forced revocation; want inactive", s)
		}
		if stuckBefore.failed != 0 {
			t.Errorf("sidecar-stuck: %d requests failed before the forced revocation", stuckBefore.failed)
		}
		// The stuck sidecar's key is gone under it: its requests fail now,
		// which is what the gate prevents under policy hold.
		promtest.Eventually(t, "the stuck sidecar fails after the forced revocation", func() bool {
			return load.snapshot()["sidecar-stuck"].failed > 0
		})
	})

	results := load.stop(t)
	for _, h := range healthy {
		if r := results[h.pod]; r.failed != 0 || r.ok == 0 {
			t.Errorf("%s: %d of %d requests failed (want none, and a load)", h.pod, r.failed, r.ok+r.failed)
		}
	}
	t.Logf("requests ok/failed: sidecar-a %d/%d, sidecar-b %d/%d, sidecar-stuck %d/%d (its failures all after the forced revocation); "+
		"policy hold: gate held the revocation %v (first check → revoking), recovery → revoking %v; upstream 401s %d",
		results["sidecar-a"].ok, results["sidecar-a"].failed, results["sidecar-b"].ok, results["sidecar-b"].failed,
		results["sidecar-stuck"].ok, results["sidecar-stuck"].failed,
		heldFor.Round(10*time.Millisecond), recoveryToRevoke.Round(10*time.Millisecond), api.Stats().Rejected())

	var text strings.Builder
	text.WriteString(logs.String())
	for _, c := range cars {
		text.WriteString(scrape(c.px))
	}
	if ids := api.Leaked(text.String()); len(ids) > 0 {
		t.Fatalf("a log line or metric holds keys %v", ids)
	}
}

// gateSidecar is a sidecar proxy with its own Source, its API listener and
// its metrics listener.
type gateSidecar struct {
	pod     string
	reader  *providertest.Faulty
	src     *providers.Source
	px      *proxy.Proxy
	front   *proxytest.Server
	metrics *httptest.Server
}

func startGateSidecar(t *testing.T, path, secret, key, pod, upstream string, log *slog.Logger) *gateSidecar {
	t.Helper()
	c := &gateSidecar{pod: pod, reader: providertest.NewFaulty(file.New(path))}
	var err error
	c.src, err = providers.New(context.Background(), c.reader, secret, providers.Options{
		Refresh: 200 * time.Millisecond, Jitter: 50 * time.Millisecond, MaxStale: time.Hour,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(upstream)
	c.px, err = proxy.New(proxy.Options{
		Routes: []proxy.Route{{Prefix: "/", Key: key, Source: c.src, Upstream: u, Version: "2023-06-01"}},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.front, c.metrics = proxytest.NewServer(c.px), httptest.NewServer(c.px.HealthHandler())
	t.Cleanup(func() { c.front.Close(); c.metrics.Close(); c.px.CloseIdleConnections(); c.src.Close() })
	return c
}

// httpLoad sends plain Messages requests (no retries) through each
// sidecar until stopped, counting per sidecar.
type httpLoad struct {
	tally
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

const gateRequest = `{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}`

func startHTTPLoad(pods []string, cars map[string]*gateSidecar) *httpLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &httpLoad{cancel: cancel}
	l.init(pods)
	hc := &http.Client{Timeout: 30 * time.Second}
	for _, pod := range pods {
		u := cars[pod].front.URL + "/v1/messages"
		for range 2 {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for ctx.Err() == nil {
					err := postMessage(ctx, hc, u)
					if ctx.Err() != nil {
						return // stopped mid-request: not a failure
					}
					l.record(pod, err)
					time.Sleep(2 * time.Millisecond) // a steady load, not a CPU burner
				}
			}()
		}
	}
	return l
}

func postMessage(ctx context.Context, hc *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(gateRequest))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"end_turn"`) {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// stop ends the load (once) and returns the counts, logging each distinct
// failure.
func (l *httpLoad) stop(t *testing.T) map[string]result {
	l.once.Do(func() {
		l.cancel()
		l.wg.Wait()
		l.logFailures(t)
	})
	return l.snapshot()
}

// holdersAre reports whether hs is exactly the one consumer labelled pod.
func holdersAre(hs []rotation.Holder, pod string) bool {
	return len(hs) == 1 && hs[0]["pod"] == pod
}

// gateMarks notes when a rotation's first gate check and its revocation
// happened.
type gateMarks struct {
	mu                   sync.Mutex
	firstCheck, revoking time.Time
}

func (m *gateMarks) afterStep(_ context.Context, _ string, b rotation.Boundary) error {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch b {
	case rotation.AfterPromote:
		m.firstCheck, m.revoking = time.Time{}, time.Time{}
	case rotation.AfterGateCheck:
		if m.firstCheck.IsZero() {
			m.firstCheck = now
		}
	case rotation.AfterRecordRevoking:
		m.revoking = now
	}
	return nil
}

func (m *gateMarks) get() (firstCheck, revoking time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.firstCheck, m.revoking
}

// recorder keeps the rotator's events.
type recorder struct {
	mu     sync.Mutex
	events []rotation.EventType
}

func (r *recorder) Notify(_ context.Context, e rotation.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e.Type)
	return nil
}

func (r *recorder) types() []rotation.EventType {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]rotation.EventType(nil), r.events...)
}

func (r *recorder) has(t rotation.EventType) bool { return slices.Contains(r.types(), t) }
