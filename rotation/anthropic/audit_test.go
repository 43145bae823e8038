package anthropic_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/providers"
	claude "github.com/keywarden/keywarden/rotation/anthropic"
)

// TestAudit lists an organization of 1,100+ keys (two pages) and classes
// each against the managed keys.
func TestAudit(t *testing.T) {
	ctx := context.Background()
	e := setup(t, true) // e.first: active, CURRENT with its id
	for range 1100 {
		e.api.AddKey("", anthropictest.StatusInactive) // retired keys: no finding
	}
	orphan := e.api.AddKey("", anthropictest.StatusActive)
	previous := e.api.AddKey("", anthropictest.StatusInactive) // known by value only
	pool := e.addPool(2, true)
	if err := e.api.SetStatus(pool[1].ID, anthropictest.StatusArchived); err != nil {
		t.Fatal(err)
	}
	expiring := e.api.AddKey("", anthropictest.StatusActive)
	if err := e.api.ExpireAt(expiring.ID, time.Now().Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Two active keys whose partial_key_hint is the same.
	twinA := e.api.AddKey("sk-ant-api03-TWN"+strings.Repeat("a", 90)+"ZZAA", anthropictest.StatusActive)
	twinB := e.api.AddKey("sk-ant-api03-TWN"+strings.Repeat("b", 90)+"ZZAA", anthropictest.StatusInactive)
	managed := []claude.Managed{
		{Role: "prod CURRENT", KeyID: e.first.ID},
		{Role: "prod PREVIOUS", Key: providers.NewSecret(previous.Value)},
		{Role: "prod pool", KeyID: pool[0].ID, Pool: true},
		{Role: "prod pool", KeyID: pool[1].ID, Pool: true},
		{Role: "staging CURRENT", KeyID: expiring.ID},
		{Role: "batch CURRENT", Key: providers.NewSecret(twinA.Value)},
	}
	before := len(e.requests("GET", "/v1/organizations/api_keys"))
	keys, err := e.issuer(nil).ListKeys(ctx)
	if err != nil {
		t.Fatal(e.saw(err))
	}
	if pages := len(e.requests("GET", "/v1/organizations/api_keys")) - before; pages != 2 || len(keys) != 1100+8 {
		t.Fatalf("%d keys in %d pages, want %d in 2", len(keys), pages, 1100+8)
	}
	got := map[string][]string{} // key id -> classes
	for _, f := range claude.Audit(keys, managed, time.Now(), claude.AuditPolicy{ExpiringWithin: 7 * 24 * time.Hour}) {
		got[f.ID] = append(got[f.ID], f.Class)
		if strings.Contains(f.Detail, "sk-ant-api03-TWN"+strings.Repeat("a", 10)) {
			t.Fatal("a finding holds a key value")
		}
	}
	for id, want := range map[string]string{
		e.first.ID:  claude.ClassManaged,
		previous.ID: claude.ClassManaged,
		pool[0].ID:  claude.ClassManaged,
		pool[1].ID:  claude.ClassPoolUnusable,
		orphan.ID:   claude.ClassUnmanagedActive,
		expiring.ID: claude.ClassExpiring,
		twinA.ID:    claude.ClassAmbiguousHint,
		// batch's CURRENT, known by value only, matches both twins: the
		// hint-matching of its revocation could take either.
		twinB.ID: claude.ClassAmbiguousHint,
	} {
		if !strings.Contains(strings.Join(got[id], ","), want) {
			t.Errorf("key %s: classes %v, want %s", id, got[id], want)
		}
	}
	if n := len(got); n != 8 {
		t.Errorf("%d keys with findings, want 8 (the 1100 retired keys have none): %v", n, got)
	}
}
