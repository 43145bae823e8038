package anthropic_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/tailbuf"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/rotation"
	claude "github.com/keywarden/keywarden/rotation/anthropic"
	"github.com/keywarden/keywarden/rotation/pool"
)

// The tests drive the Issuer and the Probe against internal/anthropictest,
// the fake Claude API (Admin API included), with the pool, the Admin key
// and the rotated key in a file store.

const (
	secretName = "claude"
	adminName  = "admin"
	poolName   = "pool"
	model      = "claude-sonnet-4-5"
)

type env struct {
	t     *testing.T
	api   *anthropictest.Server
	st    driver.Stager
	pool  *pool.Pool
	first anthropictest.Key // the key in use before any rotation
	logs  *tailbuf.Buffer
	log   *slog.Logger
	errs  []string // every error the test saw, for the leak scan
}

// setup starts the fake API with an active key stored as CURRENT (with its
// id when withID), and the Admin key in the store.
func setup(t *testing.T, withID bool, opts ...anthropictest.Option) *env {
	t.Helper()
	api := anthropictest.Start(t, append([]anthropictest.Option{anthropictest.WithLog(10000)}, opts...)...)
	e := &env{t: t, api: api, st: file.New(filepath.Join(t.TempDir(), "keys.json")), logs: &tailbuf.Buffer{}}
	e.log = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.pool = pool.New(e.st, poolName)
	e.first = api.AddKey("", anthropictest.StatusActive)
	if withID {
		providertest.Rotate(e.t, e.st, secretName, providers.EncodePayload(providers.Payload{Key: providers.NewSecret(e.first.Value), KeyID: e.first.ID}))
	} else {
		providertest.Rotate(e.t, e.st, secretName, []byte(e.first.Value)) // a hand-managed secret: the raw key
	}
	providertest.Rotate(e.t, e.st, adminName, []byte(api.AdminKey()))
	t.Cleanup(e.checkNoSecrets)
	return e
}

// addPool creates n inactive Console keys and adds them to the pool, with
// their ids when withID.
func (e *env) addPool(n int, withID bool) []anthropictest.Key {
	e.t.Helper()
	var ks []anthropictest.Key
	for range n {
		k := e.api.AddKey("", anthropictest.StatusInactive)
		id := ""
		if withID {
			id = k.ID
		}
		if _, err := e.pool.Add(context.Background(), providers.NewSecret(k.Value), id); err != nil {
			e.t.Fatal(err)
		}
		ks = append(ks, k)
	}
	return ks
}

func (e *env) issuer(mod func(*claude.IssuerOptions)) *claude.Issuer {
	e.t.Helper()
	o := claude.IssuerOptions{
		BaseURL:  e.api.URL(),
		AdminKey: claude.KeyFromStore(e.st, adminName, ""),
		Pool:     e.pool,
		Backoff:  time.Millisecond,
	}
	if mod != nil {
		mod(&o)
	}
	iss, err := claude.NewIssuer(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return iss
}

func (e *env) probe() *claude.Probe {
	return claude.NewProbe(claude.ProbeOptions{BaseURL: e.api.URL(), Model: model})
}

func (e *env) rotator(iss *claude.Issuer, mod func(*rotation.Key)) *rotation.Rotator {
	e.t.Helper()
	k := &rotation.Key{
		Name: "claude", Store: e.st, Secret: secretName,
		Issuer: iss, Probe: e.probe(),
		Retry: rotation.Retry{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Second},
	}
	if mod != nil {
		mod(k)
	}
	r, err := rotation.New(rotation.Options{Logger: e.log}, k)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// run runs one forced rotation, waiting out the grace.
func (e *env) run(r *rotation.Rotator) (*rotation.Result, error) {
	res, err := r.Run(context.Background(), "claude", rotation.RunOptions{Force: true, Wait: true})
	if err != nil {
		e.errs = append(e.errs, err.Error())
	}
	e.errs = append(e.errs, res.Message)
	return res, err
}

// saw records an error for the leak scan and returns its text.
func (e *env) saw(err error) string {
	if err == nil {
		return ""
	}
	e.errs = append(e.errs, err.Error(), fmt.Sprintf("%+v %#v", err, err))
	return err.Error()
}

func (e *env) current() providers.Payload {
	e.t.Helper()
	v, err := e.st.Read(context.Background(), secretName, driver.Current)
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := providers.DecodePayload(v.Value, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) status(id string) string {
	e.t.Helper()
	k, ok := e.api.Key(id)
	if !ok {
		e.t.Fatalf("no key %s", id)
	}
	return k.Status
}

// requests counts the logged requests with method and path.
func (e *env) requests(method, path string) []anthropictest.Entry {
	var out []anthropictest.Entry
	for _, en := range e.api.Log() {
		if en.Method == method && en.Path == path {
			out = append(out, en)
		}
	}
	return out
}

// checkNoSecrets scans the logs and every error seen for any key value the
// fake knows and for the Admin key.
func (e *env) checkNoSecrets() {
	if ids := e.api.Leaked(e.logs.String() + "\n" + strings.Join(e.errs, "\n")); len(ids) > 0 {
		e.t.Errorf("keys %v appear in a log line or an error", ids)
	}
}

// TestRotate: a whole rotation through the Admin API: the pool key becomes
// active and CURRENT, the old key inactive, the pool shrinks.
func TestRotate(t *testing.T) {
	e := setup(t, true)
	next := e.addPool(2, true)
	res, err := e.run(e.rotator(e.issuer(nil), nil))
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("run: %v (%+v)", err, res)
	}
	cur := e.current()
	if cur.Key.Reveal() != next[0].Value || cur.KeyID != next[0].ID {
		t.Errorf("CURRENT is %s (id %q), want the first pool key %s", cur.Key.Fingerprint(), cur.KeyID, next[0].ID)
	}
	if res.NewKeyID != next[0].ID || res.OldKeyID != e.first.ID {
		t.Errorf("result ids new %q old %q, want %s and %s", res.NewKeyID, res.OldKeyID, next[0].ID, e.first.ID)
	}
	if s := e.status(next[0].ID); s != anthropictest.StatusActive {
		t.Errorf("new key is %s, want active", s)
	}
	if s := e.status(e.first.ID); s != anthropictest.StatusInactive {
		t.Errorf("old key is %s, want inactive", s)
	}
	if s := e.status(next[1].ID); s != anthropictest.StatusInactive {
		t.Errorf("the second pool key is %s: it must stay untouched", s)
	}
	if n, err := e.pool.Available(context.Background()); err != nil || n != 1 {
		t.Errorf("pool holds %d keys (%v), want 1", n, err)
	}
	// The probe proved the key with both requests, with the new key.
	for _, path := range []string{"/v1/models", "/v1/messages/count_tokens"} {
		var withNew int
		for _, en := range e.api.Log() {
			if en.Path == path && en.KeyID == next[0].ID && en.Status == 200 {
				withNew++
			}
		}
		if withNew != 1 {
			t.Errorf("%s with the new key: %d requests answered 200, want 1", path, withNew)
		}
	}
}

// TestRotateFindsIDsByHint: neither the pool entry nor the stored secret
// has a key id; both are found by partial_key_hint through the paginated
// list, the pool key on the second page of 1000.
func TestRotateFindsIDsByHint(t *testing.T) {
	e := setup(t, false)
	next := e.addPool(1, false)
	for range 1100 { // newer keys: the list is newest first
		e.api.AddKey("", anthropictest.StatusInactive)
	}
	res, err := e.run(e.rotator(e.issuer(nil), nil))
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("run: %v (%+v)", err, res)
	}
	if res.NewKeyID != next[0].ID {
		t.Errorf("new key id %q, want %s", res.NewKeyID, next[0].ID)
	}
	if cur := e.current(); cur.KeyID != next[0].ID {
		t.Errorf("CURRENT records key id %q, want %s", cur.KeyID, next[0].ID)
	}
	if s := e.status(next[0].ID); s != anthropictest.StatusActive {
		t.Errorf("new key is %s, want active", s)
	}
	if s := e.status(e.first.ID); s != anthropictest.StatusInactive {
		t.Errorf("old key (found by hint) is %s, want inactive", s)
	}
	// Each lookup read two pages (1,102 keys, 1,000 a page).
	if n := len(e.requests("GET", "/v1/organizations/api_keys")); n < 4 {
		t.Errorf("%d list requests, want at least 2 pages for each of the two lookups", n)
	}
}

// TestRevokeArchived: with RevokeStatus archived, the old key is archived.
func TestRevokeArchived(t *testing.T) {
	e := setup(t, true)
	e.addPool(1, true)
	res, err := e.run(e.rotator(e.issuer(func(o *claude.IssuerOptions) { o.RevokeStatus = claude.StatusArchived }), nil))
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("run: %v (%+v)", err, res)
	}
	if s := e.status(e.first.ID); s != anthropictest.StatusArchived {
		t.Errorf("old key is %s, want archived", s)
	}
}

// TestRevokeIdempotent: revoking a key already revoked (or archived)
// changes nothing and sends no update.
func TestRevokeIdempotent(t *testing.T) {
	e := setup(t, true)
	iss := e.issuer(nil)
	ctx := context.Background()
	c := rotation.Credential{Key: providers.NewSecret(e.first.Value), KeyID: e.first.ID}
	for range 3 {
		if err := iss.Revoke(ctx, c); err != nil {
			t.Fatal(e.saw(err))
		}
	}
	if s := e.status(e.first.ID); s != anthropictest.StatusInactive {
		t.Fatalf("key is %s, want inactive", s)
	}
	if n := len(e.requests("POST", "/v1/organizations/api_keys/"+e.first.ID)); n != 1 {
		t.Errorf("%d updates for three revocations, want 1", n)
	}
	arch := e.api.AddKey("", anthropictest.StatusArchived)
	if err := iss.Revoke(ctx, rotation.Credential{Key: providers.NewSecret(arch.Value), KeyID: arch.ID}); err != nil {
		t.Fatal(e.saw(err))
	}
	if s := e.status(arch.ID); s != anthropictest.StatusArchived {
		t.Errorf("an archived key became %s", s)
	}
}

// TestIssuerErrors: every way Create can fail says why and what to do, and
// never holds a key.
func TestIssuerErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		arrange func(e *env)
		want    []string
		is      error
		lists   int                               // list requests expected
		iss     func(*env, *claude.IssuerOptions) // changes to the issuer
	}{
		{"empty pool", func(e *env) {}, []string{"is empty", "keywarden pool add"}, rotation.ErrPoolEmpty, 0, nil},
		{"archived pool key", func(e *env) {
			k := e.addPool(1, true)[0]
			if err := e.api.SetStatus(k.ID, anthropictest.StatusArchived); err != nil {
				t.Fatal(err)
			}
		}, []string{"is empty", "skipped 1 unusable pool keys", "is archived"}, rotation.ErrPoolEmpty, 0, nil},
		{"pool key id of another key", func(e *env) {
			k := e.api.AddKey("", anthropictest.StatusInactive)
			if _, err := e.pool.Add(ctx, providers.NewSecret(k.Value), e.first.ID); err != nil {
				t.Fatal(err)
			}
		}, []string{"does not belong to key", "attach the right id with `keywarden key-id`"}, nil, 0, nil},
		{"pool key unknown to the organization", func(e *env) {
			if _, err := e.pool.Add(ctx, providers.NewSecret(string(providertest.FakeKey())), ""); err != nil {
				t.Fatal(err)
			}
		}, []string{"no API key of the organization matches", "attach its id with `keywarden key-id`"}, nil, 1, nil},
		{"pool key id unknown", func(e *env) {
			if _, err := e.pool.Add(ctx, providers.NewSecret(string(providertest.FakeKey())), "apikey_01Nope"); err != nil {
				t.Fatal(err)
			}
		}, []string{"read key apikey_01Nope", "404 not_found_error"}, nil, 0, nil},
		{"Admin key invalid", func(e *env) {
			e.addPool(1, true)
			providertest.Rotate(e.t, e.st, adminName, []byte("sk-ant-admin01-"+strings.Repeat("x", 86)+"AA"))
		}, []string{"401 authentication_error", "the Admin key is invalid"}, nil, 0, nil},
		{"an API key as the Admin key", func(e *env) {
			e.addPool(1, true)
			providertest.Rotate(e.t, e.st, adminName, []byte(e.first.Value))
		}, []string{"403 permission_error", "may not manage"}, nil, 0, nil},
		{"Admin key missing", func(e *env) { e.addPool(1, true) }, []string{"read the Admin key"}, nil, 0,
			func(e *env, o *claude.IssuerOptions) { o.AdminKey = claude.KeyFromStore(e.st, "no-such-admin", "") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, true)
			tc.arrange(e)
			before := len(e.api.Log())
			var mod func(*claude.IssuerOptions)
			if tc.iss != nil {
				mod = func(o *claude.IssuerOptions) { tc.iss(e, o) }
			}
			_, err := e.issuer(mod).Create(ctx, "tok-1")
			msg := e.saw(err)
			if err == nil {
				t.Fatal("Create succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			// Refusals are not retried: one request at most, and the
			// expected number of list pages.
			after := len(e.api.Log())
			if after-before > 1 {
				t.Errorf("%d requests for one refused Create: refusals must not be retried", after-before)
			}
			if n := len(e.requests("GET", "/v1/organizations/api_keys")); n != tc.lists {
				t.Errorf("%d list requests, want %d", n, tc.lists)
			}
		})
	}
}

// TestAdminRetries: rate limits, overloads and server errors of the Admin
// API are retried, honouring retry-after; refusals are not.
func TestAdminRetries(t *testing.T) {
	ctx := context.Background()
	t.Run("5xx and 529 then success", func(t *testing.T) {
		e := setup(t, true)
		k := e.addPool(1, true)[0]
		e.api.FailNext(1, 500, "/v1/organizations/*")
		e.api.FailNext(1, 529, "/v1/organizations/*")
		e.api.FailNext(1, 503, "/v1/organizations/*")
		c, err := e.issuer(nil).Create(ctx, "tok-1")
		if err != nil {
			t.Fatal(e.saw(err))
		}
		if c.KeyID != k.ID || c.Key.Reveal() != k.Value {
			t.Errorf("Create returned %s (%s), want %s", c.KeyID, c.Key.Fingerprint(), k.ID)
		}
		if got := e.api.Count(500) + e.api.Count(529) + e.api.Count(503); got != 3 {
			t.Errorf("%d failures served, want 3", got)
		}
	})
	t.Run("429 honours retry-after and gives up", func(t *testing.T) {
		e := setup(t, true)
		e.addPool(1, true)
		e.api.FailNext(10, 429, "/v1/organizations/*")
		_, err := e.issuer(func(o *claude.IssuerOptions) { o.Attempts = 3 }).Create(ctx, "tok-1")
		msg := e.saw(err)
		if err == nil {
			t.Fatal("Create succeeded through a rate limit")
		}
		for _, w := range []string{"gave up after 3 attempts", "429 rate_limit_error"} {
			if !strings.Contains(msg, w) {
				t.Errorf("error %q does not say %q", msg, w)
			}
		}
		var times []time.Time
		for _, en := range e.api.Log() {
			if en.Status == 429 {
				times = append(times, en.Time)
			}
		}
		if len(times) != 3 {
			t.Fatalf("%d attempts, want 3", len(times))
		}
		// The backoff is 1ms; the server asked for 1s.
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap < 900*time.Millisecond {
				t.Errorf("attempt %d came %v after the one before: retry-after (1s) not honoured", i+1, gap)
			}
		}
	})
}

// TestProbe: one attempt's verdict for each documented answer.
func TestProbe(t *testing.T) {
	ctx := context.Background()
	e := setup(t, true)
	inactive := e.api.AddKey("", anthropictest.StatusInactive)
	p := e.probe()
	if err := p.Probe(ctx, providers.NewSecret(e.first.Value)); err != nil {
		t.Fatalf("an active key failed: %s", e.saw(err))
	}
	for _, tc := range []struct {
		name      string
		key       string
		fail      int // status injected on /v1/models, or 0
		probe     *claude.Probe
		retryable bool
		after     time.Duration
		want      string
	}{
		{"inactive key", inactive.Value, 0, nil, false, 0, "401 authentication_error"},
		{"unknown key", string(providertest.FakeKey()), 0, nil, false, 0, "401 authentication_error"},
		{"forbidden", e.first.Value, 403, nil, false, 0, "403 permission_error"},
		{"rate limited", e.first.Value, 429, nil, true, time.Second, "429 rate_limit_error"},
		{"server error", e.first.Value, 500, nil, true, 0, "500 api_error"},
		{"overloaded", e.first.Value, 529, nil, true, 0, "529 overloaded_error"},
		{"model not found", e.first.Value, 0, claude.NewProbe(claude.ProbeOptions{BaseURL: e.api.URL(), Model: "claude-nope-1"}), false, 0, "model claude-nope-1"},
		{"API unreachable", e.first.Value, 0, claude.NewProbe(claude.ProbeOptions{BaseURL: "http://127.0.0.1:1"}), true, 0, "GET /v1/models"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.fail != 0 {
				e.api.FailNext(1, tc.fail, "/v1/models")
			}
			pr := p
			if tc.probe != nil {
				pr = tc.probe
			}
			err := pr.Probe(ctx, providers.NewSecret(tc.key))
			msg := e.saw(err)
			var pe *rotation.ProbeError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *rotation.ProbeError", err)
			}
			if pe.Retryable != tc.retryable || pe.RetryAfter != tc.after {
				t.Errorf("retryable %v after %v, want %v after %v", pe.Retryable, pe.RetryAfter, tc.retryable, tc.after)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not say %q", msg, tc.want)
			}
			if strings.Contains(msg, tc.key) {
				t.Error("the error holds the key")
			}
		})
	}
}

// TestProbeRetriesThroughRotator: the rotator retries 429, 529 and 5xx
// answers of the probe, waiting what retry-after asks, and promotes.
func TestProbeRetriesThroughRotator(t *testing.T) {
	e := setup(t, true)
	next := e.addPool(1, true)[0]
	e.api.FailNext(1, 429, "/v1/models")
	e.api.FailNext(1, 529, "/v1/models")
	e.api.FailNext(1, 502, "/v1/models")
	res, err := e.run(e.rotator(e.issuer(nil), nil))
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("run: %v (%+v)", err, res)
	}
	if res.ProbeAttempts != 4 {
		t.Errorf("%d probe attempts, want 4", res.ProbeAttempts)
	}
	models := e.requests("GET", "/v1/models")
	if len(models) != 4 || models[0].Status != 429 || models[3].Status != 200 {
		t.Fatalf("probe requests: %+v", models)
	}
	if gap := models[1].Time.Sub(models[0].Time); gap < 900*time.Millisecond {
		t.Errorf("the attempt after a 429 came %v later: retry-after (1s) not honoured", gap)
	}
	if e.current().KeyID != next.ID {
		t.Error("the new key was not promoted")
	}
}

// TestProbeRefusalFailsAtOnce: a 401 or 403 that lasts fails the rotation
// with exit code 10 once the settle time after the activation is over (a
// few attempts, not Attempts' worth of 429 backoff); CURRENT and the old
// key are untouched. Parked, the new key stays PENDING; discarded, it is
// set inactive again.
func TestProbeRefusalFailsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		status int
		policy rotation.OnProbeFailure
		typ    string
	}{
		{401, rotation.Park, "authentication_error"},
		{403, rotation.Discard, "permission_error"},
	} {
		t.Run(fmt.Sprintf("%d %s", tc.status, tc.policy), func(t *testing.T) {
			e := setup(t, true)
			next := e.addPool(1, true)[0]
			e.api.FailNext(1000, tc.status, "/v1/models")
			res, err := e.run(e.rotator(e.issuer(nil), func(k *rotation.Key) {
				k.OnProbeFailure = tc.policy
				k.Retry.Settle = 20 * time.Millisecond
			}))
			if rotation.KindOf(err) != rotation.KindProbe || rotation.ExitCode(err) != 10 {
				t.Fatalf("run: kind %v exit %d (%v), want probe_failed, 10", rotation.KindOf(err), rotation.ExitCode(err), err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%d %s", tc.status, tc.typ)) {
				t.Errorf("error %q does not give the API's error type", err)
			}
			// 1ms doubling: the waits pass 20ms after the 5th or 6th.
			if n := len(e.requests("GET", "/v1/models")); n != res.ProbeAttempts || n < 2 || n > 8 {
				t.Errorf("%d probe requests (%d attempts): a refusal is tried again only while the key settles", n, res.ProbeAttempts)
			}
			if cur := e.current(); cur.KeyID != e.first.ID {
				t.Errorf("CURRENT changed to %s", cur.KeyID)
			}
			if s := e.status(e.first.ID); s != anthropictest.StatusActive {
				t.Errorf("old key is %s, want active", s)
			}
			_, perr := e.st.Read(context.Background(), secretName, driver.Pending)
			switch tc.policy {
			case rotation.Park:
				if perr != nil {
					t.Errorf("parked: no PENDING: %v", perr)
				}
			case rotation.Discard:
				if !codes.Is(perr, codes.NotFound) {
					t.Errorf("discarded: PENDING read gives %v, want not found", perr)
				}
				if s := e.status(next.ID); s != anthropictest.StatusInactive {
					t.Errorf("discarded new key is %s, want inactive", s)
				}
			}
		})
	}
}

// TestProbeSettlesAfterActivation: the Claude API answers 401 for a while
// after a key is set active; the probe waits for it (Retry.Settle) instead
// of failing the rotation (park: exit 10 and no new key; discard: a good
// pool key dropped).
func TestProbeSettlesAfterActivation(t *testing.T) {
	for _, pol := range []rotation.OnProbeFailure{rotation.Park, rotation.Discard} {
		t.Run(string(pol), func(t *testing.T) {
			e := setup(t, true, anthropictest.WithActivationDelay(2*time.Second))
			next := e.addPool(2, true)[0]
			res, err := e.run(e.rotator(e.issuer(nil), func(k *rotation.Key) { k.OnProbeFailure = pol }))
			if err != nil || res.Outcome != rotation.OutcomeRevoked {
				t.Fatalf("run: %v (%+v)", err, res)
			}
			if res.ProbeAttempts < 2 {
				t.Errorf("%d probe attempts: the activation delay was not met", res.ProbeAttempts)
			}
			if cur := e.current(); cur.KeyID != next.ID {
				t.Errorf("CURRENT is %s, want the pool key %s", cur.KeyID, next.ID)
			}
			if s := e.status(e.first.ID); s != anthropictest.StatusInactive {
				t.Errorf("old key is %s, want inactive", s)
			}
		})
	}
}

// TestEmptyPoolFailsRun: a rotation with an empty pool exits 14 and says
// how to refill it; nothing changes.
func TestEmptyPoolFailsRun(t *testing.T) {
	e := setup(t, true)
	res, err := e.run(e.rotator(e.issuer(nil), nil))
	if rotation.KindOf(err) != rotation.KindPoolEmpty || rotation.ExitCode(err) != 14 {
		t.Fatalf("run: kind %v exit %d (%v, %+v), want pool_empty, 14", rotation.KindOf(err), rotation.ExitCode(err), err, res)
	}
	if !strings.Contains(err.Error(), "keywarden pool add") {
		t.Errorf("error %q does not say how to refill the pool", err)
	}
	if cur := e.current(); cur.KeyID != e.first.ID {
		t.Errorf("CURRENT changed to %s", cur.KeyID)
	}
	if n := e.api.Count(http.StatusOK); n != 0 {
		t.Errorf("%d successful API requests for an empty pool", n)
	}
}

// TestNewIssuerRejectsBadOptions: configuration errors are caught at once.
func TestNewIssuerRejectsBadOptions(t *testing.T) {
	p := pool.New(file.New(filepath.Join(t.TempDir(), "k.json")), "pool")
	key := func(context.Context) (providers.Secret, error) { return providers.Secret{}, nil }
	for _, tc := range []struct {
		o    claude.IssuerOptions
		want string
	}{
		{claude.IssuerOptions{Pool: p}, "no Admin key source"},
		{claude.IssuerOptions{AdminKey: key}, "no key pool"},
		{claude.IssuerOptions{AdminKey: key, Pool: p, RevokeStatus: "deleted"}, `revoke status "deleted"`},
		// The Admin key goes to the base URL: never in clear text over the
		// network, never to a URL with credentials.
		{claude.IssuerOptions{AdminKey: key, Pool: p, BaseURL: "http://192.0.2.2"}, "clear text"},
		{claude.IssuerOptions{AdminKey: key, Pool: p, BaseURL: "http://api.example.com:8080/v1"}, "clear text"},
		{claude.IssuerOptions{AdminKey: key, Pool: p, BaseURL: "https://admin:S3CRET@api.example.com"}, "credentials"},
		{claude.IssuerOptions{AdminKey: key, Pool: p, BaseURL: "api.anthropic.com"}, "not an absolute"},
	} {
		_, err := claude.NewIssuer(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewIssuer: %v, want an error saying %q", err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "S3CRET") || strings.Contains(err.Error(), "admin:")) {
			t.Errorf("the error holds the URL's user info: %v", err)
		}
	}
	for _, base := range []string{"", claude.DefaultBaseURL, "http://127.0.0.1:8080", "http://localhost:9000/"} {
		if _, err := claude.NewIssuer(claude.IssuerOptions{AdminKey: key, Pool: p, BaseURL: base}); err != nil {
			t.Errorf("base URL %q: %v", base, err)
		}
	}
}

// TestProbeInsecureBaseURL: a probe never sends the new key to a base URL
// in clear text over the network: it fails at once, without a retry.
func TestProbeInsecureBaseURL(t *testing.T) {
	probe := claude.NewProbe(claude.ProbeOptions{BaseURL: "http://192.0.2.2:18901"})
	err := probe.Probe(context.Background(), providers.NewSecret("sk-ant-api03-newkey"))
	var pe *rotation.ProbeError
	if !errors.As(err, &pe) || pe.Retryable || !strings.Contains(err.Error(), "clear text") {
		t.Fatalf("probe: %v, want a final probe error saying clear text", err)
	}
}
