package config

import (
	"fmt"
	"maps"
	"net/url"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/netrule"
	"github.com/keywarden/keywarden/internal/proxy/settings"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/pushgw"
)

// Rotation configures the rotation of one key. The rotation commands read
// it (internal/cli/rotatecli builds a rotation.Key from it).
//
//	rotation:
//	  schedule: "CRON_TZ=Europe/Paris 0 3 * * 1"
//	  grace: 1h
//	  issuer: {type: anthropic, admin_key_store: "awssm://anthropic/admin", pool_store: "awssm://anthropic/prod-pool"}
//	  probe: {type: anthropic, model: claude-sonnet-4-5}
//	  on_probe_failure: park
//	  webhook: {url: "https://hooks.example.com/keywarden"}
type Rotation struct {
	// Schedule is a cron spec (5 fields, @weekly, CRON_TZ=...). Without it
	// the key rotates on every `keywarden rotate` and never in the daemon.
	Schedule string `yaml:"schedule"`
	// Grace is how long the old key stays valid after promotion. It must be
	// at least the key's longest refresh gap (refresh + jitter); default
	// twice that, and at least 10m (see GraceInterval).
	Grace Duration `yaml:"grace"`
	// StartJitter delays each scheduled run by a random time up to it
	// (daemon only).
	StartJitter Duration `yaml:"start_jitter"`
	// OnProbeFailure is park (default: keep the new key PENDING and probe it
	// again on the next run) or discard (revoke it and remove PENDING).
	OnProbeFailure string `yaml:"on_probe_failure"`
	// BaseURL is the Claude API's base URL for the anthropic issuer and
	// probe (anthropic.DefaultBaseURL).
	BaseURL string `yaml:"base_url"`
	// Issuer creates and revokes keys.
	Issuer RotationIssuer `yaml:"issuer"`
	// Probe verifies a new key before promotion.
	Probe RotationProbe `yaml:"probe"`
	// Webhook receives this key's rotation events (default: rotator.webhook).
	Webhook *RotationWebhook `yaml:"webhook"`
	// RotateBeforeExpiry makes a rotation due when CURRENT expires within it
	// at the issuer, whatever the schedule says, and keeps pool keys that
	// expire within it from being drawn (rotation.Key.RotateBeforeExpiry).
	RotateBeforeExpiry Duration `yaml:"rotate_before_expiry"`
	// RevokeGate holds the revocation of the old key until Prometheus
	// reports no consumer holding it (rotation.RevokeGate).
	RevokeGate *RotationRevokeGate `yaml:"revoke_gate"`
}

// RotationRevokeGate configures the revoke gate: before the old key is
// revoked, Prometheus is asked how many consumers still report it in
// keywarden_key_info. Package rotation owns the defaults and the rules
// (rotation.RevokeGate, rotation/promgate); config only decodes them.
//
//	revoke_gate:
//	  prometheus_url: http://prometheus.monitoring:9090
//	  bearer_token_file: /var/run/secrets/prometheus/token
//	  selector: {namespace: prod}
//	  checks: 3
//	  interval: 30s
//	  max_wait: 1h
//	  policy: hold
type RotationRevokeGate struct {
	// PrometheusURL is Prometheus' base URL (its HTTP query API).
	PrometheusURL string `yaml:"prometheus_url"`
	// BearerTokenFile holds a bearer token for Prometheus.
	BearerTokenFile string `yaml:"bearer_token_file"`
	// BasicAuth gives basic auth for Prometheus.
	BasicAuth *RotationBasicAuth `yaml:"basic_auth"`
	// Selector adds label matchers to the query (name: value); "key"
	// replaces the key's name.
	Selector map[string]string `yaml:"selector"`
	// Checks is how many consecutive checks must find no holder.
	Checks int `yaml:"checks"`
	// Interval is the time between two checks.
	Interval Duration `yaml:"interval"`
	// MaxWait bounds the wait after the grace period.
	MaxWait Duration `yaml:"max_wait"`
	// Policy is hold or revoke: what happens when MaxWait ends with the
	// old key still held.
	Policy string `yaml:"policy"`
	// Timeout bounds one query.
	Timeout Duration `yaml:"timeout"`
}

// RotationBasicAuth is a username and a file holding the password.
type RotationBasicAuth struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// RotationIssuer configures where new keys come from.
type RotationIssuer struct {
	// Type is anthropic, exec or random.
	Type string `yaml:"type"`

	// AdminKeyStore is the store URL of the Admin key (anthropic).
	AdminKeyStore string `yaml:"admin_key_store"`
	// PoolStore is the store URL of the key pool (anthropic).
	PoolStore string `yaml:"pool_store"`
	// RevokeStatus is what old keys become: inactive (default) or archived
	// (anthropic).
	RevokeStatus string `yaml:"revoke_status"`
	// PoolLow is the pool size at or below which a warning and a pool.low
	// event are emitted (default 1; anthropic).
	PoolLow int `yaml:"pool_low"`

	// Command is the program and fixed arguments that create a key (exec);
	// values travel on stdin and in the environment, never in arguments.
	Command []string `yaml:"command"`
	// RevokeCommand revokes a key (exec; default: Command).
	RevokeCommand []string `yaml:"revoke_command"`
	// Timeout bounds each command run (exec; default 30s).
	Timeout Duration `yaml:"timeout"`
	// Env adds variables to the command's environment (exec).
	Env map[string]string `yaml:"env"`

	// Bytes is the number of random bytes (random; default 32).
	Bytes int `yaml:"bytes"`
	// Encoding is base64url (default) or hex (random).
	Encoding string `yaml:"encoding"`
	// Prefix starts each secret, e.g. "kw-" (random).
	Prefix string `yaml:"prefix"`
}

// RotationProbe configures how a new key is verified.
type RotationProbe struct {
	// Type is anthropic (default with the anthropic issuer), http or none
	// (default otherwise).
	Type string `yaml:"type"`

	// Model, when set, is checked with count_tokens too (anthropic).
	Model string `yaml:"model"`
	// AnthropicVersion is the anthropic-version header (anthropic's
	// DefaultVersion).
	AnthropicVersion string `yaml:"anthropic_version"`

	// Method is the request method (http; default GET).
	Method string `yaml:"method"`
	// URL is the URL to call (http).
	URL string `yaml:"url"`
	// Headers are sent; {{key}} in a value stands for the key (http).
	Headers map[string]string `yaml:"headers"`
	// ExpectStatus is the status meaning the key works (http; default 200).
	ExpectStatus int `yaml:"expect_status"`

	// Attempts bounds the probe's attempts (default 6).
	Attempts int `yaml:"attempts"`
	// Timeout bounds one attempt (default 30s).
	Timeout Duration `yaml:"timeout"`
	// Backoff is the first wait between attempts, doubled each time
	// (default 1s).
	Backoff Duration `yaml:"backoff"`
	// MaxBackoff caps the wait, retry-after included (default 30s).
	MaxBackoff Duration `yaml:"max_backoff"`
	// Settle is how long a key the issuer just activated may answer 401
	// or 403 before the probe counts it refused (rotation.Retry.Settle;
	// default rotation.DefaultProbeSettle; negative: refused at once).
	Settle Duration `yaml:"settle"`
}

// RotationWebhook configures a webhook for rotation events (JSON, never a
// key value).
type RotationWebhook struct {
	// URL receives a POST per event.
	URL string `yaml:"url"`
	// Timeout bounds a delivery (default 10s).
	Timeout Duration `yaml:"timeout"`
}

// Rotator configures the rotation commands (`keywarden rotate`,
// `keywarden rotator`).
type Rotator struct {
	// Lease is how long a rotator's hold on a key lasts without renewal
	// (rotation.Options.Lease: default 45s, at least 10s; a running
	// rotation renews it every third of it).
	Lease Duration `yaml:"lease"`
	// MetricsListen serves /metrics and /healthz for `keywarden rotator`
	// (default 127.0.0.1:9788; "off" disables it).
	MetricsListen string `yaml:"metrics_listen"`
	// Webhook receives every key's rotation events, unless the key has its
	// own.
	Webhook *RotationWebhook `yaml:"webhook"`
	// PushGateway is where `keywarden rotate` pushes each key's rotation
	// state gauges after every run (rotation/pushgw; --push-gateway and
	// --push-label override it). The daemon serves them on /metrics
	// instead.
	PushGateway *RotatorPushGateway `yaml:"push_gateway"`
}

// RotatorPushGateway is a Prometheus Pushgateway; package pushgw owns the
// default and the validation.
type RotatorPushGateway struct {
	// URL is the gateway's base URL, e.g. http://pushgateway.monitoring:9091.
	URL string `yaml:"url"`
	// Labels are added to every group's grouping key, e.g.
	// {namespace: llm-production}.
	Labels map[string]string `yaml:"labels"`
	// Timeout bounds each push (default 10s).
	Timeout Duration `yaml:"timeout"`
}

// PushOptions returns the push settings the file gives (zero: no push).
func (r *Rotator) PushOptions() pushgw.Options {
	if r.PushGateway == nil {
		return pushgw.Options{}
	}
	return pushgw.Options{URL: r.PushGateway.URL, Labels: maps.Clone(r.PushGateway.Labels), Timeout: r.PushGateway.Timeout.D}
}

// Defaults of rotation.
const (
	DefaultMinGrace             = 10 * time.Minute
	DefaultRotatorMetricsListen = "127.0.0.1:9788"
)

func init() {
	for _, v := range []any{RotationIssuer{}, RotationProbe{}, RotationWebhook{}, RotationRevokeGate{}, RotationBasicAuth{}, RotatorPushGateway{}} {
		registerFields(v)
	}
}

// GraceInterval returns Grace, or its default for key k: twice the key's
// longest refresh gap, at least DefaultMinGrace. A negative Grace is
// returned as it is, for rotation.New to refuse.
//
// The default lives here because package rotation has none for a key's
// grace (it does not know the consumers' refresh settings).
func (r *Rotation) GraceInterval(k *Key) time.Duration {
	if r.Grace.D != 0 {
		return r.Grace.D
	}
	g := 2 * k.LongestRefreshGap()
	if g < DefaultMinGrace {
		g = DefaultMinGrace
	}
	return g
}

// ProbeType returns the probe type, with its default.
func (r *Rotation) ProbeType() string {
	if r.Probe.Type != "" {
		return r.Probe.Type
	}
	if r.Issuer.Type == "anthropic" {
		return "anthropic"
	}
	return "none"
}

// APIBaseURL returns BaseURL as the file set it; "" is the anthropic
// issuer's and probe's default (anthropic.DefaultBaseURL).
func (r *Rotation) APIBaseURL() string { return r.BaseURL }

// MetricsAddr returns the metrics address, "" when off.
func (r *Rotator) MetricsAddr() string {
	switch r.MetricsListen {
	case "":
		return DefaultRotatorMetricsListen
	case MetricsListenOff:
		return ""
	}
	return r.MetricsListen
}

// Retry returns the probe's retry bounds.
func (p *RotationProbe) Retry() rotation.Retry {
	return rotation.Retry{Attempts: p.Attempts, Timeout: p.Timeout.D, MinBackoff: p.Backoff.D, MaxBackoff: p.MaxBackoff.D, Settle: p.Settle.D}
}

func (r *Rotation) validate(path string, k *Key, c *Config) []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if r.Schedule != "" {
		if _, err := rotation.ParseSchedule(r.Schedule); err != nil {
			add("%s.schedule: %s", path, strings.TrimPrefix(err.Error(), "rotation: "))
		}
	}
	if r.Grace.D != 0 && r.Grace.D < k.LongestRefreshGap() {
		errs = append(errs, path+".grace: "+r.Grace.D.String()+" is shorter than the key's refresh + jitter ("+
			k.LongestRefreshGap().String()+"); consumers could still hold the old key when it is revoked: raise grace or lower refresh")
	}
	if r.StartJitter.D < 0 {
		add("%s.start_jitter: must not be negative", path)
	}
	// on_probe_failure and a negative grace are checked by rotation.New,
	// their owner, when the rotation commands start.
	if r.BaseURL != "" {
		// The Admin key and new keys travel to it.
		checkSecretURL(add, path+".base_url", r.BaseURL)
	}
	errs = append(errs, r.Issuer.validate(path+".issuer", k)...)
	errs = append(errs, r.Probe.validate(path+".probe", r)...)
	if r.Webhook != nil {
		errs = append(errs, r.Webhook.validate(path+".webhook")...)
	}
	return errs
}

// issuerFields lists, per issuer type, the fields it reads.
var issuerFields = map[string][]string{
	"anthropic": {"admin_key_store", "pool_store", "revoke_status", "pool_low"},
	"exec":      {"command", "revoke_command", "timeout", "env"},
	"random":    {"bytes", "encoding", "prefix"},
}

func (i *RotationIssuer) set() map[string]bool {
	return map[string]bool{
		"admin_key_store": i.AdminKeyStore != "", "pool_store": i.PoolStore != "", "revoke_status": i.RevokeStatus != "",
		"pool_low": i.PoolLow != 0, "command": len(i.Command) > 0, "revoke_command": len(i.RevokeCommand) > 0,
		"timeout": i.Timeout.D != 0, "env": len(i.Env) > 0, "bytes": i.Bytes != 0, "encoding": i.Encoding != "", "prefix": i.Prefix != "",
	}
}

func (i *RotationIssuer) validate(path string, k *Key) []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	own, ok := issuerFields[i.Type]
	if !ok {
		if i.Type == "" {
			add("%s.type: missing; set anthropic (a pool of Console-created keys), exec (a command) or random (an internal shared secret)", path)
		} else {
			add("%s.type: %q: want anthropic, exec or random", path, i.Type)
		}
		return errs
	}
	set := i.set()
	for _, f := range []string{"admin_key_store", "pool_store", "revoke_status", "pool_low", "command", "revoke_command", "timeout", "env", "bytes", "encoding", "prefix"} {
		if set[f] && !contains(own, f) {
			add("%s.%s: not used by the %s issuer (its fields: %s)", path, f, i.Type, strings.Join(own, ", "))
		}
	}
	switch i.Type {
	case "anthropic":
		checkStore := func(field, v, example string) {
			switch {
			case v == "":
				add("%s.%s: missing; set a store URL, e.g. %s", path, field, example)
			case !strings.Contains(v, "://") && !strings.HasPrefix(v, "file:"):
				add("%s.%s: %q is not a store URL; use scheme://..., e.g. %s", path, field, v, example)
			case sameStore(v, k.Store):
				add("%s.%s: %q is the key's own store; give it a secret of its own", path, field, v)
			}
		}
		checkStore("admin_key_store", i.AdminKeyStore, "awssm://anthropic/admin?region=us-east-1")
		checkStore("pool_store", i.PoolStore, "awssm://anthropic/"+k.Name+"-pool?region=us-east-1")
		if i.AdminKeyStore != "" && sameStore(i.AdminKeyStore, i.PoolStore) {
			add("%s.pool_store: the pool and the Admin key must be different secrets", path)
		}
		switch i.RevokeStatus {
		case "", "inactive", "archived":
		default:
			add("%s.revoke_status: %q: want inactive (default; can be reactivated) or archived (permanent)", path, i.RevokeStatus)
		}
		if i.PoolLow < 0 {
			add("%s.pool_low: must not be negative", path)
		}
	case "exec":
		if len(i.Command) == 0 || strings.TrimSpace(i.Command[0]) == "" {
			add("%s.command: missing; set the program and its fixed arguments, e.g. [/usr/local/bin/mint-key, --service, prod]", path)
		}
		for _, list := range [][]string{i.Command, i.RevokeCommand} {
			for _, a := range list {
				if strings.Contains(a, "{{") {
					add("%s.command: %q: commands take no templates; the key id and token come in the environment and on stdin", path, a)
				}
			}
		}
		if i.Timeout.D < 0 {
			add("%s.timeout: must not be negative", path)
		}
		for name := range i.Env {
			if name == "" || strings.ContainsAny(name, "= \t\n") {
				add("%s.env: %q is not a variable name", path, name)
			}
		}
	case "random":
		// The prefix starts every key: what it makes must pass the one key
		// check every reader applies (providers' payload rules), or the
		// rotation would write a PENDING no reader takes.
		if i.Prefix != "" {
			p := providers.EncodePayload(providers.Payload{Key: providers.NewSecret(i.Prefix + "x")})
			if _, err := providers.DecodePayload(p, ""); err != nil {
				add("%s.prefix: keys made with it are refused by every reader: %v", path, err)
			}
		}
		if i.Bytes != 0 && (i.Bytes < 16 || i.Bytes > 1024) {
			add("%s.bytes: %d is out of range; use 16 to 1024 (default 32)", path, i.Bytes)
		}
		switch i.Encoding {
		case "", "base64url", "hex":
		default:
			add("%s.encoding: %q: want base64url (default) or hex", path, i.Encoding)
		}
	}
	return errs
}

// sameStore reports whether two store URLs name the same secret, ignoring
// the portable parameters that do not change which secret it is.
func sameStore(a, b string) bool {
	norm := func(s string) string {
		u, err := url.Parse(s)
		if err != nil {
			return s
		}
		q := u.Query()
		for _, p := range []string{"field", "refresh", "jitter", "max_stale"} {
			q.Del(p)
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	return norm(a) == norm(b)
}

func (p *RotationProbe) validate(path string, r *Rotation) []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	typ := r.ProbeType()
	switch typ {
	case "anthropic":
		if p.Method != "" || p.URL != "" || len(p.Headers) > 0 || p.ExpectStatus != 0 {
			add("%s: method, url, headers and expect_status are for type http; the anthropic probe calls GET /v1/models", path)
		}
	case "http":
		if p.Model != "" || p.AnthropicVersion != "" {
			add("%s: model and anthropic_version are for type anthropic", path)
		}
		if p.URL == "" {
			add("%s.url: missing; set the URL the key is tried on, e.g. https://api.example.com/v1/me", path)
		} else {
			// The new key travels to it (in a header).
			checkSecretURL(add, path+".url", p.URL)
			if strings.Contains(p.URL, "{{key}}") {
				add("%s.url: must not carry {{key}}: URLs are logged; put the key in a header", path)
			}
		}
		carries := false
		for name, v := range p.Headers {
			if name == "" || strings.ContainsAny(name, " :\r\n") {
				add("%s.headers: %q is not a header name", path, name)
			}
			carries = carries || strings.Contains(v, "{{key}}")
		}
		if !carries {
			add("%s.headers: no header carries {{key}}; add one, e.g. {Authorization: \"Bearer {{key}}\"}", path)
		}
		if p.ExpectStatus != 0 && (p.ExpectStatus < 100 || p.ExpectStatus > 599) {
			add("%s.expect_status: %d is not an HTTP status", path, p.ExpectStatus)
		}
	case "none":
		if p.Model != "" || p.URL != "" || len(p.Headers) > 0 {
			add("%s: type none takes no settings; set type: anthropic or http", path)
		}
	default:
		add("%s.type: %q: want anthropic, http or none", path, p.Type)
		return errs
	}
	if p.Attempts < 0 {
		add("%s.attempts: must not be negative", path)
	}
	if p.Timeout.D < 0 || p.Backoff.D < 0 || p.MaxBackoff.D < 0 {
		add("%s: timeout, backoff and max_backoff must not be negative", path)
	}
	if p.MaxBackoff.D != 0 && p.Backoff.D > p.MaxBackoff.D {
		add("%s.max_backoff: %v is below backoff %v", path, p.MaxBackoff.D, p.Backoff.D)
	}
	// A probe longer than the lease is refused by rotation.New, which owns
	// the rule.
	return errs
}

func (w *RotationWebhook) validate(path string) []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if w.URL == "" {
		add("%s.url: missing; set the URL that receives the events", path)
	} else {
		checkHTTPURL(add, path+".url", w.URL)
	}
	if w.Timeout.D < 0 {
		add("%s.timeout: must not be negative", path)
	}
	return errs
}

func (r *Rotator) validate(path string, c *Config) []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if r.Lease.D < 0 {
		add("%s.lease: must not be negative", path)
	} else if r.Lease.D != 0 && r.Lease.D < rotation.MinLease {
		// rotation.MinLease owns the bound; checked here too so that
		// `check` refuses the file at load, not only `rotate`.
		add("%s.lease: %v is shorter than %v; a renewal must fit in a third of it (default %v)", path, r.Lease.D, rotation.MinLease, rotation.DefaultLease)
	}
	if m := r.MetricsListen; m != "" && m != MetricsListenOff {
		if err := settings.CheckAddr(m); err != nil {
			add("%s.metrics_listen: %v (e.g. %s), or off", path, err, DefaultRotatorMetricsListen)
		}
	}
	if r.PushGateway != nil {
		if r.PushGateway.URL == "" {
			add("%s.push_gateway.url: required (e.g. http://pushgateway.monitoring:9091)", path)
		} else if err := r.PushOptions().Check(); err != nil {
			add("%s.push_gateway: %v", path, err)
		}
	}
	if r.Webhook != nil {
		errs = append(errs, r.Webhook.validate(path+".webhook")...)
	}
	return errs
}

func checkHTTPURL(add func(string, ...any), field, v string) {
	u, err := url.Parse(v)
	if err != nil || !netrule.IsHTTP(u) {
		add("%s: %q is not an http(s) URL", field, v)
		return
	}
	if u.User != nil {
		add("%s: must not carry credentials", field)
	}
}

// checkSecretURL checks a URL a secret travels to: an http(s) URL, and
// netrule's rule (https, or plain http only to this machine, no user info).
func checkSecretURL(add func(string, ...any), field, v string) {
	u, err := url.Parse(v)
	if err != nil {
		add("%s: %q is not an http(s) URL", field, v)
		return
	}
	if err := netrule.CheckSecure(u); err != nil {
		add("%s: %s: %v", field, providers.Redact(u), err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
