package rotation

import (
	"errors"
	"fmt"

	"github.com/keywarden/keywarden/providers/codes"
)

// Kind classifies why a rotation run failed. Each kind has its own process
// exit code (see ExitCode), so a CronJob's status tells the outcome.
type Kind int

// The kinds of failure.
const (
	KindFailed    Kind = iota // anything else (exit 1)
	KindConfig                // bad configuration (exit 2)
	KindProbe                 // the new key failed its probe (exit 10)
	KindConflict              // another rotation holds the key, or the store changed under this one (exit 11)
	KindStore                 // the store failed (exit 12)
	KindIssuer                // the issuer failed (exit 13)
	KindPoolEmpty             // the issuer's key pool is empty (exit 14)
	KindGateHeld              // the revoke gate held the old key past its max_wait (exit 15)
)

// Exit codes of `keywarden rotate`, by outcome.
const (
	ExitOK        = 0  // rotated, revoked, or nothing due (also: grace not yet over)
	ExitFailed    = 1  // any other failure
	ExitConfig    = 2  // bad flags or configuration
	ExitProbe     = 10 // the new key failed its probe; CURRENT is untouched
	ExitConflict  = 11 // a rotation of the key is in progress elsewhere, or the store changed under this one
	ExitStore     = 12 // the store failed (unreachable, denied, corrupt)
	ExitIssuer    = 13 // the issuer failed (Admin API, command)
	ExitPoolEmpty = 14 // the key pool is empty: add keys with `keywarden pool add`
	ExitGateHeld  = 15 // consumers still hold the old key past the revoke gate's max_wait (policy hold): both keys stay valid
)

var kindNames = [...]string{
	KindFailed:    "failed",
	KindConfig:    "config_error",
	KindProbe:     "probe_failed",
	KindConflict:  "conflict",
	KindStore:     "store_error",
	KindIssuer:    "issuer_error",
	KindPoolEmpty: "pool_empty",
	KindGateHeld:  "gate_held",
}

var kindExit = [...]int{
	KindFailed:    ExitFailed,
	KindConfig:    ExitConfig,
	KindProbe:     ExitProbe,
	KindConflict:  ExitConflict,
	KindStore:     ExitStore,
	KindIssuer:    ExitIssuer,
	KindPoolEmpty: ExitPoolEmpty,
	KindGateHeld:  ExitGateHeld,
}

// String returns the kind's name, as used for outcomes in records, events
// and metrics.
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ExitCode returns the kind's process exit code.
func (k Kind) ExitCode() int {
	if k >= 0 && int(k) < len(kindExit) {
		return kindExit[k]
	}
	return ExitFailed
}

// Error is a failed rotation run: its kind and the reason. Its message never
// holds a key value.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the reason.
func (e *Error) Unwrap() error { return e.Err }

// fail wraps err as a failure of kind k; nil stays nil. An err that already
// carries a kind keeps it.
func fail(k Kind, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Kind: k, Err: err}
}

// failf formats a failure of kind k.
func failf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Err: fmt.Errorf(format, args...)}
}

// KindOf returns the kind of err: the Kind of the first *Error in its chain,
// else the kind of its store code (see KindOfCode), KindFailed otherwise.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	if k, ok := KindOfCode(err); ok {
		return k
	}
	return KindFailed
}

// KindOfCode classifies an error by the portable code in its chain, ok
// false when it has none: bad input (InvalidArgument, a duplicate) is
// KindConfig, a lost compare-and-swap or a state that forbids the write
// (Aborted, FailedPrecondition) KindConflict, a cancelled or expired
// context KindFailed, anything else (unreachable, denied, corrupt data)
// KindStore. Callers classify by code, never by message.
func KindOfCode(err error) (Kind, bool) {
	var ce *codes.Error
	if !errors.As(err, &ce) {
		return 0, false
	}
	switch ce.Code {
	case codes.InvalidArgument:
		return KindConfig, true
	case codes.Aborted, codes.FailedPrecondition:
		return KindConflict, true
	case codes.Canceled, codes.DeadlineExceeded:
		return KindFailed, true
	}
	return KindStore, true
}

// ExitCode returns the exit code for the outcome err of a run: ExitOK for
// nil.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	return KindOf(err).ExitCode()
}

// ErrPoolEmpty is returned (wrapped, with KindPoolEmpty) by issuers whose
// key pool has no key left. Its text has no package prefix: it is always
// wrapped in a message that has one.
var ErrPoolEmpty = errors.New("the key pool is empty")

// ErrInProgress is returned (wrapped, with KindConflict) when another
// rotator holds the key's lease. Like ErrPoolEmpty, it is always wrapped.
var ErrInProgress = errors.New("a rotation of this key is in progress")
