package rotation

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/keywarden/keywarden/providers/stage"
)

// plan describes what a run would do from the current record, reading the
// store and nothing else: no record is written, no issuer or probe called.
func (ru *run) plan(ctx context.Context) (*Result, error) {
	k, s := ru.k, ru.s
	res := ru.res
	res.Outcome = "dry_run"
	add := func(format string, args ...any) { res.Plan = append(res.Plan, fmt.Sprintf(format, args...)) }
	if ru.o.BreakLease && s.Holder != "" {
		add("break the lease of %s (until %s, phase %s): logged, with a %s event", s.Holder, s.LeaseUntil.UTC().Format(time.RFC3339), s.Phase, EventLeaseBroken)
	} else if (s.Phase.holdsLease() || s.Phase == PhaseParked) && ru.leaseHeld() {
		add("stop: another rotator (%s) holds the key until %s, in phase %s (exit %d); --break-lease frees it", s.Holder, s.LeaseUntil.UTC().Format(time.RFC3339), s.Phase, ExitConflict)
		res.Message = strings.Join(res.Plan, "; ")
		return res, nil
	}
	cur, err := ru.currentVersion(ctx)
	if err != nil {
		return res, err
	}
	curDesc := "no CURRENT version"
	if cur != nil {
		p, fp := fingerprintOf(cur, k.Field)
		curDesc = fmt.Sprintf("CURRENT version %s (%s, key id %s)", cur.ID, fp, orNone(p.KeyID))
	}
	probe := "skip the probe (none configured)"
	if k.Probe != nil {
		r := k.Retry.withDefaults()
		probe = fmt.Sprintf("probe it with the %s probe (up to %d attempts); on failure %s it", k.Probe.Type(), r.Attempts, orDefault(string(k.OnProbeFailure), string(Park)))
	}
	create := func() {
		pool := ""
		if n, keys, ok, err := ru.countPool(ctx); ok && err == nil {
			unusable := ""
			if skip := len(keys) - n; skip > 0 {
				unusable = fmt.Sprintf("; %d unusable, which a draw skips and drops", skip)
			}
			pool = fmt.Sprintf(" (pool: %d usable keys left%s)", n, unusable)
			if n == 0 {
				add("stop: the issuer's pool has no usable key%s (exit %d)", unusable, ExitPoolEmpty)
				return
			}
		} else if ok {
			pool = fmt.Sprintf(" (pool unreadable: %v)", err)
		}
		add("create a new key with the %s issuer%s and write it as PENDING", k.Issuer.Type(), pool)
		if _, ok := k.Issuer.(Activator); ok {
			add("activate it at the issuer")
		}
		add("%s", probe)
		add("promote it over %s, which becomes PREVIOUS", curDesc)
		add("after a grace of %v, revoke the old key with the %s issuer", k.Grace, k.Issuer.Type())
	}
	if ru.o.Abandon {
		return ru.planAbandon(ctx)
	}
	switch s.Phase {
	case PhaseIdle:
		pv, err := ru.pendingVersion(ctx)
		if err != nil {
			return res, err
		}
		switch {
		case pv != nil && stage.IsOneShot(pv.Token):
			add("discard PENDING version %s, left by an interrupted put or pool write (its writer died before promoting it)", pv.ID)
		case pv != nil:
			add("stop: the store holds a PENDING version %s that no recorded rotation wrote (exit %d); --abandon discards it", pv.ID, ExitConflict)
		}
		if pv != nil && !stage.IsOneShot(pv.Token) {
			break
		}
		if !ru.o.Force {
			due, next, err := ru.due(ctx)
			if err != nil {
				return res, err
			}
			if !due {
				add("nothing: the next rotation is due at %s", next.UTC().Format(time.RFC3339))
				res.NextDue = next
				break
			}
		}
		create()
	case PhaseCreating:
		add("resume the rotation started at %s (token %s…)", s.StartedAt.UTC().Format(time.RFC3339), short(s.Token))
		add("find its PENDING key, or create it with the %s issuer (idempotent on the token)", k.Issuer.Type())
		add("%s", probe)
		add("promote it over %s; revoke the old key after a grace of %v", curDesc, k.Grace)
	case PhaseProbing, PhaseParked:
		if s.Phase == PhaseParked {
			add("probe the parked PENDING version %s (%s) again; it failed with: %s", s.PendingVersion, s.NewFP, s.Reason)
		} else {
			add("resume with PENDING version %s (%s)", s.PendingVersion, s.NewFP)
		}
		add("%s", probe)
		add("promote it over %s; revoke the old key after a grace of %v", curDesc, k.Grace)
	case PhaseDiscarding:
		if s.abandonedUnstored() {
			add("finish abandoning the rotation (token %s…), whose key never reached the store: %s", short(s.Token), unstoredPlan(k))
			break
		}
		add("finish discarding PENDING version %s (%s): revoke it at the %s issuer and remove PENDING (reason: %s)", s.PendingVersion, s.NewFP, k.Issuer.Type(), s.Reason)
	case PhasePromoting:
		add("promote PENDING version %s (%s) over version %s (%s)", s.PendingVersion, s.NewFP, orNone(s.OldVersion), orNone(s.OldFP))
		add("revoke the old key after a grace of %v", k.Grace)
	case PhaseGrace:
		due := ru.revokeDue()
		res.RevokeDue = due
		if ru.now().Before(due) {
			wait := "exit 0"
			if ru.o.Wait {
				wait = "wait"
			}
			add("nothing yet: revocation of old version %s (%s) is due at %s (%s)", orNone(s.OldVersion), s.OldFP, due.UTC().Format(time.RFC3339), wait)
			if k.RevokeGate != nil {
				add("%s", ru.planGate(ctx))
			}
			if !ru.o.Wait {
				break
			}
		} else if k.RevokeGate != nil {
			add("%s", ru.planGate(ctx))
		}
		add("revoke old version %s (%s, key id %s) with the %s issuer", orNone(s.OldVersion), s.OldFP, orNone(s.OldKeyID), k.Issuer.Type())
	case PhaseRevoking:
		add("revoke old version %s (%s, key id %s) with the %s issuer", orNone(s.OldVersion), s.OldFP, orNone(s.OldKeyID), k.Issuer.Type())
	}
	res.Message = "dry run: would " + strings.Join(res.Plan, "; then ")
	return res, nil
}

// planAbandon describes what --abandon would do.
func (ru *run) planAbandon(ctx context.Context) (*Result, error) {
	k, s, res := ru.k, ru.s, ru.res
	add := func(format string, args ...any) { res.Plan = append(res.Plan, fmt.Sprintf(format, args...)) }
	switch s.Phase {
	case PhaseCreating:
		pv, err := ru.pendingVersion(ctx)
		if err != nil {
			return res, err
		}
		if pv == nil || pv.Token != s.Token {
			add("abandon the rotation in phase creating (token %s…), whose key never reached the store: %s; CURRENT stays", short(s.Token), unstoredPlan(k))
			break
		}
		_, fp := fingerprintOf(pv, k.Field)
		add("abandon the rotation in phase creating: revoke the new key %s with the %s issuer", fp, k.Issuer.Type())
		add("discard PENDING version %s; CURRENT stays", pv.ID)
	case PhaseParked, PhaseProbing, PhaseDiscarding:
		if s.abandonedUnstored() {
			add("finish abandoning the rotation (token %s…), whose key never reached the store: %s; CURRENT stays", short(s.Token), unstoredPlan(k))
			break
		}
		add("abandon the rotation in phase %s: revoke the new key %s (key id %s) with the %s issuer", s.Phase, orNone(s.NewFP), orNone(s.NewKeyID), k.Issuer.Type())
		add("discard PENDING version %s; CURRENT stays", orNone(s.PendingVersion))
	case PhaseIdle:
		pv, err := ru.pendingVersion(ctx)
		if err != nil {
			return res, err
		}
		if pv == nil {
			add("nothing to abandon: no rotation under way and no PENDING version")
		} else {
			_, fp := fingerprintOf(pv, k.Field)
			add("discard the stray PENDING version %s (%s); its key is not revoked", pv.ID, fp)
		}
	case PhaseRevoking:
		add("end the revocation WITHOUT revoking the old version %s (%s, key id %s): logged, with a %s event; revoke it by hand", orNone(s.OldVersion), orNone(s.OldFP), orNone(s.OldKeyID), EventNotRevoked)
	default:
		add("stop: the rotation is in phase %s, past its probe, and cannot be abandoned (exit %d)", s.Phase, ExitConflict)
	}
	res.Message = "dry run: would " + strings.Join(res.Plan, "; then ")
	return res, nil
}

func short(token string) string {
	if len(token) > 8 {
		return token[:8]
	}
	return token
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// unstoredPlan says how a rotation abandoned before its key reached the
// store undoes what the issuer handed out for its token.
func unstoredPlan(k *Key) string {
	if _, ok := k.Issuer.(Releaser); ok {
		return fmt.Sprintf("give the key the %s issuer handed out for the token back, unused", k.Issuer.Type())
	}
	return fmt.Sprintf("ask the %s issuer for the token's key again (idempotent on the token) and revoke it", k.Issuer.Type())
}
