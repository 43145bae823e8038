package rotatecli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/anthropic"
)

// ExitAuditFindings is the exit code of `keywarden audit` when it found
// keys at or above --fail-on.
const ExitAuditFindings = 16

// AuditOptions are the flags of `keywarden audit`.
type AuditOptions struct {
	Policy anthropic.AuditPolicy
	// FailOn is the lowest severity that makes the audit exit
	// ExitAuditFindings: warning (default), critical or none.
	FailOn string
	JSON   bool
	// All lists managed keys too, not only findings.
	All bool
}

func auditCmd() *cobra.Command {
	var o AuditOptions
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List every API key of the organization (Admin API) and class it against the config: managed, unmanaged but active, expiring, too old, unusable pool keys, ambiguous hints",
		Long: `audit lists every API key of the organization through the Admin API of each
anthropic issuer in the config (all pages), and classes each against the keys
keywarden manages (CURRENT, PREVIOUS, PENDING and pool keys of every rotated
key): unmanaged_active (critical: an active key nobody rotates), expiring
(within --expiring-within), too_old (active, older than --max-age),
pool_unusable (a pool key archived, expired or active), ambiguous_hint (a
partial_key_hint that revocation by hint cannot tell apart). It changes
nothing. Exit 0, or 16 when a finding is at or above --fail-on (for a CronJob
whose failure alerts), 2 on a configuration error, 12/13 when a store or the
Admin API cannot be read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Policy.ExpiringWithin < 0 || o.Policy.MaxAge < 0 {
				return cli.Exit(cli.ExitConfig, fmt.Errorf("audit: --expiring-within %v, --max-age %v: durations must not be negative (0 turns --max-age off)", o.Policy.ExpiringWithin, o.Policy.MaxAge))
			}
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			return exit(Audit(cmd.Context(), c, o, cmd.OutOrStdout()))
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Policy.ExpiringWithin, "expiring-within", 7*24*time.Hour, "flag keys expiring within this")
	f.DurationVar(&o.Policy.MaxAge, "max-age", 0, "flag active keys older than this (0: no limit)")
	f.StringVar(&o.FailOn, "fail-on", anthropic.SeverityWarning, "exit 16 on findings of this severity or worse: warning, critical or none")
	f.BoolVar(&o.JSON, "json", false, "print the findings as a JSON array")
	f.BoolVar(&o.All, "all", false, "list managed keys in a sound state too")
	return cmd
}

var severityRank = map[string]int{anthropic.SeverityInfo: 0, anthropic.SeverityWarning: 1, anthropic.SeverityCritical: 2, "none": 3}

// Audit runs the audit of c's anthropic issuers and prints it to w.
func Audit(ctx context.Context, c *config.Config, o AuditOptions, w io.Writer) error {
	threshold, ok := severityRank[o.FailOn]
	if !ok || o.FailOn == anthropic.SeverityInfo {
		return cli.Exit(cli.ExitConfig, fmt.Errorf("audit: --fail-on %q: want warning, critical or none", o.FailOn))
	}
	r, err := Build(ctx, c, BuildOptions{})
	if err != nil {
		return err
	}
	defer r.Close()
	// One listing per Admin key (and API), audited against the keys that
	// use it.
	type org struct {
		iss     *anthropic.Issuer
		managed []anthropic.Managed
	}
	orgs := map[string]*org{}
	var order []string
	for _, name := range r.Keys() {
		iss, ok := r.Key(name).Issuer.(*anthropic.Issuer)
		if !ok {
			continue
		}
		rot := c.Keys[name].Rotation
		id := rot.Issuer.AdminKeyStore + " " + rot.APIBaseURL()
		if orgs[id] == nil {
			orgs[id] = &org{iss: iss}
			order = append(order, id)
		}
		m, err := managedKeys(ctx, r, name)
		if err != nil {
			return err
		}
		orgs[id].managed = append(orgs[id].managed, m...)
	}
	if len(order) == 0 {
		return cli.Exit(cli.ExitConfig, fmt.Errorf("audit: no key has an anthropic issuer; nothing to audit"))
	}
	var all []anthropic.Finding
	for _, id := range order {
		keys, err := orgs[id].iss.ListKeys(ctx)
		if err != nil {
			return err
		}
		all = append(all, anthropic.Audit(keys, orgs[id].managed, time.Now(), o.Policy)...)
	}
	shown := all
	if !o.All {
		shown = slices.DeleteFunc(slices.Clone(all), func(f anthropic.Finding) bool { return f.Class == anthropic.ClassManaged })
	}
	worst := 0
	for _, f := range all {
		worst = max(worst, severityRank[f.Severity])
	}
	if o.JSON {
		if shown == nil {
			shown = []anthropic.Finding{}
		}
		b, _ := json.MarshalIndent(shown, "", "  ")
		fmt.Fprintln(w, string(b))
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY ID\tHINT\tSTATUS\tCLASS\tSEVERITY\tROLE\tDETAIL")
		for _, f := range shown {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.ID, f.Hint, f.Status, f.Class, f.Severity, orDash(f.Role), f.Detail)
		}
		tw.Flush()
	}
	if worst >= threshold && len(all) > 0 {
		n := 0
		for _, f := range all {
			if severityRank[f.Severity] >= threshold {
				n++
			}
		}
		return cli.Exit(ExitAuditFindings, fmt.Errorf("audit: %d findings at or above %s", n, o.FailOn))
	}
	return nil
}

// managedKeys lists the keys of a rotated key: its stages (by id, or by
// value for hint matching) and the keys waiting in its pool (likewise).
func managedKeys(ctx context.Context, r *Rotator, name string) ([]anthropic.Managed, error) {
	st, err := r.Rotator.Status(ctx, name)
	if err != nil {
		return nil, err
	}
	k := r.Key(name)
	var out []anthropic.Managed
	for _, s := range []struct {
		stage driver.Stage
		vs    string
	}{{driver.Current, "CURRENT"}, {driver.Previous, "PREVIOUS"}, {driver.Pending, "PENDING"}} {
		var v *driver.Version
		var rerr error
		if s.stage == driver.Pending {
			v, rerr = k.Store.ReadPending(ctx, k.Secret)
		} else {
			v, rerr = k.Store.Read(ctx, k.Secret, s.stage)
		}
		if rerr != nil {
			continue // a missing stage; a failing store showed in Status's errors
		}
		p, err := providers.DecodePayload(v.Value, k.Field)
		if err != nil {
			continue
		}
		m := anthropic.Managed{Role: name + " " + s.vs, KeyID: p.KeyID, Key: p.Key}
		if m.KeyID == "" {
			m.KeyID = stageKeyID(st, s.vs)
		}
		out = append(out, m)
	}
	if pl := r.Pools[name]; pl != nil {
		es, err := pl.Waiting(ctx)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			// By id, or by value for hint matching (a key added without
			// --key-id).
			out = append(out, anthropic.Managed{Role: name + " pool", KeyID: e.KeyID, Key: e.Secret(), Pool: true})
		}
	}
	return out, nil
}

// stageKeyID returns the key id status knows for a stage (attached with
// `keywarden key-id`), "" when none.
func stageKeyID(st *rotation.KeyStatus, stage string) string {
	var v *rotation.VersionStatus
	switch stage {
	case "CURRENT":
		v = st.Current
	case "PREVIOUS":
		v = st.Previous
	case "PENDING":
		v = st.Pending
	}
	if v == nil {
		return ""
	}
	return v.KeyID
}
