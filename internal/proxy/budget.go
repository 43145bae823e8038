package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/keywarden/keywarden/internal/proxy/settings"
	"github.com/prometheus/client_golang/prometheus"
)

// Budget bounds what a client, a route, or both may spend per window.
// Budgets hold per sidecar process: fleet-wide limits are alerts on the
// summed metrics. A request is checked against every budget it falls under
// before it is forwarded and counted after its answer, so the requests
// under way when a budget runs out can overshoot it.
type Budget struct {
	// Name labels the budget's metrics and its refusals
	// (settings.CheckClientName's rules).
	Name string
	// Client and Route select the requests: a client's name, a route's
	// Name (or its Listener); empty selects every client or route.
	Client, Route string
	// Tokens (all kinds together) or USD (estimated cost) is the limit
	// per Window; exactly one.
	Tokens int64
	USD    float64
	// Window is time.Minute, time.Hour or 24*time.Hour; windows are
	// aligned to UTC.
	Window time.Duration
}

// budget is a Budget's state: what was spent in the current window.
type budget struct {
	Budget
	refused prometheus.Counter
	unit    string

	mu     sync.Mutex
	window int64   // index of the current window (unix time / Window)
	spent  float64 // tokens or USD in it
}

func (o *Options) newBudgets() ([]*budget, error) {
	var errs []error
	names := map[string]bool{}
	out := make([]*budget, 0, len(o.Budgets))
	for _, b := range o.Budgets {
		if err := settings.CheckBudget(b.Name, b.Window, b.Tokens, b.USD); err != nil {
			errs = append(errs, err)
			continue
		}
		if names[b.Name] {
			errs = append(errs, fmt.Errorf("budget %s is defined twice", b.Name))
			continue
		}
		names[b.Name] = true
		bs := &budget{Budget: b, unit: "tokens"}
		if b.USD > 0 {
			bs.unit = "USD"
		}
		out = append(out, bs)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return out, nil
}

func (b *budget) limit() float64 {
	if b.USD > 0 {
		return b.USD
	}
	return float64(b.Tokens)
}

// roll moves b to the window of now. Called with mu held.
func (b *budget) roll(now time.Time) {
	w := now.Unix() / int64(b.Window/time.Second)
	if w != b.window {
		b.window, b.spent = w, 0
	}
}

// left returns whether b is spent at now, and the seconds to its reset.
func (b *budget) check(now time.Time) (spent bool, retryAfter int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.roll(now)
	if b.spent < b.limit() {
		return false, 0
	}
	secs := int64(b.Window / time.Second)
	return true, int(max(1, (b.window+1)*secs-now.Unix()))
}

func (b *budget) add(now time.Time, tokens int64, usd float64) {
	v := float64(tokens)
	if b.USD > 0 {
		v = usd
	}
	if v <= 0 {
		return
	}
	b.mu.Lock()
	b.roll(now)
	b.spent += v
	b.mu.Unlock()
}

// used returns the share of the current window spent, for the metrics.
func (b *budget) used(now time.Time) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.roll(now)
	return b.spent / b.limit()
}

// sdkWaitHorizon is the longest retry-after a refusal lets a client's SDK
// wait out. The official SDKs sleep for whatever retry-after says (the Go
// SDK without a cap) before their next try, so a spent hour or day budget
// would hold a request for up to a day; past this horizon the refusal adds
// x-should-retry: false, which the SDKs obey by failing at once with the
// 429 (whose retry-after still tells when the budget resets).
const sdkWaitHorizon = 60 // seconds

// refuse answers a request over b: 429 rate_limit_error, in the API's
// shape, naming the budget, with retry-after at the window's reset, and
// x-should-retry: false when that is further than sdkWaitHorizon.
func (b *budget) refuse(cc *clientConn, retryAfter int) {
	b.refused.Inc()
	per := map[time.Duration]string{time.Minute: "minute", time.Hour: "hour", 24 * time.Hour: "day"}[b.Window]
	lim := strconv.FormatInt(b.Tokens, 10)
	if b.USD > 0 {
		lim = strconv.FormatFloat(b.USD, 'f', -1, 64)
	}
	e := newAPIError(http.StatusTooManyRequests, "rate_limit_error", fmt.Sprintf(
		"keywarden: budget %q (%s %s per %s) is spent; it resets in %d seconds (retry-after)", b.Name, lim, b.unit, per, retryAfter))
	if retryAfter > sdkWaitHorizon {
		cc.header().Set("X-Should-Retry", "false")
	}
	e.write(cc, retryAfter)
}

// selects reports whether b applies to a request of client on rt.
func (b *budget) selects(rt *route, client string) bool {
	return (b.Client == "" || b.Client == client) && (b.Route == "" || b.Route == rt.Name || b.Route == rt.Listener)
}

// overBudget returns the first spent budget of rt's client ci, with the
// seconds to its reset.
func (p *Proxy) overBudget(rt *route, ci int) (*budget, int) {
	bs := rt.budgets[ci]
	if len(bs) == 0 {
		return nil, 0
	}
	now := p.now()
	for _, b := range bs {
		if spent, after := b.check(now); spent {
			return b, after
		}
	}
	return nil, 0
}

// charge counts what a request used against its budgets.
func (p *Proxy) charge(rt *route, ci int, tokens int64, usd float64) {
	bs := rt.budgets[ci]
	if len(bs) == 0 || tokens == 0 {
		return
	}
	now := p.now()
	for _, b := range bs {
		b.add(now, tokens, usd)
	}
}
