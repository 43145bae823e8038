package all_test

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	_ "github.com/keywarden/keywarden/providers/all"
	"github.com/keywarden/keywarden/providers/codes"
)

// TestSDKFilesNotPipes: each cloud SDK reads some files itself, named by
// environment variables (a CA bundle, a web identity token, credentials).
// A named pipe at one blocked the driver's open, or every credential
// refresh, for ever; the open now fails at once, as bad input naming the
// variable.
func TestSDKFilesNotPipes(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ env, url string }{
		{"AWS_WEB_IDENTITY_TOKEN_FILE", "awssm://prod?region=us-east-1"},
		{"AWS_CONFIG_FILE", "awssm://prod?region=us-east-1"},
		{"AWS_SHARED_CREDENTIALS_FILE", "awssm://prod?region=us-east-1"},
		{"AWS_CA_BUNDLE", "awssm://prod?region=us-east-1"},
		{"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "awssm://prod?region=us-east-1"},
		{"GOOGLE_APPLICATION_CREDENTIALS", "gcpsm://projects/p/secrets/prod"},
		{"VAULT_CACERT", "vault://secret/prod?address=https://127.0.0.1:1"},
		{"VAULT_CLIENT_CERT", "vault://secret/prod?address=https://127.0.0.1:1"},
		{"VAULT_CLIENT_KEY", "vault://secret/prod?address=https://127.0.0.1:1"},
	}
	for _, c := range cases {
		t.Run(c.env, func(t *testing.T) {
			t.Setenv(c.env, fifo)
			t.Setenv("VAULT_TOKEN", "t")
			done := make(chan error, 1)
			go func() {
				d, _, _, err := providers.OpenDriver(context.Background(), c.url)
				if err == nil {
					d.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !codes.Is(err, codes.InvalidArgument) || !strings.Contains(err.Error(), c.env+"=") || !strings.Contains(err.Error(), "named pipe") {
					t.Fatalf("open %s with %s a named pipe: %v; want InvalidArgument naming the variable", c.url, c.env, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("open %s with %s a named pipe: still blocked after 10s", c.url, c.env)
			}
		})
	}
}
