package rotatecli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/rotation"
)

func statusCmd() *cobra.Command {
	var asJSON bool
	var key string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each key's versions (fingerprints, never keys) and, for rotated keys, rotation state, next run and due revocation",
		Long: `status reads each configured key's store (or only --key's) and prints the
CURRENT, PENDING and PREVIOUS version ids with fingerprints, key ids and ages.
For a key with a rotation section it also reads the rotation record and prints
the rotation's phase and lease, the last rotation and its outcome, the next
scheduled run, a revocation that is due, the size of the key pool, and the
keys that rotations left valid at the issuer (rolled back, or ended without
revoking the old key) until ` + "`rotate --revoke-left-valid`" + ` revokes them. It
changes nothing. It exits 0, or 1 when a store could not be read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			var keys []string
			if key != "" {
				keys = []string{key}
			}
			return exit(Status(cmd.Context(), c, keys, asJSON, cmd.OutOrStdout()))
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	cmd.Flags().StringVar(&key, "key", "", "only this key")
	return cmd
}

// Status prints the status of the keys of c (or keys) to w: for a key with
// a rotation section, its versions and rotation state; for one without, its
// versions. Without keys, every configured key.
func Status(ctx context.Context, c *config.Config, keys []string, asJSON bool, w io.Writer) error {
	if len(keys) == 0 {
		keys = c.Names()
	}
	var rotated, plain []string
	for _, name := range keys {
		k, err := c.Key(name)
		if err != nil {
			return cli.Exit(cli.ExitConfig, fmt.Errorf("status: %w", err))
		}
		if k.Rotation != nil {
			rotated = append(rotated, name)
		} else {
			plain = append(plain, name)
		}
	}
	byName := map[string]*rotation.KeyStatus{}
	if len(rotated) > 0 {
		r, err := Build(ctx, c, BuildOptions{Keys: rotated})
		if err != nil {
			return err
		}
		defer r.Close()
		for _, name := range rotated {
			st, err := r.Rotator.Status(ctx, name)
			if st == nil {
				return err
			}
			if err != nil {
				st.Errors = append(st.Errors, cli.ErrText(err))
			}
			byName[name] = st
		}
	}
	now := time.Now()
	for _, name := range plain {
		k, _ := c.Key(name)
		st := &rotation.KeyStatus{Key: name, PoolKeys: -1}
		store, secret, err := providers.OpenStager(ctx, k.Store)
		switch {
		case errors.Is(err, providers.ErrKeyless):
			keylessStatus(ctx, k, st)
		case err != nil:
			st.Errors = append(st.Errors, fmt.Sprintf("keys.%s.store: %v", name, err))
		default:
			st.Current, st.Pending, st.Previous, st.Errors = rotation.ReadStages(ctx, store, secret, k.FieldName(), now)
			store.Close()
		}
		byName[name] = st
	}
	var all []*rotation.KeyStatus
	failed := 0
	for _, name := range keys {
		st := byName[name]
		if len(st.Errors) > 0 {
			failed++
		}
		all = append(all, st)
	}
	if asJSON {
		b, _ := json.MarshalIndent(all, "", "  ")
		fmt.Fprintln(w, string(b))
	} else {
		for i, st := range all {
			if i > 0 {
				fmt.Fprintln(w)
			}
			printStatus(w, st, now)
		}
	}
	if failed > 0 {
		return cli.Exit(cli.ExitFailed, fmt.Errorf("status: %d of %d keys could not be read completely", failed, len(all)))
	}
	return nil
}

// keylessStatus fills st for a keyless key (a short-lived token, wif://):
// one exchange, then the token's fingerprint, expiry and next refresh.
func keylessStatus(ctx context.Context, k *config.Key, st *rotation.KeyStatus) {
	st.Keyless = true
	src, err := cli.OpenSource(ctx, k, nil)
	if err != nil {
		st.Errors = append(st.Errors, fmt.Sprintf("keys.%s.store: %v", k.Name, err))
		return
	}
	defer src.Close()
	if cur := src.Current(); cur != nil {
		st.Current = &rotation.VersionStatus{Version: cur.VersionID, Fingerprint: cur.Fingerprint}
		st.CurrentExpires = cur.Expires
	}
	st.NextRefresh = src.NextRefresh()
}

func printStatus(w io.Writer, st *rotation.KeyStatus, now time.Time) {
	if st.Keyless {
		fmt.Fprintf(w, "%s (keyless: a short-lived token, nothing to rotate)\n", st.Key)
		if c := st.Current; c != nil {
			fmt.Fprintf(w, "  %-13s %s\n", "token", c.Fingerprint)
		}
		if !st.CurrentExpires.IsZero() {
			fmt.Fprintf(w, "  %-13s %s\n", "expires", when(st.CurrentExpires, now))
		}
		if !st.NextRefresh.IsZero() {
			fmt.Fprintf(w, "  %-13s %s\n", "next refresh", when(st.NextRefresh, now))
		}
		for _, e := range st.Errors {
			fmt.Fprintf(w, "  %-13s %s\n", "error", strings.TrimSpace(e))
		}
		return
	}
	if st.Issuer == "" {
		fmt.Fprintf(w, "%s (no rotation section: versions only)\n", st.Key)
	} else {
		fmt.Fprintf(w, "%s (issuer %s, phase %s)\n", st.Key, st.Issuer, st.Phase)
	}
	ver := func(label string, v *rotation.VersionStatus) {
		if v == nil {
			fmt.Fprintf(w, "  %-13s -\n", label)
			return
		}
		age := ""
		if v.Age > 0 {
			age = ", age " + v.Age.String()
		}
		fmt.Fprintf(w, "  %-13s version %s  %s  key id %s%s\n", label, v.Version, v.Fingerprint, orDash(v.KeyID), age)
	}
	ver("current", st.Current)
	if !st.CurrentExpires.IsZero() {
		fmt.Fprintf(w, "  %-13s %s\n", "expires", when(st.CurrentExpires, now))
	}
	ver("pending", st.Pending)
	ver("previous", st.Previous)
	if st.Issuer == "" {
		for _, e := range st.Errors {
			fmt.Fprintf(w, "  %-13s %s\n", "error", strings.TrimSpace(e))
		}
		return
	}
	if st.Holder != "" {
		fmt.Fprintf(w, "  %-13s %s until %s\n", "lease", st.Holder, when(st.LeaseUntil, now))
	}
	if st.Reason != "" {
		fmt.Fprintf(w, "  %-13s %s\n", "reason", st.Reason)
	}
	last := "-"
	if !st.LastAttempt.IsZero() {
		last = fmt.Sprintf("%s, outcome %s", when(st.LastAttempt, now), orDash(st.LastOutcome))
		if st.LastReason != "" {
			last += ": " + st.LastReason
		}
	}
	fmt.Fprintf(w, "  %-13s %s\n", "last attempt", last)
	fmt.Fprintf(w, "  %-13s %s (%d rotations)\n", "last rotated", when(st.LastRotated, now), st.Rotations)
	next := when(st.NextRun, now)
	if st.NextRun.IsZero() && st.Phase == rotation.PhaseIdle {
		next = "- (no schedule: every `keywarden rotate` rotates)"
	}
	fmt.Fprintf(w, "  %-13s %s\n", "next run", next)
	if !st.RevokeDue.IsZero() {
		due := when(st.RevokeDue, now)
		if st.RevokeOverdue {
			due += ": due now, the next run revokes it"
		}
		fmt.Fprintf(w, "  %-13s version %s (key id %s) at %s\n", "revoke", orDash(st.OldVersion), orDash(st.OldKeyID), due)
	}
	if g := st.Gate; g != nil {
		switch {
		case g.Error != "":
			fmt.Fprintf(w, "  %-13s %s: cannot tell who holds the old key: %s\n", "revoke gate", g.Consumers, g.Error)
		case len(g.Holders) == 0:
			fmt.Fprintf(w, "  %-13s %s: no consumer reports the old key (%d of %d clear checks)\n", "revoke gate", g.Consumers, g.Zeros, g.Checks)
		default:
			fmt.Fprintf(w, "  %-13s %s: %d consumers still hold the old key:\n", "revoke gate", g.Consumers, len(g.Holders))
			for _, h := range g.Holders {
				fmt.Fprintf(w, "  %-13s   %s\n", "", h)
			}
		}
		fmt.Fprintf(w, "  %-13s max_wait ends %s, then policy %s\n", "", when(g.Deadline, now), g.Policy)
	}
	if st.PoolKeys >= 0 {
		fmt.Fprintf(w, "  %-13s %d keys available\n", "pool", st.PoolKeys)
		for _, k := range st.Pool {
			switch {
			case k.Unusable != "":
				fmt.Fprintf(w, "  %-13s   %s %s: unusable, %s\n", "", k.Fingerprint, orDash(k.KeyID), k.Unusable)
			case k.ExpiryKnown && !k.ExpiresAt.IsZero():
				fmt.Fprintf(w, "  %-13s   %s %s: expires %s\n", "", k.Fingerprint, orDash(k.KeyID), when(k.ExpiresAt, now))
			}
		}
	}
	printLeftValid(w, st, now)
	for _, e := range st.Errors {
		fmt.Fprintf(w, "  %-13s %s\n", "error", strings.TrimSpace(e))
	}
}

// printLeftValid lists the keys rotations left valid, and how to clear
// each.
func printLeftValid(w io.Writer, st *rotation.KeyStatus, now time.Time) {
	if len(st.LeftValid) == 0 {
		return
	}
	fmt.Fprintf(w, "  %-13s %d keys rotations left VALID at the issuer; revoke them with `keywarden rotate --key %s --revoke-left-valid`:\n", "left valid", len(st.LeftValid), st.Key)
	for _, e := range st.LeftValid {
		fmt.Fprintf(w, "  %-13s   %s  key id %s  version %s: %s %s\n", "", orDash(e.Fingerprint), orDash(e.KeyID), orDash(e.Version), e.Outcome, when(e.At, now))
		if e.KeyID == "" {
			fmt.Fprintf(w, "  %-13s     no issuer id: keywarden can revoke it only while PREVIOUS holds it; else revoke it by hand, then `keywarden rotate --key %s --forget-left-valid=%s`\n", "", st.Key, e.Fingerprint)
		}
	}
}
