package providers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
)

// Secret is a key value that redacts itself. Every textual form of it
// (String, GoString, every fmt verb, JSON, slog) is its fingerprint, never
// the value; only Reveal returns the value. The zero Secret is empty.
type Secret struct {
	v string
}

// NewSecret wraps a key value.
func NewSecret(v string) Secret { return Secret{v: v} }

// Reveal returns the key value. Call it only where the value leaves for the
// upstream (a request header, a child's environment, a 0600 file).
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

// Equal reports whether two secrets hold the same value.
func (s Secret) Equal(o Secret) bool { return s.v == o.v }

// Fingerprint identifies the value without revealing it; see Fingerprint.
func (s Secret) Fingerprint() string { return Fingerprint(s.v) }

// String returns the fingerprint.
func (s Secret) String() string { return s.Fingerprint() }

// GoString returns the fingerprint, for %#v.
func (s Secret) GoString() string { return "providers.Secret(" + s.Fingerprint() + ")" }

// Format prints the fingerprint for every verb, so %s, %v, %+v, %q, %x and
// friends never print the value.
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", s.Fingerprint())
	case 'v':
		if f.Flag('#') {
			_, _ = f.Write([]byte(s.GoString()))
			return
		}
		_, _ = f.Write([]byte(s.Fingerprint()))
	default:
		_, _ = f.Write([]byte(s.Fingerprint()))
	}
}

// MarshalJSON encodes the fingerprint.
func (s Secret) MarshalJSON() ([]byte, error) {
	return []byte(`"` + s.Fingerprint() + `"`), nil
}

// MarshalText encodes the fingerprint (for YAML, XML and text encoders).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.Fingerprint()), nil }

// LogValue makes slog log the fingerprint.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.Fingerprint()) }

var _ slog.LogValuer = Secret{}

// knownPrefixes are the public, non-secret prefixes of well-known key formats.
// A fingerprint keeps the prefix so that a human sees which kind of key it is.
var knownPrefixes = []string{
	"sk-ant-admin01-", "sk-ant-api03-", "sk-ant-", "sk-proj-", "sk-svcacct-", "sk-admin-", "sk-",
}

// Fingerprint returns a short identifier of a key value that is safe to log:
// the key's public prefix when it has a well-known one, and the first 8 hex
// digits of its SHA-256, e.g. "sk-ant-api03-…sha256:1f2e3d4c". It holds no
// character of the secret part of the key. The empty value is "<empty>".
func Fingerprint(v string) string {
	if v == "" {
		return "<empty>"
	}
	sum := sha256.Sum256([]byte(v))
	h := "sha256:" + hex.EncodeToString(sum[:4])
	for _, p := range knownPrefixes {
		if strings.HasPrefix(v, p) && len(v) > len(p)+16 {
			return p + "…" + h
		}
	}
	return h
}
