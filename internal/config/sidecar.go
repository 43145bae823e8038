package config

import (
	"fmt"
	"math"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keywarden/keywarden/internal/proxy/settings"
	"github.com/keywarden/keywarden/internal/proxy/usage"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
)

// Sidecar configures `keywarden sidecar` and `keywarden exec`. Every field
// is optional and holds what the file set: package internal/proxy/settings
// owns the defaults and the rules of the proxy settings (zero means its
// default), and Parse checks the values with its rules.
type Sidecar struct {
	// Listen is the proxy's TCP address (settings.DefaultListen; no TCP
	// listener when only UnixSocket is set; see settings.ListenAddrs). An
	// address that is not loopback requires ClientTokenFile.
	Listen string `yaml:"listen"`
	// UnixSocket is a unix socket path to listen on (mode 0600).
	UnixSocket string `yaml:"unix_socket"`
	// MetricsListen serves /healthz, /readyz and /metrics
	// (settings.DefaultMetricsListen; "off" disables it).
	MetricsListen string `yaml:"metrics_listen"`
	// StartTimeout bounds the wait at start for the first read of the keys
	// (settings.DefaultStartTimeout); meanwhile /healthz answers 200 and
	// /readyz 503 with the reason. Past it the sidecar exits non-zero.
	StartTimeout Duration `yaml:"start_timeout"`
	// ClientTokenFile holds the token clients must present (x-keywarden-token,
	// or as their x-api-key / bearer token).
	ClientTokenFile string `yaml:"client_token_file"`
	// Clients are named clients (services), each known by its own token;
	// the client_token_file's token is the client "default". A request's
	// client labels its usage metrics; without any token every request is
	// the client "local".
	Clients []Client `yaml:"clients"`
	// Usage configures the token accounting.
	Usage Usage `yaml:"usage"`
	// Budgets bound spending per client and/or route.
	Budgets []Budget `yaml:"budgets"`
	// Routes map a path prefix or a listener to a key and an upstream
	// (default: one route, prefix /, the only key, the Claude API).
	Routes []Route `yaml:"routes"`
	// AllowPaths are the upstream path prefixes forwarded
	// (settings.DefaultAllowPaths). The Admin API is never forwarded.
	AllowPaths []string `yaml:"allow_paths"`
	// MaxRetryBody is the largest request body kept to retry after a 401
	// (providers.DefaultMaxRetryBody; "0" keeps none).
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
	// Upstream is the upstream base URL (settings.DefaultUpstream).
	Upstream string `yaml:"upstream"`
	// Auth is x-api-key (default) or bearer.
	Auth string `yaml:"auth"`
	// AnthropicVersion is the anthropic-version sent
	// (providers.DefaultAnthropicVersion with x-api-key auth; none with
	// bearer; see settings.RouteVersion).
	AnthropicVersion string `yaml:"anthropic_version"`
	// VersionPolicy is set-if-absent (default) or enforce.
	VersionPolicy string `yaml:"version_policy"`
}

// Client is a named client of the sidecar.
type Client struct {
	// Name labels the client's metrics (settings.CheckClientName).
	Name string `yaml:"name"`
	// TokenFile holds the client's token (mode 0600, at least 16
	// characters); or TokenEnv names the environment variable holding it.
	// Exactly one of them; a token is never written in the config.
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
	// RateLimit, when set, limits this client as a whole (whatever its
	// addresses) instead of the per-address rate_limit; unset fields are
	// off.
	RateLimit *RateLimit `yaml:"rate_limit"`
}

// Budget bounds what a client, a route, or both may spend per window
// (held per sidecar process).
type Budget struct {
	// Name labels the budget's metrics and refusals.
	Name string `yaml:"name"`
	// Client is a client's name (a name in clients, "default" for
	// client_token_file, "local" without tokens); empty: every client.
	Client string `yaml:"client"`
	// Route is a route's prefix or listener; empty: every route.
	Route string `yaml:"route"`
	// Tokens or USD is the limit per window; exactly one.
	Tokens int64   `yaml:"tokens"`
	USD    float64 `yaml:"usd"`
	// Per is the window: minute, hour or day (aligned to UTC).
	Per string `yaml:"per"`
}

// Usage configures the sidecar's token accounting.
type Usage struct {
	// Prices add models to the price table or replace list prices
	// (usage.DefaultPrices), in US dollars per million tokens, by model id.
	Prices map[string]Price `yaml:"prices"`
}

// Price is a model's price in US dollars per million tokens; cache_write
// (5-minute cache), cache_write_1h (1-hour cache) and cache_read default
// to 1.25×, 2× and 0.1× input (package usage owns the defaults and
// usage.CheckPrice the validation).
type Price struct {
	Input        float64 `yaml:"input"`
	Output       float64 `yaml:"output"`
	CacheWrite   float64 `yaml:"cache_write"`
	CacheWrite1h float64 `yaml:"cache_write_1h"`
	CacheRead    float64 `yaml:"cache_read"`
}

// UsagePrice returns p as package usage takes it.
func (p Price) UsagePrice() usage.Price {
	return usage.Price{Input: p.Input, Output: p.Output, CacheWrite: p.CacheWrite, CacheWrite1h: p.CacheWrite1h, CacheRead: p.CacheRead}
}

// RateLimit limits each client (by address; one client per unix socket).
// A limit set to 0 is off; an unset one takes the sidecar's default.
type RateLimit struct {
	// RPS is the sustained requests per second (settings.DefaultRPS).
	RPS *float64 `yaml:"rps"`
	// Burst is the requests allowed at once above RPS (0 or unset: 2×RPS).
	Burst *int `yaml:"burst"`
	// Concurrency is the requests under way at once
	// (settings.DefaultConcurrency).
	Concurrency *int `yaml:"concurrency"`
}

// Timeouts of the sidecar; internal/proxy/settings owns their defaults.
type Timeouts struct {
	// Header bounds the wait for the upstream's response headers, and
	// for an upstream that reads nothing of a request body
	// (settings.DefaultHeaderTimeout).
	Header Duration `yaml:"header"`
	// ClientHeader bounds reading a client's request headers
	// (settings.DefaultClientHeaderTimeout).
	ClientHeader Duration `yaml:"client_header"`
	// Idle closes keep-alive connections idle this long, and cuts off a
	// client that reads nothing of its answer for this long
	// (settings.DefaultIdleTimeout).
	Idle Duration `yaml:"idle"`
	// Shutdown is how long in-flight requests and streams may run after
	// SIGTERM (settings.DefaultShutdownTimeout).
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
	// Env is the environment variable that carries the key
	// (sidecarcli.DefaultExecEnv, ANTHROPIC_API_KEY).
	Env string `yaml:"env"`
	// OnChange is restart (default) or signal.
	OnChange string `yaml:"on_change"`
	// Signal is sent on change with on_change: signal
	// (sidecarcli.DefaultExecSignal, SIGHUP).
	Signal string `yaml:"signal"`
}

// Spellings of settings that only this package reads.
const (
	OnChangeRestart = "restart"
	OnChangeSignal  = "signal"
	// MetricsListenOff turns a metrics listener off.
	MetricsListenOff = settings.MetricsOff
)

// ListenAddr returns the TCP address to listen on, "" when only a unix
// socket is configured (settings.ListenAddrs owns the rule).
func (s *Sidecar) ListenAddr() string {
	l, _ := settings.ListenAddrs(s.Listen, s.UnixSocket, s.MetricsListen)
	return l
}

// MetricsAddr returns the health and metrics address, "" when off
// (settings.ListenAddrs owns the rule).
func (s *Sidecar) MetricsAddr() string {
	_, m := settings.ListenAddrs(s.Listen, s.UnixSocket, s.MetricsListen)
	return m
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

// EffectiveRoutes returns the routes with the structure of the config
// filled in: one route for prefix / when none is configured, and each
// route's key (the default key when it names none). The other fields stay
// as the file set them; internal/proxy/settings owns their defaults.
func (s *Sidecar) EffectiveRoutes(c *Config) []Route {
	routes := s.Routes
	if len(routes) == 0 {
		routes = []Route{{Prefix: "/"}}
	}
	out := make([]Route, len(routes))
	for i, r := range routes {
		r.Key = or(r.Key, c.DefaultKey())
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

func (s *Sidecar) validate(p string, c *Config) []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	token := s.ClientTokenFile != "" || len(s.Clients) > 0
	checkAddr := func(field, addr string, serves bool) {
		err := settings.CheckAddr(addr)
		if err == nil && serves {
			err = settings.CheckListen(addr, token)
		}
		if err != nil {
			add("%s: %v", field, err)
		}
	}
	if s.Listen != "" {
		checkAddr(p+".listen", s.Listen, true)
	}
	if s.UnixSocket != "" {
		if err := checkPath(s.UnixSocket); err != nil {
			add("%s.unix_socket: %v", p, err)
		} else if len(s.UnixSocket) > maxSocketPath {
			// bind fails with "invalid argument" at start otherwise.
			add("%s.unix_socket: the path is %d bytes; a unix socket's path holds at most %d (the kernel's sun_path): use a shorter directory", p, len(s.UnixSocket), maxSocketPath)
		}
	}
	if s.MetricsListen != "" && s.MetricsListen != settings.MetricsOff {
		checkAddr(p+".metrics_listen", s.MetricsListen, false)
	}
	if l, m := s.ListenAddr(), s.MetricsAddr(); l != "" && m != "" && settings.SameAddr(l, m) {
		add("%s.metrics_listen: %q takes the port of listen %q; pick another port, e.g. %s", p, m, l, settings.DefaultMetricsListen)
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
		if err := settings.CheckAllowPath(ap); err != nil {
			add("%s.allow_paths[%d]: %v", p, i, err)
		}
	}
	if s.MaxRetryBody != nil {
		if s.MaxRetryBody.Bytes < 0 {
			add("%s.max_retry_body: must not be negative; 0 keeps none", p)
		} else if err := settings.CheckMaxRetryBody(s.MaxRetryBody.Bytes); err != nil {
			add("%s.max_retry_body: %v", p, err)
		}
	}
	errs = append(errs, s.RateLimit.validate(p+".rate_limit")...)
	errs = append(errs, s.validateClients(p+".clients")...)
	errs = append(errs, s.validateBudgets(p+".budgets", c)...)
	models := make([]string, 0, len(s.Usage.Prices))
	for m := range s.Usage.Prices {
		models = append(models, m)
	}
	sort.Strings(models)
	for _, m := range models {
		if err := usage.CheckModel(m); err != nil {
			add("%s.usage.prices: %v", p, err)
		} else if err := usage.CheckPrice(s.Usage.Prices[m].UsagePrice()); err != nil {
			add("%s.usage.prices.%s: %v", p, m, err)
		}
	}
	// Waits for a peer or a store have a floor; shutdown may be short
	// (streams cut at once).
	for _, d := range []struct {
		name  string
		v     time.Duration
		check func(time.Duration) error
	}{{"timeouts.header", s.Timeouts.Header.D, settings.CheckConfigTimeout}, {"timeouts.client_header", s.Timeouts.ClientHeader.D, settings.CheckConfigTimeout},
		{"timeouts.idle", s.Timeouts.Idle.D, settings.CheckConfigTimeout}, {"timeouts.shutdown", s.Timeouts.Shutdown.D, settings.CheckTimeout},
		{"start_timeout", s.StartTimeout.D, settings.CheckConfigTimeout}} {
		if err := d.check(d.v); err != nil {
			add("%s.%s: %v", p, d.name, err)
		}
	}
	if fs := s.FileSink; fs != nil {
		if fs.Path == "" {
			add("%s.file_sink.path: missing; set the file to write the key to, e.g. /run/keywarden/anthropic-key", p)
		} else if err := checkPath(fs.Path); err != nil {
			add("%s.file_sink.path: %v", p, err)
		} else if what := s.sinkClobbers(fs.Path, c); what != "" {
			add("%s.file_sink.path: %q is %s, which the sink would overwrite with the bare key; pick another file, e.g. /run/keywarden/anthropic-key", p, fs.Path, what)
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

// checkPath checks a path the sidecar creates (its unix socket, the file
// sink's file): absolute, or relative written with ./ so that it is not
// taken for something else.
// maxSocketPath is the longest unix socket path Linux binds: sun_path's
// 108 bytes, one of them the terminating NUL.
const maxSocketPath = 107

func checkPath(path string) error {
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "./") {
		return fmt.Errorf("%q must be a path starting with / or ./", path)
	}
	return nil
}

// sinkClobbers returns what the file sink's path is when it is a file the
// config's keys need — a file store's file, its lock file or one of its
// temporary files (of any file:// store, and of the embedded default
// store), or a client token file — and "" otherwise. Cleaned absolute
// paths are compared.
func (s *Sidecar) sinkClobbers(sink string, c *Config) string {
	target := absPath(sink)
	stores := map[string]string{absPath(DefaultStorePath()): "the embedded default store's file"}
	for _, name := range c.Names() {
		if path, ok := fileStorePath(c.Keys[name].Store); ok {
			stores[absPath(path)] = fmt.Sprintf("key %s's file store", name)
		}
	}
	for store, what := range stores {
		switch f := file.Uses(store, target); f {
		case "":
		case "file":
			return what
		default:
			return what + "'s " + f
		}
	}
	if s.ClientTokenFile != "" && absPath(s.ClientTokenFile) == target {
		return "client_token_file"
	}
	for i, cl := range s.Clients {
		if cl.TokenFile != "" && absPath(cl.TokenFile) == target {
			return fmt.Sprintf("clients[%d]'s token_file", i)
		}
	}
	return ""
}

// fileStorePath returns the file of a file:// store URL (file.PathOf).
func fileStorePath(store string) (string, bool) {
	u, err := url.Parse(store)
	if err != nil || u.Scheme != file.Scheme {
		return "", false
	}
	path := file.PathOf(u)
	return path, path != ""
}

// absPath returns path cleaned and absolute (relative to the working
// directory, as the sidecar opens it).
func absPath(path string) string {
	if a, err := filepath.Abs(path); err == nil {
		return a
	}
	return filepath.Clean(path)
}

// MaxRPS is the largest rate limit accepted: far above what one sidecar
// serves, so a larger number is a typo (and 2×RPS, the default burst,
// stays a whole number).
const MaxRPS = 1e6

// MinRPS is the smallest rate limit accepted (one request in under three
// hours): below it, a refused client would be told to retry after years
// (1e-300 gave Retry-After: 9223372037).
const MinRPS = 1e-4

func (rl RateLimit) validate(p string) []string {
	var errs []string
	if rl.RPS != nil && (*rl.RPS < 0 || *rl.RPS > MaxRPS || *rl.RPS != 0 && *rl.RPS < MinRPS || math.IsNaN(*rl.RPS)) {
		errs = append(errs, p+".rps: must be 0 (the rate limit off) or a number from 0.0001 to 1000000, such as 10")
	}
	if rl.Burst != nil && *rl.Burst < 0 {
		errs = append(errs, p+".burst: must not be negative")
	}
	if rl.Concurrency != nil && *rl.Concurrency < 0 {
		errs = append(errs, p+".concurrency: must not be negative; 0 turns the concurrency limit off")
	}
	return errs
}

func (s *Sidecar) validateClients(p string) []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	seen := map[string]int{}
	for i, c := range s.Clients {
		f := fmt.Sprintf("%s[%d]", p, i)
		if err := settings.CheckClientName(c.Name); err != nil {
			add("%s.name: %v", f, err)
		}
		if j, dup := seen[c.Name]; dup {
			add("%s.name: %q is also clients[%d]'s name", f, c.Name, j)
		}
		seen[c.Name] = i
		if c.Name == settings.DefaultClient && s.ClientTokenFile != "" {
			add("%s.name: %q is the client of client_token_file; pick another name", f, c.Name)
		}
		switch {
		case (c.TokenFile == "") == (c.TokenEnv == ""):
			add("%s: set token_file (a file holding a random token, mode 0600) or token_env (an environment variable holding it), one of them", f)
		case c.TokenEnv != "" && !envName(c.TokenEnv):
			add("%s.token_env: %q is not an environment variable name; use letters, digits and _", f, c.TokenEnv)
		}
		if c.RateLimit != nil {
			errs = append(errs, c.RateLimit.validate(f+".rate_limit")...)
		}
	}
	return errs
}

// ClientNames returns the names of the sidecar's clients: "default" for
// client_token_file and each of clients, or "local" without any token.
func (s *Sidecar) ClientNames() []string {
	var names []string
	if s.ClientTokenFile != "" {
		names = append(names, settings.DefaultClient)
	}
	for _, c := range s.Clients {
		names = append(names, c.Name)
	}
	if len(names) == 0 {
		names = []string{settings.LocalClient}
	}
	return names
}

func (s *Sidecar) validateBudgets(p string, c *Config) []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	clients := s.ClientNames()
	var routes []string
	for _, r := range s.EffectiveRoutes(c) {
		if r.Prefix != "" {
			routes = append(routes, "/"+strings.Trim(r.Prefix, "/"))
		} else {
			routes = append(routes, r.Listener)
		}
	}
	seen := map[string]int{}
	for i, b := range s.Budgets {
		f := fmt.Sprintf("%s[%d]", p, i)
		w, ok := settings.BudgetWindows[b.Per]
		if !ok {
			add("%s.per: %q; use minute, hour or day", f, b.Per)
			w = time.Hour
		}
		if err := settings.CheckBudget(b.Name, w, b.Tokens, b.USD); err != nil {
			add("%s: %v", f, err)
		}
		if j, dup := seen[b.Name]; dup {
			add("%s.name: %q is also budgets[%d]'s name", f, b.Name, j)
		}
		seen[b.Name] = i
		if b.Client != "" && !slices.Contains(clients, b.Client) {
			add("%s.client: no client named %q; use one of %s", f, b.Client, strings.Join(clients, ", "))
		}
		if b.Route != "" && !slices.Contains(routes, b.Route) {
			add("%s.route: no route with prefix or listener %q; use one of %s", f, b.Route, strings.Join(routes, ", "))
		}
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

func validateRoutes(p string, given, routes []Route, c *Config, taken [2]string, checkAddr func(field, addr string, serves bool)) []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	prefixes, listeners := map[string]int{}, []int{} // listeners: indexes of routes
	for i, r := range routes {
		f := fmt.Sprintf("%s[%d]", p, i)
		switch {
		case r.Prefix != "" && r.Listener != "":
			add("%s: set prefix or listener, not both", f)
		case r.Prefix == "" && r.Listener == "":
			add("%s: set prefix (e.g. /) or listener (e.g. 127.0.0.1:8788)", f)
		}
		if r.Prefix != "" {
			norm := r.Prefix
			if norm != "/" {
				norm = strings.TrimSuffix(norm, "/") // "/staging/" is "/staging"
			}
			if err := settings.CheckPrefix(norm); err != nil {
				add("%s.prefix: %v", f, err)
			}
			if j, dup := prefixes[norm]; dup {
				add("%s.prefix: %q is also routes[%d]'s prefix", f, r.Prefix, j)
			}
			prefixes[norm] = i
		}
		if r.Listener != "" {
			checkAddr(f+".listener", r.Listener, true)
			if settings.SameAddr(r.Listener, taken[0]) || settings.SameAddr(r.Listener, taken[1]) {
				add("%s.listener: %q is already the sidecar's listen or metrics_listen address; pick another port", f, r.Listener)
			}
			for _, j := range listeners {
				if settings.SameAddr(r.Listener, routes[j].Listener) {
					add("%s.listener: %q is also routes[%d]'s listener", f, r.Listener, j)
					break
				}
			}
			listeners = append(listeners, i)
		}
		switch {
		case r.Key == "":
			add("%s.key: missing; several keys are configured (%s): name one", f, strings.Join(c.Names(), ", "))
		case c.Keys[r.Key] == nil:
			add("%s.key: no key named %q; use one of %s", f, r.Key, strings.Join(c.Names(), ", "))
		}
		if r.Upstream != "" {
			if _, err := settings.ParseUpstream(r.Upstream); err != nil {
				add("%s.upstream: %v", f, err)
			}
		}
		auth, err := settings.ParseAuth(r.Auth)
		if err != nil {
			add("%s.auth: %v", f, err)
		}
		policy, err := settings.ParseVersionPolicy(r.VersionPolicy)
		if err != nil {
			add("%s.version_policy: %v", f, err)
		} else if policy == providers.VersionEnforce && settings.RouteVersion(r.AnthropicVersion, auth) == "" {
			add("%s.version_policy: enforce needs anthropic_version, e.g. %s", f, providers.DefaultAnthropicVersion)
		}
		if v := r.AnthropicVersion; v != "" {
			if err := settings.CheckVersion(v); err != nil {
				add("%s.anthropic_version: %v", f, err)
			}
		}
	}
	return errs
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
	if b < 0 || b > math.MaxInt64/mult {
		// Beyond int64 the product would wrap (2^64 bytes read as 0).
		return fmt.Errorf("line %d: %q is not a size from 0 to 8 EiB", n.Line, n.Value)
	}
	s.Bytes = b * mult
	return nil
}

// MarshalYAML writes the size in bytes.
func (s Size) MarshalYAML() (any, error) { return s.Bytes, nil }

func init() {
	for _, v := range []any{Route{}, RateLimit{}, Timeouts{}, FileSink{}, Exec{}, Client{}, Usage{}, Price{}, Budget{}} {
		registerFields(v)
	}
}
