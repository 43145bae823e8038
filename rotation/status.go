package rotation

import (
	"context"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// VersionStatus describes one stage of a key: never its value.
type VersionStatus struct {
	Version     string        `json:"version"`
	Fingerprint string        `json:"fingerprint"`
	KeyID       string        `json:"key_id,omitempty"`
	Created     time.Time     `json:"created,omitzero"`
	Age         time.Duration `json:"age_ns,omitempty"`
}

// KeyStatus is what `keywarden status` shows for a key. Its texts that
// quote errors (reasons, errors) are redacted (providers.RedactKeys): status
// prints them as they are.
type KeyStatus struct {
	Key      string         `json:"key"`
	Issuer   string         `json:"issuer"`
	Current  *VersionStatus `json:"current,omitempty"`
	Pending  *VersionStatus `json:"pending,omitempty"`
	Previous *VersionStatus `json:"previous,omitempty"`

	Phase      Phase     `json:"phase"`
	Holder     string    `json:"holder,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	Reason     string    `json:"reason,omitempty"`

	LastAttempt  time.Time `json:"last_attempt,omitzero"`
	LastRotated  time.Time `json:"last_rotated,omitzero"`
	LastOutcome  string    `json:"last_outcome,omitempty"`
	LastReason   string    `json:"last_reason,omitempty"`
	LastFinished time.Time `json:"last_finished,omitzero"`
	LastRevoked  time.Time `json:"last_revoked,omitzero"`
	Rotations    int       `json:"rotations"`

	// NextRun is when the schedule next makes the key due (zero without a
	// schedule, or while a rotation is under way).
	NextRun time.Time `json:"next_run,omitzero"`
	// RevokeDue is when the old key of a rotation in grace is due for
	// revocation; RevokeOverdue says that time has passed and a run will
	// revoke it.
	RevokeDue     time.Time `json:"revoke_due,omitzero"`
	RevokeOverdue bool      `json:"revoke_overdue,omitempty"`
	OldVersion    string    `json:"old_version,omitempty"`
	OldKeyID      string    `json:"old_key_id,omitempty"`
	// CurrentExpires is when CURRENT expires at the issuer (zero: never,
	// or the issuer cannot tell).
	CurrentExpires time.Time `json:"current_expires,omitzero"`
	// Gate describes the revoke gate of a rotation in grace: who still
	// reports the old key now (asked at status time), and its progress.
	Gate *GateStatus `json:"gate,omitempty"`
	// NextRefresh is when a keyless source (a short-lived token, such as
	// wif://) exchanges its token again; its expiry is CurrentExpires.
	NextRefresh time.Time `json:"next_refresh,omitzero"`
	// Keyless says the key is a short-lived token: nothing to rotate.
	Keyless bool `json:"keyless,omitempty"`
	// PoolKeys is the number of keys in the issuer's pool that a draw can
	// use (-1 when it has none or it could not be read); see
	// keywarden_pool_keys.
	PoolKeys int `json:"pool_keys"`
	// Pool lists the waiting pool keys with their expiry and why a draw
	// would skip them (issuers that are PoolInspectors).
	Pool []PoolKey `json:"pool,omitempty"`
	// LeftValid lists the keys rotations ended leaving valid at the issuer
	// (rolled_back, not_revoked, abandoned), from the rotation record,
	// until `rotate --revoke-left-valid` revokes them or
	// `--forget-left-valid` drops one revoked by hand; see
	// keywarden_rotation_keys_left_valid.
	LeftValid []LeftValidKey `json:"left_valid,omitempty"`
	// Errors lists what could not be read.
	Errors []string `json:"errors,omitempty"`
}

// GateStatus is the state of a key's revoke gate.
type GateStatus struct {
	// Consumers says where the answer comes from.
	Consumers string `json:"consumers"`
	// Holders are the consumers that report the old key now.
	Holders []Holder `json:"holders"`
	// Error is why they could not be asked.
	Error string `json:"error,omitempty"`
	// Zeros and Checks: consecutive clear checks recorded, and needed.
	Zeros  int `json:"zeros"`
	Checks int `json:"checks"`
	// LastCheck is when the gate last checked; Deadline when its max_wait
	// ends and Policy what happens then.
	LastCheck time.Time  `json:"last_check,omitzero"`
	Deadline  time.Time  `json:"deadline"`
	Policy    GatePolicy `json:"policy"`
}

// ReadStages describes the CURRENT, PENDING and PREVIOUS versions of
// secret in st (nil for a stage that does not exist): ids, fingerprints,
// key ids and ages at now, never values. errs lists the stages that could
// not be read, and those whose id is shaped like a key (shown redacted:
// rotation refuses them). It serves `keywarden status` for keys with and
// without a rotation.
func ReadStages(ctx context.Context, st driver.Stager, secret, field string, now time.Time) (current, pending, previous *VersionStatus, errs []string) {
	version := func(stage driver.Stage) *VersionStatus {
		v, err := readStage(ctx, st, secret, stage)
		if err != nil {
			if !codes.Is(err, codes.NotFound) {
				errs = append(errs, "read "+string(stage)+": "+providers.RedactKeys(err.Error()))
			}
			return nil
		}
		if err := providers.CheckVersionID(v.ID); err != nil {
			errs = append(errs, "read "+string(stage)+": "+err.Error())
		}
		p, fp := fingerprintOf(v, field)
		vs := &VersionStatus{Version: shownID(v.ID), Fingerprint: fp, KeyID: p.KeyID, Created: v.Created}
		if !v.Created.IsZero() {
			vs.Age = now.Sub(v.Created).Round(time.Second)
		}
		return vs
	}
	current = version(driver.Current)
	pending = version(driver.Pending)
	previous = version(driver.Previous)
	return current, pending, previous, errs
}

// Status reads the key's stages and rotation record. It writes nothing and
// calls no issuer other than to count a pool and ask when CURRENT expires.
// It exports what it read to Options.Metrics, so that the state gauges
// (revoke due, last success, pool, expiries, keys left valid, gate
// holders) hold the key's true state even when no run has seen it: what a
// restarted daemon shows, and what `keywarden rotate --push-gateway`
// pushes.
func (r *Rotator) Status(ctx context.Context, name string) (*KeyStatus, error) {
	k, err := r.key(name)
	if err != nil {
		return nil, err
	}
	now := r.opts.Now()
	st := &KeyStatus{Key: name, Issuer: k.Issuer.Type(), PoolKeys: -1}
	st.Current, st.Pending, st.Previous, st.Errors = ReadStages(ctx, k.Store, k.Secret, k.Field, now)
	ru := &run{r: r, k: k, res: &Result{Key: name}}
	if err := ru.load(ctx); err != nil {
		return st, err
	}
	s := ru.s
	for _, v := range []*VersionStatus{st.Current, st.Pending, st.Previous} {
		if v != nil {
			v.KeyID = s.keyID(v.KeyID, v.Fingerprint)
		}
	}
	// The reasons quote errors; a record written by an older keywarden
	// holds them unredacted (encode redacts them now).
	st.Phase, st.Holder, st.LeaseUntil, st.Reason = s.Phase, s.Holder, s.LeaseUntil, providers.RedactKeys(s.Reason)
	st.LastAttempt, st.LastRotated, st.LastOutcome, st.LastReason = s.LastAttemptAt, s.LastRotatedAt, s.LastOutcome, providers.RedactKeys(s.LastReason)
	st.LastFinished, st.LastRevoked, st.Rotations = s.LastFinishedAt, s.RevokedAt, s.Rotations
	st.LeftValid = s.LeftValid
	if s.Phase == PhaseGrace || s.Phase == PhaseRevoking {
		st.RevokeDue = ru.revokeDue()
		st.RevokeOverdue = !now.Before(st.RevokeDue)
		st.OldVersion, st.OldKeyID = s.OldVersion, s.OldKeyID
		if g := k.RevokeGate; g != nil && s.Phase == PhaseGrace {
			gs := &GateStatus{Consumers: g.Consumers.Describe(), Zeros: s.GateZeros, Checks: g.checks(),
				LastCheck: s.GateLast, Deadline: ru.gateDeadline(), Policy: g.policy()}
			if hs, err := ru.askGate(ctx); err != nil {
				gs.Error = providers.RedactKeys(err.Error())
			} else {
				gs.Holders = hs
				r.opts.Metrics.gateHolders(name, len(hs))
			}
			st.Gate = gs
		}
	}
	if s.Phase == PhaseIdle && k.Schedule != nil {
		base := s.LastAttemptAt
		if base.IsZero() && st.Current != nil {
			base = st.Current.Created
		}
		if base.IsZero() {
			st.NextRun = now
		} else {
			st.NextRun = nextDue(k.Schedule, base)
		}
	}
	r.opts.Metrics.due(name, st.RevokeDue)
	r.opts.Metrics.lastSuccess(name, st.LastRotated)
	if exp, ok := ru.currentExpiry(ctx); ok {
		st.CurrentExpires = exp
	}
	if n, keys, ok, err := ru.countPool(ctx); err != nil {
		st.Errors = append(st.Errors, "count the pool: "+providers.RedactKeys(err.Error()))
	} else if ok {
		st.PoolKeys, st.Pool = n, keys
	}
	return st, nil
}
