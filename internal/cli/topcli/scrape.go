package topcli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keywarden/keywarden/internal/proxy/usage"
	"github.com/keywarden/keywarden/internal/telemetry"
)

// maxBody bounds the metrics body read from the endpoint (after any
// transport decompression): the body is untrusted input.
const maxBody = 8 << 20

// scrapeTimeout bounds one scrape.
const scrapeTimeout = 5 * time.Second

// The metrics top reads, as package telemetry names them.
const (
	mTokens    = telemetry.Namespace + "_sidecar_tokens_total"
	mCost      = telemetry.Namespace + "_sidecar_cost_usd_total"
	mUnpriced  = telemetry.Namespace + "_sidecar_unpriced_tokens_total"
	mRequests  = telemetry.Namespace + "_sidecar_client_requests_total"
	mBudget    = telemetry.Namespace + "_sidecar_budget_used_ratio"
	mRefused   = telemetry.Namespace + "_sidecar_budget_refused_total"
	mRLLimit   = telemetry.Namespace + "_upstream_ratelimit_limit"
	mRLRemains = telemetry.Namespace + "_upstream_ratelimit_remaining"
	mRLReset   = telemetry.Namespace + "_upstream_ratelimit_reset_timestamp_seconds"
)

// clientModel keys the token and spend counters, summed over routes.
type clientModel struct{ client, model string }

// keyResource keys the upstream rate-limit gauges.
type keyResource struct{ key, resource string }

// snapshot is one scrape, summed over routes.
type snapshot struct {
	at       time.Time
	clients  map[string]*clientStats
	models   map[clientModel]*modelStats
	budgets  map[string]*budgetStats
	limits   map[keyResource]*limitStats
	unpriced float64 // tokens of models without a price, every client
}

// clientStats are a client's forwarded requests.
type clientStats struct {
	requests float64            // every request, errors included
	errors   map[string]float64 // by error type, usage.NoError excluded
}

// modelStats are a client's tokens and spend on one model.
type modelStats struct {
	tokens   [usage.NumKinds]float64
	cost     float64
	unpriced float64
}

// budgetStats are one budget's gauge and refusals.
type budgetStats struct {
	used, refused float64
	hasUsed       bool
}

// limitStats are one key's upstream limit of one resource.
type limitStats struct {
	limit, remaining       float64
	reset                  float64 // Unix seconds; valid with hasReset
	hasLimit, hasRemaining bool
	hasReset               bool
}

func newSnapshot(at time.Time) *snapshot {
	return &snapshot{at: at, clients: map[string]*clientStats{}, models: map[clientModel]*modelStats{},
		budgets: map[string]*budgetStats{}, limits: map[keyResource]*limitStats{}}
}

// entry returns m[k], adding a new value made by mk when there is none.
func entry[K comparable, V any](m map[K]*V, k K, mk func() *V) *V {
	v := m[k]
	if v == nil {
		v = mk()
		m[k] = v
	}
	return v
}

func (s *snapshot) client(name string) *clientStats {
	return entry(s.clients, name, func() *clientStats { return &clientStats{errors: map[string]float64{}} })
}

func (s *snapshot) model(client, model string) *modelStats {
	return entry(s.models, clientModel{client, model}, func() *modelStats { return &modelStats{} })
}

func (s *snapshot) budget(name string) *budgetStats {
	return entry(s.budgets, name, func() *budgetStats { return &budgetStats{} })
}

func (s *snapshot) limit(key, resource string) *limitStats {
	return entry(s.limits, keyResource{key, resource}, func() *limitStats { return &limitStats{} })
}

// kindIndex maps a kind label onto its usage.Kind.
var kindIndex = func() map[string]usage.Kind {
	m := map[string]usage.Kind{}
	for k := range usage.NumKinds {
		m[k.String()] = k
	}
	return m
}()

// scrape reads the metrics at target once.
func scrape(ctx context.Context, c *http.Client, target string, now func() time.Time) (*snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("top: %w", err)
	}
	// The text format: without an Accept header promhttp answers with it
	// too, but a proxy in front of the sidecar might not.
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	at := now()
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is named below, without a password
		}
		return nil, fmt.Errorf("top: scrape %s (is the sidecar running, with its metrics there?): %w", shownURL(req.URL), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("top: GET %s: %s", shownURL(req.URL), resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("top: read %s: %w", shownURL(req.URL), err)
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("top: %s: the metrics body is larger than %d MiB", shownURL(req.URL), maxBody>>20)
	}
	return parse(b, at)
}

// errNotKeywarden reports a body without any keywarden metric.
var errNotKeywarden = errors.New("top: no keywarden metrics in the body; is this a keywarden sidecar's metrics address?")

// parse reads a Prometheus text exposition and sums the metrics top
// shows over routes. The body is untrusted: values that are negative or
// NaN are skipped, and so is +Inf but in a spend or a budget's used ratio
// (where a sidecar reports an overflowed spend, which the view shows);
// label values are kept as sent (the view sanitizes them).
func parse(b []byte, at time.Time) (*snapshot, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("top: parse metrics: %w", err)
	}
	s := newSnapshot(at)
	found := false
	for name, mf := range fams {
		found = found || strings.HasPrefix(name, telemetry.Namespace+"_")
		for _, m := range mf.GetMetric() {
			v, ok := value(m, name == mCost || name == mBudget)
			if !ok {
				continue
			}
			l := labels(m)
			switch name {
			case mTokens:
				if k, ok := kindIndex[l["kind"]]; ok {
					s.model(l["client"], l["model"]).tokens[k] += v
				}
			case mCost:
				s.model(l["client"], l["model"]).cost += v
			case mUnpriced:
				s.model(l["client"], l["model"]).unpriced += v
				s.unpriced += v
			case mRequests:
				c := s.client(l["client"])
				c.requests += v
				if et := l["error_type"]; et != usage.NoError {
					c.errors[et] += v
				}
			case mBudget:
				bs := s.budget(l["budget"])
				bs.used, bs.hasUsed = v, true
			case mRefused:
				s.budget(l["budget"]).refused += v
			case mRLLimit:
				ls := s.limit(l["key"], l["resource"])
				ls.limit, ls.hasLimit = v, true
			case mRLRemains:
				ls := s.limit(l["key"], l["resource"])
				ls.remaining, ls.hasRemaining = v, true
			case mRLReset:
				ls := s.limit(l["key"], l["resource"])
				ls.reset, ls.hasReset = v, true
			}
		}
	}
	if !found {
		return nil, errNotKeywarden
	}
	// A client that spent tokens has a row even when its request counter
	// is missing from the body.
	for k := range s.models {
		s.client(k.client)
	}
	return s, nil
}

// value returns a sample's value: counters, gauges and untyped samples
// (a body may omit TYPE lines); false for other types and for values that
// are NaN or negative, or +Inf unless inf.
func value(m *dto.Metric, inf bool) (float64, bool) {
	var v float64
	switch {
	case m.Counter != nil:
		v = m.Counter.GetValue()
	case m.Gauge != nil:
		v = m.Gauge.GetValue()
	case m.Untyped != nil:
		v = m.Untyped.GetValue()
	default:
		return 0, false
	}
	if math.IsNaN(v) || v < 0 || math.IsInf(v, 1) && !inf {
		return 0, false
	}
	return v, true
}

func labels(m *dto.Metric) map[string]string {
	l := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}
