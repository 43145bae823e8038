package env_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/env"
	"github.com/keywarden/keywarden/providers/providertest"
)

func TestReadOnlyConformance(t *testing.T) {
	var mu sync.Mutex
	vars := map[string]string{}
	r := env.NewLookup(func(k string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		v, ok := vars[k]
		return v, ok
	})
	providertest.RunReadOnly(t, r, func(name string, v []byte) {
		mu.Lock()
		vars[name] = string(v)
		mu.Unlock()
	}, providers.AsStager)
}

func TestOpen(t *testing.T) {
	t.Setenv("KW_TEST_KEY", "sk-ant-api03-0123456789abcdefghijklmnop")
	ctx := context.Background()
	src, err := providers.Open(ctx, "env://KW_TEST_KEY", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Key().Reveal() != "sk-ant-api03-0123456789abcdefghijklmnop" {
		t.Fatalf("got key %s", src.Key())
	}
	if _, _, err := providers.OpenStager(ctx, "env://KW_TEST_KEY"); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("OpenStager(env): %v, want a read-only error", err)
	}
	for _, tc := range []struct{ url, want string }{
		{"env://", "not an environment variable name"},
		{"env://BAD-NAME", "not an environment variable name"},
		{"env://KW_TEST_KEY/x", "has a path"},
		{"env://KW_TEST_KEY?region=x", "unknown parameter(s) region"},
		{"env://KW_TEST_UNSET_VARIABLE", "not set"},
	} {
		_, err := providers.Open(ctx, tc.url, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q): got %v, want an error containing %q", tc.url, err, tc.want)
		}
	}
}
