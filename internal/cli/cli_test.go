package cli_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/cli"
	_ "github.com/keywarden/keywarden/providers/all"
)

// run runs the CLI in-process with args and stdin, returning stdout,
// stderr and the exit code.
func run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	root := cli.Root()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	err := root.ExecuteContext(context.Background())
	code := 0
	if err != nil {
		errOut.WriteString(err.Error())
		code = cli.ExitConfig
		var ee *cli.ExitError
		if errors.As(err, &ee) {
			code = ee.Code
		}
	}
	return out.String(), errOut.String(), code
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
