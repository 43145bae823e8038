package proxy

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/telemetry"
	"github.com/keywarden/keywarden/providers"
)

// newBaseTransport returns the upstream transport: an idle pool sized to
// the load, no compression negotiation (bodies pass through as they come),
// HTTP/2 to https upstreams, a response header timeout, and no overall
// timeout, so that long streams are never cut.
func newBaseTransport(o *Options) *http.Transport {
	idle := 1024
	if o.Concurrency > 0 {
		idle = max(o.Concurrency, 64)
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   idle,
		IdleConnTimeout:       o.IdleTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: o.HeaderTimeout,
		DisableCompression:    true,
		// Default 4 KiB connection buffers: a held stream costs two of them;
		// large bodies bypass them (reads of a buffer's size or more go to
		// the connection directly).
	}
}

// timed observes each attempt's time to response headers.
type timed struct {
	next http.RoundTripper
	m    *telemetry.Route
}

func (t timed) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(r)
	t.m.ObserveSince(start)
	return resp, err
}

// owned hands the reverse proxy's outgoing request, which it owns, to the
// shared providers.Transport without another copy of its headers.
type owned struct{ t *providers.Transport }

func (o owned) RoundTrip(r *http.Request) (*http.Response, error) { return o.t.RoundTripOwned(r) }

// copyBufferSize is the reverse proxy's copy buffer: large enough for most
// non-streaming answers in one read, small enough that a thousand held
// streams cost 16 MiB.
const copyBufferSize = 16 << 10

// bufferPool lends the buffers the reverse proxy copies bodies with.
// A channel, unlike sync.Pool, takes a []byte back without allocating.
type bufferPool chan []byte

func (p bufferPool) Get() []byte {
	select {
	case b := <-p:
		return b
	default:
		return make([]byte, copyBufferSize)
	}
}

func (p bufferPool) Put(b []byte) {
	select {
	case p <- b:
	default:
	}
}

// newReverseProxy builds the reverse proxy of one route around the shared
// base transport.
func (p *Proxy) newReverseProxy(rt *route, base http.RoundTripper) *httputil.ReverseProxy {
	up := rt.Upstream
	plainHost := up.Path == "" || up.Path == "/"
	lg := p.log.With("route", rt.Name, "key", rt.Key)
	rt.tr = &providers.Transport{
		Source:        rt.Source,
		Base:          timed{base, rt.m},
		Auth:          rt.Auth,
		Version:       rt.Version,
		VersionPolicy: rt.VersionPolicy,
		MaxRetryBody:  p.opts.MaxRetryBody,
		OnEvent:       p.onEvent(rt, lg),
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			if plainHost {
				pr.Out.URL.Scheme = up.Scheme
				pr.Out.URL.Host = up.Host
				pr.Out.Host = ""
			} else {
				pr.SetURL(up)
			}
			// The Transport sets the auth header it uses and deletes the
			// other; the token header and the client-address headers
			// never leave.
			stripClientHeaders(pr.Out.Header)
		},
		Transport: owned{rt.tr},
		// 0, not -1: the reverse proxy flushes every write by itself for
		// SSE and for bodies of unknown length (chunked), and writes a
		// response of known length in one piece; -1 would flush its
		// headers on their own first, from a timer, costing a write.
		FlushInterval: 0,
		BufferPool:    p.buffers,
		ErrorLog:      log.New(slogWriter{lg}, "", 0),
		ModifyResponse: func(resp *http.Response) error {
			rt.m.Request(resp.StatusCode)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.upstreamError(rt, lg, w, r, err)
		},
	}
}

func (p *Proxy) upstreamError(rt *route, log *slog.Logger, w http.ResponseWriter, r *http.Request, err error) {
	mw, _ := w.(*meterWriter)
	if mw != nil {
		mw.own = true
	}
	if r.Context().Err() != nil {
		if mw != nil {
			mw.gone = true
		}
		// The client went away (or the server is closing): nobody to answer.
		rt.m.Request(499)
		log.Debug("proxy: client went away", "path", r.URL.Path, "error", err)
		return
	}
	e := errUpstream
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		e = errUpstreamTimeout
	}
	rt.m.Request(e.status)
	log.Warn("proxy: upstream request failed", "path", r.URL.Path, "status", e.status, "error", err)
	e.write(w, 0)
}

func (p *Proxy) onEvent(rt *route, log *slog.Logger) func(providers.Event) {
	return func(ev providers.Event) {
		switch ev.Kind {
		case providers.EventUnauthorized:
			rt.m.Unauthorized.Inc()
			log.Warn("proxy: upstream rejected the key", "version", ev.Key.VersionID, "fingerprint", ev.Key.Fingerprint)
		case providers.EventRetryRefreshed:
			rt.m.RetryRefreshed.Inc()
			log.Info("proxy: retrying with the refreshed key", "version", ev.Key.VersionID, "fingerprint", ev.Key.Fingerprint)
		case providers.EventRetryPrevious:
			rt.m.RetryPrevious.Inc()
			log.Warn("proxy: the store still holds the rejected key; retrying with PREVIOUS", "version", ev.Key.VersionID, "fingerprint", ev.Key.Fingerprint)
		case providers.EventRefreshFailed:
			log.Warn("proxy: refresh after a 401 failed", "error", ev.Err)
		default:
			log.Warn("proxy: 401 not retried", "reason", ev.Kind.String())
		}
	}
}

// slogWriter turns the reverse proxy's log.Logger lines into slog records.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(b)))
	return len(b), nil
}
