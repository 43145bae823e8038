package sidecarcli_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/cli/clitest"
	"github.com/keywarden/keywarden/internal/cli/sidecarcli"
	"github.com/keywarden/keywarden/internal/mototest"
	"github.com/keywarden/keywarden/providers/file"
)

func get(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// brokenStore writes a config whose key's store cannot be reached: AWS
// Secrets Manager at an endpoint where nothing listens (every read fails
// with a retryable error). It returns the config, the store URL and the
// sidecar's addresses.
func brokenStore(t *testing.T, endpoint, startTimeout string) (cfg, store, secret, listen, metrics string) {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAKEYWARDENTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "keywarden-test-secret-access-key")
	t.Setenv("AWS_MAX_ATTEMPTS", "1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	// A name of its own per run: the package's tests share one moto server
	// (and -count=N runs a test N times against it).
	secret = fmt.Sprintf("anthropic/start-%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), time.Now().UnixNano())
	store = "awssm://" + secret + "?region=us-east-1&endpoint=" + endpoint
	listen, metrics = clitest.FreeAddr(t), clitest.FreeAddr(t)
	cfg = filepath.Join(t.TempDir(), "kw.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
keys:
  prod: {store: "%s&refresh=1m"}
sidecar:
  listen: "%s"
  metrics_listen: "%s"
  start_timeout: %s
  routes: [{prefix: /, key: prod, upstream: "http://127.0.0.1:9"}]
`, store, listen, metrics, startTimeout)), 0o600)
	return cfg, store, secret, listen, metrics
}

// TestSidecarStartTimeout starts a sidecar whose store cannot be read: it
// serves /healthz (200) and a failing /readyz naming the key, the store and
// the last error, does not listen for requests, logs what it waits for,
// and exits non-zero with a clear error after sidecar.start_timeout.
func TestSidecarStartTimeout(t *testing.T) {
	// Windows long enough for the SDK's own retries of a refused
	// connection to end, so that the refusal is what the sidecar reports.
	defer sidecarcli.SetStartWindow(2 * time.Second)()
	cfg, store, _, listen, metrics := brokenStore(t, "http://"+clitest.FreeAddr(t), "6s")
	done := make(chan error, 1)
	var out fmt.Stringer
	go func() {
		o, err := run(t, "sidecar", "--config", cfg)
		out = o
		done <- err
	}()
	var ready string
	clitest.WaitFor(t, "a failing /readyz naming the wait", func() bool {
		code, body := get(metrics, "/readyz")
		ready = body
		return code == 503 && strings.Contains(body, "connection refused")
	})
	if !strings.Contains(ready, "key prod: waiting for the first read of store "+store) || !strings.Contains(ready, "connection refused") {
		t.Errorf("/readyz says %q", ready)
	}
	if code, _ := get(metrics, "/healthz"); code != 200 {
		t.Errorf("/healthz answered %d while waiting", code)
	}
	if c, err := net.Dial("tcp", listen); err == nil {
		c.Close()
		t.Error("the API listener is open before the key was read")
	}
	err := <-done
	var ee *cli.ExitError
	if !errors.As(err, &ee) || ee.Code == 0 {
		t.Fatalf("got %v, want a non-zero exit", err)
	}
	for _, want := range []string{"key prod", store, "start timeout 6s", "sidecar.start_timeout", "last error", "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if log := out.String(); !strings.Contains(log, "waiting for the first read of a key") || !strings.Contains(log, "key=prod") || !strings.Contains(log, "connection refused") {
		t.Errorf("the wait was not logged:\n%s", log)
	}
	if code, _ := get(metrics, "/healthz"); code != 0 {
		t.Error("the metrics listener is still open after the sidecar gave up")
	}
	if strings.Contains(out.String(), "keywarden-test-secret-access-key") || strings.Contains(err.Error(), "keywarden-test-secret-access-key") {
		t.Error("a credential was printed")
	}
}

// TestStoreURLParameters runs `exec` and `sidecar` on a store URL with the
// documented portable parameters: both start (they failed with "unknown
// parameter(s) refresh" when config decoded the parameters too), and the
// field parameter picks the payload's field.
func TestStoreURLParameters(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "keys.json")
	if err := file.New(store).PutByHand(context.Background(), "prod", []byte(`{"token":"`+keyA+`"}`)); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "kw.yaml")
	sock := filepath.Join(dir, "kw.sock")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
keys:
  prod: {store: "file:%s?name=prod&refresh=1m&jitter=1s&max_stale=2h&field=token"}
sidecar: {listen: "", unix_socket: %s, metrics_listen: "off"}
`, store, sock)), 0o600)
	if out, err := run(t, "exec", "--config", cfg, "--", "sh", "-c", `test "$ANTHROPIC_API_KEY" = "`+keyA+`"`); err != nil {
		t.Fatalf("exec: %v\n%s", err, out)
	}
	stop, out := start(t, "sidecar", "--config", cfg)
	clitest.WaitFor(t, "the sidecar's socket", func() bool { _, err := os.Stat(sock); return err == nil })
	if err := stop(); err != nil {
		t.Fatalf("sidecar: %v\n%s", err, out)
	}
}

func TestMain(m *testing.M) { mototest.Main(m) }

// forward accepts on addr from now on and joins each connection to target.
func forward(t *testing.T, addr, target string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
}

// TestSidecarStartsWhenStoreComesBack starts a sidecar while its store
// (AWS Secrets Manager on moto) cannot be reached, then lets the store be
// reached: the sidecar reads the key, opens its listener and turns ready,
// on the metrics address that answered all along.
func TestSidecarStartsWhenStoreComesBack(t *testing.T) {
	defer sidecarcli.SetStartWindow(time.Second)()
	moto := mototest.Start(t)
	storeAddr := clitest.FreeAddr(t)
	cfg, _, name, listen, metrics := brokenStore(t, "http://"+storeAddr, "1m")
	if _, err := mototest.SecretsManager(t).CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{
		Name: &name, SecretString: ptr(keyA),
	}); err != nil {
		t.Fatal(err)
	}
	stop, out := start(t, "sidecar", "--config", cfg)
	clitest.WaitFor(t, "a failing /readyz naming the wait", func() bool {
		code, body := get(metrics, "/readyz")
		return code == 503 && strings.Contains(body, "connection refused")
	})
	forward(t, storeAddr, strings.TrimPrefix(moto, "http://"))
	clitest.WaitFor(t, "/readyz 200", func() bool { code, _ := get(metrics, "/readyz"); return code == 200 })
	if code, body := get(listen, "/v1/organizations"); code != 403 {
		t.Fatalf("the sidecar answered %d %s", code, body)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), keyA) {
		t.Fatal("the output holds the key")
	}
}

func ptr[T any](v T) *T { return &v }
