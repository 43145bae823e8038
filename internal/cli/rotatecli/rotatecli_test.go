package rotatecli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/cli/clitest"
	"github.com/keywarden/keywarden/internal/cli/rotatecli"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/rotation"
)

// run runs keywarden with args and stdin, as main does, and returns its
// output and exit code.
func run(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := cli.Root()
	root.AddCommand(rotatecli.Commands()...)
	return clitest.Run(t, root, stdin, args...)
}

// env is a config file over a file store.
type env struct {
	t     *testing.T
	dir   string
	store string // the file store's path
	cfg   string // the config file's path
	st    *file.Store
}

func newEnv(t *testing.T, rotationYAML string) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, store: filepath.Join(dir, "keys.json"), cfg: filepath.Join(dir, "kw.yaml")}
	e.st = file.New(e.store)
	e.write(rotationYAML)
	return e
}

func (e *env) write(rotationYAML string) {
	e.t.Helper()
	doc := fmt.Sprintf("keys:\n  prod:\n    store: \"file://%s?name=prod\"\n    refresh: 1s\n    jitter: 100ms\n    rotation:\n%s", e.store, indent(rotationYAML, "      "))
	if err := os.WriteFile(e.cfg, []byte(doc), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = by + l
	}
	return strings.Join(lines, "\n") + "\n"
}

func (e *env) seed(value string) {
	e.t.Helper()
	if err := e.st.PutByHand(context.Background(), "prod", []byte(value)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) current() string {
	e.t.Helper()
	return e.currentOf("prod")
}

// currentOf returns the value of secret name's CURRENT version.
func (e *env) currentOf(name string) string {
	e.t.Helper()
	v, err := e.st.Read(context.Background(), name, driver.Current)
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := providers.DecodePayload(v.Value, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return p.Key.Reveal()
}

func (e *env) record() map[string]string {
	r, err := e.st.ReadRecord(context.Background(), "prod")
	if err != nil {
		e.t.Fatal(err)
	}
	return r.Data
}

const oldKey = "kw-old-shared-secret-0123456789abcdef"

func TestRotateRandom(t *testing.T) {
	e := newEnv(t, "schedule: \"@weekly\"\ngrace: 2s\nissuer: {type: random, prefix: kw-}\n")
	e.seed(oldKey)
	out, stderr, code := run(t, "", "rotate", "--config", e.cfg, "--force")
	if code != 0 || !strings.Contains(out, "prod: rotated") || !strings.Contains(out, "due at") {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	if cur := e.current(); cur == oldKey || !strings.HasPrefix(cur, "kw-") {
		t.Fatal("not rotated")
	}
	// Nothing due: weekly schedule, grace not over.
	out, _, code = run(t, "", "rotate", "--config", e.cfg)
	if code != 0 || !strings.Contains(out, "prod: grace") {
		t.Fatalf("second run: exit %d: %s", code, out)
	}
	// --wait finishes the revocation.
	out, _, code = run(t, "", "rotate", "--config", e.cfg, "--wait", "--json")
	var res struct {
		Outcome  string `json:"outcome"`
		ExitCode int    `json:"exit_code"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("--wait: exit %d %v: %s", code, err, out)
	}
	out, _, code = run(t, "", "rotate", "--config", e.cfg)
	if code != 0 || !strings.Contains(out, "nothing_due") {
		t.Fatalf("after the rotation: exit %d: %s", code, out)
	}
	if strings.Contains(out+stderr, e.current()) || strings.Contains(out+stderr, oldKey) {
		t.Fatal("a key value was printed")
	}
}

func TestRotateDryRun(t *testing.T) {
	e := newEnv(t, "issuer: {type: random}\n")
	e.seed(oldKey)
	before, _ := os.ReadFile(e.store)
	out, _, code := run(t, "", "rotate", "--config", e.cfg, "--dry-run")
	after, _ := os.ReadFile(e.store)
	if code != 0 || !strings.Contains(out, "dry run, would") || !strings.Contains(out, "create a new key with the random issuer") {
		t.Fatalf("exit %d: %s", code, out)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("--dry-run changed the store")
	}
}

func TestRotateExitCodes(t *testing.T) {
	unauthorized := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer unauthorized.Close()
	for _, tc := range []struct {
		name     string
		rotation string
		prepare  func(e *env)
		args     []string
		code     int
		want     string
	}{
		{"probe fails", "issuer: {type: random}\nprobe: {type: http, url: \"" + unauthorized.URL + "\", headers: {Authorization: \"Bearer {{key}}\"}, attempts: 2, backoff: 1ms}\n",
			nil, nil, rotation.ExitProbe, "failed its probe"},
		{"issuer fails", "issuer: {type: exec, command: [/bin/false]}\n", nil, nil, rotation.ExitIssuer, "rotation: prod: create a key: exec: /bin/false: exit status 1"},
		{"pool empty", "issuer: {type: anthropic, admin_key_store: \"file:///nonexistent/a.json?name=admin\", pool_store: \"file://POOL?name=pool\"}\n",
			nil, nil, rotation.ExitPoolEmpty, "pool add"},
		{"store fails", "issuer: {type: random}\n", func(e *env) { _ = os.Chmod(e.store, 0o644) }, nil, rotation.ExitStore, "chmod 600"},
		{"bad config", "issuer: {type: nope}\n", nil, nil, cli.ExitConfig, "want anthropic, exec or random"},
		{"unknown key", "issuer: {type: random}\n", nil, []string{"--key", "staging"}, cli.ExitConfig, "no key named"},
		{"conflict", "issuer: {type: random}\n", func(e *env) {
			killedRun(t, e) // another rotator holds the lease
		}, nil, rotation.ExitConflict, "in progress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, strings.ReplaceAll(tc.rotation, "POOL", filepath.Join(t.TempDir(), "pool.json")))
			e.seed(oldKey)
			if tc.prepare != nil {
				tc.prepare(e)
			}
			out, stderr, code := run(t, "", append([]string{"rotate", "--config", e.cfg}, tc.args...)...)
			if code != tc.code || !strings.Contains(out+stderr, tc.want) {
				t.Fatalf("exit %d, want %d with %q\nstdout: %s\nstderr: %s", code, tc.code, tc.want, out, stderr)
			}
			if tc.code != cli.ExitConfig && tc.name != "store fails" && e.current() != oldKey {
				t.Fatal("CURRENT changed on a failure")
			}
		})
	}
}

func TestStatus(t *testing.T) {
	e := newEnv(t, "schedule: \"@daily\"\ngrace: 1h\nissuer: {type: random}\n")
	e.seed(oldKey)
	if _, _, code := run(t, "", "rotate", "--config", e.cfg, "--force"); code != 0 {
		t.Fatal("rotate failed")
	}
	out, _, code := run(t, "", "status", "--config", e.cfg)
	for _, want := range []string{"prod (issuer random, phase grace)", "current", "previous", "version 1", "version 2", "sha256:", "revoke", "last rotated", "rotated"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if code != 0 || strings.Contains(out, e.current()) || strings.Contains(out, oldKey) {
		t.Fatalf("exit %d or a key printed:\n%s", code, out)
	}
	out, _, code = run(t, "", "status", "--config", e.cfg, "--json")
	var st []rotation.KeyStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || len(st) != 1 {
		t.Fatalf("json: %v: %s", err, out)
	}
	if st[0].Phase != rotation.PhaseGrace || st[0].Current.Version != "2" || st[0].Previous.Version != "1" || st[0].RevokeDue.IsZero() || st[0].Rotations != 1 {
		t.Fatalf("status %+v", st[0])
	}
}

func TestPool(t *testing.T) {
	pool := filepath.Join(t.TempDir(), "pool.json")
	e := newEnv(t, "issuer: {type: anthropic, admin_key_store: \"file:///nonexistent/a.json?name=admin\", pool_store: \"file://"+pool+"?name=pool\"}\n")
	const k1 = "sk-ant-api03-poolkeyonepoolkeyonepoolkeyone0123AA"
	const k2 = "sk-ant-api03-poolkeytwopoolkeytwopoolkeytwo0123AA"
	e.seed("sk-ant-api03-currentcurrentcurrentcurrent0123AA")
	out, stderr, code := run(t, k1+"\n", "pool", "add", "prod", "--config", e.cfg, "--key-id", "apikey_01")
	if code != 0 || !strings.Contains(out, "1 keys available") || strings.Contains(out+stderr, k1) {
		t.Fatalf("add: exit %d: %s %s", code, out, stderr)
	}
	if _, _, code := run(t, k2, "pool", "add", "prod", "--config", e.cfg); code != 0 {
		t.Fatal("second add failed")
	}
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{k1, nil, "already in the pool"},
		{"sk-ant-admin01-adminadminadminadminadmin", nil, "Admin key"},
		{"not-a-key-at-all-0123456789", nil, "not a Claude API key"},
		{"sk-ant-api03-currentcurrentcurrentcurrent0123AA", nil, "is the current key"},
		{"sk-ant-api03-x0123456789abcdef0123456789", []string{"--key-id", "123"}, "not an Admin API key id"},
		{"", nil, "empty"},
		{k2, []string{"staging"}, "at most one KEY"},
	} {
		args := append([]string{"pool", "add", "prod", "--config", e.cfg}, tc.args...)
		out, stderr, code := run(t, tc.stdin, args...)
		// Every refusal is bad input: exit 2 (a duplicate exited 1).
		if code != cli.ExitConfig || !strings.Contains(out+stderr, tc.want) {
			t.Errorf("add %v: exit %d, want 2 with %q: %s %s", tc.args, code, tc.want, out, stderr)
		}
		if tc.stdin != "" && strings.Contains(out+stderr, tc.stdin) {
			t.Errorf("the key was printed")
		}
	}
	out, _, code = run(t, "", "pool", "list", "prod", "--config", e.cfg)
	if code != 0 || !strings.Contains(out, "apikey_01") || strings.Count(out, "available") != 2 || strings.Contains(out, k1) {
		t.Fatalf("list: exit %d:\n%s", code, out)
	}
	// Any pool, addressed by its store URL: no config, no configured key.
	other := "file://" + filepath.Join(t.TempDir(), "other.json") + "?name=seed"
	if out, stderr, code := run(t, k1, "pool", "add", "--store", other); code != 0 || !strings.Contains(out, "1 keys available") {
		t.Fatalf("add --store: exit %d: %s %s", code, out, stderr)
	}
	if _, stderr, code := run(t, k1, "pool", "add", "--store", other); code != cli.ExitConfig || !strings.Contains(stderr, "already in the pool") {
		t.Fatalf("duplicate add --store: exit %d: %s", code, stderr)
	}
	// A typo in a hand-typed path does not start a new store tree.
	typo := "file://" + filepath.Join(t.TempDir(), "typo", "other.json") + "?name=seed"
	if _, stderr, code := run(t, k1, "pool", "add", "--store", typo); code != cli.ExitConfig || !strings.Contains(stderr, "does not exist; create it first") {
		t.Fatalf("add --store into a missing directory: exit %d: %s", code, stderr)
	}
	if out, stderr, code := run(t, "", "pool", "list", "--store", other, "--json"); code != 0 || strings.Count(out, "fingerprint") != 1 || strings.Contains(out, k1) {
		t.Fatalf("list --store: exit %d: %s %s", code, out, stderr)
	}
	if _, stderr, code := run(t, "", "pool", "list"); code != cli.ExitConfig || !strings.Contains(stderr, "--store") {
		t.Fatalf("list without KEY or --store: exit %d: %s", code, stderr)
	}
	// A key without a pool.
	e2 := newEnv(t, "issuer: {type: random}\n")
	if _, stderr, code := run(t, k1, "pool", "add", "prod", "--config", e2.cfg); code != cli.ExitConfig || !strings.Contains(stderr, "has no pool") {
		t.Fatalf("no pool: exit %d: %s", code, stderr)
	}
}

// TestCheckRefusesWhatRotateRefuses: settings whose rules rotation.New and
// the issuers own (not the config loader) fail `check` as they fail
// `rotate`, exit 2 naming the setting, before any rotation is tried.
func TestCheckRefusesWhatRotateRefuses(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"issuer: {type: random}\non_probe_failure: explode\n", "explode"},
		{"issuer: {type: random}\nrotate_before_expiry: -1h\n", "rotate_before_expiry"},
		{"issuer: {type: random}\nrevoke_gate: {prometheus_url: \"ftp://x\"}\n", "ftp://x"},
		{"issuer: {type: random}\nrevoke_gate: {prometheus_url: \"http://127.0.0.1:9090\", checks: -3}\n", "checks"},
	} {
		e := newEnv(t, tc.yaml)
		root := cli.Root(rotatecli.CheckConfig)
		root.AddCommand(rotatecli.Commands()...)
		_, rotErr, rotCode := clitest.Run(t, root, "", "rotate", "--config", e.cfg, "--dry-run")
		out, stderr, code := clitest.Run(t, root, "", "check", "--config", e.cfg)
		if code != cli.ExitConfig || !strings.Contains(out, "FAILED: ") || !strings.Contains(out+stderr, tc.want) {
			t.Errorf("%q: check exit %d, want 2 naming %q (rotate: exit %d %s)\n%s\n%s", tc.yaml, code, tc.want, rotCode, rotErr, out, stderr)
		}
		if rotCode != cli.ExitConfig {
			t.Errorf("%q: rotate exit %d, want 2: %s", tc.yaml, rotCode, rotErr)
		}
	}
	// A valid rotation passes check.
	e := newEnv(t, "schedule: \"@weekly\"\nissuer: {type: random}\n")
	e.seed(oldKey)
	root := cli.Root(rotatecli.CheckConfig)
	if out, stderr, code := clitest.Run(t, root, "", "check", "--config", e.cfg); code != 0 {
		t.Errorf("valid rotation: check exit %d\n%s\n%s", code, out, stderr)
	}
}
