// Package proxy is keywarden's sidecar: a reverse proxy to the Claude API
// (or another upstream) that puts the key of a providers.Source on every
// request, so that applications hold no key at all.
//
// In front of the upstream it refuses what a key-holding proxy must never
// do: methods outside AllowMethods, forward-proxy requests (absolute URIs,
// CONNECT, "OPTIONS *"), paths outside the
// allowlist, the Admin API, clients without the client token when one is
// set, and clients over their rate or concurrency limit; each refusal is an
// error in the API's own shape. Behind it, the key rule shared with the Go
// library (providers.Attempt, which providers.Transport follows too)
// injects the key and, on a 401, refreshes the Source and retries once.
// Both sides speak HTTP/1.1 on fasthttp's wire format (its request header
// parser and its response writer and parser) with this package's own
// connection handling: clients are served one goroutine per connection
// (conn.go), the upstream over a pool of keep-alive connections
// (upstream.go), and a request runs on its client's goroutine from start to
// end. Streams (SSE, bodies of unknown length) reach the client before the
// sidecar waits on the upstream again, never held back; a client
// that goes away cancels its upstream request, while it waits for the
// answer's headers as well as during a stream.
package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/proxy/settings"
	"github.com/keywarden/keywarden/internal/proxy/usage"
	"github.com/keywarden/keywarden/internal/telemetry"
	"github.com/keywarden/keywarden/providers"
)

// Route sends the requests under a path prefix, or those on a listener of
// its own, to an upstream with the key of a Source.
type Route struct {
	// Name labels the route's metrics and logs (default: Prefix, or
	// "listener " + Listener).
	Name string
	// Prefix is "/" or a prefix such as "/staging", removed before
	// forwarding. Exactly one of Prefix and Listener.
	Prefix string
	// Listener is a TCP address that serves this route alone.
	Listener string
	// Key names the key, for logs.
	Key string
	// Source supplies the key. Required.
	Source *providers.Source
	// Upstream is the upstream base URL (settings.DefaultUpstream when nil).
	Upstream *url.URL
	// Auth, Version and VersionPolicy configure the providers.Transport.
	// An empty Version is providers.DefaultAnthropicVersion with
	// AuthAPIKey and none with AuthBearer (see settings.RouteVersion).
	Auth          providers.Auth
	Version       string
	VersionPolicy providers.VersionPolicy
}

// Options configure a Proxy. Zero fields take the defaults noted.
type Options struct {
	// Routes are the routes; at least one.
	Routes []Route
	// AllowPaths are the upstream path prefixes forwarded
	// (settings.DefaultAllowPaths);
	// each must pass settings.CheckAllowPath.
	AllowPaths []string
	// ClientToken, when not empty, must come with every request: it is the
	// client settings.DefaultClient.
	ClientToken string
	// Clients are named clients, each known by its token; with them (or
	// ClientToken) every request must carry one client's token. Without
	// any, every request is the client settings.LocalClient.
	Clients []Client
	// Budgets bound spending per client and route (see Budget).
	Budgets []Budget
	// Prices add to or replace usage.DefaultPrices, by model id.
	Prices map[string]usage.Price
	// MaxRetryBody is the largest body kept for a retry after a 401
	// (providers.DefaultMaxRetryBody; negative keeps none).
	MaxRetryBody int64
	// RPS and Burst limit each client's request rate (RPS 0 or negative:
	// off; Burst 0: twice RPS, at least 1); Concurrency limits its requests
	// under way (0 or negative: off). The sidecar command sets settings.DefaultRPS
	// and settings.DefaultConcurrency when its config leaves them unset.
	RPS         float64
	Burst       int
	Concurrency int
	// HeaderTimeout bounds the wait for upstream response headers, and
	// for an upstream that reads nothing of a request body
	// (settings.DefaultHeaderTimeout).
	HeaderTimeout time.Duration
	// ClientHeaderTimeout bounds reading a client's request headers
	// (settings.DefaultClientHeaderTimeout).
	ClientHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections, and cuts off a
	// client that reads nothing of its answer for as long
	// (settings.DefaultIdleTimeout).
	IdleTimeout time.Duration
	// ShutdownTimeout bounds the drain of in-flight requests
	// (settings.DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// Listen is the main TCP address; UnixSocket a unix socket path; both
	// serve the prefix routes. MetricsListen serves /healthz, /readyz and
	// /metrics. Empty: not opened.
	Listen, UnixSocket, MetricsListen string
	// Metrics receives the metrics (a new set when nil).
	Metrics *telemetry.Metrics
	// ReadyChecks are more conditions of /readyz beside the keys' health,
	// e.g. a file sink that holds the current key; each error (redacted)
	// is a line of the 503's text.
	ReadyChecks []func() error
	// Logger receives events; never key values (slog.Default()).
	Logger *slog.Logger
}

// Proxy is the sidecar's request handling. Create it with New.
type Proxy struct {
	opts    Options
	log     *slog.Logger
	metrics *telemetry.Metrics
	allow   []string
	clients []clientEntry
	cat     *usage.Catalog
	budgets []*budget
	now     func() time.Time // time.Now; tests move it (export_test.go)
	// noAccount turns the accounting off, for benchmarks (export_test.go).
	noAccount bool
	limit     *limiter
	buffers   bufferPool // for bodies of known length
	// streamBuffers are for streams and bodies of unknown length.
	streamBuffers bufferPool
	bodies        bodyPool
	pools         map[string]*hostPool // by scheme://host
	refused       *telemetry.Route     // refusals before a route is known

	prefixes  []*route // longest prefix first
	listeners map[string]*route
	sources   []namedSource
}

type namedSource struct {
	name string
	src  *providers.Source
}

type route struct {
	Route
	m       *telemetry.Route
	spends  []*telemetry.Spend // by client index
	budgets [][]*budget        // by client index: the budgets that apply
	rl      *telemetry.RateLimitGauges
	tr      *providers.Transport // the key and 401 rule
	target  upstreamTarget
	log     *slog.Logger
}

// New validates o and builds the Proxy.
func New(o Options) (*Proxy, error) {
	if len(o.Routes) == 0 {
		return nil, errors.New("proxy: no routes")
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	o.setDefaults()
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = telemetry.New()
	}
	p := &Proxy{
		opts:          o,
		log:           o.Logger,
		metrics:       o.Metrics,
		allow:         o.AllowPaths,
		limit:         newLimiter(o.RPS, o.Burst, o.Concurrency),
		buffers:       newBufferPool(copyBufferSize),
		streamBuffers: newBufferPool(streamBufferSize),
		listeners:     map[string]*route{},
		refused:       o.Metrics.Route("-"),
	}
	var err error
	if p.clients, err = newClients(&o); err != nil {
		return nil, err
	}
	if p.cat, err = usage.NewCatalog(o.Prices); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p.now = time.Now
	if p.budgets, err = o.newBudgets(); err != nil {
		return nil, err
	}
	for _, b := range p.budgets {
		b.refused = o.Metrics.Budget(b.Name, func() float64 { return b.used(p.now()) })
	}
	p.pools = map[string]*hostPool{}
	maxIdle := 1024
	if o.Concurrency > 0 {
		maxIdle = max(o.Concurrency, 64)
	}
	seen := map[string]bool{}
	for i, r := range o.Routes {
		if r.Source == nil {
			return nil, fmt.Errorf("proxy: route %d has no Source", i)
		}
		if r.Upstream == nil {
			r.Upstream, _ = url.Parse(settings.DefaultUpstream)
		}
		r.Version = settings.RouteVersion(r.Version, r.Auth)
		if (r.Prefix == "") == (r.Listener == "") {
			return nil, fmt.Errorf("proxy: route %d needs exactly one of Prefix and Listener", i)
		}
		if r.Prefix != "" {
			r.Prefix = "/" + strings.Trim(r.Prefix, "/")
		}
		if r.Name == "" {
			r.Name = r.Prefix
			if r.Listener != "" {
				r.Name = "listener " + r.Listener
			}
		}
		rt := &route{Route: r, m: o.Metrics.Route(r.Name), rl: o.Metrics.RateLimit(r.Key)}
		for _, c := range p.clients {
			rt.spends = append(rt.spends, o.Metrics.Spend(r.Name, c.name, p.cat))
			var bs []*budget
			for _, b := range p.budgets {
				if b.selects(rt, c.name) {
					bs = append(bs, b)
				}
			}
			rt.budgets = append(rt.budgets, bs)
		}
		if err := p.newUpstream(rt, maxIdle); err != nil {
			return nil, err
		}
		if r.Listener != "" {
			p.listeners[r.Listener] = rt
		} else {
			p.prefixes = append(p.prefixes, rt)
		}
		if !seen[r.Key] {
			seen[r.Key] = true
			p.sources = append(p.sources, namedSource{r.Key, r.Source})
			o.Metrics.WatchKey(r.Key, r.Source)
		}
	}
	sort.SliceStable(p.prefixes, func(i, j int) bool { return len(p.prefixes[i].Prefix) > len(p.prefixes[j].Prefix) })
	return p, nil
}

// hasListener reports whether a route has its own listener at addr.
func (p *Proxy) hasListener(addr string) bool { _, ok := p.listeners[addr]; return ok }

// Routes returns the routes as the Proxy serves them, defaults filled in:
// prefix routes longest prefix first, then the listener routes.
func (p *Proxy) Routes() []Route {
	out := make([]Route, 0, len(p.prefixes)+len(p.listeners))
	for _, rt := range p.prefixes {
		out = append(out, rt.Route)
	}
	for _, rt := range p.listeners {
		out = append(out, rt.Route)
	}
	return out
}

// Transport returns the providers.Transport of the route called name, nil
// when there is none: the one implementation of the 401 rule, shared with
// the library.
func (p *Proxy) Transport(name string) *providers.Transport {
	for _, rt := range p.prefixes {
		if rt.Name == name {
			return rt.tr
		}
	}
	for _, rt := range p.listeners {
		if rt.Name == name {
			return rt.tr
		}
	}
	return nil
}

// CloseIdleConnections closes the upstream connections not in use.
func (p *Proxy) CloseIdleConnections() {
	for _, hp := range p.pools {
		hp.closeIdle()
	}
}

// newUpstream sets up the route's upstream: its connection pool (one per
// upstream host, shared by the routes to it) and the Transport of its key.
func (p *Proxy) newUpstream(rt *route, maxIdle int) error {
	up := rt.Upstream
	rt.log = p.log.With("route", rt.Name, "key", rt.Key)
	rt.tr = &providers.Transport{
		Source:        rt.Source,
		Auth:          rt.Auth,
		Version:       rt.Version,
		VersionPolicy: rt.VersionPolicy,
		MaxRetryBody:  p.opts.MaxRetryBody,
		OnEvent:       p.onEvent(rt, rt.log),
	}
	k := up.Scheme + "://" + up.Host
	hp := p.pools[k]
	if hp == nil {
		var err error
		if hp, err = newHostPool(up, maxIdle, p.opts.IdleTimeout); err != nil {
			return err
		}
		hp.waited = p.opts.Metrics.ConnectWaited
		p.pools[k] = hp
	}
	rt.target = upstreamTarget{pool: hp, path: strings.TrimSuffix(up.EscapedPath(), "/"), query: up.RawQuery}
	return nil
}

// handler serves one listener: fixed is its route, or nil to route by
// prefix.
type handler struct {
	p     *Proxy
	fixed *route
}

// request is what the guards and the forwarding read of a request.
type request struct {
	method string
	url    url.URL // path (decoded) and query (parseTarget: url.ParseRequestURI's reading, as net/http's server)
	header *fields
	addr   string // the client's address
}

// serve admits or refuses the request of cc, then forwards it.
func (h handler) serve(cc *clientConn) {
	p := h.p
	method, ok := allowedMethod(cc.req.Method())
	if !ok {
		cc.header().Set("Allow", allowHeader)
		p.refuse(cc, p.refused, &errMethod)
		return
	}
	uri := cc.req.RequestURI()
	if forwardProxyRequest(uri) {
		p.refuse(cc, p.refused, &errNotProxy)
		return
	}
	r := &request{method: method, header: &cc.hdr, addr: cc.addr}
	if parseTarget(string(uri), &r.url) != nil {
		p.refuse(cc, p.refused, &errBadTarget)
		return
	}
	u := &r.url
	ci := 0
	if p.tokens() {
		var ok bool
		if ci, ok = p.identify(r.header); !ok {
			p.refuse(cc, p.refused, &errToken)
			return
		}
	}
	rt, path := h.fixed, u.Path
	if rt == nil {
		rt, path = p.match(path)
		if rt == nil {
			p.refuse(cc, p.refused, &errNoRoute)
			return
		}
	}
	if e := p.checkPath(path); e != nil {
		p.refuse(cc, rt.m, e)
		return
	}
	lim, id := p.limit, r.addr
	if ce := &p.clients[ci]; ce.limit != nil {
		lim, id = ce.limit, ce.name
	}
	if lim != nil {
		c, why, after := lim.acquire(id)
		switch why {
		case overRate:
			rt.m.RateLimited.Inc()
			rt.m.Request(http.StatusTooManyRequests)
			errRate.write(cc, after)
			return
		case overConcurrency:
			rt.m.ConcurrencyLimited.Inc()
			rt.m.Request(http.StatusTooManyRequests)
			errConcurrency.write(cc, after)
			return
		}
		defer func() {
			if s := cc.parked; s != nil {
				s.lim, s.limClient = lim, c // released as the stream ends
			} else {
				lim.release(c)
			}
		}()
	}
	if b, after := p.overBudget(rt, ci); b != nil {
		rt.m.Request(http.StatusTooManyRequests)
		b.refuse(cc, after)
		return
	}
	messages := path == "/v1/messages" && r.method == http.MethodPost
	if r.method != http.MethodGet {
		// The accounting reads answers as they pass: a compressed one
		// (gzip, which the SDKs' HTTP clients ask for by default) would be
		// unreadable, and the tokens and error type of the call lost. So
		// the upstream is asked for plain answers to everything but GETs
		// (downloads: lists, batch results, file contents), where the
		// client's compression is kept. identity, not no header: without
		// one any coding is acceptable (RFC 9110, 12.5.3).
		r.header.Replace("Accept-Encoding", hdrIdentity)
	}
	if path != u.Path {
		u.Path, u.RawPath = path, "" // the prefix removed, as http.StripPrefix does
	}
	if p.noAccount {
		p.forward(rt, cc, r, nil)
		return
	}
	mw := getMeterWriter(rt.rl, messages)
	// Deferred: the tokens of an answer cut short (the client gone
	// mid-stream, the upstream breaking off) that its message_start
	// already reported were billed all the same: they count, and budgets
	// see them.
	defer func() {
		if s := cc.parked; s != nil {
			s.settle, s.ci = true, ci // as the stream ends
		} else {
			p.settle(rt, ci, mw)
		}
	}()
	p.forward(rt, cc, r, mw)
}

var hdrIdentity = []string{"identity"}

// settle accounts for a forwarded request's answer, as far as it went, and
// charges its budgets.
func (p *Proxy) settle(rt *route, ci int, mw *meterWriter) {
	if tokens, usd := mw.account(rt.spends[ci], p.cat); tokens > 0 {
		p.charge(rt, ci, tokens, usd)
	}
	putMeterWriter(mw)
}

func (p *Proxy) refuse(cc *clientConn, m *telemetry.Route, e *apiError) {
	m.Request(e.status)
	e.write(cc, 0)
}

// match returns the route of the longest prefix holding path, and the path
// with the prefix removed.
func (p *Proxy) match(path string) (*route, string) {
	for _, rt := range p.prefixes {
		if rt.Prefix == "/" {
			return rt, path
		}
		if settings.UnderPrefix(path, rt.Prefix) {
			rest := path[len(rt.Prefix):]
			if rest == "" {
				rest = "/"
			}
			return rt, rest
		}
	}
	return nil, ""
}
