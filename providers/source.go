// Package providers is keywarden's portable API for services: a Source holds
// an LLM API key from a secret store in memory, refreshes it in the
// background, and hands it out with a single atomic load.
//
// Open a Source from a store URL; importing a driver package registers its
// scheme:
//
//	import _ "github.com/keywarden/keywarden/providers/aws"
//
//	src, err := providers.Open(ctx, "awssm://anthropic/prod?region=us-east-1", nil)
//	...
//	defer src.Close()
//	key := src.Key() // a redacting Secret; key.Reveal() only where it leaves
//
// The drivers live in subpackages (aws, gcp, vault, file, env), all of the
// shape defined by package driver.
package providers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// Defaults for Options.
const (
	DefaultRefresh    = 5 * time.Minute
	DefaultMaxStale   = time.Hour
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute

	refreshTimeout = 30 * time.Second // bound of one shared store read
)

// MinForcedGap is how fresh a store read must be for RefreshIfCurrent to
// skip reading again.
var MinForcedGap = time.Second

// Options tune a Source. The zero value of each field means its default.
type Options struct {
	// Field is the JSON field holding the key when the payload is a JSON
	// object (DefaultField, "api_key").
	Field string
	// Refresh is the interval between background reads (DefaultRefresh).
	// A negative value disables background refresh.
	Refresh time.Duration
	// Jitter is the most added at random to each interval, so that many
	// consumers do not read the store in step (Refresh/10). The longest gap
	// between two reads is Refresh+Jitter: the rotation grace period must be
	// at least that.
	Jitter time.Duration
	// MaxStale bounds how long the last good key is served while the store
	// fails (DefaultMaxStale). Past it, CheckHealth and Usable report errors.
	MaxStale time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff between reads
	// after a failure (DefaultMinBackoff, DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// Logger receives refresh events; never key values (slog.Default()).
	Logger *slog.Logger
}

// withDefaults fills zero fields from the URL's portable parameters, then
// from the defaults.
func (o Options) withDefaults(params url.Values) (Options, error) {
	if params != nil {
		q := NewQuery(params)
		if o.Field == "" {
			o.Field = q.String("field", "")
		}
		if o.Refresh == 0 {
			o.Refresh = q.Duration("refresh", 0)
		}
		if o.Jitter == 0 {
			o.Jitter = q.Duration("jitter", 0)
		}
		if o.MaxStale == 0 {
			o.MaxStale = q.Duration("max_stale", 0)
		}
		if err := q.Done(); err != nil {
			return o, fmt.Errorf("providers: %w", err)
		}
	}
	if o.Field == "" {
		o.Field = DefaultField
	}
	if o.Refresh == 0 {
		o.Refresh = DefaultRefresh
	}
	if o.Jitter == 0 && o.Refresh > 0 {
		o.Jitter = o.Refresh / 10
	}
	if o.MaxStale == 0 {
		o.MaxStale = DefaultMaxStale
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	switch {
	case o.Jitter < 0:
		return o, codes.Errorf(codes.InvalidArgument, "providers: jitter %v is negative", o.Jitter)
	case o.MaxStale < 0:
		return o, codes.Errorf(codes.InvalidArgument, "providers: max_stale %v is negative", o.MaxStale)
	case o.MaxBackoff < o.MinBackoff:
		return o, codes.Errorf(codes.InvalidArgument, "providers: max backoff %v is below min backoff %v", o.MaxBackoff, o.MinBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// Key is one immutable snapshot of a key version held by a Source.
type Key struct {
	// Value is the key, redacted in every printed form.
	Value Secret
	// VersionID is the store's version id.
	VersionID string
	// KeyID is the upstream's id of the key, when the payload carries it.
	KeyID string
	// Created is when the store created the version, when known.
	Created time.Time
	// Fingerprint identifies the value without revealing it.
	Fingerprint string

	header []string // the value as a ready header value slice, shared read-only
}

// String describes the key by version and fingerprint, never its value.
func (k Key) String() string {
	return "key{version " + k.VersionID + ", " + k.Fingerprint + "}"
}

// Format prints String for every verb, so that no verb (not even %d or %#v
// walking the fields) prints the value.
func (k Key) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// LogValue makes slog log the version and fingerprint.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(slog.String("version", k.VersionID), slog.String("fingerprint", k.Fingerprint))
}

// MarshalJSON encodes the version, key id and fingerprint.
func (k Key) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		VersionID   string    `json:"version_id"`
		KeyID       string    `json:"key_id,omitempty"`
		Created     time.Time `json:"created,omitzero"`
		Fingerprint string    `json:"fingerprint"`
	}{k.VersionID, k.KeyID, k.Created, k.Fingerprint})
}

// HeaderValue returns the key as a one-element slice for an http.Header
// entry. It is shared: callers must not modify it.
func (k *Key) HeaderValue() []string { return k.header }

func newKey(v *driver.Version, field string) (*Key, error) {
	p, err := DecodePayload(v.Value, field)
	if err != nil {
		return nil, fmt.Errorf("version %s: %w", v.ID, err)
	}
	return &Key{
		Value:       p.Key,
		VersionID:   v.ID,
		KeyID:       p.KeyID,
		Created:     v.Created,
		Fingerprint: p.Key.Fingerprint(),
		header:      []string{p.Key.Reveal()},
	}, nil
}

// Change describes a new CURRENT key. It carries ids and fingerprints only.
type Change struct {
	Name                           string
	OldVersion, NewVersion         string
	OldFingerprint, NewFingerprint string
	At                             time.Time
}

// Stats are a Source's counters, for metrics.
type Stats struct {
	Reads, Failures uint64    // store reads that succeeded and failed
	LastSuccess     time.Time // end of the last successful read
	LastFailure     time.Time // end of the last failed read (zero if none)
	Current         *Key      // the CURRENT key (nil before the first load)
}

type snapshot struct {
	val       Secret // cur.Value, inline so that Key is one load and one copy
	cur, prev *Key
}

// Source holds the CURRENT key of one secret, and its PREVIOUS when the store
// has one, in memory. Key and Current are a single atomic load. A Source is
// safe for concurrent use. Create it with Open or New; Close it when done.
type Source struct {
	name string
	d    driver.Reader
	opts Options
	log  *slog.Logger

	snap        atomic.Pointer[snapshot]
	lastSuccess atomic.Int64 // unix nanos of the last good read
	lastFailure atomic.Int64
	reads       atomic.Uint64
	failures    atomic.Uint64

	sf singleflight.Group

	ctx      context.Context // cancelled by Close; bounds every store read
	stop     context.CancelFunc
	loopDone chan struct{}
	flights  sync.WaitGroup // store reads under way

	mu      sync.Mutex
	subs    map[int]func(Change)
	nextSub int
	lastErr error
	closed  bool
	ownsDrv bool
}

// Open opens the store URL and returns a Source holding its key. It blocks
// until the first good read or until ctx is done. The URL's portable
// parameters (field, refresh, jitter, max_stale) fill the Options left zero;
// opts may be nil.
func Open(ctx context.Context, rawURL string, opts *Options) (*Source, error) {
	d, name, params, err := OpenDriver(ctx, rawURL)
	if err != nil {
		return nil, err
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	o, err = o.withDefaults(params)
	if err != nil {
		_ = d.Close()
		return nil, err
	}
	s, err := newSource(ctx, d, name, o)
	if err != nil {
		_ = d.Close()
		return nil, err
	}
	s.ownsDrv = true
	return s, nil
}

// New returns a Source reading secret name through d. It blocks until the
// first good read or until ctx is done. Close does not close d.
func New(ctx context.Context, d driver.Reader, name string, opts Options) (*Source, error) {
	o, err := opts.withDefaults(nil)
	if err != nil {
		return nil, err
	}
	return newSource(ctx, d, name, o)
}

func newSource(ctx context.Context, d driver.Reader, name string, o Options) (*Source, error) {
	s := &Source{name: name, d: d, opts: o, log: o.Logger.With("secret", name), subs: map[int]func(Change){}}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.loopDone = make(chan struct{})
	// The first load: retry with backoff until a good value or ctx is done.
	var err error
	for attempt := 0; ; attempt++ {
		if _, err = s.load(ctx); err == nil {
			break
		}
		if c := codes.Of(err); !c.Retryable() {
			s.stop()
			return nil, fmt.Errorf("providers: first read of %q: %w", name, err)
		}
		select {
		case <-ctx.Done():
			s.stop()
			return nil, fmt.Errorf("providers: first read of %q: %w (last error: %w)", name, ctx.Err(), err)
		case <-time.After(s.backoff(attempt)):
		}
	}
	go s.loop(s.ctx)
	return s, nil
}

// Name returns the secret's name in its store.
func (s *Source) Name() string { return s.name }

// Key returns the CURRENT key value: one atomic load, no allocation.
func (s *Source) Key() Secret { return s.snap.Load().val }

// Current returns the CURRENT key snapshot: one atomic load.
func (s *Source) Current() *Key { return s.snap.Load().cur }

// Previous returns the PREVIOUS key snapshot, or nil when the store has none.
func (s *Source) Previous() *Key { return s.snap.Load().prev }

// Usable returns the CURRENT key when it is within MaxStale of the last good
// read, and an Unavailable error otherwise: callers that must never use a
// key past its bound call it instead of Current.
func (s *Source) Usable() (*Key, error) {
	if err := s.CheckHealth(); err != nil {
		return nil, err
	}
	return s.Current(), nil
}

// CheckHealth returns nil while the last good read is within MaxStale, and
// an Unavailable error naming the age and the last read error otherwise.
func (s *Source) CheckHealth() error {
	last := time.Unix(0, s.lastSuccess.Load())
	age := time.Since(last)
	if age <= s.opts.MaxStale {
		return nil
	}
	s.mu.Lock()
	lastErr := s.lastErr
	s.mu.Unlock()
	return codes.Errorf(codes.Unavailable, "providers: key %q is stale: last good read %v ago, beyond max_stale %v (last error: %v)",
		s.name, age.Round(time.Second), s.opts.MaxStale, lastErr)
}

// Stats returns the Source's counters.
func (s *Source) Stats() Stats {
	st := Stats{
		Reads:       s.reads.Load(),
		Failures:    s.failures.Load(),
		LastSuccess: time.Unix(0, s.lastSuccess.Load()),
		Current:     s.Current(),
	}
	if f := s.lastFailure.Load(); f != 0 {
		st.LastFailure = time.Unix(0, f)
	}
	return st
}

// Options returns the Source's effective options.
func (s *Source) Options() Options { return s.opts }

// Refresh reads the store now and returns the CURRENT key. Concurrent calls
// share one store read.
func (s *Source) Refresh(ctx context.Context) (*Key, error) {
	ch := s.sf.DoChan("refresh", func() (any, error) {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, codes.Errorf(codes.FailedPrecondition, "providers: refresh of %q after Close", s.name)
		}
		s.flights.Add(1) // under mu, so never after Close began waiting
		s.mu.Unlock()
		defer s.flights.Done()
		// The shared read must not die with the first caller's ctx, only
		// with the Source.
		rctx, cancel := context.WithTimeout(s.ctx, refreshTimeout)
		defer cancel()
		return s.load(rctx)
	})
	select {
	case <-ctx.Done():
		return nil, codes.FromContext(ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Key), nil
	}
}

// RefreshIfCurrent refreshes only when seen is still the CURRENT key: when
// another caller already replaced it, the newer key is returned without a
// store read. An upstream that rejects seen calls it, so that a storm of
// rejections costs one store read.
//
// When the store was read successfully less than MinForcedGap ago, the
// store's answer is that fresh already and the CURRENT key is returned
// without another read.
func (s *Source) RefreshIfCurrent(ctx context.Context, seen *Key) (*Key, error) {
	cur := s.Current()
	if seen == nil || (cur != seen && cur.VersionID != seen.VersionID) {
		return cur, nil
	}
	if time.Since(time.Unix(0, s.lastSuccess.Load())) < MinForcedGap {
		return cur, nil
	}
	return s.Refresh(ctx)
}

// Subscribe registers fn to be called, in order, after every change of the
// CURRENT key; fn must not block for long. The returned func unsubscribes.
func (s *Source) Subscribe(fn func(Change)) (unsubscribe func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.nextSub
	s.nextSub++
	s.subs[id] = fn
	return func() {
		s.mu.Lock()
		delete(s.subs, id)
		s.mu.Unlock()
	}
}

// Close stops background refresh and, for a Source made by Open, closes the
// driver. It is safe to call more than once.
func (s *Source) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.stop()
	<-s.loopDone
	s.flights.Wait()
	if s.ownsDrv {
		if err := s.d.Close(); err != nil {
			return fmt.Errorf("providers: close %q: %w", s.name, err)
		}
	}
	return nil
}

// load reads CURRENT and PREVIOUS from the store and installs them.
func (s *Source) load(ctx context.Context) (*Key, error) {
	cur, prev, err := s.read(ctx)
	if err != nil {
		s.failures.Add(1)
		s.lastFailure.Store(time.Now().UnixNano())
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		return nil, err
	}
	s.reads.Add(1)
	s.lastSuccess.Store(time.Now().UnixNano())
	s.mu.Lock()
	s.lastErr = nil
	s.mu.Unlock()
	old := s.snap.Load()
	if old != nil && old.cur.VersionID == cur.VersionID && old.cur.Value.Equal(cur.Value) {
		// Unchanged: keep the old pointers so that callers comparing
		// snapshots see no change; take a new PREVIOUS if the store has one.
		if prevChanged(old.prev, prev) {
			s.snap.Store(&snapshot{val: old.val, cur: old.cur, prev: prev})
		}
		return old.cur, nil
	}
	s.snap.Store(&snapshot{val: cur.Value, cur: cur, prev: prev})
	if old != nil {
		s.notify(Change{
			Name: s.name, OldVersion: old.cur.VersionID, NewVersion: cur.VersionID,
			OldFingerprint: old.cur.Fingerprint, NewFingerprint: cur.Fingerprint, At: time.Now(),
		})
	}
	return cur, nil
}

func prevChanged(a, b *Key) bool {
	if a == nil || b == nil {
		return a != b
	}
	return a.VersionID != b.VersionID
}

func (s *Source) read(ctx context.Context) (cur, prev *Key, err error) {
	v, err := s.d.Read(ctx, s.name, driver.Current)
	if err != nil {
		return nil, nil, fmt.Errorf("providers: read %q: %w", s.name, err)
	}
	cur, err = newKey(v, s.opts.Field)
	if err != nil {
		return nil, nil, fmt.Errorf("providers: read %q: %w", s.name, err)
	}
	pv, err := s.d.Read(ctx, s.name, driver.Previous)
	switch {
	case err == nil:
		if prev, err = newKey(pv, s.opts.Field); err != nil {
			s.log.Warn("providers: ignoring undecodable PREVIOUS version", "version", pv.ID, "error", err)
			prev = nil
		}
	case codes.Is(err, codes.NotFound):
	default:
		// PREVIOUS is a fallback only: keep the one we had, if CURRENT
		// did not move.
		if old := s.snap.Load(); old != nil && old.cur.VersionID == cur.VersionID {
			prev = old.prev
		}
		s.log.Warn("providers: reading PREVIOUS failed", "error", err)
	}
	return cur, prev, nil
}

func (s *Source) notify(c Change) {
	s.log.Info("providers: key changed", "old_version", c.OldVersion, "new_version", c.NewVersion,
		"old_fingerprint", c.OldFingerprint, "new_fingerprint", c.NewFingerprint)
	s.mu.Lock()
	fns := make([]func(Change), 0, len(s.subs))
	for i := 0; i < s.nextSub; i++ {
		if fn, ok := s.subs[i]; ok {
			fns = append(fns, fn)
		}
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(c)
	}
}

// loop refreshes every Refresh plus up to Jitter, backing off on failure.
func (s *Source) loop(ctx context.Context) {
	defer close(s.loopDone)
	if s.opts.Refresh < 0 {
		<-ctx.Done()
		return
	}
	failures := 0
	for {
		wait := s.opts.Refresh
		if s.opts.Jitter > 0 {
			wait += rand.N(s.opts.Jitter)
		}
		if failures > 0 {
			wait = min(s.backoff(failures-1), wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if _, err := s.Refresh(ctx); err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return
			}
			failures++
			s.log.Warn("providers: refresh failed; serving the last good key", "error", err,
				"failures", failures, "fingerprint", s.Current().Fingerprint)
			continue
		}
		failures = 0
	}
}

// backoff returns the wait after attempt failures (0-based): exponential from
// MinBackoff, capped at MaxBackoff, with "equal jitter".
func (s *Source) backoff(attempt int) time.Duration {
	d := s.opts.MinBackoff
	for i := 0; i < attempt && d < s.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.opts.MaxBackoff)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}
