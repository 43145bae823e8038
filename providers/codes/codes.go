// Package codes holds the portable error codes that every keywarden driver maps
// its backend errors to, once, so that callers decide on retry by code rather
// than by backend-specific error strings.
package codes

import (
	"context"
	"errors"
	"fmt"
)

// Code is a portable error code.
type Code int

// The portable codes. Unknown is the zero value.
const (
	Unknown            Code = iota // an error no driver classified
	NotFound                       // secret, version or stage does not exist
	PermissionDenied               // credentials lack the permission
	Unauthenticated                // no or bad credentials
	Unavailable                    // backend unreachable or failing; retry
	ResourceExhausted              // throttled or quota exceeded; retry later
	InvalidArgument                // bad request, name or payload; do not retry
	FailedPrecondition             // state forbids it (disabled version, other rotation pending)
	Aborted                        // compare-and-swap conflict; re-read and decide
	Canceled                       // the caller's context was cancelled
	DeadlineExceeded               // the caller's deadline passed
	Unimplemented                  // the driver does not support the operation
	Internal                       // a bug, or data the backend answered that makes no sense
	DataLoss                       // stored data is corrupt or unreadable (a payload, a record)
)

var names = [...]string{
	Unknown:            "Unknown",
	NotFound:           "NotFound",
	PermissionDenied:   "PermissionDenied",
	Unauthenticated:    "Unauthenticated",
	Unavailable:        "Unavailable",
	ResourceExhausted:  "ResourceExhausted",
	InvalidArgument:    "InvalidArgument",
	FailedPrecondition: "FailedPrecondition",
	Aborted:            "Aborted",
	Canceled:           "Canceled",
	DeadlineExceeded:   "DeadlineExceeded",
	Unimplemented:      "Unimplemented",
	Internal:           "Internal",
	DataLoss:           "DataLoss",
}

// String returns the code's name.
func (c Code) String() string {
	if c >= 0 && int(c) < len(names) {
		return names[c]
	}
	return fmt.Sprintf("Code(%d)", int(c))
}

// Retryable reports whether an operation failing with c may succeed when tried
// again unchanged. Internal and DataLoss are not: corrupt data or a bug do
// not heal by reading again, and retrying them only hides the error until a
// deadline.
func (c Code) Retryable() bool {
	switch c {
	case Unavailable, ResourceExhausted, Unknown, DeadlineExceeded:
		return true
	}
	return false
}

// FromHTTPStatus maps the status of a backend's answer that says nothing
// more (no error code a driver knows, e.g. a proxy's page) to a portable
// code: 401 Unauthenticated, 403 PermissionDenied, 429 ResourceExhausted,
// 5xx Unavailable, anything else Unknown. A driver whose backend gives
// other statuses a meaning of its own (Vault's 404 for a missing secret)
// decides those first. It is the only place that reads a bare status.
func FromHTTPStatus(status int) Code {
	switch {
	case status == 401:
		return Unauthenticated
	case status == 403:
		return PermissionDenied
	case status == 429:
		return ResourceExhausted
	case status >= 500 && status <= 599:
		return Unavailable
	}
	return Unknown
}

// Error is an error carrying a portable code. Its message must never hold a
// secret value.
type Error struct {
	Code Code
	msg  string
	err  error
}

// Error returns the message, followed by the wrapped error when there is one.
func (e *Error) Error() string {
	switch {
	case e.err == nil:
		return e.msg
	case e.msg == "":
		return e.err.Error()
	default:
		return e.msg + ": " + e.err.Error()
	}
}

// Unwrap returns the wrapped error.
func (e *Error) Unwrap() error { return e.err }

// Errorf returns an error with code c and a formatted message. A %w verb wraps
// as with fmt.Errorf: the wrapped error is printed once, where the verb is,
// and errors.Is and errors.As see it.
func Errorf(c Code, format string, args ...any) error {
	return &Error{Code: c, err: fmt.Errorf(format, args...)}
}

// Wrap returns err with code c and a message prefix msg; nil stays nil.
func Wrap(c Code, msg string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: c, msg: msg, err: err}
}

// Of returns the code of err: the code of the first *Error in its chain,
// Canceled or DeadlineExceeded for context errors, Unknown otherwise, and
// Unknown for nil.
func Of(err error) Code {
	if err == nil {
		return Unknown
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	switch {
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	}
	return Unknown
}

// Is reports whether err has code c.
func Is(err error, c Code) bool { return err != nil && Of(err) == c }

// FromContext maps a context error to Canceled or DeadlineExceeded, and
// returns nil for nil.
func FromContext(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return Wrap(DeadlineExceeded, "", err)
	default:
		return Wrap(Canceled, "", err)
	}
}
