package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/stage"
)

func putCmd() *cobra.Command {
	var keyID, storeURL string
	cmd := &cobra.Command{
		Use:   "put (KEY | --store URL)",
		Short: "Make the key read from stdin the CURRENT version of a configured key or of any store (never from argv)",
		Long: `put reads a key value from standard input (never from the command line, where
it would land in shell history and process listings) and makes it the CURRENT
version of the configured key KEY, or of the secret the store URL given with
--store names (any store keywarden can write: the Admin key's admin_key_store,
a key not in the config). The old value stays as PREVIOUS. Consumers pick it
up on their next refresh. Use it to seed a store or to replace a placeholder;
scheduled replacement is 'keywarden rotate'.

Standard input holds the bare key, or a JSON object with the key in its field
(api_key, or the store's field=) and an optional key_id. A payload that cannot
be a key (empty, JSON null, an array, a quoted string, white space or control
characters inside the key) is refused before anything is written. Give the
key's upstream id with --key-id (e.g. apikey_01...): rotation needs it to
revoke the key later.

Exit codes: 0 written, 1 the store failed (or a rotation is in progress on the
secret), 2 bad flags, configuration or input.

  keywarden put prod --config keywarden.yaml --key-id apikey_01abc < new-key.txt
  keywarden put --store 'awssm://anthropic/admin?region=us-east-1' < admin-key.txt`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rawURL, label, field, err := putTarget(cmd, args, storeURL)
			if err != nil {
				return err
			}
			if err := providers.CheckKeyID(keyID); err != nil {
				return Exit(ExitConfig, fmt.Errorf("put: --key-id: %w", err))
			}
			raw, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), providers.MaxPayload+1))
			if err != nil {
				return Exit(ExitFailed, fmt.Errorf("put: read stdin: %w", err))
			}
			p, err := providers.DecodePayload(raw, field)
			if err != nil {
				return Exit(ExitConfig, fmt.Errorf("put: the key on stdin: %w", err))
			}
			if keyID != "" {
				p.KeyID = keyID
			}
			st, name, err := providers.OpenStager(cmd.Context(), rawURL)
			if err != nil {
				return Exit(exitFor(err), fmt.Errorf("put: %s: %w", label, err))
			}
			defer st.Close()
			if storeURL != "" {
				label = "secret " + name
			}
			v, err := Put(cmd.Context(), st, name, field, p)
			if err != nil {
				return Exit(ExitFailed, fmt.Errorf("put: %s: %w", label, err))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "put: %s is now version %s (%s)\n", providers.RedactKeys(label), v, p.Key.Fingerprint())
			return nil
		},
	}
	cmd.Flags().StringVar(&keyID, "key-id", "", "the upstream id of the key (e.g. apikey_01...), stored with it so that rotation can revoke it")
	cmd.Flags().StringVar(&storeURL, "store", "", "the store URL of the secret to write, instead of a configured KEY (e.g. the admin_key_store URL)")
	return cmd
}

// putTarget returns the store URL put writes to, a label for messages, and
// the payload field: from --store, or from the configured key named in args.
func putTarget(cmd *cobra.Command, args []string, storeURL string) (rawURL, label, field string, err error) {
	var set providers.Options
	switch {
	case storeURL != "" && len(args) > 0:
		return "", "", "", Exit(ExitConfig, errors.New("put: give a configured KEY or --store URL, not both"))
	case storeURL != "":
		rawURL, label = storeURL, "--store"
		if err := CheckStoreDir(storeURL); err != nil {
			return "", "", "", Exit(ExitConfig, fmt.Errorf("put: --store: %w", err))
		}
	case len(args) == 1:
		c, err := LoadConfig(cmd)
		if err != nil {
			return "", "", "", err
		}
		k, err := c.Key(args[0])
		if err != nil {
			return "", "", "", Exit(ExitConfig, err)
		}
		rawURL, label, set.Field = k.Store, k.Name, k.Field
	default:
		return "", "", "", Exit(ExitConfig, errors.New("put: name a configured KEY, or give --store URL"))
	}
	o, err := providers.ResolveOptions(rawURL, set)
	if err != nil {
		return "", "", "", Exit(ExitConfig, fmt.Errorf("put: %s: %w", label, err))
	}
	return rawURL, label, o.Field, nil
}

// Put makes p the CURRENT version of secret name (see stage.Put), stored
// as the bare key, or as a JSON object with the key in field when p carries
// a key id. It returns the new version's id.
func Put(ctx context.Context, st driver.Stager, name, field string, p providers.Payload) (string, error) {
	value := []byte(p.Key.Reveal())
	if p.KeyID != "" {
		value = providers.EncodePayloadField(p, field)
	}
	v, err := stage.Put(ctx, st, name, value)
	if err != nil {
		if codes.Is(err, codes.FailedPrecondition) {
			return "", fmt.Errorf("%s has a rotation in progress (a PENDING version): let it finish with 'keywarden rotate', or undo it with 'keywarden rotate --abandon': %w", name, err)
		}
		return "", err
	}
	return v.ID, nil
}

// exitFor returns the exit code for a failure to open or read a store:
// ExitConfig for bad input (a malformed URL or parameter, a payload that is
// no key, a read-only store), ExitFailed for everything else.
func exitFor(err error) int {
	switch codes.Of(err) {
	case codes.InvalidArgument, codes.Unimplemented:
		return ExitConfig
	}
	return ExitFailed
}

// CheckStoreDir refuses a file store URL typed by hand (put --store, pool
// add --store) whose directory does not exist: the file driver would
// create the whole tree, and a typo in the path would silently start a new
// store instead of failing. (Configured stores, and a new file in an
// existing directory, are written as before.)
func CheckStoreDir(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "file" {
		return nil // not a file store; OpenStager reports a bad URL
	}
	path, err := file.ParsePath(u)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("the directory %s does not exist; create it first (a --store URL never creates directories)", dir)
	}
	return nil
}
