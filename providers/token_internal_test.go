package providers

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// tokenDriver mints short-lived OAuth tokens, one per CURRENT read.
type tokenDriver struct {
	life  time.Duration
	reads atomic.Int64  // CURRENT reads begun
	fail  atomic.Bool   // reads fail while set
	born  atomic.Bool   // while set, reads mint tokens that are already expired
	gate  chan struct{} // when set, reads wait for it to be closed

	mu     sync.Mutex
	minted []*driver.Version
}

func (d *tokenDriver) Read(ctx context.Context, _ string, stage driver.Stage) (*driver.Version, error) {
	if stage != driver.Current {
		return nil, codes.Errorf(codes.NotFound, "test: no %s", stage)
	}
	d.reads.Add(1)
	if d.gate != nil {
		select {
		case <-d.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if d.fail.Load() {
		return nil, codes.Errorf(codes.Unavailable, "test: token endpoint down")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.minted) + 1
	v := &driver.Version{
		ID:      fmt.Sprintf("exchange-%d", n),
		Value:   fmt.Appendf(nil, "sk-ant-oat01-token%06d-abcdefghijklmnop", n),
		Expires: time.Now().Add(d.life),
		OAuth:   true,
	}
	if d.born.Load() { // a life shorter than the exchange's round trip
		v.Expires = time.Now().Add(-time.Millisecond)
	}
	d.minted = append(d.minted, v)
	return v, nil
}

func (d *tokenDriver) Close() error { return nil }

func (d *tokenDriver) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.minted)
}

func tokenSource(t *testing.T, d *tokenDriver, o Options) *Source {
	t.Helper()
	s, err := New(context.Background(), d, "fdrl_test", o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The refresh of a short-lived token is scheduled from its expiry, inside
// the advisory window, with jitter; never after the expiry; and after a
// failure the capped backoff applies without passing the regular point.
func TestNextWaitFromExpiry(t *testing.T) {
	now := time.Now()
	s := &Source{opts: Options{Refresh: time.Hour, Jitter: time.Minute, MinBackoff: time.Second, MaxBackoff: 20 * time.Second}}
	set := func(life time.Duration, dropped bool) {
		k := &Key{Expires: now.Add(life), loaded: now, OAuth: true, dropped: dropped}
		if life == 0 { // a key that does not expire
			k = &Key{loaded: now}
		}
		s.snap.Store(&snapshot{val: NewSecret("x"), cur: k})
	}
	for _, tc := range []struct {
		name     string
		life     time.Duration
		dropped  bool
		failures int
		lo, hi   time.Duration
	}{
		// An hour-long token: refresh 120 s (advisory) before expiry,
		// less up to a quarter of that at random; never Refresh (1h).
		{"hour token", time.Hour, false, 0, time.Hour - 150*time.Second, time.Hour - 120*time.Second},
		// A 4 s token refreshes at half its life, less up to 0.5 s.
		{"short token", 4 * time.Second, false, 0, 1500 * time.Millisecond, 2 * time.Second},
		// After failures, the backoff (1 s, 2 s, 4 s… capped at 20 s),
		// never later than the advisory point.
		{"backoff 1", time.Hour, false, 1, 500 * time.Millisecond, time.Second},
		{"backoff capped", time.Hour, false, 12, 10 * time.Second, 20 * time.Second},
		{"backoff bounded by advisory point", 4 * time.Second, false, 12, 1500 * time.Millisecond, 2 * time.Second},
		// A dropped token: at once, or after the backoff when failing.
		{"dropped", time.Hour, true, 0, minTokenWait, minTokenWait},
		{"dropped failing", time.Hour, true, 3, 2 * time.Second, 4 * time.Second},
		// A key that does not expire: Refresh plus up to Jitter, or the
		// backoff, as before; no floor.
		{"key", 0, false, 0, time.Hour, time.Hour + time.Minute},
		{"key backoff", 0, false, 1, 500 * time.Millisecond, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set(tc.life, tc.dropped)
			for range 50 {
				w := s.nextWait(tc.failures, now)
				if w < tc.lo || w > tc.hi {
					t.Fatalf("wait %v, want in [%v, %v]", w, tc.lo, tc.hi)
				}
			}
		})
	}
}

// Under readers that never stop, a Source holding short-lived tokens
// refreshes each before it expires, and no reader ever gets a token past
// its expiry, whatever max_stale says: Fresh checks the clock; Key and
// Current lose the value at the token's end of service (a timer).
func TestTokenNeverServedExpired(t *testing.T) {
	d := &tokenDriver{life: 2 * time.Second}
	s := tokenSource(t, d, Options{MaxStale: 24 * time.Hour})
	var bad atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Fresh is what every request of a Transport (library
				// and sidecar) takes its token from.
				before := time.Now()
				k, err := s.Fresh(context.Background())
				if err == nil && (k.dropped || k.Value.IsZero() || !k.Expires.After(before)) {
					bad.Add(1)
				}
			}
		})
	}
	// Six tokens, then the endpoint fails: the last token must leave
	// service at its expiry although max_stale is a day.
	waitFor(t, "six tokens", func() bool { return d.count() >= 6 })
	if next, k := s.NextRefresh(), s.Current(); !next.Before(k.Expires) && !k.dropped {
		t.Errorf("next refresh %v is not before the token's expiry %v", next, k.Expires)
	}
	d.fail.Store(true)
	last := s.Current()
	waitFor(t, "the expired token to leave service", func() bool { return s.Key().IsZero() })
	close(stop)
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d reads returned a token past its expiry", n)
	}
	if time.Now().Before(last.serviceEnd()) {
		t.Fatal("the token left service before its end of service")
	}
	if cur := s.Current(); !cur.dropped || cur.Value.Reveal() != "" || cur.HeaderValue()[0] != "" {
		t.Fatal("CURRENT still holds the expired token's value")
	}
	if err := s.CheckHealth(); !codes.Is(err, codes.Unavailable) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("CheckHealth = %v, want Unavailable naming the expiry", err)
	}
	if _, err := s.Usable(); err == nil {
		t.Fatal("Usable returned an expired token")
	}
	if _, err := s.Fresh(context.Background()); !codes.Is(err, codes.Unavailable) || !strings.Contains(err.Error(), "token endpoint down") {
		t.Fatalf("Fresh = %v, want Unavailable with the last error", err)
	}
	// Each token was replaced before it expired: token n+1 was minted
	// before token n's expiry.
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := 1; i < len(d.minted); i++ {
		issued := d.minted[i].Expires.Add(-d.life)
		if !issued.Before(d.minted[i-1].Expires) {
			t.Errorf("token %d minted %v after token %d expired", i+1, issued.Sub(d.minted[i-1].Expires), i)
		}
	}
}

// Requests that find the token dropped (or in its last moments) share one
// refresh: a storm of them costs one exchange.
func TestFreshCoalesces(t *testing.T) {
	d := &tokenDriver{life: time.Hour}
	s := tokenSource(t, d, Options{})
	gate := make(chan struct{})
	d.gate = gate // later reads wait
	s.drop(s.Current())
	if !s.Key().IsZero() {
		t.Fatal("drop left the value in service")
	}
	var wg sync.WaitGroup
	got := make([]*Key, 64)
	for i := range got {
		wg.Go(func() {
			k, err := s.Fresh(context.Background())
			if err != nil {
				t.Error(err)
			}
			got[i] = k
		})
	}
	waitFor(t, "the shared refresh", func() bool { return d.reads.Load() >= 2 })
	close(gate)
	wg.Wait()
	if n := d.count(); n != 2 {
		t.Fatalf("%d exchanges, want 2 (the first and one shared refresh)", n)
	}
	for _, k := range got {
		if k == nil || k.VersionID != "exchange-2" {
			t.Fatalf("a caller got %v, want exchange-2", k)
		}
	}
}

// A token the upstream rejects with 401 forces one re-exchange, and the
// request is sent again with the new token; when the re-exchange fails the
// rejected token is dropped.
func TestTransportReexchangesOn401(t *testing.T) {
	d := &tokenDriver{life: time.Hour}
	s := tokenSource(t, d, Options{})
	revoked := s.Current().Value.Reveal()
	var seen []string
	var mu sync.Mutex
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization")+"|"+r.Header.Get("Anthropic-Beta")+"|"+r.Header.Get("X-Api-Key"))
		mu.Unlock()
		if r.Header.Get("Authorization") == "Bearer "+revoked {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"type":"error","error":{"type":"authentication_error","message":"OAuth token has been revoked"}}`))
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer up.Close()
	c := NewClient(s)
	req, _ := http.NewRequest(http.MethodGet, up.URL+"/v1/models", nil)
	req.Header.Set("X-Api-Key", "client-own-key")
	req.Header.Set("Anthropic-Beta", "files-api-2025-04-14")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 after the re-exchange", resp.StatusCode)
	}
	if n := d.count(); n != 2 {
		t.Fatalf("%d exchanges, want 2", n)
	}
	fresh := s.Current().Value.Reveal()
	want := []string{
		"Bearer " + revoked + "|files-api-2025-04-14," + OAuthBeta + "|",
		"Bearer " + fresh + "|files-api-2025-04-14," + OAuthBeta + "|",
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("upstream saw\n%q\nwant\n%q", seen, want)
	}

	// Now the new token is rejected and the endpoint is down: the
	// rejected token is dropped, not sent again.
	revoked = fresh
	d.fail.Store(true)
	resp, err = c.Get(up.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want the 401", resp.StatusCode)
	}
	if !s.Current().dropped || !s.Key().IsZero() {
		t.Fatal("the rejected token is still in service")
	}
	_, err = c.Get(up.URL + "/v1/models")
	if err == nil || !strings.Contains(err.Error(), "no unexpired token") || !strings.Contains(err.Error(), "token endpoint down") {
		t.Fatalf("request with no token = %v, want a clear error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 { // 2 above and the rejected one; nothing once dropped
		t.Fatalf("upstream saw %d requests, want 3: %q", len(seen), seen)
	}
}

func TestMergeOAuthBeta(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{nil, []string{OAuthBeta}},
		{[]string{"a"}, []string{"a," + OAuthBeta}},
		{[]string{"a, b"}, []string{"a, b," + OAuthBeta}},
		{[]string{"a, "}, []string{"a," + OAuthBeta}},
		{[]string{"a," + OAuthBeta + "-x"}, []string{"a," + OAuthBeta + "-x," + OAuthBeta}},
		{[]string{"a", "b"}, []string{"a,b," + OAuthBeta}},
		{[]string{OAuthBeta}, []string{OAuthBeta}},
		{[]string{"a," + OAuthBeta}, []string{"a," + OAuthBeta}},
		{[]string{OAuthBeta, "a"}, []string{"a," + OAuthBeta}},
		{[]string{"a", OAuthBeta + ",a"}, []string{"a,a," + OAuthBeta}},
		{[]string{""}, []string{OAuthBeta}},
	} {
		h := http.Header{}
		if tc.in != nil {
			h[hdrBeta] = tc.in
		}
		mergeOAuthBeta(HTTPFields(h))
		if fmt.Sprint(h[hdrBeta]) != fmt.Sprint(tc.want) {
			t.Errorf("merge(%q) = %q, want %q", tc.in, h[hdrBeta], tc.want)
		}
		n := 0
		for _, v := range strings.Split(strings.Join(h[hdrBeta], ","), ",") {
			if strings.TrimSpace(v) == OAuthBeta {
				n++
			}
		}
		if n != 1 {
			t.Errorf("merge(%q) has %s %d times", tc.in, OAuthBeta, n)
		}
	}
}

// waitFor polls cond until it holds; it fails the test after a minute (a
// bound against hanging, not a timed assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type okRT struct{}

func (okRT) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
}

// BenchmarkTransportToken is BenchmarkTransportRoundTrip's library path
// with a short-lived OAuth token instead of a key: the cost of the expiry
// check (Fresh) and of the anthropic-beta merge. The "key" case is the
// same request with a key, for comparison in one run.
func BenchmarkTransportToken(b *testing.B) {
	for _, name := range []string{"key", "token"} {
		b.Run(name, func(b *testing.B) {
			v := &driver.Version{ID: "1", Value: []byte("sk-ant-api03-bench-0123456789abcdef")}
			if name == "token" {
				v = &driver.Version{ID: "1", Value: []byte("sk-ant-oat01-bench-0123456789abcdef"), Expires: time.Now().Add(time.Hour), OAuth: true}
			}
			s, err := New(context.Background(), staticReader{v}, "bench", Options{Refresh: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			tr := &Transport{Source: s, Base: okRT{}, Version: "2023-06-01"}
			req, _ := http.NewRequest("POST", "http://upstream/v1/messages", nil)
			req.Header.Set("X-Api-Key", "placeholder")
			req.Header.Set("Anthropic-Beta", "x")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tr.RoundTrip(req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type staticReader struct{ v *driver.Version }

func (r staticReader) Read(_ context.Context, _ string, stage driver.Stage) (*driver.Version, error) {
	if stage != driver.Current {
		return nil, codes.Errorf(codes.NotFound, "none")
	}
	return r.v, nil
}

func (staticReader) Close() error { return nil }

// A token that expired during an outage of the token endpoint is replaced
// as soon as the endpoint is back (within the backoff cap): a read that
// failed after the token was dropped does not stand for a new one.
func TestTokenRecoversAfterOutageLongerThanItsLife(t *testing.T) {
	d := &tokenDriver{life: 2 * time.Second}
	s := tokenSource(t, d, Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	d.fail.Store(true)
	waitFor(t, "the token to leave service", func() bool { return s.Current().dropped })
	n := d.reads.Load()
	waitFor(t, "failed exchanges after the drop", func() bool { return d.reads.Load() >= n+3 })
	if _, err := s.Fresh(context.Background()); err == nil {
		t.Fatal("Fresh gave a token while the endpoint is down and the token expired")
	}
	d.fail.Store(false)
	waitFor(t, "an exchange after the endpoint recovered", func() bool { return !s.Key().IsZero() })
	if k, err := s.Fresh(context.Background()); err != nil || k.Expired(time.Now()) {
		t.Fatalf("Fresh after recovery: %v, %v", k, err)
	}
	if err := s.CheckHealth(); err != nil {
		t.Fatalf("health after recovery: %v", err)
	}
}

// A token that arrives already expired (its life shorter than the
// exchange's round trip) is a failed read: Open does not succeed with it,
// it never enters service, and the loop backs off instead of exchanging
// again at once.
func TestTokenArrivingExpiredIsAFailedRead(t *testing.T) {
	d := &tokenDriver{life: time.Hour}
	d.born.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if s, err := New(ctx, d, "fdrl_test", Options{MinBackoff: 50 * time.Millisecond}); err == nil {
		s.Close()
		t.Fatalf("New succeeded with a token expired on arrival (%v)", s.Current().Expires)
	} else if !codes.Is(err, codes.Unavailable) || !strings.Contains(err.Error(), "arrived out of service") {
		t.Fatalf("New: %v, want Unavailable naming the expired token", err)
	}

	d = &tokenDriver{life: time.Hour}
	backoff := 200 * time.Millisecond
	s := tokenSource(t, d, Options{MinBackoff: backoff, MaxBackoff: backoff})
	d.born.Store(true)
	n := d.reads.Load()
	s.drop(s.Current()) // the loop exchanges at once
	const span = time.Second
	deadline := time.Now().Add(span)
	for time.Now().Before(deadline) {
		if !s.Key().IsZero() {
			t.Fatal("a token expired on arrival is in service")
		}
		if k, err := s.Fresh(context.Background()); err == nil {
			t.Fatalf("Fresh returned %v, expired on arrival", k)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Waits drawn from [backoff/2, backoff]: at most span/(backoff/2)
	// reads, and one more begun at the start. Without backoff the loop
	// exchanged every 10 ms.
	if got, most := d.reads.Load()-n, int64(span/(backoff/2))+1; got > most {
		t.Fatalf("%d exchanges in %v with a %v backoff, want at most %d", got, span, backoff, most)
	}
	if d.reads.Load() == n {
		t.Fatal("no exchange after the drop")
	}
}
