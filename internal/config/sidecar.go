package config

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// Sidecar configures `keywarden sidecar` and `keywarden exec`. Every field
// has a safe default; the methods below return the effective values.
type Sidecar struct {
	// Listen is the proxy's TCP address (default 127.0.0.1:8787; no TCP
	// listener when only UnixSocket is set). An address that is not loopback
	// requires ClientTokenFile.
	Listen string `yaml:"listen"`
	// UnixSocket is a unix socket path to listen on (mode 0600).
	UnixSocket string `yaml:"unix_socket"`
	// MetricsListen serves /healthz, /readyz and /metrics (default
	// 127.0.0.1:9787; "off" disables it).
	MetricsListen string `yaml:"metrics_listen"`
	// ClientTokenFile holds the token clients must present (x-keywarden-token,
	// or as their x-api-key / bearer token).
	ClientTokenFile string `yaml:"client_token_file"`
	// Routes map a path prefix or a listener to a key and an upstream
	// (default: one route, prefix /, the only key, the Claude API).
	Routes []Route `yaml:"routes"`
	// AllowPaths are the upstream path prefixes forwarded (default
	// DefaultAllowPaths). The Admin API is never forwarded.
	AllowPaths []string `yaml:"allow_paths"`
	// MaxRetryBody is the largest request body kept to retry after a 401
	// (default 1MiB; "0" keeps none).
	MaxRetryBody *Size `yaml:"max_retry_body"`
	// RateLimit limits each client.
	RateLimit RateLimit `yaml:"rate_limit"`
	// Timeouts bound waiting; none bounds a whole request, so streams last.
	Timeouts Timeouts `yaml:"timeouts"`
	// FileSink writes the key to a file on every change.
	FileSink *FileSink `yaml:"file_sink"`
	// Exec configures `keywarden exec`.
	Exec Exec `yaml:"exec"`
}

// Route sends the requests under a path prefix, or on a listener of its own,
// to an upstream with a key.
type Route struct {
	// Prefix is the path prefix ("/" or e.g. "/staging", which is removed
	// before forwarding). Exactly one of Prefix and Listener.
	Prefix string `yaml:"prefix"`
	// Listener is a TCP address served by this route alone.
	Listener string `yaml:"listener"`
	// Key names the key in keys: (default: the only key, or "default").
	Key string `yaml:"key"`
	// Upstream is the upstream base URL (default https://api.anthropic.com).
	Upstream string `yaml:"upstream"`
	// Auth is x-api-key (default) or bearer.
	Auth string `yaml:"auth"`
	// AnthropicVersion is the anthropic-version sent (default 2023-06-01 with
	// x-api-key auth; none with bearer).
	AnthropicVersion string `yaml:"anthropic_version"`
	// VersionPolicy is set-if-absent (default) or enforce.
	VersionPolicy string `yaml:"version_policy"`
}

// RateLimit limits each client (by address; one client per unix socket).
// A limit set to 0 is off.
type RateLimit struct {
	// RPS is the sustained requests per second (default 100).
	RPS *float64 `yaml:"rps"`
	// Burst is the requests allowed at once above RPS (default 2×RPS).
	Burst *int `yaml:"burst"`
	// Concurrency is the requests under way at once (default 1024).
	Concurrency *int `yaml:"concurrency"`
}

// Timeouts of the sidecar.
type Timeouts struct {
	// Header bounds the wait for the upstream's response headers (default
	// 10m: a non-streaming Messages request sends them only when done).
	Header Duration `yaml:"header"`
	// ClientHeader bounds reading a client's request headers (default 30s).
	ClientHeader Duration `yaml:"client_header"`
	// Idle closes keep-alive connections idle this long (default 90s).
	Idle Duration `yaml:"idle"`
	// Shutdown is how long in-flight requests and streams may run after
	// SIGTERM (default 30s).
	Shutdown Duration `yaml:"shutdown"`
}

// FileSink writes the current key to a file (atomic rename, mode 0600).
type FileSink struct {
	// Path is the file to write. Required.
	Path string `yaml:"path"`
	// Key names the key (default: the default route's key).
	Key string `yaml:"key"`
}

// Exec configures `keywarden exec -- CMD ARGS`.
type Exec struct {
	// Key names the key (default: the default route's key).
	Key string `yaml:"key"`
	// Env is the environment variable that carries the key (default
	// ANTHROPIC_API_KEY).
	Env string `yaml:"env"`
	// OnChange is restart (default) or signal.
	OnChange string `yaml:"on_change"`
	// Signal is sent on change with on_change: signal (default SIGHUP).
	Signal string `yaml:"signal"`
}

// Sidecar defaults.
const (
	DefaultListen           = "127.0.0.1:8787"
	DefaultMetricsListen    = "127.0.0.1:9787"
	DefaultUpstream         = "https://api.anthropic.com"
	DefaultAnthropicVersion = "2023-06-01"
	DefaultMaxRetryBody     = 1 << 20
	DefaultRPS              = 100
	DefaultConcurrency      = 1024
	DefaultHeaderTimeout    = 10 * time.Minute
	DefaultClientHeader     = 30 * time.Second
	DefaultIdleTimeout      = 90 * time.Second
	DefaultShutdownTimeout  = 30 * time.Second
	DefaultExecEnv          = "ANTHROPIC_API_KEY"
	maxRetryBodyLimit       = 256 << 20
)

// Auth and policy spellings.
const (
	AuthAPIKey         = "x-api-key"
	AuthBearer         = "bearer"
	PolicySetIfAbsent  = "set-if-absent"
	PolicyEnforce      = "enforce"
	OnChangeRestart    = "restart"
	OnChangeSignal     = "signal"
	MetricsListenOff   = "off"
	adminPathPrefix    = "/v1/organizations"
	clientTokenAdvice  = "set client_token_file to a file holding a random token, or listen on 127.0.0.1"
	listenExampleValue = "127.0.0.1:8787"
)

// DefaultAllowPaths are the Claude API data-plane paths forwarded by default:
// Messages (with count_tokens and batches), Models and Files.
var DefaultAllowPaths = []string{"/v1/messages", "/v1/models", "/v1/files"}

// ListenAddr returns the TCP address to listen on, "" when only a unix
// socket is configured.
func (s *Sidecar) ListenAddr() string {
	if s.Listen == "" && s.UnixSocket != "" {
		return ""
	}
	return or(s.Listen, DefaultListen)
}

// MetricsAddr returns the health and metrics address, "" when off.
func (s *Sidecar) MetricsAddr() string {
	if s.MetricsListen == MetricsListenOff {
		return ""
	}
	return or(s.MetricsListen, DefaultMetricsListen)
}

// Paths returns the allowed path prefixes.
func (s *Sidecar) Paths() []string {
	if len(s.AllowPaths) == 0 {
		return DefaultAllowPaths
	}
	return s.AllowPaths
}

// RetryBody returns the largest body kept for a retry; 0 keeps none.
func (s *Sidecar) RetryBody() int64 {
	if s.MaxRetryBody == nil {
		return DefaultMaxRetryBody
	}
	return s.MaxRetryBody.Bytes
}

// Limits returns the per-client requests per second, burst and concurrency;
// 0 means off.
func (s *Sidecar) Limits() (rps float64, burst, concurrency int) {
	rps = DefaultRPS
	if s.RateLimit.RPS != nil {
		rps = *s.RateLimit.RPS
	}
	burst = int(2 * rps)
	if s.RateLimit.Burst != nil {
		burst = *s.RateLimit.Burst
	}
	if rps > 0 && burst < 1 {
		burst = 1
	}
	concurrency = DefaultConcurrency
	if s.RateLimit.Concurrency != nil {
		concurrency = *s.RateLimit.Concurrency
	}
	return rps, burst, concurrency
}

// HeaderTimeout, ClientHeaderTimeout, IdleTimeout and ShutdownTimeout
// return the effective timeouts.
func (s *Sidecar) HeaderTimeout() time.Duration {
	return orD(s.Timeouts.Header.D, DefaultHeaderTimeout)
}

// ClientHeaderTimeout bounds reading a client's request headers.
func (s *Sidecar) ClientHeaderTimeout() time.Duration {
	return orD(s.Timeouts.ClientHeader.D, DefaultClientHeader)
}

// IdleTimeout closes idle keep-alive connections.
func (s *Sidecar) IdleTimeout() time.Duration { return orD(s.Timeouts.Idle.D, DefaultIdleTimeout) }

// ShutdownTimeout bounds the drain after SIGTERM.
func (s *Sidecar) ShutdownTimeout() time.Duration {
	return orD(s.Timeouts.Shutdown.D, DefaultShutdownTimeout)
}

// DefaultKey returns the key used where none is named: the only key, else
// the key called "default", else "".
func (c *Config) DefaultKey() string {
	if len(c.Keys) == 1 {
		return c.Names()[0]
	}
	if _, ok := c.Keys[DefaultKeyName]; ok {
		return DefaultKeyName
	}
	return ""
}

// EffectiveRoutes returns the routes with every default filled in: one
// route for prefix / when none is configured.
func (s *Sidecar) EffectiveRoutes(c *Config) []Route {
	routes := s.Routes
	if len(routes) == 0 {
		routes = []Route{{Prefix: "/"}}
	}
	out := make([]Route, len(routes))
	for i, r := range routes {
		r.Key = or(r.Key, c.DefaultKey())
		r.Upstream = strings.TrimRight(or(r.Upstream, DefaultUpstream), "/")
		r.Auth = or(r.Auth, AuthAPIKey)
		if r.AnthropicVersion == "" && r.Auth == AuthAPIKey {
			r.AnthropicVersion = DefaultAnthropicVersion
		}
		r.VersionPolicy = or(r.VersionPolicy, PolicySetIfAbsent)
		if r.Prefix != "" && r.Prefix != "/" {
			r.Prefix = "/" + strings.Trim(r.Prefix, "/")
		}
		out[i] = r
	}
	return out
}

// SinkKey and ExecKey return the key the file sink and exec serve.
func (s *Sidecar) SinkKey(c *Config) string {
	if s.FileSink != nil && s.FileSink.Key != "" {
		return s.FileSink.Key
	}
	return s.defaultRouteKey(c)
}

// ExecKey returns the key `keywarden exec` puts in the environment.
func (s *Sidecar) ExecKey(c *Config) string { return or(s.Exec.Key, s.defaultRouteKey(c)) }

// ExecEnv returns the environment variable that carries the key.
func (s *Sidecar) ExecEnv() string { return or(s.Exec.Env, DefaultExecEnv) }

// ExecSignal returns the signal sent on change with on_change: signal.
func (s *Sidecar) ExecSignal() syscall.Signal {
	sig, _ := ParseSignal(or(s.Exec.Signal, "SIGHUP"))
	return sig
}

// ExecRestarts reports whether exec restarts the program on change (else it
// signals it).
func (s *Sidecar) ExecRestarts() bool { return s.Exec.OnChange != OnChangeSignal }

func (s *Sidecar) defaultRouteKey(c *Config) string {
	routes := s.EffectiveRoutes(c)
	for _, r := range routes {
		if r.Prefix == "/" {
			return r.Key
		}
	}
	return routes[0].Key
}

var signals = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGTERM": syscall.SIGTERM,
	"SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2, "SIGQUIT": syscall.SIGQUIT,
}

// ParseSignal parses a signal name such as SIGHUP or HUP.
func ParseSignal(name string) (syscall.Signal, error) {
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	if s, ok := signals[n]; ok {
		return s, nil
	}
	return 0, fmt.Errorf("unknown signal %q (known: SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2)", name)
}

// IsLoopback reports whether a host:port address listens on loopback only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Sidecar) validate(p string, c *Config) []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	token := s.ClientTokenFile != ""
	checkAddr := func(field, addr string, needToken bool) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			add("%s: %q is not host:port; write it like %s", field, addr, listenExampleValue)
			return
		}
		if needToken && !token && !IsLoopback(addr) {
			add("%s: %q is not a loopback address, so clients must authenticate: %s", field, addr, clientTokenAdvice)
		}
	}
	if s.Listen != "" {
		checkAddr(p+".listen", s.Listen, true)
	}
	if s.UnixSocket != "" && !strings.HasPrefix(s.UnixSocket, "/") && !strings.HasPrefix(s.UnixSocket, "./") {
		add("%s.unix_socket: %q must be a path starting with / or ./", p, s.UnixSocket)
	}
	if s.MetricsListen != "" && s.MetricsListen != MetricsListenOff {
		checkAddr(p+".metrics_listen", s.MetricsListen, false)
	}
	routes := s.EffectiveRoutes(c)
	if len(s.Routes) == 0 && routes[0].Key == "" {
		// A config without a sidecar section (for rotation only, say) is
		// fine: Ready reports this when the sidecar is started.
		if !reflect.ValueOf(*s).IsZero() && len(c.Keys) > 0 {
			add("%s", s.noRouteKey(p, c))
		}
	} else {
		errs = append(errs, validateRoutes(p+".routes", s.Routes, routes, c, [2]string{s.ListenAddr(), s.MetricsAddr()}, checkAddr)...)
	}
	for i, ap := range s.AllowPaths {
		f := fmt.Sprintf("%s.allow_paths[%d]", p, i)
		switch {
		case !strings.HasPrefix(ap, "/v1/") && ap != "/v1":
			add("%s: %q must be an API path under /v1/, e.g. /v1/messages", f, ap)
		case path.Clean(ap) != ap:
			add("%s: %q is not a clean path; write it as %q", f, ap, path.Clean(ap))
		case ap == "/v1" || ap == adminPathPrefix || strings.HasPrefix(ap, adminPathPrefix+"/"):
			add("%s: %q would expose the Admin API, which the sidecar never forwards; list data-plane paths such as /v1/messages", f, ap)
		}
	}
	if s.MaxRetryBody != nil && (s.MaxRetryBody.Bytes < 0 || s.MaxRetryBody.Bytes > maxRetryBodyLimit) {
		add("%s.max_retry_body: %d bytes is out of range; use 0 (keep none) up to 256MiB", p, s.MaxRetryBody.Bytes)
	}
	rl := s.RateLimit
	if rl.RPS != nil && *rl.RPS < 0 {
		add("%s.rate_limit.rps: must not be negative; 0 turns the rate limit off", p)
	}
	if rl.Burst != nil && *rl.Burst < 0 {
		add("%s.rate_limit.burst: must not be negative", p)
	}
	if rl.Concurrency != nil && *rl.Concurrency < 0 {
		add("%s.rate_limit.concurrency: must not be negative; 0 turns the concurrency limit off", p)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"header", s.Timeouts.Header.D}, {"client_header", s.Timeouts.ClientHeader.D}, {"idle", s.Timeouts.Idle.D}, {"shutdown", s.Timeouts.Shutdown.D}} {
		if d.v < 0 {
			add("%s.timeouts.%s: must be positive, e.g. 30s", p, d.name)
		}
	}
	if fs := s.FileSink; fs != nil {
		if fs.Path == "" {
			add("%s.file_sink.path: missing; set the file to write the key to, e.g. /run/keywarden/anthropic-key", p)
		}
		if fs.Key != "" && c.Keys[fs.Key] == nil {
			add("%s.file_sink.key: no key named %q; use one of %s", p, fs.Key, strings.Join(c.Names(), ", "))
		}
	}
	if s.Exec.Key != "" && c.Keys[s.Exec.Key] == nil {
		add("%s.exec.key: no key named %q; use one of %s", p, s.Exec.Key, strings.Join(c.Names(), ", "))
	}
	if s.Exec.OnChange != "" && s.Exec.OnChange != OnChangeRestart && s.Exec.OnChange != OnChangeSignal {
		add("%s.exec.on_change: %q; use restart or signal", p, s.Exec.OnChange)
	}
	if s.Exec.Signal != "" {
		if _, err := ParseSignal(s.Exec.Signal); err != nil {
			add("%s.exec.signal: %v", p, err)
		}
	}
	if s.Exec.Env != "" && !envName(s.Exec.Env) {
		add("%s.exec.env: %q is not an environment variable name; use letters, digits and _", p, s.Exec.Env)
	}
	return errs
}

func (s *Sidecar) noRouteKey(p string, c *Config) string {
	return fmt.Sprintf("%s.routes: several keys (%s) and no route names one; add routes: [{prefix: /, key: NAME}]", p, strings.Join(c.Names(), ", "))
}

// Ready returns an error when the sidecar cannot start on this config,
// which Parse lets pass for configs that do not use the sidecar: several
// keys and no route naming one.
func (s *Sidecar) Ready(c *Config) error {
	if len(s.Routes) == 0 && c.DefaultKey() == "" {
		return fmt.Errorf("config: %s", s.noRouteKey("sidecar", c))
	}
	return nil
}

// Validate checks the section again, after command-line flags changed it.
func (s *Sidecar) Validate(c *Config) error {
	if errs := s.validate("sidecar", c); len(errs) > 0 {
		return fmt.Errorf("config: %s", strings.Join(errs, "\n  "))
	}
	return nil
}

func validateRoutes(p string, given, routes []Route, c *Config, taken [2]string, checkAddr func(field, addr string, needToken bool)) []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	prefixes, listeners := map[string]int{}, map[string]int{}
	for i, r := range routes {
		f := fmt.Sprintf("%s[%d]", p, i)
		g := Route{}
		if i < len(given) {
			g = given[i]
		}
		switch {
		case g.Prefix != "" && g.Listener != "":
			add("%s: set prefix or listener, not both", f)
		case len(given) > 0 && g.Prefix == "" && g.Listener == "":
			add("%s: set prefix (e.g. /) or listener (e.g. 127.0.0.1:8788)", f)
		}
		if r.Prefix != "" {
			if !strings.HasPrefix(g.Prefix, "/") && len(given) > 0 {
				add("%s.prefix: %q must start with /", f, g.Prefix)
			} else if path.Clean(r.Prefix) != r.Prefix {
				add("%s.prefix: %q is not a clean path; write it as %q", f, g.Prefix, path.Clean(r.Prefix))
			} else if r.Prefix == "/v1" || strings.HasPrefix(r.Prefix, "/v1/") {
				add("%s.prefix: %q would hide API paths; use a name such as /staging (it is removed before forwarding)", f, r.Prefix)
			}
			if j, dup := prefixes[r.Prefix]; dup {
				add("%s.prefix: %q is also routes[%d]'s prefix", f, r.Prefix, j)
			}
			prefixes[r.Prefix] = i
		}
		if r.Listener != "" {
			checkAddr(f+".listener", r.Listener, true)
			if r.Listener == taken[0] || r.Listener == taken[1] {
				add("%s.listener: %q is already the sidecar's listen or metrics_listen address; pick another port", f, r.Listener)
			}
			if j, dup := listeners[r.Listener]; dup {
				add("%s.listener: %q is also routes[%d]'s listener", f, r.Listener, j)
			}
			listeners[r.Listener] = i
		}
		switch {
		case r.Key == "":
			add("%s.key: missing; several keys are configured (%s): name one", f, strings.Join(c.Names(), ", "))
		case c.Keys[r.Key] == nil:
			add("%s.key: no key named %q; use one of %s", f, r.Key, strings.Join(c.Names(), ", "))
		}
		if msg := checkUpstream(r.Upstream); msg != "" {
			add("%s.upstream: %s", f, msg)
		}
		if r.Auth != AuthAPIKey && r.Auth != AuthBearer {
			add("%s.auth: %q; use x-api-key (the Claude API) or bearer", f, r.Auth)
		}
		switch r.VersionPolicy {
		case PolicySetIfAbsent:
		case PolicyEnforce:
			if r.AnthropicVersion == "" {
				add("%s.version_policy: enforce needs anthropic_version, e.g. %s", f, DefaultAnthropicVersion)
			}
		default:
			add("%s.version_policy: %q; use set-if-absent or enforce", f, r.VersionPolicy)
		}
		if v := r.AnthropicVersion; v != "" {
			if _, err := time.Parse("2006-01-02", v); err != nil {
				add("%s.anthropic_version: %q is not a date such as %s", f, v, DefaultAnthropicVersion)
			}
		}
	}
	return errs
}

func checkUpstream(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return fmt.Sprintf("%q is not an absolute URL; write it like %s", raw, DefaultUpstream)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Sprintf("%q: scheme must be https (or http on loopback)", raw)
	case u.Scheme == "http" && !IsLoopback(hostPort(u)):
		return fmt.Sprintf("%q would send the key in clear text to another host; use https", raw)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return fmt.Sprintf("%q must not carry credentials, a query or a fragment", raw)
	}
	return ""
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

func envName(s string) bool {
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orD(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Size is a byte count written as a number of bytes or with a unit: 512KiB,
// 1MiB, 10MB.
type Size struct{ Bytes int64 }

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}

// UnmarshalYAML parses a size.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a size such as 1MiB or 65536", n.Line)
	}
	v := strings.TrimSpace(n.Value)
	mult := int64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	b, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a size; write bytes or a unit, such as 65536, 512KiB or 1MiB", n.Line, n.Value)
	}
	s.Bytes = b * mult
	return nil
}

// MarshalYAML writes the size in bytes.
func (s Size) MarshalYAML() (any, error) { return s.Bytes, nil }

func init() {
	for _, v := range []any{Route{}, RateLimit{}, Timeouts{}, FileSink{}, Exec{}} {
		registerFields(v)
	}
}
