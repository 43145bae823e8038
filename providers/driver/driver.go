// Package driver defines the interfaces a secret-store backend implements for
// keywarden. It holds interfaces and plain types only: the portable API lives in
// package providers, and each backend lives in its own package under providers/
// (aws, gcp, vault, file, env), all of the same shape.
//
// Every backend offers the same three stages for a named secret:
//
//   - CURRENT: the version consumers use. Readers read it.
//   - PENDING: a version written by a rotator and not yet promoted. Readers
//     never see it.
//   - PREVIOUS: the version that was CURRENT before the last promotion. Readers
//     may hold it as a fallback until it is revoked.
//
// Drivers map every backend error once, with Errorf or Wrap, to a portable
// Code, so callers decide on retry by code and never by backend error strings.
package driver

import (
	"context"
	"time"
)

// Stage names a version's role. The same three stages mean the same on every
// backend.
type Stage string

// The stages every driver supports.
const (
	Current  Stage = "CURRENT"
	Pending  Stage = "PENDING"
	Previous Stage = "PREVIOUS"
)

// Version is one stored version of a secret.
type Version struct {
	// ID is the backend's version identifier (AWS VersionId, GCP version
	// number, Vault KV version, file version counter), as a string.
	ID string
	// Value is the raw payload: a bare key, or a JSON object holding it.
	// It is secret; drivers must never log it or put it into an error.
	Value []byte
	// Created is when the backend created the version, when known.
	Created time.Time
	// Token is the rotation token the version was written with by PutPending,
	// when the backend records it ("" for versions written by hand).
	Token string
	// Expires is when the value stops working, for a short-lived credential
	// such as an OAuth access token minted by Workload Identity Federation;
	// zero for a key that does not expire by itself. A Source never serves
	// the value past Expires and schedules its next read from it.
	Expires time.Time
	// OAuth marks the value as an OAuth access token: it is sent as
	// "Authorization: Bearer" with the anthropic-beta value
	// oauth-2025-04-20, never as x-api-key.
	OAuth bool
}

// Reader reads the CURRENT and PREVIOUS versions of named secrets. Every
// consumer uses it. Implementations are safe for concurrent use.
type Reader interface {
	// Read returns the version holding stage (Current or Previous) of the
	// secret called name. It fails with NotFound when the secret does not
	// exist or no version holds that stage. A secret managed by hand, with no
	// stage markers at all, reads its latest enabled version as Current.
	Read(ctx context.Context, name string, stage Stage) (*Version, error)
	// Close releases the driver's resources. It is safe to call more than once.
	Close() error
}

// Keyless is implemented by readers that hold no stored key at all, such as
// Workload Identity Federation, which mints a short-lived token on every
// read. NothingToRotate explains, for messages, why there is nothing to
// put, rotate or revoke.
type Keyless interface {
	Reader
	NothingToRotate() string
}

// Record is the small per-secret record a rotator keeps in the store to
// persist and resume its progress. Data is opaque to drivers. Rev is the
// record's revision for compare-and-swap: "" means "no record yet".
type Record struct {
	Rev  string
	Data map[string]string
}

// Stager is the write side that the rotator drives. Read-only drivers do not
// implement it; providers.Stager returns a clear error for them.
type Stager interface {
	Reader

	// ReadPending returns the PENDING version, or NotFound when there is none.
	ReadPending(ctx context.Context, name string) (*Version, error)

	// PutPending writes value as a new version holding PENDING. It is
	// idempotent on token: when PENDING already holds a version written with
	// token, that version is returned and nothing is written. When PENDING
	// holds a version written with another token, it fails with
	// FailedPrecondition and writes nothing. Readers never see the version
	// until Promote. The secret is created when it does not exist.
	PutPending(ctx context.Context, name, token string, value []byte) (*Version, error)

	// Promote moves CURRENT to the PENDING version pendingID and PREVIOUS to
	// the version that held CURRENT, and clears PENDING, as one
	// compare-and-swap: it fails with Aborted, changing nothing, when PENDING
	// is not pendingID or CURRENT is not currentID ("" when the secret has no
	// CURRENT yet). Promoting a version that already holds CURRENT, with
	// currentID naming the version now PREVIOUS, succeeds without change, so a
	// retried Promote is safe.
	Promote(ctx context.Context, name, pendingID, currentID string) error

	// DiscardPending removes the PENDING stage from version pendingID. The
	// version itself may stay in the backend's history, never readable as a
	// stage. Discarding a PENDING that is already gone succeeds; discarding
	// while PENDING holds another version fails with Aborted.
	DiscardPending(ctx context.Context, name, pendingID string) error

	// ReadRecord returns the rotation record of the secret. A secret without a
	// record (or without any version) returns a Record with Rev "" and no
	// error.
	ReadRecord(ctx context.Context, name string) (*Record, error)

	// WriteRecord replaces the record with data when the stored revision is
	// still rev, and returns the new record. It fails with Aborted when
	// another writer changed the record since rev was read.
	WriteRecord(ctx context.Context, name, rev string, data map[string]string) (*Record, error)
}
