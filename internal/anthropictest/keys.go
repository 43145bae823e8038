package anthropictest

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Key statuses, as the Admin API spells them.
const (
	StatusActive   = "active"
	StatusInactive = "inactive"
	StatusArchived = "archived"
	StatusExpired  = "expired"
)

// Key is a snapshot of one API key as the fake knows it. Its String and
// GoString never show Value, so that a logged Key leaks nothing.
type Key struct {
	ID    string // apikey_01…
	Value string // sk-ant-api03-…
	Name  string
	// Status is the key's effective status: expired once ExpiresAt has
	// passed (unless archived).
	Status    string
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never expires
	// ActiveFrom is when an activated key starts to work (zero: at once);
	// see WithActivationDelay.
	ActiveFrom time.Time
}

// Hint returns the key's partial_key_hint, as the Admin API shows it.
func (k Key) Hint() string { return Hint(k.Value) }

// String describes k by id, hint and status, never by value.
func (k Key) String() string { return k.ID + " (" + k.Hint() + ", " + k.Status + ")" }

// GoString is String, so that %#v does not show the value either.
func (k Key) GoString() string { return "anthropictest.Key{" + k.String() + "}" }

// Hint returns the partial_key_hint of a key value: its first 16
// characters, "...", and its last 4, as in "sk-ant-api03-R2D...igAA".
// Values too short for that keep a shorter head.
func Hint(v string) string {
	head := 16
	if len(v) < head+4+4 {
		head = max(len(v)-8, 0)
	}
	tail := min(4, len(v)-head)
	return v[:head] + "..." + v[len(v)-tail:]
}

// key is the fake's state of one API key. The fields the data plane reads
// are atomics, so that authentication takes no lock.
type key struct {
	id, value, hint string
	createdAt       time.Time
	name            string // guarded by keyring.mu

	st         atomic.Int32 // stActive, stInactive, stArchived
	activeFrom atomic.Int64 // unix nanoseconds; 0: at once
	expiresAt  atomic.Int64 // unix nanoseconds; 0: never

	served, rejected, failed atomic.Int64
}

const (
	stActive int32 = iota
	stInactive
	stArchived
)

var statusNames = [...]string{stActive: StatusActive, stInactive: StatusInactive, stArchived: StatusArchived}

func parseStatus(s string) (int32, bool) {
	for i, n := range statusNames {
		if n == s {
			return int32(i), true
		}
	}
	return 0, false
}

// status returns k's effective status at now.
func (k *key) status(now time.Time) string {
	st := k.st.Load()
	if st != stArchived {
		if e := k.expiresAt.Load(); e != 0 && now.UnixNano() >= e {
			return StatusExpired
		}
	}
	return statusNames[st]
}

// check reports whether k may authenticate a request: nil, or the error
// to answer.
func (k *key) check(now func() time.Time) *apiError {
	if k.st.Load() != stActive {
		return errInvalidKey
	}
	e, from := k.expiresAt.Load(), k.activeFrom.Load()
	if e == 0 && from == 0 {
		return nil
	}
	t := now().UnixNano()
	if e != 0 && t >= e {
		return errExpiredKey
	}
	if t < from {
		return errInvalidKey
	}
	return nil
}

func (k *key) snapshot(now time.Time) Key {
	out := Key{
		ID: k.id, Value: k.value, Name: k.name, Status: k.status(now), CreatedAt: k.createdAt,
	}
	if e := k.expiresAt.Load(); e != 0 {
		out.ExpiresAt = time.Unix(0, e).UTC()
	}
	if f := k.activeFrom.Load(); f != 0 {
		out.ActiveFrom = time.Unix(0, f).UTC()
	}
	return out
}

// keyring holds the keys: writers take mu; the data plane reads byValue,
// a copy-on-write map, without a lock.
type keyring struct {
	byValue atomic.Pointer[map[string]*key]
	userID  string

	mu    sync.Mutex
	byID  map[string]*key
	order []*key // creation order
}

func (r *keyring) init() {
	m := map[string]*key{}
	r.byValue.Store(&m)
	r.byID = map[string]*key{}
	r.userID = "user_01" + randomID(22)
}

func (r *keyring) lookup(v string) *key { return (*r.byValue.Load())[v] }

// AddKey adds an API key with value (a realistic random sk-ant-api03-…
// value when "") and status (active, inactive, archived or expired), and
// returns it. It panics on a bad status or a value already added: both
// are mistakes of the test.
func (s *Server) AddKey(value, status string) Key {
	if value == "" {
		value = "sk-ant-api03-" + randomString(93) + "AA"
	}
	st, ok := parseStatus(status)
	if !ok && status != StatusExpired {
		panic(fmt.Sprintf("anthropictest: AddKey: status %q is not active, inactive, archived or expired", status))
	}
	now := s.now()
	k := &key{value: value, hint: Hint(value), createdAt: now.UTC(), name: "key-" + randomID(6)}
	k.st.Store(st)
	if status == StatusExpired {
		k.st.Store(stActive)
		k.expiresAt.Store(now.UnixNano())
	}
	r := &s.keys
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.byValue.Load()
	if _, dup := old[value]; dup || value == s.cfg.adminKey {
		panic("anthropictest: AddKey: this value was added already (key " + Hint(value) + ")")
	}
	for k.id == "" || r.byID[k.id] != nil {
		k.id = "apikey_01" + randomID(22)
	}
	m := make(map[string]*key, len(old)+1)
	for v, x := range old {
		m[v] = x
	}
	m[value] = k
	r.byValue.Store(&m)
	r.byID[k.id] = k
	r.order = append(r.order, k)
	return k.snapshot(now)
}

// SetStatus sets the status of key id as POST
// /v1/organizations/api_keys/{id} does (active, inactive or archived;
// archived is final; an expired key can only be archived), or expires it
// now with StatusExpired.
func (s *Server) SetStatus(id, status string) error {
	if status == StatusExpired {
		return s.Expire(id)
	}
	if _, e := s.update(id, nil, &status); e != nil {
		return errors.New("anthropictest: " + e.msg)
	}
	return nil
}

// Expire makes key id expired from now on.
func (s *Server) Expire(id string) error { return s.ExpireAt(id, s.now()) }

// ExpireAt makes key id expire at t (the zero time: never).
func (s *Server) ExpireAt(id string, t time.Time) error {
	r := &s.keys
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.byID[id]
	if k == nil {
		return fmt.Errorf("anthropictest: no API key %s", id)
	}
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	k.expiresAt.Store(n)
	return nil
}

// Key returns the key with id.
func (s *Server) Key(id string) (Key, bool) {
	r := &s.keys
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.byID[id]
	if k == nil {
		return Key{}, false
	}
	return k.snapshot(s.now()), true
}

// KeyByValue returns the key whose value is v.
func (s *Server) KeyByValue(v string) (Key, bool) {
	k := s.keys.lookup(v)
	if k == nil {
		return Key{}, false
	}
	return s.Key(k.id)
}

// Keys returns every API key, oldest first.
func (s *Server) Keys() []Key {
	r := &s.keys
	r.mu.Lock()
	defer r.mu.Unlock()
	now := s.now()
	out := make([]Key, len(r.order))
	for i, k := range r.order {
		out[i] = k.snapshot(now)
	}
	return out
}

// Leaked returns the ids of the keys the server knows (AdminKeyID for the
// admin key) whose secret part — the value without its sk-ant-api03- or
// sk-ant-admin01- prefix — appears in text: for tests proving that no log
// line, error or metric holds a key.
func (s *Server) Leaked(text string) []string {
	var ids []string
	for _, k := range s.Keys() {
		if strings.Contains(text, secretPart(k.Value)) {
			ids = append(ids, k.ID)
		}
	}
	if strings.Contains(text, secretPart(s.cfg.adminKey)) {
		ids = append(ids, AdminKeyID)
	}
	return ids
}

// secretPart is v without its key-type prefix.
func secretPart(v string) string {
	for _, p := range []string{"sk-ant-api03-", "sk-ant-admin01-"} {
		if rest, ok := strings.CutPrefix(v, p); ok && rest != "" {
			return rest
		}
	}
	return v
}

// update applies an Admin API update of key id. It returns the key's
// object as JSON.
func (s *Server) update(id string, name, status *string) ([]byte, *apiError) {
	var st int32
	if status != nil {
		var ok bool
		if st, ok = parseStatus(*status); !ok {
			return nil, &apiError{400, "invalid_request_error", "status: Input should be 'active', 'inactive' or 'archived'"}
		}
	}
	r := &s.keys
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.byID[id]
	if k == nil {
		return nil, notFoundKey(id)
	}
	now := s.now()
	switch k.status(now) {
	case StatusArchived:
		return nil, &apiError{400, "invalid_request_error", "API key " + id + " is archived and cannot be updated"}
	case StatusExpired:
		if status != nil && st != stArchived {
			return nil, &apiError{400, "invalid_request_error", "API key " + id + " has expired; it can only be archived"}
		}
	}
	if name != nil {
		k.name = *name
	}
	if status != nil {
		if st == stActive && k.st.Load() != stActive {
			var from int64
			if d := s.cfg.activationDelay; d > 0 {
				from = now.Add(d).UnixNano()
			}
			k.activeFrom.Store(from)
		}
		k.st.Store(st)
	}
	return appendKeyObject(nil, k, now, r.userID), nil
}

func notFoundKey(id string) *apiError {
	return &apiError{404, "not_found_error", "API key " + id + " not found"}
}

const (
	base58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
	base64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)

func randomFrom(alphabet string, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("anthropictest: crypto/rand: " + err.Error())
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// randomString returns n random characters of a key's alphabet.
func randomString(n int) string { return randomFrom(base64, n) }

// randomID returns n random characters of an id's alphabet.
func randomID(n int) string { return randomFrom(base58, n) }
