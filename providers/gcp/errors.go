package gcp

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kwcodes "github.com/keywarden/keywarden/providers/codes"
)

// grpcCodes maps gRPC status codes to portable codes, once for the driver.
var grpcCodes = map[codes.Code]kwcodes.Code{
	codes.NotFound:           kwcodes.NotFound,
	codes.PermissionDenied:   kwcodes.PermissionDenied,
	codes.Unauthenticated:    kwcodes.Unauthenticated,
	codes.FailedPrecondition: kwcodes.FailedPrecondition, // a disabled or destroyed version
	codes.Aborted:            kwcodes.Aborted,
	codes.AlreadyExists:      kwcodes.Aborted, // a racing creator
	codes.Unavailable:        kwcodes.Unavailable,
	codes.Internal:           kwcodes.Unavailable,
	codes.ResourceExhausted:  kwcodes.ResourceExhausted,
	codes.InvalidArgument:    kwcodes.InvalidArgument,
	codes.OutOfRange:         kwcodes.InvalidArgument,
	codes.DeadlineExceeded:   kwcodes.DeadlineExceeded,
	codes.Canceled:           kwcodes.Canceled,
	codes.Unimplemented:      kwcodes.Unimplemented,
}

// mapErr maps a client error to a portable code, prefixed with what was
// being done. Secret Manager errors never carry payloads.
func mapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return kwcodes.Wrap(kwcodes.Canceled, "gcp: "+what, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return kwcodes.Wrap(kwcodes.DeadlineExceeded, "gcp: "+what, err)
	}
	st, ok := status.FromError(err)
	if !ok {
		return kwcodes.Wrap(kwcodes.Unavailable, "gcp: "+what, err)
	}
	c, ok := grpcCodes[st.Code()]
	if !ok {
		c = kwcodes.Unknown
	}
	msg := "gcp: " + what
	if c == kwcodes.PermissionDenied {
		msg += deniedHint
	}
	return kwcodes.Wrap(c, msg, err)
}

// deniedHint follows the message of a refused call: what an operator
// grants. Secret Manager's own message, which follows, names the permission
// and the resource, and refuses alike a secret that does not exist (to a
// caller bound on secrets, not on the project), which keywarden therefore
// cannot create: it must exist before its roles can be bound on it.
const deniedHint = " (denied: bind the role holding this permission on this secret to the caller's identity," +
	" gcloud secrets add-iam-policy-binding SECRET --member MEMBER --role projects/PROJECT/roles/keywardenReader or keywardenRotator;" +
	" a secret that does not exist is refused too: create it first, gcloud secrets create SECRET --replication-policy automatic;" +
	" least-privilege roles: deploy/policies/gcp-reader.yaml, gcp-rotator.yaml)"

// mapEtagErr is mapErr for calls that carry an etag: Secret Manager answers
// a stale etag with FAILED_PRECONDITION, which is a compare-and-swap
// conflict, Aborted.
func mapEtagErr(what string, err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition {
		return kwcodes.Wrap(kwcodes.Aborted, "gcp: "+what+": concurrent change (stale etag)", err)
	}
	return mapErr(what, err)
}
