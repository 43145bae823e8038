// Package pool keeps a pool of ready keys as one secret in a store, for
// issuers that cannot mint keys themselves: Claude API keys are created in
// the Console (there is no API for it) and added to the pool with
// `keywarden pool add`, which reads each key from stdin.
//
// The pool is the CURRENT version of its secret: a JSON document
//
//	{"keys": [{"api_key": "sk-ant-api03-...", "key_id": "apikey_01...", "added_at": "..."}],
//	 "claimed": {"<rotation token>": {"api_key": ..., "key_id": ..., "added_at": ...}}}
//
// (a bare JSON list of keys, written by hand, is read as "keys"). Every
// change is a new version written with PutPending and Promote, a
// compare-and-swap on CURRENT, retried when another writer won. Claim moves
// the first key to "claimed" under the rotation's token, so a rotation that
// dies and resumes gets the same key again; Commit forgets a claimed key
// once the rotation has stored it.
package pool

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// ErrEmpty is returned by Claim when no key is left.
var ErrEmpty = errors.New("pool: empty")

// Entry is one key in the pool.
type Entry struct {
	APIKey  string    `json:"api_key"`
	KeyID   string    `json:"key_id,omitempty"`
	AddedAt time.Time `json:"added_at,omitzero"`
}

// Secret returns the entry's key.
func (e Entry) Secret() providers.Secret { return providers.NewSecret(e.APIKey) }

// Info describes a pool key without its value.
type Info struct {
	Fingerprint string    `json:"fingerprint"`
	KeyID       string    `json:"key_id,omitempty"`
	AddedAt     time.Time `json:"added_at,omitzero"`
	// Claimed is the token of the rotation that took the key, "" while it
	// is available.
	Claimed string `json:"claimed,omitempty"`
}

type doc struct {
	Keys    []Entry          `json:"keys"`
	Claimed map[string]Entry `json:"claimed,omitempty"`
}

// Pool is a pool of keys in one secret of a store. It is safe for
// concurrent use, across processes too.
type Pool struct {
	st   driver.Stager
	name string
}

// New returns the pool kept in secret name of st.
func New(st driver.Stager, name string) *Pool { return &Pool{st: st, name: name} }

// Name returns the pool secret's name.
func (p *Pool) Name() string { return p.name }

// read returns the pool document and the version it came from ("" when the
// secret does not exist yet).
func (p *Pool) read(ctx context.Context) (*doc, string, error) {
	v, err := p.st.Read(ctx, p.name, driver.Current)
	if codes.Is(err, codes.NotFound) {
		return &doc{}, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("pool: read %s: %w", p.name, err)
	}
	d := &doc{}
	b := bytes.TrimSpace(v.Value)
	switch {
	case len(b) > 0 && b[0] == '[':
		err = json.Unmarshal(b, &d.Keys)
	default:
		err = json.Unmarshal(b, d)
	}
	if err != nil {
		// Never quote the content: it holds keys.
		return nil, "", codes.Errorf(codes.InvalidArgument, "pool: %s (version %s) is not a pool document (want {\"keys\": [{\"api_key\": ..., \"key_id\": ...}]})", p.name, v.ID)
	}
	for i, e := range d.Keys {
		if e.APIKey == "" {
			return nil, "", codes.Errorf(codes.InvalidArgument, "pool: %s: entry %d has no api_key", p.name, i)
		}
	}
	return d, v.ID, nil
}

// errNoChange ends an update without writing.
var errNoChange = errors.New("no change")

// update applies fn to the document and writes the result as the new
// CURRENT, retrying on a lost compare-and-swap.
func (p *Pool) update(ctx context.Context, fn func(d *doc) error) error {
	var last error
	for attempt := 0; attempt < 8; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, time.Duration(attempt*attempt)*20*time.Millisecond); err != nil {
				return err
			}
		}
		d, cur, err := p.read(ctx)
		if err != nil {
			return err
		}
		if err := fn(d); err != nil {
			if errors.Is(err, errNoChange) {
				return nil
			}
			return err
		}
		b, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("pool: encode: %w", err)
		}
		v, err := p.st.PutPending(ctx, p.name, token(), b)
		if err != nil {
			if codes.Is(err, codes.FailedPrecondition) {
				last = err
				p.dropStalePending(ctx)
				continue
			}
			return fmt.Errorf("pool: write %s: %w", p.name, err)
		}
		if err := p.st.Promote(ctx, p.name, v.ID, cur); err != nil {
			_ = p.st.DiscardPending(context.WithoutCancel(ctx), p.name, v.ID)
			if codes.Is(err, codes.Aborted) {
				last = err
				continue
			}
			return fmt.Errorf("pool: write %s: %w", p.name, err)
		}
		return nil
	}
	return fmt.Errorf("pool: %s: too many concurrent writers: %w", p.name, last)
}

// stalePending is how old a PENDING version of the pool secret must be to
// be taken for the leftover of a writer that died between its two writes.
const stalePending = time.Minute

func (p *Pool) dropStalePending(ctx context.Context) {
	v, err := p.st.ReadPending(ctx, p.name)
	if err != nil || v.Created.IsZero() || time.Since(v.Created) < stalePending {
		return
	}
	_ = p.st.DiscardPending(ctx, p.name, v.ID)
}

// Add appends a key to the pool and returns how many keys are available.
// A key already in the pool is refused.
func (p *Pool) Add(ctx context.Context, key providers.Secret, keyID string) (int, error) {
	if key.IsZero() {
		return 0, codes.Errorf(codes.InvalidArgument, "pool: empty key")
	}
	n := 0
	err := p.update(ctx, func(d *doc) error {
		for _, e := range d.all() {
			if e.Secret().Equal(key) {
				return codes.Errorf(codes.InvalidArgument, "pool: key %s is already in the pool", key.Fingerprint())
			}
			if keyID != "" && e.KeyID == keyID {
				return codes.Errorf(codes.InvalidArgument, "pool: a key with id %s is already in the pool", keyID)
			}
		}
		d.Keys = append(d.Keys, Entry{APIKey: key.Reveal(), KeyID: keyID, AddedAt: time.Now().UTC()})
		n = len(d.Keys)
		return nil
	})
	return n, err
}

// Claim takes the first available key for the rotation token and returns
// it with the number of keys left. Claiming again with the same token
// returns the same key. It fails with ErrEmpty when no key is left.
func (p *Pool) Claim(ctx context.Context, tok string) (Entry, int, error) {
	var got Entry
	left := 0
	err := p.update(ctx, func(d *doc) error {
		if e, ok := d.Claimed[tok]; ok {
			got, left = e, len(d.Keys)
			return errNoChange
		}
		if len(d.Keys) == 0 {
			return fmt.Errorf("pool %s: %w", p.name, ErrEmpty)
		}
		got = d.Keys[0]
		d.Keys = d.Keys[1:]
		if d.Claimed == nil {
			d.Claimed = map[string]Entry{}
		}
		d.Claimed[tok] = got
		left = len(d.Keys)
		return nil
	})
	return got, left, err
}

// Commit forgets the key claimed by token; it does nothing when there is
// none.
func (p *Pool) Commit(ctx context.Context, tok string) error {
	return p.update(ctx, func(d *doc) error {
		if _, ok := d.Claimed[tok]; !ok {
			return errNoChange
		}
		delete(d.Claimed, tok)
		return nil
	})
}

// Available returns the number of keys available.
func (p *Pool) Available(ctx context.Context) (int, error) {
	d, _, err := p.read(ctx)
	if err != nil {
		return 0, err
	}
	return len(d.Keys), nil
}

// List describes the pool's keys, available ones first in the order Claim
// takes them, then claimed ones.
func (p *Pool) List(ctx context.Context) ([]Info, error) {
	d, _, err := p.read(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(d.Keys)+len(d.Claimed))
	for _, e := range d.Keys {
		out = append(out, Info{Fingerprint: e.Secret().Fingerprint(), KeyID: e.KeyID, AddedAt: e.AddedAt})
	}
	toks := make([]string, 0, len(d.Claimed))
	for t := range d.Claimed {
		toks = append(toks, t)
	}
	sort.Strings(toks)
	for _, t := range toks {
		e := d.Claimed[t]
		out = append(out, Info{Fingerprint: e.Secret().Fingerprint(), KeyID: e.KeyID, AddedAt: e.AddedAt, Claimed: t})
	}
	return out, nil
}

func (d *doc) all() []Entry {
	out := append([]Entry(nil), d.Keys...)
	for _, e := range d.Claimed {
		out = append(out, e)
	}
	return out
}

func token() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
