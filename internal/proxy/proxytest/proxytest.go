// Package proxytest serves a proxy.Proxy on a loopback listener for tests,
// as net/http/httptest serves an http.Handler: the same engine as the
// sidecar's, over real sockets.
package proxytest

import (
	"net"
	"net/http"
	"sync"

	"go.uber.org/goleak"

	"github.com/keywarden/keywarden/internal/proxy"
)

// Server is a Proxy served on 127.0.0.1 at a free port.
type Server struct {
	// URL is the base URL, http://127.0.0.1:port.
	URL    string
	srv    *proxy.Server
	client *http.Client
	done   chan error
	once   sync.Once
}

// NewServer starts serving p's prefix routes. Close it when done.
func NewServer(p *proxy.Proxy) *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("proxytest: listen: " + err.Error())
	}
	s := &Server{
		URL:    "http://" + ln.Addr().String(),
		srv:    p.Attach(ln),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		done:   make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve() }()
	return s
}

// Addr returns the listener's address, host:port.
func (s *Server) Addr() string { return s.srv.Addr("listen").String() }

// Client returns an HTTP client for the server, whose idle connections
// Close closes.
func (s *Server) Client() *http.Client { return s.client }

// Server returns the proxy.Server, for a test of its shutdown.
func (s *Server) Server() *proxy.Server { return s.srv }

// Close closes the listener and every connection at once.
func (s *Server) Close() {
	s.once.Do(func() {
		s.client.CloseIdleConnections()
		s.srv.Close()
		<-s.done
	})
}

// IgnoreDateTicker is the goleak option for the one goroutine the engine
// leaves running for the life of the process: fasthttp's ticker of the
// Date header (one wake a second, shared by every connection).
var IgnoreDateTicker = goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1")
