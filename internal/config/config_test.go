package config_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
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
	if got, want := prod.SourceOptions(), (providers.Options{Refresh: time.Minute, Jitter: 10 * time.Second, MaxStale: 2 * time.Hour}); got != want {
		t.Fatalf("source options %+v, want %+v", got, want)
	}
	// Unset settings stay zero: providers fills them in, from the store
	// URL's parameters or its defaults. config decodes no URL parameter.
	for _, name := range []string{"dev", "url"} {
		k, _ := c.Key(name)
		if got := k.SourceOptions(); got != (providers.Options{}) {
			t.Fatalf("%s: source options %+v, want none set", name, got)
		}
	}
	dev, _ := c.Key("dev")
	if dev.LongestRefreshGap() != providers.DefaultRefresh+providers.DefaultRefresh/10 {
		t.Fatalf("longest refresh gap %v", dev.LongestRefreshGap())
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
		{"keys: {prod: {store: \"env://K\"}}\n---\nsidecar: {listen: \"0.0.0.0:1\"}\n", "more than one YAML document"},
		{`keys: {prod: {}}`, "keys.prod.store: missing"},
		{`keys: {prod: }`, "keys.prod is empty"},
		{`keys: {prod: {store: keys.json}}`, "keys.prod.store: \"keys.json\" is not a URL"},
		{`keys: {prod: {store: "env://K", refresh: 5}}`, `"5" is not a Go duration; write it with a unit`},
		{`keys: {prod: {store: "env://K", refresh: 10m, max_stale: 1m}}`, "max_stale 1m0s is shorter than refresh 10m0s"},
		{`keys: {"bad name": {store: "env://K"}}`, "key name must be"},
		// A malformed store URL is named as such (the error blamed "refresh,
		// jitter, max_stale, field").
		{`keys: {prod: {store: " env://K"}}`, "keys.prod: providers: malformed store URL"},
		{`keys: {` + strings.Repeat("k", 64) + `: {store: "env://K"}}`, "key name must be"},
		{`keys: {.k: {store: "env://K"}}`, "key name must be"},
		{`keys: {prod: {store: "env://K", rotation: {issuer: {type: anthropic, pool_low: 1.5}}}}`, "keys.prod.rotation.issuer.pool_low: 1.5 is not a whole number (line 1)"},
		{"x: &n 2.5\nkeys: {prod: {store: \"env://K\", rotation: {issuer: {type: anthropic, pool_low: *n}}}}", "keys.prod.rotation.issuer.pool_low: 2.5 is not a whole number"},
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

// TestStoreURLParametersReachProviders is the regression test of
// "unknown parameter(s) refresh": a store URL with the documented portable
// parameters opens, both the way `check` opens it (cli.OpenSource) and
// with SourceOptions, and the parameters take effect, since only providers
// decodes them.
func TestStoreURLParametersReachProviders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := file.New(path).PutByHand(context.Background(), "prod", []byte(`{"token":"sk-ant-api03-CONFIGTESTKEY-aaaa"}`)); err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse([]byte(`keys: {prod: {store: "file:` + path + `?name=prod&refresh=1m&jitter=2s&max_stale=3h&field=token"}}`))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := c.Key("prod")
	ctx := context.Background()
	check, err := cli.OpenSource(ctx, k, nil)
	if err != nil {
		t.Fatalf("as check opens it: %v", err)
	}
	defer check.Close()
	o := k.SourceOptions()
	src, err := providers.Open(ctx, k.Store, &o)
	if err != nil {
		t.Fatalf("with SourceOptions: %v", err)
	}
	defer src.Close()
	for _, s := range []*providers.Source{check, src} {
		if got := s.Options(); got.Refresh != time.Minute || got.Jitter != 2*time.Second || got.MaxStale != 3*time.Hour || got.Field != "token" {
			t.Fatalf("effective options %+v: the URL's parameters were not used", got)
		}
	}
}

// TestOneDocument: a leading or trailing --- (an empty document) is fine;
// a second document that sets anything is refused, not ignored.
func TestOneDocument(t *testing.T) {
	for _, doc := range []string{
		"---\nkeys: {prod: {store: \"env://K\"}}\n",
		"keys: {prod: {store: \"env://K\"}}\n---\n",
		"keys: {prod: {store: \"env://K\"}}\n---\n# a comment\n...\n",
	} {
		if _, err := config.Parse([]byte(doc)); err != nil {
			t.Errorf("Parse(%q): %v", doc, err)
		}
	}
	if _, err := config.Parse([]byte("keys: {prod: {store: \"env://K\"}}\n---\nkeys: {dev: {store: \"env://D\"}}\n")); err == nil || !strings.Contains(err.Error(), "more than one YAML document") {
		t.Errorf("a second document: %v", err)
	}
}
