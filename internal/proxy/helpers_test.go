package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/proxytest"
	"github.com/keywarden/keywarden/internal/tailbuf"
	"github.com/keywarden/keywarden/internal/telemetry"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/redact"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, proxytest.IgnoreDateTicker) }

const (
	keyA = "sk-ant-api03-PROXYKEYAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-aaaa"
	keyB = "sk-ant-api03-PROXYKEYBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB-bbbb"
	keyS = "sk-ant-api03-PROXYKEYSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS-ssss"
)

// secretParts are substrings of the test keys that no log line or metric
// may ever hold.
var secretParts = []string{"PROXYKEYAAAA", "PROXYKEYBBBB", "PROXYKEYSSSS"}

// keyStore is a real file store for one secret.
type keyStore struct {
	st   *file.Store
	name string
}

func newKeyStore(t testing.TB, name string, values ...string) *keyStore {
	t.Helper()
	ks := &keyStore{st: file.New(filepath.Join(t.TempDir(), "keys.json")), name: name}
	for _, v := range values {
		ks.rotate(t, v)
	}
	return ks
}

// rotate makes val CURRENT through PENDING and Promote, as the rotator does.
func (ks *keyStore) rotate(t testing.TB, val string) {
	t.Helper()
	providertest.Rotate(t, ks.st, ks.name, []byte(val))
}

func (ks *keyStore) source(t testing.TB, o providers.Options) (*providers.Source, *providertest.Faulty) {
	t.Helper()
	d := providertest.NewFaulty(ks.st)
	if o.Refresh == 0 {
		o.Refresh = -1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	src, err := providers.New(context.Background(), d, ks.name, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src, d
}

// env is a proxy in front of an upstream, with a Source over a file store.
type env struct {
	up      *upstream
	store   *keyStore
	src     *providers.Source
	faulty  *providertest.Faulty
	p       *proxy.Proxy
	srv     *proxytest.Server
	logs    *tailbuf.Buffer
	metrics *telemetry.Metrics
}

// newEnv starts a proxy with one route "/" to up, holding keyA; edit
// adjusts the options before New.
func newEnv(t *testing.T, up *upstream, edit func(*proxy.Options)) *env {
	t.Helper()
	return newEnvWith(t, up, providers.Options{}, edit)
}

// newEnvWith is newEnv with the Source's options (background refresh
// off unless so sets it).
func newEnvWith(t *testing.T, up *upstream, so providers.Options, edit func(*proxy.Options)) *env {
	t.Helper()
	g := providers.MinForcedGap
	providers.MinForcedGap = 0
	t.Cleanup(func() { providers.MinForcedGap = g })
	e := &env{up: up, store: newKeyStore(t, "prod", keyA), logs: &tailbuf.Buffer{}, metrics: telemetry.New()}
	e.src, e.faulty = e.store.source(t, so)
	u, _ := url.Parse(up.URL())
	o := proxy.Options{
		Routes:  []proxy.Route{{Prefix: "/", Key: "prod", Source: e.src, Upstream: u, Version: "2023-06-01"}},
		Metrics: e.metrics,
		Logger:  redact.NewLogger(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&o)
	}
	p, err := proxy.New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.p = p
	e.srv = proxytest.NewServer(p)
	t.Cleanup(func() {
		e.srv.Close()
		p.CloseIdleConnections()
	})
	return e
}

// do sends a request through the proxy and returns the status, headers and
// body.
func (e *env) do(t *testing.T, method, path, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// scrape returns the metrics text.
func (e *env) scrape(t *testing.T) string {
	t.Helper()
	rec := httptest.NewRecorder()
	e.p.HealthHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// assertNoKeys fails when a log line or a metric holds a key value.
func (e *env) assertNoKeys(t *testing.T) {
	t.Helper()
	logs, metrics := e.logs.String(), e.scrape(t)
	for _, s := range secretParts {
		if strings.Contains(logs, s) {
			t.Errorf("a log line holds a key:\n%s", logs)
		}
		if strings.Contains(metrics, s) {
			t.Errorf("a metric holds a key")
		}
	}
}

// apiErrorType decodes an error body in the API's shape and returns its
// error type, failing when the shape is wrong.
func apiErrorType(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Type != "error" || e.Error.Type == "" || e.Error.Message == "" {
		t.Fatalf("body %q is not an error in the API's shape", body)
	}
	return e.Error.Type
}
