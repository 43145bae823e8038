// Package telemetry holds the sidecar's Prometheus metrics and its
// redacting log helpers. Metrics on the request path are pre-curried per
// route, so that counting a request builds no label map; metrics of keys are
// read from each Source at scrape time. Usage metrics (tokens, estimated
// cost, unpriced tokens, requests by upstream error type) are pre-resolved
// per route and client, then per model and error type on first use; model
// labels are bounded by the price catalog (unknown models are "other").
// No metric carries a key value or a client token: keys appear as their
// version id and fingerprint only, clients by name.
package telemetry

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/keywarden/keywarden/providers"
)

// Namespace prefixes every metric name.
const Namespace = "keywarden"

// Metrics are the sidecar's metrics, in a registry of their own.
type Metrics struct {
	// Registry holds every metric, with the Go and process collectors.
	Registry *prometheus.Registry

	requests     *prometheus.CounterVec
	upstream     *prometheus.HistogramVec
	retries      *prometheus.CounterVec
	unauthorized *prometheus.CounterVec
	limited      *prometheus.CounterVec
	connWaits    prometheus.Counter
	connWaited   prometheus.Counter
	keys         *keyCollector
	usage        *usageMetrics

	mu     sync.Mutex
	routes map[string]*Route
}

// New returns Metrics in a new registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "sidecar", Name: "requests_total",
			Help: "Requests answered by the sidecar, by route and HTTP status (499: the client went away).",
		}, []string{"route", "code"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "sidecar", Name: "upstream_duration_seconds",
			Help:    "Time from sending a request upstream to its response headers, per attempt.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"route"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "sidecar", Name: "retries_total",
			Help: "Requests sent again after an upstream 401, by the key used: refreshed or previous.",
		}, []string{"route", "reason"}),
		unauthorized: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "sidecar", Name: "upstream_unauthorized_total",
			Help: "Upstream 401 authentication_error answers.",
		}, []string{"route"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "sidecar", Name: "rate_limited_total",
			Help: "Requests refused with 429 by the sidecar's own limits, by limit: rate or concurrency.",
		}, []string{"route", "limit"}),
		connWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "sidecar", Name: "upstream_connect_waits_total",
			Help: "New HTTPS upstream connections that waited for a handshake slot (all of the sidecar's slots were dialling or handshaking).",
		}),
		connWaited: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "sidecar", Name: "upstream_connect_wait_seconds_total",
			Help: "Time new HTTPS upstream connections spent waiting for a handshake slot.",
		}),
		keys:   &keyCollector{},
		usage:  newUsageMetrics(),
		routes: map[string]*Route{},
	}
	m.Registry.MustRegister(m.requests, m.upstream, m.retries, m.unauthorized, m.limited, m.connWaits, m.connWaited, m.keys,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.Registry.MustRegister(m.usage.collectors()...)
	return m
}

// Route returns the metrics of one route, creating them on first use.
func (m *Metrics) Route(name string) *Route {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.routes[name]; ok {
		return r
	}
	r := &Route{
		name:               name,
		vec:                m.requests,
		Upstream:           m.upstream.WithLabelValues(name),
		RetryRefreshed:     m.retries.WithLabelValues(name, "refreshed"),
		RetryPrevious:      m.retries.WithLabelValues(name, "previous"),
		Unauthorized:       m.unauthorized.WithLabelValues(name),
		RateLimited:        m.limited.WithLabelValues(name, "rate"),
		ConcurrencyLimited: m.limited.WithLabelValues(name, "concurrency"),
	}
	m.routes[name] = r
	return r
}

// Route holds one route's metrics, ready to use without label lookups.
type Route struct {
	name  string
	vec   *prometheus.CounterVec
	codes [600]atomic.Pointer[codeCounter]

	// Upstream observes the upstream latency of each attempt, in seconds.
	Upstream prometheus.Observer
	// RetryRefreshed and RetryPrevious count retries by the key used.
	RetryRefreshed, RetryPrevious prometheus.Counter
	// Unauthorized counts upstream 401 authentication_error answers.
	Unauthorized prometheus.Counter
	// RateLimited and ConcurrencyLimited count the sidecar's own 429s.
	RateLimited, ConcurrencyLimited prometheus.Counter
}

type codeCounter struct{ c prometheus.Counter }

// Request counts one answered request with its status code. After the
// first request with a code, it is one atomic load and one add.
func (r *Route) Request(code int) {
	if code < 0 || code >= len(r.codes) {
		r.vec.WithLabelValues(r.name, strconv.Itoa(code)).Inc()
		return
	}
	cc := r.codes[code].Load()
	if cc == nil {
		cc = &codeCounter{r.vec.WithLabelValues(r.name, strconv.Itoa(code))}
		r.codes[code].Store(cc) // a racing Store holds the same child
	}
	cc.c.Inc()
}

// ConnectWaited counts a new upstream connection that waited d for a
// handshake slot (a wait cut short by its request's end counts too).
func (m *Metrics) ConnectWaited(d time.Duration) {
	m.connWaits.Inc()
	m.connWaited.Add(d.Seconds())
}

// ObserveSince observes the time since start as an upstream latency.
func (r *Route) ObserveSince(start time.Time) { r.Upstream.Observe(time.Since(start).Seconds()) }

// WatchKey exports the state of a key's Source: version and fingerprint,
// age, store reads and failures, time of the last good read, and staleness.
// They are read from the Source at scrape time.
func (m *Metrics) WatchKey(name string, src *providers.Source) {
	m.keys.add(name, src)
}
