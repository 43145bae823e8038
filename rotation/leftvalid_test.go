package rotation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/stage"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// leftValidWorld is a ledger key on a file store, a clock, a metrics
// registry and a log buffer.
type leftValidWorld struct {
	t     *testing.T
	l     *rotationtest.Ledger
	st    *file.Store
	seed  rotation.Credential
	clock *rotationtest.Clock
	m     *rotation.Metrics
	reg   *prometheus.Registry
	logs  *bytes.Buffer
	r     *rotation.Rotator
}

func newLeftValidWorld(t *testing.T, mod func(*rotation.Key)) *leftValidWorld {
	w := &leftValidWorld{t: t, l: rotationtest.NewLedger(), logs: &bytes.Buffer{},
		clock: rotationtest.NewClock(time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC))}
	w.st, w.seed = seeded(t, w.l)
	w.reg = prometheus.NewRegistry()
	w.m = rotation.NewMetrics(w.reg)
	k := &rotation.Key{Name: "k", Store: w.st, Secret: "k", Issuer: w.l, Probe: w.l.Probe(nil), Grace: 10 * time.Minute}
	if mod != nil {
		mod(k)
	}
	w.r = newRotator(t, rotation.Options{Now: w.clock.Now, Metrics: w.m,
		Logger: slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, k)
	return w
}

func (w *leftValidWorld) run(o rotation.RunOptions) (*rotation.Result, error) {
	w.t.Helper()
	return w.r.Run(context.Background(), "k", o)
}

// rotateFully rotates and revokes the old key after the grace.
func (w *leftValidWorld) rotateFully() {
	w.t.Helper()
	if res, err := w.run(rotation.RunOptions{Force: true}); err != nil || res.Phase != rotation.PhaseGrace {
		w.t.Fatalf("rotate: %v (%+v)", err, res)
	}
	w.clock.Advance(time.Hour)
	if res, err := w.run(rotation.RunOptions{}); err != nil || res.Outcome != rotation.OutcomeRevoked {
		w.t.Fatalf("revoke: %v (%+v)", err, res)
	}
	w.clock.Advance(time.Hour)
}

// rollBack rotates, puts the seed key back as CURRENT during the grace,
// and ends the rotation as rolled back; it returns the new key, left
// valid.
func (w *leftValidWorld) rollBack() rotation.Credential {
	w.t.Helper()
	ctx := context.Background()
	res, err := w.run(rotation.RunOptions{Force: true})
	if err != nil || res.Phase != rotation.PhaseGrace {
		w.t.Fatalf("rotate: %v (%+v)", err, res)
	}
	newKey := w.l.Key(res.NewKeyID)
	if _, err := stage.Put(ctx, w.st, "k", providers.EncodePayload(providers.Payload{Key: w.seed.Key, KeyID: w.seed.KeyID})); err != nil {
		w.t.Fatal(err)
	}
	w.clock.Advance(time.Hour)
	if res, err := w.run(rotation.RunOptions{}); err != nil || res.Outcome != rotation.OutcomeRolledBack {
		w.t.Fatalf("after the rollback: %v (%+v)", err, res)
	}
	w.clock.Advance(time.Hour)
	return rotation.Credential{Key: newKey.Value, KeyID: newKey.ID}
}

func (w *leftValidWorld) status() *rotation.KeyStatus {
	w.t.Helper()
	st, err := w.r.Status(context.Background(), "k")
	if err != nil {
		w.t.Fatal(err)
	}
	return st
}

// gauge reads keywarden_rotation_keys_left_valid{key="k"} (-1: absent).
func (w *leftValidWorld) gauge() float64 {
	w.t.Helper()
	if v, ok := w.sample("keywarden_rotation_keys_left_valid", nil); ok {
		return v
	}
	return -1
}

// sample returns the value of the first series of the gauge name whose
// labels include want.
func (w *leftValidWorld) sample(name string, want map[string]string) (float64, bool) {
	w.t.Helper()
	mfs, err := w.reg.Gather()
	if err != nil {
		w.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for n, v := range want {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == n && l.GetValue() == v }) {
					continue series
				}
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// noValues checks that no key value the ledger minted appears in s.
func (w *leftValidWorld) noValues(what, s string) {
	w.t.Helper()
	for _, k := range w.l.Keys() {
		if strings.Contains(s, k.Value.Reveal()) {
			w.t.Fatalf("%s holds a key value", what)
		}
	}
}

// TestLeftValidRolledBack: a rollback lists the new key as left valid;
// the entry survives two later rotations, status shows it (JSON too), the
// gauge counts it; --revoke-left-valid revokes it and drops it.
func TestLeftValidRolledBack(t *testing.T) {
	w := newLeftValidWorld(t, nil)
	left := w.rollBack()
	w.rotateFully()
	w.rotateFully()
	st := w.status()
	if len(st.LeftValid) != 1 {
		t.Fatalf("left valid %+v, want the rolled-back key", st.LeftValid)
	}
	e := st.LeftValid[0]
	if e.KeyID != left.KeyID || e.Fingerprint != left.Key.Fingerprint() || e.Outcome != rotation.OutcomeRolledBack || e.At.IsZero() || e.Version == "" {
		t.Fatalf("entry %+v", e)
	}
	b, _ := json.Marshal(st)
	if !strings.Contains(string(b), `"left_valid":[{"key_id":"`+left.KeyID+`"`) {
		t.Fatalf("status JSON: %s", b)
	}
	if g := w.gauge(); g != 1 {
		t.Fatalf("gauge %v, want 1", g)
	}
	if !w.l.Valid(left.Key) {
		t.Fatal("the left key was revoked by a later rotation")
	}
	// A dry run says what it would do and does nothing.
	res, err := w.run(rotation.RunOptions{RevokeLeftValid: true, DryRun: true})
	if err != nil || len(res.Plan) != 1 || !strings.HasPrefix(res.Plan[0], "revoke the key left valid "+left.Key.Fingerprint()) || !w.l.Valid(left.Key) {
		t.Fatalf("dry run: %v %+v", err, res)
	}
	res, err = w.run(rotation.RunOptions{RevokeLeftValid: true})
	if err != nil || res.Outcome != rotation.OutcomeLeftValidRevoked || !strings.Contains(res.Message, left.KeyID) {
		t.Fatalf("--revoke-left-valid: %v (%+v)", err, res)
	}
	if w.l.Valid(left.Key) {
		t.Fatal("not revoked")
	}
	if st := w.status(); len(st.LeftValid) != 0 || st.Holder != "" {
		t.Fatalf("after: left valid %+v, holder %q", st.LeftValid, st.Holder)
	}
	if g := w.gauge(); g != 0 {
		t.Fatalf("gauge %v, want 0", g)
	}
	// Again: nothing to do.
	if res, err := w.run(rotation.RunOptions{RevokeLeftValid: true}); err != nil || res.Outcome != rotation.OutcomeNothing {
		t.Fatalf("again: %v (%+v)", err, res)
	}
	w.noValues("the log", w.logs.String())
}

// TestLeftValidRefusesCurrent: the key left valid is put back as CURRENT:
// --revoke-left-valid refuses it (exit 11) and keeps it; the next
// rotation revokes it as its old key and drops it from the list in the
// same write.
func TestLeftValidRefusesCurrent(t *testing.T) {
	w := newLeftValidWorld(t, nil)
	left := w.rollBack()
	ctx := context.Background()
	if _, err := stage.Put(ctx, w.st, "k", providers.EncodePayload(providers.Payload{Key: left.Key, KeyID: left.KeyID})); err != nil {
		t.Fatal(err)
	}
	res, err := w.run(rotation.RunOptions{RevokeLeftValid: true})
	if rotation.ExitCode(err) != rotation.ExitConflict || !strings.Contains(err.Error(), "CURRENT's key") {
		t.Fatalf("--revoke-left-valid of CURRENT: exit %d %v", rotation.ExitCode(err), err)
	}
	w.noValues("the error", err.Error()+res.Message)
	if !w.l.Valid(left.Key) || len(w.status().LeftValid) != 1 {
		t.Fatal("CURRENT's key was revoked or dropped")
	}
	if st := w.status(); st.LastOutcome != rotation.OutcomeRolledBack || st.Holder != "" {
		t.Fatalf("the refusal changed the record: outcome %q holder %q", st.LastOutcome, st.Holder)
	}
	w.rotateFully()
	if w.l.Valid(left.Key) {
		t.Fatal("the rotation did not revoke its old key")
	}
	if st := w.status(); len(st.LeftValid) != 0 {
		t.Fatalf("the revoked key is still listed: %+v", st.LeftValid)
	}
}

// TestLeftValidRefusesPending: the key left valid is PENDING (a stray
// write of it): refused.
func TestLeftValidRefusesPending(t *testing.T) {
	w := newLeftValidWorld(t, nil)
	left := w.rollBack()
	if _, err := w.st.PutPending(context.Background(), "k", stage.OneShotToken(), providers.EncodePayload(providers.Payload{Key: left.Key})); err != nil {
		t.Fatal(err)
	}
	_, err := w.run(rotation.RunOptions{RevokeLeftValid: true})
	if rotation.ExitCode(err) != rotation.ExitConflict || !strings.Contains(err.Error(), "PENDING's key") || !w.l.Valid(left.Key) {
		t.Fatalf("--revoke-left-valid of PENDING: exit %d %v", rotation.ExitCode(err), err)
	}
}

// TestLeftValidNoID: a rotation whose old key has neither a readable value
// nor an id ends not_revoked and lists the key by fingerprint; keywarden
// cannot revoke it and says so (exit 11, the entry kept); after a revocation
// by hand, --forget-left-valid drops it.
func TestLeftValidNoID(t *testing.T) {
	w := newLeftValidWorld(t, nil)
	ctx := context.Background()
	if err := w.st.PutByHand(ctx, "k", []byte(`{"apikey":"`+w.seed.Key.Reveal()+`"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.run(rotation.RunOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(time.Hour)
	if res, err := w.run(rotation.RunOptions{}); err != nil || res.Outcome != rotation.OutcomeNotRevoked {
		t.Fatalf("revoke: %v (%+v)", err, res)
	}
	w.clock.Advance(time.Hour)
	w.rotateFully()
	w.rotateFully()
	st := w.status()
	if len(st.LeftValid) != 1 || st.LeftValid[0].KeyID != "" || st.LeftValid[0].Outcome != rotation.OutcomeNotRevoked || w.gauge() != 1 {
		t.Fatalf("left valid %+v, gauge %v", st.LeftValid, w.gauge())
	}
	fp := st.LeftValid[0].Fingerprint
	res, err := w.run(rotation.RunOptions{RevokeLeftValid: true})
	if rotation.ExitCode(err) != rotation.ExitConflict || !strings.Contains(err.Error(), "revoke it by hand") || !strings.Contains(err.Error(), "--forget-left-valid="+fp) {
		t.Fatalf("--revoke-left-valid without an id: exit %d %v", rotation.ExitCode(err), err)
	}
	w.noValues("the result", err.Error()+res.Message)
	if len(w.status().LeftValid) != 1 {
		t.Fatal("the entry was dropped")
	}
	if _, err := w.run(rotation.RunOptions{ForgetLeftValid: "sha256:nothing"}); rotation.ExitCode(err) != rotation.ExitConfig {
		t.Fatalf("forget an unlisted key: %v", err)
	}
	if _, err := w.run(rotation.RunOptions{ForgetLeftValid: fp, Force: true}); rotation.ExitCode(err) != rotation.ExitConfig {
		t.Fatalf("forget with --force: %v", err)
	}
	res, err = w.run(rotation.RunOptions{ForgetLeftValid: fp})
	if err != nil || res.Outcome != rotation.OutcomeLeftValidForgotten {
		t.Fatalf("forget: %v (%+v)", err, res)
	}
	if len(w.status().LeftValid) != 0 || w.gauge() != 0 {
		t.Fatal("not forgotten")
	}
	// The forget is a run: its last_run series is there (rotate
	// --push-gateway replaces the key's group with what a run recorded).
	if v, _ := w.sample("keywarden_rotation_last_run_timestamp_seconds", map[string]string{"key": "k", "outcome": rotation.OutcomeLeftValidForgotten}); v != float64(w.clock.Now().Unix()) {
		t.Fatalf("last run of the forget: %v, want %d", v, w.clock.Now().Unix())
	}
	w.noValues("the log", w.logs.String())
}

// TestLeftValidAbandoned: an abandoned revocation lists the old key; with
// a revoke gate, --revoke-left-valid keeps it while a consumer reports it,
// and revokes it once none does.
func TestLeftValidAbandoned(t *testing.T) {
	c := &scripted{}
	var refuse atomic.Bool
	w := newLeftValidWorld(t, func(k *rotation.Key) {
		k.RevokeGate = &rotation.RevokeGate{Consumers: c, Checks: 2, Interval: time.Millisecond}
	})
	c.oldFP = w.seed.Key.Fingerprint()
	w.l.Fail = func(op string) error {
		if op == "revoke" && refuse.Load() {
			return errors.New("revocation refused")
		}
		return nil
	}
	refuse.Store(true)
	if _, err := w.run(rotation.RunOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(time.Hour)
	if _, err := w.run(rotation.RunOptions{}); rotation.ExitCode(err) != rotation.ExitIssuer {
		t.Fatalf("revoke refused: %v", err)
	}
	refuse.Store(false)
	if res, err := w.run(rotation.RunOptions{Abandon: true}); err != nil || res.Phase != rotation.PhaseIdle {
		t.Fatalf("abandon: %v (%+v)", err, res)
	}
	st := w.status()
	if len(st.LeftValid) != 1 || st.LeftValid[0].KeyID != w.seed.KeyID || st.LeftValid[0].Outcome != "abandoned" {
		t.Fatalf("left valid %+v", st.LeftValid)
	}
	c.set([]rotation.Holder{{"pod": "web-1", "fingerprint": c.oldFP}}, nil)
	_, err := w.run(rotation.RunOptions{RevokeLeftValid: true})
	if rotation.ExitCode(err) != rotation.ExitGateHeld || !strings.Contains(err.Error(), "pod=web-1") || !w.l.Valid(w.seed.Key) {
		t.Fatalf("held: exit %d %v", rotation.ExitCode(err), err)
	}
	c.set(nil, nil)
	if res, err := w.run(rotation.RunOptions{RevokeLeftValid: true}); err != nil || res.Outcome != rotation.OutcomeLeftValidRevoked || w.l.Valid(w.seed.Key) {
		t.Fatalf("clear: %v (%+v)", err, res)
	}
	if n := c.count(); n < 3 {
		t.Fatalf("the gate was asked %d times, want its 2 checks on the clearing run", n)
	}
}

// TestLeftValidBound: with MaxLeftValid keys listed, no rotation starts
// (exit 11, naming the way out); nothing is dropped.
func TestLeftValidBound(t *testing.T) {
	w := newLeftValidWorld(t, nil)
	ctx := context.Background()
	var es []rotation.LeftValidKey
	for i := range rotation.MaxLeftValid {
		es = append(es, rotation.LeftValidKey{Fingerprint: "sha256:" + strings.Repeat("0", 7) + string(rune('a'+i%26)) + string(rune('a'+i/26)), Outcome: rotation.OutcomeNotRevoked})
	}
	b, _ := json.Marshal(es)
	rec, err := w.st.ReadRecord(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.st.WriteRecord(ctx, "k", rec.Rev, map[string]string{"v": "1", "phase": "idle", "left_valid": string(b)}); err != nil {
		t.Fatal(err)
	}
	minted := w.l.Minted()
	_, err = w.run(rotation.RunOptions{Force: true})
	if rotation.ExitCode(err) != rotation.ExitConflict || !strings.Contains(err.Error(), "--revoke-left-valid") || w.l.Minted() != minted {
		t.Fatalf("rotate past the bound: exit %d %v (minted %d)", rotation.ExitCode(err), err, w.l.Minted())
	}
	if n := len(w.status().LeftValid); n != rotation.MaxLeftValid || w.gauge() != float64(rotation.MaxLeftValid) {
		t.Fatalf("listed %d, gauge %v", n, w.gauge())
	}
}

// TestDaemonExportsLeftValidOfUnscheduledKey: the daemon exports the keys
// left valid of a key it never rotates (no schedule) from its record, at
// start, without a run.
func TestDaemonExportsLeftValidOfUnscheduledKey(t *testing.T) {
	w := newLeftValidWorld(t, nil)
	w.rollBack()
	reg := prometheus.NewRegistry()
	daemon := &leftValidWorld{t: t, reg: reg}
	k := &rotation.Key{Name: "k", Store: w.st, Secret: "k", Issuer: w.l, Probe: w.l.Probe(nil), Grace: 10 * time.Minute}
	r := newRotator(t, rotation.Options{Now: w.clock.Now, Metrics: rotation.NewMetrics(reg), Logger: slog.New(slog.DiscardHandler)}, k)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx, rotation.ServeOptions{}) }()
	deadline := time.Now().Add(20 * time.Second)
	for daemon.gauge() != 1 {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("gauge %v, want 1 (the rolled-back key)", daemon.gauge())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
