package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/keywarden/keywarden/providers/driver"
)

// Outcomes of `rotate --revoke-left-valid` and `--forget-left-valid`.
const (
	// OutcomeLeftValidRevoked: every key the record listed as left valid
	// was revoked at the issuer and dropped from the list.
	OutcomeLeftValidRevoked = "left_valid_revoked"
	// OutcomeLeftValidForgotten: an operator dropped a key from the list
	// (revoked by hand), revoking nothing.
	OutcomeLeftValidForgotten = "left_valid_forgotten"
)

// EventLeftValidRevoked: `rotate --revoke-left-valid` revoked keys that
// rotations had left valid; Reason names them (fingerprints and ids).
const EventLeftValidRevoked EventType = "rotation.left_valid_revoked"

// EventLeftValidForgotten: an operator dropped a key from the record's
// list of keys left valid (`rotate --forget-left-valid`), saying it was
// revoked by hand; Reason names it.
const EventLeftValidForgotten EventType = "rotation.left_valid_forgotten"

// describe names e for people: fingerprint, id and version, never a value.
func (e LeftValidKey) describe() string {
	return fmt.Sprintf("%s (id %s, version %s, %s at %s)", orNone(e.Fingerprint), orNone(e.KeyID), orNone(e.Version), e.Outcome, e.At.UTC().Format(time.RFC3339))
}

// leftValidKept is an entry --revoke-left-valid keeps, and why.
type leftValidKept struct {
	e    LeftValidKey
	kind Kind
	why  string
}

// revokeLeftValid revokes the keys the record lists as left valid, under
// the lease (RunOptions.RevokeLeftValid). Each entry is checked against
// CURRENT and PENDING (holdsKey, as the revocation of a rotation's old key
// is), needs an issuer id or a value PREVIOUS still holds
// (revocationCredential), and, with a RevokeGate, that no consumer reports
// it in the gate's Checks consecutive checks; then it is revoked at the
// issuer (idempotent). One record write at the end drops the revoked
// entries and frees the lease: a run killed before it revokes them again
// on its next try, and drops them then. Kept entries make the run fail,
// after that write, with the kind of the first one's reason.
func (ru *run) revokeLeftValid(ctx context.Context) (*Result, error) {
	k, s := ru.k, ru.s
	res := ru.res
	if ru.leaseHeld() {
		return res, ru.inProgress(s)
	}
	if s.Phase != PhaseIdle && s.Phase != PhaseParked {
		return res, fail(KindConflict, fmt.Errorf("rotation: %s: a rotation is under way (phase %s); let it finish, then run `keywarden rotate --key %s --revoke-left-valid`", k.Name, s.Phase, k.Name))
	}
	if len(s.LeftValid) == 0 {
		res.Outcome = OutcomeNothing
		res.Message = "no key left valid: nothing to revoke"
		return res, nil
	}
	if !ru.o.DryRun {
		ru.holdIdle = true
		if err := ru.save(ctx, s.clone()); err != nil {
			return res, err
		}
		s = ru.s
	}
	cur, err := ru.currentVersion(ctx)
	if err != nil {
		return res, err
	}
	pv, err := ru.pendingVersion(ctx)
	if err != nil {
		return res, err
	}
	var kept []leftValidKept
	var todo []LeftValidKey
	var creds []Credential
	for _, e := range s.LeftValid {
		switch {
		case holdsKey(cur, k.Field, e.Version, e.Fingerprint, e.KeyID):
			kept = append(kept, leftValidKept{e, KindConflict, "it is CURRENT's key (put back since): not revoking it"})
			continue
		case holdsKey(pv, k.Field, e.Version, e.Fingerprint, e.KeyID):
			kept = append(kept, leftValidKept{e, KindConflict, "it is PENDING's key: not revoking it"})
			continue
		}
		cred, err := ru.revocationCredential(ctx, cur, e.Version, e.Fingerprint, e.KeyID)
		if err != nil {
			return res, err
		}
		if cred.Key.IsZero() && cred.KeyID == "" {
			kept = append(kept, leftValidKept{e, KindConflict, fmt.Sprintf("neither its issuer id nor its value is known: keywarden cannot revoke it; revoke it by hand at the %s issuer, then run `keywarden rotate --key %s --forget-left-valid=%s`", k.Issuer.Type(), k.Name, e.Fingerprint)})
			continue
		}
		todo, creds = append(todo, e), append(creds, cred)
	}
	if ru.o.DryRun {
		res.Outcome = "dry_run"
		for _, e := range todo {
			line := "revoke the key left valid " + e.describe() + " at the " + k.Issuer.Type() + " issuer and drop it from the list"
			if g := k.RevokeGate; g != nil {
				line += fmt.Sprintf(", once %s reports no consumer holding it in %d checks %v apart", g.Consumers.Describe(), g.checks(), g.interval())
			}
			res.Plan = append(res.Plan, line)
		}
		for _, kp := range kept {
			res.Plan = append(res.Plan, "keep "+kp.e.describe()+": "+kp.why)
		}
		res.Message = strings.Join(res.Plan, "; ")
		return res, nil
	}
	todo, creds, kept, err = ru.gateLeftValid(ctx, cur, todo, creds, kept)
	if err != nil {
		return res, err
	}
	next := s.clone()
	var done []string
	var issuerErr error
	for i, e := range todo {
		if err := k.Issuer.Revoke(ctx, creds[i]); err != nil {
			if e := ctxError(err); e != nil {
				issuerErr = e
				break
			}
			if issuerErr == nil {
				issuerErr = ru.issuerErr(err, "revoke the key left valid %s", e.describe())
			}
			kept = append(kept, leftValidKept{e, KindIssuer, "the issuer refused the revocation: " + err.Error()})
			continue
		}
		if err := ru.step(ctx, AfterRevokeLeftValid); err != nil {
			return res, err
		}
		next.LeftValid = dropLeftValid(next.LeftValid, e.Fingerprint, e.KeyID)
		done = append(done, e.describe())
		ru.log().Info("revoked a key a rotation had left valid", slog.String("fingerprint", e.Fingerprint),
			slog.String("key_id", creds[i].KeyID), slog.String("version", e.Version), slog.String("outcome", e.Outcome))
	}
	ru.holdIdle = false
	if err := ru.save(ctx, next); err != nil {
		return res, err
	}
	if err := ru.step(ctx, AfterDone); err != nil {
		return res, err
	}
	var msg []string
	if len(done) > 0 {
		msg = append(msg, "revoked and dropped from the list: "+strings.Join(done, "; "))
		ru.emit(ctx, Event{Type: EventLeftValidRevoked, Outcome: OutcomeLeftValidRevoked, Reason: strings.Join(done, "; ")})
	}
	for _, kp := range kept {
		msg = append(msg, "kept "+kp.e.describe()+": "+kp.why)
	}
	res.Message = strings.Join(msg, "; ")
	if issuerErr != nil {
		return res, issuerErr
	}
	if len(kept) > 0 {
		return res, fail(kept[0].kind, fmt.Errorf("rotation: %s: %d keys left valid are still listed: %s", k.Name, len(next.LeftValid), res.Message))
	}
	res.Outcome = OutcomeLeftValidRevoked
	return res, nil
}

// gateLeftValid asks the key's revoke gate (none: nothing to ask) whether
// a consumer still reports a key of todo: Checks rounds, Interval apart,
// as the gate clears an old key; a key reported in any round (or when
// the gate cannot tell) is kept, with its holders. The wait is not
// recorded: a killed run's successor counts again from zero.
func (ru *run) gateLeftValid(ctx context.Context, cur *driver.Version, todo []LeftValidKey, creds []Credential, kept []leftValidKept) ([]LeftValidKey, []Credential, []leftValidKept, error) {
	g := ru.k.RevokeGate
	if g == nil || len(todo) == 0 {
		return todo, creds, kept, nil
	}
	curFP := ""
	if cur != nil {
		_, curFP = fingerprintOf(cur, ru.k.Field)
	}
	for round := 0; round < g.checks() && len(todo) > 0; round++ {
		if round > 0 {
			t0 := time.Now()
			err := sleepCtx(ctx, g.interval())
			ru.waited += time.Since(t0)
			if err != nil {
				return nil, nil, nil, ctxError(err)
			}
		}
		var keepT []LeftValidKey
		var keepC []Credential
		for i, e := range todo {
			hs, err := ru.askHolders(ctx, e.Fingerprint, curFP)
			if e := ctxError(err); e != nil {
				return nil, nil, nil, e
			}
			switch {
			case err != nil:
				kept = append(kept, leftValidKept{e, KindGateHeld, "the revoke gate cannot tell who holds it: " + err.Error()})
			case len(hs) > 0:
				ru.r.opts.Metrics.gateHolders(ru.k.Name, len(hs))
				kept = append(kept, leftValidKept{e, KindGateHeld, fmt.Sprintf("%d consumers still report it (%s): not revoking it", len(hs), describeHolders(hs))})
			default:
				keepT, keepC = append(keepT, e), append(keepC, creds[i])
			}
		}
		todo, creds = keepT, keepC
	}
	return todo, creds, kept, nil
}

// ForgetLeftValid drops from the record's list of keys left valid the one
// whose fingerprint or issuer id is which, revoking nothing: for a key an
// operator revoked by hand (one without an issuer id, which keywarden
// cannot revoke). Like SetKeyID it needs no lease: one compare-and-swap
// write that changes no phase; a run under way takes the change in.
func (r *Rotator) ForgetLeftValid(ctx context.Context, name, which string) (*Result, error) {
	k, err := r.key(name)
	if err != nil {
		return &Result{Key: name, Outcome: KindConfig.String(), Message: err.Error()}, err
	}
	ru := &run{r: r, k: k, res: &Result{Key: name}}
	res := ru.res
	if which == "" {
		return res, failf(KindConfig, "rotation: %s: --forget-left-valid needs the fingerprint or issuer id of a key listed by `keywarden status`", name)
	}
	var found LeftValidKey
	err = ru.editRecord(ctx, "drop the key left valid", func(s *state) (*state, error) {
		i := slices.IndexFunc(s.LeftValid, func(e LeftValidKey) bool { return e.names(which, which) })
		if i < 0 {
			var listed []string
			for _, e := range s.LeftValid {
				listed = append(listed, e.describe())
			}
			return nil, failf(KindConfig, "rotation: %s: no key left valid has fingerprint or id %q (listed: %s)", name, which, orNone(strings.Join(listed, "; ")))
		}
		found = s.LeftValid[i]
		next := s.clone()
		next.LeftValid = dropLeftValid(next.LeftValid, found.Fingerprint, found.KeyID)
		return next, nil
	})
	if err != nil {
		return res, err
	}
	res.Outcome = OutcomeLeftValidForgotten
	res.Message = fmt.Sprintf("dropped %s from the keys left valid, revoking nothing (%d still listed)", found.describe(), len(ru.s.LeftValid))
	ru.log().Warn("an operator dropped a key left valid from the list, as revoked by hand", slog.String("fingerprint", found.Fingerprint),
		slog.String("key_id", found.KeyID), slog.String("outcome", found.Outcome))
	ru.emit(ctx, Event{Type: EventLeftValidForgotten, Outcome: OutcomeLeftValidForgotten, Reason: found.describe()})
	return res, nil
}

// errLeftValidMode is returned for RunOptions that combine a left-valid
// mode with another mode.
var errLeftValidMode = errors.New("--revoke-left-valid and --forget-left-valid go alone (not with --abandon, --force, --wait or each other)")
