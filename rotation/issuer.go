package rotation

import (
	"context"
	"time"

	"github.com/keywarden/keywarden/providers"
)

// Credential is a key handed out by an Issuer: its value and the issuer's id
// for it (for revocation), "" when the issuer has none.
type Credential struct {
	Key   providers.Secret
	KeyID string
	// OtherIDs, on a credential the rotator passes to Activate or Revoke,
	// are the issuer ids of the other keys the rotation knows (CURRENT's,
	// the new key's, ids attached with `keywarden key-id`): never this
	// key's. An issuer that finds a key without id by a partial hint must
	// not take one of them for it.
	OtherIDs []string
}

// Issuer obtains new keys and revokes old ones. Implementations must be
// safe for concurrent use by rotations of different keys.
type Issuer interface {
	// Type names the issuer for messages and status ("anthropic", "exec",
	// "random").
	Type() string
	// Create returns a new key for the rotation identified by token. It
	// should be idempotent on token: the rotator calls it again with the
	// same token when a run died between Create and writing the key to the
	// store. Issuers that draw from a pool fail with an error wrapping
	// ErrPoolEmpty when the pool is empty.
	Create(ctx context.Context, token string) (Credential, error)
	// Revoke revokes an old key so that it no longer authenticates. c holds
	// the id, and the value when the store still had it. Revoking a key that
	// is already revoked must succeed.
	Revoke(ctx context.Context, c Credential) error
}

// Activator is an optional Issuer interface: Activate makes a created key
// usable (for example sets an Anthropic key active). The rotator calls it
// after the key is safely PENDING in the store and before the probe; it
// must be idempotent.
type Activator interface {
	Activate(ctx context.Context, c Credential) error
}

// Committer is an optional Issuer interface: Commit tells the issuer that
// the key it created for token is safely PENDING in the store, so that it
// can forget it (for example remove it from its pool). The rotator may call
// it more than once for a token; calls after the first must do nothing.
type Committer interface {
	Commit(ctx context.Context, token string) error
}

// Releaser is an optional Issuer interface of issuers that hand out keys
// they hold (a pool): Release gives back, unused, the key Create handed
// out for token, if any (it was never activated nor stored), so that an
// abandoned rotation does not use it up. Releasing a token that has none
// must succeed. Issuers without it get the key of the token again from
// Create (idempotent on the token) and Revoke it.
type Releaser interface {
	Release(ctx context.Context, token string) error
}

// PoolReporter is an optional Issuer interface of issuers that draw from a
// pool: Available returns how many keys are left, for dry runs, status and
// the keywarden_pool_keys metric.
type PoolReporter interface {
	Available(ctx context.Context) (int, error)
}

// KeyIDChecker is an optional Issuer interface: CheckKeyID verifies that id
// is the issuer's id of key (for example that the Admin API's hint for id
// matches the key), before `keywarden key-id` attaches it.
type KeyIDChecker interface {
	CheckKeyID(ctx context.Context, c Credential) error
}

// KeyIDResolver is an optional Issuer interface: ResolveKeyID returns the
// issuer's id of the key c (for example found by the Admin API's
// partial_key_hint; never one of c.OtherIDs). The rotator asks it for
// CURRENT's id before the promotion, while CURRENT still holds that key,
// and records it, so that the old key can be revoked by id whatever
// happens to the stored versions during the grace.
type KeyIDResolver interface {
	ResolveKeyID(ctx context.Context, c Credential) (string, error)
}

// ExpiryReporter is an optional Issuer interface of issuers whose keys can
// expire: Expiry returns when the key c expires, zero when it never does.
// The rotator asks it for CURRENT to rotate early (Key.RotateBeforeExpiry)
// and to export keywarden_key_expiry_timestamp_seconds.
type ExpiryReporter interface {
	Expiry(ctx context.Context, c Credential) (time.Time, error)
}

// PoolKey is a key waiting in an issuer's pool, as the issuer sees it:
// never its value.
type PoolKey struct {
	// Fingerprint is the key's fingerprint (as keywarden_key_info and
	// `keywarden pool list` show it).
	Fingerprint string `json:"fingerprint"`
	// KeyID is the issuer's id of the key, "" when unknown.
	KeyID string `json:"key_id,omitempty"`
	// ExpiresAt is when the key expires, zero when it never does; it means
	// nothing unless ExpiryKnown (the issuer could not tell which of its
	// keys this is).
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	ExpiryKnown bool      `json:"expiry_known"`
	// Unusable says why a draw would skip the key (or fail on it), "" when
	// it would not.
	Unusable string `json:"unusable,omitempty"`
}

// PoolInspector is an optional interface of PoolReporter issuers that can
// tell each waiting pool key's state: PoolKeys lists them in the order
// they are drawn. The rotator then counts only usable keys in
// keywarden_pool_keys (and in pool-low warnings) and exports each key's
// expiry as keywarden_pool_key_expiry_timestamp_seconds.
type PoolInspector interface {
	PoolReporter
	PoolKeys(ctx context.Context) ([]PoolKey, error)
}
