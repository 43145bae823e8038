package aws

import (
	"strings"
	"testing"

	"github.com/keywarden/keywarden/providers/codes"
)

func TestPendingIDRoundTrip(t *testing.T) {
	for n := 1; n <= maxToken; n++ {
		tok := strings.Repeat("a", n-1) + "Z"
		id, err := pendingID(tok)
		if err != nil {
			t.Fatalf("pendingID(len %d): %v", n, err)
		}
		if len(id) < minVersionID || len(id) > maxVersionID {
			t.Fatalf("pendingID(len %d) = %q: length %d outside AWS's 32..64", n, id, len(id))
		}
		if hidden(id) {
			t.Fatalf("pendingID(len %d) = %q looks like a bookkeeping version", n, id)
		}
		if got := tokenOf(id); got != tok {
			t.Fatalf("tokenOf(pendingID(%q)) = %q", tok, got)
		}
	}
	uuid := "3f9a1c2e-0b7d-4c1a-9e2f-5a6b7c8d9e0f"
	if id, _ := pendingID(uuid); id != "kw36-"+uuid {
		t.Fatalf("pendingID(uuid) = %q, want kw36-<uuid>", id)
	}
}

func TestPendingIDRejects(t *testing.T) {
	for _, tok := range []string{"", strings.Repeat("a", maxToken+1), "has space", "ünïcode", "a/b", "a:b"} {
		if _, err := pendingID(tok); !codes.Is(err, codes.InvalidArgument) {
			t.Errorf("pendingID(%q): %v, want InvalidArgument", tok, err)
		}
	}
}

func TestTokenOfOtherIDs(t *testing.T) {
	for _, id := range []string{
		"",
		"3f9a1c2e-0b7d-4c1a-9e2f-5a6b7c8d9e0f", // AWS-generated UUID
		baseID,
		recordID(""),
		"kw05-abcde",                            // too short for AWS
		"kw99-3f9a1c2e-0b7d-4c1a-9e2f-5a6b7c8d", // length beyond the id
		"kw05-abcdeX00000000000000000000000000", // bad padding
		"kwxx-3f9a1c2e-0b7d-4c1a-9e2f-5a6b7c8d9e0f",
	} {
		if got := tokenOf(id); got != "" {
			t.Errorf("tokenOf(%q) = %q, want \"\"", id, got)
		}
	}
}

func TestRecordIDChain(t *testing.T) {
	seen := map[string]bool{}
	rev := ""
	for i := 0; i < 100; i++ {
		id := recordID(rev)
		if !hidden(id) || len(id) < minVersionID || len(id) > maxVersionID || tokenOf(id) != "" {
			t.Fatalf("recordID(%q) = %q: want a hidden id of 32..64 characters", rev, id)
		}
		if seen[id] {
			t.Fatalf("record id chain repeats after %d steps", i)
		}
		if recordID(rev) != id {
			t.Fatalf("recordID is not deterministic")
		}
		seen[id] = true
		rev = id
	}
	if len(baseID) < minVersionID || len(baseID) > maxVersionID || !hidden(baseID) {
		t.Fatalf("baseID %q: want a hidden id of 32..64 characters", baseID)
	}
}
