package rotatecli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/rotation"
)

func rotatorCmd() *cobra.Command {
	var metrics string
	cmd := &cobra.Command{
		Use:   "rotator",
		Short: "Run the rotation daemon: each key on its cron schedule, revocations when their grace ends",
		Long: `rotator rotates every key that has a rotation schedule, on that schedule (cron:
5 fields, descriptors such as @weekly, CRON_TZ=Zone prefixes), after a random
start jitter when one is set. It never runs one key twice at once (and the
lease in the store keeps other rotators off), resumes rotations that a killed
process left, and revokes old keys when their grace period ends. It serves
/metrics and /healthz on rotator.metrics_listen (127.0.0.1:9788). SIGTERM stops
it gracefully: runs under way get 30s to finish.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("metrics-listen") {
				c.Rotator.MetricsListen = metrics
			}
			lg, err := logger(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return exit(Daemon(ctx, c, lg, nil))
		},
	}
	cmd.Flags().StringVar(&metrics, "metrics-listen", "", "address of /metrics and /healthz (overrides rotator.metrics_listen; \"off\" for none)")
	return cmd
}

// Daemon runs the rotator of config c until ctx is done. ready, when not
// nil, receives the metrics address once serving ("" when off).
func Daemon(ctx context.Context, c *config.Config, lg *slog.Logger, ready func(metricsAddr string)) error {
	scheduled := 0
	for _, n := range RotatedKeys(c) {
		if c.Keys[n].Rotation.Schedule != "" {
			scheduled++
		}
	}
	if scheduled == 0 {
		return cli.Exit(cli.ExitConfig, errors.New("rotator: no key has a rotation schedule; set keys.NAME.rotation.schedule (e.g. \"@weekly\"), or run `keywarden rotate` from a CronJob"))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := rotation.NewMetrics(reg)
	r, err := Build(ctx, c, BuildOptions{Logger: lg, Metrics: m})
	if err != nil {
		return err
	}
	defer r.Close()
	addr := ""
	if a := c.Rotator.MetricsAddr(); a != "" {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return cli.Exit(cli.ExitFailed, fmt.Errorf("rotator: metrics listener: %w", err))
		}
		addr = ln.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		lg.Info("rotator: metrics", slog.String("listen", addr))
	}
	// Count the pools once at start, so the gauge is there before the
	// first rotation.
	for _, name := range r.Keys() {
		if _, err := r.Status(ctx, name); err != nil {
			lg.Warn("rotator: could not read the key's state", slog.String("key", name), slog.String("error", err.Error()))
		}
	}
	if ready != nil {
		ready(addr)
	}
	return r.Serve(ctx, rotation.ServeOptions{})
}
