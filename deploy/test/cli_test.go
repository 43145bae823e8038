package deploytest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// keywarden builds the keywarden binary once per test binary.
func keywarden(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deploytest-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "keywarden")
		r, err := run(context.Background(), root, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-tags", "timetzdata", "-o", binPath, "./cmd/keywarden")
		if err == nil && r.code != 0 {
			err = fmt.Errorf("go build: exit %d\n%s", r.code, r.stderr)
		}
		binErr = err
	})
	if binErr != nil {
		t.Fatalf("build keywarden: %v", binErr)
	}
	return binPath
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// TestContainerArgs runs the keywarden binary with the arguments of every
// keywarden container in every render, plus --help: an unknown subcommand or
// flag fails, so the manifests cannot drift from the CLI.
func TestContainerArgs(t *testing.T) {
	bin := keywarden(t)
	seen := map[string]string{}
	for _, r := range allRenders(t) {
		for _, w := range workloadsOf(r.objs) {
			for _, c := range w.containers() {
				if isKeywarden(c) {
					for _, name := range unsetRefs(c) {
						t.Errorf("%s in %s: the arguments use $(%s), which the container's env does not set (Kubernetes would pass it literally)", w, r.name, name)
					}
					seen[strings.Join(append(append([]string{}, c.Command...), c.Args...), " ")] = fmt.Sprintf("%s in %s", w, r.name)
				}
			}
		}
	}
	if len(seen) == 0 {
		t.Fatal("no keywarden container rendered")
	}
	for args, where := range seen {
		res, err := run(context.Background(), t.TempDir(), nil, bin, append(strings.Fields(args), "--help")...)
		if err != nil {
			t.Fatal(err)
		}
		if res.code != 0 {
			t.Errorf("keywarden %s (%s): exit %d: %s", args, where, res.code, res.stderr)
		} else {
			t.Logf("keywarden %s: accepted", args)
		}
	}
}

// unsetRefs returns the names of the $(NAME) references in c's command
// and arguments that c's env does not define.
func unsetRefs(c corev1.Container) []string {
	set := map[string]bool{}
	for _, e := range c.Env {
		set[e.Name] = true
	}
	var out []string
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		for _, m := range envRef.FindAllStringSubmatch(a, -1) {
			if !set[m[1]] {
				out = append(out, m[1])
			}
		}
	}
	return out
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// TestProbeEndpoints runs `keywarden sidecar` and `keywarden rotator` as the
// manifests do (config file, health and metrics on a port of the pod IP,
// proxy on loopback), on a file store, and checks the endpoints their probes
// and Prometheus use.
func TestProbeEndpoints(t *testing.T) {
	bin := keywarden(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "keys.json")
	put := exec.Command(bin, "--config", writeConfig(t, dir, "put.yaml", fmt.Sprintf("keys:\n  anthropic:\n    store: file://%s?name=anthropic\n", store)), "put", "anthropic")
	put.Stdin = strings.NewReader("sk-ant-api03-deploytest-not-a-real-key-000000000000000000000000\n")
	if out, err := put.CombinedOutput(); err != nil {
		t.Fatalf("keywarden put: %v\n%s", err, out)
	}

	sidecarMetrics, proxy := freeAddr(t), freeAddr(t)
	sidecarCfg := writeConfig(t, dir, "sidecar.yaml", fmt.Sprintf(`keys:
  anthropic:
    store: file://%s?name=anthropic
    refresh: 5m
sidecar:
  listen: %s
  metrics_listen: 0.0.0.0:%s
`, store, proxy, port(sidecarMetrics)))
	start(t, bin, "sidecar", "--config="+sidecarCfg, "--log-format=json")
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, "http://"+sidecarMetrics+p); code != http.StatusOK {
			t.Errorf("sidecar %s: %d %s", p, code, body)
		}
	}
	// A request the sidecar refuses itself (the Admin API is never
	// forwarded): counted, and nothing leaves this machine.
	if code, _ := get(t, "http://"+proxy+"/v1/organizations/api_keys"); code < 400 {
		t.Errorf("the sidecar forwarded an Admin API request: %d", code)
	}
	_, metrics := get(t, "http://"+sidecarMetrics+"/metrics")
	for _, m := range []string{"keywarden_key_refresh_total", "keywarden_key_last_refresh_timestamp_seconds", "keywarden_key_stale", "keywarden_sidecar_requests_total"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("sidecar /metrics has no %s", m)
		}
	}
	if strings.Contains(metrics, "deploytest-not-a-real-key") || strings.Contains(metrics, "sk-ant-api03-deploytest") {
		t.Error("sidecar /metrics shows the key")
	}

	rotatorMetrics := freeAddr(t)
	rotatorCfg := writeConfig(t, dir, "rotator.yaml", fmt.Sprintf(`keys:
  anthropic:
    store: file://%s?name=anthropic
    refresh: 5m
    rotation:
      schedule: "0 3 1 1 *"
      grace: 1h
      issuer:
        type: random
`, store))
	start(t, bin, "rotator", "--config="+rotatorCfg, "--metrics-listen=0.0.0.0:"+port(rotatorMetrics), "--log-format=json")
	if code, body := get(t, "http://"+rotatorMetrics+"/healthz"); code != http.StatusOK {
		t.Errorf("rotator /healthz: %d %s", code, body)
	}
	if code, _ := get(t, "http://"+rotatorMetrics+"/metrics"); code != http.StatusOK {
		t.Errorf("rotator /metrics: %d", code)
	}
}

func writeConfig(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// start starts keywarden and stops it (SIGTERM) when the test ends.
func start(t *testing.T, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("keywarden %s output:\n%s", args[0], out.String())
		}
	})
}

// get fetches a URL, waiting up to 30s for the server to come up.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(url)
		if err != nil {
			last = err
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	t.Fatalf("GET %s: %v", url, last)
	return 0, ""
}

// freeAddr returns a free loopback address.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
