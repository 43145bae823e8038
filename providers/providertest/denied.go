package providertest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/stage"
)

// DriverCalls returns, by name, every call of the driver interface on the
// secret name of st, and `put` (stage.Put): what a least-privilege test
// runs as a principal that must be refused. Promote and DiscardPending
// name pendingID (and currentID); WriteRecord writes at the record's
// revision when it can read one, so that the write itself is tried.
func DriverCalls(ctx context.Context, st driver.Stager, name, pendingID, currentID string) map[string]func() error {
	return map[string]func() error{
		"Read":        func() error { _, err := st.Read(ctx, name, driver.Current); return err },
		"ReadPending": func() error { _, err := st.ReadPending(ctx, name); return err },
		"ReadRecord":  func() error { _, err := st.ReadRecord(ctx, name); return err },
		"PutPending":  func() error { _, err := st.PutPending(ctx, name, Token(), FakeKey()); return err },
		"Promote":     func() error { return st.Promote(ctx, name, pendingID, currentID) },
		"Discard":     func() error { return st.DiscardPending(ctx, name, pendingID) },
		"WriteRecord": func() error {
			rev := ""
			if rec, err := st.ReadRecord(ctx, name); err == nil && rec != nil {
				rev = rec.Rev
			}
			_, err := st.WriteRecord(ctx, name, rev, map[string]string{"k": "v"})
			return err
		},
		"put": func() error { _, err := stage.Put(ctx, st, name, FakeKey()); return err },
	}
}

// CheckDenied fails t unless err is PermissionDenied with a message that
// holds every one of hints (what was refused, what to grant), and that
// holds none of values (key values) in any of its formats. who and what
// name the principal and the call in failures.
func CheckDenied(t testing.TB, who, what string, err error, hints, values []string) {
	t.Helper()
	if !codes.Is(err, codes.PermissionDenied) {
		t.Errorf("%s: %s: %v (code %v), want PermissionDenied", who, what, err, codes.Of(err))
		return
	}
	msg := err.Error()
	for _, h := range hints {
		if !strings.Contains(msg, h) {
			t.Errorf("%s: %s: %q does not say %q (which action was refused, what to grant)", who, what, msg, h)
		}
	}
	for _, v := range values {
		if strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), v) {
			t.Errorf("%s: %s: the error holds a key value", who, what)
		}
	}
}
