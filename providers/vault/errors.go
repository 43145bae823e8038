package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/keywarden/keywarden/providers/codes"
)

// mapErr maps an error of the Vault client to a portable code, once, and
// prefixes it with "vault: " and op. It is the only place that classifies
// Vault errors:
//   - 400 with "check-and-set" is Aborted (a KV v2 CAS conflict); other 400s
//     are InvalidArgument.
//   - 401 is Unauthenticated, 403 PermissionDenied (Vault answers 403 for a
//     missing, expired or revoked token too), 404 NotFound.
//   - 405 is Unimplemented (e.g. the mount is not a KV v2 engine).
//   - 412 (a performance standby not caught up) and every 5xx, sealed Vault
//     (503) included, are Unavailable; 429 is ResourceExhausted.
//   - Context errors are Canceled or DeadlineExceeded; certificate errors are
//     FailedPrecondition (fix VAULT_CACERT); other transport errors are
//     Unavailable.
//
// Vault's long multi-line messages are shortened by responseError, which
// still unwraps to the *api.ResponseError.
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	msg := "vault: " + op
	var ce *codes.Error
	if errors.As(err, &ce) {
		return err // already mapped (by a nested call)
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		return codes.Wrap(statusCode(re), msg, &responseError{re})
	}
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Wrap(codes.Canceled, msg, err)
	case errors.Is(err, context.DeadlineExceeded):
		return codes.Wrap(codes.DeadlineExceeded, msg, err)
	}
	var (
		cv  *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		ne  net.Error
		ue  *url.Error
		rec tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &he), errors.As(err, &ci):
		return codes.Wrap(codes.FailedPrecondition, msg+" (check VAULT_CACERT and the address)", err)
	case errors.As(err, &rec):
		return codes.Wrap(codes.FailedPrecondition, msg+" (the address speaks no TLS: use http:// or fix the port)", err)
	case errors.As(err, &ne), errors.As(err, &ue):
		return codes.Wrap(codes.Unavailable, msg, err)
	}
	return codes.Wrap(codes.Unknown, msg, err)
}

// statusCode maps an HTTP status of Vault to a portable code: the
// statuses Vault gives a meaning of its own, then codes.FromHTTPStatus.
func statusCode(re *api.ResponseError) codes.Code {
	s := re.StatusCode
	switch {
	case s == 400 && strings.Contains(strings.Join(re.Errors, " "), "check-and-set"):
		return codes.Aborted
	case s == 400:
		return codes.InvalidArgument
	case s == 404:
		return codes.NotFound
	case s == 405:
		return codes.Unimplemented
	case s == 412:
		return codes.Unavailable
	}
	return codes.FromHTTPStatus(s)
}

// responseError is an *api.ResponseError with a one-line message:
// "PUT /v1/secret/data/x: 400: check-and-set parameter did not match the
// current version".
type responseError struct{ re *api.ResponseError }

func (e *responseError) Error() string {
	path := e.re.URL
	if u, err := url.Parse(e.re.URL); err == nil {
		path = u.Path
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d", e.re.HTTPMethod, path, e.re.StatusCode)
	for i, m := range e.re.Errors {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(oneLine(m))
	}
	return b.String()
}

func (e *responseError) Unwrap() error { return e.re }

// oneLine flattens one of Vault's error strings, which are often
// go-multierror lists ("1 error occurred:\n\t* permission denied\n\n").
func oneLine(m string) string {
	var parts []string
	for _, l := range strings.Split(m, "\n") {
		l = strings.TrimSpace(l)
		l = strings.TrimSpace(strings.TrimPrefix(l, "* "))
		if l == "" || strings.HasSuffix(l, "error occurred:") || strings.HasSuffix(l, "errors occurred:") {
			continue
		}
		parts = append(parts, l)
	}
	return strings.Join(parts, "; ")
}
