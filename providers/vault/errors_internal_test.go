package vault

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/keywarden/keywarden/providers/codes"
)

func TestMapErr(t *testing.T) {
	resp := func(status int, msgs ...string) error {
		return &api.ResponseError{HTTPMethod: "PUT", URL: "https://127.0.0.1:8200/v1/secret/data/x?version=2", StatusCode: status, Errors: msgs}
	}
	netErr := &url.Error{Op: "Get", URL: "https://127.0.0.1:1/v1/x", Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}}
	cases := []struct {
		err  error
		want codes.Code
	}{
		{resp(400, "check-and-set parameter did not match the current version"), codes.Aborted},
		{resp(400, "1 error occurred:\n\t* check-and-set parameter did not match the current version\n\n"), codes.Aborted},
		{resp(400, "no data provided"), codes.InvalidArgument},
		{resp(401), codes.Unauthenticated},
		{resp(403, "1 error occurred:\n\t* permission denied\n\n"), codes.PermissionDenied},
		{resp(404), codes.NotFound},
		{resp(405, "unsupported operation"), codes.Unimplemented},
		{resp(412, "required index state not present"), codes.Unavailable},
		{resp(429, "request path \"secret/data/x\": rate limit quota exceeded"), codes.ResourceExhausted},
		{resp(500, "internal error"), codes.Unavailable},
		{resp(503, "Vault is sealed"), codes.Unavailable},
		{fmt.Errorf("wrapped: %w", resp(503, "Vault is sealed")), codes.Unavailable},
		{&url.Error{Op: "Get", URL: "x", Err: context.Canceled}, codes.Canceled},
		{&url.Error{Op: "Get", URL: "x", Err: context.DeadlineExceeded}, codes.DeadlineExceeded},
		{netErr, codes.Unavailable},
		{&url.Error{Op: "Get", URL: "x", Err: x509.UnknownAuthorityError{}}, codes.FailedPrecondition},
		{errors.New("something else"), codes.Unknown},
		{codes.Errorf(codes.NotFound, "vault: already mapped"), codes.NotFound},
	}
	for _, c := range cases {
		err := mapErr("read secret/data/x", c.err)
		if got := codes.Of(err); got != c.want {
			t.Errorf("mapErr(%v) code %v, want %v", c.err, got, c.want)
		}
		if !strings.HasPrefix(err.Error(), "vault: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("mapErr(%v) = %q, want one line starting with \"vault: \"", c.err, err)
		}
		// Response errors are kept as the *api.ResponseError (with a short
		// message); other errors are wrapped as they are.
		var re, got *api.ResponseError
		if errors.As(c.err, &re) {
			if !errors.As(err, &got) || got != re {
				t.Errorf("mapErr(%v) does not wrap the *api.ResponseError", c.err)
			}
		} else if !errors.Is(err, c.err) {
			t.Errorf("mapErr(%v) does not wrap the original error", c.err)
		}
	}
	if mapErr("x", nil) != nil {
		t.Error("mapErr(nil) is not nil")
	}
	got := mapErr("write secret/data/x", resp(403, "1 error occurred:\n\t* permission denied\n\n")).Error()
	if want := "vault: write secret/data/x: PUT /v1/secret/data/x: 403: permission denied"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
}
