package codes_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/providers/codes"
)

func TestErrorfWrapsOnce(t *testing.T) {
	inner := codes.Errorf(codes.NotFound, "file: secret %q not found", "prod")
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"plain", codes.Errorf(codes.InvalidArgument, "x: bad %d", 3), "x: bad 3"},
		{"wrap at end", codes.Errorf(codes.Unavailable, "x: read: %w", fs.ErrNotExist), "x: read: file does not exist"},
		{"wrap in middle", codes.Errorf(codes.Unavailable, "x: %w (retry later)", fs.ErrNotExist), "x: file does not exist (retry later)"},
		{"wrap a coded error", codes.Errorf(codes.Internal, "x: %w", inner), `x: file: secret "prod" not found`},
		{"two wraps", codes.Errorf(codes.Internal, "x: %w; %w", fs.ErrNotExist, context.Canceled), "x: file does not exist; context canceled"},
		{"Wrap", codes.Wrap(codes.Unavailable, "x", fs.ErrNotExist), "x: file does not exist"},
		{"Wrap without message", codes.Wrap(codes.Unavailable, "", fs.ErrNotExist), "file does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Fatalf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
	err := codes.Errorf(codes.Internal, "x: %w", inner)
	if !errors.Is(err, inner) || codes.Of(err) != codes.Internal {
		t.Fatalf("the wrapped error is lost: Is %v, code %v", errors.Is(err, inner), codes.Of(err))
	}
	if two := codes.Errorf(codes.Internal, "x: %w; %w", fs.ErrNotExist, context.Canceled); !errors.Is(two, context.Canceled) || !errors.Is(two, fs.ErrNotExist) {
		t.Fatal("two %w: a wrapped error is lost")
	}
	if n := strings.Count(fmt.Sprint(codes.Errorf(codes.Unavailable, "a: %w", codes.Errorf(codes.Unavailable, "b: %w", fs.ErrNotExist))), "file does not exist"); n != 1 {
		t.Fatalf("a nested chain prints the innermost message %d times", n)
	}
}

func TestRetryable(t *testing.T) {
	for c, want := range map[codes.Code]bool{
		codes.Unavailable: true, codes.ResourceExhausted: true, codes.Unknown: true, codes.DeadlineExceeded: true,
		// Corrupt data and bugs do not heal by reading again.
		codes.Internal: false, codes.DataLoss: false,
		codes.NotFound: false, codes.InvalidArgument: false, codes.PermissionDenied: false,
		codes.Unauthenticated: false, codes.FailedPrecondition: false, codes.Aborted: false,
		codes.Canceled: false, codes.Unimplemented: false,
	} {
		if got := c.Retryable(); got != want {
			t.Errorf("%v.Retryable() = %v, want %v", c, got, want)
		}
	}
	if codes.DataLoss.String() != "DataLoss" {
		t.Errorf("DataLoss.String() = %q", codes.DataLoss.String())
	}
}

func TestOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.Unknown},
		{errors.New("x"), codes.Unknown},
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("y: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("y: %w", codes.Errorf(codes.DataLoss, "z")), codes.DataLoss},
		{codes.FromContext(context.Canceled), codes.Canceled},
	} {
		if got := codes.Of(tc.err); got != tc.want {
			t.Errorf("Of(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if codes.FromContext(nil) != nil {
		t.Error("FromContext(nil) != nil")
	}
}

func TestFromHTTPStatus(t *testing.T) {
	for s, want := range map[int]codes.Code{
		200: codes.Unknown, 400: codes.Unknown, 401: codes.Unauthenticated, 403: codes.PermissionDenied,
		404: codes.Unknown, 429: codes.ResourceExhausted, 500: codes.Unavailable, 503: codes.Unavailable,
		599: codes.Unavailable, 600: codes.Unknown, 0: codes.Unknown,
	} {
		if got := codes.FromHTTPStatus(s); got != want {
			t.Errorf("FromHTTPStatus(%d) = %v, want %v", s, got, want)
		}
	}
}
