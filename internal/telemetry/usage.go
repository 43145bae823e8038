package telemetry

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keywarden/keywarden/internal/proxy/usage"
)

// Error label values of client requests besides usage.ErrorTypes.
const (
	// ErrorSidecar labels requests the sidecar answered itself because the
	// upstream could not be reached or timed out.
	ErrorSidecar = "sidecar_error"
)

// Indexes of the error labels after usage.ErrorTypes.
var (
	errOther   = len(usage.ErrorTypes)
	errNone    = errOther + 1
	errSidecar = errOther + 2
	errLabels  = append(append([]string{}, usage.ErrorTypes...), usage.OtherError, usage.NoError, ErrorSidecar)
)

// usageMetrics are the token, spend and rate-limit metrics.
type usageMetrics struct {
	tokens   *prometheus.CounterVec
	cost     *prometheus.CounterVec
	unpriced *prometheus.CounterVec
	requests *prometheus.CounterVec
	rlLimit  *prometheus.GaugeVec
	rlRemain *prometheus.GaugeVec
	rlReset  *prometheus.GaugeVec

	mu            sync.Mutex
	budgetRefused *prometheus.CounterVec // registered with the first budget
	budgetUsed    *funcGauges
	spends        map[[2]string]*Spend
	rls           map[string]*RateLimitGauges
}

func newUsageMetrics() *usageMetrics {
	sub := "sidecar"
	return &usageMetrics{
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "tokens_total",
			Help: "Tokens in Messages responses, by route, client, model (models not in the price table are \"other\") and kind (input, output, cache_creation, cache_read).",
		}, []string{"route", "client", "model", "kind"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "cost_usd_total",
			Help: "Estimated spend in US dollars at the price table's list prices, by route, client and model.",
		}, []string{"route", "client", "model"}),
		unpriced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "unpriced_tokens_total",
			Help: "Tokens of models without a price in the table (not in cost_usd_total), by route, client and model.",
		}, []string{"route", "client", "model"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "client_requests_total",
			Help: "Requests forwarded upstream, by route, client and upstream error type (none: no error; sidecar_error: the upstream was not reached; an SSE error event counts).",
		}, []string{"route", "client", "error_type"}),
		rlLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "upstream", Name: "ratelimit_limit",
			Help: "The upstream's rate limit per key and resource (requests, tokens, input_tokens, output_tokens), from the last anthropic-ratelimit-*-limit header.",
		}, []string{"key", "resource"}),
		rlRemain: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "upstream", Name: "ratelimit_remaining",
			Help: "What is left of the upstream's rate limit per key and resource, from the last anthropic-ratelimit-*-remaining header.",
		}, []string{"key", "resource"}),
		rlReset: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "upstream", Name: "ratelimit_reset_timestamp_seconds",
			Help: "Unix time at which the upstream's rate limit per key and resource is replenished, from the last anthropic-ratelimit-*-reset header.",
		}, []string{"key", "resource"}),
		spends: map[[2]string]*Spend{},
		rls:    map[string]*RateLimitGauges{},
	}
}

func (u *usageMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{u.tokens, u.cost, u.unpriced, u.requests, u.rlLimit, u.rlRemain, u.rlReset}
}

// Spend holds the usage metrics of one route and client, resolved on
// first use per model and error type, so that recording a request builds
// no label map.
type Spend struct {
	u             *usageMetrics
	route, client string
	cat           *usage.Catalog

	models []atomic.Pointer[modelCounters] // by catalog index
	errs   []atomic.Pointer[codeCounter]   // by errLabels index
}

type modelCounters struct {
	tokens   [usage.NumKinds]prometheus.Counter
	cost     prometheus.Counter
	unpriced prometheus.Counter
}

// Spend returns the usage metrics of a route and client, creating them on
// first use. Model labels are cat's names; the same route and client must
// always come with the same catalog.
func (m *Metrics) Spend(route, client string, cat *usage.Catalog) *Spend {
	u := m.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	k := [2]string{route, client}
	if s, ok := u.spends[k]; ok {
		return s
	}
	s := &Spend{u: u, route: route, client: client, cat: cat,
		models: make([]atomic.Pointer[modelCounters], cat.Len()),
		errs:   make([]atomic.Pointer[codeCounter], len(errLabels))}
	u.spends[k] = s
	return s
}

// Tokens adds the tokens of one response of the model at catalog index
// model, and their cost (or, for a model without a price, the unpriced
// tokens). It returns the cost in USD (0 when unpriced).
func (s *Spend) Tokens(model int, u usage.Usage) float64 {
	if model < 0 || model >= len(s.models) {
		model = s.cat.Other()
	}
	mc := s.models[model].Load()
	if mc == nil {
		name := s.cat.Name(model)
		mc = &modelCounters{
			cost:     s.u.cost.WithLabelValues(s.route, s.client, name),
			unpriced: s.u.unpriced.WithLabelValues(s.route, s.client, name),
		}
		for k := range usage.NumKinds {
			mc.tokens[k] = s.u.tokens.WithLabelValues(s.route, s.client, name, k.String())
		}
		s.models[model].Store(mc) // a racing Store holds the same children
	}
	for k, n := range u.Tokens {
		if n > 0 {
			mc.tokens[k].Add(float64(n))
		}
	}
	usd, ok := s.cat.Cost(model, u)
	if ok {
		if usd > 0 {
			mc.cost.Add(usd)
		}
	} else if n := u.Tokens.Total(); n > 0 {
		mc.unpriced.Add(float64(n))
	}
	return usd
}

// Request counts one forwarded request with its upstream error type
// (nil: none).
func (s *Spend) Request(errType []byte) {
	i := errNone
	if errType != nil {
		i = usage.ErrorIndex(errType)
	}
	s.request(i)
}

// SidecarError counts one forwarded request the sidecar answered itself
// because the upstream failed.
func (s *Spend) SidecarError() { s.request(errSidecar) }

func (s *Spend) request(i int) {
	cc := s.errs[i].Load()
	if cc == nil {
		cc = &codeCounter{s.u.requests.WithLabelValues(s.route, s.client, errLabels[i])}
		s.errs[i].Store(cc)
	}
	cc.c.Inc()
}

// RateLimitGauges are the upstream rate-limit gauges of one key.
type RateLimitGauges struct {
	g [len(usage.RateResources)][3]prometheus.Gauge
}

// RateLimit returns the rate-limit gauges of a key, creating them on first
// use.
func (m *Metrics) RateLimit(key string) *RateLimitGauges {
	u := m.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	if g, ok := u.rls[key]; ok {
		return g
	}
	g := &RateLimitGauges{}
	for i, r := range usage.RateResources {
		res := strings.ReplaceAll(r, "-", "_")
		g.g[i] = [3]prometheus.Gauge{u.rlLimit.WithLabelValues(key, res), u.rlRemain.WithLabelValues(key, res), u.rlReset.WithLabelValues(key, res)}
	}
	u.rls[key] = g
	return g
}

// Set records the headers present in rl.
func (g *RateLimitGauges) Set(rl *usage.RateLimits) {
	for i := range rl {
		r := &rl[i]
		if r.HasLimit {
			g.g[i][0].Set(float64(r.Limit))
		}
		if r.HasRemaining {
			g.g[i][1].Set(float64(r.Remaining))
		}
		if r.HasReset {
			g.g[i][2].Set(float64(r.Reset.Unix()))
		}
	}
}

// Budget registers the metrics of a budget: its use of the current window
// as a ratio (read at scrape time from used) and its refusals.
func (m *Metrics) Budget(name string, used func() float64) prometheus.Counter {
	u := m.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.budgetRefused == nil {
		u.budgetRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "sidecar", Name: "budget_refused_total",
			Help: "Requests refused with 429 because a budget of the sidecar was spent, by budget.",
		}, []string{"budget"})
		u.budgetUsed = &funcGauges{desc: prometheus.NewDesc(Namespace+"_sidecar_budget_used_ratio",
			"Share of each budget spent in its current window (1: spent; can pass 1 by the requests under way when it was reached).",
			[]string{"budget"}, nil)}
		m.Registry.MustRegister(u.budgetRefused, u.budgetUsed)
	}
	u.budgetUsed.add(name, used)
	return u.budgetRefused.WithLabelValues(name)
}

// funcGauges is one gauge per label value, read from a function at scrape
// time.
type funcGauges struct {
	desc *prometheus.Desc

	mu  sync.Mutex
	fns []namedFunc
}

type namedFunc struct {
	name string
	fn   func() float64
}

func (f *funcGauges) add(name string, fn func() float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fns = append(f.fns, namedFunc{name, fn})
}

// Describe sends the descriptor.
func (f *funcGauges) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }

// Collect reads every function.
func (f *funcGauges) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	fns := append([]namedFunc(nil), f.fns...)
	f.mu.Unlock()
	for _, nf := range fns {
		ch <- prometheus.MustNewConstMetric(f.desc, prometheus.GaugeValue, nf.fn(), nf.name)
	}
}
