package rotation

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// KeyIDResult is what SetKeyID attached.
type KeyIDResult struct {
	Key         string       `json:"key"`
	Stage       driver.Stage `json:"stage"`
	Version     string       `json:"version"`
	Fingerprint string       `json:"fingerprint"`
	KeyID       string       `json:"key_id"`
	// Replaced is the id the key had before ("" for none).
	Replaced string `json:"replaced,omitempty"`
}

// maxKeyIDLen bounds an issuer key id.
const maxKeyIDLen = 256

// SetKeyID attaches the issuer key id to the key stored at stage (CURRENT,
// PREVIOUS, or PENDING, which holds a claimed pool key once a rotation
// stored it), for a key whose payload has no id (written by `keywarden put`
// without --key-id) or a wrong one. The id goes into the key's rotation
// record (a compare-and-swap write; the stored versions are not changed), so
// that the rotation never has to guess the key by a partial hint; a
// rotation under way that names the key takes the id too. An issuer that
// can (KeyIDChecker) verifies the id belongs to the key first. SetKeyID
// needs no lease: it changes no phase.
func (r *Rotator) SetKeyID(ctx context.Context, name string, stage driver.Stage, id string) (*KeyIDResult, error) {
	k, err := r.key(name)
	if err != nil {
		return nil, err
	}
	switch stage {
	case driver.Current, driver.Previous, driver.Pending:
	default:
		return nil, failf(KindConfig, "rotation: stage %q: want CURRENT, PREVIOUS or PENDING", stage)
	}
	// The id is printed in full (output, events, status): one shaped like
	// a key (pasted by mistake) is refused, and never quoted.
	if err := providers.CheckKeyID(id); id == "" || len(id) > maxKeyIDLen || err != nil {
		why := fmt.Sprintf("empty, or longer than %d bytes", maxKeyIDLen)
		if err != nil {
			why = err.Error()
		}
		return nil, failf(KindConfig, "rotation: the key id given is not an issuer key id (%s)", why)
	}
	ru := &run{r: r, k: k, res: &Result{Key: name}}
	v, err := ru.version(ctx, stage)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, failf(KindConfig, "rotation: %s has no %s version", name, stage)
	}
	p, fp := fingerprintOf(v, k.Field)
	if p.Key.IsZero() {
		return nil, ru.storeErr("decode the "+string(stage)+" version", codes.Errorf(codes.Internal, "version %s does not hold a key", v.ID))
	}
	if c, ok := k.Issuer.(KeyIDChecker); ok {
		if err := c.CheckKeyID(ctx, Credential{Key: p.Key, KeyID: id}); err != nil {
			if e := ctxError(err); e != nil {
				return nil, e
			}
			return nil, ru.issuerErr(err, "check key id %s of the %s key %s", id, stage, fp)
		}
	}
	res := &KeyIDResult{Key: name, Stage: stage, Version: v.ID, Fingerprint: fp, KeyID: id}
	err = ru.editRecord(ctx, "attach the key id", func(s *state) (*state, error) {
		res.Replaced = s.keyID(p.KeyID, fp)
		next := s.clone()
		if next.KeyIDs == nil {
			next.KeyIDs = map[string]string{}
		}
		next.KeyIDs[fp] = id
		// A rotation under way that names this key takes the id now.
		if s.NewFP == fp {
			next.NewKeyID = id
		}
		if s.OldFP == fp {
			next.OldKeyID = id
		}
		return next, nil
	})
	if err != nil {
		return nil, err
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "key id attached", slog.String("key", name), slog.String("stage", string(stage)),
		slog.String("version", v.ID), slog.String("fingerprint", fp), slog.String("key_id", id), slog.String("replaced", res.Replaced))
	ru.emit(ctx, Event{Type: EventKeyID, Reason: fmt.Sprintf("%s version %s (%s) has key id %s", stage, v.ID, fp, id)})
	return res, nil
}
