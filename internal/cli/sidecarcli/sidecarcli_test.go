package sidecarcli_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/cli/clitest"
	"github.com/keywarden/keywarden/internal/cli/sidecarcli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/proxy/settings"
	"github.com/keywarden/keywarden/internal/tailbuf"
	"github.com/keywarden/keywarden/providers"
	_ "github.com/keywarden/keywarden/providers/all"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest"
)

const (
	keyA = "sk-ant-api03-SIDECARCLIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-aaaa"
	keyB = "sk-ant-api03-SIDECARCLIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB-bbbb"
)

// start runs the CLI with args in the background; stop cancels it and
// returns its error.
func start(t *testing.T, args ...string) (stop func() error, out *tailbuf.Buffer) {
	t.Helper()
	root := cli.Root(sidecarcli.CheckConfig)
	root.AddCommand(sidecarcli.Commands()...)
	out = &tailbuf.Buffer{}
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop, out
}

// run runs the CLI with args to the end.
func run(t *testing.T, args ...string) (*tailbuf.Buffer, error) {
	t.Helper()
	root := cli.Root(sidecarcli.CheckConfig)
	root.AddCommand(sidecarcli.Commands()...)
	out := &tailbuf.Buffer{}
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(out)
	err := root.ExecuteContext(context.Background())
	return out, err
}

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

// waitSocket waits until the unix socket at path accepts connections (its
// file exists from the bind, a moment before the listen).
func waitSocket(t *testing.T, path string) {
	t.Helper()
	clitest.WaitFor(t, "socket", func() bool {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func rotate(t *testing.T, st *file.Store, name, val string) {
	t.Helper()
	providertest.Rotate(t, st, name, []byte(val))
}

func TestSidecarOnEmbeddedDefault(t *testing.T) {
	t.Setenv("KEYWARDEN_HOME", t.TempDir())
	t.Setenv("KEYWARDEN_CONFIG", "")
	sock := filepath.Join(t.TempDir(), "kw.sock")
	stop, out := start(t, "sidecar", "--listen", "", "--unix-socket", sock, "--metrics-listen", "off")
	waitSocket(t, sock)
	c := unixClient(sock)
	// The Admin API is refused by the sidecar itself: no upstream needed.
	resp, err := c.Get("http://sidecar/v1/organizations/api_keys")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.CloseIdleConnections()
	if resp.StatusCode != 403 || !strings.Contains(string(b), "permission_error") {
		t.Fatalf("got %d %s", resp.StatusCode, b)
	}
	if err := stop(); err != nil {
		t.Fatalf("sidecar after SIGTERM-like cancel: %v", err)
	}
	if !strings.Contains(out.String(), "PLACEHOLDER") || !strings.Contains(out.String(), "sidecar: stopped") ||
		!strings.Contains(out.String(), "keywarden put default < key.txt") {
		t.Fatalf("output:\n%s", out)
	}
	if strings.Contains(out.String(), config.PlaceholderPrefix) {
		t.Fatal("the placeholder key value was printed")
	}
}

func TestSidecarConfigRoutesAndFileSink(t *testing.T) {
	dir := t.TempDir()
	storePath := filepath.Join(dir, "keys.json")
	st := file.New(storePath)
	rotate(t, st, "prod", keyA)
	var mu sync.Mutex
	var seen []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("x-api-key"))
		mu.Unlock()
		io.WriteString(w, `{"data":[]}`)
	}))
	defer up.Close()
	sock := filepath.Join(dir, "kw.sock")
	sink := filepath.Join(dir, "key.txt")
	cfg := filepath.Join(dir, "kw.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
keys:
  prod: {store: "file://%s?name=prod", refresh: 1s, jitter: 100ms}
sidecar:
  unix_socket: %s
  metrics_listen: "off"
  routes: [{prefix: /, key: prod, upstream: "%s"}]
  file_sink: {path: %s}
  timeouts: {shutdown: 5s}
`, storePath, sock, up.URL, sink)), 0o600)
	stop, out := start(t, "sidecar", "--config", cfg, "--log-level", "debug")
	waitSocket(t, sock)
	c := unixClient(sock)
	defer c.CloseIdleConnections()
	get := func() int {
		resp, err := c.Get("http://sidecar/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if get() != 200 {
		t.Fatal("request through the sidecar failed")
	}
	if b, _ := os.ReadFile(sink); string(b) != keyA {
		t.Fatal("the file sink does not hold the key")
	}
	rotate(t, st, "prod", keyB)
	clitest.WaitFor(t, "file sink follows the rotation", func() bool { b, _ := os.ReadFile(sink); return string(b) == keyB })
	if get() != 200 {
		t.Fatal("request after the rotation failed")
	}
	mu.Lock()
	last := seen[len(seen)-1]
	mu.Unlock()
	if last != keyB {
		t.Fatal("the sidecar did not send the new key")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{keyA, keyB} {
		if strings.Contains(out.String(), k) {
			t.Fatalf("the output holds a key:\n%s", out)
		}
	}
}

func TestOptionsAndToken(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	c, err := config.Parse([]byte(fmt.Sprintf(`
keys: {prod: {store: "env://P"}, dev: {store: "env://D"}}
sidecar:
  listen: "0.0.0.0:8787"
  client_token_file: %s
  max_retry_body: 0
  rate_limit: {rps: 5, burst: 1, concurrency: 0}
  routes:
    - {prefix: /, key: prod, version_policy: enforce}
    - {listener: "127.0.0.1:8790", key: dev, auth: bearer, upstream: "http://127.0.0.1:9"}
`, tok)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		content string
		mode    os.FileMode
		want    string
	}{
		{"short", 0o600, "fewer than 16 characters"},
		{"0123456789abcdef0123", 0o644, "chmod 600"},
		{"   QAQA  TOKEN  with spaces  \n", 0o600, "space, control or non-ASCII character at byte 4"},
		{"0123456789abcdef\x01123", 0o600, "at byte 16"},
		{"0123456789abcdéf0123", 0o600, "non-ASCII"},
	} {
		os.WriteFile(tok, []byte(tc.content), tc.mode)
		os.Chmod(tok, tc.mode)
		if _, err := sidecarcli.Options(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("token %q mode %o: got %v, want %q", tc.content, tc.mode, err, tc.want)
		}
	}
	// A named pipe at the path (a writer never comes): an error at once,
	// where reading it blocked the sidecar's start, and check, for ever.
	os.Remove(tok)
	if err := syscall.Mkfifo(tok, 0o600); err != nil {
		t.Fatal(err)
	}
	fifoErr := make(chan error, 1)
	go func() { _, err := sidecarcli.Options(c); fifoErr <- err }()
	select {
	case err := <-fifoErr:
		if err == nil || !strings.Contains(err.Error(), "is a named pipe, not a regular file") {
			t.Errorf("token file a FIFO: got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading a token file that is a named pipe blocked")
	}
	os.Remove(tok)
	os.WriteFile(tok, []byte("0123456789abcdef0123\n"), 0o600)
	o, err := sidecarcli.Options(c)
	if err != nil {
		t.Fatal(err)
	}
	if o.ClientToken != "0123456789abcdef0123" || o.MaxRetryBody != -1 || o.RPS != 5 || o.Burst != 1 || o.Concurrency != 0 {
		t.Fatalf("options %+v", o)
	}
	r0, r1 := o.Routes[0], o.Routes[1]
	// Unset: proxy.New fills in the upstream and the version.
	if r0.VersionPolicy != providers.VersionEnforce || r0.Upstream != nil || r0.Version != "" {
		t.Fatalf("route 0 %+v", r0)
	}
	if r1.Auth != providers.AuthBearer || r1.Listener != "127.0.0.1:8790" || r1.Version != "" {
		t.Fatalf("route 1 %+v", r1)
	}
}

// TestOptionsDefaults checks that an empty sidecar section maps to the
// sidecar's limits and leaves the rest to proxy.New.
func TestOptionsDefaults(t *testing.T) {
	c, err := config.Parse([]byte(`keys: {prod: {store: "env://P"}}`))
	if err != nil {
		t.Fatal(err)
	}
	o, err := sidecarcli.Options(c)
	if err != nil {
		t.Fatal(err)
	}
	if o.RPS != settings.DefaultRPS || o.Burst != 0 || o.Concurrency != settings.DefaultConcurrency || o.MaxRetryBody != 0 ||
		o.Listen != settings.DefaultListen || o.MetricsListen != settings.DefaultMetricsListen || o.HeaderTimeout != 0 || o.AllowPaths != nil {
		t.Fatalf("options %+v", o)
	}
}

func TestSidecarConfigErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kw.yaml")
	os.WriteFile(cfg, []byte(`keys: {prod: {store: "env://P"}, dev: {store: "env://D"}}`), 0o600)
	out, err := run(t, "sidecar", "--config", cfg)
	var ee *cli.ExitError
	if !errors.As(err, &ee) || ee.Code != cli.ExitConfig || !strings.Contains(err.Error(), "add routes") {
		t.Fatalf("got %v\n%s", err, out)
	}
	if _, err := run(t, "sidecar", "--config", cfg, "--listen", "0.0.0.0:1"); err == nil || !strings.Contains(err.Error(), "sidecar.listen") {
		t.Fatalf("a public --listen without a token: %v", err)
	}
}

// TestShutdownCutsStreams shows that a drain cut short by
// timeouts.shutdown ends the sidecar with exit 0 and one warning naming the
// setting, not exit 1 with a bare "context deadline exceeded": closing the
// streams left after it is what SIGTERM is documented to do.
func TestShutdownCutsStreams(t *testing.T) {
	dir := t.TempDir()
	storePath := filepath.Join(dir, "keys.json")
	rotate(t, file.New(storePath), "prod", keyA)
	streaming := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: ping\ndata: {\"type\":\"ping\"}\n\n")
		w.(http.Flusher).Flush()
		close(streaming)
		select { // a stream that outlasts the drain
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	sock := filepath.Join(dir, "kw.sock")
	cfg := filepath.Join(dir, "kw.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
keys:
  prod: {store: "file://%s?name=prod"}
sidecar:
  unix_socket: %s
  metrics_listen: "off"
  routes: [{prefix: /, key: prod, upstream: "%s"}]
  timeouts: {shutdown: 50ms}
`, storePath, sock, up.URL)), 0o600)
	stop, out := start(t, "sidecar", "--config", cfg)
	waitSocket(t, sock)
	c := unixClient(sock)
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://sidecar/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-streaming
	if err := stop(); err != nil {
		t.Fatalf("sidecar after a drain cut short: %v, want exit 0\n%s", err, out)
	}
	logs := out.String()
	if n := strings.Count(logs, "sidecar.timeouts.shutdown (50ms) were closed"); n != 1 || !strings.Contains(logs, "level=WARN") ||
		strings.Contains(logs, "deadline exceeded") || !strings.Contains(logs, "sidecar: stopped") {
		t.Fatalf("want one warning naming sidecar.timeouts.shutdown, got:\n%s", logs)
	}
	if strings.Contains(logs, keyA) {
		t.Fatal("the key was logged")
	}
}

// TestSidecarFileSinkRecovers breaks the file sink's directory while the
// key rotates: the metric keywarden_file_sink_ok drops to 0, and once the
// directory is back the sink writes the new key without another change
// and the metric returns to 1.
func TestSidecarFileSinkRecovers(t *testing.T) {
	dir := t.TempDir()
	storePath := filepath.Join(dir, "keys.json")
	st := file.New(storePath)
	rotate(t, st, "prod", keyA)
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	sink := filepath.Join(run, "key.txt")
	metrics := clitest.FreeAddr(t)
	cfg := filepath.Join(dir, "kw.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
keys:
  prod: {store: "file://%s?name=prod", refresh: 1s, jitter: 100ms}
sidecar:
  listen: ""
  unix_socket: %s
  metrics_listen: "%s"
  routes: [{prefix: /, key: prod, upstream: "http://127.0.0.1:9"}]
  file_sink: {path: %s}
`, storePath, filepath.Join(dir, "kw.sock"), metrics, sink)), 0o600)
	stop, out := start(t, "sidecar", "--config", cfg)
	sinkOK := func(want string) func() bool {
		return func() bool {
			_, body := get(metrics, "/metrics")
			return strings.Contains(body, `keywarden_file_sink_ok{key="prod"} `+want+"\n")
		}
	}
	clitest.WaitFor(t, "keywarden_file_sink_ok 1", sinkOK("1"))
	if err := os.RemoveAll(run); err != nil {
		t.Fatal(err)
	}
	rotate(t, st, "prod", keyB)
	clitest.WaitFor(t, "keywarden_file_sink_ok 0 after the write failed", sinkOK("0"))
	// /readyz says so too: a pod whose file consumers read a key about to
	// be revoked is not ready.
	if code, body := get(metrics, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "filesink: ") {
		t.Errorf("/readyz while the file sink fails: %d %q, want 503 naming the file sink", code, body)
	}
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	clitest.WaitFor(t, "the file sink to write the new key", func() bool { b, _ := os.ReadFile(sink); return string(b) == keyB })
	clitest.WaitFor(t, "keywarden_file_sink_ok 1 again", sinkOK("1"))
	if code, body := get(metrics, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz once the file holds the key: %d %q", code, body)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"level=ERROR msg=\"filesink: ", "; retrying", "the file holds the current key again"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no log line %q:\n%s", want, out)
		}
	}
}
