package anthropic

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keywarden/keywarden/providers"
)

// OrgKey is one API key of the organization as the Admin API lists it:
// never its value.
type OrgKey struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Status    string    `json:"status"`
	Hint      string    `json:"partial_key_hint"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// ListKeys returns every API key of the organization, all pages.
func (i *Issuer) ListKeys(ctx context.Context) ([]OrgKey, error) {
	var out []OrgKey
	err := i.a.each(ctx, func(k apiKey) { out = append(out, k.org()) })
	if err != nil {
		return nil, fmt.Errorf("anthropic: list the organization's API keys: %w", err)
	}
	return out, nil
}

// Managed is a key keywarden manages: where it is (Role, e.g. "prod
// CURRENT" or "prod pool"), its id when known, and its value when known
// (matched by partial_key_hint when the id is not).
type Managed struct {
	Role  string
	KeyID string
	Key   providers.Secret
	// Pool marks a pool key (expected inactive until drawn).
	Pool bool
}

// Audit classes.
const (
	ClassManaged         = "managed"          // a key keywarden manages, in a sound state
	ClassUnmanagedActive = "unmanaged_active" // active, and nobody rotates it
	ClassExpiring        = "expiring"         // expires within AuditPolicy.ExpiringWithin
	ClassTooOld          = "too_old"          // active and older than AuditPolicy.MaxAge
	ClassPoolUnusable    = "pool_unusable"    // a pool key that is archived, expired or active
	ClassAmbiguousHint   = "ambiguous_hint"   // its partial_key_hint is shared: revocation by hint cannot tell them apart
)

// Severities of findings.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// AuditPolicy sets the audit's thresholds.
type AuditPolicy struct {
	// ExpiringWithin flags keys expiring within it (0: 7 days).
	ExpiringWithin time.Duration
	// MaxAge flags active keys older than it (0: no limit).
	MaxAge time.Duration
}

// Finding is one line of an audit: a key of the organization, how it is
// classed, and why.
type Finding struct {
	OrgKey
	Class    string `json:"class"`
	Severity string `json:"severity"`
	Role     string `json:"role,omitempty"`
	Detail   string `json:"detail,omitempty"`
}

// Audit classifies every key of the organization against the keys
// keywarden manages, at now: one Finding per class that applies (a managed
// key in a sound state gets one ClassManaged finding). A managed key
// without id is recognised by its value's partial_key_hint with the rule
// the rotation uses (matchHint); when that stays ambiguous, every candidate
// gets a ClassAmbiguousHint finding saying how to attach the id, rather
// than a guess. A key sharing its hint with an active or managed key is
// ClassAmbiguousHint too. Findings are sorted by key id.
func Audit(keys []OrgKey, managed []Managed, now time.Time, p AuditPolicy) []Finding {
	if p.ExpiringWithin == 0 {
		p.ExpiringWithin = 7 * 24 * time.Hour
	}
	byHint := map[string][]string{}
	byID := map[string]int{}
	for i, k := range keys {
		byID[k.ID] = i
		if k.Hint != "" {
			byHint[k.Hint] = append(byHint[k.Hint], k.ID)
		}
	}
	// Which managed entry each org key is: by id, else by the
	// partial_key_hint rule the rotation uses for the value (matchHint,
	// never one of the ids known for other managed keys; a pool key prefers
	// the inactive key, a stored version the active one, as its draw and
	// its revocation do). A hint that still matches several keys is not
	// guessed: each candidate gets an ambiguous_hint finding instead.
	roles := map[string]Managed{}
	var known []string
	for _, m := range managed {
		if m.KeyID == "" {
			continue
		}
		known = append(known, m.KeyID)
		if _, ok := roles[m.KeyID]; !ok {
			if _, listed := byID[m.KeyID]; listed {
				roles[m.KeyID] = m
			}
		}
	}
	type candidate struct{ role, detail string }
	ambiguous := map[string]candidate{} // by org key id
	for _, m := range managed {
		if m.KeyID != "" || m.Key.IsZero() {
			continue
		}
		prefer := preferActive
		if m.Pool {
			prefer = preferInactive
		}
		i, err := matchHint(keys, m.Key, known, prefer)
		var ae *ambiguousError
		switch {
		case err == nil:
			if _, ok := roles[keys[i].ID]; !ok {
				roles[keys[i].ID] = m
			}
		case errors.As(err, &ae):
			ids := make([]string, len(ae.Candidates))
			for n, c := range ae.Candidates {
				ids[n] = keys[c].ID
			}
			how := "`keywarden key-id`"
			if m.Pool {
				how = "`keywarden pool add --key-id` (or `keywarden key-id --stage pending` once drawn)"
			}
			for _, c := range ae.Candidates {
				ambiguous[keys[c].ID] = candidate{m.Role, fmt.Sprintf("%s key %s, known by value only, matches %d keys by partial_key_hint %s (%s): which one it is cannot be told; attach its id with %s", m.Role, m.Key.Fingerprint(), len(ids), keys[c].Hint, strings.Join(ids, ", "), how)}
			}
		}
	}
	managedHint := map[string]bool{} // hints of managed keys
	for id := range roles {
		managedHint[keys[byID[id]].Hint] = true
	}
	var out []Finding
	for _, k := range keys {
		m, isManaged := roles[k.ID]
		role := m.Role
		amb, isAmb := ambiguous[k.ID]
		if !isManaged && isAmb {
			role = amb.role
		}
		add := func(class, sev, detail string) {
			out = append(out, Finding{OrgKey: k, Class: class, Severity: sev, Role: role, Detail: detail})
		}
		n := len(out)
		live := k.Status == StatusActive || (isManaged && m.Pool && k.Status == StatusInactive)
		if !isManaged && !isAmb && k.Status == StatusActive {
			add(ClassUnmanagedActive, SeverityCritical, "active, and no configured key, previous key or pool holds it: nobody rotates it")
		}
		if isManaged && m.Pool && k.Status != StatusInactive {
			add(ClassPoolUnusable, SeverityWarning, "a pool key that is "+k.Status+": rotation skips it; remove it from the pool")
		}
		if live && !k.ExpiresAt.IsZero() && now.Add(p.ExpiringWithin).After(k.ExpiresAt) {
			add(ClassExpiring, SeverityWarning, "expires at "+k.ExpiresAt.UTC().Format(time.RFC3339))
		}
		if k.Status == StatusActive && p.MaxAge > 0 && !k.CreatedAt.IsZero() && now.Sub(k.CreatedAt) > p.MaxAge {
			add(ClassTooOld, SeverityWarning, fmt.Sprintf("created %s ago (max age %s)", roundAge(now.Sub(k.CreatedAt)), p.MaxAge))
		}
		if isAmb {
			add(ClassAmbiguousHint, SeverityWarning, amb.detail)
		} else if ids := byHint[k.Hint]; len(ids) > 1 && (isManaged || k.Status == StatusActive || managedHint[k.Hint]) {
			others := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == k.ID })
			add(ClassAmbiguousHint, SeverityWarning, fmt.Sprintf("partial_key_hint %s is shared with %v: attach ids with `keywarden key-id`", k.Hint, others))
		}
		if len(out) == n && isManaged {
			add(ClassManaged, SeverityInfo, "")
		}
	}
	slices.SortStableFunc(out, func(a, b Finding) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

// roundAge rounds an age for a finding: to the hour from a day up, to the
// minute below, to the second below a minute, so that a young key never
// reads "0s ago".
func roundAge(d time.Duration) time.Duration {
	switch {
	case d >= 24*time.Hour:
		return d.Round(time.Hour)
	case d >= time.Minute:
		return d.Round(time.Minute)
	}
	return d.Round(time.Second)
}
