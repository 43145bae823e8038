package cli

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/driver"
)

// ConfigCheck is a further check of a loaded config that `check` runs after
// reading the keys, for what other commands will read at their start (the
// sidecar's client tokens); its error is a configuration error (exit 2). It
// is how a package that imports cli adds to check without a cycle.
type ConfigCheck func(context.Context, *config.Config) error

func checkCmd(checks []ConfigCheck) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Validate the config and read every key once; prints fingerprints, never keys",
		Long: `check loads the config, reads every key once from its store, and prints its
name, store, version id and fingerprint. It never prints a key. For a keyless
key (wif://, Workload Identity Federation) it performs one token exchange and
prints the token's fingerprint and expiry. A stored value
that cannot be a key (empty, JSON null, an array, a quoted string, white space
or control characters inside the key) fails its key. It exits 0 when every key
was read, 2 on a configuration error or when a key failed for bad input (a
malformed store URL or parameter, a stored value that is no key), and 1 when
a store failed otherwise. It also reads what the sidecar reads at its start
(client_token_file and each client's token_file or token_env) and fails,
exit 2, on a token the sidecar would refuse (missing, too short, a file
readable by others, two clients sharing one), never printing a token. And it
sets up the rotation of each rotated key as rotate does, failing, exit 2, on a
setting rotate would refuse (on_probe_failure, rotate_before_expiry, the
revoke gate, the issuer's settings).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timeout <= 0 {
				return Exit(ExitConfig, fmt.Errorf("check: --timeout %v: want a positive duration such as 30s", timeout))
			}
			c, err := LoadConfig(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			err = Check(ctx, c, cmd)
			for _, chk := range checks {
				if cerr := chk(ctx, c); cerr != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "FAILED: %s\n", ErrText(cerr))
					if ee := (*ExitError)(nil); !errors.As(err, &ee) || ee.Code != ExitConfig {
						err = Exit(ExitConfig, fmt.Errorf("check: %w", cerr))
					}
				}
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for all stores")
	return cmd
}

// Check reads every key of c once and prints a table of name, store,
// version, fingerprint and key id to cmd's output.
func Check(ctx context.Context, c *config.Config, cmd *cobra.Command) error {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KEY\tSTORE\tVERSION\tFINGERPRINT\tKEY ID\tPREVIOUS\tSTATUS")
	failed, badInput := 0, 0
	for _, name := range c.Names() {
		k := c.Keys[name]
		cur, prev, err := ReadOnce(ctx, k)
		if err != nil {
			failed++
			if exitFor(err) == ExitConfig {
				badInput++
			}
			fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t-\tFAILED: %s\n", name, providers.RedactStore(k.Store), ErrText(err))
			continue
		}
		p := "-"
		if prev != nil {
			p = prev.VersionID + " " + prev.Fingerprint
		}
		status := "ok"
		if !cur.Expires.IsZero() {
			// A federation token: check made an exchange.
			status = fmt.Sprintf("ok: exchanged a short-lived token, expires %s (in %v)",
				cur.Expires.UTC().Format(time.RFC3339), time.Until(cur.Expires).Round(time.Second))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, providers.RedactStore(k.Store), cur.VersionID, cur.Fingerprint, orDash(cur.KeyID), p, status)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	switch {
	case badInput > 0:
		return Exit(ExitConfig, fmt.Errorf("check: %d of %d keys could not be read, %d of them for bad input (a store URL or a stored value)", failed, len(c.Keys), badInput))
	case failed > 0:
		return Exit(ExitFailed, fmt.Errorf("check: %d of %d keys could not be read", failed, len(c.Keys)))
	}
	return nil
}

// ReadOnce opens the key's store, reads CURRENT (and PREVIOUS when there is
// one) once, and closes it.
func ReadOnce(ctx context.Context, k *config.Key) (cur, prev *providers.Key, err error) {
	src, err := OpenSource(ctx, k, nil)
	if err != nil {
		return nil, nil, err
	}
	defer src.Close()
	return src.Current(), src.Previous(), nil
}

// OpenSource opens a Source for a configured key, with the settings the
// config sets; providers fills the rest from the store URL's parameters and
// its defaults (providers.ResolveOptions). o may be nil; its Logger is kept.
func OpenSource(ctx context.Context, k *config.Key, o *providers.Options) (*providers.Source, error) {
	opts := k.SourceOptions()
	if o != nil {
		opts.Logger = o.Logger
	}
	src, err := providers.Open(ctx, k.Store, &opts)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", k.Name, err)
	}
	return src, nil
}

// OpenStager opens a configured key's store for rotation.
func OpenStager(ctx context.Context, k *config.Key) (driver.Stager, string, error) {
	st, name, err := providers.OpenStager(ctx, k.Store)
	if err != nil {
		return nil, "", fmt.Errorf("key %s: %w", k.Name, err)
	}
	return st, name, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
