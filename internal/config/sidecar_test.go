package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/proxy/settings"
)

// TestSidecarCopiesOnly checks that the sidecar section holds what the file
// set and nothing else: internal/proxy/settings owns the defaults.
func TestSidecarCopiesOnly(t *testing.T) {
	c, err := config.Parse([]byte(`keys: {prod: {store: "env://K"}}`))
	if err != nil {
		t.Fatal(err)
	}
	s := &c.Sidecar
	if s.ListenAddr() != settings.DefaultListen || s.MetricsAddr() != settings.DefaultMetricsListen {
		t.Fatalf("listen %q metrics %q", s.ListenAddr(), s.MetricsAddr())
	}
	routes := s.EffectiveRoutes(c)
	if want := (config.Route{Prefix: "/", Key: "prod"}); len(routes) != 1 || routes[0] != want {
		t.Fatalf("routes %+v, want [%+v]: only the structure is filled in", routes, want)
	}
	if s.AllowPaths != nil || s.MaxRetryBody != nil || s.RateLimit != (config.RateLimit{}) || s.Timeouts != (config.Timeouts{}) || s.StartTimeout.D != 0 {
		t.Fatalf("config filled in a default: %+v", s)
	}
	if s.ExecKey(c) != "prod" || s.SinkKey(c) != "prod" || s.Exec != (config.Exec{}) {
		t.Fatal("exec: the key default not applied, or another default filled in")
	}
}

func TestSidecarFull(t *testing.T) {
	c, err := config.Parse([]byte(`
keys:
  prod: {store: "env://P"}
  staging: {store: "env://S"}
sidecar:
  listen: 0.0.0.0:8787
  unix_socket: /run/keywarden.sock
  metrics_listen: "off"
  client_token_file: /etc/keywarden/token
  start_timeout: 10s
  routes:
    - {prefix: /, key: prod}
    - {prefix: /staging/, key: staging, version_policy: enforce, anthropic_version: "2023-06-01"}
    - {listener: "127.0.0.1:8790", key: staging, upstream: "http://127.0.0.1:9000/", auth: bearer}
  allow_paths: [/v1/messages]
  max_retry_body: 512KiB
  rate_limit: {rps: 0, concurrency: 8}
  timeouts: {header: 1m, idle: 2m, shutdown: 5s}
  file_sink: {path: /run/key, key: staging}
  exec: {on_change: signal, signal: USR1, env: CLAUDE_KEY}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := &c.Sidecar
	if s.MetricsAddr() != "" || s.MaxRetryBody.Bytes != 512<<10 || s.Timeouts.Header.D != time.Minute || s.Timeouts.Shutdown.D != 5*time.Second || s.StartTimeout.D != 10*time.Second {
		t.Fatal("explicit values not kept")
	}
	if *s.RateLimit.RPS != 0 || *s.RateLimit.Concurrency != 8 || s.RateLimit.Burst != nil {
		t.Fatalf("rate limit %+v", s.RateLimit)
	}
	r := s.EffectiveRoutes(c)
	if r[1].Prefix != "/staging/" || r[2].Upstream != "http://127.0.0.1:9000/" || r[2].AnthropicVersion != "" || r[2].Auth != "bearer" {
		t.Fatalf("routes %+v", r)
	}
	if s.SinkKey(c) != "staging" || s.ExecKey(c) != "prod" || s.Exec != (config.Exec{OnChange: "signal", Signal: "USR1", Env: "CLAUDE_KEY"}) {
		t.Fatal("sink or exec settings not kept")
	}
	// Only a unix socket: no TCP listener.
	s2 := config.Sidecar{UnixSocket: "/run/k.sock"}
	if s2.ListenAddr() != "" {
		t.Fatal("a unix-socket-only sidecar listens on TCP")
	}
}

func TestSidecarErrors(t *testing.T) {
	const keys = "keys: {prod: {store: \"env://P\"}, dev: {store: \"env://D\"}}\n"
	for _, tc := range []struct{ doc, want string }{
		{"sidecar: {routes: [{prefix: /, key: prod}], listen: 8787}", `sidecar.listen: "8787" is not host:port`},
		{"sidecar: {routes: [{prefix: /, key: prod}], listen: \"0.0.0.0:8787\"}", "sidecar.listen: \"0.0.0.0:8787\" is not a loopback address and no client token is set: anyone who reaches it could spend the key; set client_token_file"},
		{"sidecar: {routes: [{prefix: /, key: prod}], listen: \":8787\"}", "not a loopback address"},
		{"sidecar: {listen: \"127.0.0.1:1\"}", "sidecar.routes: several keys (dev, prod) and no route names one"},
		{"sidecar: {routes: [{prefix: /, key: nope}]}", `sidecar.routes[0].key: no key named "nope"; use one of dev, prod`},
		{"sidecar: {routes: [{key: prod}]}", "sidecar.routes[0]: set prefix (e.g. /) or listener"},
		{"sidecar: {routes: [{prefix: /, listener: \"127.0.0.1:1\", key: prod}]}", "set prefix or listener, not both"},
		{"sidecar: {routes: [{prefix: staging, key: prod}]}", `sidecar.routes[0].prefix: "staging" must start with /`},
		{"sidecar: {routes: [{prefix: /v1/x, key: prod}]}", "would hide API paths"},
		{"sidecar: {routes: [{prefix: /, key: prod}], rate_limit: {rps: 1e-300}}", "rps: must be 0 (the rate limit off) or a number from 0.0001"},
		{"sidecar: {routes: [{prefix: /, key: prod}], timeouts: {header: 1ns}}", "sidecar.timeouts.header: 1ns is shorter than 1s"},
		{"sidecar: {routes: [{prefix: /, key: prod}], start_timeout: 1ms}", "sidecar.start_timeout: 1ms is shorter than 1s"},
		{"sidecar: {routes: [{prefix: /, key: prod}], unix_socket: /tmp/" + strings.Repeat("s", 103) + "}", "sidecar.unix_socket: the path is 108 bytes; a unix socket's path holds at most 107"},
		{"sidecar: {routes: [{prefix: /, key: prod}], max_retry_body: 17179869184GiB}", `"17179869184GiB" is not a size from 0 to 8 EiB`},
		{"sidecar: {routes: [{prefix: /, key: prod}], max_retry_body: 9223372036854775807KiB}", "is not a size from 0 to 8 EiB"},
		{"sidecar: {routes: [{prefix: /, key: prod}, {prefix: /, key: dev}]}", `sidecar.routes[1].prefix: "/" is also routes[0]'s prefix`},
		{"sidecar: {routes: [{listener: \"10.0.0.1:9\", key: prod}]}", "sidecar.routes[0].listener: \"10.0.0.1:9\" is not a loopback address"},
		{"sidecar: {routes: [{listener: \"127.0.0.1:8787\", key: prod}]}", "already the sidecar's listen or metrics_listen address"},
		// Addresses the sidecar cannot use: they failed only at start, with exit 1.
		{"sidecar: {routes: [{prefix: /, key: prod}], listen: \"127.0.0.1:8793\", metrics_listen: \"127.0.0.1:8793\"}", `sidecar.metrics_listen: "127.0.0.1:8793" takes the port of listen "127.0.0.1:8793"; pick another port`},
		{"sidecar: {routes: [{prefix: /, key: prod}], listen: \"127.0.0.1:8793\", metrics_listen: \"localhost:8793\"}", `sidecar.metrics_listen: "localhost:8793" takes the port of listen`},
		{"sidecar: {routes: [{prefix: /, key: prod}], metrics_listen: \"localhost:8787\"}", `sidecar.metrics_listen: "localhost:8787" takes the port of listen "127.0.0.1:8787"`},
		{"sidecar: {routes: [{prefix: /, key: prod}], listen: \"127.0.0.1:99999\"}", `sidecar.listen: "127.0.0.1:99999": the port must be a number from 1 to 65535`},
		{"sidecar: {routes: [{prefix: /, key: prod}], listen: \"127.0.0.1:-1\"}", `sidecar.listen: "127.0.0.1:-1": the port must be a number from 1 to 65535`},
		{"sidecar: {routes: [{prefix: /, key: prod}], listen: \"127.0.0.1:http\"}", `sidecar.listen: "127.0.0.1:http": the port must be a number from 1 to 65535`},
		{"sidecar: {routes: [{prefix: /, key: prod}], metrics_listen: \"127.0.0.1:70000\"}", `sidecar.metrics_listen: "127.0.0.1:70000": the port must be a number`},
		{"sidecar: {routes: [{listener: \"127.0.0.1:0\", key: prod}]}", `sidecar.routes[0].listener: "127.0.0.1:0": the port must be a number from 1 to 65535`},
		{"sidecar: {routes: [{listener: \"localhost:8787\", key: prod}]}", "already the sidecar's listen or metrics_listen address"},
		{"sidecar: {routes: [{listener: \"127.0.0.1:8790\", key: prod}, {listener: \"localhost:8790\", key: dev}]}", `sidecar.routes[1].listener: "localhost:8790" is also routes[0]'s listener`},
		{"sidecar: {routes: [{prefix: /, key: prod, upstream: \"http://api.example.com\"}]}", "sidecar.routes[0].upstream: upstream \"http://api.example.com\": would cross the network in clear text; use https"},
		{"sidecar: {routes: [{prefix: /, key: prod, upstream: \"api.example.com\"}]}", "is not an absolute URL"},
		{"sidecar: {routes: [{prefix: /, key: prod, upstream: \"ftp://x\"}]}", "scheme must be https"},
		{"sidecar: {routes: [{prefix: /, key: prod, upstream: \"https://u:p@x\"}]}", "must not carry credentials"},
		{"sidecar: {routes: [{prefix: /, key: prod, auth: basic}]}", `sidecar.routes[0].auth: "basic"; use x-api-key (the Claude API) or bearer`},
		{"sidecar: {routes: [{prefix: /, key: prod, version_policy: always}]}", "use set-if-absent or enforce"},
		{"sidecar: {routes: [{prefix: /, key: prod, auth: bearer, version_policy: enforce}]}", "enforce needs anthropic_version"},
		{"sidecar: {routes: [{prefix: /, key: prod, anthropic_version: latest}]}", `"latest" is not a date such as 2023-06-01`},
		{"sidecar: {routes: [{prefix: /, key: prod}], allow_paths: [/v1/organizations/api_keys]}", "would expose the Admin API"},
		{"sidecar: {routes: [{prefix: /, key: prod}], allow_paths: [/v1]}", "would expose the Admin API"},
		{"sidecar: {routes: [{prefix: /, key: prod}], allow_paths: [/admin]}", "must be an API path under /v1/"},
		{"sidecar: {routes: [{prefix: /, key: prod}], allow_paths: [/v1/messages/../x]}", "is not a clean path"},
		{"sidecar: {routes: [{prefix: /, key: prod}], max_retry_body: 1TB}", `"1TB" is not a size`},
		{"sidecar: {routes: [{prefix: /, key: prod}], max_retry_body: 1GiB}", "sidecar.max_retry_body: 1073741824 bytes is above the limit of 256MiB"},
		{"sidecar: {routes: [{prefix: /, key: prod}], rate_limit: {rps: -1}}", "sidecar.rate_limit.rps: must be 0 (the rate limit off) or a number from 0.0001 to 1000000"},
		{"sidecar: {routes: [{prefix: /, key: prod}], rate_limit: {rps: 1e300}}", "sidecar.rate_limit.rps: must be 0 (the rate limit off) or a number from 0.0001 to 1000000"},
		{"sidecar: {routes: [{prefix: /, key: prod}], rate_limit: {rps: .inf}}", "sidecar.rate_limit.rps: must be 0 (the rate limit off) or a number from 0.0001 to 1000000"},
		{"sidecar: {routes: [{prefix: /, key: prod}], rate_limit: {concurrency: -1}}", "sidecar.rate_limit.concurrency: must not be negative"},
		// NaN compares false with everything: it once passed and turned the limit off.
		{"sidecar: {routes: [{prefix: /, key: prod}], rate_limit: {rps: .nan}}", "sidecar.rate_limit.rps: must be 0 (the rate limit off) or a number from 0.0001 to 1000000"},
		{"sidecar: {routes: [{prefix: /, key: prod}], rate_limit: {rps: .inf}}", "sidecar.rate_limit.rps: must be 0 (the rate limit off) or a number from 0.0001 to 1000000"},
		{"sidecar: {routes: [{prefix: /, key: prod}], clients: [{name: a, token_env: T, rate_limit: {rps: .nan}}]}", "sidecar.clients[0].rate_limit.rps: must be 0 (the rate limit off) or a number from 0.0001 to 1000000"},
		{"sidecar: {routes: [{prefix: /, key: prod}], rate_limit: {burst: .nan}}", "sidecar.rate_limit.burst: .nan is not a whole number"},
		// A finite but huge price summed spend to +Inf.
		{"sidecar: {routes: [{prefix: /, key: prod}], usage: {prices: {huge: {input: 1e308, output: 1e308}}}}", "sidecar.usage.prices.huge: price 1e+308 is above the limit of 1e+06 USD per million tokens"},
		{"sidecar: {routes: [{prefix: /, key: prod}], usage: {prices: {m: {input: 3, output: 15, cache_read: 2e6}}}}", "sidecar.usage.prices.m: price 2e+06 is above the limit"},
		{"sidecar: {routes: [{prefix: /, key: prod}], timeouts: {idle: -1s}}", "sidecar.timeouts.idle: -1s is negative; use a positive duration"},
		{"sidecar: {routes: [{prefix: /, key: prod}], start_timeout: -1s}", "sidecar.start_timeout: -1s is negative"},
		{"sidecar: {routes: [{prefix: /, key: prod}], timeouts: {idle: 5}}", "not a Go duration"},
		{"sidecar: {routes: [{prefix: /, key: prod}], file_sink: {key: prod}}", "sidecar.file_sink.path: missing"},
		{"sidecar: {routes: [{prefix: /, key: prod}], file_sink: {path: /k, key: x}}", `sidecar.file_sink.key: no key named "x"`},
		{"sidecar: {routes: [{prefix: /, key: prod}], exec: {on_change: reload}}", `sidecar.exec.on_change: "reload"; use restart or signal`},
		{"sidecar: {routes: [{prefix: /, key: prod}], exec: {signal: SIGFOO}}", `sidecar.exec.signal: unknown signal "SIGFOO"`},
		{"sidecar: {routes: [{prefix: /, key: prod}], exec: {env: 1KEY}}", "sidecar.exec.env: \"1KEY\" is not an environment variable name"},
		{"sidecar: {routes: [{prefix: /, key: prod}], exec: {key: zzz}}", `sidecar.exec.key: no key named "zzz"`},
		{"sidecar: {routes: [{prefix: /, key: prod}], unix_socket: run/k.sock}", "sidecar.unix_socket: \"run/k.sock\" must be a path starting with / or ./"},
		{"sidecar: {routes: [{prefix: /, key: prod, colour: red}]}", `unknown field "colour" (known fields here: anthropic_version, auth, key, listener, prefix, upstream, version_policy)`},
		{"sidecar: {rate_limit: {qps: 1}}", `unknown field "qps" (known fields here: burst, concurrency, rps)`},
	} {
		_, err := config.Parse([]byte(keys + tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q):\n got %v\nwant an error containing %q", tc.doc, err, tc.want)
		}
	}
}

func TestSidecarReady(t *testing.T) {
	c, err := config.Parse([]byte("keys: {prod: {store: \"env://P\"}, dev: {store: \"env://D\"}}"))
	if err != nil {
		t.Fatalf("a config without a sidecar section must parse: %v", err)
	}
	if err := c.Sidecar.Ready(c); err == nil || !strings.Contains(err.Error(), "add routes: [{prefix: /, key: NAME}]") {
		t.Fatalf("Ready: %v", err)
	}
	c.Sidecar.Routes = []config.Route{{Prefix: "/", Key: "dev"}}
	if err := c.Sidecar.Ready(c); err != nil {
		t.Fatal(err)
	}
}

func TestSidecarTokenAllowsPublicListen(t *testing.T) {
	_, err := config.Parse([]byte(`
keys: {prod: {store: "env://P"}}
sidecar: {listen: "0.0.0.0:8787", client_token_file: /etc/kw/token, routes: [{listener: "0.0.0.0:8788", key: prod}, {prefix: /, key: prod}]}
`))
	if err != nil {
		t.Fatal(err)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"HUP": syscall.SIGHUP, "sigterm": syscall.SIGTERM, "SIGUSR2": syscall.SIGUSR2} {
		if got, err := config.ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v", in, got, err)
		}
	}
	if !settings.IsLoopback("localhost:1") || !settings.IsLoopback("[::1]:1") || settings.IsLoopback("0.0.0.0:1") || settings.IsLoopback("x") {
		t.Fatal("IsLoopback")
	}
}

// TestFileSinkPath shows that the file sink cannot overwrite a file the
// keys need — it once replaced a file store (every version and rotation
// record) with the bare key — and that its path is absolute or ./-relative,
// as unix_socket's.
func TestFileSinkPath(t *testing.T) {
	t.Setenv("KEYWARDEN_HOME", "/var/lib/kwhome")
	const doc = `keys: {prod: {store: "file:///work/sink/keys.json?name=prod"}, rel: {store: "file:rel/keys.json?name=x"}}
sidecar:
  routes: [{prefix: /, key: prod}]
  client_token_file: /etc/kw/token
  clients: [{name: a, token_file: /etc/kw/a.token}]
  file_sink: {path: %q}
`
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/work/sink/keys.json", `sidecar.file_sink.path: "/work/sink/keys.json" is key prod's file store, which the sink would overwrite with the bare key; pick another file`},
		{"/work/sink/../sink//keys.json", "is key prod's file store"},
		{"/work/sink/keys.json.lock", "is key prod's file store's lock file"},
		{"/work/sink/.keys.json.tmp-123", "is key prod's file store's temporary file"},
		{"./rel/keys.json", "is key rel's file store"},
		{filepath.Join(wd, "rel/keys.json"), "is key rel's file store"},
		{"/var/lib/kwhome/keys.json", "is the embedded default store's file"},
		{"/etc/kw/token", "is client_token_file"},
		{"/etc/kw/./a.token", "is clients[0]'s token_file"},
		{"rel/key", `sidecar.file_sink.path: "rel/key" must be a path starting with / or ./`},
		{"/work/sink/anthropic-key", ""},
		{"./anthropic-key", ""},
	} {
		_, err := config.Parse(fmt.Appendf(nil, doc, tc.path))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("file_sink.path %q: %v", tc.path, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("file_sink.path %q:\n got %v\nwant an error containing %q", tc.path, err, tc.want)
		}
	}
}
