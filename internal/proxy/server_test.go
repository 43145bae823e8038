package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/proxytest"
	"github.com/keywarden/keywarden/providers"
)

// unixClient returns a client that dials the unix socket at path.
func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

func TestListenersAndGracefulShutdown(t *testing.T) {
	// The upstream streams one event, then holds the stream open until told
	// to finish: the shutdown must wait for it.
	finish := make(chan struct{})
	started := make(chan struct{}, 1)
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/models" {
			io.WriteString(w, `{"data":[]}`)
			return
		}
		w.Header().Set("content-type", "text/event-stream")
		io.WriteString(w, "event: message_start\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-finish
		io.WriteString(w, "event: message_stop\ndata: {}\n\n")
	})
	sock := filepath.Join(t.TempDir(), "kw.sock")
	e := newEnv(t, up, func(o *proxy.Options) {
		o.Listen = "127.0.0.1:0"
		o.UnixSocket = sock
		o.MetricsListen = "127.0.0.1:0"
	})
	srv, err := e.p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()

	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("unix socket: %v, mode %v", err, fi.Mode())
	}
	uc := unixClient(sock)
	resp, err := uc.Get("http://sidecar/v1/models")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("over the unix socket: %v %v", err, resp)
	}
	resp.Body.Close()
	uc.CloseIdleConnections()

	if srv.Addr("unix") == nil {
		t.Fatal("no unix address")
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get("http://" + srv.Addr("metrics").String() + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, err, resp)
		}
		resp.Body.Close()
	}

	// A stream under way when the shutdown begins.
	mainURL := "http://" + srv.Addr("listen").String()
	client := &http.Client{}
	resp, err = client.Post(mainURL+"/v1/messages", "application/json", strings.NewReader(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != "event: message_start\n" {
		t.Fatalf("first line %q", line)
	}
	<-started
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shutdown <- srv.Shutdown(ctx)
	}()
	// New connections are refused once the listeners are closed.
	waitFor(t, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-shutdown:
		t.Fatalf("shutdown returned (%v) with a stream under way", err)
	default:
	}
	close(finish)
	rest, err := io.ReadAll(br)
	if err != nil || !strings.Contains(string(rest), "message_stop") {
		t.Fatalf("the stream was cut by the shutdown: %q %v", rest, err)
	}
	if err := <-shutdown; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the unix socket was not removed")
	}
}

func TestShutdownTimeoutCutsStreams(t *testing.T) {
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/event-stream")
		io.WriteString(w, "event: ping\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	e := newEnv(t, up, func(o *proxy.Options) {
		o.Listen = "127.0.0.1:0"
		o.ShutdownTimeout = 100 * time.Millisecond
	})
	srv, err := e.p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()
	resp, err := http.Post("http://"+srv.Addr("listen").String()+"/v1/messages", "application/json", strings.NewReader(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	br.ReadString('\n')
	cancel()
	// The stream outlives the drain: Run closes it and returns.
	if err := <-ran; err == nil {
		t.Fatal("Run reported a clean drain with a stream cut")
	}
	if _, err := io.ReadAll(br); err == nil {
		// A cut chunked stream reads as an unexpected EOF.
		t.Fatal("the stream ended cleanly after the shutdown timeout")
	}
}

func TestReadyzReportsStaleKey(t *testing.T) {
	up := newUpstream(t, keyA)
	ks := newKeyStore(t, "prod", keyA)
	src, faulty := ks.source(t, providers.Options{Refresh: 5 * time.Millisecond, Jitter: time.Millisecond,
		MaxStale: 50 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	u, _ := url.Parse(up.URL())
	p, err := proxy.New(proxy.Options{Routes: []proxy.Route{{Prefix: "/", Key: "prod", Source: src, Upstream: u}}})
	if err != nil {
		t.Fatal(err)
	}
	faulty.Fail(errors.New("test: store down"))
	var rec recorder
	waitFor(t, func() bool {
		rec = newRecorder(p.HealthHandler(), "/readyz")
		return rec.code == 503
	})
	if !strings.Contains(rec.body, "key prod:") || !strings.Contains(rec.body, "stale") {
		t.Fatalf("readyz body %q", rec.body)
	}
	if r := newRecorder(p.HealthHandler(), "/healthz"); r.code != 200 {
		t.Fatal("healthz follows the key: it must only say the process is up")
	}
	if r := newRecorder(p.HealthHandler(), "/metrics"); !strings.Contains(r.body, `keywarden_key_stale{key="prod"} 1`) {
		t.Fatal("stale key not in the metrics")
	}
	// Past max_stale the sidecar keeps serving the last good key (as
	// docs/sidecar.md says): only /readyz fails.
	srv := proxytest.NewServer(p)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(up.Requests()) != 1 || up.Requests()[0].Key != keyA {
		t.Fatalf("past max_stale: got %d, %d upstream requests; want the request sent with the last good key", resp.StatusCode, len(up.Requests()))
	}
	if r := newRecorder(p.HealthHandler(), "/readyz"); r.code != 503 {
		t.Fatal("readyz recovered while the store is down")
	}
	faulty.Fail(nil)
	waitFor(t, func() bool { return newRecorder(p.HealthHandler(), "/readyz").code == 200 })
}

func TestPublicListenNeedsToken(t *testing.T) {
	up := newUpstream(t, keyA)
	e := newEnv(t, up, func(o *proxy.Options) { o.Listen = "0.0.0.0:0" })
	if _, err := e.p.Listen(); err == nil || !strings.Contains(err.Error(), "no client token") {
		t.Fatalf("got %v", err)
	}
	e = newEnv(t, up, func(o *proxy.Options) { o.Listen = "0.0.0.0:0"; o.ClientToken = "client-token-0123456789" })
	srv, err := e.p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
}

func TestLongStreamOutlivesTimeouts(t *testing.T) {
	// Header and idle timeouts far shorter than the stream: neither cuts it.
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/event-stream")
		for i := 0; i < 12; i++ {
			io.WriteString(w, "event: ping\ndata: {}\n\n")
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
		io.WriteString(w, "event: message_stop\ndata: {}\n\n")
	})
	e := newEnv(t, up, func(o *proxy.Options) {
		o.Listen = "127.0.0.1:0"
		o.HeaderTimeout = 250 * time.Millisecond
		o.IdleTimeout = 250 * time.Millisecond
		o.ClientHeaderTimeout = 250 * time.Millisecond
	})
	srv, err := e.p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Close()
	resp, err := http.Post("http://"+srv.Addr("listen").String()+"/v1/messages", "application/json", strings.NewReader(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || !strings.Contains(string(b), "message_stop") {
		t.Fatalf("stream cut: %v %q", err, b)
	}
}

func TestUnixSocketPathInUse(t *testing.T) {
	up := newUpstream(t, keyA)
	path := filepath.Join(t.TempDir(), "not-a-socket")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, up, func(o *proxy.Options) { o.UnixSocket = path })
	if _, err := e.p.Listen(); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal("a regular file at the socket path was removed")
	}
}

type recorder struct {
	code int
	body string
}

func newRecorder(h http.Handler, path string) recorder {
	req, _ := http.NewRequest("GET", path, nil)
	w := &respRecorder{h: http.Header{}, code: 200}
	h.ServeHTTP(w, req)
	return recorder{w.code, w.b.String()}
}

type respRecorder struct {
	h    http.Header
	code int
	b    strings.Builder
}

func (r *respRecorder) Header() http.Header         { return r.h }
func (r *respRecorder) Write(b []byte) (int, error) { return r.b.Write(b) }
func (r *respRecorder) WriteHeader(code int)        { r.code = code }

// waitFor polls cond until it holds, failing after a generous bound: it
// waits for an event, it does not time one.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUnixSocketOfALiveSidecar: a second sidecar on the path of a running
// one's socket fails to start and leaves that socket serving.
func TestUnixSocketOfALiveSidecar(t *testing.T) {
	up := newUpstream(t, keyA)
	sock := filepath.Join(t.TempDir(), "kw.sock")
	first := newEnv(t, up, func(o *proxy.Options) { o.UnixSocket = sock; o.MetricsListen = "127.0.0.1:0" })
	srv, err := first.p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(srv.Close)
	second := newEnv(t, up, func(o *proxy.Options) { o.UnixSocket = sock; o.MetricsListen = "127.0.0.1:0" })
	if s2, err := second.p.Listen(); err == nil || !strings.Contains(err.Error(), "another process is serving on it") {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("second sidecar on a live socket: %v", err)
	}
	resp, err := unixClient(sock).Get("http://sidecar/v1/models")
	if err != nil {
		t.Fatalf("the first sidecar's socket after the second tried it: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("got %d", resp.StatusCode)
	}
}
