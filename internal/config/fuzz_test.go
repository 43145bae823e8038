package config_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/config"
)

// keyShaped matches anything shaped like an API key.
var keyShaped = regexp.MustCompile(`sk-[A-Za-z0-9_\-]{12,}`)

// FuzzParse feeds arbitrary documents to the config loader. Property: no
// panic; an accepted config has every key with a store URL; an error
// never holds a key-shaped value, wherever the document put one.
func FuzzParse(f *testing.F) {
	const key = "sk-ant-api03-FUZZCONFIGKEYAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-aaaa"
	for _, doc := range []string{
		`keys: {prod: {store: "awssm://anthropic/prod?region=us-east-1", refresh: 1m, jitter: 10s, max_stale: 2h}}`,
		`keys: {prod: {store: "file:keys.json?name=prod&refresh=1m"}}`,
		"keys: {prod: {store: " + key + "}}",
		"keys: {prod: {store: \"env://K\", field: " + key + "}}",
		"keys: {" + key + ": {store: \"env://K\"}}",
		"keys: {prod: {store: \"env://K\"}}\nsidecar: {listen: " + key + "}",
		"keys: {prod: {store: \"env://K\"}}\nsidecar: {routes: [{prefix: /, key: prod, upstream: \"https://x/" + key + "\"}]}",
		"keys: {prod: {store: \"env://K\"}}\nsidecar: {routes: [{prefix: /, key: prod, anthropic_version: " + key + "}]}",
		"keys: {prod: {store: \"env://K\", refresh: " + key + "}}",
		"keys: {prod: {store: \"env://K\"}}\nsidecar: {exec: {env: " + key + ", signal: " + key + "}}",
		"keys: {prod: {store: \"env://K\", rotation: {issuer: {type: " + key + "}}}}",
		"keys: [" + key + "]",
		"keys: {prod: {store: \"env://K\"}}\nsidecar: {allow_paths: [/v1/" + key + "/..], max_retry_body: " + key + "}",
		`keys: {prod: {store: "env://K"}}
sidecar:
  listen: 127.0.0.1:8787
  unix_socket: /run/kw.sock
  metrics_listen: "off"
  start_timeout: 30s
  routes: [{prefix: /, key: prod}, {listener: "127.0.0.1:8788", key: prod, auth: bearer, upstream: "http://127.0.0.1:9000"}]
  rate_limit: {rps: 0, burst: 3, concurrency: 8}
  timeouts: {header: 1m, client_header: 5s, idle: 2m, shutdown: 5s}`,
		`keys: {prod: {store: "env://K", rotation: {schedule: "@weekly", grace: 1h, issuer: {type: random, bytes: 32}}}}`,
		`keys: {prod: {store: "env://K"}}` + "\nrotator: {lease: 5m, metrics_listen: \"off\"}",
		"keys: {prod: }", "", "---", "keys: {prod: {store: !!binary aGVsbG8=}}", "keys: &a {p: *a}",
	} {
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		c, err := config.Parse([]byte(doc))
		if err != nil {
			if m := keyShaped.FindString(err.Error()); m != "" {
				t.Fatalf("the error holds a key-shaped value %q: %v", m, err)
			}
			return
		}
		if len(c.Keys) == 0 {
			t.Fatal("accepted a config without keys")
		}
		for name, k := range c.Keys {
			if k == nil || strings.TrimSpace(k.Store) == "" || k.Name != name {
				t.Fatalf("accepted key %q without a store: %+v", name, k)
			}
		}
	})
}
