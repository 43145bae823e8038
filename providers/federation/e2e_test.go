package federation_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/proxytest"
	"github.com/keywarden/keywarden/providers"
)

// TestKeylessUnderLoad is the end-to-end proof of the keyless mode: the
// library client and the sidecar, each on its own federation source, under
// steady load with tokens that live two seconds, across at least 20
// refreshes each and one early revocation of each one's token: zero failed
// requests. It logs requests, refreshes and the smallest and largest
// margin between a token's replacement and its expiry.
func TestKeylessUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: about 25 s")
	}
	const refreshes = 20
	f := newFixture(t, 2*time.Second)
	open := func() *providers.Source {
		src, err := providers.Open(context.Background(), f.url(""), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return src
	}
	lib, side := open(), open()

	upstream, _ := url.Parse(f.srv.URL())
	p, err := proxy.New(proxy.Options{Routes: []proxy.Route{
		{Prefix: "/", Key: "claude", Source: side, Upstream: upstream, Version: "2023-06-01"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	sidecar := proxytest.NewServer(p)
	defer sidecar.Close()
	defer p.CloseIdleConnections()

	// Token replacements, per source: the old token's expiry minus the
	// time of the change.
	type margins struct {
		mu   sync.Mutex
		list []time.Duration
	}
	watch := func(src *providers.Source, m *margins) {
		prev := src.Current()
		var mu sync.Mutex
		src.Subscribe(func(c providers.Change) {
			mu.Lock()
			defer mu.Unlock()
			m.mu.Lock()
			m.list = append(m.list, prev.Expires.Sub(c.At))
			m.mu.Unlock()
			prev = src.Current()
		})
	}
	var libM, sideM margins
	watch(lib, &libM)
	watch(side, &sideM)
	count := func(m *margins) int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.list) }

	libClient := providers.NewClient(lib)
	appClient := &http.Client{}
	var requests, failures atomic.Int64
	var failMu sync.Mutex
	var failMsgs []string
	fail := func(s string) {
		failures.Add(1)
		failMu.Lock()
		if len(failMsgs) < 5 {
			failMsgs = append(failMsgs, s)
		}
		failMu.Unlock()
	}
	send := func(c *http.Client, base string, hdr http.Header) {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages/count_tokens",
			strings.NewReader(`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}`))
		req.Header = hdr.Clone()
		req.Header.Set("Content-Type", "application/json")
		requests.Add(1)
		resp, err := c.Do(req)
		if err != nil {
			fail(err.Error())
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fail(fmt.Sprintf("%d %s", resp.StatusCode, b))
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				send(libClient, f.srv.URL(), http.Header{})
			}
		})
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// The application sends its own placeholder key and a
				// beta of its own; the sidecar replaces the one and
				// merges into the other.
				send(appClient, sidecar.URL, http.Header{"X-Api-Key": {"placeholder"}, "Anthropic-Beta": {"token-counting-2024-11-01"}})
			}
		})
	}
	waitFor(t, "ten refreshes", func() bool { return count(&libM) >= 10 && count(&sideM) >= 10 })
	// Revoke each source's token early: the next requests meet a 401,
	// which forces one re-exchange and a retry.
	revoked := []string{lib.Current().Value.Reveal(), side.Current().Value.Reveal()}
	for _, v := range revoked {
		if !f.srv.RevokeToken(v) {
			t.Fatal("revoked an unknown token")
		}
	}
	waitFor(t, fmt.Sprintf("%d refreshes", refreshes), func() bool {
		return count(&libM) >= refreshes+1 && count(&sideM) >= refreshes+1
	})
	close(stop)
	wg.Wait()

	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed, e.g. %q", n, requests.Load(), failMsgs)
	}
	rejected := f.srv.Count(http.StatusUnauthorized)
	if rejected == 0 {
		t.Fatal("the revoked tokens were never rejected: the revocation was not exercised")
	}
	// The sources still refresh: their lists are read under their locks.
	snapshot := func(m *margins) []time.Duration { m.mu.Lock(); defer m.mu.Unlock(); return slices.Clone(m.list) }
	lists := [][]time.Duration{snapshot(&libM), snapshot(&sideM)}
	for _, list := range lists {
		for i, d := range list {
			if d <= 0 {
				t.Errorf("replacement %d came %v after the old token expired", i+1, -d)
			}
		}
	}
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for _, list := range lists {
		for _, d := range list {
			lo, hi = min(lo, d), max(hi, d)
		}
	}
	ok, refused := f.srv.Exchanges()
	t.Logf("keyless under load: %d requests, 0 failed; %d refreshes (library %d, sidecar %d), %d exchanges (%d refused); "+
		"%d upstream 401s from the 2 revoked tokens, each retried once; token replaced between %v and %v before its expiry (life 2s)",
		requests.Load(), count(&libM)+count(&sideM), count(&libM), count(&sideM), ok, refused, rejected,
		lo.Round(time.Millisecond), hi.Round(time.Millisecond))
	if leaks := f.srv.LeakedOAuth(strings.Join(failMsgs, "\n")); len(leaks) > 0 {
		t.Fatalf("failure messages leak %v", leaks)
	}
}
