package promtest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keywarden/keywarden/internal/telemetry"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/providertest"
)

// Consumer is a library Source (refresh 200ms) of a secret, exporting
// keywarden_key_info through internal/telemetry on a loopback /metrics
// endpoint, as a Go service or a sidecar does.
type Consumer struct {
	// Pod is the label its series get.
	Pod string
	// Source is the consumer's Source.
	Source *providers.Source
	r      *providertest.Faulty
	srv    *httptest.Server
}

// NewConsumer starts a consumer of secret (reported under the key name
// key) in st, labelled pod. It stops when the test ends.
func NewConsumer(t testing.TB, st driver.Reader, secret, key, pod string) *Consumer {
	t.Helper()
	r := providertest.NewFaulty(st)
	src, err := providers.New(context.Background(), r, secret, providers.Options{
		Refresh: 200 * time.Millisecond, Jitter: 50 * time.Millisecond, MaxStale: time.Hour,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	m := telemetry.New()
	m.WatchKey(key, src)
	srv := httptest.NewServer(promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	t.Cleanup(func() { srv.Close(); src.Close() })
	return &Consumer{Pod: pod, Source: src, r: r, srv: srv}
}

// Fail makes the consumer's store reads fail (true) or work again.
func (c *Consumer) Fail(failing bool) {
	if failing {
		c.r.Fail(errUnreachable)
		return
	}
	c.r.Fail(nil)
}

// errUnreachable is what a failing consumer's store reads return.
var errUnreachable = codes.Errorf(codes.Unavailable, "promtest: the store is unreachable from this pod")

// Fingerprint is the fingerprint of the key the consumer holds.
func (c *Consumer) Fingerprint() string { return c.Source.Current().Fingerprint }

// Target is the consumer's scrape target, labelled pod.
func (c *Consumer) Target() Target {
	return Target{Addr: strings.TrimPrefix(c.srv.URL, "http://"), Labels: map[string]string{"pod": c.Pod}}
}

// Eventually polls cond until it holds, failing t after a minute.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within a minute: %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
