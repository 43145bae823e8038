package rotation

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// Phase is where a key's rotation stands, as kept in its rotation record.
type Phase string

// The phases; see the package documentation for the table of what the next
// run does in each.
const (
	// PhaseIdle: no rotation under way (none yet, or the last one ended).
	PhaseIdle Phase = "idle"
	// PhaseCreating: a rotation with a token started; the new key may or may
	// not be PENDING yet.
	PhaseCreating Phase = "creating"
	// PhaseProbing: the new key is PENDING; it is activated and probed next.
	PhaseProbing Phase = "probing"
	// PhaseParked: the new key failed its probe and stays PENDING; the next
	// run probes it again.
	PhaseParked Phase = "parked"
	// PhaseDiscarding: the new key failed its probe (or lost a race) and is
	// being dropped: PENDING discarded, the key revoked at the issuer.
	PhaseDiscarding Phase = "discarding"
	// PhasePromoting: the new key passed; PENDING becomes CURRENT next.
	PhasePromoting Phase = "promoting"
	// PhaseGrace: the new key is CURRENT; the old one stays valid until the
	// grace period is over.
	PhaseGrace Phase = "grace"
	// PhaseRevoking: grace is over; the old key is revoked next.
	PhaseRevoking Phase = "revoking"
)

// holdsLease reports whether a run in phase p works under the lease.
func (p Phase) holdsLease() bool {
	switch p {
	case PhaseCreating, PhaseProbing, PhaseDiscarding, PhasePromoting, PhaseRevoking:
		return true
	}
	return false
}

// recordVersion is the format version of the record's data: "1", or "2"
// for a record holding a left_valid list. A keywarden older than the list
// reads "1" only and writes back the fields it knows: given a list it
// would drop it, and with it the only durable name of keys left valid, so
// such a record says "2", which it refuses ("upgrade keywarden"). A record
// without a list stays readable by it. This keywarden reads both.
const (
	recordVersion     = "1"
	recordVersionList = "2"
)

// state is a decoded rotation record. Every field is persisted; the record
// is written before each step's side effect, so a run killed anywhere
// resumes from it.
type state struct {
	Phase      Phase
	Token      string    // the rotation's token (PutPending, issuer idempotence)
	Holder     string    // who holds the lease, "" for nobody
	LeaseUntil time.Time // when the holder's lease expires
	StartedAt  time.Time // when the rotation began

	PendingVersion string // the new key's store version, once PENDING
	NewKeyID       string // the new key's issuer id
	NewFP          string // the new key's fingerprint

	OldVersion string // the version that was CURRENT when the new key was promoted
	OldKeyID   string // its issuer id, when known
	OldFP      string // its fingerprint

	PromotedAt time.Time
	RevokeDue  time.Time // PromotedAt + grace
	RevokedAt  time.Time // when the old key of the last rotation was revoked

	Reason string // why the rotation is parked or being discarded

	LastOutcome    string    // outcome of the last run that ended a step: see Outcome*
	LastReason     string    // its reason, when it failed
	LastAttemptAt  time.Time // when the last rotation (of any outcome) started
	LastRotatedAt  time.Time // when the last successful promotion happened
	LastFinishedAt time.Time // when the last run ended
	Rotations      int       // successful promotions so far

	// The revoke gate's progress (keys with a RevokeGate).
	GateSince   time.Time // the first check of this rotation's gate
	GateLast    time.Time // the last check
	GateZeros   int       // consecutive checks that found no holder
	GateHolders string    // who held the old key at the last check, for people

	// KeyIDs maps key fingerprints to issuer key ids attached by an
	// operator (`keywarden key-id`), for stored keys whose payload has none.
	KeyIDs map[string]string

	// LeftValid lists the keys that rotations ended leaving valid at the
	// issuer (rolled_back, not_revoked, abandoned), oldest first, until
	// `rotate --revoke-left-valid` revokes them or `--forget-left-valid`
	// drops one; see LeftValidKey.
	LeftValid []LeftValidKey
}

// LeftValidKey names a key that a rotation ended leaving valid at the
// issuer, never its value. Entries live in the rotation record: appended
// in the write that ends the rotation, so no crash loses one, and kept
// through any number of later rotations.
type LeftValidKey struct {
	// KeyID is the key's issuer id ("" when unknown: keywarden cannot
	// revoke it; revoke it by hand, then `--forget-left-valid`).
	KeyID string `json:"key_id,omitempty"`
	// Fingerprint is the key's fingerprint.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Version is the store version that held the key.
	Version string `json:"version,omitempty"`
	// Outcome is the outcome of the rotation that left it valid
	// (rolled_back, not_revoked or abandoned).
	Outcome string `json:"outcome"`
	// At is when that rotation ended.
	At time.Time `json:"at"`
}

// MaxLeftValid bounds the record's list of keys left valid. No entry is
// ever dropped to make room: a rotation leaves at most one key valid, and
// once the list holds MaxLeftValid keys no new rotation starts (the run
// fails with a conflict, exit 11) until `rotate --revoke-left-valid` or
// `--forget-left-valid` shortens it.
const MaxLeftValid = 32

// names reports whether e names the key of fingerprint fp or issuer id id.
func (e LeftValidKey) names(fp, id string) bool {
	return (fp != "" && e.Fingerprint == fp) || (id != "" && e.KeyID == id)
}

// addLeftValid returns list with e appended, or merged into the entry that
// names the same key (by fingerprint or issuer id), filling what it lacks.
func addLeftValid(list []LeftValidKey, e LeftValidKey) []LeftValidKey {
	if e.KeyID == "" && e.Fingerprint == "" {
		return list
	}
	out := slices.Clone(list)
	for i, have := range out {
		if have.names(e.Fingerprint, e.KeyID) {
			if have.KeyID == "" {
				out[i].KeyID = e.KeyID
			}
			if have.Fingerprint == "" {
				out[i].Fingerprint = e.Fingerprint
			}
			if have.Version == "" {
				out[i].Version = e.Version
			}
			return out
		}
	}
	return append(out, e)
}

// dropLeftValid returns list without the entries naming the key of
// fingerprint fp or issuer id id.
func dropLeftValid(list []LeftValidKey, fp, id string) []LeftValidKey {
	return slices.DeleteFunc(slices.Clone(list), func(e LeftValidKey) bool { return e.names(fp, id) })
}

// Outcomes recorded in the record, reported in events and metrics.
const (
	OutcomeRotated   = "rotated" // a new key was promoted
	OutcomeRevoked   = "revoked" // the old key was revoked: the rotation is complete
	OutcomeNothing   = "nothing_due"
	OutcomeWaiting   = "grace"     // promoted; revocation not due yet
	OutcomeParked    = "parked"    // probe failed; pending key kept
	OutcomeDiscarded = "discarded" // probe failed; pending key dropped
	OutcomeGate      = "gate"      // grace over; the revoke gate waits for consumers to let go of the old key
	// OutcomeRolledBack: the old key was CURRENT again when its revocation
	// came (an operator's rollback); neither key was revoked.
	OutcomeRolledBack = "rolled_back"
	// OutcomeNotRevoked: the rotation ended without revoking the old key
	// (nothing to revoke it by, or an operator abandoned the revocation).
	OutcomeNotRevoked = "not_revoked"
)

const timeFormat = time.RFC3339Nano

func putTime(m map[string]string, k string, t time.Time) {
	if !t.IsZero() {
		m[k] = t.UTC().Format(timeFormat)
	}
}

func putStr(m map[string]string, k, v string) {
	if v != "" {
		m[k] = v
	}
}

// encode returns the record's data. The texts for people (reasons, gate
// holders) are redacted (providers.RedactKeys): they quote errors, and
// some stores keep the record where a reader of metadata sees it (GCP:
// annotations); status prints them.
func (s *state) encode() map[string]string {
	v := recordVersion
	if len(s.LeftValid) > 0 {
		v = recordVersionList
	}
	m := map[string]string{"v": v, "phase": string(s.Phase)}
	putStr(m, "token", s.Token)
	putStr(m, "holder", s.Holder)
	putTime(m, "lease_until", s.LeaseUntil)
	putTime(m, "started_at", s.StartedAt)
	putStr(m, "pending_version", s.PendingVersion)
	putStr(m, "new_key_id", s.NewKeyID)
	putStr(m, "new_fp", s.NewFP)
	putStr(m, "old_version", s.OldVersion)
	putStr(m, "old_key_id", s.OldKeyID)
	putStr(m, "old_fp", s.OldFP)
	putTime(m, "promoted_at", s.PromotedAt)
	putTime(m, "revoke_due", s.RevokeDue)
	putTime(m, "revoked_at", s.RevokedAt)
	putStr(m, "reason", providers.RedactKeys(s.Reason))
	putStr(m, "last_outcome", s.LastOutcome)
	putStr(m, "last_reason", providers.RedactKeys(s.LastReason))
	putTime(m, "last_attempt_at", s.LastAttemptAt)
	putTime(m, "last_rotated_at", s.LastRotatedAt)
	putTime(m, "last_finished_at", s.LastFinishedAt)
	if s.Rotations > 0 {
		m["rotations"] = strconv.Itoa(s.Rotations)
	}
	putTime(m, "gate_since", s.GateSince)
	putTime(m, "gate_last", s.GateLast)
	if s.GateZeros > 0 {
		m["gate_zeros"] = strconv.Itoa(s.GateZeros)
	}
	putStr(m, "gate_holders", providers.RedactKeys(s.GateHolders))
	if len(s.KeyIDs) > 0 {
		b, _ := json.Marshal(s.KeyIDs)
		m["key_ids"] = string(b)
	}
	if len(s.LeftValid) > 0 {
		b, _ := json.Marshal(s.LeftValid)
		m["left_valid"] = string(b)
	}
	return m
}

// decode reads a record. A record without data is an idle key. A version
// id shaped like a key, which a record written before rotation refused
// such ids may hold, is read redacted (shownID): it is printed (status,
// events, results, messages), and it names no version a run takes in.
func decode(r *driver.Record) (*state, error) {
	s := &state{Phase: PhaseIdle}
	m := r.Data
	if len(m) == 0 {
		return s, nil
	}
	if v := m["v"]; v != recordVersion && v != recordVersionList {
		return nil, codes.Errorf(codes.FailedPrecondition, "the rotation record has format version %q; this keywarden reads %q and %q: upgrade keywarden", v, recordVersion, recordVersionList)
	}
	var errs []string
	tm := func(k string) time.Time {
		v, ok := m[k]
		if !ok {
			return time.Time{}
		}
		t, err := time.Parse(timeFormat, v)
		if err != nil {
			errs = append(errs, k)
		}
		return t
	}
	s.Phase = Phase(m["phase"])
	switch s.Phase {
	case PhaseIdle, PhaseCreating, PhaseProbing, PhaseParked, PhaseDiscarding, PhasePromoting, PhaseGrace, PhaseRevoking:
	default:
		errs = append(errs, "phase")
	}
	s.Token = m["token"]
	s.Holder = m["holder"]
	s.LeaseUntil = tm("lease_until")
	s.StartedAt = tm("started_at")
	s.PendingVersion = shownID(m["pending_version"])
	s.NewKeyID = m["new_key_id"]
	s.NewFP = m["new_fp"]
	s.OldVersion = shownID(m["old_version"])
	s.OldKeyID = m["old_key_id"]
	s.OldFP = m["old_fp"]
	s.PromotedAt = tm("promoted_at")
	s.RevokeDue = tm("revoke_due")
	s.RevokedAt = tm("revoked_at")
	s.Reason = m["reason"]
	s.LastOutcome = m["last_outcome"]
	s.LastReason = m["last_reason"]
	s.LastAttemptAt = tm("last_attempt_at")
	s.LastRotatedAt = tm("last_rotated_at")
	s.LastFinishedAt = tm("last_finished_at")
	if v, ok := m["rotations"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			errs = append(errs, "rotations")
		}
		s.Rotations = n
	}
	s.GateSince = tm("gate_since")
	s.GateLast = tm("gate_last")
	s.GateHolders = m["gate_holders"]
	if v, ok := m["gate_zeros"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			errs = append(errs, "gate_zeros")
		}
		s.GateZeros = n
	}
	if v, ok := m["key_ids"]; ok {
		if err := json.Unmarshal([]byte(v), &s.KeyIDs); err != nil {
			errs = append(errs, "key_ids")
		}
	}
	if v, ok := m["left_valid"]; ok {
		if err := json.Unmarshal([]byte(v), &s.LeftValid); err != nil || slices.ContainsFunc(s.LeftValid, func(e LeftValidKey) bool {
			return e.KeyID == "" && e.Fingerprint == "" || e.Outcome == ""
		}) {
			errs = append(errs, "left_valid")
		}
		for i := range s.LeftValid {
			s.LeftValid[i].Version = shownID(s.LeftValid[i].Version)
		}
	}
	if len(errs) > 0 {
		return nil, codes.Errorf(codes.Internal, "the rotation record is corrupt (fields %v); inspect it in the store, or delete it to start over", errs)
	}
	return s, nil
}

// refusedIssued reports whether a discarding rotation's key was refused
// before it reached the store (refuseIssued): it has a fingerprint and no
// PENDING version. (An abandoned rotation that had no PENDING has neither.)
func (s *state) refusedIssued() bool {
	return s.Phase == PhaseDiscarding && s.PendingVersion == "" && s.NewFP != "" && s.Token != ""
}

// abandonedUnstored reports whether a discarding rotation was abandoned
// in phase creating before its key reached the store: it has a token and
// neither a PENDING version nor a fingerprint. The issuer may have handed
// out a key for the token (a run died between Create and PutPending); only
// the token finds it.
func (s *state) abandonedUnstored() bool {
	return s.Phase == PhaseDiscarding && s.PendingVersion == "" && s.NewFP == "" && s.Token != ""
}

// clone returns a copy of s to modify before a write.
func (s *state) clone() *state {
	c := *s
	c.KeyIDs = maps.Clone(s.KeyIDs)
	c.LeftValid = slices.Clone(s.LeftValid)
	return &c
}

// keyID returns have, or else the id attached to the key of fingerprint
// fp.
func (s *state) keyID(have, fp string) string {
	if have != "" || fp == "" {
		return have
	}
	return s.KeyIDs[fp]
}

// otherIDs returns the issuer ids the record knows, except this one's.
func (s *state) otherIDs(this string) []string {
	seen := map[string]bool{"": true, this: true}
	var out []string
	add := func(id string) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	add(s.NewKeyID)
	add(s.OldKeyID)
	for _, fp := range slices.Sorted(maps.Keys(s.KeyIDs)) {
		add(s.KeyIDs[fp])
	}
	for _, e := range s.LeftValid {
		add(e.KeyID)
	}
	return out
}

// clearRotation forgets the fields of the rotation under way, keeping the
// history.
func (s *state) clearRotation() {
	s.Phase = PhaseIdle
	s.Token, s.Holder = "", ""
	s.LeaseUntil, s.StartedAt = time.Time{}, time.Time{}
	s.PendingVersion, s.NewKeyID, s.NewFP = "", "", ""
	s.Reason = ""
	s.GateSince, s.GateLast, s.GateZeros, s.GateHolders = time.Time{}, time.Time{}, 0, ""
}
