package rotation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// idWorld is a ledger key on a file store that gives some versions ids
// shaped like a key (rotationtest.KeyShapedIDs), with the events and logs
// of its runs kept.
type idWorld struct {
	t      *testing.T
	l      *rotationtest.Ledger
	fs     *file.Store // the store itself
	st     rotationtest.KeyShapedIDs
	seed   rotation.Credential
	events recorder
	logs   bytes.Buffer

	disguised string // a version id given shaped like a key
}

// newIDWorld returns a world whose store gives the version disguised
// names a key-shaped id, and with puts, every rotation's PENDING version.
func newIDWorld(t *testing.T, puts bool) *idWorld {
	w := &idWorld{t: t, l: rotationtest.NewLedger()}
	w.fs, w.seed = seeded(t, w.l)
	w.st = rotationtest.KeyShapedIDs{Stager: w.fs, Disguise: func(s driver.Stage, id, token string) bool {
		return id == w.disguised || puts && rotationtest.RotationPending(s, id, token)
	}}
	return w
}

// rotator returns a rotator of the key on the store (on the file store
// itself when fixed), holder "a", that stops at boundary stop ("" for
// none) as if killed there.
func (w *idWorld) rotator(fixed bool, stop rotation.Boundary) *rotation.Rotator {
	var st driver.Stager = w.st
	if fixed {
		st = w.fs
	}
	o := rotation.Options{Holder: "a", Notifiers: []rotation.Notifier{&w.events},
		Logger: slog.New(slog.NewTextHandler(&w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AfterStep: func(_ context.Context, _ string, b rotation.Boundary) error {
			if b == stop {
				return errKilled
			}
			return nil
		}}
	return newRotator(w.t, o, &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: w.l, Probe: w.l.Probe(nil)})
}

var errKilled = errors.New("killed")

// run runs the key once and checks that the key-shaped id is nowhere in
// what the run printed.
func (w *idWorld) run(r *rotation.Rotator, o rotation.RunOptions) (*rotation.Result, error) {
	w.t.Helper()
	res, err := r.Run(context.Background(), "k", o)
	out, _ := json.Marshal(res)
	w.checkNoKey("the run's error and result", fmt.Sprint(err)+string(out))
	return res, err
}

// checkNoKey fails the test when text holds a value shaped like a key (a
// disguised version id), which its failure shows redacted.
func (w *idWorld) checkNoKey(what, text string) {
	w.t.Helper()
	if providers.KeyShaped(text) {
		w.t.Fatalf("%s quote the version id shaped like a key:\n%s", what, providers.RedactKeys(text))
	}
}

// checkPrinted checks that the events, the logs, the rotation record
// and status hold no key-shaped id, and returns status.
func (w *idWorld) checkPrinted(r *rotation.Rotator) *rotation.KeyStatus {
	w.t.Helper()
	ctx := context.Background()
	w.events.mu.Lock()
	events, _ := json.Marshal(w.events.events)
	w.events.mu.Unlock()
	w.checkNoKey("the events", string(events))
	w.checkNoKey("the logs", w.logs.String())
	rec, err := w.st.ReadRecord(ctx, "k")
	if err != nil {
		w.t.Fatal(err)
	}
	b, _ := json.Marshal(rec.Data)
	w.checkNoKey("the rotation record", string(b))
	return w.checkStatus(r)
}

// checkStatus checks that status holds no key-shaped id, and returns it.
func (w *idWorld) checkStatus(r *rotation.Rotator) *rotation.KeyStatus {
	w.t.Helper()
	st, err := r.Status(context.Background(), "k")
	if err != nil {
		w.t.Fatal(err)
	}
	b, _ := json.Marshal(st)
	w.checkNoKey("status", string(b))
	return st
}

// checkIDRefused checks the failure of a run refused for a key-shaped
// id: a store error that says so, in words that hold says.
func checkIDRefused(t *testing.T, err error, says string) {
	t.Helper()
	if rotation.ExitCode(err) != rotation.ExitStore || !strings.Contains(fmt.Sprint(err), says) ||
		!strings.Contains(fmt.Sprint(err), providers.KeyShapes) {
		t.Fatalf("run: %v (exit %d), want exit %d and an error saying %q and %q", err, rotation.ExitCode(err), rotation.ExitStore, says, providers.KeyShapes)
	}
}

// checkIdle checks that the record is idle, with the outcome of a
// discarded key.
func (w *idWorld) checkIdle() {
	w.t.Helper()
	rec, err := w.st.ReadRecord(context.Background(), "k")
	if err != nil || rec.Data["phase"] != string(rotation.PhaseIdle) || rec.Data["last_outcome"] != rotation.OutcomeDiscarded {
		w.t.Fatalf("record: %v, phase %q, last outcome %q, want idle and discarded", err, rec.Data["phase"], rec.Data["last_outcome"])
	}
}

// TestKeyShapedVersionID: a store that gives a version an id shaped like
// a key makes a rotation fail with a store error that says so, and the id
// is in none of the error, the result, the events, the logs, the record
// and status. CURRENT's is refused before anything is written or issued;
// the new version's, which the store gives only once it wrote it, is
// discarded at once and its key revoked, and a fixed store rotates.
func TestKeyShapedVersionID(t *testing.T) {
	ctx := context.Background()
	t.Run("current", func(t *testing.T) {
		w := newIDWorld(t, false)
		cur, err := w.fs.Read(ctx, "k", driver.Current)
		if err != nil {
			t.Fatal(err)
		}
		w.disguised = cur.ID
		r := w.rotator(false, "")
		_, err = w.run(r, rotation.RunOptions{Force: true})
		checkIDRefused(t, err, "read CURRENT")
		if rec, _ := w.st.ReadRecord(ctx, "k"); len(rec.Data) != 0 || w.l.Minted() != 0 {
			t.Fatalf("the refused run wrote the record (phase %q) or minted %d keys", rec.Data["phase"], w.l.Minted())
		}
		st := w.checkPrinted(r)
		if st.Current == nil || !strings.HasPrefix(st.Current.Version, "[redacted ") || !slices.ContainsFunc(st.Errors, func(e string) bool {
			return strings.Contains(e, providers.KeyShapes)
		}) {
			t.Fatalf("status does not say CURRENT's id is shaped like a key: %+v", st.Errors)
		}
		if e := w.events.last(rotation.EventFailed); e == nil || !strings.Contains(e.Reason, providers.KeyShapes) {
			t.Fatal("no failure event saying why")
		}
	})
	t.Run("created", func(t *testing.T) {
		w := newIDWorld(t, true)
		r := w.rotator(false, "")
		res, err := w.run(r, rotation.RunOptions{Force: true})
		checkIDRefused(t, err, "the store gave the new key's PENDING version an id")
		want := []rotation.Boundary{rotation.AfterLease, rotation.AfterCreate, rotation.AfterPutPending,
			rotation.AfterRecordDiscarding, rotation.AfterRevokeNew, rotation.AfterDiscard, rotation.AfterDone}
		if !slices.Equal(res.Steps, want) {
			t.Fatalf("steps %v, want %v", res.Steps, want)
		}
		checkRefused(t, w.fs, w.l, w.seed)
		w.checkIdle()
		w.checkPrinted(r)
		if res, err := w.run(w.rotator(true, ""), rotation.RunOptions{Force: true}); err != nil || res.Outcome != rotation.OutcomeRevoked {
			t.Fatalf("rotation on the fixed store: %v (%s)", err, res.Outcome)
		}
	})
}

// TestKeyShapedCreatedIDCrashes: a run whose new version the store gives
// a key-shaped id, killed at every boundary it passes before its end, is
// finished by the next run: the version discarded, its key (asked again
// of the issuer, idempotent on the token) revoked, CURRENT untouched, the
// id printed nowhere.
func TestKeyShapedCreatedIDCrashes(t *testing.T) {
	for _, b := range []rotation.Boundary{rotation.AfterLease, rotation.AfterCreate, rotation.AfterPutPending,
		rotation.AfterRecordDiscarding, rotation.AfterRevokeNew, rotation.AfterDiscard} {
		t.Run(string(b), func(t *testing.T) {
			w := newIDWorld(t, true)
			if _, err := w.run(w.rotator(false, b), rotation.RunOptions{Force: true}); !errors.Is(err, errKilled) {
				t.Fatalf("run killed at %s: %v", b, err)
			}
			r := w.rotator(false, "")
			_, err := w.run(r, rotation.RunOptions{})
			checkIDRefused(t, err, "the store gave the new key's PENDING version an id")
			checkRefused(t, w.fs, w.l, w.seed)
			w.checkIdle()
			w.checkPrinted(r)
		})
	}
}

// TestKeyShapedIDInOldRecord: version ids shaped like a key in a record
// written before rotation refused them (the new and old versions of a
// rotation in grace, a key left valid) are shown redacted: by status, in
// the events, result and logs of the run that revokes the old key, and in
// the record that run writes.
func TestKeyShapedIDInOldRecord(t *testing.T) {
	ctx := context.Background()
	w := newIDWorld(t, false)
	clock := rotationtest.NewClock(time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC))
	r := newRotator(t, rotation.Options{Holder: "a", Now: clock.Now, Notifiers: []rotation.Notifier{&w.events},
		Logger: slog.New(slog.NewTextHandler(&w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))},
		&rotation.Key{Name: "k", Store: w.st, Secret: "k", Issuer: w.l, Probe: w.l.Probe(nil), Grace: 10 * time.Minute})
	if res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true}); err != nil || res.Phase != rotation.PhaseGrace {
		t.Fatalf("rotate: %v (%+v)", err, res)
	}
	rec, err := w.st.ReadRecord(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	data := map[string]string{}
	for k, v := range rec.Data {
		data[k] = v
	}
	data["v"] = "2"
	data["pending_version"] = rotationtest.KeyShapedID(data["pending_version"])
	data["old_version"] = rotationtest.KeyShapedID(data["old_version"])
	data["left_valid"] = `[{"key_id":"apikey_09","fingerprint":"sk-ant-api03-…sha256:0badf00d","version":"` + rotationtest.KeyShapedID("0") + `","outcome":"rolled_back","at":"2026-11-01T00:00:00Z"}]`
	if _, err := w.st.WriteRecord(ctx, "k", rec.Rev, data); err != nil {
		t.Fatal(err)
	}
	if st := w.checkStatus(r); !strings.HasPrefix(st.OldVersion, "[redacted ") || len(st.LeftValid) != 1 {
		t.Fatalf("status: old version %q, %d keys left valid", st.OldVersion, len(st.LeftValid))
	}
	clock.Advance(time.Hour)
	res, err := w.run(r, rotation.RunOptions{})
	if err != nil || res.Outcome != rotation.OutcomeRevoked || !w.l.Key(w.seed.KeyID).Revoked {
		t.Fatalf("revoke: %v (%s)", err, res.Outcome)
	}
	if e := w.events.last(rotation.EventRevoked); e == nil || !strings.HasPrefix(e.NewVersion, "[redacted ") {
		t.Fatal("no revoked event naming the new version redacted")
	}
	w.checkPrinted(r)
}
