package rotatecli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/pushgw"
)

// statusTimeout bounds the read of one key's state before its push.
const statusTimeout = 30 * time.Second

// pushOff is the --push-gateway value that turns the config's push off.
const pushOff = "off"

// pushOptions merges rotator.push_gateway with --push-gateway and
// --push-label, and checks the result (exit 2 when it is wrong).
func pushOptions(cmd *cobra.Command, c *config.Config, url string, labels map[string]string) (pushgw.Options, error) {
	o := c.Rotator.PushOptions()
	if cmd.Flags().Changed("push-gateway") {
		o.URL = url
		if url == pushOff {
			o.URL, o.Labels = "", nil
		}
	}
	for n, v := range labels {
		if o.Labels == nil {
			o.Labels = map[string]string{}
		}
		o.Labels[n] = v
	}
	if err := o.Check(); err != nil {
		return o, cli.Exit(cli.ExitConfig, fmt.Errorf("rotate: --push-gateway, --push-label: %w", err))
	}
	return o, nil
}

// pushed holds the metrics of one `keywarden rotate` for the Pushgateway,
// in a registry of their own; the zero value pushes nothing.
type pushed struct {
	reg     *prometheus.Registry
	metrics *rotation.Metrics
}

// pushMetrics returns the metrics to record the runs in: none without a
// gateway, or for a dry run (which touches nothing).
func pushMetrics(o RotateOptions) pushed {
	if !o.Push.Enabled() || o.Run.DryRun {
		return pushed{}
	}
	reg := prometheus.NewRegistry()
	return pushed{reg: reg, metrics: rotation.NewMetrics(reg)}
}

// pushState reads each key's state after the runs (Status exports it to
// pm's metrics, next to the outcome the run recorded) and pushes the key's
// gauges. A failed push is logged and returned; it changes nothing in the
// store.
func pushState(ctx context.Context, r *Rotator, o RotateOptions, pm pushed, lg *slog.Logger) error {
	if pm.reg == nil {
		return nil
	}
	// The runs may have ended with ctx (--timeout, SIGTERM): their outcome
	// is still worth pushing, within bounds.
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for _, name := range r.Keys() {
		complete := readState(ctx, r, name, lg)
		if err := pushgw.Push(ctx, o.Push, pm.reg, name, complete); err != nil {
			lg.Error("rotate: could not push the rotation metrics; the rotation itself is done as reported",
				slog.String("key", name), slog.String("push_gateway", o.Push.URL), slog.String("error", err.Error()))
			errs = append(errs, err)
			continue
		}
		lg.Debug("rotate: pushed the rotation metrics", slog.String("key", name), slog.String("push_gateway", o.Push.URL), slog.Bool("complete", complete))
	}
	if len(errs) > 0 {
		return fmt.Errorf("rotate: the runs are done, but pushing their metrics failed (the next run pushes again): %w", errors.Join(errs...))
	}
	return nil
}

// readState reads key name's state into the push metrics; complete is
// false when a part of it could not be read.
func readState(ctx context.Context, r *Rotator, name string, lg *slog.Logger) (complete bool) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := r.Status(ctx, name)
	if err != nil {
		lg.Warn("rotate: could not read the key's state; pushing only what was read", slog.String("key", name), slog.String("error", err.Error()))
		return false
	}
	if len(st.Errors) > 0 {
		lg.Warn("rotate: could not read all of the key's state; pushing only what was read", slog.String("key", name), slog.Any("errors", st.Errors))
		return false
	}
	return true
}
