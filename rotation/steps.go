package rotation

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/stage"
)

// strayPending reads PENDING, nil when there is none. A PENDING version left
// by a one-shot write (`keywarden put`, a pool update) that died before its
// Promote is an interrupted write, never a rotation's: it is discarded
// (stage.ClearInterrupted) and counts as none.
func (ru *run) strayPending(ctx context.Context) (*driver.Version, error) {
	pv, err := ru.pendingVersion(ctx)
	if err != nil || pv == nil || !stage.IsOneShot(pv.Token) {
		return pv, err
	}
	if _, err := stage.ClearInterrupted(ctx, ru.k.Store, ru.k.Secret); err != nil {
		return nil, ru.storeErr("discard the PENDING version of an interrupted write", err)
	}
	ru.log().Warn("discarded the PENDING version of an interrupted one-shot write", slog.String("version", pv.ID))
	return ru.pendingVersion(ctx)
}

// create obtains the new key and writes it as PENDING, or finds the one an
// interrupted run wrote.
func (ru *run) create(ctx context.Context) error {
	if err := ru.takeOver(ctx); err != nil {
		return err
	}
	k, s := ru.k, ru.s
	pv, err := ru.strayPending(ctx)
	if errors.Is(err, providers.ErrKeyShapedID) {
		return ru.refuseOwnPending(ctx, err)
	}
	if err != nil {
		return err
	}
	if pv != nil && pv.Token != s.Token {
		return fail(KindConflict, fmt.Errorf("rotation: %s: the store holds a PENDING version %s from another writer; run `keywarden rotate --key %s --abandon` to discard it", k.Name, pv.ID, k.Name))
	}
	if pv == nil {
		cur, err := ru.currentVersion(ctx)
		if err != nil {
			return err
		}
		cred, err := k.Issuer.Create(ctx, s.Token)
		if err != nil {
			if errors.Is(err, ErrPoolEmpty) {
				ru.r.opts.Metrics.poolKeys(k.Name, 0)
				ru.r.opts.Metrics.poolKeyExpiry(k.Name, nil)
				ru.poolLow(ctx, 0)
				return fail(KindPoolEmpty, fmt.Errorf("rotation: %s: %w", k.Name, err))
			}
			if e := ctxError(err); e != nil {
				return e
			}
			return ru.issuerErr(err, "create a key")
		}
		if cred.Key.IsZero() {
			return fail(KindIssuer, fmt.Errorf("rotation: %s: %s issuer returned an empty key", k.Name, k.Issuer.Type()))
		}
		if err := ru.step(ctx, AfterCreate); err != nil {
			return err
		}
		var curRaw []byte
		if cur != nil {
			curRaw = cur.Value
			if p, _ := fingerprintOf(cur, k.Field); p.Key.Equal(cred.Key) {
				return fail(KindIssuer, fmt.Errorf("rotation: %s: the %s issuer returned the key that is CURRENT (%s); remove it from the issuer's pool", k.Name, k.Issuer.Type(), cred.Key.Fingerprint()))
			}
		}
		value, err := checkedValue(cred, k.Field, curRaw)
		if err != nil {
			return ru.refuseIssued(ctx, cred, KindIssuer, fmt.Sprintf("the %s issuer returned a key that consumers could not read: %v", k.Issuer.Type(), err))
		}
		pv, err = k.Store.PutPending(ctx, k.Secret, s.Token, value)
		if err != nil {
			if codes.Is(err, codes.FailedPrecondition) {
				return fail(KindConflict, fmt.Errorf("rotation: %s: write PENDING: another writer holds PENDING: %w", k.Name, err))
			}
			return ru.storeErr("write the new key as PENDING", err)
		}
		if err := ru.step(ctx, AfterPutPending); err != nil {
			return err
		}
		if providers.CheckVersionID(pv.ID) != nil {
			return ru.refuseStoredID(ctx, cred)
		}
	}
	p, fp := fingerprintOf(pv, k.Field)
	if p.Key.IsZero() {
		return ru.storeErr("decode the PENDING version", codes.Errorf(codes.InvalidArgument, "PENDING version %s does not hold a key consumers can read; run `keywarden rotate --key %s --abandon` to discard it", pv.ID, k.Name))
	}
	next := s.clone()
	next.Phase = PhaseProbing
	next.PendingVersion, next.NewKeyID, next.NewFP = pv.ID, p.KeyID, fp
	if err := ru.save(ctx, next); err != nil {
		return err
	}
	ru.log().Info("new key pending", slog.String("version", pv.ID), slog.String("fingerprint", fp), slog.String("key_id", p.KeyID))
	if err := ru.step(ctx, AfterRecordProbing); err != nil {
		return err
	}
	ru.commit(ctx, s.Token)
	ru.reportPool(ctx)
	return ru.step(ctx, AfterCommit)
}

// refuseIssued drops a key the issuer returned that is not to be stored
// (readers could not decode it; or the store gave its version an id
// shaped like a key, see refuseStoredID): reason says why, kind whose
// failure it is. The rotation takes the path of a discarded probe
// failure: the record is written first (discarding, with the key's id and
// fingerprint and no PENDING version), then the key is revoked at the
// issuer and the rotation ends, failing with an error of kind.
func (ru *run) refuseIssued(ctx context.Context, cred Credential, kind Kind, reason string) error {
	s := ru.s
	next := s.clone()
	next.Phase = PhaseDiscarding
	next.PendingVersion, next.NewKeyID, next.NewFP = "", "", cred.Key.Fingerprint()
	if providers.CheckKeyID(cred.KeyID) == nil {
		next.NewKeyID = cred.KeyID
	}
	next.Reason = reason
	next.LastOutcome, next.LastReason = kind.String(), next.Reason
	next.LastFinishedAt = ru.now()
	if err := ru.save(ctx, next); err != nil {
		return err
	}
	ru.issued = &cred
	if err := ru.step(ctx, AfterRecordDiscarding); err != nil {
		return err
	}
	return ru.discard(ctx)
}

// refuseStoredID ends a rotation whose new key the store wrote as a
// PENDING version with an id shaped like a key (providers.ErrKeyShapedID):
// the key is refused as refuseIssued refuses one (the record says
// discarding first, without the id, which is never recorded or printed;
// then the key is revoked at the issuer), and discard finds that version
// by the rotation's token and discards it. The record comes before the
// discard: a run killed after the discard but before the record would
// find its token's PENDING gone, write it again, and a store that is
// idempotent on the token (AWS's ClientRequestToken) would answer with the
// discarded version.
func (ru *run) refuseStoredID(ctx context.Context, cred Credential) error {
	return ru.refuseIssued(ctx, cred, KindStore, "the store gave the new key's PENDING version an id "+providers.KeyShapes+
		"; the version was discarded: ids are printed, so a store must never give a key as one")
}

// refuseOwnPending resumes, in phase creating, a refuseStoredID that a
// killed run left undone: PENDING was refused for its key-shaped id
// (refusal), and when it holds this rotation's token, the run wrote it,
// and its key is refused from its value. Another writer's PENDING stays
// refused.
func (ru *run) refuseOwnPending(ctx context.Context, refusal error) error {
	pv, err := ru.k.Store.ReadPending(ctx, ru.k.Secret)
	if err != nil || pv.Token != ru.s.Token {
		return refusal
	}
	p, _ := fingerprintOf(pv, ru.k.Field)
	return ru.refuseStoredID(ctx, Credential{Key: p.Key, KeyID: p.KeyID})
}

// unrecordedPending returns the id of a PENDING version this rotation
// wrote (its token) that the record does not name, "" when there is none:
// one whose id the store gave shaped like a key (refuseStoredID). The id
// is only given back to the store, never printed.
func (ru *run) unrecordedPending(ctx context.Context) (string, error) {
	pv, err := readStage(ctx, ru.k.Store, ru.k.Secret, driver.Pending)
	switch {
	case codes.Is(err, codes.NotFound):
		return "", nil
	case err != nil:
		return "", ru.storeErr("read PENDING", err)
	case pv.Token != ru.s.Token:
		return "", nil
	}
	return pv.ID, nil
}

// issuedCredential returns the key a discarding rotation refused before it
// reached the store (see refuseIssued), to revoke it: the one this run
// holds, or else the issuer's again (Create is idempotent on the token).
// A key other than the refused one, from an issuer that is not idempotent,
// is revoked at once: nobody will use it.
func (ru *run) issuedCredential(ctx context.Context) (Credential, error) {
	k, s := ru.k, ru.s
	if c := ru.issued; c != nil && c.Key.Fingerprint() == s.NewFP {
		return *c, nil
	}
	c, err := k.Issuer.Create(ctx, s.Token)
	if err != nil {
		if e := ctxError(err); e != nil {
			return Credential{}, e
		}
		return Credential{}, ru.issuerErr(err, "find again the refused key %s to revoke it", s.NewFP)
	}
	if c.Key.Fingerprint() == s.NewFP {
		return c, nil
	}
	ru.log().Warn("the issuer returned another key for the rotation's token; revoking it too", slog.String("fingerprint", c.Key.Fingerprint()))
	if err := k.Issuer.Revoke(ctx, c); err != nil {
		if e := ctxError(err); e != nil {
			return Credential{}, e
		}
		return Credential{}, ru.issuerErr(err, "revoke the key %s the issuer created again", c.Key.Fingerprint())
	}
	return Credential{KeyID: s.NewKeyID}, nil
}

// unstoredCredential undoes what the issuer handed out for the token of a
// rotation abandoned in phase creating before its key reached the store
// (a run died between Create and PutPending, or before Create): a
// Releaser gives its key back unused, and nothing is left to revoke;
// another issuer returns the token's key again (Create is idempotent on
// the token; one that never ran mints it now), to be revoked. An empty
// pool means nothing was claimed for the token: nothing to revoke.
func (ru *run) unstoredCredential(ctx context.Context) (Credential, error) {
	k, s := ru.k, ru.s
	if rl, ok := k.Issuer.(Releaser); ok {
		if err := rl.Release(ctx, s.Token); err != nil {
			if e := ctxError(err); e != nil {
				return Credential{}, e
			}
			return Credential{}, ru.issuerErr(err, "give back the key issued for the abandoned rotation")
		}
		return Credential{}, ru.step(ctx, AfterRevokeNew)
	}
	c, err := k.Issuer.Create(ctx, s.Token)
	switch {
	case errors.Is(err, ErrPoolEmpty):
		return Credential{}, nil
	case err != nil:
		if e := ctxError(err); e != nil {
			return Credential{}, e
		}
		return Credential{}, ru.issuerErr(err, "find the key issued for the abandoned rotation to revoke it")
	}
	c.OtherIDs = s.otherIDs(c.KeyID)
	return c, nil
}

// commit tells a Committer issuer that the key of token is safe in the
// store. A failure is logged: the key is safe, and a later step commits
// again.
func (ru *run) commit(ctx context.Context, token string) {
	c, ok := ru.k.Issuer.(Committer)
	if !ok || token == "" {
		return
	}
	if err := c.Commit(ctx, token); err != nil {
		ru.log().Warn("issuer commit failed; retried at the end of the rotation", slog.String("error", err.Error()))
	}
}

// countPool counts the keys of the issuer's pool that a draw can use and
// exports the count (keywarden_pool_keys); for a PoolInspector also each
// key's expiry, with keys (in draw order). ok is false when the issuer has
// no pool. On an error nothing is exported: the last values stand.
func (ru *run) countPool(ctx context.Context) (n int, keys []PoolKey, ok bool, err error) {
	switch is := ru.k.Issuer.(type) {
	case PoolInspector:
		keys, err = is.PoolKeys(ctx)
		if err != nil {
			return 0, nil, true, err
		}
		for _, k := range keys {
			if k.Unusable == "" {
				n++
			}
		}
		ru.r.opts.Metrics.poolKeyExpiry(ru.k.Name, keys)
	case PoolReporter:
		if n, err = is.Available(ctx); err != nil {
			return 0, nil, true, err
		}
	default:
		return 0, nil, false, nil
	}
	ru.r.opts.Metrics.poolKeys(ru.k.Name, n)
	return n, keys, true, nil
}

// reportPool updates the pool metrics and warns when the pool runs low.
func (ru *run) reportPool(ctx context.Context) {
	n, keys, ok, err := ru.countPool(ctx)
	if err != nil {
		ru.log().Warn("could not count the issuer's pool", slog.String("error", err.Error()))
		return
	}
	if !ok {
		return
	}
	for _, k := range keys {
		if k.Unusable != "" {
			ru.log().Warn("a pool key cannot serve a rotation (a draw skips it, or fails on a key its issuer does not know): replace it",
				slog.String("fingerprint", k.Fingerprint), slog.String("key_id", k.KeyID), slog.String("reason", k.Unusable))
		}
	}
	low := ru.k.PoolLow
	if low <= 0 {
		low = 1
	}
	if n <= low {
		ru.poolLow(ctx, n)
	}
}

func (ru *run) poolLow(ctx context.Context, n int) {
	ru.log().Warn("the issuer's key pool is running low; create keys in the Console and add them with `keywarden pool add`",
		slog.Int("pool_keys", n))
	ru.emit(ctx, Event{Type: EventPoolLow, PoolKeys: &n})
}

// pendingCredential reads the PENDING version the record names. ok is false
// when PENDING no longer holds it.
func (ru *run) pendingCredential(ctx context.Context) (Credential, bool, error) {
	pv, err := ru.pendingVersion(ctx)
	if err != nil {
		return Credential{}, false, err
	}
	s := ru.s
	if pv == nil || pv.ID != s.PendingVersion {
		id := s.keyID(s.NewKeyID, s.NewFP)
		return Credential{KeyID: id, OtherIDs: s.otherIDs(id)}, false, nil
	}
	p, fp := fingerprintOf(pv, ru.k.Field)
	if p.Key.IsZero() {
		// Written by an older keywarden that did not check issued keys:
		// no key to probe, but one to discard, by its id when known.
		id := s.keyID(salvageKeyID(pv.Value), fp)
		if id == "" {
			id = s.NewKeyID
		}
		return Credential{KeyID: id, OtherIDs: s.otherIDs(id)}, true, nil
	}
	id := s.keyID(p.KeyID, fp)
	if id == "" {
		id = s.NewKeyID
	}
	return Credential{Key: p.Key, KeyID: id, OtherIDs: s.otherIDs(id)}, true, nil
}

// probe activates and probes the PENDING key.
func (ru *run) probe(ctx context.Context) error {
	if err := ru.takeOver(ctx); err != nil {
		return err
	}
	k, s := ru.k, ru.s
	cred, ok, err := ru.pendingCredential(ctx)
	if err != nil {
		return err
	}
	if ok && cred.Key.IsZero() {
		return ru.storeErr("decode the PENDING version", codes.Errorf(codes.InvalidArgument, "PENDING version %s does not hold a key consumers can read; run `keywarden rotate --key %s --abandon` to discard it", s.PendingVersion, k.Name))
	}
	if !ok {
		cur, err := ru.currentVersion(ctx)
		if err != nil {
			return err
		}
		if cur != nil && cur.ID == s.PendingVersion {
			// Promoted by a run that died before recording it: not
			// possible through this package, which records promoting
			// first; treat as promoting.
			next := s.clone()
			next.Phase = PhasePromoting
			return ru.save(ctx, next)
		}
		ru.commit(ctx, s.Token) // the key left the issuer's pool for the store
		next := s.clone()
		next.clearRotation()
		next.LastOutcome, next.LastReason = KindConflict.String(), "PENDING was discarded by someone else"
		next.LastFinishedAt = ru.now()
		if err := ru.save(ctx, next); err != nil {
			return err
		}
		return fail(KindConflict, fmt.Errorf("rotation: %s: PENDING version %s was discarded by someone else; the rotation is abandoned (the new key %s may still be valid at the issuer)", k.Name, s.PendingVersion, orNone(s.NewKeyID)))
	}
	a, activates := k.Issuer.(Activator)
	if activates {
		// CURRENT's key is never the new one: an issuer matching by a
		// partial hint must not pick it.
		if cur, err := ru.currentVersion(ctx); err != nil {
			return err
		} else if cur != nil {
			if p, fp := fingerprintOf(cur, k.Field); s.keyID(p.KeyID, fp) != "" && s.keyID(p.KeyID, fp) != cred.KeyID {
				cred.OtherIDs = append(cred.OtherIDs, s.keyID(p.KeyID, fp))
			}
		}
		if err := a.Activate(ctx, cred); err != nil {
			if e := ctxError(err); e != nil {
				return e
			}
			return ru.issuerErr(err, "activate key %s", orNone(cred.KeyID))
		}
		if err := ru.step(ctx, AfterActivate); err != nil {
			return err
		}
	}
	if k.Probe != nil {
		ru.probed = true
		// A key just activated may be refused for a while (Retry.Settle).
		n, err := runProbe(ctx, k.Probe, cred.Key, k.Retry, activates, sleepCtx)
		ru.res.ProbeAttempts += n
		ru.r.opts.Metrics.probe(k.Name, n, err == nil)
		if err != nil {
			if e := ctxError(err); e != nil {
				return e
			}
			return ru.probeFailed(ctx, err)
		}
		ru.log().Info("new key passed its probe", slog.String("probe", k.Probe.Type()), slog.Int("attempts", n), slog.String("fingerprint", s.NewFP))
	}
	if err := ru.step(ctx, AfterProbe); err != nil {
		return err
	}
	cur, err := ru.currentVersion(ctx)
	if err != nil {
		return err
	}
	next := s.clone()
	next.Phase = PhasePromoting
	next.Reason = ""
	next.OldVersion, next.OldKeyID, next.OldFP = "", "", ""
	if cur != nil {
		p, fp := fingerprintOf(cur, k.Field)
		next.OldVersion, next.OldKeyID, next.OldFP = cur.ID, s.keyID(p.KeyID, fp), fp
		if next.OldKeyID == "" && p.Key.IsZero() {
			next.OldKeyID = salvageKeyID(cur.Value)
		}
		if next.OldKeyID == "" && !p.Key.IsZero() {
			next.OldKeyID = ru.resolveKeyID(ctx, Credential{Key: p.Key, OtherIDs: append(s.otherIDs(""), cred.KeyID)}, fp)
		}
	}
	if err := ru.save(ctx, next); err != nil {
		return err
	}
	return ru.step(ctx, AfterRecordPromote)
}

// resolveKeyID asks a KeyIDResolver issuer for the id of c, CURRENT's key
// of fingerprint fp, while CURRENT still holds it: once promoted over, the
// old key may leave PREVIOUS (a `keywarden put` during the grace) and then
// only its id can revoke it. It returns "" when the issuer cannot tell;
// the revocation then looks for the key as before (a failure is logged).
func (ru *run) resolveKeyID(ctx context.Context, c Credential, fp string) string {
	kr, ok := ru.k.Issuer.(KeyIDResolver)
	if !ok {
		return ""
	}
	id, err := kr.ResolveKeyID(ctx, c)
	if err != nil || providers.CheckKeyID(id) != nil {
		reason := "not a key id"
		if err != nil {
			reason = err.Error()
		}
		ru.log().Warn("could not find the issuer's id of CURRENT's key before promoting over it; the revocation looks for it again",
			slog.String("fingerprint", fp), slog.String("error", reason))
		return ""
	}
	ru.log().Info("recorded the issuer's id of the key to revoke after the grace", slog.String("fingerprint", fp), slog.String("key_id", id))
	return id
}

// probeFailed parks or discards the new key.
func (ru *run) probeFailed(ctx context.Context, cause error) error {
	k, s := ru.k, ru.s
	reason := cause.Error()
	next := s.clone()
	next.Reason = reason
	next.LastOutcome, next.LastReason = KindProbe.String(), reason
	next.LastFinishedAt = ru.now()
	if k.OnProbeFailure == Discard {
		next.Phase = PhaseDiscarding
		if err := ru.save(ctx, next); err != nil {
			return err
		}
		if err := ru.step(ctx, AfterRecordDiscarding); err != nil {
			return err
		}
		return ru.discard(ctx)
	}
	next.Phase = PhaseParked
	if err := ru.save(ctx, next); err != nil {
		return err
	}
	if err := ru.step(ctx, AfterRecordParked); err != nil {
		return err
	}
	ru.res.NewVersion, ru.res.NewFingerprint, ru.res.NewKeyID = s.PendingVersion, s.NewFP, s.NewKeyID
	return fail(KindProbe, fmt.Errorf("rotation: %s: the new key %s failed its probe and is parked as PENDING version %s; CURRENT is untouched: %w", k.Name, s.NewFP, s.PendingVersion, cause))
}

// discard revokes the new key at the issuer and removes its PENDING stage,
// then ends the rotation. It fails with the reason recorded for the
// discard.
func (ru *run) discard(ctx context.Context) error {
	if err := ru.takeOver(ctx); err != nil {
		return err
	}
	k, s := ru.k, ru.s
	var cred Credential
	var pending bool
	var unrecorded string // this rotation's PENDING that the record does not name
	var err error
	if s.refusedIssued() {
		// The refused key never reached the store, or reached it as a
		// version whose id is shaped like a key (refuseStoredID), which
		// pendingCredential would refuse to read.
		if unrecorded, err = ru.unrecordedPending(ctx); err != nil {
			return err
		}
		if cred, err = ru.issuedCredential(ctx); err != nil {
			return err
		}
	} else {
		if cred, pending, err = ru.pendingCredential(ctx); err != nil {
			return err
		}
		if !pending && s.abandonedUnstored() {
			if cred, err = ru.unstoredCredential(ctx); err != nil {
				return err
			}
		}
	}
	if s.Token != "" && pending && cred.Key.IsZero() && cred.KeyID == "" {
		ru.log().Warn("the PENDING version does not hold a readable key or a key id: its key cannot be revoked at the issuer; discarding PENDING only",
			slog.String("version", s.PendingVersion), slog.String("fingerprint", s.NewFP))
		pending = false
	}
	if s.Token != "" && (pending || cred.KeyID != "" || !cred.Key.IsZero()) {
		cur, err := ru.currentVersion(ctx)
		if err != nil {
			return err
		}
		if cur != nil && cur.ID == s.PendingVersion {
			return fail(KindConflict, fmt.Errorf("rotation: %s: the key to discard (version %s) is CURRENT; not revoking it", k.Name, s.PendingVersion))
		}
		if err := k.Issuer.Revoke(ctx, cred); err != nil {
			if e := ctxError(err); e != nil {
				return e
			}
			return ru.issuerErr(err, "revoke the discarded key %s", orNone(cred.KeyID))
		}
		if err := ru.step(ctx, AfterRevokeNew); err != nil {
			return err
		}
	}
	if id := cmp.Or(s.PendingVersion, unrecorded); id != "" {
		if err := k.Store.DiscardPending(ctx, k.Secret, id); err != nil {
			if codes.Is(err, codes.Aborted) {
				return fail(KindConflict, fmt.Errorf("rotation: %s: discard PENDING version %s: PENDING holds another version: %w", k.Name, orNone(s.PendingVersion), err))
			}
			return ru.storeErr("discard PENDING", err)
		}
		if err := ru.step(ctx, AfterDiscard); err != nil {
			return err
		}
	}
	ru.commit(ctx, s.Token)
	reason, why := s.Reason, s.LastOutcome
	next := s.clone()
	next.clearRotation()
	next.LastOutcome, next.LastReason = OutcomeDiscarded, reason
	next.LastFinishedAt = ru.now()
	if err := ru.save(ctx, next); err != nil {
		return err
	}
	if err := ru.step(ctx, AfterDone); err != nil {
		return err
	}
	ru.res.NewVersion, ru.res.NewFingerprint, ru.res.NewKeyID = s.PendingVersion, s.NewFP, s.NewKeyID
	ru.res.Outcome = OutcomeDiscarded
	ru.log().Warn("new key discarded", slog.String("version", s.PendingVersion), slog.String("fingerprint", s.NewFP), slog.String("reason", reason))
	switch why {
	case outcomeAbandoned:
		ru.res.Message = fmt.Sprintf("abandoned: PENDING version %s (%s) discarded; CURRENT is untouched", orNone(s.PendingVersion), orNone(s.NewFP))
		return nil
	case KindConflict.String():
		return fail(KindConflict, fmt.Errorf("rotation: %s: %s; the new key %s was discarded", k.Name, reason, orNone(s.NewFP)))
	case KindIssuer.String():
		return fail(KindIssuer, fmt.Errorf("rotation: %s: %s; the key was revoked at the issuer and never stored; CURRENT is untouched", k.Name, reason))
	case KindStore.String():
		return fail(KindStore, fmt.Errorf("rotation: %s: %s; the key was revoked at the issuer; CURRENT is untouched", k.Name, reason))
	}
	return fail(KindProbe, fmt.Errorf("rotation: %s: the new key %s failed its probe and was discarded (revoked at the issuer, PENDING removed); CURRENT is untouched: %s", k.Name, orNone(s.NewFP), reason))
}

// promote makes PENDING CURRENT.
func (ru *run) promote(ctx context.Context) error {
	if err := ru.takeOver(ctx); err != nil {
		return err
	}
	k, s := ru.k, ru.s
	cur, err := ru.currentVersion(ctx)
	if err != nil {
		return err
	}
	if cur == nil || cur.ID != s.PendingVersion {
		if err := k.Store.Promote(ctx, k.Secret, s.PendingVersion, s.OldVersion); err != nil {
			if !codes.Is(err, codes.Aborted) {
				return ru.storeErr("promote PENDING", err)
			}
			cur, rerr := ru.currentVersion(ctx)
			if rerr != nil {
				return rerr
			}
			if cur == nil || cur.ID != s.PendingVersion {
				// CURRENT moved under the rotation: drop the new key.
				next := s.clone()
				next.Phase = PhaseDiscarding
				next.Reason = fmt.Sprintf("CURRENT changed during the rotation (expected version %s): %v", orNone(s.OldVersion), err)
				next.LastOutcome, next.LastReason = KindConflict.String(), next.Reason
				if err := ru.save(ctx, next); err != nil {
					return err
				}
				if err := ru.step(ctx, AfterRecordDiscarding); err != nil {
					return err
				}
				return ru.discard(ctx)
			}
		}
	}
	if err := ru.step(ctx, AfterPromote); err != nil {
		return err
	}
	now := ru.now()
	next := s.clone()
	next.Phase = PhaseGrace
	next.PromotedAt = now
	next.RevokeDue = now.Add(k.Grace)
	next.LastRotatedAt = now
	next.Rotations++
	next.LastOutcome, next.LastReason = OutcomeRotated, ""
	next.LastFinishedAt = now
	if err := ru.save(ctx, next); err != nil {
		return err
	}
	ru.res.NewVersion, ru.res.NewFingerprint, ru.res.NewKeyID = s.PendingVersion, s.NewFP, s.NewKeyID
	ru.res.OldVersion, ru.res.OldFingerprint, ru.res.OldKeyID = s.OldVersion, s.OldFP, s.OldKeyID
	ru.res.Outcome = OutcomeRotated
	ru.r.opts.Metrics.rotated(k.Name, now, next.RevokeDue)
	ru.log().Info("new key promoted", slog.String("version", s.PendingVersion), slog.String("fingerprint", s.NewFP),
		slog.String("old_version", s.OldVersion), slog.Time("revoke_due", next.RevokeDue))
	ru.emit(ctx, Event{Type: EventRotated, Outcome: OutcomeRotated, RevokeDue: next.RevokeDue})
	return ru.step(ctx, AfterRecordGrace)
}

// revokeDue is when the old key of the rotation in grace may be revoked:
// the recorded due time, or later when the grace was raised since.
func (ru *run) revokeDue() time.Time {
	due := ru.s.RevokeDue
	if alt := ru.s.PromotedAt.Add(ru.k.Grace); alt.After(due) {
		due = alt
	}
	return due
}

// grace waits out the grace period (with Wait) or reports when it ends, then
// starts the revocation. done reports that the run ends here.
func (ru *run) grace(ctx context.Context) (done bool, err error) {
	s := ru.s
	if s.OldVersion == "" && s.OldKeyID == "" {
		// The first key of the secret: nothing to revoke; the issuer
		// forgets the key (a run that died before committing it left it
		// to this one).
		ru.commit(ctx, s.Token)
		next := s.clone()
		next.clearRotation()
		next.LastOutcome = OutcomeRotated
		if err := ru.save(ctx, next); err != nil {
			return true, err
		}
		ru.res.Outcome = OutcomeRotated
		ru.res.Message = fmt.Sprintf("rotated to version %s (%s); there was no old key to revoke", s.PendingVersion, s.NewFP)
		return true, ru.step(ctx, AfterDone)
	}
	due := ru.revokeDue()
	if now := ru.now(); now.Before(due) {
		if !ru.o.Wait {
			ru.res.RevokeDue = due
			if ru.res.Outcome == "" {
				ru.res.Outcome = OutcomeWaiting
			}
			ru.res.Message = fmt.Sprintf("new version %s (%s) is CURRENT; revocation of old version %s (%s) due at %s",
				s.PendingVersion, s.NewFP, orNone(s.OldVersion), s.OldFP, due.UTC().Format(time.RFC3339))
			ru.r.opts.Metrics.due(ru.k.Name, due)
			return true, nil
		}
		ru.log().Info("waiting for the grace period before revoking the old key", slog.Time("revoke_due", due))
		t0 := time.Now()
		err := sleepCtx(ctx, due.Sub(now))
		ru.waited += time.Since(t0)
		if err != nil {
			return true, ctxError(err)
		}
		// This run's work is this revocation, even if another rotator
		// does it meanwhile: no new rotation after it.
		ru.started = true
		return false, ru.load(ctx)
	}
	if ru.k.RevokeGate != nil {
		return ru.gate(ctx)
	}
	next := s.clone()
	next.Phase = PhaseRevoking
	if err := ru.save(ctx, next); err != nil {
		return true, err
	}
	return false, ru.step(ctx, AfterRecordRevoking)
}

// revoke revokes the old key at the issuer, after checking that it is not
// CURRENT.
func (ru *run) revoke(ctx context.Context) error {
	if err := ru.takeOver(ctx); err != nil {
		return err
	}
	k, s := ru.k, ru.s
	cur, err := ru.currentVersion(ctx)
	if err != nil {
		return err
	}
	if holdsKey(cur, k.Field, s.OldVersion, s.OldFP, s.OldKeyID) {
		return ru.rolledBack(ctx, cur)
	}
	cred, err := ru.revocationCredential(ctx, cur, s.OldVersion, s.OldFP, s.OldKeyID)
	if err != nil {
		return err
	}
	if cred.Key.IsZero() && cred.KeyID == "" {
		return ru.endUnrevoked(ctx, OutcomeNotRevoked, "neither the old key's value (PREVIOUS no longer holds it, or holds a payload consumers cannot read) nor its issuer id is known")
	}
	if err := k.Issuer.Revoke(ctx, cred); err != nil {
		if e := ctxError(err); e != nil {
			return e
		}
		return ru.issuerErr(err, "revoke the old key (version %s, %s, id %s)", orNone(s.OldVersion), s.OldFP, orNone(cred.KeyID))
	}
	if err := ru.step(ctx, AfterRevoke); err != nil {
		return err
	}
	ru.commit(ctx, s.Token)
	now := ru.now()
	next := s.clone()
	next.clearRotation()
	// A key an earlier rotation left valid (put back as CURRENT since, and
	// rotated out again) is revoked now: it is left valid no more.
	next.LeftValid = dropLeftValid(next.LeftValid, s.OldFP, cred.KeyID)
	next.RevokedAt = now
	next.LastOutcome, next.LastReason = OutcomeRevoked, ""
	next.LastFinishedAt = now
	if err := ru.save(ctx, next); err != nil {
		return err
	}
	ru.res.NewVersion, ru.res.NewFingerprint, ru.res.NewKeyID = s.PendingVersion, s.NewFP, s.NewKeyID
	ru.res.Outcome = OutcomeRevoked
	ru.res.Message = fmt.Sprintf("version %s (%s) is CURRENT; old version %s (%s) revoked", s.PendingVersion, s.NewFP, orNone(s.OldVersion), s.OldFP)
	ru.r.opts.Metrics.due(k.Name, time.Time{})
	ru.log().Info("old key revoked", slog.String("old_version", s.OldVersion), slog.String("old_fingerprint", s.OldFP), slog.String("old_key_id", cred.KeyID))
	ru.emit(ctx, Event{Type: EventRevoked, Outcome: OutcomeRevoked, NewVersion: s.PendingVersion, NewFingerprint: s.NewFP, NewKeyID: s.NewKeyID})
	ru.started = true // the loop ends on idle
	return ru.step(ctx, AfterDone)
}

// holdsKey reports whether the stored version v (nil: none) holds the key
// of store version version, fingerprint fp or issuer id id (those known):
// the check that keeps a revocation off CURRENT's and PENDING's key.
func holdsKey(v *driver.Version, field, version, fp, id string) bool {
	if v == nil {
		return false
	}
	p, vfp := fingerprintOf(v, field)
	return (version != "" && v.ID == version) || (fp != "" && vfp == fp) || (id != "" && p.KeyID == id)
}

// revocationCredential returns what revokes the key of store version
// version, fingerprint fp and issuer id id: its id (or the one attached to
// its fingerprint), and its value while PREVIOUS still holds it. CURRENT's
// id (cur's, nil for none) and every other id the record knows are in
// OtherIDs: an issuer matching by a partial hint must not pick them.
func (ru *run) revocationCredential(ctx context.Context, cur *driver.Version, version, fp, id string) (Credential, error) {
	k, s := ru.k, ru.s
	cred := Credential{KeyID: s.keyID(id, fp)}
	if version != "" {
		prev, err := ru.version(ctx, driver.Previous)
		if err != nil {
			return Credential{}, err
		}
		if prev != nil && prev.ID == version {
			p, _ := fingerprintOf(prev, k.Field)
			cred.Key = p.Key
			if cred.KeyID == "" {
				cred.KeyID = p.KeyID
			}
		}
	}
	others := s.otherIDs(cred.KeyID)
	if cur != nil {
		if p, cfp := fingerprintOf(cur, k.Field); s.keyID(p.KeyID, cfp) != "" && s.keyID(p.KeyID, cfp) != cred.KeyID {
			others = append(others, s.keyID(p.KeyID, cfp))
		}
	}
	cred.OtherIDs = others
	return cred, nil
}

// rolledBack ends a rotation whose old key is CURRENT again when its
// revocation comes: an operator rolled back (`keywarden put` of the old
// key) during the grace. Neither key is revoked: the old key is in use,
// and the new one, now PREVIOUS, may still be read by consumers that have
// not refreshed since the rollback (and is their fallback on a 401); the
// operator revokes it by hand once none uses it. The record goes idle with
// outcome rolled_back, a warning is logged and EventRolledBack emitted.
func (ru *run) rolledBack(ctx context.Context, cur *driver.Version) error {
	k, s := ru.k, ru.s
	reason := fmt.Sprintf("the old key (version %s, %s) is CURRENT again (version %s): rolled back by hand during the grace; it is not revoked, and neither is the new key %s (id %s, version %s), which stays valid and is listed as left valid: revoke it once no consumer uses it (`keywarden rotate --key %s --revoke-left-valid`)",
		orNone(s.OldVersion), orNone(s.OldFP), cur.ID, orNone(s.NewFP), orNone(s.NewKeyID), orNone(s.PendingVersion), k.Name)
	ru.log().Warn("rotation rolled back: the old key is CURRENT again; revoking nothing", slog.String("old_version", s.OldVersion),
		slog.String("old_fingerprint", s.OldFP), slog.String("new_fingerprint", s.NewFP), slog.String("new_key_id", s.NewKeyID))
	left := LeftValidKey{KeyID: s.keyID(s.NewKeyID, s.NewFP), Fingerprint: s.NewFP, Version: s.PendingVersion}
	return ru.endIdle(ctx, OutcomeRolledBack, reason, left, Event{Type: EventRolledBack, Outcome: OutcomeRolledBack, Reason: reason,
		NewVersion: s.PendingVersion, NewFingerprint: s.NewFP, NewKeyID: s.NewKeyID, OldVersion: s.OldVersion, OldFingerprint: s.OldFP, OldKeyID: s.OldKeyID})
}

// endUnrevoked ends a rotation in revoking without revoking the old key
// (why says why): the record goes idle with outcome, a warning is logged
// and EventNotRevoked emitted, naming the old key's version, fingerprint
// and id, which must be revoked by hand.
func (ru *run) endUnrevoked(ctx context.Context, outcome, why string) error {
	k, s := ru.k, ru.s
	reason := fmt.Sprintf("the old key (version %s, %s, id %s) was NOT revoked and is still valid: %s; it is listed as left valid: revoke it with `keywarden rotate --key %s --revoke-left-valid`, or by hand at the %s issuer and then drop it with `--forget-left-valid=%s`",
		orNone(s.OldVersion), orNone(s.OldFP), orNone(s.OldKeyID), why, k.Name, k.Issuer.Type(), orNone(s.OldFP))
	ru.log().Warn("rotation ended without revoking the old key; revoke it by hand", slog.String("old_version", s.OldVersion),
		slog.String("old_fingerprint", s.OldFP), slog.String("old_key_id", s.OldKeyID), slog.String("reason", why))
	left := LeftValidKey{KeyID: s.keyID(s.OldKeyID, s.OldFP), Fingerprint: s.OldFP, Version: s.OldVersion}
	return ru.endIdle(ctx, outcome, reason, left, Event{Type: EventNotRevoked, Outcome: outcome, Reason: reason})
}

// endIdle ends a rotation in revoking with the record idle, outcome and
// reason, without revoking anything, and emits ev. left, the key the
// rotation leaves valid, joins the record's LeftValid list in the same
// write: no crash can lose it. The key the rotation stored is the
// issuer's no more: a run that died before committing it (a pool's claim)
// left it to this one.
func (ru *run) endIdle(ctx context.Context, outcome, reason string, left LeftValidKey, ev Event) error {
	s := ru.s
	ru.commit(ctx, s.Token)
	next := s.clone()
	next.clearRotation()
	left.Outcome, left.At = outcome, ru.now().UTC().Round(0)
	next.LeftValid = addLeftValid(next.LeftValid, left)
	if len(next.LeftValid) > MaxLeftValid {
		ru.log().Error("the record lists more keys left valid than its bound; none is dropped, and no rotation starts until they are revoked (`rotate --revoke-left-valid`)",
			slog.Int("left_valid", len(next.LeftValid)), slog.Int("bound", MaxLeftValid))
	}
	next.LastOutcome, next.LastReason = outcome, reason
	next.LastFinishedAt = ru.now()
	if err := ru.save(ctx, next); err != nil {
		return err
	}
	ru.res.NewVersion, ru.res.NewFingerprint, ru.res.NewKeyID = s.PendingVersion, s.NewFP, s.NewKeyID
	ru.res.OldVersion, ru.res.OldFingerprint, ru.res.OldKeyID = s.OldVersion, s.OldFP, s.OldKeyID
	ru.res.Outcome = outcome
	ru.res.Message = reason
	ru.r.opts.Metrics.due(ru.k.Name, time.Time{})
	ru.emit(ctx, ev)
	ru.started = true // the loop ends on idle
	return ru.step(ctx, AfterDone)
}

// abandon drops a parked (or stuck) rotation, or a stray PENDING version,
// through the discarding phase, under the lease.
func (ru *run) abandon(ctx context.Context) (*Result, error) {
	s := ru.s
	if ru.leaseHeld() {
		return ru.res, ru.inProgress(s)
	}
	next := s.clone()
	switch s.Phase {
	case PhaseParked, PhaseProbing, PhaseDiscarding:
	case PhaseCreating:
		pv, err := ru.pendingVersion(ctx)
		if err != nil {
			return ru.res, err
		}
		if pv != nil && pv.Token == s.Token {
			_, fp := fingerprintOf(pv, ru.k.Field)
			next.PendingVersion, next.NewFP = pv.ID, fp
		}
	case PhaseIdle:
		pv, err := ru.pendingVersion(ctx)
		if err != nil {
			return ru.res, err
		}
		if pv == nil {
			ru.res.Outcome = OutcomeNothing
			ru.res.Message = "nothing to abandon: no rotation under way and no PENDING version"
			return ru.res, nil
		}
		// A stray PENDING (an interrupted put): discard it, revoke nothing.
		_, fp := fingerprintOf(pv, ru.k.Field)
		next.clearRotation()
		next.PendingVersion, next.NewFP = pv.ID, fp
	case PhaseRevoking:
		// A revocation that cannot go on (the issuer refuses, or cannot
		// find the old key): the operator ends it and revokes by hand.
		if err := ru.takeOver(ctx); err != nil {
			return ru.res, err
		}
		return ru.res, ru.endUnrevoked(ctx, outcomeAbandoned, "the revocation was abandoned by an operator (`rotate --abandon`)")
	default:
		return ru.res, fail(KindConflict, fmt.Errorf("rotation: %s: the rotation is in phase %s, past its probe; it cannot be abandoned: let it finish", ru.k.Name, s.Phase))
	}
	next.Phase = PhaseDiscarding
	next.Reason = "abandoned by an operator"
	next.LastOutcome, next.LastReason = outcomeAbandoned, next.Reason
	if err := ru.save(ctx, next); err != nil {
		return ru.res, err
	}
	if err := ru.step(ctx, AfterRecordDiscarding); err != nil {
		return ru.res, err
	}
	return ru.res, ru.discard(ctx)
}

// outcomeAbandoned marks, while discarding, a discard an operator asked for.
const outcomeAbandoned = "abandoned"

// issuerErr wraps an issuer's error as "rotation: KEY: WHAT: TYPE: ...",
// naming the issuer once: issuers prefix their errors with their type, and
// the type is added only when the error does not start with it.
// An issuer error that carries a store code (the key pool's store, the
// Admin key's store) is classified by that code: a corrupt or unreachable
// pool is a store error (exit 12), a pool write that lost its race a
// conflict (exit 11), not an issuer error (exit 13).
func (ru *run) issuerErr(err error, format string, args ...any) error {
	kind := KindIssuer
	if k, ok := KindOfCode(err); ok {
		kind = k
	}
	return fail(kind, issuerError(ru.k, err, fmt.Sprintf(format, args...)))
}

func issuerError(k *Key, err error, what string) error {
	typ := k.Issuer.Type()
	if strings.HasPrefix(err.Error(), typ+": ") {
		return fmt.Errorf("rotation: %s: %s: %w", k.Name, what, err)
	}
	return fmt.Errorf("rotation: %s: %s: %s: %w", k.Name, what, typ, err)
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
