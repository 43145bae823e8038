package rotatecli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/providers/driver"
)

func keyIDCmd() *cobra.Command {
	var stage string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "key-id KEY ID",
		Short: "Attach the issuer's key id (apikey_...) to a stored version of KEY: CURRENT, PREVIOUS or PENDING",
		Long: `key-id records ID as the issuer's id of the key stored at --stage (current,
previous, or pending: a claimed pool key once a rotation stored it) of the
configured key KEY. Use it when a key was put without --key-id and the
Admin API's partial_key_hint cannot tell it from another key (rotate then
exits 13 naming the candidates). The id goes into the key's rotation record
in the store (no stored version changes); a rotation under way that names the
key takes it at once. The issuer checks the id first (for anthropic: the key
exists and its partial_key_hint matches the stored key).

  keywarden key-id prod apikey_01AbC... --stage previous --config keywarden.yaml`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			lg, err := logger(cmd)
			if err != nil {
				return err
			}
			return exit(KeyID(cmd.Context(), c, args[0], stage, args[1], lg, asJSON, cmd.OutOrStdout()))
		},
	}
	cmd.Flags().StringVar(&stage, "stage", "current", "the stored version: current, previous or pending")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// KeyID attaches issuer key id to the version of configured key name at
// stage ("current", "previous", "pending") and prints what it did to w.
func KeyID(ctx context.Context, c *config.Config, name, stage, id string, lg *slog.Logger, asJSON bool, w io.Writer) error {
	var st driver.Stage
	switch strings.ToLower(stage) {
	case "current":
		st = driver.Current
	case "previous":
		st = driver.Previous
	case "pending":
		st = driver.Pending
	default:
		return cli.Exit(cli.ExitConfig, fmt.Errorf("key-id: --stage %q: want current, previous or pending", stage))
	}
	r, err := Build(ctx, c, BuildOptions{Keys: []string{name}, Logger: lg})
	if err != nil {
		return err
	}
	defer r.Close()
	res, err := r.SetKeyID(ctx, name, st, id)
	if err != nil {
		return err
	}
	if asJSON {
		b, _ := json.Marshal(res)
		fmt.Fprintln(w, string(b))
		return nil
	}
	fmt.Fprintf(w, "%s: %s version %s (%s) has key id %s", res.Key, strings.ToLower(string(res.Stage)), res.Version, res.Fingerprint, res.KeyID)
	if res.Replaced != "" && res.Replaced != res.KeyID {
		fmt.Fprintf(w, " (was %s)", res.Replaced)
	}
	fmt.Fprintln(w)
	return nil
}
