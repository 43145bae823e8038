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
// change is a new version made CURRENT with stage.Replace, a
// compare-and-swap on the CURRENT version it read, retried when another
// writer won; a change interrupted between its store calls (a crash) leaves
// a one-shot PENDING version that the next writer discards. Claim moves
// the first key to "claimed" under the rotation's token, so a rotation that
// dies and resumes gets the same key again; Commit forgets a claimed key
// once the rotation has stored it.
package pool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/backoff"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/stage"
)

// Errors a caller tells apart with errors.Is. Each comes wrapped in an error
// carrying a portable code as well: ErrCorrupt with codes.Internal (corrupt
// data in the store), ErrDuplicate with codes.InvalidArgument (bad input).
var (
	// ErrEmpty is returned by Claim when no key is left.
	ErrEmpty = errors.New("pool: empty")
	// ErrCorrupt is returned when the pool secret holds no pool document.
	ErrCorrupt = errors.New("not a pool document")
	// ErrDuplicate is returned by Add for a key, or key id, already in the
	// pool.
	ErrDuplicate = errors.New("already in the pool")
)

// Entry is one key in the pool. APIKey redacts itself in every textual
// form (%v prints a fingerprint); the pool document stores the value.
type Entry struct {
	APIKey  providers.Secret
	KeyID   string
	AddedAt time.Time
}

// Secret returns the entry's key.
func (e Entry) Secret() providers.Secret { return e.APIKey }

// entryJSON is an Entry as the pool document stores it.
type entryJSON struct {
	APIKey  string    `json:"api_key"`
	KeyID   string    `json:"key_id,omitempty"`
	AddedAt time.Time `json:"added_at,omitzero"`
}

func (e Entry) wire() entryJSON {
	return entryJSON{APIKey: e.APIKey.Reveal(), KeyID: e.KeyID, AddedAt: e.AddedAt}
}

func (w entryJSON) entry() Entry {
	return Entry{APIKey: providers.NewSecret(w.APIKey), KeyID: w.KeyID, AddedAt: w.AddedAt}
}

// Info describes a pool key without its value.
type Info struct {
	Fingerprint string    `json:"fingerprint"`
	KeyID       string    `json:"key_id,omitempty"`
	AddedAt     time.Time `json:"added_at,omitzero"`
	// Claimed is the token of the rotation that took the key, "" while it
	// is available.
	Claimed string `json:"claimed,omitempty"`
}

// doc is the pool document.
type doc struct {
	Keys    []Entry
	Claimed map[string]Entry
}

// docJSON is the pool document as stored.
type docJSON struct {
	Keys    []entryJSON          `json:"keys"`
	Claimed map[string]entryJSON `json:"claimed,omitempty"`
}

func (d *doc) encode() ([]byte, error) {
	w := docJSON{Keys: make([]entryJSON, 0, len(d.Keys))}
	for _, e := range d.Keys {
		w.Keys = append(w.Keys, e.wire())
	}
	if len(d.Claimed) > 0 {
		w.Claimed = make(map[string]entryJSON, len(d.Claimed))
		for t, e := range d.Claimed {
			w.Claimed[t] = e.wire()
		}
	}
	return json.Marshal(w)
}

// decode parses a pool document, or a bare JSON list of keys written by
// hand. Its errors never quote the content: it holds keys.
func decode(b []byte) (*doc, error) {
	var w docJSON
	b = bytes.TrimSpace(b)
	var err error
	switch {
	case len(b) > 0 && b[0] == '[':
		err = json.Unmarshal(b, &w.Keys)
	case len(b) > 0 && b[0] == '{':
		err = json.Unmarshal(b, &w)
	default:
		err = errors.New("not a JSON object or list")
	}
	if err != nil {
		return nil, errors.New(`want {"keys": [{"api_key": ..., "key_id": ...}]}`)
	}
	d := &doc{}
	for i, e := range w.Keys {
		if e.APIKey == "" {
			return nil, fmt.Errorf("entry %d has no api_key", i)
		}
		d.Keys = append(d.Keys, e.entry())
	}
	for t, e := range w.Claimed {
		if e.APIKey == "" {
			return nil, fmt.Errorf("the key claimed by %s has no api_key", t)
		}
		if d.Claimed == nil {
			d.Claimed = map[string]Entry{}
		}
		d.Claimed[t] = e.entry()
	}
	return d, nil
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
	d, err := decode(v.Value)
	if err != nil {
		return nil, "", codes.Wrap(codes.Internal, fmt.Sprintf("pool: %s (version %s)", p.name, v.ID), fmt.Errorf("%w: %w", ErrCorrupt, err))
	}
	return d, v.ID, nil
}

// errNoChange ends an update without writing.
var errNoChange = errors.New("no change")

// Retries of an update that lost its compare-and-swap to another writer.
var (
	updateAttempts = 8
	updateBackoff  = backoff.Policy{Min: 20 * time.Millisecond, Max: time.Second}
)

// update applies fn to the document and makes the result the new CURRENT
// with stage.Replace, retrying when another writer changed CURRENT since it
// was read. A PENDING version left by a writer that died between its store
// calls is discarded by stage.Replace.
func (p *Pool) update(ctx context.Context, fn func(d *doc) error) error {
	var last error
	for attempt := range updateAttempts {
		if attempt > 0 {
			if err := backoff.Sleep(ctx, updateBackoff.Delay(attempt-1)); err != nil {
				return codes.FromContext(err)
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
		b, err := d.encode()
		if err != nil {
			return fmt.Errorf("pool: encode: %w", err)
		}
		if _, err := stage.Replace(ctx, p.st, p.name, cur, b); err != nil {
			// Aborted: CURRENT changed since the read. FailedPrecondition:
			// another writer's PENDING version is in the way now.
			if codes.Is(err, codes.Aborted) || codes.Is(err, codes.FailedPrecondition) {
				last = err
				continue
			}
			return fmt.Errorf("pool: write %s: %w", p.name, err)
		}
		return nil
	}
	return codes.Wrap(codes.Aborted, fmt.Sprintf("pool: %s: other writers changed the pool %d times in a row", p.name, updateAttempts), last)
}

// Add appends a key to the pool and returns how many keys are available.
// A key already in the pool is refused, unless it waits there without an
// id and keyID is given: then keyID is attached to it (it keeps its place).
func (p *Pool) Add(ctx context.Context, key providers.Secret, keyID string) (int, error) {
	if key.IsZero() {
		return 0, codes.Errorf(codes.InvalidArgument, "pool: empty key")
	}
	n := 0
	// The entry's time tells this call's own write from another's: a write
	// that landed but was reported as lost (another writer replaced
	// CURRENT right after it, so the read-back saw theirs) is found on the
	// retry, and is success, not a duplicate.
	added := time.Now().UTC()
	err := p.update(ctx, func(d *doc) error {
		n = len(d.Keys)
		if slices.ContainsFunc(d.all(), func(e Entry) bool {
			return e.AddedAt.Equal(added) && e.KeyID == keyID && e.Secret().Equal(key)
		}) {
			return errNoChange
		}
		if keyID != "" && !slices.ContainsFunc(d.all(), func(e Entry) bool { return e.KeyID == keyID }) {
			if i := slices.IndexFunc(d.Keys, func(e Entry) bool { return e.KeyID == "" && e.Secret().Equal(key) }); i >= 0 {
				d.Keys[i].KeyID = keyID
				return nil
			}
		}
		for _, e := range d.all() {
			if e.Secret().Equal(key) {
				return codes.Wrap(codes.InvalidArgument, "pool: key "+key.Fingerprint(), ErrDuplicate)
			}
			if keyID != "" && e.KeyID == keyID {
				return codes.Wrap(codes.InvalidArgument, "pool: a key with id "+keyID, ErrDuplicate)
			}
		}
		d.Keys = append(d.Keys, Entry{APIKey: key, KeyID: keyID, AddedAt: added})
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

// Release puts the key claimed by token back first in the pool, for a
// rotation abandoned before it used it; it does nothing when there is none.
func (p *Pool) Release(ctx context.Context, tok string) error {
	return p.update(ctx, func(d *doc) error {
		e, ok := d.Claimed[tok]
		if !ok {
			return errNoChange
		}
		delete(d.Claimed, tok)
		d.Keys = append([]Entry{e}, d.Keys...)
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

// Waiting returns the available keys, values included, in the order Claim
// takes them: for an issuer that inspects them, never for display.
func (p *Pool) Waiting(ctx context.Context) ([]Entry, error) {
	d, _, err := p.read(ctx)
	if err != nil {
		return nil, err
	}
	return slices.Clone(d.Keys), nil
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
