// Package promtest starts a real Prometheus server for tests: Debian's
// prometheus binary (scripts/install-prometheus.sh installs it), on
// loopback, with a generated scrape config. Tests skip when it is missing,
// except under CI=true, where they fail.
package promtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Target is one scrape target: its host:port and labels added to its
// series (e.g. pod).
type Target struct {
	Addr   string
	Labels map[string]string
}

// Server is a running Prometheus.
type Server struct {
	// URL is its base URL, e.g. http://127.0.0.1:41234.
	URL string
}

// Binary returns the path of the prometheus binary: $PROMETHEUS, or on
// PATH, or what scripts/install-prometheus.sh installs. It skips t when
// there is none, or fails it under CI=true.
func Binary(t testing.TB) string {
	t.Helper()
	return Tool(t, "PROMETHEUS", "install-prometheus.sh", "prometheus")
}

// Tool returns the path of a binary a test needs: $env, or the first of
// names on PATH, or the path the module's scripts/<script> prints (it
// installs the binary when it can). It skips t when there is none, or
// fails it under CI=true, where every tool must be there.
func Tool(t testing.TB, env, script string, names ...string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if root, err := moduleRoot(); err == nil {
		out, err := exec.Command(filepath.Join(root, "scripts", script)).Output()
		if p := strings.TrimSpace(string(out)); err == nil && p != "" {
			return p
		}
	}
	msg := fmt.Sprintf("no %s binary: run scripts/%s (as root) or set %s", names[0], script, env)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("promtest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Start starts Prometheus scraping targets every scrape (job "keywarden")
// and returns once it is ready. It stops when the test ends.
func Start(t testing.TB, scrape time.Duration, targets ...Target) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n", scrape, scrape, scrape)
	b.WriteString("scrape_configs:\n  - job_name: keywarden\n    static_configs:\n")
	for _, tg := range targets {
		fmt.Fprintf(&b, "      - targets: [%q]\n", tg.Addr)
		if len(tg.Labels) > 0 {
			b.WriteString("        labels:\n")
			for k, v := range tg.Labels {
				fmt.Fprintf(&b, "          %s: %q\n", k, v)
			}
		}
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	startProcess(t, bin, dir, "http://"+addr+"/-/ready", "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.console.templates="+dir, "--web.console.libraries="+dir)
	return &Server{URL: "http://" + addr}
}

// startProcess runs bin with args, its output in dir, until the test ends,
// and returns once ready answers 200 OK; it fails t when the process exits
// first or is not ready within 60 s.
func startProcess(t testing.TB, bin, dir, ready string, args ...string) {
	t.Helper()
	name := filepath.Base(bin)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, args...)
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("promtest: start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
		logf.Close()
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("promtest: %s exited at start:\n%s", name, tail(string(log), 2000))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("promtest: %s not ready within 60s", name)
		}
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
