package cli_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/providers"
)

// check on a keyless (wif://) key performs one exchange and prints the
// token's fingerprint and expiry, never the token nor the assertion; put
// on it says there is nothing to put.
func TestCheckAndPutFederationKey(t *testing.T) {
	srv := anthropictest.Start(t)
	store, rule, assertion := srv.WIFStore(t, 10*time.Minute)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kw.yaml")
	os.WriteFile(cfg, []byte("keys:\n  claude:\n    store: \""+store+"\"\n"), 0o600)

	out, errOut, code := run(t, "", "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, "exchanged a short-lived token, expires ") || !strings.Contains(out, "(in 10m0s)") {
		t.Fatalf("check: code %d\n%s\n%s", code, out, errOut)
	}
	toks := srv.OAuthTokens()
	if len(toks) != 1 {
		t.Fatalf("%d exchanges, want 1", len(toks))
	}
	if !strings.Contains(out, toks[0].Expires.UTC().Format("2006-01-02T15:04")) {
		t.Fatalf("check does not show the token's expiry %v:\n%s", toks[0].Expires, out)
	}

	_, errOut2, code := run(t, "sk-ant-api03-some-key-0123456789abcdef\n", "put", "--store", store)
	if code != cli.ExitConfig && code != cli.ExitFailed || !strings.Contains(errOut2, "nothing to rotate") || !strings.Contains(errOut2, rule.ID) {
		t.Fatalf("put on a federation key: code %d\n%s", code, errOut2)
	}
	d, _, _, err := providers.OpenDriver(context.Background(), store)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := providers.AsStager(d); !errors.Is(err, providers.ErrKeyless) {
		t.Fatalf("AsStager = %v, want ErrKeyless in the chain", err)
	}
	if leaks := srv.LeakedOAuth(out+errOut+errOut2, assertion); len(leaks) > 0 {
		t.Fatalf("output leaks %v", leaks)
	}
}
