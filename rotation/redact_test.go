package rotation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// quotingIssuer is an issuer whose Create fails quoting a key, as a
// vendor's tool may in its error (a key it was given, or one it made).
type quotingIssuer struct {
	*rotationtest.Ledger
	key string
}

func (i quotingIssuer) Create(context.Context, string) (rotation.Credential, error) {
	return rotation.Credential{}, errors.New("vendor tool: quota exceeded for " + i.key)
}

// quotingStore fails reading PENDING with an error quoting a key.
type quotingStore struct {
	driver.Stager
	key string
}

func (s quotingStore) ReadPending(context.Context, string) (*driver.Version, error) {
	return nil, errors.New("backend: denied for token " + s.key)
}

// TestErrorTextRedacted: the texts a run makes from errors of its issuer
// and probe (Result.Message, an event's Reason, the record's reasons) and
// those status shows (reasons of a record an older keywarden wrote, store
// errors) never hold a key the error quotes: they are printed as they are
// (`rotate --json`, webhooks, `status`), not as errors, which the CLI
// redacts.
func TestErrorTextRedacted(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		key  func(l *rotationtest.Ledger, st driver.Stager, quoted string) *rotation.Key
	}{
		{"issuer", func(l *rotationtest.Ledger, st driver.Stager, quoted string) *rotation.Key {
			return &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: quotingIssuer{l, quoted}}
		}},
		{"probe", func(l *rotationtest.Ledger, st driver.Stager, quoted string) *rotation.Key {
			return &rotation.Key{Name: "k", Store: st, Secret: "k", Issuer: l, Retry: rotation.Retry{Attempts: 1, Settle: -1},
				Probe: l.Probe(func(int) error {
					return &rotation.ProbeError{Err: errors.New("403 permission_error: " + quoted + " may not use this model")}
				})}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			quoted := string(providertest.FakeKey())
			l := rotationtest.NewLedger()
			st, _ := seeded(t, l)
			var mu sync.Mutex
			var events []rotation.Event
			rec := rotation.NotifierFunc(func(_ context.Context, e rotation.Event) error {
				mu.Lock()
				defer mu.Unlock()
				events = append(events, e)
				return nil
			})
			// The log (unredacted here; the CLI's redacts) is quiet: test
			// output must not show the key either.
			r, err := rotation.New(rotation.Options{Logger: quiet, Notifiers: []rotation.Notifier{rec}}, tc.key(l, st, quoted))
			if err != nil {
				t.Fatal(err)
			}
			// What a failure prints hides the key (test output must not
			// show it either).
			hide := func(s string) string { return strings.ReplaceAll(s, quoted[13:], "<the key>") }
			res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true})
			if err == nil || !strings.Contains(res.Message, "[redacted") {
				t.Fatalf("run: %s; message %q", hide(fmt.Sprint(err)), hide(res.Message))
			}
			out, _ := json.Marshal(res)
			mu.Lock()
			for _, e := range events {
				b, _ := json.Marshal(e)
				out = append(out, b...)
			}
			n := len(events)
			mu.Unlock()
			if n == 0 || events[n-1].Type != rotation.EventFailed {
				t.Fatalf("events %s", hide(fmt.Sprintf("%+v", events)))
			}
			record, err := st.ReadRecord(ctx, "k")
			if err != nil || record.Data["last_reason"] == "" {
				t.Fatalf("record %s", hide(fmt.Sprintf("%v: %v", record, err)))
			}
			b, _ := json.Marshal(record.Data)
			out = append(out, b...)
			status, _ := r.Status(ctx, "k")
			b, _ = json.Marshal(status)
			out = append(out, b...)
			if strings.Contains(string(out), quoted) || strings.Contains(string(out), quoted[13:]) {
				t.Fatalf("a key an error quoted is in the result, an event, the record or status:\n%s", hide(string(out)))
			}
		})
	}
	t.Run("status", func(t *testing.T) {
		quoted := string(providertest.FakeKey())
		l := rotationtest.NewLedger()
		st, _ := seeded(t, l)
		// A record an older keywarden wrote, whose reasons quote a key.
		rec, err := st.ReadRecord(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.WriteRecord(ctx, "k", rec.Rev, map[string]string{"v": "1", "phase": "parked", "pending_version": "2",
			"reason": "probe: 403 for " + quoted, "last_outcome": "probe_failed", "last_reason": "probe: 403 for " + quoted,
			"last_attempt_at": "2026-01-02T03:04:05Z"}); err != nil {
			t.Fatal(err)
		}
		r, err := rotation.New(rotation.Options{Logger: quiet}, &rotation.Key{Name: "k", Store: quotingStore{st, quoted}, Secret: "k", Issuer: l})
		if err != nil {
			t.Fatal(err)
		}
		status, err := r.Status(ctx, "k")
		if err != nil || status.LastReason == "" || len(status.Errors) == 0 {
			t.Fatalf("status %s", strings.ReplaceAll(fmt.Sprintf("%+v: %v", status, err), quoted[13:], "<the key>"))
		}
		out, _ := json.Marshal(status)
		if strings.Contains(string(out), quoted) || strings.Contains(string(out), quoted[13:]) {
			t.Fatalf("status shows a key an error quoted:\n%s", strings.ReplaceAll(string(out), quoted[13:], "<the key>"))
		}
	})
}
