package vault_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/vault"
	"github.com/keywarden/keywarden/providers/vault/vaulttest"
)

// TestPromoteCASConflict lets promoter B promote between promoter A's read
// of the stage document and A's write: A's check-and-set write must fail
// with Aborted and change nothing, although A's own checks passed.
func TestPromoteCASConflict(t *testing.T) {
	writePolicies(t)
	ctx := context.Background()
	a := newStore(t, clientWith(t, tokenWith(t, "1h", "keywarden-rotator")), vault.Options{})
	b := newStore(t, clientWith(t, tokenWith(t, "1h", "keywarden-rotator")), vault.Options{})
	name := uniqueName("race")
	v1 := rotate(t, a, name, "", fakeKey())
	v2, err := a.PutPending(ctx, name, token(), fakeKey())
	if err != nil {
		t.Fatal(err)
	}

	var entered atomic.Bool
	var errB error
	restore := vault.SetBeforeStagesWrite(func(n string) {
		if n == name && entered.CompareAndSwap(false, true) {
			// B discards the pending version and stages its own; A still
			// believes v2 is PENDING.
			if errB = b.DiscardPending(ctx, name, v2.ID); errB == nil {
				_, errB = b.PutPending(ctx, name, token(), fakeKey())
			}
		}
	})
	errA := a.Promote(ctx, name, v2.ID, v1.ID)
	restore()
	if errB != nil {
		t.Fatalf("promoter B: %v", errB)
	}
	if !codes.Is(errA, codes.Aborted) {
		t.Fatalf("promoter A after B changed the stages: %v (code %v), want Aborted", errA, codes.Of(errA))
	}
	cur, err := a.Read(ctx, name, driver.Current)
	if err != nil || cur.ID != v1.ID {
		t.Fatalf("CURRENT after the refused promotion: %v, %v; want version %s", cur, err, v1.ID)
	}
	p, err := a.ReadPending(ctx, name)
	if err != nil || p.ID == v2.ID {
		t.Fatalf("PENDING after the race: %v, %v; want B's version", p, err)
	}
}

// TestRecordCASConflict is the same race for the rotation record.
func TestRecordCASConflict(t *testing.T) {
	ctx := context.Background()
	a := newStore(t, nil, vault.Options{})
	b := newStore(t, nil, vault.Options{})
	name := uniqueName("record")
	r0, err := a.WriteRecord(ctx, name, "", map[string]string{"phase": "created"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteRecord(ctx, name, r0.Rev, map[string]string{"phase": "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteRecord(ctx, name, r0.Rev, map[string]string{"phase": "a"}); !codes.Is(err, codes.Aborted) {
		t.Fatalf("stale WriteRecord: %v, want Aborted", err)
	}
	if _, err := a.WriteRecord(ctx, name, "", map[string]string{"phase": "a"}); !codes.Is(err, codes.Aborted) {
		t.Fatalf("WriteRecord as new over an existing record: %v, want Aborted", err)
	}
	if _, err := a.WriteRecord(ctx, name, "garbage", nil); !codes.Is(err, codes.Aborted) {
		t.Fatalf("WriteRecord with a revision it never returned: %v, want Aborted", err)
	}
	got, err := a.ReadRecord(ctx, name)
	if err != nil || got.Data["phase"] != "b" {
		t.Fatalf("record after the race: %v, %v; want B's", got, err)
	}
}

// TestHandManagedFields reads a secret written by hand with several fields
// as their JSON object, and hands a taken-over secret back to manual
// management when its stage document is deleted.
func TestHandManagedFields(t *testing.T) {
	ctx := context.Background()
	root := vaulttest.Client(t)
	s := newStore(t, nil, vault.Options{})
	name := uniqueName("fields")
	key := string(fakeKey())
	if _, err := root.KVv2("secret").Put(ctx, name, map[string]any{"api_key": key, "key_id": "apikey_01"}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Read(ctx, name, driver.Current)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(v.Value, &m); err != nil || m["api_key"] != key || m["key_id"] != "apikey_01" {
		t.Fatalf("hand-written fields read as %d bytes (json error %v), want their JSON object", len(v.Value), err)
	}

	// keywarden takes over, then an operator resets the secret.
	nv := rotate(t, s, name, v.ID, fakeKey())
	hand := fakeKey()
	if err := putByHand(ctx, root, name, hand); err != nil {
		t.Fatal(err)
	}
	if cur, err := s.Read(ctx, name, driver.Current); err != nil || cur.ID != nv.ID {
		t.Fatalf("a hand write after the takeover changed CURRENT: %v, %v", cur, err)
	}
	if err := root.KVv2("secret").DeleteMetadata(ctx, vault.DefaultStatePrefix+"/stages/"+name); err != nil {
		t.Fatal(err)
	}
	wantCurrent(t, s, name, hand)
	if _, err := s.Read(ctx, name, driver.Previous); !codes.Is(err, codes.NotFound) {
		t.Fatalf("PREVIOUS of a hand-managed secret: %v, want NotFound", err)
	}
}

// TestDeletedCurrentVersion reports a CURRENT version deleted by hand as
// FailedPrecondition, not as a missing secret.
func TestDeletedCurrentVersion(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, nil, vault.Options{})
	name := uniqueName("deleted")
	v := rotate(t, s, name, "", fakeKey())
	if err := vaulttest.Client(t).KVv2("secret").Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(ctx, name, driver.Current); !codes.Is(err, codes.FailedPrecondition) {
		t.Fatalf("Read of deleted CURRENT version %s: %v (code %v), want FailedPrecondition", v.ID, err, codes.Of(err))
	}
}

func TestInvalidNames(t *testing.T) {
	s := newStore(t, nil, vault.Options{})
	for _, name := range []string{"", "a//b", "../x", "a/./b", "a b", "a?b", vault.DefaultStatePrefix + "/stages/x"} {
		if _, err := s.Read(context.Background(), name, driver.Current); !codes.Is(err, codes.InvalidArgument) {
			t.Errorf("Read(%q): %v, want InvalidArgument", name, err)
		}
	}
}

// TestCloseIdempotent closes a driver with a running token watcher twice,
// and checks that Close stopped the watcher and the re-login loop.
func TestCloseIdempotent(t *testing.T) {
	rid, sid := appRole(t, "1h", "2h")
	before := goleak.IgnoreCurrent()
	s := openAppRole(t, uniqueName("close"), rid, sid)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s.Client().CloneConfig().HttpClient.CloseIdleConnections()
	goleak.VerifyNone(t, before,
		// Idle keep-alive connections of the client's pooled transport.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// dropCAS is a transport that removes the check-and-set option from writes
// of stage documents: a store (or a proxy in front of it) that does not
// honour check-and-set.
type dropCAS struct{ base http.RoundTripper }

func (d dropCAS) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodGet && r.Body != nil && strings.Contains(r.URL.Path, "/.keywarden/stages/") {
		var body map[string]any
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		if json.Unmarshal(b, &body) == nil {
			delete(body, "options")
			b, _ = json.Marshal(body)
		}
		r = r.Clone(r.Context())
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	}
	return d.base.RoundTrip(r)
}

// TestStageWriteChecked: a stage document write that the store did not
// apply as a check-and-set (another writer's version came in between and
// was overwritten) is an error, not a silent success.
func TestStageWriteChecked(t *testing.T) {
	ctx := context.Background()
	addr, ca, root := vaulttest.Start(t)
	c, err := vaulttest.NewClientWrapped(addr, ca, root, func(rt http.RoundTripper) http.RoundTripper { return dropCAS{rt} })
	if err != nil {
		t.Fatal(err)
	}
	a := newStore(t, c, vault.Options{})
	b := newStore(t, nil, vault.Options{})
	name := uniqueName("nocas")
	v1 := rotate(t, b, name, "", fakeKey())
	v2, err := b.PutPending(ctx, name, token(), fakeKey())
	if err != nil {
		t.Fatal(err)
	}
	var entered atomic.Bool
	var errB error
	restore := vault.SetBeforeStagesWrite(func(n string) {
		if n == name && entered.CompareAndSwap(false, true) {
			errB = b.DiscardPending(ctx, name, v2.ID)
		}
	})
	errA := a.Promote(ctx, name, v2.ID, v1.ID)
	restore()
	if errB != nil {
		t.Fatalf("writer B: %v", errB)
	}
	if errA == nil || !strings.Contains(errA.Error(), "check-and-set") {
		t.Fatalf("a promotion written over another writer's stage change: %v, want an error naming check-and-set", errA)
	}
}
