package stage_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/stage"
)

func newStore(t *testing.T) driver.Stager { return file.New(filepath.Join(t.TempDir(), "keys.json")) }

func wantCurrent(t *testing.T, st driver.Stager, name string, want []byte) {
	t.Helper()
	v, err := st.Read(context.Background(), name, driver.Current)
	if err != nil || string(v.Value) != string(want) {
		t.Fatalf("CURRENT of %s: %v; want the value written", name, err)
	}
	if _, err := st.ReadPending(context.Background(), name); !codes.Is(err, codes.NotFound) {
		t.Fatalf("PENDING of %s left behind: %v", name, err)
	}
}

func TestPut(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	a, b := providertest.FakeKey(), providertest.FakeKey()
	va, err := stage.Put(ctx, st, "k", a)
	if err != nil {
		t.Fatal(err)
	}
	wantCurrent(t, st, "k", a)
	if _, err := stage.Put(ctx, st, "k", b); err != nil {
		t.Fatal(err)
	}
	wantCurrent(t, st, "k", b)
	if p, err := st.Read(ctx, "k", driver.Previous); err != nil || p.ID != va.ID {
		t.Fatalf("PREVIOUS: %v, want the former CURRENT", err)
	}
}

// TestInterruptedWrite: a one-shot write's PENDING is discarded by the next
// write; a rotation's is left alone and refuses the write.
func TestInterruptedWrite(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	old := providertest.FakeKey()
	if _, err := stage.Put(ctx, st, "k", old); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutPending(ctx, "k", stage.OneShotToken(), providertest.FakeKey()); err != nil {
		t.Fatal(err)
	}
	v := providertest.FakeKey()
	if _, err := stage.Put(ctx, st, "k", v); err != nil {
		t.Fatalf("put over an interrupted write: %v", err)
	}
	wantCurrent(t, st, "k", v)

	rot, err := st.PutPending(ctx, "k", providertest.Token(), providertest.FakeKey())
	if err != nil {
		t.Fatal(err)
	}
	if cleared, err := stage.ClearInterrupted(ctx, st, "k"); cleared || err != nil {
		t.Fatalf("ClearInterrupted of a rotation's PENDING: %v %v, want false, nil", cleared, err)
	}
	if _, err := stage.Put(ctx, st, "k", providertest.FakeKey()); !codes.Is(err, codes.FailedPrecondition) {
		t.Fatalf("put over a rotation's PENDING: %v, want FailedPrecondition", err)
	}
	if p, err := st.ReadPending(ctx, "k"); err != nil || p.ID != rot.ID {
		t.Fatalf("the rotation's PENDING after a refused put: %v", err)
	}
}

// TestReplaceStale: Replace over a CURRENT that changed fails with Aborted
// and leaves no PENDING version behind.
func TestReplaceStale(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	a := providertest.FakeKey()
	va, err := stage.Put(ctx, st, "k", a)
	if err != nil {
		t.Fatal(err)
	}
	b := providertest.FakeKey()
	if _, err := stage.Put(ctx, st, "k", b); err != nil {
		t.Fatal(err)
	}
	if _, err := stage.Replace(ctx, st, "k", va.ID, providertest.FakeKey()); !codes.Is(err, codes.Aborted) {
		t.Fatalf("Replace over a stale CURRENT: %v, want Aborted", err)
	}
	wantCurrent(t, st, "k", b)
	if !stage.IsOneShot(stage.OneShotToken()) || stage.IsOneShot(providertest.Token()) {
		t.Fatal("IsOneShot does not tell one-shot tokens from rotation tokens")
	}
}
