package rotatecli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/cli"
	_ "github.com/keywarden/keywarden/providers/federation"
)

// TestKeylessStatusAndRotate: `status` on a keyless key (wif://) exchanges
// once and shows the token's fingerprint, expiry and next refresh; `rotate`
// on it says there is nothing to rotate with the configuration's exit code;
// neither prints the token or the assertion.
func TestKeylessStatusAndRotate(t *testing.T) {
	srv := anthropictest.Start(t)
	store, rule, assertion := srv.WIFStore(t, 10*time.Minute)
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.yaml")
	rotated := filepath.Join(dir, "rotated.yaml")
	for f, doc := range map[string]string{
		plain:   "keys:\n  fed:\n    store: \"" + store + "\"\n",
		rotated: "keys:\n  fed:\n    store: \"" + store + "\"\n    rotation:\n      schedule: \"@weekly\"\n      grace: 1h\n      issuer: {type: random}\n      probe: {type: none}\n",
	} {
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code := run(t, "", "status", "--config", plain)
	if code != 0 || !strings.Contains(out, "fed (keyless: a short-lived token, nothing to rotate)") ||
		!strings.Contains(out, "expires") || !strings.Contains(out, "next refresh") || !strings.Contains(out, "token         sk-ant-") {
		t.Fatalf("status: exit %d\n%s\n%s", code, out, errOut)
	}
	toks := srv.OAuthTokens()
	if len(toks) != 1 || !strings.Contains(out, toks[0].Expires.UTC().Format("2006-01-02T15:04")) {
		t.Fatalf("status does not show the expiry of the one exchanged token (%d tokens):\n%s", len(toks), out)
	}
	_, errOut2, code := run(t, "", "rotate", "--config", rotated, "--key", "fed")
	if code != cli.ExitConfig || !strings.Contains(errOut2, "nothing to rotate") || !strings.Contains(errOut2, rule.ID) {
		t.Fatalf("rotate on a keyless key: exit %d, want %d\n%s", code, cli.ExitConfig, errOut2)
	}
	if leaks := srv.LeakedOAuth(out+errOut+errOut2, assertion); len(leaks) > 0 {
		t.Fatalf("output leaks %v", leaks)
	}
}
