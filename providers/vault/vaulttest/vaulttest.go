// Package vaulttest runs one real Vault server per test binary for tests
// that need Vault: the command in internal/vaultserver (a separate Go module
// holding the Vault core, so this package and the main module never import
// it), started with `go run` on a loopback port.
//
// Use it from a test:
//
//	func TestMain(m *testing.M) { vaulttest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		addr, caFile, token := vaulttest.Start(t) // root token
//		...
//	}
//
// The server starts on first use and Main stops it when the tests end. It has
// a KV v2 engine at secret/ and the auth methods approle/ (and kubernetes/
// when the server offers it; see Auth). When the environment variables
// KEYWARDEN_VAULT_ADDR and KEYWARDEN_VAULT_TOKEN (and KEYWARDEN_VAULT_CACERT
// for a TLS server with a private CA) are set, that server is used and
// nothing is started. When no server can start, tests are skipped, unless
// CI=true, where they fail.
//
// The first build of internal/vaultserver compiles the Vault core: about ten
// minutes on two cores. Later starts take seconds (go run caches the
// executable). Run `make vaultserver` (or `go build` in internal/vaultserver)
// ahead of the tests to keep the cold build out of a test's time budget.
//
// Every test shares the server, so tests must use unique secret names.
package vaulttest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keywarden/keywarden/internal/tailbuf"
)

// Environment variables naming an already running server to use instead of
// starting one.
const (
	EnvAddr   = "KEYWARDEN_VAULT_ADDR"
	EnvToken  = "KEYWARDEN_VAULT_TOKEN" // a root (or sufficiently privileged) token
	EnvCACert = "KEYWARDEN_VAULT_CACERT"
)

// startTimeout bounds a start, cold build included; a test's own deadline
// shortens it.
const startTimeout = 15 * time.Minute

// Server describes a running Vault server.
type Server struct {
	Addr   string   `json:"addr"`    // https://127.0.0.1:PORT
	CAFile string   `json:"ca_file"` // PEM file of the CA that signed the server's certificate
	Token  string   `json:"token"`   // root token
	Mount  string   `json:"kv_mount"`
	Auth   []string `json:"auth"` // auth methods enabled at start, e.g. approle, kubernetes
}

var (
	once sync.Once

	mu   sync.Mutex
	srv  *Server
	proc *process
	err  error // why the server could not start
)

// Start returns the address, CA file and root token of the Vault server of
// this test binary, starting it on first use. When no server can start it
// skips the test, or fails it when the environment variable CI is "true".
func Start(t testing.TB) (addr, caFile, token string) {
	t.Helper()
	s := Get(t)
	return s.Addr, s.CAFile, s.Token
}

// Get is Start returning the whole description of the server.
func Get(t testing.TB) Server {
	t.Helper()
	once.Do(func() {
		timeout := startTimeout
		if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
			if dl, ok := d.Deadline(); ok && time.Until(dl)-30*time.Second < timeout {
				timeout = time.Until(dl) - 30*time.Second
			}
		}
		s, p, e := start(timeout)
		mu.Lock()
		srv, proc, err = s, p, e
		mu.Unlock()
	})
	mu.Lock()
	s, e := srv, err
	mu.Unlock()
	if e != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("vaulttest: %v", e)
		}
		t.Skipf("vaulttest: skipping, no Vault server: %v (set CI=true to fail instead)", e)
	}
	return *s
}

// Client returns a new API client for the server, holding the root token.
func Client(t testing.TB) *api.Client {
	t.Helper()
	s := Get(t)
	c, err := NewClient(s.Addr, s.CAFile, s.Token)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return c
}

// NewClient returns an API client for addr that trusts the CA in caFile
// (when not empty) and holds token. It reads no VAULT_* environment.
func NewClient(addr, caFile, token string) (*api.Client, error) {
	return NewClientWrapped(addr, caFile, token, nil)
}

// NewClientWrapped is NewClient with the client's HTTP transport wrapped
// by wrap (nil: unwrapped), e.g. to count or fail requests.
func NewClientWrapped(addr, caFile, token string, wrap func(http.RoundTripper) http.RoundTripper) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0
	if caFile != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: caFile}); err != nil {
			return nil, fmt.Errorf("configure TLS with %s: %w", caFile, err)
		}
	}
	if wrap != nil {
		cfg.HttpClient.Transport = wrap(cfg.HttpClient.Transport)
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(token)
	return c, nil
}

// Main runs the tests of m, then stops the server if one was started, and
// exits with the tests' status. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the server started by this package, if any. It is safe to call
// more than once; Start does not restart a stopped server.
func Stop() {
	mu.Lock()
	p := proc
	mu.Unlock()
	if p != nil {
		p.stop()
	}
}

func start(timeout time.Duration) (*Server, *process, error) {
	if addr := os.Getenv(EnvAddr); addr != "" {
		s := &Server{Addr: addr, Token: os.Getenv(EnvToken), CAFile: os.Getenv(EnvCACert), Mount: "secret"}
		if s.Token == "" {
			return nil, nil, fmt.Errorf("%s is set but %s is not", EnvAddr, EnvToken)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := ping(ctx, s); err != nil {
			return nil, nil, fmt.Errorf("server at %s=%s: %w", EnvAddr, addr, err)
		}
		return s, nil, nil
	}
	dir, err := moduleDir()
	if err != nil {
		return nil, nil, err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	return launch(goBin, dir, timeout)
}

// ping checks that the server answers with the token.
func ping(ctx context.Context, s *Server) error {
	c, err := NewClient(s.Addr, s.CAFile, s.Token)
	if err != nil {
		return err
	}
	_, err = c.Auth().Token().LookupSelfWithContext(ctx)
	return err
}

// moduleDir finds internal/vaultserver by walking up from the working
// directory (a test runs in its package's directory).
func moduleDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		cand := filepath.Join(d, "internal", "vaultserver")
		if _, err := os.Stat(filepath.Join(cand, "go.mod")); err == nil {
			return cand, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("internal/vaultserver/go.mod not found above %s", wd)
		}
	}
}

// process is a running vaultserver.
type process struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	done     chan struct{}
	stopOnce sync.Once
}

func launch(goBin, dir string, timeout time.Duration) (*Server, *process, error) {
	out := &tailbuf.Buffer{Max: 8192}
	cmd := exec.Command(goBin, "run", ".")
	cmd.Dir = dir
	cmd.Stderr = out
	setProcAttr(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start go run in %s: %w", dir, err)
	}
	p := &process{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case line, ok := <-lines:
		if !ok {
			<-p.done
			return nil, nil, fmt.Errorf("vaultserver exited before it was ready (stderr: %s)", out.String())
		}
		var s Server
		if err := json.Unmarshal([]byte(line), &s); err != nil || s.Addr == "" || s.Token == "" {
			p.stop()
			return nil, nil, fmt.Errorf("vaultserver printed %q, want a JSON line with addr and token", redactLine(line))
		}
		return &s, p, nil
	case <-timer.C:
		p.stop()
		return nil, nil, fmt.Errorf("vaultserver not ready after %v (a cold build of the Vault core takes about ten minutes; build internal/vaultserver first) (stderr: %s)", timeout, out.String())
	}
}

// stop closes the server's standard input, which makes it shut down, and
// kills its process group when it does not exit in time.
func (p *process) stop() {
	p.stopOnce.Do(func() {
		_ = p.stdin.Close()
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			killGroup(p.cmd)
			<-p.done
		}
	})
}

// redactLine hides the token in a malformed ready line.
func redactLine(s string) string {
	if i := strings.Index(s, "token"); i >= 0 {
		return s[:i] + "token...(redacted)"
	}
	return s
}
