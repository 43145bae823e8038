package rotationtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/rotation"
)

// Ledger is an in-memory issuer that mints Anthropic-shaped fake keys and
// keeps account of every call: keys minted per rotation token, activations,
// revocations. Create is idempotent on the token, as the rotator expects;
// Revoke of a revoked key succeeds and changes nothing. It is safe for
// concurrent use.
type Ledger struct {
	mu      sync.Mutex
	keys    map[string]*LedgerKey // by id
	byToken map[string]string     // token -> id
	pool    int                   // keys left when limited; -1 unlimited
	seq     int

	// Fail, when set, is called at the start of every call ("create",
	// "activate", "revoke") and its error returned.
	Fail func(op string) error
}

// LedgerKey is one key the ledger minted.
type LedgerKey struct {
	ID          string
	Value       providers.Secret
	Token       string // "" for a seeded key
	Active      bool
	Revoked     bool
	CreateCalls int // Create calls with its token
	Activations int // Activate calls
	RevokeCalls int // Revoke calls, including those that found it revoked
}

var (
	_ rotation.Issuer       = (*Ledger)(nil)
	_ rotation.Activator    = (*Ledger)(nil)
	_ rotation.PoolReporter = (*Ledger)(nil)
)

// NewLedger returns an empty ledger with an unlimited pool.
func NewLedger() *Ledger {
	return &Ledger{keys: map[string]*LedgerKey{}, byToken: map[string]string{}, pool: -1}
}

// LimitPool makes Create fail with rotation.ErrPoolEmpty after n more keys.
func (l *Ledger) LimitPool(n int) {
	l.mu.Lock()
	l.pool = n
	l.mu.Unlock()
}

// Type returns "ledger".
func (l *Ledger) Type() string { return "ledger" }

func (l *Ledger) mint(token string) *LedgerKey {
	l.seq++
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	k := &LedgerKey{
		ID:    fmt.Sprintf("apikey_%04d%s", l.seq, hex.EncodeToString(b[:4])),
		Value: providers.NewSecret("sk-ant-api03-" + hex.EncodeToString(b) + "AA"),
		Token: token,
	}
	l.keys[k.ID] = k
	return k
}

// Seed mints an active key outside any rotation, to start a store with.
func (l *Ledger) Seed() rotation.Credential {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.mint("")
	k.Active = true
	return rotation.Credential{Key: k.Value, KeyID: k.ID}
}

func (l *Ledger) fail(op string) error {
	if l.Fail != nil {
		return l.Fail(op)
	}
	return nil
}

// Create mints a key for token, inactive, or returns the one minted for it
// before.
func (l *Ledger) Create(ctx context.Context, token string) (rotation.Credential, error) {
	if err := l.fail("create"); err != nil {
		return rotation.Credential{}, err
	}
	if err := ctx.Err(); err != nil {
		return rotation.Credential{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if id, ok := l.byToken[token]; ok {
		k := l.keys[id]
		k.CreateCalls++
		return rotation.Credential{Key: k.Value, KeyID: k.ID}, nil
	}
	if l.pool == 0 {
		return rotation.Credential{}, fmt.Errorf("ledger: %w", rotation.ErrPoolEmpty)
	}
	if l.pool > 0 {
		l.pool--
	}
	k := l.mint(token)
	k.CreateCalls = 1
	l.byToken[token] = k.ID
	return rotation.Credential{Key: k.Value, KeyID: k.ID}, nil
}

// Activate makes the key active.
func (l *Ledger) Activate(ctx context.Context, c rotation.Credential) error {
	if err := l.fail("activate"); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.find(c)
	if k == nil {
		return errors.New("ledger: activate: no such key")
	}
	k.Activations++
	if k.Revoked {
		return errors.New("ledger: activate: the key is revoked")
	}
	k.Active = true
	return nil
}

// Revoke revokes the key.
func (l *Ledger) Revoke(ctx context.Context, c rotation.Credential) error {
	if err := l.fail("revoke"); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.find(c)
	if k == nil {
		return fmt.Errorf("ledger: revoke: no key with id %q or that value", c.KeyID)
	}
	k.RevokeCalls++
	k.Active, k.Revoked = false, true
	return nil
}

// Available returns the keys left in a limited pool, or 100.
func (l *Ledger) Available(context.Context) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pool < 0 {
		return 100, nil
	}
	return l.pool, nil
}

func (l *Ledger) find(c rotation.Credential) *LedgerKey {
	if k := l.keys[c.KeyID]; k != nil {
		return k
	}
	for _, k := range l.keys {
		if !c.Key.IsZero() && k.Value.Equal(c.Key) {
			return k
		}
	}
	return nil
}

// Key returns a copy of the key with id, or nil.
func (l *Ledger) Key(id string) *LedgerKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	if k := l.keys[id]; k != nil {
		c := *k
		return &c
	}
	return nil
}

// ByValue returns a copy of the key with value v, or nil.
func (l *Ledger) ByValue(v providers.Secret) *LedgerKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range l.keys {
		if k.Value.Equal(v) {
			c := *k
			return &c
		}
	}
	return nil
}

// Keys returns copies of every key, seeds included.
func (l *Ledger) Keys() []LedgerKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]LedgerKey, 0, len(l.keys))
	for _, k := range l.keys {
		out = append(out, *k)
	}
	return out
}

// Minted returns how many keys were minted by Create (seeds excluded).
func (l *Ledger) Minted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byToken)
}

// Valid reports whether v is an active, unrevoked key.
func (l *Ledger) Valid(v providers.Secret) bool {
	k := l.ByValue(v)
	return k != nil && k.Active && !k.Revoked
}

// Probe returns a probe that passes for active keys of the ledger and fails
// at once, like a 401, for others. fail, when not nil, is consulted first
// for every attempt: a non-nil error is returned as the attempt's outcome.
func (l *Ledger) Probe(fail func(attempt int) error) rotation.Probe {
	return &ledgerProbe{l: l, fail: fail}
}

type ledgerProbe struct {
	l    *Ledger
	fail func(int) error

	mu sync.Mutex
	n  int
}

func (p *ledgerProbe) Type() string { return "ledger" }

func (p *ledgerProbe) Probe(ctx context.Context, key providers.Secret) error {
	p.mu.Lock()
	p.n++
	n := p.n
	p.mu.Unlock()
	if p.fail != nil {
		if err := p.fail(n); err != nil {
			return err
		}
	}
	if !p.l.Valid(key) {
		return &rotation.ProbeError{Err: errors.New("401 authentication_error: invalid x-api-key")}
	}
	return nil
}
