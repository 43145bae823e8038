// Package rotatecli holds the rotation subcommands: `keywarden rotate` (one
// run, for a Kubernetes CronJob), `keywarden rotator` (a daemon on each
// key's cron schedule), `keywarden status`, and `keywarden pool add|list`
// (the pool of Console-created Claude keys). Build turns a config into a
// rotation.Rotator for them and for tests.
package rotatecli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/providers/redact"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/pushgw"
)

// Commands returns the rotate, rotator, status, pool, key-id and audit
// subcommands.
func Commands() []*cobra.Command {
	return []*cobra.Command{rotateCmd(), rotatorCmd(), statusCmd(), poolCmd(), keyIDCmd(), auditCmd()}
}

// exit maps a run's error onto the process exit code.
func exit(err error) error {
	if err == nil {
		return nil
	}
	var ee *cli.ExitError
	if errors.As(err, &ee) {
		return err
	}
	return cli.Exit(rotation.ExitCode(err), err)
}

// logger returns the --log-level/--log-format logger behind the redacting
// handler, writing to stderr.
func logger(cmd *cobra.Command) (*slog.Logger, error) {
	lg, err := cli.Logger(cmd, cmd.ErrOrStderr())
	if err != nil {
		return nil, err
	}
	return redact.NewLogger(lg.Handler()), nil
}

// loadConfig loads the config; --config is required for rotation (the
// embedded default has nothing to rotate).
func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	return cli.LoadConfig(cmd)
}

// RotateOptions are the flags of `keywarden rotate`.
type RotateOptions struct {
	Keys    []string
	Run     rotation.RunOptions
	JSON    bool
	Timeout time.Duration
	// Push is where to push each key's state gauges after its run
	// (rotator.push_gateway, --push-gateway, --push-label).
	Push pushgw.Options
}

func rotateCmd() *cobra.Command {
	var o RotateOptions
	var key, pushURL string
	var pushLabels map[string]string
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Run one rotation step sequence for each rotated key (for a CronJob); the exit code tells the outcome",
		Long: `rotate runs once for each key with a rotation section (or only --key): it
resumes a rotation that a killed run left, revokes an old key whose grace period
is over, and starts a new rotation when the key's schedule makes one due (or
with --force): create a key with the issuer, write it PENDING, probe it, promote
it to CURRENT, and, once the grace period is over, revoke the old one. When the
grace period outlives the run, rotate exits 0 and says when the revocation is
due; the next run (run the CronJob more often than the schedule) finishes it,
or --wait waits for it.

Exit codes:
  0   done, or nothing due (also: waiting for the grace period)
  1   other failure (interrupted), or every run succeeded but pushing the
      metrics to --push-gateway failed (a retry is safe: it runs again and
      pushes again)
  2   configuration error
  10  the new key failed its probe; CURRENT is untouched (parked or discarded)
  11  conflict: another rotator holds the key, or the store changed
  12  store error
  13  issuer error (Admin API, command)
  14  the key pool is empty: keywarden pool add KEY < key.txt
  15  the revoke gate's max_wait ended with consumers still holding the old key
      (policy hold): both keys stay valid; the next run checks again
With several keys, the exit code is the first failing key's.

A running rotation renews its lease (rotator.lease, default 45s) in the
background; a killed one's lease runs out within that time and the next run
takes over. --break-lease frees it at once (it logs the holder and its expiry,
and sends a rotation.lease_broken event); a holder that was alive after all
stops at its next renewal with exit 11.

A rotation that ends leaving a key valid at the issuer (outcome rolled_back:
the old key was put back during the grace, and the new one stays valid;
not_revoked or abandoned: the old key was not revoked) lists that key in the
rotation record; ` + "`keywarden status`" + ` shows the list and the rotator daemon (or --push-gateway) exports
keywarden_rotation_keys_left_valid. --revoke-left-valid revokes each listed key
that has an issuer id (or whose value PREVIOUS still holds), unless it is
CURRENT's or PENDING's key or, with a revoke_gate, a consumer still reports it,
and drops it from the list; it exits 0 when the list is empty, 11 when a key
was refused or cannot be revoked by keywarden (no issuer id), 13 when the
issuer failed, 15 when consumers still hold a key. A key with no issuer id must
be revoked by hand; then --forget-left-valid=FINGERPRINT (or =KEY_ID) drops it.
Once ` + fmt.Sprint(rotation.MaxLeftValid) + ` keys are listed, no rotation starts (exit 11) until the list
is shortened.

With --push-gateway (or rotator.push_gateway), rotate pushes each key's rotation
state gauges to a Prometheus Pushgateway after its run, also after a failed one:
the daemon's gauges (revoke due, last success, pool keys and their expiry, key
expiry, keys left valid, gate holders) read from the store and the issuer, and
keywarden_rotation_last_run_timestamp_seconds{key,outcome} in place of the
run counters; one group per key (job keywarden-rotate, rotation=KEY, and each
--push-label), replaced as a whole. --dry-run pushes nothing.

With a revoke_gate, the old key is revoked only once Prometheus has reported no
consumer holding it (keywarden_key_info with its fingerprint) for the
configured number of consecutive checks; until then rotate exits 0 with outcome
gate and lists the holders (--wait keeps checking). --dry-run shows the gate's
answer.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Timeout < 0 {
				return cli.Exit(cli.ExitConfig, fmt.Errorf("rotate: --timeout %v: give a positive duration, or 0 for no limit", o.Timeout))
			}
			if o.Run.ForgetLeftValid != "" && key == "" {
				return cli.Exit(cli.ExitConfig, errors.New("rotate: --forget-left-valid needs --key: it drops one key's entry"))
			}
			if key != "" {
				o.Keys = []string{key}
			}
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if o.Push, err = pushOptions(cmd, c, pushURL, pushLabels); err != nil {
				return err
			}
			lg, err := logger(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if o.Timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, o.Timeout)
				defer cancel()
			}
			return exit(Rotate(ctx, c, o, lg, cmd.OutOrStdout()))
		},
	}
	f := cmd.Flags()
	f.StringVar(&key, "key", "", "rotate only this key (default: every key with a rotation section)")
	f.BoolVar(&o.Run.DryRun, "dry-run", false, "say what would happen; touch nothing")
	f.BoolVar(&o.Run.Wait, "wait", false, "wait out the grace period and revoke, instead of exiting 0 with the time it is due")
	f.BoolVar(&o.Run.Force, "force", false, "start a rotation even if the schedule says it is not due")
	f.BoolVar(&o.Run.Abandon, "abandon", false, "drop a parked rotation (or a stray PENDING version): revoke the new key, discard PENDING; CURRENT is untouched")
	f.BoolVar(&o.Run.RevokeLeftValid, "revoke-left-valid", false, "revoke the keys rotations left valid (keywarden status lists them) and drop them from the list; refuses CURRENT's and PENDING's key and keys with no issuer id; starts no rotation")
	f.StringVar(&o.Run.ForgetLeftValid, "forget-left-valid", "", "drop the key left valid with this fingerprint or issuer id from the list, revoking nothing: for a key you revoked by hand")
	f.BoolVar(&o.Run.BreakLease, "break-lease", false, "free the key's lease first, whoever holds it (logged, with an event), then run as usual: for a holder known dead")
	f.BoolVar(&o.JSON, "json", false, "print one JSON result per key")
	f.DurationVar(&o.Timeout, "timeout", 0, "give up after this long (default: no limit)")
	f.StringVar(&pushURL, "push-gateway", "", "after the runs, push each key's rotation state gauges to this Prometheus Pushgateway (overrides rotator.push_gateway.url; \"off\" for none)")
	f.StringToStringVar(&pushLabels, "push-label", nil, "NAME=VALUE added to each pushed group's grouping key, e.g. namespace=$(POD_NAMESPACE) (repeatable; added to rotator.push_gateway.labels)")
	return cmd
}

// Rotate runs each selected key once and prints its result to w; with
// o.Push it then pushes each key's state gauges (pushgw). It returns the
// first failing key's error, or, when every run succeeded but a push
// failed, that error with exit code cli.ExitFailed.
func Rotate(ctx context.Context, c *config.Config, o RotateOptions, lg *slog.Logger, w io.Writer) error {
	pm := pushMetrics(o)
	r, err := Build(ctx, c, BuildOptions{Keys: o.Keys, Logger: lg, Metrics: pm.metrics})
	if err != nil {
		return err
	}
	defer r.Close()
	var first error
	for _, name := range r.Keys() {
		res, err := r.Run(ctx, name, o.Run)
		if err != nil && first == nil {
			first = err
		}
		printResult(w, res, err, o.JSON)
	}
	if perr := pushState(ctx, r, o, pm, lg); perr != nil && first == nil {
		return cli.Exit(cli.ExitFailed, perr)
	}
	return first
}

func printResult(w io.Writer, res *rotation.Result, err error, asJSON bool) {
	if asJSON {
		out := struct {
			*rotation.Result
			Error    string `json:"error,omitempty"`
			ExitCode int    `json:"exit_code"`
		}{Result: res, ExitCode: rotation.ExitCode(err)}
		if err != nil {
			out.Error = cli.ErrText(err)
		}
		b, _ := json.Marshal(out)
		fmt.Fprintln(w, string(b))
		return
	}
	switch {
	case err != nil:
		fmt.Fprintf(w, "%s: %s (exit %d): %s\n", res.Key, res.Outcome, rotation.ExitCode(err), cli.ErrText(err))
	case len(res.Plan) > 0:
		fmt.Fprintf(w, "%s: dry run, would:\n", res.Key)
		for i, p := range res.Plan {
			fmt.Fprintf(w, "  %d. %s\n", i+1, p)
		}
	default:
		fmt.Fprintf(w, "%s: %s: %s\n", res.Key, res.Outcome, res.Message)
	}
	if res.LeftValid > 0 {
		fmt.Fprintf(w, "%s: keys rotations left valid at the issuer: %d (keywarden status lists them); revoke them: keywarden rotate --key %s --revoke-left-valid\n", res.Key, res.LeftValid, res.Key)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func when(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now).Round(time.Second)
	rel := "in " + d.String()
	switch {
	case d == 0:
		rel = "now"
	case d < 0:
		rel = (-d).String() + " ago"
	}
	return t.UTC().Format(time.RFC3339) + " (" + rel + ")"
}
