package telemetry_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keywarden/keywarden/internal/telemetry"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
)

const secret = "sk-ant-api03-TELEMETRYSECRETVALUE0123456789abcdefghijklmnop-AAAA"

func source(t *testing.T) *providers.Source {
	t.Helper()
	st := file.New(filepath.Join(t.TempDir(), "keys.json"))
	if err := st.PutByHand(context.Background(), "prod", []byte(secret)); err != nil {
		t.Fatal(err)
	}
	src, err := providers.New(context.Background(), st, "prod", providers.Options{Refresh: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func TestMetrics(t *testing.T) {
	m := telemetry.New()
	r := m.Route("/")
	if m.Route("/") != r {
		t.Fatal("Route does not return the same metrics for a name")
	}
	for _, code := range []int{200, 200, 429, 499, 999} {
		r.Request(code)
	}
	r.RetryRefreshed.Inc()
	r.Unauthorized.Inc()
	r.RateLimited.Inc()
	r.Upstream.Observe(0.01)
	src := source(t)
	m.WatchKey("prod", src)

	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`keywarden_sidecar_requests_total{code="200",route="/"} 2`,
		`keywarden_sidecar_requests_total{code="429",route="/"} 1`,
		`keywarden_sidecar_requests_total{code="999",route="/"} 1`,
		`keywarden_sidecar_retries_total{reason="refreshed",route="/"} 1`,
		`keywarden_sidecar_upstream_unauthorized_total{route="/"} 1`,
		`keywarden_sidecar_rate_limited_total{limit="rate",route="/"} 1`,
		`keywarden_sidecar_upstream_duration_seconds_count{route="/"} 1`,
		`keywarden_key_info{fingerprint="` + src.Current().Fingerprint + `",key="prod",version="` + src.Current().VersionID + `"} 1`,
		`keywarden_key_refresh_total{key="prod",result="success"} 1`,
		`keywarden_key_stale{key="prod"} 0`,
		`keywarden_key_age_seconds{key="prod"}`,
		`keywarden_key_last_refresh_timestamp_seconds{key="prod"}`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(body, "TELEMETRYSECRETVALUE") {
		t.Fatal("a metric holds the key value")
	}
	if n := strings.Count(body, "\nkeywarden_key_info{"); n != 1 {
		t.Fatalf("%d key_info series, want 1", n)
	}
}

func TestRouteRequestAllocates(t *testing.T) {
	r := telemetry.New().Route("/")
	r.Request(200)
	if n := testing.AllocsPerRun(100, func() { r.Request(200) }); n != 0 {
		t.Fatalf("Request allocates %v times per call after the first, want 0", n)
	}
}

// tokenStore is a store of one short-lived token, as a keyless source
// (wif://) reads it.
type tokenStore struct{ expires time.Time }

func (s tokenStore) Read(_ context.Context, _ string, stage driver.Stage) (*driver.Version, error) {
	if stage != driver.Current {
		return nil, codes.Errorf(codes.NotFound, "no %s", stage)
	}
	return &driver.Version{ID: "t1", Value: []byte("sk-ant-oat01-TOKENVALUETOKENVALUE0123456789"), Expires: s.expires, OAuth: true}, nil
}

func (tokenStore) Close() error { return nil }

// TestTokenMetrics: a token's expiry and the next scheduled read are
// exported; a key with background refresh off has no next read.
func TestTokenMetrics(t *testing.T) {
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	tok, err := providers.New(context.Background(), tokenStore{exp}, "t", providers.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	m := telemetry.New()
	m.WatchKey("fed", tok)
	m.WatchKey("prod", source(t))
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	want := fmt.Sprintf(`keywarden_token_expiry_timestamp_seconds{key="fed"} %g`, float64(exp.Unix()))
	if !strings.Contains(body, want) || !strings.Contains(body, `keywarden_key_next_refresh_timestamp_seconds{key="fed"}`) {
		t.Fatalf("metrics lack the token's expiry (%s) or next refresh:\n%s", want, body)
	}
	if strings.Contains(body, `keywarden_key_next_refresh_timestamp_seconds{key="prod"}`) || strings.Contains(body, `keywarden_token_expiry_timestamp_seconds{key="prod"}`) {
		t.Fatal("a key without background refresh or expiry exports them")
	}
	if strings.Contains(body, "TOKENVALUE") {
		t.Fatal("a metric holds the token")
	}
}
