// Package sidecarcli holds the subcommands that hand keys to applications:
// `keywarden sidecar` (the reverse proxy, with the file sink) and
// `keywarden exec` (a program with the key in its environment).
package sidecarcli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/filesink"
	"github.com/keywarden/keywarden/internal/proxy"
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
	srcs := sources{}
	defer srcs.close()
	routes := s.EffectiveRoutes(c)
	for i, r := range routes {
		src, err := srcs.open(ctx, c, r.Key, lg)
		if err != nil {
			return cli.Exit(cli.ExitFailed, err)
		}
		o.Routes[i].Source = src
	}
	if fs := s.FileSink; fs != nil {
		src, err := srcs.open(ctx, c, s.SinkKey(c), lg)
		if err != nil {
			return cli.Exit(cli.ExitFailed, err)
		}
		sink, err := filesink.Start(fs.Path, src, lg)
		if err != nil {
			return cli.Exit(cli.ExitFailed, err)
		}
		defer sink.Close()
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
	for _, r := range o.Routes {
		k := r.Source.Current()
		lg.Info("sidecar: route", "route", r.Name, "key", r.Key, "upstream", r.Upstream.String(),
			"version", k.VersionID, "fingerprint", k.Fingerprint)
		if strings.HasPrefix(k.Value.Reveal(), config.PlaceholderPrefix) {
			lg.Warn("sidecar: the key is the placeholder written on first run; the upstream will answer 401 until you put a real key: keywarden put "+r.Key+" < key.txt", "key", r.Key)
		}
	}
	lg.Info("sidecar: serving", attrs...)
	if err := srv.Run(ctx); err != nil {
		return cli.Exit(cli.ExitFailed, err)
	}
	lg.Info("sidecar: stopped")
	return nil
}

// Options maps the config's sidecar section onto proxy.Options; the routes
// still need their Sources.
func Options(c *config.Config) (proxy.Options, error) {
	s := &c.Sidecar
	rps, burst, conc := s.Limits()
	o := proxy.Options{
		AllowPaths:          s.Paths(),
		MaxRetryBody:        s.RetryBody(),
		RPS:                 rps,
		Burst:               burst,
		Concurrency:         conc,
		HeaderTimeout:       s.HeaderTimeout(),
		ClientHeaderTimeout: s.ClientHeaderTimeout(),
		IdleTimeout:         s.IdleTimeout(),
		ShutdownTimeout:     s.ShutdownTimeout(),
		Listen:              s.ListenAddr(),
		UnixSocket:          s.UnixSocket,
		MetricsListen:       s.MetricsAddr(),
	}
	if o.MaxRetryBody == 0 {
		o.MaxRetryBody = -1 // config 0: keep none
	}
	if s.ClientTokenFile != "" {
		tok, err := readToken(s.ClientTokenFile)
		if err != nil {
			return o, err
		}
		o.ClientToken = tok
	}
	for _, r := range s.EffectiveRoutes(c) {
		u, err := proxy.ParseUpstream(r.Upstream)
		if err != nil {
			return o, err
		}
		pr := proxy.Route{Prefix: r.Prefix, Listener: r.Listener, Key: r.Key, Upstream: u, Version: r.AnthropicVersion}
		if r.Auth == config.AuthBearer {
			pr.Auth = providers.AuthBearer
		}
		if r.VersionPolicy == config.PolicyEnforce {
			pr.VersionPolicy = providers.VersionEnforce
		}
		o.Routes = append(o.Routes, pr)
	}
	return o, nil
}

// readToken reads the client token file. It must be private to its owner
// and hold at least 16 characters.
func readToken(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("sidecar.client_token_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("sidecar.client_token_file: %s is readable by others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("sidecar.client_token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 {
		return "", fmt.Errorf("sidecar.client_token_file: %s holds fewer than 16 characters; put a long random token in it, e.g. openssl rand -hex 32", path)
	}
	return tok, nil
}

// sources opens each key once.
type sources map[string]*providers.Source

func (s sources) open(ctx context.Context, c *config.Config, name string, lg *slog.Logger) (*providers.Source, error) {
	if src, ok := s[name]; ok {
		return src, nil
	}
	k, err := c.Key(name)
	if err != nil {
		return nil, err
	}
	src, err := cli.OpenSource(ctx, k, &providers.Options{Logger: lg})
	if err != nil {
		return nil, err
	}
	s[name] = src
	return src, nil
}

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
