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
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keywarden/keywarden/internal/proxy/settings"
	"github.com/keywarden/keywarden/providers/redact"
)

// Server is a Proxy's open listeners. Create it with Listen.
type Server struct {
	p     *Proxy
	addrs map[string]net.Addr // see Addr

	mu         sync.Mutex
	servers    []*http.Server
	lns        []net.Listener
	socket     string      // unix socket path to remove on shutdown
	socketInfo os.FileInfo // the socket this server created there
}

// Listen opens every listener of the Proxy: the main address, the unix
// socket, each route's listener, and the metrics address.
func (p *Proxy) Listen() (*Server, error) {
	s := &Server{p: p, addrs: map[string]net.Addr{}}
	fail := func(err error) (*Server, error) {
		for _, ln := range s.lns {
			_ = ln.Close()
		}
		if s.socket != "" {
			_ = os.Remove(s.socket)
		}
		return nil, err
	}
	if a := p.opts.Listen; a != "" {
		if err := s.listenTCP("listen", a, p.Handler()); err != nil {
			return fail(err)
		}
	}
	if path := p.opts.UnixSocket; path != "" {
		if err := s.listenUnix(path, p.Handler()); err != nil {
			return fail(err)
		}
	}
	for addr := range p.listeners {
		if err := s.listenTCP(addr, addr, p.ListenerHandler(addr)); err != nil {
			return fail(err)
		}
	}
	if a := p.opts.MetricsListen; a != "" {
		if err := s.listenTCP("metrics", a, p.HealthHandler()); err != nil {
			return fail(err)
		}
	}
	return s, nil
}

// Addr returns the bound address (useful with port 0) of "listen" (the
// main address), "unix" (the socket), "metrics", or of a route's listener
// by its configured address; nil when there is no such listener.
func (s *Server) Addr(which string) net.Addr { return s.addrs[which] }

func (s *Server) listenTCP(name, addr string, h http.Handler) error {
	if name != "metrics" {
		if err := settings.CheckListen(addr, s.p.tokens()); err != nil {
			return fmt.Errorf("proxy: listen: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("proxy: listen on %s: %w", addr, err)
	}
	s.add(name, ln, h)
	return nil
}

func (s *Server) listenUnix(path string, h http.Handler) error {
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
	s.add("unix", ln, h)
	return nil
}

func (s *Server) add(name string, ln net.Listener, h http.Handler) {
	o := &s.p.opts
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: o.ClientHeaderTimeout,
		IdleTimeout:       o.IdleTimeout,
		ErrorLog:          log.New(slogWriter{s.p.log}, "", 0),
		// "OPTIONS *" reaches the handler, which refuses it, instead of
		// net/http's own 200.
		DisableGeneralOptionsHandler: true,
		// No ReadTimeout or WriteTimeout: they would cut long uploads and
		// streams. Upstream waits are bounded by the header timeout.
	}
	s.addrs[name] = ln.Addr()
	s.lns = append(s.lns, ln)
	s.servers = append(s.servers, srv)
}

// Serve serves every listener until Shutdown; it returns nil after a
// Shutdown, or the first listener's error.
func (s *Server) Serve() error {
	errs := make(chan error, len(s.servers))
	for i, srv := range s.servers {
		go func() { errs <- srv.Serve(s.lns[i]) }()
	}
	var first error
	for range s.servers {
		if err := <-errs; err != nil && !errors.Is(err, http.ErrServerClosed) && first == nil {
			first = err
			go s.Close()
		}
	}
	return first
}

// Shutdown stops accepting, lets requests and streams under way finish
// until ctx is done, then closes what is left. It removes the unix socket.
func (s *Server) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.servers))
	for i, srv := range s.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				_ = srv.Close()
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	s.removeSocket()
	s.p.CloseIdleConnections()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("proxy: shutdown: %w", err)
	}
	return nil
}

// Close closes every listener and connection at once.
func (s *Server) Close() {
	for _, srv := range s.servers {
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
// loaded and within its max-stale) and /metrics.
func (p *Proxy) HealthHandler() http.Handler {
	mux := healthMux(func() string {
		var bad []byte
		for _, ns := range p.sources {
			if err := ns.src.CheckHealth(); err != nil {
				bad = fmt.Appendf(bad, "key %s: %s\n", ns.name, redact.String(err.Error()))
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
	s := &Server{p: &Proxy{opts: o, log: o.Logger}, addrs: map[string]net.Addr{}}
	if err := s.listenTCP("metrics", addr, healthMux(notReady)); err != nil {
		return nil, err
	}
	return s, nil
}
