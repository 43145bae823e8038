package providers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest"
)

// trUpstream is a small stand-in for the Claude API: it accepts the keys in
// valid and answers 401 authentication_error to any other, and records
// every request it saw.
type trUpstream struct {
	*httptest.Server

	mu    sync.Mutex
	valid map[string]bool
	seen  []seenRequest
}

type seenRequest struct {
	key, auth, version, body string
}

func newTrUpstream(t *testing.T, valid ...string) *trUpstream {
	u := &trUpstream{valid: map[string]bool{}}
	for _, v := range valid {
		u.valid[v] = true
	}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *trUpstream) setValid(keys ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.valid = map[string]bool{}
	for _, k := range keys {
		u.valid[k] = true
	}
}

func (u *trUpstream) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	key := r.Header.Get("x-api-key")
	if v, ok := strings.CutPrefix(r.Header.Get("authorization"), "Bearer "); ok {
		key = v
	}
	u.mu.Lock()
	u.seen = append(u.seen, seenRequest{key: key, auth: r.Header.Get("authorization"), version: r.Header.Get("anthropic-version"), body: string(b)})
	ok := u.valid[key]
	u.mu.Unlock()
	w.Header().Set("content-type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`)
		return
	}
	io.WriteString(w, `{"echo":`+fmt.Sprintf("%q", b)+`}`)
}

func (u *trUpstream) requests() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.seen...)
}

// trSource returns a Source over a real file store holding the given values
// promoted in order (the last is CURRENT, the one before PREVIOUS), with
// background refresh off.
func trSource(t testing.TB, values ...string) (*providers.Source, *file.Store, *providertest.Faulty) {
	t.Helper()
	st := file.New(filepath.Join(t.TempDir(), "keys.json"))
	for _, v := range values {
		rotate(t, st, v)
	}
	d := providertest.NewFaulty(st)
	src, err := providers.New(context.Background(), d, "prod", providers.Options{Refresh: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src, st, d
}

type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) on(ev providers.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev.Kind.String())
	r.mu.Unlock()
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.events, ",")
}

func TestTransportHeaders(t *testing.T) {
	up := newTrUpstream(t, keyA)
	src, _, _ := trSource(t, keyA)
	type opts struct {
		auth    providers.Auth
		version string
		policy  providers.VersionPolicy
	}
	for _, tc := range []struct {
		name          string
		tr            opts
		clientHeaders map[string]string
		wantAuth      string
		wantVersion   string
	}{
		{"api key replaces the client's key", opts{}, map[string]string{"x-api-key": "placeholder"}, "", ""},
		{"client bearer removed", opts{}, map[string]string{"authorization": "Bearer placeholder"}, "", ""},
		{"bearer", opts{auth: providers.AuthBearer}, map[string]string{"x-api-key": "placeholder"}, "Bearer " + keyA, ""},
		{"version set when absent", opts{version: "2023-06-01"}, nil, "", "2023-06-01"},
		{"client version kept", opts{version: "2023-06-01"}, map[string]string{"anthropic-version": "2024-01-01"}, "", "2024-01-01"},
		{"version enforced", opts{version: "2023-06-01", policy: providers.VersionEnforce}, map[string]string{"anthropic-version": "2024-01-01"}, "", "2023-06-01"},
		{"no version leaves it alone", opts{}, map[string]string{"anthropic-version": "2024-01-01"}, "", "2024-01-01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up.mu.Lock()
			up.seen = nil
			up.mu.Unlock()
			tr := &providers.Transport{Source: src, Auth: tc.tr.auth, Version: tc.tr.version, VersionPolicy: tc.tr.policy}
			req, _ := http.NewRequest("POST", up.URL+"/v1/messages", strings.NewReader(`{}`))
			for k, v := range tc.clientHeaders {
				req.Header.Set(k, v)
			}
			before := req.Header.Clone()
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got := up.requests()[0]
			if got.key != keyA {
				t.Errorf("upstream got key %s, want %s", providers.Fingerprint(got.key), providers.Fingerprint(keyA))
			}
			if got.auth != tc.wantAuth {
				t.Errorf("authorization %q, want %q", providers.Fingerprint(got.auth), providers.Fingerprint(tc.wantAuth))
			}
			if got.version != tc.wantVersion {
				t.Errorf("anthropic-version %q, want %q", got.version, tc.wantVersion)
			}
			if fmt.Sprint(req.Header) != fmt.Sprint(before) {
				t.Errorf("the caller's request headers were modified")
			}
		})
	}
}

// bodies returns request bodies of each kind a caller may send.
func bodies(payload string) map[string]func() (io.Reader, int64) {
	return map[string]func() (io.Reader, int64){
		"GetBody":        func() (io.Reader, int64) { return strings.NewReader(payload), int64(len(payload)) },
		"known length":   func() (io.Reader, int64) { return struct{ io.Reader }{strings.NewReader(payload)}, int64(len(payload)) },
		"unknown length": func() (io.Reader, int64) { return struct{ io.Reader }{strings.NewReader(payload)}, -1 },
	}
}

func newReq(t *testing.T, url string, body io.Reader, n int64) *http.Request {
	t.Helper()
	req, err := http.NewRequest("POST", url+"/v1/messages", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = n
	req.Header.Set("x-api-key", "placeholder")
	return req
}

func TestTransportRetriesWithRefreshedKey(t *testing.T) {
	const payload = `{"model":"claude-sonnet-4-5","max_tokens":16}`
	for name, body := range bodies(payload) {
		t.Run(name, func(t *testing.T) {
			up := newTrUpstream(t, keyA)
			src, st, d := trSource(t, keyA)
			var rec recorder
			c := &http.Client{Transport: &providers.Transport{Source: src, OnEvent: rec.on}}
			// The store moves to B and the upstream revokes A before the
			// Source's next refresh.
			rotate(t, st, keyB)
			up.setValid(keyB)
			reads := d.Reads()
			r, n := body()
			resp, err := c.Do(newReq(t, up.URL, r, n))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d after retry, want 200", resp.StatusCode)
			}
			seen := up.requests()
			if len(seen) != 2 || seen[0].key != keyA || seen[1].key != keyB {
				t.Fatalf("upstream saw %d requests, want A then B", len(seen))
			}
			if seen[1].body != payload || !bytes.Contains(b, []byte("claude-sonnet-4-5")) {
				t.Fatalf("retry body %q, want the original", seen[1].body)
			}
			if d.Reads()-reads != 1 {
				t.Fatalf("%d store reads, want 1", d.Reads()-reads)
			}
			if got := rec.String(); got != "unauthorized,retry_refreshed" {
				t.Fatalf("events %s", got)
			}
		})
	}
}

func TestTransportFallsBackToPrevious(t *testing.T) {
	// CURRENT is B, PREVIOUS is A, and the upstream knows only A: the
	// refreshed key is the rejected one, so A is tried once.
	up := newTrUpstream(t, keyA)
	src, _, _ := trSource(t, keyA, keyB)
	var rec recorder
	c := &http.Client{Transport: &providers.Transport{Source: src, OnEvent: rec.on}}
	resp, err := c.Do(newReq(t, up.URL, strings.NewReader("{}"), 2))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	seen := up.requests()
	if resp.StatusCode != 200 || len(seen) != 2 || seen[0].key != keyB || seen[1].key != keyA {
		t.Fatalf("status %d after %d requests, want 200 after B then A", resp.StatusCode, len(seen))
	}
	if got := rec.String(); got != "unauthorized,retry_previous" {
		t.Fatalf("events %s", got)
	}
}

func TestTransportNeverLoops(t *testing.T) {
	for _, tc := range []struct {
		name       string
		values     []string
		maxRetry   int64
		bodySize   int
		wantTries  int
		wantEvents string
	}{
		{"no other key", []string{keyA}, 0, 2, 1, "unauthorized,no_other_key"},
		{"previous rejected too", []string{keyA, keyB}, 0, 2, 2, "unauthorized,retry_previous"},
		{"body too large to keep", []string{keyA, keyB}, 8, 64, 1, "unauthorized,not_replayable"},
		{"keeping disabled", []string{keyA, keyB}, -1, 2, 1, "unauthorized,not_replayable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newTrUpstream(t) // accepts no key
			src, _, _ := trSource(t, tc.values...)
			var rec recorder
			c := &http.Client{Transport: &providers.Transport{Source: src, MaxRetryBody: tc.maxRetry, OnEvent: rec.on}}
			payload := strings.Repeat("x", tc.bodySize)
			resp, err := c.Do(newReq(t, up.URL, struct{ io.Reader }{strings.NewReader(payload)}, int64(len(payload))))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 || !bytes.Contains(b, []byte(`"authentication_error"`)) {
				t.Fatalf("got %d %q, want the upstream's 401 whole", resp.StatusCode, b)
			}
			if n := len(up.requests()); n != tc.wantTries {
				t.Fatalf("%d attempts, want %d", n, tc.wantTries)
			}
			if up.requests()[0].body != payload {
				t.Fatal("first attempt's body was not sent whole")
			}
			if got := rec.String(); got != tc.wantEvents {
				t.Fatalf("events %s, want %s", got, tc.wantEvents)
			}
		})
	}
}

func TestTransportOther401NotRetried(t *testing.T) {
	var n atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(401)
		io.WriteString(w, `{"type":"error","error":{"type":"invalid_request_error","message":"not about the key"}}`)
	}))
	defer up.Close()
	src, _, _ := trSource(t, keyA, keyB)
	c := &http.Client{Transport: &providers.Transport{Source: src}}
	resp, err := c.Get(up.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n.Load() != 1 {
		t.Fatalf("%d attempts at a 401 that is not authentication_error, want 1", n.Load())
	}
}

func TestTransportStormCostsOneRead(t *testing.T) {
	up := newTrUpstream(t, keyA)
	src, st, d := trSource(t, keyA)
	c := &http.Client{Transport: &providers.Transport{Source: src}}
	rotate(t, st, keyB)
	up.setValid(keyB)
	reads := d.Reads()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(up.URL + "/v1/models")
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
			}
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed across the rotation", failed.Load())
	}
	if got := d.Reads() - reads; got != 1 {
		t.Fatalf("a storm of 401s cost %d store reads, want 1", got)
	}
	c.CloseIdleConnections()
}

func TestTransportRefreshFailureTriesPrevious(t *testing.T) {
	up := newTrUpstream(t, keyA)
	src, _, d := trSource(t, keyA, keyB)
	d.Fail(errors.New("test: store down"))
	var rec recorder
	c := &http.Client{Transport: &providers.Transport{Source: src, OnEvent: rec.on}}
	resp, err := c.Get(up.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || rec.String() != "unauthorized,refresh_failed,retry_previous" {
		t.Fatalf("status %d, events %s", resp.StatusCode, rec.String())
	}
}

func TestTransportErrorsNeverHoldTheKey(t *testing.T) {
	src, _, _ := trSource(t, keyA)
	c := &http.Client{Transport: &providers.Transport{Source: src}}
	_, err := c.Get("http://127.0.0.1:1/v1/models") // nothing listens on port 1
	if err == nil {
		t.Fatal("no error from a closed port")
	}
	if strings.Contains(err.Error(), keyA) {
		t.Fatal("the error holds the key")
	}
	if _, err := (&providers.Transport{}).RoundTrip(httptest.NewRequest("GET", "http://x/", nil)); err == nil {
		t.Fatal("a Transport without Source sent a request")
	}
}

func TestNewClient(t *testing.T) {
	up := newTrUpstream(t, keyA)
	src, _, _ := trSource(t, keyA)
	resp, err := providers.NewClient(src).Get(up.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := up.requests()[0]
	if resp.StatusCode != 200 || got.key != keyA || got.version != providers.DefaultAnthropicVersion {
		t.Fatalf("status %d, version %q", resp.StatusCode, got.version)
	}
}

// TestNewClientRefreshesAfterARecentRead: the store was read just before
// the request was sent, then the key rotated and the upstream rejected the
// old one: the client still refreshes and retries with the new key (the
// refresh used to be skipped for a second after any read).
func TestNewClientRefreshesAfterARecentRead(t *testing.T) {
	up := newTrUpstream(t, keyA)
	src, st, d := trSource(t, keyA)
	if _, err := src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	reads := d.Reads()
	var once sync.Once
	c := providers.NewClient(src)
	base := c.Transport.(*providers.Transport)
	// The rotation lands while the request is on its way.
	base.Base = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		once.Do(func() { rotate(t, st, keyB); up.setValid(keyB) })
		return http.DefaultTransport.RoundTrip(r)
	})
	resp, err := c.Get(up.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	seen := up.requests()
	if resp.StatusCode != 200 || len(seen) != 2 || seen[1].key != keyB {
		t.Fatalf("status %d after %d requests; want a retry with the new key", resp.StatusCode, len(seen))
	}
	if d.Reads()-reads != 1 {
		t.Fatalf("%d store reads, want 1", d.Reads()-reads)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestNewClientKeepsTheKeyOnItsHost(t *testing.T) {
	var leaked atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-api-key") != "" || r.Header.Get("authorization") != "" {
			leaked.Store(true)
		}
	}))
	defer elsewhere.Close()
	var hops atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hops.Add(1) == 1 {
			http.Redirect(w, r, "/v1/models/", http.StatusTemporaryRedirect) // same host: followed
			return
		}
		http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusTemporaryRedirect)
	}))
	defer up.Close()
	src, _, _ := trSource(t, keyA)
	c := providers.NewClient(src)
	resp, err := c.Get(up.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || hops.Load() != 2 {
		t.Fatalf("status %d after %d hops, want the cross-host redirect returned after following the same-host one", resp.StatusCode, hops.Load())
	}
	if leaked.Load() {
		t.Fatal("the key followed a redirect to another host")
	}
	c.CloseIdleConnections()
}

func TestAuthAndPolicyNames(t *testing.T) {
	if providers.AuthAPIKey.String() != "x-api-key" || providers.AuthBearer.String() != "bearer" ||
		providers.VersionSetIfAbsent.String() != "set-if-absent" || providers.VersionEnforce.String() != "enforce" ||
		providers.EventKind(99).String() != "event(99)" {
		t.Fatal("names do not match the config spelling")
	}
}

// okTransport answers 200 without I/O, so that benchmarks measure the
// Transport alone.
type okTransport struct{}

func (okTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
}

func benchRequest(b *testing.B) *http.Request {
	req, _ := http.NewRequest("POST", "http://upstream/v1/messages", nil)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Api-Key", "placeholder")
	req.Header.Set("User-Agent", "bench")
	req.Header.Set("Anthropic-Beta", "x")
	return req
}

// BenchmarkTransportRoundTrip is the library path: the caller's request is
// left alone, so its headers are copied.
func BenchmarkTransportRoundTrip(b *testing.B) {
	src, _, _ := trSource(b, keyA)
	tr := &providers.Transport{Source: src, Base: okTransport{}, Version: "2023-06-01"}
	req := benchRequest(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tr.RoundTrip(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTransportRoundTripOwned is the proxy path: the request is the
// proxy's own, and its headers are set in place without allocating.
func BenchmarkTransportRoundTripOwned(b *testing.B) {
	src, _, _ := trSource(b, keyA)
	tr := &providers.Transport{Source: src, Base: okTransport{}, Version: "2023-06-01"}
	req := benchRequest(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tr.RoundTripOwned(req); err != nil {
			b.Fatal(err)
		}
	}
}

// A storm of 401s while the store fails costs one store read too: the
// upstream refuses the key (revoked), the store refuses every read (a
// throttled cloud API), and every rejected request asks for a refresh.
// After the failed read, forced refreshes wait for the backoff and return
// the store's error meanwhile, instead of reading once per round trip.
func TestTransportStormWhileStoreFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(st *file.Store, d *providertest.Faulty)
	}{
		{"throttled", func(_ *file.Store, d *providertest.Faulty) {
			d.Fail(codes.Errorf(codes.ResourceExhausted, "test: ThrottlingException: rate exceeded"))
		}},
		// The real file store failing by itself: mode 0644 is refused.
		{"file mode", func(st *file.Store, _ *providertest.Faulty) {
			if err := os.Chmod(st.Path(), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newTrUpstream(t, keyB) // keyA was revoked upstream
			st := file.New(filepath.Join(t.TempDir(), "keys.json"))
			rotate(t, st, keyA)
			d := providertest.NewFaulty(st)
			// A backoff far longer than the test: every read after the
			// first failed one would be a read the backoff should have held.
			src := newSource(t, d, providers.Options{Refresh: -1, MinBackoff: time.Hour, MaxBackoff: time.Hour})
			tc.fail(st, d)
			c := &http.Client{Transport: &providers.Transport{Source: src}}
			defer c.CloseIdleConnections()
			reads := d.Reads()
			var wg sync.WaitGroup
			var n, unauthorized atomic.Int64
			for range 8 {
				wg.Go(func() {
					for range 100 {
						resp, err := c.Get(up.URL + "/v1/models")
						if err != nil {
							t.Error(err)
							return
						}
						resp.Body.Close()
						n.Add(1)
						if resp.StatusCode == http.StatusUnauthorized {
							unauthorized.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if unauthorized.Load() != n.Load() || n.Load() != 800 {
				t.Fatalf("%d requests, %d answered 401; want 800 and all", n.Load(), unauthorized.Load())
			}
			if got := d.Reads() - reads; got != 1 {
				t.Fatalf("800 rejected requests against a failing store cost %d store reads, want 1", got)
			}
			// Meanwhile a forced refresh answers the store's error at once.
			k, seq := src.Taken()
			_, err := src.RefreshIfCurrent(context.Background(), k, seq)
			want := codes.ResourceExhausted
			if tc.name == "file mode" {
				want = codes.PermissionDenied
			}
			if codes.Of(err) != want {
				t.Fatalf("refresh during the backoff: %v, want the store's error (%v)", err, want)
			}
			if got := d.Reads() - reads; got != 1 {
				t.Fatalf("refresh during the backoff read the store (%d reads)", got)
			}
		})
	}
}

// A store that recovers is read again once the backoff after its failure
// ends, without waiting for the background loop (off here): the next
// rejected request reads it and retries with the new key.
func TestTransportStoreRecoversAfterBackoff(t *testing.T) {
	up := newTrUpstream(t, keyB)
	st := file.New(filepath.Join(t.TempDir(), "keys.json"))
	rotate(t, st, keyA)
	d := providertest.NewFaulty(st)
	src := newSource(t, d, providers.Options{Refresh: -1, MinBackoff: 100 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	d.Fail(codes.Errorf(codes.Unavailable, "test: outage"))
	c := &http.Client{Transport: &providers.Transport{Source: src}}
	defer c.CloseIdleConnections()
	get := func() int {
		resp, err := c.Get(up.URL + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusUnauthorized {
		t.Fatalf("status %d during the outage, want 401", code)
	}
	rotate(t, st, keyB)
	d.Fail(nil)
	reads := d.Reads()
	deadline := time.Now().Add(10 * time.Second) // the backoff is 100 ms; this only stops a hang
	for get() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("no request succeeded 10 s after the store recovered (%d reads since)", d.Reads()-reads)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := d.Reads() - reads; got != 1 {
		t.Fatalf("recovery took %d store reads, want 1", got)
	}
}
