package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// run is one Run of one key.
type run struct {
	r   *Rotator
	k   *Key
	o   RunOptions
	s   *state // the record as last read or written; replaced, never modified
	res *Result

	// mu serialises the record's writes (the run's own and the lease
	// renewals) and guards the fields below it.
	mu        sync.Mutex
	rev       string // the record's revision, for compare-and-swap
	holding   bool   // this run holds the lease
	leaseLost bool   // a renewal found the lease broken or taken over
	cancel    context.CancelFunc
	leaseAt   time.Time // the lease expiry this run last wrote
	// ext is the record as another writer left it while this run held the
	// lease, changing no phase, token or lease (`keywarden key-id`), until
	// the run's next write takes its changes in (see reconcile).
	ext *state

	begun   time.Time
	waited  time.Duration // grace waits, excluded from Active
	crashed bool          // AfterStep stopped the run: write nothing more (set under mu)
	probed  bool          // the probe ran in this run
	issued  *Credential   // the key this run refused before the store (refuseIssued)
	started bool          // this run started a new rotation
	// holdIdle makes save keep the lease in a phase that does not hold
	// one (idle, parked): `rotate --revoke-left-valid`. Set and read by
	// the run's own goroutine only.
	holdIdle bool
}

// errCrash marks an error returned by Options.AfterStep.
type errCrash struct{ err error }

func (e *errCrash) Error() string { return e.err.Error() }
func (e *errCrash) Unwrap() error { return e.err }

func (ru *run) now() time.Time { return ru.r.opts.Now() }

func (ru *run) log() *slog.Logger { return ru.r.log.With(slog.String("key", ru.k.Name)) }

// step marks a boundary: it records it and calls Options.AfterStep.
func (ru *run) step(ctx context.Context, b Boundary) error {
	ru.res.Steps = append(ru.res.Steps, b)
	ru.log().LogAttrs(ctx, slog.LevelDebug, "rotation step", slog.String("boundary", string(b)), slog.String("phase", string(ru.s.Phase)))
	if f := ru.r.opts.AfterStep; f != nil {
		if err := f(ctx, ru.k.Name, b); err != nil {
			ru.mu.Lock()
			ru.crashed = true // the renewals stop too: a killed run writes nothing
			ru.mu.Unlock()
			return &errCrash{err}
		}
	}
	return nil
}

func (ru *run) storeErr(what string, err error) error {
	if ctxErr := ctxError(err); ctxErr != nil {
		return ctxErr
	}
	return fail(KindStore, fmt.Errorf("rotation: %s: %s: %w", ru.k.Name, what, err))
}

// ctxError returns a failure for a cancelled or expired context, or nil.
func ctxError(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		codes.Is(err, codes.Canceled) || codes.Is(err, codes.DeadlineExceeded) {
		return fail(KindFailed, fmt.Errorf("rotation: interrupted: %w", err))
	}
	return nil
}

func (ru *run) load(ctx context.Context) error {
	rec, err := ru.k.Store.ReadRecord(ctx, ru.k.Secret)
	if err != nil {
		return ru.storeErr("read the rotation record", err)
	}
	s, err := decode(rec)
	if err != nil {
		return ru.storeErr("decode the rotation record", err)
	}
	ru.mu.Lock()
	ru.s, ru.rev = s, rec.Rev
	ru.mu.Unlock()
	ru.res.Phase = s.Phase
	ru.r.opts.Metrics.leftValid(ru.k.Name, len(s.LeftValid))
	return nil
}

// state returns the record as the run last read or wrote it (nil before
// the first read).
func (ru *run) state() *state {
	ru.mu.Lock()
	defer ru.mu.Unlock()
	return ru.s
}

// editRecord changes the record without the lease, for an operator's edit
// that changes no phase (`key-id`, `--forget-left-valid`; a run under way
// takes the change in): it reads the record, lets edit build the next one
// from it (an error from edit ends the edit), and writes that
// compare-and-swap, reading again when another writer came first (three
// tries). what names the write in a store error.
func (ru *run) editRecord(ctx context.Context, what string, edit func(s *state) (*state, error)) error {
	for attempt := 0; ; attempt++ {
		if err := ru.load(ctx); err != nil {
			return err
		}
		next, err := edit(ru.state())
		if err != nil {
			return err
		}
		rec, err := ru.k.Store.WriteRecord(ctx, ru.k.Secret, ru.rev, next.encode())
		if err == nil {
			ru.mu.Lock()
			ru.s, ru.rev = next, rec.Rev
			ru.mu.Unlock()
			ru.r.opts.Metrics.leftValid(ru.k.Name, len(next.LeftValid))
			return nil
		}
		if !codes.Is(err, codes.Aborted) || attempt == 2 {
			return ru.storeErr(what, err)
		}
	}
}

// save writes next as the record, compare-and-swap on the revision read.
// Phases that hold the lease get this rotator as holder and a fresh expiry;
// others free it.
func (ru *run) save(ctx context.Context, next *state) error {
	hold := next.Phase.holdsLease() || ru.holdIdle
	if hold {
		next.Holder = ru.r.opts.Holder
		next.LeaseUntil = ru.now().Add(ru.r.opts.Lease)
	} else {
		next.Holder, next.LeaseUntil = "", time.Time{}
	}
	ru.mu.Lock()
	var err error
	for attempt := 0; ; attempt++ {
		ru.mergeExt(next)
		var rec *driver.Record
		rec, err = ru.k.Store.WriteRecord(ctx, ru.k.Secret, ru.rev, next.encode())
		if err == nil {
			ru.s, ru.rev, ru.ext = next, rec.Rev, nil
			ru.holding = hold
			ru.leaseAt = next.LeaseUntil
			break
		}
		if !codes.Is(err, codes.Aborted) || attempt == 2 || !ru.holding || !ru.reconcile(ctx) {
			break
		}
	}
	ru.mu.Unlock()
	if err != nil {
		if codes.Is(err, codes.Aborted) {
			return ru.lost(ctx, err)
		}
		return ru.storeErr("write the rotation record", err)
	}
	ru.res.Phase = next.Phase
	ru.r.opts.Metrics.leftValid(ru.k.Name, len(next.LeftValid))
	return nil
}

// isHolding reports whether this run holds the lease.
func (ru *run) isHolding() bool {
	ru.mu.Lock()
	defer ru.mu.Unlock()
	return ru.holding
}

// renewLoop renews the lease every Rotator.renewEvery while the run holds
// it, until stop is closed. A renewal that loses its compare-and-swap
// means the lease was broken (`--break-lease`) or taken over: the run's
// context is cancelled so that it stops at once, whatever it waits for.
func (ru *run) renewLoop(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(ru.r.renewEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := ru.renew(ctx); err != nil {
			ru.log().Warn("could not renew the rotation lease", slog.String("error", err.Error()))
		}
	}
}

// renew extends the lease held by this run: one compare-and-swap write of
// the record with a later expiry and nothing else changed.
func (ru *run) renew(ctx context.Context) error {
	ru.mu.Lock()
	defer ru.mu.Unlock()
	if !ru.holding || ru.crashed {
		return nil
	}
	base := ru.s
	if ru.ext != nil {
		base = ru.ext
	}
	next := base.clone()
	next.Holder = ru.r.opts.Holder
	next.LeaseUntil = ru.now().Add(ru.r.opts.Lease)
	rec, err := ru.k.Store.WriteRecord(ctx, ru.k.Secret, ru.rev, next.encode())
	if err != nil && codes.Is(err, codes.Aborted) && ru.reconcile(ctx) {
		// Another writer changed the record but not the lease (`keywarden
		// key-id`): renew over its change.
		next = ru.ext.clone()
		next.Holder = ru.r.opts.Holder
		next.LeaseUntil = ru.now().Add(ru.r.opts.Lease)
		rec, err = ru.k.Store.WriteRecord(ctx, ru.k.Secret, ru.rev, next.encode())
	}
	if err != nil {
		if codes.Is(err, codes.Aborted) {
			ru.holding, ru.leaseLost = false, true
			ru.log().Warn("the rotation lease was broken or taken over; stopping this run")
			if ru.cancel != nil {
				ru.cancel()
			}
		}
		return err
	}
	ru.rev, ru.leaseAt = rec.Rev, next.LeaseUntil
	if ru.ext != nil {
		ru.ext = next
	}
	return nil
}

// reconcile, called with mu held after this run lost a compare-and-swap
// on the record while holding the lease, re-reads the record: when its
// holder, lease, phase and token are still this run's, the writer changed
// only what needs no lease (SetKeyID's key ids), and the run goes on from
// the new revision, keeping the writer's changes in ext for its next
// write. Otherwise the lease was broken or taken over: false.
func (ru *run) reconcile(ctx context.Context) bool {
	rec, err := ru.k.Store.ReadRecord(ctx, ru.k.Secret)
	if err != nil {
		return false
	}
	s, err := decode(rec)
	if err != nil || s.Holder != ru.r.opts.Holder || !s.LeaseUntil.Equal(ru.leaseAt) || s.Phase != ru.s.Phase || s.Token != ru.s.Token {
		return false
	}
	ru.rev, ru.ext = rec.Rev, s
	ru.log().Info("the rotation record changed under this run without touching its lease (a key id attached?); going on with the change")
	return true
}

// mergeExt, called with mu held, takes into next the key ids another
// writer attached (ext) since this run's last write (ru.s), unless next
// changes them itself.
func (ru *run) mergeExt(next *state) {
	ext, base := ru.ext, ru.s
	if ext == nil || base == nil {
		return
	}
	for fp, id := range ext.KeyIDs {
		if base.KeyIDs[fp] != id {
			if next.KeyIDs == nil {
				next.KeyIDs = map[string]string{}
			}
			next.KeyIDs[fp] = id
		}
	}
	for _, e := range base.LeftValid {
		if !slices.ContainsFunc(ext.LeftValid, func(x LeftValidKey) bool { return x.names(e.Fingerprint, e.KeyID) }) {
			// Forgotten meanwhile (`rotate --forget-left-valid`).
			next.LeftValid = dropLeftValid(next.LeftValid, e.Fingerprint, e.KeyID)
		}
	}
	if ext.NewKeyID != base.NewKeyID && next.NewKeyID == base.NewKeyID {
		next.NewKeyID = ext.NewKeyID
	}
	if ext.OldKeyID != base.OldKeyID && next.OldKeyID == base.OldKeyID {
		next.OldKeyID = ext.OldKeyID
	}
}

// errLeaseLost reports a run stopped because its lease was broken or
// taken over while it worked.
func (ru *run) errLeaseLost() error {
	return fail(KindConflict, fmt.Errorf("rotation: %s: the lease was broken (`rotate --break-lease`) or taken over while this run worked; it stopped: %w", ru.k.Name, ErrInProgress))
}

// breakLease frees the key's lease whoever holds it, logging who held it
// until when, and emits EventLeaseBroken. A live holder's renewal racing
// the break is retried over: the operator's break wins.
func (ru *run) breakLease(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		s := ru.s
		if s.Holder == "" {
			ru.log().Info("no lease to break", slog.String("phase", string(s.Phase)))
			return nil
		}
		next := s.clone()
		next.Holder, next.LeaseUntil = "", time.Time{}
		ru.mu.Lock()
		rec, err := ru.k.Store.WriteRecord(ctx, ru.k.Secret, ru.rev, next.encode())
		if err == nil {
			ru.s, ru.rev = next, rec.Rev
		}
		ru.mu.Unlock()
		if err == nil {
			ru.log().Warn("rotation lease broken", slog.String("holder", s.Holder),
				slog.Time("lease_until", s.LeaseUntil), slog.String("phase", string(s.Phase)))
			ru.emit(ctx, Event{Type: EventLeaseBroken, Holder: s.Holder, LeaseUntil: s.LeaseUntil})
			return nil
		}
		if !codes.Is(err, codes.Aborted) {
			return ru.storeErr("break the lease", err)
		}
		if attempt == breakAttempts-1 {
			return fail(KindConflict, fmt.Errorf("rotation: %s: break the lease: the record changed %d times in a row; run again: %w", ru.k.Name, breakAttempts, err))
		}
		if err := ru.load(ctx); err != nil {
			return err
		}
	}
}

// breakAttempts bounds the compare-and-swap tries of breakLease.
const breakAttempts = 5

// lost reports a lost compare-and-swap on the record: another rotator
// wrote it since this run read it.
func (ru *run) lost(ctx context.Context, cause error) error {
	ru.mu.Lock()
	ru.holding = false
	ru.mu.Unlock()
	if err := ru.load(ctx); err != nil {
		return fail(KindConflict, fmt.Errorf("rotation: %s: another rotator changed the rotation record: %w", ru.k.Name, cause))
	}
	if s := ru.s; s.Holder != "" && s.Holder != ru.r.opts.Holder {
		return ru.inProgress(s)
	}
	return fail(KindConflict, fmt.Errorf("rotation: %s: another rotator changed the rotation record (now in phase %s); run again: %w", ru.k.Name, ru.s.Phase, ErrInProgress))
}

func (ru *run) inProgress(s *state) error {
	return fail(KindConflict, fmt.Errorf("rotation: %s: %w: phase %s, held by %s until %s", ru.k.Name, ErrInProgress,
		s.Phase, s.Holder, s.LeaseUntil.UTC().Format(time.RFC3339)))
}

// leaseHeld reports whether another rotator holds a live lease on the key.
func (ru *run) leaseHeld() bool {
	s := ru.s
	return s.Holder != "" && s.Holder != ru.r.opts.Holder && ru.now().Before(s.LeaseUntil)
}

// release frees the lease after a failed run that still holds it, and
// records the outcome, so that the next run resumes at once.
func (ru *run) release(ctx context.Context, cause error) {
	ru.mu.Lock()
	defer ru.mu.Unlock()
	if !ru.holding || ru.s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	next := ru.s.clone()
	next.Holder, next.LeaseUntil = "", time.Time{}
	next.LastOutcome = KindOf(cause).String()
	next.LastReason = cause.Error()
	next.LastFinishedAt = ru.now()
	rec, err := ru.k.Store.WriteRecord(ctx, ru.k.Secret, ru.rev, next.encode())
	if err != nil {
		ru.log().Warn("could not release the rotation lease; it expires by itself", slog.String("error", err.Error()),
			slog.Time("lease_until", ru.s.LeaseUntil))
		return
	}
	ru.s, ru.rev = next, rec.Rev
	ru.holding = false
}

// emit sends e to the key's and the rotator's notifiers.
func (ru *run) emit(ctx context.Context, e Event) {
	if ru.o.DryRun {
		return
	}
	e.Key = ru.k.Name
	e.Time = ru.now().UTC()
	// Reason quotes errors (an issuer's, a probe's, a gate's): webhooks
	// get it as it is.
	e.Reason = providers.RedactKeys(e.Reason)
	if ru.s != nil {
		e.Phase = ru.s.Phase
		if e.NewVersion == "" {
			e.NewVersion, e.NewFingerprint, e.NewKeyID = ru.s.PendingVersion, ru.s.NewFP, ru.s.NewKeyID
		}
		if e.OldVersion == "" {
			e.OldVersion, e.OldFingerprint, e.OldKeyID = ru.s.OldVersion, ru.s.OldFP, ru.s.OldKeyID
		}
	}
	ctx = context.WithoutCancel(ctx)
	for _, n := range append(append([]Notifier(nil), ru.r.opts.Notifiers...), ru.k.Notifiers...) {
		if err := n.Notify(ctx, e); err != nil {
			ru.log().Warn("notification failed", slog.String("event", string(e.Type)), slog.String("error", err.Error()))
		}
	}
}

func (ru *run) do(ctx context.Context) (*Result, error) {
	if err := ru.load(ctx); err != nil {
		return ru.res, err
	}
	if ru.o.DryRun {
		if ru.o.RevokeLeftValid {
			return ru.revokeLeftValid(ctx)
		}
		return ru.plan(ctx)
	}
	if ru.o.BreakLease {
		if err := ru.breakLease(ctx); err != nil {
			return ru.res, err
		}
	}
	if ru.o.Abandon {
		return ru.abandon(ctx)
	}
	if ru.o.RevokeLeftValid {
		return ru.revokeLeftValid(ctx)
	}
	for {
		if err := ctx.Err(); err != nil {
			return ru.res, ctxError(err)
		}
		s := ru.s
		// An idle record is held only by `rotate --revoke-left-valid`.
		if s.Phase.holdsLease() || s.Phase == PhaseParked || s.Phase == PhaseIdle {
			if ru.leaseHeld() {
				return ru.res, ru.inProgress(s)
			}
		}
		var err error
		switch s.Phase {
		case PhaseIdle:
			if ru.started {
				return ru.finish(), nil
			}
			var done bool
			done, err = ru.begin(ctx)
			if done {
				return ru.res, err
			}
		case PhaseCreating:
			err = ru.create(ctx)
		case PhaseProbing:
			err = ru.probe(ctx)
		case PhaseParked:
			if ru.probed {
				return ru.res, fail(KindProbe, fmt.Errorf("rotation: %s: the new key failed its probe and is parked as PENDING version %s; CURRENT is untouched: %s", ru.k.Name, s.PendingVersion, s.Reason))
			}
			// Probe the parked key again.
			next := s.clone()
			next.Phase = PhaseProbing
			err = ru.save(ctx, next)
		case PhaseDiscarding:
			err = ru.discard(ctx)
		case PhasePromoting:
			err = ru.promote(ctx)
		case PhaseGrace:
			var done bool
			done, err = ru.grace(ctx)
			if done {
				return ru.res, err
			}
		case PhaseRevoking:
			err = ru.revoke(ctx)
		default:
			err = fail(KindFailed, fmt.Errorf("rotation: %s: unknown phase %q", ru.k.Name, s.Phase))
		}
		if err != nil {
			return ru.res, err
		}
	}
}

// finish fills the result of a run that ended with the key idle.
func (ru *run) finish() *Result {
	s := ru.s
	ru.res.OldVersion, ru.res.OldFingerprint, ru.res.OldKeyID = s.OldVersion, s.OldFP, s.OldKeyID
	if ru.res.Outcome == "" {
		ru.res.Outcome = OutcomeRevoked
	}
	if ru.res.Message == "" {
		ru.res.Message = fmt.Sprintf("rotated; old version %s (%s) revoked", orNone(s.OldVersion), orNone(s.OldFP))
	}
	return ru.res
}

// currentVersion reads CURRENT, nil when there is none (see version).
func (ru *run) currentVersion(ctx context.Context) (*driver.Version, error) {
	return ru.version(ctx, driver.Current)
}

// pendingVersion reads PENDING, nil when there is none (see version).
func (ru *run) pendingVersion(ctx context.Context) (*driver.Version, error) {
	return ru.version(ctx, driver.Pending)
}

// due reports whether a new rotation is due, and when the next one is:
// by the schedule, or because CURRENT expires within RotateBeforeExpiry.
func (ru *run) due(ctx context.Context) (bool, time.Time, error) {
	if exp, ok := ru.expiresSoon(ctx); ok {
		ru.log().Warn("CURRENT expires within rotate_before_expiry: rotating now, whatever the schedule says",
			slog.Time("expires_at", exp), slog.Duration("rotate_before_expiry", ru.k.RotateBeforeExpiry))
		return true, time.Time{}, nil
	}
	if ru.k.Schedule == nil {
		return true, time.Time{}, nil
	}
	base := ru.s.LastAttemptAt
	if base.IsZero() {
		cur, err := ru.currentVersion(ctx)
		if err != nil {
			return false, time.Time{}, err
		}
		if cur != nil {
			base = cur.Created
		}
	}
	return isDue(ru.k.Schedule, base, ru.now()), nextDue(ru.k.Schedule, base), nil
}

// currentExpiry asks the issuer when CURRENT's key expires (zero: never),
// and exports it as keywarden_key_expiry_timestamp_seconds. ok is false
// when the issuer cannot tell.
func (ru *run) currentExpiry(ctx context.Context) (time.Time, bool) {
	er, isER := ru.k.Issuer.(ExpiryReporter)
	if !isER {
		return time.Time{}, false
	}
	cur, err := ru.currentVersion(ctx)
	if err != nil || cur == nil {
		return time.Time{}, false
	}
	p, fp := fingerprintOf(cur, ru.k.Field)
	c := Credential{Key: p.Key, KeyID: ru.s.keyID(p.KeyID, fp)}
	exp, err := er.Expiry(ctx, c)
	if err != nil {
		ru.log().Warn("could not read when CURRENT expires", slog.String("fingerprint", fp), slog.String("error", err.Error()))
		return time.Time{}, false
	}
	ru.r.opts.Metrics.expiry(ru.k.Name, exp)
	return exp, true
}

// expiresSoon reports whether CURRENT expires within RotateBeforeExpiry,
// and when.
func (ru *run) expiresSoon(ctx context.Context) (time.Time, bool) {
	if ru.k.RotateBeforeExpiry <= 0 {
		return time.Time{}, false
	}
	exp, ok := ru.currentExpiry(ctx)
	if !ok || exp.IsZero() {
		return time.Time{}, false
	}
	return exp, !ru.now().Add(ru.k.RotateBeforeExpiry).Before(exp)
}

// begin starts a new rotation when one is due. done reports that the run
// ends here (nothing due, or an error).
func (ru *run) begin(ctx context.Context) (done bool, err error) {
	if !ru.o.Force {
		due, next, err := ru.due(ctx)
		if err != nil {
			return true, err
		}
		if !due {
			// Keep the pool's metrics current between rotations (keys are
			// added, expire or are archived meanwhile).
			if _, _, _, err := ru.countPool(ctx); err != nil {
				ru.log().Warn("could not count the issuer's pool", slog.String("error", err.Error()))
			}
			ru.res.Outcome = OutcomeNothing
			ru.res.NextDue = next
			ru.res.Message = "nothing due; next rotation due at " + next.UTC().Format(time.RFC3339)
			return true, nil
		}
	}
	if n := len(ru.s.LeftValid); n >= MaxLeftValid {
		return true, fail(KindConflict, fmt.Errorf("rotation: %s: %d keys that rotations left valid are listed in the rotation record (the bound is %d); no rotation starts until they are revoked: run `keywarden rotate --key %s --revoke-left-valid` (or revoke by hand, then `--forget-left-valid`)", ru.k.Name, n, MaxLeftValid, ru.k.Name))
	}
	if pv, err := ru.strayPending(ctx); err != nil {
		return true, err
	} else if pv != nil {
		return true, fail(KindConflict, fmt.Errorf("rotation: %s: the store holds a PENDING version %s that no recorded rotation wrote (an interrupted `keywarden put`?); run `keywarden rotate --key %s --abandon` to discard it", ru.k.Name, pv.ID, ru.k.Name))
	}
	// CURRENT becomes the old version, whose id the run records and
	// prints: one shaped like a key is refused (see version) before
	// anything is written.
	if _, err := ru.currentVersion(ctx); err != nil {
		return true, err
	}
	next := ru.s.clone()
	next.clearRotation()
	next.Phase = PhaseCreating
	next.Token = newToken()
	next.StartedAt = ru.now()
	// The schedule's activation this rotation serves: one a few seconds
	// ahead counts as served, so that it is not due again at its time.
	next.LastAttemptAt = servedSlot(ru.k.Schedule, next.StartedAt)
	next.OldVersion, next.OldKeyID, next.OldFP = "", "", ""
	next.PromotedAt, next.RevokeDue, next.RevokedAt = time.Time{}, time.Time{}, time.Time{}
	if err := ru.save(ctx, next); err != nil {
		return true, err
	}
	ru.started = true
	ru.log().Info("rotation started", slog.String("token", next.Token[:8]), slog.String("issuer", ru.k.Issuer.Type()))
	return false, ru.step(ctx, AfterLease)
}

// takeOver makes this run the lease holder of a rotation under way.
func (ru *run) takeOver(ctx context.Context) error {
	if ru.isHolding() {
		return nil
	}
	if ru.s.Holder != "" && ru.s.Holder != ru.r.opts.Holder {
		ru.log().Warn("taking over a rotation whose holder's lease expired", slog.String("phase", string(ru.s.Phase)),
			slog.String("holder", ru.s.Holder))
	}
	return ru.save(ctx, ru.s.clone())
}
