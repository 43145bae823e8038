package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/valyala/fasthttp"
)

// minproxy is the load run's floor: the smallest proxy on fasthttp (its
// server and HostClient, the engine of the fastest Go LLM gateways) doing
// the sidecar's header injection and nothing else: no guards, limits,
// accounting, metrics or 401 rule, and answers buffered whole (no SSE
// flushing). The load run measures it beside nginx and the sidecar, so the
// report shows what the Go I/O model costs before any of the sidecar's work.
// The key is read from a file (-key-file), never from the command line.
func minproxy(args []string) error {
	fs := flag.NewFlagSet("minproxy", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:18099", "address to listen on")
	up := fs.String("upstream", "", "upstream URL, http:// or https:// (trusting the system roots and SSL_CERT_FILE)")
	keyFile := fs.String("key-file", "", "file holding the key to inject")
	_ = fs.Parse(args)
	u, err := url.Parse(*up)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("minproxy: -upstream must be an http:// or https:// URL")
	}
	b, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("minproxy: key: %w", err)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return errors.New("minproxy: key: the file is empty")
	}
	hc := &fasthttp.HostClient{Addr: u.Host, MaxConns: 512, IsTLS: u.Scheme == "https"}
	if hc.IsTLS {
		hc.TLSConfig = &tls.Config{ServerName: u.Hostname(), ClientSessionCache: tls.NewLRUClientSessionCache(64)}
	}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			req := &ctx.Request
			req.Header.Set("x-api-key", key)
			req.Header.Set("anthropic-version", "2023-06-01")
			req.Header.Del("Authorization")
			req.Header.Del("Connection")
			req.SetHost(u.Host)
			req.URI().SetScheme(u.Scheme)
			if err := hc.Do(req, &ctx.Response); err != nil {
				ctx.Error("minproxy: "+err.Error(), fasthttp.StatusBadGateway)
			}
		},
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
	}
	return srv.ListenAndServe(*listen)
}
