// Package anthropic rotates Claude API keys: an Issuer that draws keys from
// a pool of Console-created keys and activates and deactivates them through
// the Admin API, and a Probe that proves a key works with the Claude API.
//
// The Admin API can list, retrieve and update API keys, but cannot create
// them. So keys are created in the Console (left inactive), and added to a
// pool (package pool) with `keywarden pool add NAME`, which reads each key
// from stdin. A rotation then:
//
//   - Create: claims the next pool key for the rotation token (the same key
//     again when a rotation resumes) and finds its id, when the pool entry
//     has none, by matching partial_key_hint through
//     GET /v1/organizations/api_keys, page by page;
//   - Activate: sets it active, POST /v1/organizations/api_keys/{id}
//     {"status": "active"};
//   - Revoke: sets the old key inactive (or archived), after reading its
//     status, so that a retried revocation changes nothing.
//
// The Admin key (sk-ant-admin01-...) is read from a store for every call,
// so rotating it needs no restart.
package anthropic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/backoff"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/pool"
)

// IssuerOptions configure an Issuer.
type IssuerOptions struct {
	// BaseURL is the API's base URL (DefaultBaseURL); the Admin key is
	// sent there, so it must pass CheckBaseURL.
	BaseURL string
	// Version is the anthropic-version header
	// (providers.DefaultAnthropicVersion).
	Version string
	// AdminKey returns the Admin key; see KeyFromStore. Required.
	AdminKey func(context.Context) (providers.Secret, error)
	// Pool holds the Console-created keys. Required.
	Pool *pool.Pool
	// RevokeStatus is the status old keys are set to: inactive (default)
	// or archived (permanent).
	RevokeStatus string
	// HTTPClient sends the requests (a client with a one-minute timeout);
	// redirects are never followed.
	HTTPClient *http.Client
	// Attempts bounds the tries of a failing Admin API call (default 4).
	// Backoff is the wait after the first failure (default 500ms), doubled
	// after each further one up to 30s, with jitter (backoff.Policy); a
	// longer retry-after is honoured.
	Attempts int
	Backoff  time.Duration
	// MinValidity skips pool keys that expire within it (the key's
	// rotate_before_expiry): a key drawn must outlive the next rotation
	// window. Archived and expired pool keys are always skipped.
	MinValidity time.Duration
	// Logger reports skipped pool keys (slog.Default()); never values.
	Logger *slog.Logger
	// Now is the clock (time.Now).
	Now func() time.Time
}

// maxAdminBackoff caps the Admin API's retry waits (a longer retry-after
// is honoured).
const maxAdminBackoff = 30 * time.Second

// Issuer hands out pool keys, activated through the Admin API. It is safe
// for concurrent use.
type Issuer struct {
	a            *admin
	pool         *pool.Pool
	revokeStatus string
	minValidity  time.Duration
	log          *slog.Logger
	now          func() time.Time
}

var (
	_ rotation.Issuer         = (*Issuer)(nil)
	_ rotation.Activator      = (*Issuer)(nil)
	_ rotation.Committer      = (*Issuer)(nil)
	_ rotation.PoolReporter   = (*Issuer)(nil)
	_ rotation.KeyIDChecker   = (*Issuer)(nil)
	_ rotation.ExpiryReporter = (*Issuer)(nil)
	_ rotation.KeyIDResolver  = (*Issuer)(nil)
	_ rotation.PoolInspector  = (*Issuer)(nil)
	_ rotation.Releaser       = (*Issuer)(nil)
)

// NewIssuer returns an Issuer.
func NewIssuer(o IssuerOptions) (*Issuer, error) {
	switch {
	case o.AdminKey == nil:
		return nil, errors.New("anthropic: no Admin key source")
	case o.Pool == nil:
		return nil, errors.New("anthropic: no key pool")
	}
	if err := CheckBaseURL(o.BaseURL); err != nil {
		return nil, err
	}
	switch o.RevokeStatus {
	case "":
		o.RevokeStatus = StatusInactive
	case StatusInactive, StatusArchived:
	default:
		return nil, fmt.Errorf("anthropic: revoke status %q: want inactive or archived", o.RevokeStatus)
	}
	if o.Attempts <= 0 {
		o.Attempts = 4
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.MinValidity < 0 {
		return nil, fmt.Errorf("anthropic: min validity %v is negative", o.MinValidity)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Issuer{
		minValidity:  o.MinValidity,
		log:          o.Logger,
		now:          o.Now,
		a:            &admin{c: newClient(o.BaseURL, o.Version, o.HTTPClient), key: o.AdminKey, attempts: o.Attempts, backoff: backoff.Policy{Min: o.Backoff, Max: maxAdminBackoff}},
		pool:         o.Pool,
		revokeStatus: o.RevokeStatus,
	}, nil
}

// Type returns "anthropic".
func (*Issuer) Type() string { return "anthropic" }

// Create claims the next pool key for token and returns it with its id.
// Pool keys that are archived or expired at the Admin API, or expire
// within MinValidity, are never drawn: each is dropped from the pool,
// logged with its id and why, and the next one is claimed; the error of
// an emptied pool lists them.
func (i *Issuer) Create(ctx context.Context, token string) (rotation.Credential, error) {
	var skipped []string
	for {
		e, _, err := i.pool.Claim(ctx, token)
		if errors.Is(err, pool.ErrEmpty) {
			why := ""
			if len(skipped) > 0 {
				why = fmt.Sprintf(" (skipped %d unusable pool keys: %s)", len(skipped), strings.Join(skipped, "; "))
			}
			return rotation.Credential{}, fmt.Errorf("anthropic: pool %s: %w%s: create Claude API keys in the Console (Settings > API keys), leave them inactive, and add each with `keywarden pool add KEY < key.txt`", i.pool.Name(), rotation.ErrPoolEmpty, why)
		}
		if err != nil {
			return rotation.Credential{}, fmt.Errorf("anthropic: %w", err)
		}
		c := rotation.Credential{Key: e.Secret(), KeyID: e.KeyID}
		k, err := i.lookup(ctx, c, preferInactive)
		if errors.Is(err, errAmbiguous) {
			// Activate resolves it with the ids the rotation knows by then
			// (CURRENT's), or one attached with `keywarden key-id --stage
			// pending`; the key is safe in the store first.
			return c, nil
		}
		if err != nil {
			return rotation.Credential{}, err
		}
		if why := i.unusable(k.Status, k.expiry()); why != "" {
			i.log.LogAttrs(ctx, slog.LevelWarn, "pool key skipped: it cannot serve a rotation; it is dropped from the pool",
				slog.String("pool", i.pool.Name()), slog.String("key_id", k.ID), slog.String("fingerprint", c.Key.Fingerprint()), slog.String("reason", why))
			skipped = append(skipped, k.ID+" "+why)
			// Forget it (it stays in the Console) and claim the next one
			// for the same token.
			if err := i.pool.Commit(ctx, token); err != nil {
				return rotation.Credential{}, fmt.Errorf("anthropic: drop pool key %s: %w", k.ID, err)
			}
			continue
		}
		c.KeyID = k.ID
		return c, nil
	}
}

// unusable says why a pool key of status and expiry exp (zero: never) must
// not be drawn, "" when it may.
func (i *Issuer) unusable(status string, exp time.Time) string {
	switch status {
	case StatusArchived, StatusExpired:
		return "is " + status
	}
	if !exp.IsZero() && !i.now().Add(i.minValidity).Before(exp) {
		return "expires at " + exp.UTC().Format(time.RFC3339) + ", within " + i.minValidity.String()
	}
	return ""
}

// PoolKeys lists the keys waiting in the pool, in draw order, as the
// Admin API sees them (one listing of the organization's keys, all pages;
// none when the pool is empty): each one's id and expiry, and why Create
// would skip it (archived, expired, expiring within MinValidity) or fail
// on it (its id or hint matches no key of the organization). A key found
// by partial_key_hint the way Create finds it (matchHint, the inactive
// key preferred); one whose hint stays ambiguous counts as usable
// (Activate resolves it) with an unknown expiry.
func (i *Issuer) PoolKeys(ctx context.Context) ([]rotation.PoolKey, error) {
	es, err := i.pool.Waiting(ctx)
	if err != nil {
		return nil, fmt.Errorf("anthropic: %w", err)
	}
	if len(es) == 0 {
		return nil, nil
	}
	keys, err := i.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]rotation.PoolKey, len(es))
	for n, e := range es {
		pk := rotation.PoolKey{Fingerprint: e.Secret().Fingerprint(), KeyID: e.KeyID}
		at := -1
		if e.KeyID != "" {
			at = slices.IndexFunc(keys, func(k OrgKey) bool { return k.ID == e.KeyID })
			switch {
			case at < 0:
				pk.Unusable = "its id " + e.KeyID + " is not a key of the organization"
			case keys[at].Hint != "" && !hintMatches(keys[at].Hint, e.Secret().Reveal()):
				pk.Unusable = "its id " + e.KeyID + " belongs to another key (partial_key_hint " + keys[at].Hint + ")"
				at = -1
			}
		} else {
			at, err = matchHint(keys, e.Secret(), nil, preferInactive)
			if err != nil && !errors.Is(err, errAmbiguous) {
				pk.Unusable = "no key of the organization matches its partial_key_hint"
			}
		}
		if at >= 0 {
			k := keys[at]
			pk.KeyID, pk.ExpiresAt, pk.ExpiryKnown = k.ID, k.ExpiresAt, true
			pk.Unusable = i.unusable(k.Status, k.ExpiresAt)
		}
		out[n] = pk
	}
	return out, nil
}

// Expiry returns when the key c expires at the Admin API (zero: never).
func (i *Issuer) Expiry(ctx context.Context, c rotation.Credential) (time.Time, error) {
	k, err := i.lookup(ctx, c, preferActive)
	if err != nil {
		return time.Time{}, err
	}
	return k.expiry(), nil
}

// lookup returns the Admin API's object for c: by id, or by
// partial_key_hint when c has no id (never one of c.OtherIDs; among
// several, the only one with status prefer). A key found by id must match
// the hint too, so that a wrong id is caught before it is used.
func (i *Issuer) lookup(ctx context.Context, c rotation.Credential, prefer string) (*apiKey, error) {
	if c.KeyID == "" {
		if c.Key.IsZero() {
			return nil, errors.New("anthropic: neither the key nor its id is known")
		}
		k, err := i.a.findByHint(ctx, c.Key, c.OtherIDs, prefer)
		if err != nil {
			return nil, fmt.Errorf("anthropic: find the id of key %s: %w", c.Key.Fingerprint(), err)
		}
		return k, nil
	}
	k, err := i.a.get(ctx, c.KeyID)
	if err != nil {
		return nil, fmt.Errorf("anthropic: read key %s: %w", c.KeyID, err)
	}
	if !c.Key.IsZero() && k.PartialKeyHint != "" && !hintMatches(k.PartialKeyHint, c.Key.Reveal()) {
		return nil, fmt.Errorf("anthropic: key id %s does not belong to key %s (partial_key_hint %s); attach the right id with `keywarden key-id`", k.ID, c.Key.Fingerprint(), k.PartialKeyHint)
	}
	return k, nil
}

// ResolveKeyID returns the Admin API's id of the key c.Key (found by its
// partial_key_hint, the active one among keys sharing it, never one of
// c.OtherIDs).
func (i *Issuer) ResolveKeyID(ctx context.Context, c rotation.Credential) (string, error) {
	k, err := i.lookup(ctx, c, preferActive)
	if err != nil {
		return "", err
	}
	return k.ID, nil
}

// CheckKeyID verifies that c.KeyID exists at the Admin API and that its
// partial_key_hint matches c.Key.
func (i *Issuer) CheckKeyID(ctx context.Context, c rotation.Credential) error {
	_, err := i.lookup(ctx, c, preferAny)
	return err
}

// Activate sets the key active, unless it already is.
func (i *Issuer) Activate(ctx context.Context, c rotation.Credential) error {
	k, err := i.lookup(ctx, c, preferInactive)
	if err != nil {
		return err
	}
	if k.Status == StatusActive {
		return nil
	}
	if _, err := i.a.setStatus(ctx, k.ID, StatusActive); err != nil {
		return fmt.Errorf("anthropic: activate key %s: %w", k.ID, err)
	}
	return nil
}

// Revoke sets the key to the revoke status (inactive or archived), unless
// it is already there (or archived or expired, which are final).
func (i *Issuer) Revoke(ctx context.Context, c rotation.Credential) error {
	if c.KeyID == "" && strings.HasPrefix(c.Key.Reveal(), placeholderPrefix) {
		return nil // the placeholder of the embedded default store: never a real key
	}
	k, err := i.lookup(ctx, c, preferActive)
	if err != nil {
		return err
	}
	switch k.Status {
	case i.revokeStatus, StatusArchived, StatusExpired:
		return nil
	}
	if _, err := i.a.setStatus(ctx, k.ID, i.revokeStatus); err != nil {
		return fmt.Errorf("anthropic: revoke key %s: %w", k.ID, err)
	}
	return nil
}

// Commit removes the key claimed by token from the pool.
func (i *Issuer) Commit(ctx context.Context, token string) error {
	if err := i.pool.Commit(ctx, token); err != nil {
		return fmt.Errorf("anthropic: %w", err)
	}
	return nil
}

// Release puts the key claimed by token back in the pool (first in line):
// a rotation abandoned before its key reached the store never activated
// it.
func (i *Issuer) Release(ctx context.Context, token string) error {
	if err := i.pool.Release(ctx, token); err != nil {
		return fmt.Errorf("anthropic: %w", err)
	}
	return nil
}

// Available returns the number of keys left in the pool.
func (i *Issuer) Available(ctx context.Context) (int, error) {
	n, err := i.pool.Available(ctx)
	if err != nil {
		return 0, fmt.Errorf("anthropic: %w", err)
	}
	return n, nil
}

// placeholderPrefix starts the placeholder key of keywarden's embedded
// default store (config.PlaceholderPrefix), which no issuer knows.
const placeholderPrefix = "sk-ant-api03-placeholder-"

// KeyFromStore returns an AdminKey function that reads the CURRENT version
// of secret name from r at every call, with field as the payload's JSON
// field ("" for the default).
func KeyFromStore(r driver.Reader, name, field string) func(context.Context) (providers.Secret, error) {
	return func(ctx context.Context) (providers.Secret, error) {
		v, err := r.Read(ctx, name, driver.Current)
		if err != nil {
			return providers.Secret{}, err
		}
		p, err := providers.DecodePayload(v.Value, field)
		if err != nil {
			return providers.Secret{}, err
		}
		return p.Key, nil
	}
}
