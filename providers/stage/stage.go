// Package stage holds the store operations that take more than one call of
// a driver.Stager, written once for every backend: making a value CURRENT
// (PutPending, then Promote over the CURRENT the caller saw) and cleaning up
// after such an operation that died between its calls.
//
// A one-shot write (`keywarden put`, a key pool update) writes its PENDING
// version with a token starting with OneShotPrefix. Such a PENDING version
// is never a rotation's: when its writer died before promoting it, the next
// one-shot write, rotation or abandon discards it (the interrupted write is
// undone; its caller saw an error or nothing and runs again). Rotations use
// tokens without the prefix and are resumed from their record instead.
package stage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// OneShotPrefix starts the token of every one-shot write's PENDING version.
const OneShotPrefix = "put-"

// IsOneShot reports whether token is the token of a one-shot write, whose
// PENDING version no rotation resumes.
func IsOneShot(token string) bool { return strings.HasPrefix(token, OneShotPrefix) }

// OneShotToken returns a fresh one-shot token.
func OneShotToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return OneShotPrefix + hex.EncodeToString(b)
}

// CurrentID returns the id of the version holding CURRENT, "" when the
// secret or its CURRENT does not exist.
func CurrentID(ctx context.Context, st driver.Reader, name string) (string, error) {
	v, err := st.Read(ctx, name, driver.Current)
	switch {
	case err == nil:
		return v.ID, nil
	case codes.Is(err, codes.NotFound):
		return "", nil
	default:
		return "", err
	}
}

// ClearInterrupted discards a PENDING version left by a one-shot write that
// died before its Promote, and reports whether it did. A PENDING version of
// a rotation is left alone.
func ClearInterrupted(ctx context.Context, st driver.Stager, name string) (bool, error) {
	pv, err := st.ReadPending(ctx, name)
	if codes.Is(err, codes.NotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !IsOneShot(pv.Token) {
		return false, nil
	}
	if err := st.DiscardPending(ctx, name, pv.ID); err != nil {
		return false, fmt.Errorf("stage: discard the PENDING version %s of an interrupted write: %w", pv.ID, err)
	}
	return true, nil
}

// Replace makes value the CURRENT version of secret name, provided CURRENT
// is still currentID ("" for a secret without CURRENT), and returns the new
// version. A PENDING version left by an interrupted one-shot write is
// discarded first; a rotation's PENDING version makes Replace fail with
// FailedPrecondition, changing nothing. A CURRENT that changed meanwhile
// fails with Aborted, changing nothing. The result is checked: Replace
// succeeds only when CURRENT reads back as the new version.
func Replace(ctx context.Context, st driver.Stager, name, currentID string, value []byte) (*driver.Version, error) {
	if _, err := ClearInterrupted(ctx, st, name); err != nil {
		return nil, err
	}
	pv, err := st.PutPending(ctx, name, OneShotToken(), value)
	if err != nil {
		return nil, err
	}
	if err := st.Promote(ctx, name, pv.ID, currentID); err != nil {
		// Undo, so that no PENDING version of ours stays behind; should
		// the discard fail too, the next write clears it.
		_ = st.DiscardPending(context.WithoutCancel(ctx), name, pv.ID)
		return nil, err
	}
	got, err := CurrentID(ctx, st, name)
	if err != nil {
		return nil, fmt.Errorf("stage: read back CURRENT: %w", err)
	}
	if got != pv.ID {
		return nil, codes.Errorf(codes.Aborted, "stage: CURRENT of %s is version %q after promoting %s; another writer changed it", name, got, pv.ID)
	}
	return pv, nil
}

// Put makes value the CURRENT version of secret name over whatever CURRENT
// holds now; the former CURRENT becomes PREVIOUS. See Replace.
func Put(ctx context.Context, st driver.Stager, name string, value []byte) (*driver.Version, error) {
	cur, err := CurrentID(ctx, st, name)
	if err != nil {
		return nil, err
	}
	return Replace(ctx, st, name, cur, value)
}
