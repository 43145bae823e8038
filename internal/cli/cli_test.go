package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/cli/clitest"
	"github.com/keywarden/keywarden/internal/cli/sidecarcli"
	"github.com/keywarden/keywarden/providers"
	_ "github.com/keywarden/keywarden/providers/all"
	"github.com/keywarden/keywarden/providers/providertest"
)

// run runs the CLI in-process with args and stdin, returning stdout,
// stderr and the exit code.
func run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return clitest.Run(t, cli.Root(), stdin, args...)
}

func TestDefaultCheckPut(t *testing.T) {
	t.Setenv("KEYWARDEN_HOME", t.TempDir())
	t.Setenv("KEYWARDEN_CONFIG", "")
	out, errOut, code := run(t, "", "check")
	if code != 0 || !strings.Contains(out, "default") || !strings.Contains(errOut, "PLACEHOLDER") {
		t.Fatalf("first check: code %d\n%s\n%s", code, out, errOut)
	}
	const key = "sk-ant-api03-cli-test-key-0123456789abcdefghij"
	out, errOut, code = run(t, key+"\n", "put", "default", "--key-id", "apikey_01")
	if code != 0 || !strings.Contains(out, "is now version 2") {
		t.Fatalf("put: code %d\n%s\n%s", code, out, errOut)
	}
	out, errOut, code = run(t, "", "check")
	if code != 0 || !strings.Contains(out, "apikey_01") || strings.Contains(errOut, "PLACEHOLDER") {
		t.Fatalf("check after put: code %d\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out+errOut, key) || strings.Contains(out+errOut, "cli-test-key") {
		t.Fatal("check printed the key")
	}
	_, errOut, code = run(t, "", "put", "default")
	if code != cli.ExitConfig || !strings.Contains(errOut, "payload is empty") {
		t.Fatalf("put with empty stdin: code %d %s", code, errOut)
	}
}

func TestCheckFailures(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kw.yaml")
	os.WriteFile(cfg, []byte("keys:\n  prod:\n    store: file://"+dir+"/none.json?name=prod\n"), 0o600)
	out, _, code := run(t, "", "check", "--config", cfg)
	if code != cli.ExitFailed || !strings.Contains(out, "FAILED") || !strings.Contains(out, "not found") {
		t.Fatalf("check of a missing secret: code %d\n%s", code, out)
	}
	os.WriteFile(cfg, []byte("keys:\n  prod:\n    store: file://x\n    refersh: 1m\n"), 0o600)
	_, errOut, code := run(t, "", "check", "--config", cfg)
	if code != cli.ExitConfig || !strings.Contains(errOut, `unknown field "refersh"`) {
		t.Fatalf("check with a typo: code %d\n%s", code, errOut)
	}
	_, errOut, code = run(t, "", "check", "--config", filepath.Join(dir, "missing.yaml"))
	if code != cli.ExitConfig || !strings.Contains(errOut, "no such file") {
		t.Fatalf("check with a missing config: code %d %s", code, errOut)
	}
	out, _, code = run(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "keywarden ") {
		t.Fatalf("version: %d %q", code, out)
	}
}

const testKey = "sk-ant-api03-cli-strict-test-key-0123456789abcdefghijklmnop"

// fileStore writes a config whose key prod reads secret prod of a new file
// store, with extra appended to the store URL and yamlExtra to the key, and
// returns the config path and the store URL.
func fileStore(t *testing.T, extra, yamlExtra string) (cfg, storeURL string) {
	t.Helper()
	dir := t.TempDir()
	storeURL = "file://" + filepath.Join(dir, "keys.json") + "?name=prod" + extra
	cfg = filepath.Join(dir, "kw.yaml")
	if err := os.WriteFile(cfg, []byte("keys:\n  prod:\n    store: \""+storeURL+"\"\n"+yamlExtra), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, storeURL
}

// badPayloads cannot be keys: each would be accepted and then 401 on every
// request.
var badPayloads = map[string]string{
	"empty":           "\n",
	"JSON null":       "null",
	"JSON array":      "[]",
	"JSON string":     `"` + testKey + `"`,
	"inner space":     testKey[:25] + " " + testKey[25:],
	"control":         testKey[:25] + "\x07" + testKey[25:],
	"two lines":       testKey + "\n" + testKey,
	"field with CRLF": `{"api_key":"` + testKey + `\r\n"}`,
}

func TestPutRefusesBadPayloads(t *testing.T) {
	cfg, _ := fileStore(t, "", "")
	if _, errOut, code := run(t, testKey, "put", "prod", "--config", cfg); code != 0 {
		t.Fatalf("seeding put: %d %s", code, errOut)
	}
	for name, payload := range badPayloads {
		t.Run(name, func(t *testing.T) {
			out, errOut, code := run(t, payload, "put", "prod", "--config", cfg)
			if code != cli.ExitConfig || !strings.Contains(errOut, "put: the key on stdin: providers: ") || !strings.Contains(errOut, "payload") && !strings.Contains(errOut, "key holds") {
				t.Fatalf("put: code %d\n%s\n%s", code, out, errOut)
			}
			if strings.Contains(out+errOut, testKey[13:40]) {
				t.Fatal("put echoed the key")
			}
			out, errOut, code = run(t, "", "check", "--config", cfg)
			if code != 0 || !strings.Contains(out, providers.Fingerprint(testKey)) {
				t.Fatalf("the store changed after a refused put: code %d\n%s%s", code, out, errOut)
			}
		})
	}
	if _, errOut, code := run(t, testKey, "put", "prod", "--config", cfg, "--key-id", "apikey 01"); code != cli.ExitConfig || !strings.Contains(errOut, "--key-id") {
		t.Fatalf("put with a bad --key-id: code %d %s", code, errOut)
	}
}

func TestCheckRefusesBadPayloads(t *testing.T) {
	for name, payload := range badPayloads {
		t.Run(name, func(t *testing.T) {
			cfg, storeURL := fileStore(t, "", "")
			st, secret, err := providers.OpenStager(context.Background(), storeURL)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			providertest.Rotate(t, st, secret, []byte(payload))
			out, errOut, code := run(t, "", "check", "--config", cfg)
			if code != cli.ExitConfig || !strings.Contains(out, "FAILED") || !strings.Contains(out, "payload") || !strings.Contains(errOut, "bad input") {
				t.Fatalf("check of a stored %s: code %d\n%s\n%s", name, code, out, errOut)
			}
			if strings.Contains(out+errOut, testKey[13:40]) {
				t.Fatal("check echoed the stored value")
			}
		})
	}
}

// TestCheckPortableParameters: the documented portable parameters in the
// store URL, with or without the same settings in the config, are known
// (they were "unknown parameter(s) refresh" whenever they were given).
func TestCheckPortableParameters(t *testing.T) {
	for _, tc := range []struct{ name, extra, yaml string }{
		{"in the URL", "&refresh=1m&jitter=5s&max_stale=2h&field=api_key", ""},
		{"in the URL and the config", "&refresh=1m&max_stale=2h", "    refresh: 2m\n    jitter: 1s\n    max_stale: 3h\n    field: api_key\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := fileStore(t, tc.extra, tc.yaml)
			if _, errOut, code := run(t, testKey, "put", "prod", "--config", cfg); code != 0 {
				t.Fatalf("put: %d %s", code, errOut)
			}
			out, errOut, code := run(t, "", "check", "--config", cfg)
			if code != 0 || !strings.Contains(out, "ok") {
				t.Fatalf("check: code %d\n%s\n%s", code, out, errOut)
			}
		})
	}
}

// TestPutStore: put --store writes any store without a config (as for
// admin_key_store), with the key id in the URL's field.
func TestPutStore(t *testing.T) {
	home := t.TempDir()
	t.Setenv("KEYWARDEN_HOME", home)
	t.Setenv("KEYWARDEN_CONFIG", "")
	storeURL := "file://" + filepath.Join(t.TempDir(), "admin.json") + "?name=admin&field=token"
	out, errOut, code := run(t, testKey+"\n", "put", "--store", storeURL, "--key-id", "apikey_01admin")
	if code != 0 || !strings.Contains(out, "is now version") {
		t.Fatalf("put --store: code %d\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out+errOut, testKey[13:40]) {
		t.Fatal("put echoed the key")
	}
	src, err := providers.Open(context.Background(), storeURL, &providers.Options{Refresh: -1})
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	defer src.Close()
	if k := src.Current(); k.Value.Reveal() != testKey || k.KeyID != "apikey_01admin" {
		t.Fatalf("read back %v (key id %q)", k, k.KeyID)
	}
	if entries, _ := os.ReadDir(home); len(entries) != 0 {
		t.Fatal("put --store created the embedded default store")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"put", "--store", storeURL, "prod"}, "not both"},
		{[]string{"put"}, "name a configured KEY, or give --store URL"},
		{[]string{"put", "--store", "nosuch://x"}, "unknown store scheme"},
		{[]string{"put", "--store", storeURL + "&refresh=soon"}, "not a positive Go duration"},
		{[]string{"put", "--store", "env://X"}, "read-only"},
		// A typo in a hand-typed path does not start a new store tree.
		{[]string{"put", "--store", "file://" + filepath.Join(t.TempDir(), "typo", "admin.json") + "?name=admin"}, "does not exist; create it first"},
	} {
		if _, errOut, code := run(t, testKey, tc.args...); code != cli.ExitConfig || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: code %d %s", tc.args, code, errOut)
		}
	}
}

// TestKeyInStoreURLNeverPrinted: a key pasted into a store URL (instead of
// a variable's name, or as a parameter) is redacted from check's table and
// from every error of check and put --store.
func TestKeyInStoreURLNeverPrinted(t *testing.T) {
	const key = "sk-ant-api03-PASTEDPASTEDPASTEDPASTEDPASTEDPASTED-PASTEDAA"
	dir := t.TempDir()
	for _, store := range []string{
		"env://" + key,
		"file://" + filepath.Join(dir, "keys.json") + "?name=prod&api_key=" + key,
		"nosuch://" + key,
		// A key pasted as the secret's name or into the path: the store's
		// own error quotes them.
		"file://" + filepath.Join(dir, "keys.json") + "?name=" + key,
		"file://" + filepath.Join(dir, key, "keys.json") + "?name=prod",
	} {
		cfg := filepath.Join(dir, "kw.yaml")
		if err := os.WriteFile(cfg, []byte("keys: {prod: {store: \""+store+"\"}}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := run(t, "", "check", "--config", cfg)
		if code == 0 || !strings.Contains(out, "[redacted "+providers.Fingerprint(key)+"]") {
			t.Errorf("%s: check exit %d, want a failure naming the redacted value:\n%s\n%s", store, code, out, errOut)
		}
		if strings.Contains(out+errOut, key) || strings.Contains(out+errOut, "PASTEDPASTED") {
			t.Errorf("%s: check printed the key:\n%s\n%s", store, out, errOut)
		}
		out, errOut, code = run(t, "sk-ant-api03-new-key-0123456789abcdefghijklmn\n", "put", "--store", store)
		if code == 0 && !strings.Contains(store, "file:") || strings.Contains(out+errOut, "PASTEDPASTED") {
			t.Errorf("%s: put --store exit %d, printed:\n%s\n%s", store, code, out, errOut)
		}
	}
}

// TestKeyInTokenPathNeverPrinted: check's FAILED line for a client token
// file quotes its path; a key pasted there prints as its fingerprint.
func TestKeyInTokenPathNeverPrinted(t *testing.T) {
	const key = "sk-ant-api03-PASTEDPASTEDPASTEDPASTEDPASTEDPASTED-PASTEDAA"
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kw.yaml")
	doc := "keys: {prod: {store: \"env://KW_TEST_UNSET_KEY\"}}\nsidecar: {client_token_file: \"" + filepath.Join(dir, key) + "\"}\n"
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := clitest.Run(t, cli.Root(sidecarcli.CheckConfig), "", "check", "--config", cfg)
	if code == 0 || !strings.Contains(out, "FAILED: sidecar.client_token_file") {
		t.Fatalf("check exit %d, want a failed token file:\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out+errOut, "PASTEDPASTED") {
		t.Errorf("check printed the key:\n%s\n%s", out, errOut)
	}
}

// TestFlagErrorsEveryCommand shows that --log-level and --log-format are
// checked by every command, not only by those that log, and that check's
// --timeout must be positive: each is a flag error (exit 2) naming the flag.
func TestFlagErrorsEveryCommand(t *testing.T) {
	t.Setenv("KEYWARDEN_HOME", t.TempDir())
	t.Setenv("KEYWARDEN_CONFIG", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "--log-level", "bogus"}, `--log-level "bogus": want debug, info, warn or error`},
		{[]string{"check", "--log-format", "xml"}, `--log-format "xml": want text or json`},
		{[]string{"version", "--log-format", "xml"}, `--log-format "xml"`},
		{[]string{"check", "--timeout", "0s"}, "check: --timeout 0s: want a positive duration"},
		{[]string{"check", "--timeout", "-1s"}, "check: --timeout -1s: want a positive duration"},
	} {
		out, errOut, code := run(t, "", tc.args...)
		if code != cli.ExitConfig || !strings.Contains(errOut, tc.want) || out != "" {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
}

// TestJSONLogDurations shows that the JSON log writes a duration as the
// text log does ("30s"), not in nanoseconds.
func TestJSONLogDurations(t *testing.T) {
	root := cli.Root()
	if err := root.ParseFlags([]string{"--log-format", "json"}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	lg, err := cli.Logger(root, &buf)
	if err != nil {
		t.Fatal(err)
	}
	lg.Info("proxy: shutting down", "timeout", 30*time.Second, slog.Group("g", "d", 1500*time.Millisecond), "n", 7)
	var rec struct {
		Timeout string
		G       struct{ D string }
		N       int
	}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil || rec.Timeout != "30s" || rec.G.D != "1.5s" || rec.N != 7 {
		t.Fatalf("got %s (%v), want timeout \"30s\", g.d \"1.5s\", n 7", buf.Bytes(), err)
	}
}

// TestCheckVersionIDShapedLikeKey: a hand-written file store whose version
// holds the key in its id too (pasted in both fields) would show it where
// ids are printed as they are: check's table, the sidecar's key_info
// metric, status. The read is refused as bad input (exit 2), and the key
// is printed nowhere.
func TestCheckVersionIDShapedLikeKey(t *testing.T) {
	key := string(providertest.FakeKey())
	dir := t.TempDir()
	store, err := json.Marshal(map[string]any{"secrets": map[string]any{"prod": map[string]any{
		"versions": []map[string]string{{"id": key, "value": key}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keys.json"), store, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "kw.yaml")
	if err := os.WriteFile(cfg, []byte("keys: {prod: {store: \"file://"+dir+"/keys.json?name=prod\"}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := run(t, "", "check", "--config", cfg)
	all := strings.ReplaceAll(out+errOut, key[13:], "<the key>")
	if code != cli.ExitConfig || !strings.Contains(out, "id is shaped like a key") || strings.Contains(out+errOut, key[13:]) {
		t.Fatalf("check: exit %d, want 2, a refusal and the key nowhere:\n%s", code, all)
	}
}
