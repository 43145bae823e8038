package redact_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/redact"
)

const secret = "sk-ant-api03-TELEMETRYSECRETVALUE0123456789abcdefAA"

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, gone string }{
		{"upstream said: invalid key " + secret, "TELEMETRYSECRETVALUE"},
		{"authorization: Bearer abcdefghijklmnopqrstuvwxyz0123", "abcdefghijklmnop"},
		{"sk-proj-OPENAIKEYVALUE1234567890", "OPENAIKEYVALUE"},
		// A JWT (a workload's identity token) in a store's or endpoint's message.
		{"token endpoint: bad assertion eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "eyJzdWIiOiJ4In0"},
	} {
		out := redact.String(tc.in)
		if strings.Contains(out, tc.gone) || !strings.Contains(out, "[redacted ") {
			t.Errorf("Redact(%q) = %q", tc.in, out)
		}
	}
	if s := "nothing to hide here: sk-short"; redact.String(s) != s {
		t.Fatal("Redact changed text without a key")
	}
}

type stringer struct{}

func (stringer) String() string { return "x-api-key=" + secret }

func TestRedactingHandler(t *testing.T) {
	var buf bytes.Buffer
	log := redact.NewLogger(slog.NewJSONHandler(&buf, nil))
	log = log.With("static", secret).WithGroup("g")
	log.Info("got "+secret, "err", errors.New("bad key "+secret), "s", stringer{}, "any", []string{secret},
		slog.Group("nested", "v", secret), "n", 3, "key", providers.NewSecret(secret))
	out := buf.String()
	if strings.Contains(out, "TELEMETRYSECRETVALUE") {
		t.Fatalf("a log line holds the key: %s", out)
	}
	if !strings.Contains(out, `"n":3`) || !strings.Contains(out, "[redacted sk-ant-api03-…sha256:") {
		t.Fatalf("log line lost its structure: %s", out)
	}
	if !log.Enabled(context.Background(), slog.LevelInfo) || log.Enabled(context.Background(), slog.LevelDebug) {
		t.Fatal("Enabled does not follow the wrapped handler")
	}
}
