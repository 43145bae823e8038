package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/gcpsmfake"
	"github.com/keywarden/keywarden/internal/mototest"
	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/proxytest"
	"github.com/keywarden/keywarden/internal/tailbuf"
	"github.com/keywarden/keywarden/internal/telemetry"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/aws"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/gcp"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/redact"
	"github.com/keywarden/keywarden/providers/vault"
	"github.com/keywarden/keywarden/providers/vault/vaulttest"
	"github.com/keywarden/keywarden/rotation"
	claude "github.com/keywarden/keywarden/rotation/anthropic"
	"github.com/keywarden/keywarden/rotation/pool"
)

// TestMain stops the moto and Vault servers the tests started.
func TestMain(m *testing.M) {
	code := m.Run()
	mototest.Stop()
	vaulttest.Stop()
	os.Exit(code)
}

// rotations is how many complete rotations each store goes through.
const rotations = 20

// backend is one store the test runs on, with the consumers' refresh
// timing and the rotation's grace sized for it: grace is more than the
// longest refresh gap (refresh + jitter) plus one store read, as config
// validation demands of a real deployment, with room for a machine that
// stalls every process for a few hundred milliseconds (the race detector
// on two loaded cores; measured: a 360 ms stall against a 300 ms grace).
type backend struct {
	name                   string
	refresh, jitter, grace time.Duration
	open                   func(t *testing.T) (st driver.Stager, prefix string)
}

var backends = []backend{
	{"file", 20 * time.Millisecond, 5 * time.Millisecond, time.Second,
		func(t *testing.T) (driver.Stager, string) {
			return file.New(filepath.Join(t.TempDir(), "keys.json")), ""
		}},
	{"aws", 50 * time.Millisecond, 10 * time.Millisecond, time.Second,
		func(t *testing.T) (driver.Stager, string) {
			return aws.New(mototest.SecretsManager(t), nil), providertest.UniqueName("kw-e2e") + "/"
		}},
	{"gcp", 20 * time.Millisecond, 5 * time.Millisecond, time.Second,
		func(t *testing.T) (driver.Stager, string) {
			return gcp.New(gcpsmfake.Start(t).Client(t), "kw-e2e", gcp.Options{}), "kw-e2e-"
		}},
	{"vault", 30 * time.Millisecond, 10 * time.Millisecond, time.Second,
		func(t *testing.T) (driver.Stager, string) {
			st, err := vault.New(context.Background(), vault.Options{Client: vaulttest.Client(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			return st, providertest.UniqueName("anthropic/kw-e2e") + "/"
		}},
}

// TestZeroDowntime is keywarden's promise, checked whole on every store:
// while clients send Messages requests and streams through the sidecar and
// through the library's client, the real Rotator replaces the key twenty
// times — a Console key from the pool is activated at the Admin API,
// written PENDING, probed, promoted, and after the grace the old key is
// deactivated, after which the fake API rejects it. Not one client request
// fails (the SDKs' own retries are off, so none is hidden), every old key
// ends inactive, and the time each new key took to reach both consumers is
// recorded: both must hold it before the old key's revocation begins.
func TestZeroDowntime(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { runZeroDowntime(t, b) })
	}
}

func runZeroDowntime(t *testing.T, b backend) {
	ctx := context.Background()
	st, prefix := b.open(t)
	secret, adminName, poolName := prefix+"claude", prefix+"admin", prefix+"pool"

	// The Claude API with streams long enough to straddle a promotion, the
	// key the services start with, the Admin key, and a pool of
	// Console-created keys that are inactive until the issuer takes them.
	api := anthropictest.Start(t, anthropictest.WithStream(4, 15*time.Millisecond))
	first := api.AddKey("", anthropictest.StatusActive)
	providertest.Rotate(t, st, secret, providers.EncodePayload(providers.Payload{Key: providers.NewSecret(first.Value), KeyID: first.ID}))
	providertest.Rotate(t, st, adminName, []byte(api.AdminKey()))
	p := pool.New(st, poolName)
	var issued []anthropictest.Key
	for range rotations {
		k := api.AddKey("", anthropictest.StatusInactive)
		if _, err := p.Add(ctx, providers.NewSecret(k.Value), k.ID); err != nil {
			t.Fatal(err)
		}
		issued = append(issued, k)
	}

	logs := &tailbuf.Buffer{}
	logger := redact.NewLogger(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	prop := newPropagation()

	// Two consumers with Sources of their own, as in production: the
	// sidecar, and a service using the library.
	sidecarSrc := openSource(t, st, secret, b, logger)
	libSrc := openSource(t, st, secret, b, logger)
	defer sidecarSrc.Subscribe(prop.observer("sidecar"))()
	defer libSrc.Subscribe(prop.observer("library"))()

	metrics := telemetry.New()
	upstream, _ := url.Parse(api.URL())
	px, err := proxy.New(proxy.Options{
		Routes:  []proxy.Route{{Prefix: "/", Key: "claude", Source: sidecarSrc, Upstream: upstream, Version: "2023-06-01"}},
		Metrics: metrics, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	sidecar := proxytest.NewServer(px)
	defer func() { sidecar.Close(); px.CloseIdleConnections() }()

	// The applications: the official Go SDK with its retries off, pointed
	// at the sidecar with a placeholder key, and using keywarden's client.
	sidecarHTTP := &http.Client{}
	defer sidecarHTTP.CloseIdleConnections()
	libHTTP := providers.NewClient(libSrc)
	var libRetries atomic.Int64
	libHTTP.Transport.(*providers.Transport).OnEvent = func(ev providers.Event) {
		if ev.Kind == providers.EventRetryRefreshed || ev.Kind == providers.EventRetryPrevious {
			libRetries.Add(1)
		}
	}
	defer libHTTP.CloseIdleConnections()
	load := startLoad(map[string]anthropic.Client{
		"sidecar": anthropic.NewClient(option.WithBaseURL(sidecar.URL), option.WithAPIKey("placeholder"),
			option.WithHTTPClient(sidecarHTTP), option.WithMaxRetries(0)),
		"library": anthropic.NewClient(option.WithBaseURL(api.URL()), option.WithAPIKey("placeholder"),
			option.WithHTTPClient(libHTTP), option.WithMaxRetries(0)),
	})

	rot, err := rotation.New(rotation.Options{Logger: logger, Notifiers: []rotation.Notifier{prop}, AfterStep: prop.afterStep}, &rotation.Key{
		Name: "claude", Store: st, Secret: secret, Grace: b.grace,
		Issuer: mustIssuer(t, claude.IssuerOptions{
			BaseURL: api.URL(), AdminKey: claude.KeyFromStore(st, adminName, ""), Pool: p, Backoff: 10 * time.Millisecond,
		}),
		Probe: claude.NewProbe(claude.ProbeOptions{BaseURL: api.URL(), Model: "claude-sonnet-4-5"}),
		Retry: rotation.Retry{MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	var active []time.Duration
	for i := range rotations {
		res, err := rot.Run(ctx, "claude", rotation.RunOptions{Force: true, Wait: true})
		if err != nil || res.Outcome != rotation.OutcomeRevoked {
			load.stop(t)
			t.Fatalf("rotation %d: %v (%+v)", i+1, err, res)
		}
		active = append(active, res.Active)
		time.Sleep(b.refresh) // a moment of steady state between rotations
	}
	results := load.stop(t)

	// Zero failed requests, and a real load on both ways in.
	for _, way := range []string{"sidecar", "library"} {
		r := results[way]
		if r.failed != 0 {
			t.Errorf("%s: %d of %d requests failed", way, r.failed, r.ok+r.failed)
		}
		if r.ok < 4*rotations {
			t.Errorf("%s: only %d requests succeeded: not a load", way, r.ok)
		}
	}

	// Every old key, the first one included, is revoked at the API; the
	// last pool key is the only one active and the one both consumers hold.
	last := issued[len(issued)-1]
	for _, k := range api.Keys() {
		want := anthropictest.StatusInactive
		if k.ID == last.ID {
			want = anthropictest.StatusActive
		}
		if k.Status != want {
			t.Errorf("key %s is %s, want %s", k.ID, k.Status, want)
		}
	}
	for name, src := range map[string]*providers.Source{"sidecar": sidecarSrc, "library": libSrc} {
		if !src.Current().Value.Equal(providers.NewSecret(last.Value)) {
			t.Errorf("the %s holds %v, not the last pool key", name, src.Current())
		}
	}
	if n, err := p.Available(ctx); err != nil || n != 0 {
		t.Errorf("pool: %d keys left (%v), want 0", n, err)
	}

	// Each rotation reached both consumers before the old key was revoked.
	times := prop.report(t, rotations)
	worst := slices.Max(times)

	stats := api.Stats()
	slices.Sort(times)
	slices.Sort(active)
	t.Logf("%s: %d rotations; requests ok: sidecar %d, library %d; failed: 0; "+
		"propagation (promotion → both consumers) p50 %v, max %v; rotation without grace p50 %v, max %v; "+
		"upstream 401s for revoked keys %d, retried by sidecar %s, by library %d",
		b.name, rotations, results["sidecar"].ok, results["library"].ok,
		times[len(times)/2].Round(time.Millisecond), worst.Round(time.Millisecond),
		active[len(active)/2].Round(time.Millisecond), slices.Max(active).Round(time.Millisecond),
		stats.Rejected(), metricSum(scrape(px), "keywarden_sidecar_retries_total"), libRetries.Load())

	// No key value in any log line or metric.
	if ids := api.Leaked(logs.String() + scrape(px)); len(ids) > 0 {
		t.Fatalf("a log line or metric holds keys %v", ids)
	}
}

func openSource(t *testing.T, st driver.Reader, name string, b backend, log *slog.Logger) *providers.Source {
	t.Helper()
	src, err := providers.New(context.Background(), st, name, providers.Options{Refresh: b.refresh, Jitter: b.jitter, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func mustIssuer(t *testing.T, o claude.IssuerOptions) *claude.Issuer {
	t.Helper()
	iss, err := claude.NewIssuer(o)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// propagation records, for each rotation, when the rotator's Promote call
// returned and when it began to revoke the old key, and when each
// consumer's Source first held the new key.
type propagation struct {
	mu    sync.Mutex
	rots  []*rotationTimes
	seen  map[string]map[string]time.Time // consumer → fingerprint → first held
	names []string                        // consumers, in order
}

type rotationTimes struct {
	fingerprint        string
	promoted, revoking time.Time
}

func newPropagation() *propagation {
	return &propagation{seen: map[string]map[string]time.Time{}}
}

// afterStep notes the boundaries that matter: the promotion done (the
// grace counts from here) and the revocation about to begin.
func (p *propagation) afterStep(_ context.Context, _ string, b rotation.Boundary) error {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch b {
	case rotation.AfterPromote:
		p.rots = append(p.rots, &rotationTimes{promoted: now})
	case rotation.AfterRecordRevoking:
		if n := len(p.rots); n > 0 {
			p.rots[n-1].revoking = now
		}
	}
	return nil
}

// Notify names the new key of the promotion; it is the rotator's Notifier.
func (p *propagation) Notify(_ context.Context, e rotation.Event) error {
	if e.Type == rotation.EventRotated {
		p.mu.Lock()
		if n := len(p.rots); n > 0 {
			p.rots[n-1].fingerprint = e.NewFingerprint
		}
		p.mu.Unlock()
	}
	return nil
}

// observer returns a Source subscriber for consumer.
func (p *propagation) observer(consumer string) func(providers.Change) {
	p.mu.Lock()
	p.seen[consumer] = map[string]time.Time{}
	p.names = append(p.names, consumer)
	p.mu.Unlock()
	return func(c providers.Change) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if _, ok := p.seen[consumer][c.NewFingerprint]; !ok {
			p.seen[consumer][c.NewFingerprint] = c.At
		}
	}
}

// report logs, for each rotation, each consumer's propagation time (from
// the promotion to the moment its Source held the new key; 0 when it read
// the key before the Promote call returned) and returns, per rotation, the
// slowest consumer's time. It fails when a rotation did not reach a
// consumer before the old key's revocation began: the property that makes
// a rotation invisible to clients.
func (p *propagation) report(t *testing.T, n int) []time.Duration {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.rots) != n {
		t.Fatalf("%d promotions seen, want %d", len(p.rots), n)
	}
	var out []time.Duration
	var line strings.Builder
	for i, r := range p.rots {
		var worst time.Duration
		fmt.Fprintf(&line, "\n  rotation %2d:", i+1)
		for _, c := range p.names {
			seen, ok := p.seen[c][r.fingerprint]
			switch {
			case r.fingerprint == "" || r.revoking.IsZero():
				t.Fatalf("rotation %d: no promotion event or no revocation", i+1)
			case !ok:
				t.Fatalf("rotation %d: the %s never held the new key", i+1, c)
			case !seen.Before(r.revoking):
				t.Errorf("rotation %d: the %s held the new key %v after the old one's revocation began", i+1, c, seen.Sub(r.revoking))
			}
			d := max(seen.Sub(r.promoted), 0)
			worst = max(worst, d)
			fmt.Fprintf(&line, " %s %6.1fms (revoke %6.1fms later)", c, float64(d.Microseconds())/1000, float64(r.revoking.Sub(seen).Microseconds())/1000)
		}
		out = append(out, worst)
	}
	t.Logf("propagation after each promotion:%s", line.String())
	return out
}

// result counts one way in's requests.
type result struct{ ok, failed int64 }

// tally counts requests per name (a way in, a pod) and their distinct
// failures; safe for concurrent use.
type tally struct {
	mu       sync.Mutex
	counts   map[string]*result
	failures map[string]int // distinct failures, counted
}

// init counts names from zero, before any worker records.
func (l *tally) init(names []string) {
	l.counts, l.failures = map[string]*result{}, map[string]int{}
	for _, n := range names {
		l.counts[n] = &result{}
	}
}

func (l *tally) record(name string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.counts[name].failed++
		l.failures[name+": "+err.Error()]++
		return
	}
	l.counts[name].ok++
}

// snapshot returns the counts so far.
func (l *tally) snapshot() map[string]result {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]result{}
	for n, r := range l.counts {
		out[n] = *r
	}
	return out
}

// logFailures logs each distinct failure with its count.
func (l *tally) logFailures(t *testing.T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for f, n := range l.failures {
		t.Logf("failure (%d×): %s", n, f)
	}
}

// load runs workers sending Messages requests, half of them streamed,
// through each client until stopped.
type load struct {
	tally
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startLoad(clients map[string]anthropic.Client) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	l.init(slices.Collect(maps.Keys(clients)))
	params := anthropic.MessageNewParams{
		Model: anthropic.ModelClaudeSonnet4_5, MaxTokens: 64,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hi"))},
	}
	for way, c := range clients {
		for w := range 4 {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for ctx.Err() == nil {
					err := send(ctx, c, params, w%2 == 0)
					if ctx.Err() != nil {
						return // the load stopped mid-request: not a failure
					}
					l.record(way, err)
				}
			}()
		}
	}
	return l
}

// send makes one request and checks its answer: a whole message, or a
// whole stream that ends with message_stop.
func send(ctx context.Context, c anthropic.Client, params anthropic.MessageNewParams, stream bool) error {
	if !stream {
		msg, err := c.Messages.New(ctx, params)
		if err != nil {
			return err
		}
		if len(msg.Content) == 0 || msg.StopReason != "end_turn" {
			return fmt.Errorf("incomplete message %+v", msg)
		}
		return nil
	}
	s := c.Messages.NewStreaming(ctx, params)
	defer s.Close()
	var msg anthropic.Message
	for s.Next() {
		if err := msg.Accumulate(s.Current()); err != nil {
			return err
		}
	}
	if err := s.Err(); err != nil {
		return err
	}
	if msg.StopReason != "end_turn" {
		return errors.New("the stream ended before message_stop")
	}
	return nil
}

// stop ends the load and returns the counts per way in, logging each
// distinct failure.
func (l *load) stop(t *testing.T) map[string]result {
	l.cancel()
	l.wg.Wait()
	l.logFailures(t)
	return l.snapshot()
}

// scrape returns the sidecar's metrics in the text format.
func scrape(px *proxy.Proxy) string {
	rec := httptest.NewRecorder()
	px.HealthHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// metricSum sums the samples of a metric family in the text format.
func metricSum(text, name string) string {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, " ")) {
			var v float64
			if _, err := fmt.Sscan(rest[strings.LastIndexByte(rest, ' ')+1:], &v); err == nil {
				sum += v
			}
		}
	}
	return fmt.Sprint(sum)
}
