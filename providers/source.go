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
// shape defined by package driver. Package federation (wif://) is the
// keyless source: a short-lived access token from Workload Identity
// Federation, refreshed from its expiry and never served past it.
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

	"github.com/keywarden/keywarden/providers/backoff"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// Defaults for Options.
const (
	DefaultRefresh    = 5 * time.Minute
	DefaultMaxStale   = time.Hour
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute

	// refreshTimeout bounds one store read (both calls, CURRENT and
	// PREVIOUS). A read that has not returned by then fails Unavailable
	// for everyone waiting on it, and the next refresh starts a new read
	// (see Source.Close for what a call that ignores its context costs).
	refreshTimeout = 30 * time.Second

	// MinRefresh is the shortest refresh interval of a Source whose
	// settings come from a store URL or a configuration (Open,
	// ResolveOptions): every read of a cloud store is a billed, rate-limited
	// API call, and a key changes at most once per rotation, so reading
	// more than once a second buys nothing (refresh=1ns made 27,646 reads
	// in 2 s). A rotated key reaches consumers sooner through the 401
	// retry (Source.RefreshIfCurrent), not through a shorter interval. New,
	// given a driver by Go code, accepts any interval: tests drive
	// in-memory stores in milliseconds.
	MinRefresh = time.Second
	// MaxDuration bounds Refresh, Jitter, MaxStale, MinBackoff and
	// MaxBackoff: 365 days, far beyond any useful setting, and small
	// enough that no sum or small multiple of them (2·Refresh,
	// Refresh+Jitter, a grace period of twice that) overflows a
	// time.Duration (about 292 years).
	MaxDuration = 365 * 24 * time.Hour

	// AdvisoryLead is how long before its expiry a short-lived token
	// (Key.Expires set) is refreshed in the background: the TypeScript
	// SDK's advisory window. A token that lives less than twice as long
	// is refreshed at half its life.
	AdvisoryLead = 120 * time.Second
	// MandatoryLead is how long before its expiry a request stops using a
	// token without first waiting for a refresh (Source.Fresh): the SDK's
	// mandatory window. A token that lives less than ten times as long
	// uses a tenth of its life.
	MandatoryLead = 30 * time.Second
)

// MinForcedGap has no effect.
//
// Deprecated: RefreshIfCurrent no longer skips a refresh because the last
// store read is recent; it decides by the order of the reads and the
// request (see Source.ReadSeq). The variable stays only so that callers
// that set it still build; it will be removed.
var MinForcedGap = time.Second

// Options tune a Source. The zero value of each field means its default.
type Options struct {
	// Field is the JSON field holding the key when the payload is a JSON
	// object (DefaultField, "api_key").
	Field string
	// Refresh is the interval between background reads (DefaultRefresh).
	// A negative value disables background refresh. Open and
	// ResolveOptions refuse one shorter than MinRefresh; every duration
	// here is at most MaxDuration.
	Refresh time.Duration
	// Jitter is the most added at random to each interval, so that many
	// consumers do not read the store in step (Refresh/10). The longest gap
	// between two reads is Refresh+Jitter: the rotation grace period must be
	// at least that.
	Jitter time.Duration
	// MaxStale bounds how long the last good key is served while the store
	// fails (DefaultMaxStale, or twice Refresh when that is longer). Past it,
	// CheckHealth and Usable report errors. It must not be shorter than
	// Refresh.
	MaxStale time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff between reads
	// after a failure (DefaultMinBackoff, DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// Logger receives refresh events; never key values (slog.Default()).
	Logger *slog.Logger
}

// ResolveOptions returns the effective Options of a Source opened on the
// store URL rawURL with o. Each field set in o (non-zero) is kept; each one
// left zero takes the URL's portable parameter (field, refresh, jitter,
// max_stale) when it has one, else its default. The URL's portable
// parameters are always parsed and checked, also those that o overrides,
// and the result is validated. It neither opens the store nor checks the
// driver's own parameters.
//
// Open uses it, and so must anything that needs a key's effective settings
// without opening a Source (a config check, a rotation's grace period, see
// Options.LongestGap): the portable parameters have one parser, one set of
// defaults and one validation, here.
func ResolveOptions(rawURL string, o Options) (Options, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return o, err
	}
	return o.resolve(splitPortable(u))
}

// LongestGap is the longest time a Source with these resolved options can
// go between two store reads: Refresh plus Jitter, or 0 when background
// refresh is off. A rotation's grace period must be at least that, so that
// every consumer has read the new key before the old one is revoked.
func (o Options) LongestGap() time.Duration {
	if o.Refresh < 0 {
		return 0
	}
	return o.Refresh + o.Jitter
}

// resolve fills zero fields from the URL's portable parameters params (nil
// for none: New, which takes a driver and no URL), then from the defaults,
// and validates the result: every duration at most MaxDuration, and with a
// URL a refresh of at least MinRefresh.
func (o Options) resolve(params url.Values) (Options, error) {
	if params != nil {
		q := NewQuery(params)
		field := q.String("field", "")
		refresh := q.Duration("refresh", 0)
		jitter := q.Duration("jitter", 0)
		maxStale := q.Duration("max_stale", 0)
		if err := q.Done(); err != nil {
			return o, fmt.Errorf("providers: store URL: %w", err)
		}
		if o.Field == "" {
			o.Field = field
		}
		if o.Refresh == 0 {
			o.Refresh = refresh
		}
		if o.Jitter == 0 {
			o.Jitter = jitter
		}
		if o.MaxStale == 0 {
			o.MaxStale = maxStale
		}
	}
	// Bounded before any arithmetic on them (2*Refresh below).
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"refresh", o.Refresh}, {"jitter", o.Jitter}, {"max_stale", o.MaxStale}, {"min backoff", o.MinBackoff}, {"max backoff", o.MaxBackoff}} {
		if d.v > MaxDuration {
			return o, codes.Errorf(codes.InvalidArgument, "providers: %s %v is longer than the limit of 365 days (%v)", d.name, d.v, MaxDuration)
		}
	}
	if params != nil && o.Refresh > 0 && o.Refresh < MinRefresh {
		// params is nil only for New: see MinRefresh.
		return o, codes.Errorf(codes.InvalidArgument, "providers: refresh %v is shorter than the minimum of %v: every refresh is a store read (a billed API call on a cloud store); a rotated key is picked up at once on a 401 anyway", o.Refresh, MinRefresh)
	}
	if o.Field == KeyIDField {
		return o, codes.Errorf(codes.InvalidArgument, "providers: field %q is where a payload keeps the key's id; the key needs a field of its own (default %s)", KeyIDField, DefaultField)
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
		// Never a default that goes stale between two reads.
		o.MaxStale = max(DefaultMaxStale, 2*o.Refresh)
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
	case o.Refresh > 0 && o.MaxStale < o.Refresh:
		return o, codes.Errorf(codes.InvalidArgument, "providers: max_stale %v is shorter than refresh %v; the key would go stale between two reads: raise max_stale or lower refresh", o.MaxStale, o.Refresh)
	case o.MinBackoff < 0:
		return o, codes.Errorf(codes.InvalidArgument, "providers: min backoff %v is negative", o.MinBackoff)
	case o.MaxBackoff < o.MinBackoff:
		return o, codes.Errorf(codes.InvalidArgument, "providers: max backoff %v is below min backoff %v", o.MaxBackoff, o.MinBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

func (o Options) backoff() backoff.Policy {
	return backoff.Policy{Min: o.MinBackoff, Max: o.MaxBackoff}
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
	// Expires is when a short-lived token stops working (zero for a key
	// that does not expire by itself). The Source never serves it past
	// that: at Expires, Key returns the zero Secret and Current a key
	// without a value, until a refresh brings a new token.
	Expires time.Time
	// OAuth marks an OAuth access token, sent as "Authorization: Bearer"
	// with anthropic-beta oauth-2025-04-20 (see Transport).
	OAuth bool

	header  []string  // the value as a ready header value slice, shared read-only
	loaded  time.Time // when the value was read, for the token's lifetime
	dropped bool      // the value was removed (expired or rejected): see expiredKey
	// readSeq is the number of the store read that loaded the value (for
	// a dropped one, ReadSeq when it was dropped): a read numbered higher
	// brings a newer one.
	readSeq uint64
}

// lifetime is the span from the read to the expiry of a short-lived token.
func (k *Key) lifetime() time.Duration { return k.Expires.Sub(k.loaded) }

// advisoryAt is when a background refresh of a short-lived token is due.
func (k *Key) advisoryAt() time.Time {
	return k.Expires.Add(-min(AdvisoryLead, k.lifetime()/2))
}

// mandatoryAt is when a request must wait for a refresh before using a
// short-lived token.
func (k *Key) mandatoryAt() time.Time {
	return k.Expires.Add(-min(MandatoryLead, k.lifetime()/10))
}

// serviceEnd is when a short-lived token leaves service: a twentieth of its
// life (at most a second) before its expiry, so that a timer firing late
// or a clock a little off never lets it be sent past Expires.
func (k *Key) serviceEnd() time.Time {
	return k.Expires.Add(-min(time.Second, k.lifetime()/20))
}

// Expired reports whether k is a short-lived token past its expiry at now.
func (k *Key) Expired(now time.Time) bool {
	return !k.Expires.IsZero() && !now.Before(k.Expires)
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
		Expires     time.Time `json:"expires,omitzero"`
	}{k.VersionID, k.KeyID, k.Created, k.Fingerprint, k.Expires})
}

// HeaderValue returns the key as a one-element slice for an http.Header
// entry. It is shared: callers must not modify it.
func (k *Key) HeaderValue() []string { return k.header }

func newKey(v *driver.Version, field string) (*Key, error) {
	if err := CheckVersionID(v.ID); err != nil {
		return nil, err
	}
	p, err := decodePayload(v.Value, field)
	if err != nil {
		return nil, fmt.Errorf("version %s: %w", v.ID, err)
	}
	return &Key{
		Value:       p.Key,
		VersionID:   v.ID,
		KeyID:       p.KeyID,
		Created:     v.Created,
		Fingerprint: p.Key.Fingerprint(),
		Expires:     v.Expires,
		OAuth:       v.OAuth,
		header:      []string{p.Key.Reveal()},
		loaded:      time.Now(),
	}, nil
}

// expiredKey is what a Source holds as CURRENT once the token k expired or
// was dropped: k's identity without its value.
func expiredKey(k *Key, seq uint64) *Key {
	return &Key{VersionID: k.VersionID, KeyID: k.KeyID, Created: k.Created, Fingerprint: k.Fingerprint,
		Expires: k.Expires, OAuth: k.OAuth, header: []string{""}, loaded: k.loaded, dropped: true, readSeq: seq}
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

// flight is one store read that callers share.
type flight struct {
	seq  uint64        // the read's number: ReadSeq right after it began
	done chan struct{} // closed when key and err are set
	key  *Key
	err  error
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
	started     atomic.Uint64 // store reads begun: ReadSeq
	lastSuccess atomic.Int64  // unix nanos of the last good read
	lastFailure atomic.Int64
	reads       atomic.Uint64
	failures    atomic.Uint64
	nextRefresh atomic.Int64 // unix nanos of the background loop's next read; 0: none

	ctx      context.Context // cancelled by Close; bounds every store read
	stop     context.CancelFunc
	loopDone chan struct{}
	flights  sync.WaitGroup // store reads under way

	readTimeout time.Duration // bound of one store read: refreshTimeout

	mu       sync.Mutex
	inflight *flight // the store read under way, nil when none
	subs     map[int]func(Change)
	nextSub  int
	lastErr  error
	// goodSeq is the number of the last store read that succeeded. Only a
	// successful read stands for a read of its sequence (see refresh): a
	// failed one brought nothing newer.
	goodSeq uint64
	// streak counts the store reads that failed in a row; retryAt is when
	// the backoff after the last of them ends (zero after a success).
	// Forced reads (RefreshIfCurrent, Fresh) wait for it, and the loop
	// schedules its next read there, so that callers and loop share one
	// backoff.
	streak  int
	retryAt time.Time
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
	o, err = o.resolve(params)
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
	o, err := opts.resolve(nil)
	if err != nil {
		return nil, err
	}
	return newSource(ctx, d, name, o)
}

func newSource(ctx context.Context, d driver.Reader, name string, o Options) (*Source, error) {
	s := &Source{name: name, d: d, opts: o, log: o.Logger.With("secret", name), subs: map[int]func(Change){}, readTimeout: refreshTimeout}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.loopDone = make(chan struct{})
	// The first load: retry with backoff until a good value or ctx is
	// done; an error that reading again cannot cure (a bad payload, corrupt
	// data, a denied permission) fails at once.
	var err, last error
	for attempt := 0; ; attempt++ {
		rctx, cancel := s.withReadTimeout(ctx)
		_, err = s.load(rctx, s.started.Add(1))
		cancel()
		if err == nil {
			break
		}
		if cerr := ctx.Err(); cerr != nil && last != nil {
			// The caller's deadline cut this read short: the store's own
			// last answer says why nothing loaded.
			s.stop()
			return nil, fmt.Errorf("%w (gave up waiting: %w)", last, cerr)
		}
		last = err
		if c := codes.Of(err); !c.Retryable() {
			s.stop()
			return nil, err
		}
		if serr := backoff.Sleep(ctx, o.backoff().Delay(attempt)); serr != nil {
			s.stop()
			return nil, fmt.Errorf("%w (gave up waiting: %w)", err, serr)
		}
	}
	// The first wait is planned here, so that NextRefresh answers as soon
	// as the Source is returned.
	now := time.Now()
	first := s.nextWait(0, now)
	if s.opts.Refresh >= 0 || !s.Current().Expires.IsZero() {
		s.nextRefresh.Store(now.Add(first).UnixNano())
	}
	go s.loop(s.ctx, first)
	return s, nil
}

// Name returns the secret's name in its store.
func (s *Source) Name() string { return s.name }

// Key returns the CURRENT key value: one atomic load, no allocation. For a
// short-lived token it is the zero Secret from the token's end of service
// (just before its expiry, by a timer) until a refresh brings a new one;
// callers that must check the clock themselves use Fresh or Usable.
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
	if k := s.Current(); k.dropped || !time.Now().Before(k.serviceEnd()) && !k.Expires.IsZero() {
		s.mu.Lock()
		lastErr := s.lastErr
		s.mu.Unlock()
		return codes.Errorf(codes.Unavailable, "providers: token %q (%s) expired at %s or was rejected, and no new one could be had (last error: %v)",
			s.name, k.Fingerprint, k.Expires.UTC().Format(time.RFC3339), lastErr)
	}
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

// NextRefresh returns when the background loop reads the store next (for a
// short-lived token: its scheduled refresh), or the zero time when
// background refresh is off or no read is scheduled yet.
func (s *Source) NextRefresh() time.Time {
	if n := s.nextRefresh.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Options returns the Source's effective options.
func (s *Source) Options() Options { return s.opts }

// Refresh reads the store now and returns the CURRENT key. Concurrent calls
// share one store read: a call made while a read is under way waits for that
// read.
func (s *Source) Refresh(ctx context.Context) (*Key, error) {
	return s.refresh(ctx, nil, 0, readAny)
}

// Fresh returns CURRENT when a request may use it now: a key that does not
// expire, or a short-lived token before its mandatory refresh point (the
// last tenth of its life, at most MandatoryLead). Otherwise it waits for a
// refresh, shared with every concurrent caller, and returns the new token;
// when the refresh fails it returns the old token while it is still before
// its expiry, and an Unavailable error past it: an expired token is never
// returned. A Transport calls it before every request.
func (s *Source) Fresh(ctx context.Context) (*Key, error) {
	k := s.Current()
	if k.Expires.IsZero() {
		return k, nil
	}
	if !k.dropped && time.Now().Before(k.mandatoryAt()) {
		return k, nil
	}
	nk, err := s.refresh(ctx, nil, k.readSeq, readForced)
	if err == nil && !nk.dropped && time.Now().Before(nk.serviceEnd()) {
		return nk, nil
	}
	if cur := s.Current(); !cur.dropped && time.Now().Before(cur.serviceEnd()) {
		return cur, nil
	}
	if err == nil {
		s.mu.Lock()
		err = s.lastErr // a read after k's failed
		s.mu.Unlock()
	}
	if err == nil {
		err = errors.New("the new token is already expired")
	}
	return nil, codes.Errorf(codes.Unavailable, "providers: no unexpired token for %q: %w", s.name, err)
}

// drop removes the token k from service when it is still CURRENT, as after
// the upstream rejected it and no new one could be had: requests then wait
// for a refresh (Fresh) instead of sending a token known to be bad. Keys
// that do not expire are never dropped: their store may still hold them.
func (s *Source) drop(k *Key) {
	if k == nil || k.Expires.IsZero() || k.dropped {
		return
	}
	for {
		old := s.snap.Load()
		if old.cur != k && old.cur.VersionID != k.VersionID {
			return
		}
		if old.cur.dropped || s.snap.CompareAndSwap(old, &snapshot{cur: expiredKey(old.cur, s.ReadSeq()), prev: old.prev}) {
			return
		}
	}
}

// ReadSeq returns the number of store reads the Source has begun. A caller
// that sends a key takes it and the ReadSeq of that instant (Taken), and
// hands both to RefreshIfCurrent when the upstream rejects the key: that is how
// RefreshIfCurrent tells a read that began after the key was taken (whose
// answer stands) from one that began before (whose answer may predate the
// rotation that made the key invalid).
func (s *Source) ReadSeq() uint64 { return s.started.Load() }

// Taken returns CURRENT together with the ReadSeq of the instant it was
// taken: no store read began between the two, so a read numbered higher
// began after the key was taken, and none numbered lower or equal did.
// (Current followed by ReadSeq may count a read that began in between as
// an earlier one, which costs a needless second read after a rejection.)
func (s *Source) Taken() (*Key, uint64) {
	for {
		n := s.started.Load()
		k := s.Current()
		if s.started.Load() == n {
			return k, n
		}
	}
}

// RefreshIfCurrent is Refresh for a caller whose key seen was rejected,
// where seq is the ReadSeq of the instant seen was taken (see Taken). It
// returns without a store read of its own when another caller already made
// progress: when CURRENT is no longer seen, it returns CURRENT; when a store
// read began after seen was taken, it waits for that read (when under way)
// and returns CURRENT. Otherwise it reads the store, sharing the read with
// every concurrent caller. So a storm of rejections costs one store read,
// and a read that began before the rejected request was sent never stands
// in for a fresh one, however recent.
func (s *Source) RefreshIfCurrent(ctx context.Context, seen *Key, seq uint64) (*Key, error) {
	if seen == nil {
		return s.Current(), nil
	}
	return s.refresh(ctx, seen, seq, readForced)
}

// replaced returns CURRENT when it is no longer the key seen.
func (s *Source) replaced(seen *Key) *Key {
	if cur := s.Current(); cur != seen && cur.VersionID != seen.VersionID {
		return cur
	}
	return nil
}

// readMode says which store reads a refresh accepts.
type readMode int

const (
	// readAny: any read, a read under way included (Refresh).
	readAny readMode = iota
	// readForced: a read that began after the caller's sequence, but not
	// before the backoff after a failed read ends; meanwhile the last
	// error is returned (RefreshIfCurrent, Fresh: callers that a storm of
	// requests can multiply).
	readForced
	// readScheduled: like readForced, without waiting for the backoff:
	// the background loop, which already waited for it (nextWait).
	readScheduled
)

// refresh waits for a store read and returns its answer. With readAny, a
// read under way will do. Otherwise only a read that began after read number
// after: a read under way that began earlier is waited for and then followed
// by a new one, and a later read that already ended successfully stands
// (CURRENT is returned). A later read that failed does not stand: it
// brought nothing newer, so a new read is made, with readForced only once
// the backoff after the failure ended (before, the failure is returned
// without a read: a storm of rejections while the store fails costs one
// read per backoff step). With seen, CURRENT is returned as soon as it is
// not seen: a read that began too early for the caller, waited out, may
// still have found the key that replaced seen.
func (s *Source) refresh(ctx context.Context, seen *Key, after uint64, mode readMode) (*Key, error) {
	anyRead := mode == readAny
	for {
		if seen != nil {
			if cur := s.replaced(seen); cur != nil {
				return cur, nil
			}
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, codes.Errorf(codes.FailedPrecondition, "providers: refresh of %q after Close", s.name)
		}
		f := s.inflight
		switch {
		case f != nil: // join it (or, when it is too old, wait it out)
		case !anyRead && s.goodSeq > after:
			s.mu.Unlock()
			return s.Current(), nil
		case mode == readForced && time.Now().Before(s.retryAt):
			err := s.backingOff()
			s.mu.Unlock()
			return nil, err
		default:
			f = s.startFlight()
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, codes.FromContext(ctx.Err())
		case <-f.done:
		}
		if anyRead || f.seq > after {
			return f.key, f.err
		}
	}
}

// backingOff is the error of a forced refresh refused during the backoff
// after a failed read: the last read's error, wrapped. s.mu is held.
func (s *Source) backingOff() error {
	return fmt.Errorf("providers: refresh of %q waits for the backoff after %d failed read(s) (next read from %s): %w",
		s.name, s.streak, s.retryAt.UTC().Format(time.RFC3339Nano), s.lastErr)
}

// startFlight starts a shared store read; s.mu is held. The read is bound by
// the Source's life and readTimeout, not by the ctx of whoever started it.
// A store call that ignores its context does not hold the flight past
// readTimeout: the flight ends with an Unavailable error, the next refresh
// starts a new one, and the stuck call's answer, when it comes, is dropped
// (see load).
func (s *Source) startFlight() *flight {
	f := &flight{seq: s.started.Add(1), done: make(chan struct{})}
	s.inflight = f
	s.flights.Add(1) // under mu, so never after Close began waiting
	go func() {
		defer s.flights.Done()
		rctx, cancel := s.withReadTimeout(s.ctx)
		f.key, f.err = s.load(rctx, f.seq)
		cancel()
		s.mu.Lock()
		if s.inflight == f {
			s.inflight = nil
		}
		s.mu.Unlock()
		close(f.done)
	}()
	return f
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
//
// Close cancels the store reads under way and waits for them to end, but not
// for a store call that ignores its context (a hung NFS or FUSE mount, a
// stuck network call without a deadline): such a call keeps one goroutine,
// and the driver in use, until it returns; its answer is dropped. The same
// holds for a call abandoned after refreshTimeout while the Source runs: at
// most one such goroutine per stuck call.
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

// load reads CURRENT and PREVIOUS from the store and installs them; seq is
// the read's number. A read fails when the store fails, when ctx ends
// before the store's calls return (whether or not they honour ctx: see
// readBounded), and when it brings a short-lived token that is already out
// of service (it expired on the way, as a token whose life is shorter than
// the exchange's round trip does): a token never enters service expired, and
// the failure counts for the backoff like any other.
func (s *Source) load(ctx context.Context, seq uint64) (*Key, error) {
	cur, prev, err := s.readBounded(ctx)
	if err == nil && !cur.Expires.IsZero() {
		if now := time.Now(); cur.Expired(now) || !now.Before(cur.serviceEnd()) {
			err = codes.Errorf(codes.Unavailable, "providers: read %q: the new token (%s) arrived out of service: it expires at %s, %v from its arrival (its life is shorter than the exchange took, or the clocks disagree)",
				s.name, cur.Fingerprint, cur.Expires.UTC().Format(time.RFC3339Nano), cur.lifetime().Round(time.Millisecond))
		}
	}
	if err != nil {
		now := time.Now()
		s.failures.Add(1)
		s.lastFailure.Store(now.UnixNano())
		s.mu.Lock()
		s.lastErr = err
		s.streak++
		s.retryAt = now.Add(s.opts.backoff().Delay(s.streak - 1))
		s.mu.Unlock()
		return nil, err
	}
	cur.readSeq = seq
	s.reads.Add(1)
	s.lastSuccess.Store(time.Now().UnixNano())
	s.mu.Lock()
	s.lastErr = nil
	s.streak = 0
	s.retryAt = time.Time{}
	s.goodSeq = max(s.goodSeq, seq)
	s.mu.Unlock()
	old := s.snap.Load()
	if old != nil && !old.cur.dropped && old.cur.VersionID == cur.VersionID && old.cur.Value.Equal(cur.Value) {
		// Unchanged: keep the old pointers so that callers comparing
		// snapshots see no change; take a new PREVIOUS if the store has one.
		if prevChanged(old.prev, prev) {
			s.snap.Store(&snapshot{val: old.val, cur: old.cur, prev: prev})
		}
		return old.cur, nil
	}
	s.snap.Store(&snapshot{val: cur.Value, cur: cur, prev: prev})
	if !cur.Expires.IsZero() {
		// Never serve a token past its expiry, whatever max_stale says:
		// at Expires, unless a refresh replaced it, it leaves service.
		time.AfterFunc(time.Until(cur.serviceEnd()), func() { s.drop(cur) })
	}
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

// readBounded is read, returning when ctx ends even if the driver's call
// does not: a call that ignores its context is left to return on its own
// (one goroutine until it does), and its answer is dropped. A read that ran
// out of time is Unavailable (a cancelled one Canceled).
func (s *Source) readBounded(ctx context.Context) (cur, prev *Key, err error) {
	type result struct {
		cur, prev *Key
		err       error
	}
	ch := make(chan result, 1) // the abandoned call's send never blocks
	go func() {
		c, p, e := s.read(ctx)
		ch <- result{c, p, e}
	}()
	var r result
	select {
	case r = <-ch:
		if r.err == nil || !errors.Is(context.Cause(ctx), errReadTimeout) {
			return r.cur, r.prev, r.err
		}
	case <-ctx.Done():
		r.err = codes.FromContext(ctx.Err())
	}
	if errors.Is(context.Cause(ctx), errReadTimeout) {
		return nil, nil, codes.Errorf(codes.Unavailable, "providers: read %q: the store did not answer within %v; the call is abandoned: %w", s.name, s.readTimeout, r.err)
	}
	return nil, nil, fmt.Errorf("providers: read %q: %w", s.name, r.err)
}

// errReadTimeout is the cause of a store read's context that ran out of
// readTimeout (rather than of its caller's deadline).
var errReadTimeout = errors.New("store read timeout")

// withReadTimeout bounds one store read by s.readTimeout.
func (s *Source) withReadTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, s.readTimeout, errReadTimeout)
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
			s.log.Warn("providers: ignoring undecodable PREVIOUS version", "version", RedactKeys(pv.ID), "error", err)
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

// nextWait returns how long the loop waits before the next read, after
// failures failed reads in a row. A key refreshes every Refresh plus up to
// Jitter. A short-lived token refreshes from its expiry instead: at its
// advisory point (AdvisoryLead before expiry, at most half its life) less
// up to a quarter of that lead at random, so that many consumers spread
// out. After a failure, the capped backoff applies, bounded by the regular
// wait.
func (s *Source) nextWait(failures int, now time.Time) time.Duration {
	var wait time.Duration
	k := s.Current()
	if !k.Expires.IsZero() {
		at := k.advisoryAt()
		if lead := k.Expires.Sub(at) / 4; lead > 0 {
			at = at.Add(-rand.N(lead))
		}
		wait = max(at.Sub(now), 0)
		if k.dropped {
			wait = 0
		}
	} else {
		wait = s.opts.Refresh
		if s.opts.Jitter > 0 {
			wait += rand.N(s.opts.Jitter)
		}
	}
	if failures > 0 {
		b := s.backoffLeft(failures, now)
		if wait == 0 {
			return b
		}
		wait = min(b, wait)
	}
	if k.Expires.IsZero() {
		return wait
	}
	return max(wait, minTokenWait)
}

// backoffLeft is the wait after failures failed reads in a row: until the
// backoff the last failure set (retryAt, shared with forced refreshes) ends,
// or a new draw when none is set.
func (s *Source) backoffLeft(failures int, now time.Time) time.Duration {
	s.mu.Lock()
	at := s.retryAt
	s.mu.Unlock()
	if at.IsZero() {
		return s.opts.backoff().Delay(failures - 1)
	}
	return max(at.Sub(now), 0)
}

// minTokenWait keeps a token that is born expired (expires_in 0) from
// turning the loop into a busy one.
const minTokenWait = 10 * time.Millisecond

// loop refreshes every Refresh plus up to Jitter, or from a short-lived
// token's expiry (nextWait), backing off on failure.
func (s *Source) loop(ctx context.Context, first time.Duration) {
	defer close(s.loopDone)
	if s.opts.Refresh < 0 && s.Current().Expires.IsZero() {
		<-ctx.Done()
		return
	}
	failures := 0
	for i := 0; ; i++ {
		k := s.Current()
		wait := first
		if i > 0 {
			now := time.Now()
			wait = s.nextWait(failures, now)
			s.nextRefresh.Store(now.Add(wait).UnixNano())
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		var err error
		if k.Expires.IsZero() {
			_, err = s.Refresh(ctx)
		} else {
			// A token: a read begun since k came (a request's Fresh, a
			// 401) already replaced it; its outcome stands.
			_, err = s.refresh(ctx, nil, k.readSeq, readScheduled)
			if err == nil && s.Current().dropped {
				s.mu.Lock()
				err = s.lastErr
				s.mu.Unlock()
			}
		}
		if err != nil {
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
