// Package sidecarcli holds the subcommands that hand keys to applications:
// `keywarden sidecar` (the reverse proxy, with the file sink) and
// `keywarden exec` (a program with the key in its environment).
package sidecarcli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/filesink"
	"github.com/keywarden/keywarden/internal/memlimit"
	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/settings"
	"github.com/keywarden/keywarden/internal/proxy/usage"
	"github.com/keywarden/keywarden/internal/residency"
	"github.com/keywarden/keywarden/internal/secretfile"
	"github.com/keywarden/keywarden/internal/telemetry"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/redact"
)

// Commands returns the sidecar and exec subcommands.
func Commands() []*cobra.Command { return []*cobra.Command{sidecarCmd(), execCmd()} }

func sidecarCmd() *cobra.Command {
	var listen, socket, metrics string
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Run the reverse proxy that puts the key on every request to the Claude API",
		Long: `sidecar serves the Claude API on 127.0.0.1:8787 (or a unix socket) and puts the
configured key on every request: point any SDK at it with
ANTHROPIC_BASE_URL=http://127.0.0.1:8787 and a placeholder key. It refreshes the
key in the background, retries once with the new key when the API answers 401,
forwards only allowlisted paths, and serves /healthz, /readyz and /metrics on
127.0.0.1:9787. SIGTERM stops it gracefully. Without --config it runs on the
embedded default store.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cli.LoadConfig(cmd)
			if err != nil {
				return err
			}
			s := &c.Sidecar
			if cmd.Flags().Changed("listen") {
				s.Listen = listen
			}
			if cmd.Flags().Changed("unix-socket") {
				s.UnixSocket = socket
			}
			if cmd.Flags().Changed("metrics-listen") {
				s.MetricsListen = metrics
			}
			if err := s.Validate(c); err != nil {
				return cli.Exit(cli.ExitConfig, err)
			}
			lg, err := logger(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return Sidecar(ctx, c, lg)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "TCP address to serve (overrides sidecar.listen; \"\" for none)")
	cmd.Flags().StringVar(&socket, "unix-socket", "", "unix socket to serve (overrides sidecar.unix_socket)")
	// "" means none: serve no TCP address (only the socket), or no socket.
	cli.EmptyOK(cmd.Flags().Lookup("listen"))
	cli.EmptyOK(cmd.Flags().Lookup("unix-socket"))
	cmd.Flags().StringVar(&metrics, "metrics-listen", "", "address of /healthz, /readyz and /metrics (overrides sidecar.metrics_listen; \"off\" for none)")
	return cmd
}

// logger returns the --log-level/--log-format logger behind the redacting
// handler.
func logger(cmd *cobra.Command) (*slog.Logger, error) {
	lg, err := cli.Logger(cmd, cmd.ErrOrStderr())
	if err != nil {
		return nil, err
	}
	return redact.NewLogger(lg.Handler()), nil
}

// Sidecar runs the sidecar of config c until ctx is done, then drains.
// While it waits for the first read of its keys (up to
// sidecar.start_timeout) it logs what it waits for and serves /healthz
// and a failing /readyz on the metrics address.
func Sidecar(ctx context.Context, c *config.Config, lg *slog.Logger) error {
	s := &c.Sidecar
	if err := s.Ready(c); err != nil {
		return cli.Exit(cli.ExitConfig, err)
	}
	o, err := Options(c)
	if err != nil {
		return cli.Exit(cli.ExitConfig, err)
	}
	o.Logger = lg
	if msg := memlimit.Set(); msg != "" {
		lg.Info("sidecar: " + msg)
	}
	names := make([]string, 0, len(o.Routes)+1)
	for _, r := range o.Routes {
		names = append(names, r.Key)
	}
	if s.FileSink != nil {
		names = append(names, s.SinkKey(c))
	}
	srcs, err := openStarting(ctx, c, names, startTimeout(s), o.MetricsListen, lg)
	if err != nil {
		return err
	}
	defer srcs.close()
	for i := range o.Routes {
		o.Routes[i].Source = srcs[o.Routes[i].Key]
	}
	if fs := s.FileSink; fs != nil {
		sink, err := filesink.Start(fs.Path, srcs[s.SinkKey(c)], filesink.Options{Logger: lg})
		if err != nil {
			return cli.Exit(cli.ExitFailed, err)
		}
		defer sink.Close()
		o.ReadyChecks = append(o.ReadyChecks, sink.CheckHealth)
		o.Metrics = telemetry.New()
		if err := registerSink(o.Metrics.Registry, s.SinkKey(c), sink); err != nil {
			return cli.Exit(cli.ExitFailed, err)
		}
	}
	p, err := proxy.New(o)
	if err != nil {
		return cli.Exit(cli.ExitConfig, err)
	}
	srv, err := p.Listen()
	if err != nil {
		return cli.Exit(cli.ExitFailed, err)
	}
	attrs := []any{"metrics", orDash(o.MetricsListen), "routes", len(o.Routes)}
	if o.Listen != "" {
		attrs = append(attrs, "listen", srv.Addr("listen").String())
	}
	if o.UnixSocket != "" {
		attrs = append(attrs, "unix_socket", o.UnixSocket)
	}
	for _, r := range p.Routes() {
		k := r.Source.Current()
		lg.Info("sidecar: route", "route", r.Name, "key", r.Key, "upstream", r.Upstream.String(),
			"version", k.VersionID, "fingerprint", k.Fingerprint)
		if strings.HasPrefix(k.Value.Reveal(), config.PlaceholderPrefix) {
			lg.Warn("sidecar: the key is the placeholder written on first run; the upstream will answer 401 until you put a real key: keywarden put "+r.Key+" < key.txt", "key", r.Key)
		}
	}
	lg.Info("sidecar: serving", attrs...)
	dropStartupPages(lg)
	if err := srv.Run(ctx); err != nil {
		if ctx.Err() == nil || !errors.Is(err, context.DeadlineExceeded) {
			return cli.Exit(cli.ExitFailed, err)
		}
		// A drain cut short by timeouts.shutdown: closing what is left is
		// what SIGTERM is documented to do, so it is no failure (exit 0),
		// but it is said once, naming the setting.
		lg.Warn(fmt.Sprintf("sidecar: shutdown: requests still under way after sidecar.timeouts.shutdown (%s) were closed", shutdownTimeout(s)),
			"timeout", shutdownTimeout(s))
	}
	lg.Info("sidecar: stopped")
	return nil
}

// dropStartupPages unmaps the executable's pages that start-up touched
// (package residency): 18 of an idle sidecar's 22 MiB resident. Failing
// costs nothing but that memory, so it is only logged.
func dropStartupPages(lg *slog.Logger) {
	n, err := residency.DropStartupPages()
	if err != nil {
		lg.Debug("could not drop start-up's pages of the executable", "error", err.Error())
		return
	}
	lg.Debug("dropped start-up's pages of the executable", "mapped_bytes", n)
}

// registerSink exports the file sink's health for alerting:
// keywarden_file_sink_ok (1 while the file holds the current key, else 0)
// and keywarden_file_sink_last_success_timestamp_seconds, labelled with
// the key's name.
func registerSink(reg prometheus.Registerer, key string, sink *filesink.Sink) error {
	labels := prometheus.Labels{"key": key}
	ok := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "keywarden", Subsystem: "file_sink", Name: "ok", ConstLabels: labels,
		Help: "1 while the file sink's file holds the current key, 0 while a write is failing or pending.",
	}, func() float64 {
		if sink.CheckHealth() != nil {
			return 0
		}
		return 1
	})
	last := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "keywarden", Subsystem: "file_sink", Name: "last_success_timestamp_seconds", ConstLabels: labels,
		Help: "When the file sink's file was last written or found to hold the current key (unix seconds).",
	}, func() float64 { return float64(sink.LastSuccess().UnixNano()) / 1e9 })
	for _, c := range []prometheus.Collector{ok, last} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("sidecar: file sink metrics: %w", err)
		}
	}
	return nil
}

// shutdownTimeout returns sidecar.timeouts.shutdown, or proxy's default.
func shutdownTimeout(s *config.Sidecar) time.Duration {
	return orDuration(s.Timeouts.Shutdown.D, settings.DefaultShutdownTimeout)
}

// startTimeout returns sidecar.start_timeout, or proxy's default.
func startTimeout(s *config.Sidecar) time.Duration {
	return orDuration(s.StartTimeout.D, settings.DefaultStartTimeout)
}

func orDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// CheckConfig reads the sidecar's client tokens as the sidecar does at its
// start and checks them as the proxy does (a cli.ConfigCheck for `check`).
func CheckConfig(_ context.Context, c *config.Config) error {
	o, err := Options(c)
	if err != nil {
		return err
	}
	return proxy.CheckClients(o)
}

// Options maps the config's sidecar section onto proxy.Options: it copies
// what the file set, and sets the sidecar's per-client limits
// (settings.DefaultRPS, settings.DefaultConcurrency) when the file leaves them
// unset; package proxy fills the other zero fields. The routes still need
// their Sources.
func Options(c *config.Config) (proxy.Options, error) {
	s := &c.Sidecar
	o := proxy.Options{
		AllowPaths:          s.AllowPaths,
		RPS:                 settings.DefaultRPS,
		Concurrency:         settings.DefaultConcurrency,
		HeaderTimeout:       s.Timeouts.Header.D,
		ClientHeaderTimeout: s.Timeouts.ClientHeader.D,
		IdleTimeout:         s.Timeouts.Idle.D,
		ShutdownTimeout:     s.Timeouts.Shutdown.D,
		UnixSocket:          s.UnixSocket,
	}
	o.Listen, o.MetricsListen = settings.ListenAddrs(s.Listen, s.UnixSocket, s.MetricsListen)
	if b := s.MaxRetryBody; b != nil {
		o.MaxRetryBody = b.Bytes
		if b.Bytes == 0 {
			o.MaxRetryBody = -1 // config 0: keep none
		}
	}
	if v := s.RateLimit.RPS; v != nil {
		o.RPS = *v
	}
	if v := s.RateLimit.Burst; v != nil {
		o.Burst = *v
	}
	if v := s.RateLimit.Concurrency; v != nil {
		o.Concurrency = *v
	}
	if s.ClientTokenFile != "" {
		tok, err := readToken("sidecar.client_token_file", s.ClientTokenFile)
		if err != nil {
			return o, err
		}
		o.ClientToken = tok
	}
	for i, c := range s.Clients {
		field := fmt.Sprintf("sidecar.clients[%d]", i)
		var tok string
		var err error
		if c.TokenFile != "" {
			tok, err = readToken(field+".token_file", c.TokenFile)
		} else {
			tok, err = envToken(field+".token_env", c.TokenEnv)
		}
		if err != nil {
			return o, err
		}
		pc := proxy.Client{Name: c.Name, Token: tok}
		if rl := c.RateLimit; rl != nil {
			pc.RPS, pc.Burst, pc.Concurrency = deref(rl.RPS), deref(rl.Burst), deref(rl.Concurrency)
		}
		o.Clients = append(o.Clients, pc)
	}
	for _, b := range s.Budgets {
		o.Budgets = append(o.Budgets, proxy.Budget{Name: b.Name, Client: b.Client, Route: b.Route,
			Tokens: b.Tokens, USD: b.USD, Window: settings.BudgetWindows[b.Per]})
	}
	if len(s.Usage.Prices) > 0 {
		o.Prices = map[string]usage.Price{}
		for m, pr := range s.Usage.Prices {
			o.Prices[m] = pr.UsagePrice()
		}
	}
	for i, r := range s.EffectiveRoutes(c) {
		pr := proxy.Route{Prefix: r.Prefix, Listener: r.Listener, Key: r.Key, Version: r.AnthropicVersion}
		var err error
		if r.Upstream != "" {
			if pr.Upstream, err = settings.ParseUpstream(r.Upstream); err != nil {
				return o, fmt.Errorf("sidecar.routes[%d].upstream: %w", i, err)
			}
		}
		if pr.Auth, err = settings.ParseAuth(r.Auth); err != nil {
			return o, fmt.Errorf("sidecar.routes[%d].auth: %w", i, err)
		}
		if pr.VersionPolicy, err = settings.ParseVersionPolicy(r.VersionPolicy); err != nil {
			return o, fmt.Errorf("sidecar.routes[%d].version_policy: %w", i, err)
		}
		o.Routes = append(o.Routes, pr)
	}
	return o, nil
}

// minTokenLen is the shortest client token accepted.
const minTokenLen = 16

// readToken reads a client token file (the setting named field). It must
// be private to its owner and hold a token checkToken accepts.
func readToken(field, path string) (string, error) {
	b, fi, err := secretfile.Read(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s: %s is readable by others (mode %04o); chmod 600 it", field, path, fi.Mode().Perm())
	}
	tok := strings.TrimSpace(string(b))
	if err := checkToken(tok); err != nil {
		return "", fmt.Errorf("%s: %s %w", field, path, err)
	}
	return tok, nil
}

// envToken reads a client token from the environment variable name (the
// setting named field): a token checkToken accepts.
func envToken(field, name string) (string, error) {
	tok := strings.TrimSpace(os.Getenv(name))
	if err := checkToken(tok); err != nil {
		return "", fmt.Errorf("%s: the environment variable %s is unset or %w", field, name, err)
	}
	return tok, nil
}

// checkToken is the one rule for a client token, wherever it is read
// from: at least minTokenLen characters, all visible ASCII (what a header
// carries as sent; a space or control character inside is a damaged file
// or a pasted sentence, as for keys). The error names no character of it.
func checkToken(tok string) error {
	if len(tok) < minTokenLen {
		return fmt.Errorf("holds fewer than %d characters; put a long random token in it, e.g. openssl rand -hex 32", minTokenLen)
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("holds a space, control or non-ASCII character at byte %d; a token is visible ASCII only, e.g. openssl rand -hex 32", i)
		}
	}
	return nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// sources are the opened Sources, by key name.
type sources map[string]*providers.Source

func (s sources) close() {
	for _, src := range s {
		_ = src.Close()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
