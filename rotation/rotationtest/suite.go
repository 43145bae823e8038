// Package rotationtest is the rotation state machine's test suite, run
// against every store driver that implements driver.Stager, plus the
// helpers it uses: Ledger (an in-memory issuer keeping account of every
// call, with a matching probe) and Clock. A store runs the suite with a
// one-line test:
//
//	func TestRotation(t *testing.T) { rotationtest.Run(t, rotationtest.Harness{Stager: st}) }
//
// The suite kills runs at every step boundary (Options.AfterStep) and
// checks that the next run converges: the new key CURRENT, the old key
// PREVIOUS and revoked exactly once, one key minted per rotation, CURRENT
// never a revoked key. It also covers probe failures (park and discard),
// rotators racing on one key, grace, dry runs, leases, stray PENDING
// versions and failing issuers, and checks that no key value reaches a
// log, an error or an event.
package rotationtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/tailbuf"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/rotation"
)

// Harness connects the suite to one store.
type Harness struct {
	// Stager is the store; the suite uses its own unique secret names.
	Stager driver.Stager
	// Prefix starts every secret name (default "kwrot-"); Vault tests use a
	// folder their policies grant.
	Prefix string
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	if h.Prefix == "" {
		h.Prefix = "kwrot-"
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"Rotate", testRotate},
		{"RotateTwice", testRotateTwice},
		{"FirstKey", testFirstKey},
		{"CrashAtEveryBoundary", testCrashes},
		{"CrashAtEveryDiscardBoundary", testDiscardCrashes},
		{"ProbeFailurePark", testPark},
		{"ProbeFailureDiscard", testDiscard},
		{"ProbeRetries", testProbeRetries},
		{"ConcurrentRotators", testConcurrent},
		{"Grace", testGrace},
		{"GraceWait", testGraceWait},
		{"DryRun", testDryRun},
		{"LeaseExpiry", testLeaseExpiry},
		{"StrayPending", testStrayPending},
		{"InterruptedPut", testInterruptedPut},
		{"PoolEmpty", testPoolEmpty},
		{"IssuerErrors", testIssuerErrors},
		{"RevokeRefusesCurrent", testRevokeRefusesCurrent},
		{"StoreErrors", testStoreErrors},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

// errKilled is what the crash hook returns: the run stops as if killed.
var errKilled = errors.New("rotationtest: killed")

// fixture is one key in the store under test with its ledger.
type fixture struct {
	t      *testing.T
	st     driver.Stager
	name   string
	ledger *Ledger
	logs   *tailbuf.Buffer
	events *eventLog
	clock  *Clock // nil: real time
}

func newFixture(t *testing.T, h Harness) *fixture {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	f := &fixture{t: t, st: h.Stager, name: h.Prefix + hex.EncodeToString(b), ledger: NewLedger(), logs: &tailbuf.Buffer{}, events: &eventLog{}}
	t.Cleanup(f.checkNoSecrets)
	return f
}

// key returns the key's rotation settings: the ledger as issuer and probe,
// no grace, a weekly schedule, fast probe retries, and refusals that fail
// at once (no settle time after activation: the ledger's keys work at once;
// the settle time is tested against the fake Claude API in package
// rotation).
func (f *fixture) key() *rotation.Key {
	return &rotation.Key{
		Name:     "k",
		Store:    f.st,
		Secret:   f.name,
		Issuer:   f.ledger,
		Probe:    f.ledger.Probe(nil),
		Retry:    rotation.Retry{Attempts: 3, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Timeout: 10 * time.Second, Settle: -1},
		Schedule: mustSchedule(f.t, "@weekly"),
	}
}

func (f *fixture) options(holder string) rotation.Options {
	o := rotation.Options{
		Holder:    holder,
		Logger:    slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Notifiers: []rotation.Notifier{f.events},
	}
	if f.clock != nil {
		o.Now = f.clock.Now
	}
	return o
}

// rotator returns a rotator of the fixture's key; mod may change the key
// and options.
func (f *fixture) rotator(holder string, mod func(*rotation.Key, *rotation.Options)) *rotation.Rotator {
	f.t.Helper()
	k, o := f.key(), f.options(holder)
	if mod != nil {
		mod(k, &o)
	}
	r, err := rotation.New(o, k)
	if err != nil {
		f.t.Fatalf("rotation.New: %v", err)
	}
	return r
}

// seed makes a fresh ledger key CURRENT, as `keywarden put` would.
func (f *fixture) seed() rotation.Credential {
	f.t.Helper()
	c := f.ledger.Seed()
	providertest.Rotate(f.t, f.st, f.name, providers.EncodePayload(providers.Payload{Key: c.Key, KeyID: c.KeyID}))
	return c
}

// read returns the payload of a stage, or nil when the stage is empty.
func (f *fixture) read(stage driver.Stage) (*providers.Payload, *driver.Version) {
	f.t.Helper()
	ctx := context.Background()
	var v *driver.Version
	var err error
	if stage == driver.Pending {
		v, err = f.st.ReadPending(ctx, f.name)
	} else {
		v, err = f.st.Read(ctx, f.name, stage)
	}
	if codes.Is(err, codes.NotFound) {
		return nil, nil
	}
	if err != nil {
		f.t.Fatalf("read %s: %v", stage, err)
	}
	p, err := providers.DecodePayload(v.Value, "")
	if err != nil {
		f.t.Fatalf("decode %s: %v", stage, err)
	}
	return &p, v
}

// record returns the rotation record's data.
func (f *fixture) record() map[string]string {
	f.t.Helper()
	r, err := f.st.ReadRecord(context.Background(), f.name)
	if err != nil {
		f.t.Fatalf("ReadRecord: %v", err)
	}
	return r.Data
}

// checkInvariants checks what must hold at every moment: CURRENT is never
// a revoked key.
func (f *fixture) checkInvariants(when string) {
	f.t.Helper()
	cur, _ := f.read(driver.Current)
	if cur == nil {
		return
	}
	if k := f.ledger.ByValue(cur.Key); k != nil && k.Revoked {
		f.t.Fatalf("%s: CURRENT %s is a revoked key", when, cur.Key.Fingerprint())
	}
}

// checkConverged checks the end state of one complete rotation from old:
// CURRENT a new minted key, active; PREVIOUS old, revoked exactly once; no
// PENDING; the record idle with outcome revoked.
func (f *fixture) checkConverged(old rotation.Credential, minted int) {
	f.t.Helper()
	cur, cv := f.read(driver.Current)
	if cur == nil {
		f.t.Fatal("no CURRENT")
	}
	nk := f.ledger.ByValue(cur.Key)
	switch {
	case nk == nil:
		f.t.Fatalf("CURRENT %s is not a ledger key", cur.Key.Fingerprint())
	case nk.Token == "":
		f.t.Fatalf("CURRENT %s is still the seeded key", cur.Key.Fingerprint())
	case !nk.Active || nk.Revoked:
		f.t.Fatalf("CURRENT %s is not active (active %v, revoked %v)", cur.Key.Fingerprint(), nk.Active, nk.Revoked)
	case cur.KeyID != nk.ID:
		f.t.Fatalf("CURRENT payload key_id %q, want %q", cur.KeyID, nk.ID)
	}
	prev, _ := f.read(driver.Previous)
	if prev == nil || !prev.Key.Equal(old.Key) {
		f.t.Fatalf("PREVIOUS is not the old key")
	}
	ok := f.ledger.Key(old.KeyID)
	if !ok.Revoked || ok.Active {
		f.t.Fatalf("old key not revoked: %+v", ok)
	}
	if p, _ := f.read(driver.Pending); p != nil {
		f.t.Fatalf("PENDING left behind: %s", p.Key.Fingerprint())
	}
	if got := f.ledger.Minted(); got != minted {
		f.t.Fatalf("ledger minted %d keys, want %d", got, minted)
	}
	rec := f.record()
	if rec["phase"] != string(rotation.PhaseIdle) || rec["last_outcome"] != rotation.OutcomeRevoked {
		f.t.Fatalf("record phase %q outcome %q, want idle/revoked", rec["phase"], rec["last_outcome"])
	}
	if rec["holder"] != "" {
		f.t.Fatalf("record still holds a lease: %q", rec["holder"])
	}
	f.t.Logf("converged: CURRENT version %s %s (%s), old %s revoked", cv.ID, cur.Key.Fingerprint(), nk.ID, old.KeyID)
}

// checkNoSecrets fails when a key value of the ledger appears in the logs
// or the events.
func (f *fixture) checkNoSecrets() {
	logs := f.logs.String()
	events := f.events.json()
	f.ledger.mu.Lock()
	defer f.ledger.mu.Unlock()
	for _, k := range f.ledger.keys {
		v := k.Value.Reveal()
		if strings.Contains(logs, v) || strings.Contains(events, v) {
			f.t.Errorf("key %s appears in the logs or events", k.Value.Fingerprint())
		}
	}
}

// checkErr checks that err has the exit code want and holds no key value.
func (f *fixture) checkErr(what string, err error, want int) {
	f.t.Helper()
	if got := rotation.ExitCode(err); got != want {
		f.t.Fatalf("%s: exit code %d (%v), want %d", what, got, err, want)
	}
	if err == nil {
		return
	}
	f.ledger.mu.Lock()
	defer f.ledger.mu.Unlock()
	for _, k := range f.ledger.keys {
		if strings.Contains(err.Error(), k.Value.Reveal()) {
			f.t.Fatalf("%s: error holds key %s", what, k.Value.Fingerprint())
		}
	}
}

func mustSchedule(t *testing.T, spec string) rotation.Schedule {
	s, err := rotation.ParseSchedule(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// crashAt returns an AfterStep hook that kills the run at b.
func crashAt(b rotation.Boundary) func(context.Context, string, rotation.Boundary) error {
	return func(_ context.Context, _ string, got rotation.Boundary) error {
		if got == b {
			return errKilled
		}
		return nil
	}
}

// eventLog records events.
type eventLog struct {
	mu     sync.Mutex
	events []rotation.Event
}

func (l *eventLog) Notify(_ context.Context, e rotation.Event) error {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
	return nil
}

func (l *eventLog) types() []rotation.EventType {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []rotation.EventType
	for _, e := range l.events {
		out = append(out, e.Type)
	}
	return out
}

func (l *eventLog) json() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, _ := json.Marshal(l.events)
	return string(b)
}
