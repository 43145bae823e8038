package providers_test

import (
	"strings"
	"testing"

	"github.com/keywarden/keywarden/providers"
)

// TestKeyShaped: a key pasted where a name, id or label was wanted is
// found wherever a key can start, or glued to a word when it is as long as
// a key; a short "sk-…" inside a word is no key.
func TestKeyShaped(t *testing.T) {
	key := "sk-ant-api03-" + strings.Repeat("Ab1", 14)
	for s, want := range map[string]bool{
		key:                       true,
		"prod-" + key:             true,
		"/team/" + key:            true,
		"x_" + key:                true,
		"Bearer abcdefghijkl":     true,
		"eyJhbGciOi.eyJzdWIi.sig": true,
		"prod":                    false,
		"":                        false,
		"task-runner-prod":        false,
		"risk-scoring-service":    false,
		"desk" + key:              true, // glued to a word, but as long as a key
		"task-summary-production": false,
		"apikey_01AbCdEfGhIjKlMn": false,
		"sk-short":                false,
	} {
		if got := providers.KeyShaped(s); got != want {
			t.Errorf("KeyShaped(%q) = %v, want %v", strings.ReplaceAll(s, key[13:], "<the key>"), got, want)
		}
	}
}

// FuzzKeyShaped: what KeyShaped finds, RedactKeys redacts (one pattern);
// and a key after any separator is found.
func FuzzKeyShaped(f *testing.F) {
	for _, s := range []string{"prod", "task-runner-prod", "sk-ant-api03-abcdefghijklmnop", "a/Bearer 12345678", "eyJa.b.c"} {
		f.Add(s, "-")
	}
	f.Fuzz(func(t *testing.T, s, sep string) {
		if providers.KeyShaped(s) && providers.RedactKeys(s) == s {
			t.Fatalf("KeyShaped(%q) but RedactKeys leaves it", s)
		}
		if sep == "" || strings.ContainsAny(sep[len(sep)-1:], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") {
			return
		}
		if withKey := s + sep + "sk-ant-api03-abcdefghijklmnopqrstuvwxyz"; !providers.KeyShaped(withKey) {
			t.Fatalf("KeyShaped(%q) = false after separator %q", withKey, sep)
		}
	})
}
