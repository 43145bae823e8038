package anthropic

import (
	"context"
	"fmt"
	"slices"
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
	err := i.a.each(ctx, func(k apiKey) {
		out = append(out, OrgKey{ID: k.ID, Name: k.Name, Status: k.Status, Hint: k.PartialKeyHint, CreatedAt: k.CreatedAt, ExpiresAt: k.expiry()})
	})
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
// key in a sound state gets one ClassManaged finding). Findings are sorted
// by key id.
func Audit(keys []OrgKey, managed []Managed, now time.Time, p AuditPolicy) []Finding {
	if p.ExpiringWithin == 0 {
		p.ExpiringWithin = 7 * 24 * time.Hour
	}
	byHint := map[string][]string{}
	for _, k := range keys {
		if k.Hint != "" {
			byHint[k.Hint] = append(byHint[k.Hint], k.ID)
		}
	}
	// Which managed entry each org key is: by id, else by a hint that
	// matches the value.
	roles := map[string]Managed{}
	for _, m := range managed {
		for _, k := range keys {
			if (m.KeyID != "" && m.KeyID == k.ID) || (m.KeyID == "" && !m.Key.IsZero() && hintMatches(k.Hint, m.Key.Reveal())) {
				if _, ok := roles[k.ID]; !ok {
					roles[k.ID] = m
				}
			}
		}
	}
	var out []Finding
	for _, k := range keys {
		m, isManaged := roles[k.ID]
		add := func(class, sev, detail string) {
			out = append(out, Finding{OrgKey: k, Class: class, Severity: sev, Role: m.Role, Detail: detail})
		}
		n := len(out)
		live := k.Status == StatusActive || (isManaged && m.Pool && k.Status == StatusInactive)
		if !isManaged && k.Status == StatusActive {
			add(ClassUnmanagedActive, SeverityCritical, "active, and no configured key, previous key or pool holds it: nobody rotates it")
		}
		if isManaged && m.Pool && k.Status != StatusInactive {
			add(ClassPoolUnusable, SeverityWarning, "a pool key that is "+k.Status+": rotation skips it; remove it from the pool")
		}
		if live && !k.ExpiresAt.IsZero() && now.Add(p.ExpiringWithin).After(k.ExpiresAt) {
			add(ClassExpiring, SeverityWarning, "expires at "+k.ExpiresAt.UTC().Format(time.RFC3339))
		}
		if k.Status == StatusActive && p.MaxAge > 0 && !k.CreatedAt.IsZero() && now.Sub(k.CreatedAt) > p.MaxAge {
			add(ClassTooOld, SeverityWarning, fmt.Sprintf("created %s ago (max age %s)", now.Sub(k.CreatedAt).Round(time.Hour), p.MaxAge))
		}
		if ids := byHint[k.Hint]; len(ids) > 1 && (isManaged || k.Status == StatusActive) {
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
