package rotationtest

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/keywarden/keywarden/internal/tailbuf"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/stage"
	"github.com/keywarden/keywarden/rotation"
)

// KeyShapedIDs is a store whose driver gives some versions ids shaped
// like a key (KeyShapedID of the backend's own id), as a store's bug, or a
// hand-written store with "id" and "value" swapped, would: those Disguise
// picks, from what Read, ReadPending and PutPending return. Promote and
// DiscardPending take the ids back. The mapping is a function of the id
// alone, so every process that opens the store again (a crash's child,
// the follow-ups) sees the same ids, and it makes no call of its own.
type KeyShapedIDs struct {
	driver.Stager
	// Disguise reports whether the version id, read at stage (PENDING for
	// PutPending) and written with token, is given shaped like a key.
	Disguise func(stage driver.Stage, id, token string) bool
}

// RotationPending is a KeyShapedIDs.Disguise: the PENDING versions of
// rotations. The versions of one-shot writes (put, the harness's seeds)
// keep their ids: stage.Replace checks the id it promoted against
// CURRENT's, and a key-shaped CURRENT is another refusal.
func RotationPending(s driver.Stage, _, token string) bool {
	return s == driver.Pending && !stage.IsOneShot(token)
}

// wrapKeyShapedPending is crashOp.store for KeyShapedIDs of RotationPending.
func wrapKeyShapedPending(st driver.Stager) driver.Stager {
	return KeyShapedIDs{Stager: st, Disguise: RotationPending}
}

// keyShapedPrefix starts every id KeyShapedID makes: an Anthropic key's.
const keyShapedPrefix = "sk-ant-api03-"

// KeyShapedID returns the key-shaped id of a backend's version id: the
// prefix, the hex SHA-256 of id, then id in hex, so that realID can tell
// it back.
func KeyShapedID(id string) string {
	sum := sha256.Sum256([]byte(id))
	return keyShapedPrefix + hex.EncodeToString(sum[:]) + hex.EncodeToString([]byte(id))
}

// realID returns the backend's id of an id KeyShapedID made, and any other
// id as it is.
func realID(id string) string {
	s, ok := strings.CutPrefix(id, keyShapedPrefix)
	if !ok || len(s) < 2*sha256.Size {
		return id
	}
	raw, err := hex.DecodeString(s[2*sha256.Size:])
	if err != nil {
		return id
	}
	if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != s[:2*sha256.Size] {
		return id
	}
	return string(raw)
}

// shown returns v, read at stage and written with token, as the store
// gives it: with a key-shaped id when Disguise picks it.
func (s KeyShapedIDs) shown(st driver.Stage, token string, v *driver.Version, err error) (*driver.Version, error) {
	if err != nil || !s.Disguise(st, v.ID, token) {
		return v, err
	}
	c := *v
	c.ID = KeyShapedID(v.ID)
	if !providers.KeyShaped(c.ID) {
		return nil, codes.Errorf(codes.Internal, "rotationtest: the id made of version %s is not shaped like a key", v.ID)
	}
	return &c, nil
}

func (s KeyShapedIDs) Read(ctx context.Context, name string, st driver.Stage) (*driver.Version, error) {
	v, err := s.Stager.Read(ctx, name, st)
	if err != nil {
		return nil, err
	}
	return s.shown(st, v.Token, v, nil)
}

func (s KeyShapedIDs) ReadPending(ctx context.Context, name string) (*driver.Version, error) {
	v, err := s.Stager.ReadPending(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.shown(driver.Pending, v.Token, v, nil)
}

func (s KeyShapedIDs) PutPending(ctx context.Context, name, token string, value []byte) (*driver.Version, error) {
	v, err := s.Stager.PutPending(ctx, name, token, value)
	return s.shown(driver.Pending, token, v, err)
}

func (s KeyShapedIDs) Promote(ctx context.Context, name, pendingID, currentID string) error {
	return s.Stager.Promote(ctx, name, realID(pendingID), realID(currentID))
}

func (s KeyShapedIDs) DiscardPending(ctx context.Context, name, pendingID string) error {
	return s.Stager.DiscardPending(ctx, name, realID(pendingID))
}

// keyShapedFollowUps follow a crash of a rotation whose PENDING version
// the store gives a key-shaped id: every rotation on such a store is
// refused, so the next one finishes the refusal and is refused in turn.
var keyShapedFollowUps = []followUp{
	{name: "rotate", do: followRotateRefused},
	{name: "put", do: followPut},
	{name: "abandon", do: followAbandonRefused},
	{name: "dry-run", keeps: true, do: func(ctx context.Context, w *world) error {
		return dryRun(ctx, w, isKeyShapedRefusal)
	}},
}

// doRotateRefused runs a rotation (`keywarden rotate --force`) whose new
// PENDING version the store gives a key-shaped id: the run ends refused
// (refusedRotation).
func doRotateRefused(ctx context.Context, w *world, _ map[string]string) error {
	return refusedRotation(ctx, w)
}

// refusedRotation runs a rotation (`keywarden rotate --force`) and checks
// that it ended with the refusal of the new key's key-shaped PENDING id: a
// store error (exit 12) that says so, and printed no key (runShown).
func refusedRotation(ctx context.Context, w *world) error {
	_, err := runShown(ctx, w, rotation.RunOptions{Force: true})
	if rotation.ExitCode(err) != rotation.ExitStore || !strings.Contains(fmt.Sprint(err), "PENDING version an id "+providers.KeyShapes) {
		return fmt.Errorf("rotate: %w (exit %d), want exit %d and an error saying the new PENDING version's id is %s", err, rotation.ExitCode(err), rotation.ExitStore, providers.KeyShapes)
	}
	return nil
}

// followRotateRefused runs the next rotation on a crashed refusal: it
// finishes it, is refused in turn, and leaves the refusal's end
// (refusalConverged).
func followRotateRefused(ctx context.Context, w *world) error {
	if err := recordShowsNoKey(ctx, w); err != nil {
		return fmt.Errorf("the crashed state: %w", err)
	}
	if err := refusedRotation(ctx, w); err != nil {
		return err
	}
	return refusalConverged(ctx, w, true)
}

// followAbandonRefused runs --abandon on a crashed refusal: it leaves the
// refusal's end (refusalConverged), or, while PENDING holds the version
// whose key-shaped id it refuses to read, it fails saying so and changes
// nothing, and the next rotation finishes the refusal.
func followAbandonRefused(ctx context.Context, w *world) error {
	before, err := current(ctx, w)
	if err != nil {
		return err
	}
	issuerBefore := w.issuerState()
	_, err = runShown(ctx, w, rotation.RunOptions{Abandon: true})
	if isKeyShapedRefusal(err) {
		if after, cerr := current(ctx, w); cerr != nil || after != before || w.issuerState() != issuerBefore {
			return fmt.Errorf("abandon, refused (%w), changed CURRENT from %s to %q (%v) or the issuer's state", err, before, after, cerr)
		}
		if perr := noPending(ctx, w); perr == nil {
			return fmt.Errorf("abandon: %w; yet no PENDING version is left to refuse", err)
		}
		return followRotateRefused(ctx, w)
	}
	if err != nil {
		return fmt.Errorf("abandon: %w", err)
	}
	return refusalConverged(ctx, w, false)
}

// isKeyShapedRefusal reports whether err is a run's refusal to read a
// version whose id is shaped like a key.
func isKeyShapedRefusal(err error) bool {
	return errors.Is(err, providers.ErrKeyShapedID) && rotation.ExitCode(err) == rotation.ExitStore
}

// refusalConverged checks the end of a refused rotation: CURRENT is still
// the old key (checkKey, run after every follow-up, checks it is not
// revoked), no PENDING version is left, the record is idle (after a
// rotation, with outcome discarded) and shows no key, and every key the
// issuer minted is revoked.
func refusalConverged(ctx context.Context, w *world, rotated bool) error {
	if id, err := current(ctx, w); err != nil || id != idOld {
		return fmt.Errorf("CURRENT holds %q (%v), want the old key %s", id, err, idOld)
	}
	if err := noPending(ctx, w); err != nil {
		return err
	}
	rec, err := w.st.ReadRecord(ctx, w.name)
	if err != nil {
		return fmt.Errorf("read the rotation record: %w", err)
	}
	// No record at all is idle: a crash before the first write, which
	// --abandon finds nothing to do about.
	phase, outcome := cmp.Or(rec.Data["phase"], string(rotation.PhaseIdle)), rec.Data["last_outcome"]
	if phase != string(rotation.PhaseIdle) || rotated && outcome != rotation.OutcomeDiscarded {
		return fmt.Errorf("record in phase %s, last outcome %q; want idle (after a rotation: %s)", phase, outcome, rotation.OutcomeDiscarded)
	}
	for _, m := range mintedKeys(w.dir) {
		if !m.revoked {
			return fmt.Errorf("key %s, refused, is still valid at the issuer (revocations %v)", m.id, w.revoked())
		}
	}
	return recordShowsNoKey(ctx, w)
}

// recordShowsNoKey checks that the rotation record holds no key.
func recordShowsNoKey(ctx context.Context, w *world) error {
	rec, err := w.st.ReadRecord(ctx, w.name)
	if err != nil {
		return fmt.Errorf("read the rotation record: %w", err)
	}
	b, err := json.Marshal(rec.Data)
	if err != nil {
		return fmt.Errorf("rotationtest: the rotation record: %w", err)
	}
	return showsNoKey(w, "the rotation record", string(b))
}

// runShown runs key k with o, and returns the run's result and error, or,
// when the run printed a key (in its result, its error, its events or its
// logs), an error saying so.
func runShown(ctx context.Context, w *world, o rotation.RunOptions) (*rotation.Result, error) {
	var events eventLog
	var logs tailbuf.Buffer
	res, err := w.rotator(func(ro *rotation.Options, _ *rotation.Key) {
		ro.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		ro.Notifiers = append(ro.Notifiers, &events)
	}).Run(ctx, "k", o)
	out, jerr := json.Marshal(res)
	if jerr != nil {
		return res, fmt.Errorf("rotationtest: the run's result: %w", jerr)
	}
	shown := []struct{ what, text string }{
		{"result", string(out)}, {"error", fmt.Sprint(err)}, {"events", events.json()}, {"logs", logs.String()},
	}
	for _, s := range shown {
		if lerr := showsNoKey(w, "the run's "+s.what, s.text); lerr != nil {
			return res, lerr
		}
	}
	return res, err
}

// showsNoKey checks that text, which what names, holds nothing shaped like
// a key (a key, or a version id that looks like one) and no part of a key
// the world's exec issuer minted.
func showsNoKey(w *world, what, text string) error {
	if providers.KeyShaped(text) {
		return fmt.Errorf("rotationtest: %s hold a value shaped like a key:\n%s", what, providers.RedactKeys(text))
	}
	for _, m := range mintedKeys(w.dir) {
		if secret := strings.TrimPrefix(m.value, keyShapedPrefix); len(secret) >= 16 && strings.Contains(text, secret[:16]) {
			return fmt.Errorf("rotationtest: %s hold part of key %s", what, m.id)
		}
	}
	return nil
}
