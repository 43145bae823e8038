package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keywarden/keywarden/internal/proxy/settings"
	"github.com/keywarden/keywarden/providers/redact"
)

// Server is a Proxy's open listeners. Create it with Listen (or Attach).
type Server struct {
	p     *Proxy
	addrs map[string]net.Addr // see Addr

	fronts  []front        // the proxy's listeners
	metrics []*http.Server // the metrics listener's server
	mlns    []net.Listener
	closing atomic.Bool

	mu         sync.Mutex
	conns      map[*clientConn]struct{}
	drained    chan struct{} // closed when closing and no connection is left
	socket     string        // unix socket path to remove on shutdown
	socketInfo os.FileInfo   // the socket this server created there
}

// front is one listener of the proxy and its handler.
type front struct {
	ln net.Listener
	h  handler
}

func newServer(p *Proxy) *Server {
	return &Server{p: p, addrs: map[string]net.Addr{}, conns: map[*clientConn]struct{}{}, drained: make(chan struct{})}
}

// Listen opens every listener of the Proxy: the main address, the unix
// socket, each route's listener, and the metrics address.
func (p *Proxy) Listen() (*Server, error) {
	s := newServer(p)
	fail := func(err error) (*Server, error) {
		for _, f := range s.fronts {
			_ = f.ln.Close()
		}
		for _, ln := range s.mlns {
			_ = ln.Close()
		}
		if s.socket != "" {
			_ = os.Remove(s.socket)
		}
		return nil, err
	}
	main := handler{p: p}
	if a := p.opts.Listen; a != "" {
		if err := s.listenTCP("listen", a, main); err != nil {
			return fail(err)
		}
	}
	if path := p.opts.UnixSocket; path != "" {
		if err := s.listenUnix(path, main); err != nil {
			return fail(err)
		}
	}
	for addr, rt := range p.listeners {
		if err := s.listenTCP(addr, addr, handler{p: p, fixed: rt}); err != nil {
			return fail(err)
		}
	}
	if a := p.opts.MetricsListen; a != "" {
		if err := s.listenMetrics(a, p.HealthHandler()); err != nil {
			return fail(err)
		}
	}
	return s, nil
}

// Attach returns a Server of the prefix routes on ln, a listener the
// caller opened (Addr("listen") is its address); Serve it as one of
// Listen.
func (p *Proxy) Attach(ln net.Listener) *Server {
	s := newServer(p)
	s.addrs["listen"] = ln.Addr()
	s.fronts = append(s.fronts, front{ln: ln, h: handler{p: p}})
	return s
}

// ServeConn serves the prefix routes on one client connection until it
// closes: for callers with a connection of their own (an in-memory pipe).
func (p *Proxy) ServeConn(c net.Conn) {
	cc := newClientConn(newServer(p), handler{p: p}, c)
	cc.closed = make(chan struct{})
	cc.serve()
	<-cc.closed
}

// Addr returns the bound address (useful with port 0) of "listen" (the
// main address), "unix" (the socket), "metrics", or of a route's listener
// by its configured address; nil when there is no such listener.
func (s *Server) Addr(which string) net.Addr { return s.addrs[which] }

func (s *Server) listenTCP(name, addr string, h handler) error {
	if err := settings.CheckListen(addr, s.p.tokens()); err != nil {
		return fmt.Errorf("proxy: listen: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("proxy: listen on %s: %w", addr, err)
	}
	s.addrs[name] = ln.Addr()
	s.fronts = append(s.fronts, front{ln: ln, h: h})
	return nil
}

func (s *Server) listenMetrics(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("proxy: listen on %s: %w", addr, err)
	}
	s.addrs["metrics"] = ln.Addr()
	s.mlns = append(s.mlns, ln)
	s.metrics = append(s.metrics, &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.p.opts.ClientHeaderTimeout,
		IdleTimeout:       s.p.opts.IdleTimeout,
		ErrorLog:          log.New(slogWriter{s.p.log}, "", 0),
	})
	return nil
}

func (s *Server) listenUnix(path string, h handler) error {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return fmt.Errorf("proxy: unix socket %s: the path exists and is not a socket; remove it or pick another path", path)
		}
		// A live socket is another process's (a second sidecar started on
		// the same path): taking it would cut that one off. Only a socket
		// nobody answers on is a stale one of an earlier run.
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return fmt.Errorf("proxy: unix socket %s: another process is serving on it; stop it or pick another path", path)
		}
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("proxy: listen on unix socket %s: %w", path, err)
	}
	s.socket = path
	if fi, err := os.Lstat(path); err == nil {
		s.socketInfo = fi
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return fmt.Errorf("proxy: unix socket %s: %w", path, err)
	}
	s.addrs["unix"] = ln.Addr()
	s.fronts = append(s.fronts, front{ln: ln, h: h})
	return nil
}

// Serve serves every listener until Shutdown or Close; it returns nil
// after them, or the first listener's error.
func (s *Server) Serve() error {
	n := len(s.fronts) + len(s.metrics)
	errs := make(chan error, n)
	for _, f := range s.fronts {
		go func() { errs <- s.accept(f) }()
	}
	for i, srv := range s.metrics {
		go func() {
			err := srv.Serve(s.mlns[i])
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
			go s.Close()
		}
	}
	return first
}

// accept serves the connections of one listener until it closes.
func (s *Server) accept(f front) error {
	var pause time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("proxy: listener %s: %w", f.ln.Addr(), err)
			}
			// Out of file descriptors and the like: wait, as net/http does.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.p.log.Warn("proxy: accept failed; retrying", "error", err, "in", pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		cc := newClientConn(s, f.h, c)
		if !s.track(cc) {
			cc.release()
			continue
		}
		go cc.serve()
	}
}

// track registers a new connection; false once the server is closing.
func (s *Server) track(cc *clientConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[cc] = struct{}{}
	return true
}

// untrack forgets a closed connection.
func (s *Server) untrack(cc *clientConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[cc]; !ok {
		return
	}
	delete(s.conns, cc)
	if len(s.conns) == 0 && s.closing.Load() {
		s.closeDrained()
	}
}

func (s *Server) closeDrained() {
	select {
	case <-s.drained:
	default:
		close(s.drained)
	}
}

// stop stops accepting: the listeners close, and idle connections (those
// waiting for a next request) are woken to close.
func (s *Server) stop() {
	s.mu.Lock()
	s.closing.Store(true)
	for _, f := range s.fronts {
		_ = f.ln.Close()
	}
	for cc := range s.conns {
		if cc.state.Load() == connIdle {
			_ = cc.SetReadDeadline(aLongTimeAgo)
		}
	}
	if len(s.conns) == 0 {
		s.closeDrained()
	}
	s.mu.Unlock()
}

// Shutdown stops accepting, lets requests and streams under way finish
// until ctx is done, then closes what is left. It removes the unix socket.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	var errs []error
	for _, srv := range s.metrics {
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
			errs = append(errs, err)
		}
	}
	select {
	case <-s.drained:
	case <-ctx.Done():
		s.closeConns()
		errs = append(errs, ctx.Err())
	}
	s.removeSocket()
	s.p.CloseIdleConnections()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("proxy: shutdown: %w", err)
	}
	return nil
}

// closeConns closes every client connection at once.
func (s *Server) closeConns() {
	s.mu.Lock()
	for cc := range s.conns {
		_ = cc.Conn.Close()
	}
	s.mu.Unlock()
}

// Close closes every listener and connection at once.
func (s *Server) Close() {
	s.stop()
	s.closeConns()
	for _, srv := range s.metrics {
		_ = srv.Close()
	}
	s.removeSocket()
}

func (s *Server) removeSocket() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.socket != "" {
		// Only our own socket: if another process has since put its own
		// at the path, it stays.
		if fi, err := os.Lstat(s.socket); err == nil && s.socketInfo != nil && os.SameFile(fi, s.socketInfo) {
			_ = os.Remove(s.socket)
		}
		s.socket, s.socketInfo = "", nil
	}
}

// Run listens, serves until ctx is done, then shuts down gracefully within
// the ShutdownTimeout.
func (p *Proxy) Run(ctx context.Context) error {
	s, err := p.Listen()
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// Run serves until ctx is done, then shuts down gracefully within the
// ShutdownTimeout.
func (s *Server) Run(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	s.p.log.Info("proxy: shutting down; letting requests under way finish", "timeout", s.p.opts.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.p.opts.ShutdownTimeout)
	defer cancel()
	err := s.Shutdown(sctx)
	if serr := <-done; serr != nil && err == nil {
		err = serr
	}
	return err
}

// HealthHandler serves /healthz (the process is up), /readyz (every key is
// loaded and within its max-stale, and every ReadyChecks passes) and
// /metrics.
func (p *Proxy) HealthHandler() http.Handler {
	mux := healthMux(func() string {
		var bad []byte
		for _, ns := range p.sources {
			if err := ns.src.CheckHealth(); err != nil {
				bad = fmt.Appendf(bad, "key %s: %s\n", ns.name, redact.String(err.Error()))
			}
		}
		for _, ready := range p.opts.ReadyChecks {
			if err := ready(); err != nil {
				bad = fmt.Appendf(bad, "%s\n", redact.String(err.Error()))
			}
		}
		return string(bad)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.metrics.Registry, promhttp.HandlerOpts{}))
	return mux
}

// healthMux serves /healthz, always 200, and /readyz: 200 when notReady
// returns "", else 503 with its text.
func healthMux(notReady func() string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := notReady(); why != "" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, why)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// ListenStarting opens the metrics address of a sidecar whose keys are
// still loading, so that probes get an answer while it waits: /healthz
// answers 200 and /readyz 503 with the text notReady returns (200 once it
// returns ""). Serve it in the background and Close it before the Proxy's
// Listen opens the same address.
func ListenStarting(addr string, notReady func() string, log *slog.Logger) (*Server, error) {
	o := Options{MetricsListen: addr, Logger: log}
	o.setDefaults()
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := newServer(&Proxy{opts: o, log: o.Logger})
	if err := s.listenMetrics(addr, healthMux(notReady)); err != nil {
		return nil, err
	}
	return s, nil
}

// slogWriter turns net/http's log.Logger lines into slog records.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(b)))
	return len(b), nil
}
