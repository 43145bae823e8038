// Package random is a rotation issuer of strong random secrets, for shared
// secrets that keywarden's own parties check (a sidecar's client token, an
// internal service's key): nothing outside the store knows them, so Revoke
// has nothing to do. Rotation still gives such a secret the same crash-safe
// create → probe → promote → grace sequence as an API key.
package random

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/rotation"
)

// Defaults and bounds of Options.Bytes.
const (
	DefaultBytes = 32
	MinBytes     = 16
	MaxBytes     = 1024
)

// Options configure an Issuer.
type Options struct {
	// Bytes is the number of random bytes (default 32, at least 16).
	Bytes int
	// Encoding is base64url (default, unpadded) or hex.
	Encoding string
	// Prefix is put before the encoded bytes, e.g. "kw-" (not secret);
	// printable ASCII without spaces, as every key.
	Prefix string
}

// Issuer creates random secrets. It is safe for concurrent use.
type Issuer struct{ o Options }

var _ rotation.Issuer = (*Issuer)(nil)

// New returns an Issuer, or an error for bad options.
func New(o Options) (*Issuer, error) {
	if o.Bytes == 0 {
		o.Bytes = DefaultBytes
	}
	if o.Bytes < MinBytes || o.Bytes > MaxBytes {
		return nil, fmt.Errorf("random: bytes %d is out of range [%d, %d]", o.Bytes, MinBytes, MaxBytes)
	}
	switch o.Encoding {
	case "":
		o.Encoding = "base64url"
	case "base64url", "hex":
	default:
		return nil, fmt.Errorf("random: encoding %q: want base64url or hex", o.Encoding)
	}
	// Every secret starts with the prefix: one that consumers would refuse
	// in a key (a space, a character outside printable ASCII) would fail
	// every rotation, so it is refused here, by the readers' own check.
	if o.Prefix != "" {
		p, err := providers.DecodePayload([]byte(o.Prefix+"A"), "")
		if err != nil {
			return nil, fmt.Errorf("random: prefix %q cannot start a key: %w", o.Prefix, err)
		}
		if p.Key.Reveal() != o.Prefix+"A" {
			return nil, fmt.Errorf("random: prefix %q cannot start a key: it starts with white space", o.Prefix)
		}
	}
	return &Issuer{o: o}, nil
}

// Type returns "random".
func (*Issuer) Type() string { return "random" }

// Create returns a new random secret. The token is not needed: a secret
// made by a run that died before storing it was never seen by anyone.
func (i *Issuer) Create(ctx context.Context, _ string) (rotation.Credential, error) {
	if err := ctx.Err(); err != nil {
		return rotation.Credential{}, err
	}
	b := make([]byte, i.o.Bytes)
	if _, err := rand.Read(b); err != nil {
		return rotation.Credential{}, fmt.Errorf("random: %w", err)
	}
	var s string
	if i.o.Encoding == "hex" {
		s = hex.EncodeToString(b)
	} else {
		s = base64.RawURLEncoding.EncodeToString(b)
	}
	return rotation.Credential{Key: providers.NewSecret(i.o.Prefix + s)}, nil
}

// Revoke does nothing: once no store version holds the secret, nobody
// accepts it.
func (*Issuer) Revoke(context.Context, rotation.Credential) error { return nil }
