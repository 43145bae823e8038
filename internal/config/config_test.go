package config_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/config"
)

func TestParse(t *testing.T) {
	c, err := config.Parse([]byte(`
keys:
  prod:
    store: awssm://anthropic/prod?region=us-east-1
    refresh: 1m
    jitter: 10s
    max_stale: 2h
  dev:
    store: env://ANTHROPIC_API_KEY
  url:
    store: file:///k.json?name=x&refresh=2m&max_stale=3h&field=token
`))
	if err != nil {
		t.Fatal(err)
	}
	prod, err := c.Key("prod")
	if err != nil {
		t.Fatal(err)
	}
	if prod.RefreshInterval() != time.Minute || prod.JitterInterval() != 10*time.Second || prod.MaxStaleInterval() != 2*time.Hour {
		t.Fatalf("durations: %v %v %v", prod.RefreshInterval(), prod.JitterInterval(), prod.MaxStaleInterval())
	}
	dev, _ := c.Key("dev")
	if dev.RefreshInterval() != config.DefaultRefresh || dev.JitterInterval() != config.DefaultRefresh/10 || dev.LongestRefreshGap() != 330*time.Second {
		t.Fatal("defaults not applied")
	}
	u, _ := c.Key("url")
	if u.RefreshInterval() != 2*time.Minute || u.JitterInterval() != 12*time.Second || u.MaxStaleInterval() != 3*time.Hour || u.FieldName() != "token" {
		t.Fatal("store URL parameters not used")
	}
	if got := strings.Join(c.Names(), ","); got != "dev,prod,url" {
		t.Fatalf("names %s", got)
	}
	if _, err := c.Key("staging"); err == nil || !strings.Contains(err.Error(), "keys: dev, prod, url") {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{``, "empty"},
		{`keys: {}`, "no keys configured"},
		{`keys: {prod: {store: x, colour: blue}}`, `unknown field "colour" (known fields here: field, jitter, max_stale, refresh, rotation, store)`},
		{`kees: {}`, `unknown field "kees"`},
		{`keys: {prod: {}}`, "keys.prod.store: missing"},
		{`keys: {prod: }`, "keys.prod is empty"},
		{`keys: {prod: {store: keys.json}}`, "keys.prod.store: \"keys.json\" is not a URL"},
		{`keys: {prod: {store: "env://K", refresh: 5}}`, `"5" is not a Go duration; write it with a unit`},
		{`keys: {prod: {store: "env://K", refresh: 10m, max_stale: 1m}}`, "keys.prod.max_stale: 1m0s is shorter than refresh"},
		{`keys: {"bad name": {store: "env://K"}}`, "key name must be"},
		{`keys: {prod: {store: "env://K", rotation: {grace: 1m}}}`, "keys.prod.rotation.grace: 1m0s is shorter than the key's refresh + jitter (5m30s)"},
	} {
		_, err := config.Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q): got %v, want an error containing %q", tc.doc, err, tc.want)
		}
	}
}

func TestLoadNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kw.yaml")
	if err := os.WriteFile(path, []byte("keys: {prod: {store: x, colour: 1}}"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("got %v, want the path and the line", err)
	}
}

func TestDefaultCreatesPlaceholderOnce(t *testing.T) {
	t.Setenv("KEYWARDEN_HOME", t.TempDir())
	c, created, err := config.Default(context.Background())
	if err != nil || !created {
		t.Fatalf("first Default: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(config.DefaultStorePath())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("default store: %v mode %v", err, fi.Mode())
	}
	if _, err := c.Key(config.DefaultKeyName); err != nil {
		t.Fatal(err)
	}
	if _, created, err := config.Default(context.Background()); err != nil || created {
		t.Fatalf("second Default: created=%v err=%v", created, err)
	}
}
