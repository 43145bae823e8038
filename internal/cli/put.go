package cli

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

func putCmd() *cobra.Command {
	var keyID string
	cmd := &cobra.Command{
		Use:   "put KEY",
		Short: "Make the key read from stdin the CURRENT version of a configured key (never from argv)",
		Long: `put reads a key value from standard input (never from the command line, where
it would land in shell history and process listings) and makes it the CURRENT
version of the configured key KEY, keeping the old one as PREVIOUS. Consumers
pick it up on their next refresh. Use it to seed a store or to replace a
placeholder; scheduled replacement is 'keywarden rotate'.

  keywarden put prod --config keywarden.yaml < new-key.txt`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := LoadConfig(cmd)
			if err != nil {
				return err
			}
			k, err := c.Key(args[0])
			if err != nil {
				return Exit(ExitConfig, err)
			}
			raw, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), providers.MaxPayload+1))
			if err != nil {
				return Exit(ExitFailed, fmt.Errorf("put: read stdin: %w", err))
			}
			p, err := providers.DecodePayload(raw, k.Field)
			if err != nil {
				return Exit(ExitConfig, fmt.Errorf("put: the key on stdin: %w", err))
			}
			if keyID != "" {
				p.KeyID = keyID
			}
			st, name, err := OpenStager(cmd.Context(), k)
			if err != nil {
				return Exit(ExitConfig, err)
			}
			defer st.Close()
			v, err := Put(cmd, st, name, p)
			if err != nil {
				return Exit(ExitFailed, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "put: %s is now version %s (%s)\n", k.Name, v, p.Key.Fingerprint())
			return nil
		},
	}
	cmd.Flags().StringVar(&keyID, "key-id", "", "the upstream id of the key (e.g. apikey_01...), stored with it for revocation")
	return cmd
}

// Put writes p as the new CURRENT of secret name: PENDING, then Promote
// over the present CURRENT. It returns the new version id.
func Put(cmd *cobra.Command, st driver.Stager, name string, p providers.Payload) (string, error) {
	ctx := cmd.Context()
	cur := ""
	v, err := st.Read(ctx, name, driver.Current)
	switch {
	case err == nil:
		cur = v.ID
	case codes.Is(err, codes.NotFound):
	default:
		return "", fmt.Errorf("put: read %s: %w", name, err)
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := "put-" + hex.EncodeToString(b)
	value := []byte(p.Key.Reveal())
	if p.KeyID != "" {
		value = providers.EncodePayload(p)
	}
	pv, err := st.PutPending(ctx, name, tok, value)
	if err != nil {
		if codes.Is(err, codes.FailedPrecondition) {
			return "", fmt.Errorf("put: %s has a rotation in progress (a PENDING version); let it finish or discard it first: %w", name, err)
		}
		return "", fmt.Errorf("put: write %s: %w", name, err)
	}
	if err := st.Promote(ctx, name, pv.ID, cur); err != nil {
		_ = st.DiscardPending(ctx, name, pv.ID)
		return "", fmt.Errorf("put: promote %s: %w", name, err)
	}
	return pv.ID, nil
}
