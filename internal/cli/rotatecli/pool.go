package rotatecli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/rotation/pool"
)

func poolCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "Manage the pool of Console-created Claude keys that rotation draws from",
		Long: `The Claude Admin API cannot create API keys: create them in the Console
(Settings > API keys), leave them inactive, and add each to the key's pool with
'keywarden pool add KEY < key.txt'. Each rotation takes the next pool key and
activates it. keywarden warns (log, metric keywarden_pool_keys, webhook) when
the pool runs low, and rotate exits 14 when it is empty.`,
	}
	cmd.AddCommand(poolAddCmd(), poolListCmd())
	return cmd
}

func poolAddCmd() *cobra.Command {
	var keyID, store string
	cmd := &cobra.Command{
		Use:   "add [KEY]",
		Short: "Add the Claude key read from stdin (never from argv) to the pool of configured key KEY, or of the pool store --store",
		Long: `add reads one Claude API key from standard input (never from the command line,
where it would land in shell history and process listings) and appends it to
the pool of the configured key KEY (its rotation.issuer.pool_store), or to the
pool kept in the store URL --store (no config needed; with KEY too, --store
replaces KEY's pool_store). Give the key's id (apikey_...) with --key-id when
you know it; otherwise rotation finds it through the Admin API by its
partial_key_hint. A key that is KEY's CURRENT or PREVIOUS is refused (KEY
given), as is one already in the pool (exit 2), unless it waits there
without an id and --key-id is given: then the id is attached to it (what
` + "`keywarden audit`" + ` asks for when a pool key's hint is ambiguous).

  keywarden pool add prod --config keywarden.yaml < new-key.txt
  keywarden pool add --store 'aws:///keywarden/prod-pool?region=eu-west-1' < new-key.txt`,
		Args: poolArgs(&store),
		RunE: func(cmd *cobra.Command, args []string) error {
			var c *config.Config
			name := ""
			if len(args) == 1 {
				var err error
				if c, err = loadConfig(cmd); err != nil {
					return err
				}
				name = args[0]
			}
			if store != "" {
				if err := cli.CheckStoreDir(store); err != nil {
					return cli.Exit(cli.ExitConfig, fmt.Errorf("pool add: --store: %w", err))
				}
			}
			raw, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), providers.MaxPayload+1))
			if err != nil {
				return cli.Exit(cli.ExitFailed, fmt.Errorf("pool add: read stdin: %w", err))
			}
			n, fp, err := PoolAddTo(cmd.Context(), c, name, store, raw, keyID)
			if err != nil {
				return exit(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pool add: %s is in the pool %s (%d keys available)\n", fp, orDash(firstOf(name, redactStore(store))), n)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyID, "key-id", "", "the key's id at the Admin API (apikey_...)")
	cmd.Flags().StringVar(&store, "store", "", "the pool's store URL (any pool, no config needed), instead of KEY's rotation.issuer.pool_store")
	return cmd
}

// poolArgs accepts KEY, or no argument when --store is set.
func poolArgs(store *string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) > 1:
			return cli.Exit(cli.ExitConfig, fmt.Errorf("%s: at most one KEY", cmd.CommandPath()))
		case len(args) == 0 && *store == "":
			return cli.Exit(cli.ExitConfig, fmt.Errorf("%s: give a configured KEY, or the pool's store URL with --store", cmd.CommandPath()))
		}
		return nil
	}
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// redactStore returns a store URL without its query (which may carry
// tokens or paths that do not belong in output).
func redactStore(u string) string {
	base, _, _ := strings.Cut(u, "?")
	return base
}

// PoolAdd adds the key in raw to the pool of configured key name; see
// PoolAddTo.
func PoolAdd(ctx context.Context, c *config.Config, name string, raw []byte, keyID string) (int, string, error) {
	return PoolAddTo(ctx, c, name, "", raw, keyID)
}

// PoolAddTo adds the key in raw (a bare key, or a JSON payload with api_key
// and key_id) to the pool of configured key name (c and name set), or to
// the pool in store URL store (which, when set, replaces name's
// pool_store). It returns the number of keys available and the key's
// fingerprint. With name, a key that is name's CURRENT or PREVIOUS is
// refused.
func PoolAddTo(ctx context.Context, c *config.Config, name, store string, raw []byte, keyID string) (int, string, error) {
	k, pl, closeFn, err := openPool(ctx, c, name, store)
	if err != nil {
		return 0, "", err
	}
	defer closeFn()
	p, err := providers.DecodePayload(raw, "")
	if err != nil {
		return 0, "", cli.Exit(cli.ExitConfig, fmt.Errorf("pool add: the key on stdin: %w", err))
	}
	if keyID != "" {
		p.KeyID = keyID
	}
	v := p.Key.Reveal()
	switch {
	case strings.HasPrefix(v, "sk-ant-admin"):
		return 0, "", cli.Exit(cli.ExitConfig, errors.New("pool add: that is an Admin key (sk-ant-admin...); the pool takes Claude API keys (sk-ant-api03-...)"))
	case !strings.HasPrefix(v, "sk-ant-"):
		return 0, "", cli.Exit(cli.ExitConfig, fmt.Errorf("pool add: %s is not a Claude API key (sk-ant-api03-...)", p.Key.Fingerprint()))
	case p.KeyID != "" && !strings.HasPrefix(p.KeyID, "apikey_"):
		return 0, "", cli.Exit(cli.ExitConfig, fmt.Errorf("pool add: key id %q is not an Admin API key id (apikey_...)", p.KeyID))
	}
	// A key already in use must not come back through the pool.
	if k == nil {
		// --store alone: no configured key to compare with.
	} else if st, secret, err := cli.OpenStager(ctx, k); err == nil {
		for _, stage := range []driver.Stage{driver.Current, driver.Previous} {
			if cur, err := st.Read(ctx, secret, stage); err == nil {
				if cp, err := providers.DecodePayload(cur.Value, k.FieldName()); err == nil && cp.Key.Equal(p.Key) {
					st.Close()
					return 0, "", cli.Exit(cli.ExitConfig, fmt.Errorf("pool add: %s is the %s key of %s; add a new key", p.Key.Fingerprint(), strings.ToLower(string(stage)), name))
				}
			}
		}
		st.Close()
	}
	n, err := pl.Add(ctx, p.Key, p.KeyID)
	if err != nil {
		// By code: a duplicate is bad input (2), a corrupt or unreachable
		// pool a store error (12), a lost race a conflict (11).
		return 0, "", exit(err)
	}
	return n, p.Key.Fingerprint(), nil
}

func poolListCmd() *cobra.Command {
	var asJSON bool
	var store string
	cmd := &cobra.Command{
		Use:   "list [KEY]",
		Short: "List the pool of configured key KEY, or of the pool store --store: fingerprints and ids, never keys",
		Args:  poolArgs(&store),
		RunE: func(cmd *cobra.Command, args []string) error {
			var c *config.Config
			name := ""
			if len(args) == 1 {
				var err error
				if c, err = loadConfig(cmd); err != nil {
					return err
				}
				name = args[0]
			}
			_, pl, closeFn, err := openPool(cmd.Context(), c, name, store)
			if err != nil {
				return exit(err)
			}
			defer closeFn()
			list, err := pl.List(cmd.Context())
			if err != nil {
				return exit(err)
			}
			if asJSON {
				b, _ := json.MarshalIndent(list, "", "  ")
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(w, "FINGERPRINT\tKEY ID\tADDED\tSTATE")
			for _, e := range list {
				state := "available"
				if e.Claimed != "" {
					state = "claimed by rotation " + e.Claimed[:min(8, len(e.Claimed))]
				}
				added := "-"
				if !e.AddedAt.IsZero() {
					added = e.AddedAt.UTC().Format("2006-01-02 15:04")
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", e.Fingerprint, orDash(e.KeyID), added, state)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&store, "store", "", "the pool's store URL (any pool, no config needed), instead of KEY's rotation.issuer.pool_store")
	return cmd
}

// openPool opens the pool of configured key name (c and name set), or the
// pool in store URL store, which when set replaces name's pool_store. k is
// nil without name.
func openPool(ctx context.Context, c *config.Config, name, store string) (*config.Key, *pool.Pool, func(), error) {
	var k *config.Key
	field := "--store"
	if name != "" {
		var err error
		if k, err = c.Key(name); err != nil {
			return nil, nil, nil, cli.Exit(cli.ExitConfig, fmt.Errorf("pool: %w", err))
		}
		if store == "" {
			if k.Rotation == nil || k.Rotation.Issuer.PoolStore == "" {
				return nil, nil, nil, cli.Exit(cli.ExitConfig, fmt.Errorf("pool: key %s has no pool; set keys.%s.rotation.issuer (type anthropic) with a pool_store URL, or give the pool's store with --store", name, name))
			}
			store, field = k.Rotation.Issuer.PoolStore, "keys."+name+".rotation.issuer.pool_store"
		}
	}
	st, secret, err := providers.OpenStager(ctx, store)
	if err != nil {
		return nil, nil, nil, exit(openErr(field, err))
	}
	return k, pool.New(st, secret), func() { st.Close() }, nil
}
