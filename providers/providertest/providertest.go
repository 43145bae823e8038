// Package providertest is the conformance suite every keywarden store driver
// passes, in the style of gocloud.dev's drivertest. A driver runs it with a
// one-line test:
//
//	func TestConformance(t *testing.T) { providertest.Run(t, harness(t)) }
//
// The suite uses its own unique secret names, so one backend may be shared
// between runs. Every value it writes is a known fake key, and every error it
// sees is checked not to contain any of them.
package providertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/stage"
)

// Harness connects the suite to one driver.
type Harness struct {
	// Stager is the driver under test, opened on a live backend.
	Stager driver.Stager
	// PutByHand writes value as a new latest version of secret name the way
	// an operator would outside keywarden (console or CLI, no keywarden
	// stage markers), creating the secret when missing.
	PutByHand func(ctx context.Context, name string, value []byte) error
}

// Run runs the conformance suite against h.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Stager == nil {
		t.Fatal("providertest: Harness.Stager is nil")
	}
	s := &suite{h: h}
	t.Cleanup(func() { s.checkErrorsForValues(t) })
	cases := []struct {
		name string
		fn   func(t *testing.T, s *suite)
	}{
		{"NotFound", testNotFound},
		{"ReadAfterPromote", testReadAfterPromote},
		{"PendingInvisibleUntilPromote", testPendingInvisible},
		{"PromoteMovesCurrentToPrevious", testPromoteMovesPrevious},
		{"PutPendingIdempotentOnToken", testPutPendingIdempotent},
		{"PutPendingOtherTokenRefused", testPutPendingOtherToken},
		{"PromoteCASConflict", testPromoteCAS},
		{"PromoteRetryIsNoop", testPromoteRetry},
		{"DiscardPending", testDiscardPending},
		{"RecordCAS", testRecordCAS},
		{"HandManagedSecret", testHandManaged},
		{"CanceledContext", testCanceled},
		{"ConcurrentReads", testConcurrentReads},
		{"BinaryAndJSONPayloads", testPayloads},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, s) })
	}
}

// RunReadOnly checks a read-only driver: set makes the secret name hold value;
// the driver must read it as CURRENT, report NotFound for a missing secret,
// and be refused as a Stager with a clear error by asStager (usually
// providers.AsStager).
func RunReadOnly(t *testing.T, r driver.Reader, set func(name string, value []byte), asStager func(driver.Reader) (driver.Stager, error)) {
	t.Helper()
	ctx := context.Background()
	name := uniqueName("ro")
	val := fakeKey()
	set(name, val)
	v, err := r.Read(ctx, name, driver.Current)
	if err != nil {
		t.Fatalf("Read(CURRENT) of a set value: %v", err)
	}
	if string(v.Value) != string(val) {
		t.Errorf("Read(CURRENT) returned another value (len %d, want len %d)", len(v.Value), len(val))
	}
	_, err = r.Read(ctx, uniqueName("ro-missing"), driver.Current)
	if !codes.Is(err, codes.NotFound) {
		t.Errorf("Read of a missing secret: got code %v (%v), want NotFound", codes.Of(err), err)
	}
	_, err = r.Read(ctx, name, driver.Previous)
	if !codes.Is(err, codes.NotFound) {
		t.Errorf("Read(PREVIOUS) on a read-only store: got code %v, want NotFound", codes.Of(err))
	}
	if _, err := asStager(r); err == nil {
		t.Errorf("a read-only driver was accepted as a Stager")
	} else {
		if !codes.Is(err, codes.Unimplemented) || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("refusal of a read-only driver: got %v (code %v), want an Unimplemented error saying read-only", err, codes.Of(err))
		}
		if strings.Contains(err.Error(), string(val)) {
			t.Errorf("error contains the secret value")
		}
	}
}

type suite struct {
	h Harness

	mu     sync.Mutex
	values [][]byte // every value written, for the leak check
	errs   []error  // every error seen
}

func (s *suite) key() []byte {
	v := fakeKey()
	s.mu.Lock()
	s.values = append(s.values, v)
	s.mu.Unlock()
	return v
}

func (s *suite) note(err error) error {
	if err != nil {
		s.mu.Lock()
		s.errs = append(s.errs, err)
		s.mu.Unlock()
	}
	return err
}

func (s *suite) checkErrorsForValues(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) == 0 {
		t.Errorf("providertest: the suite saw no errors at all; the leak check checked nothing")
	}
	for _, err := range s.errs {
		msg := fmt.Sprintf("%v %+v %#v", err, err, err)
		for _, v := range s.values {
			if strings.Contains(msg, string(v)) {
				t.Errorf("providertest: an error message contains a secret value written by the suite (error code %v)", codes.Of(err))
			}
		}
	}
}

func (s *suite) read(t *testing.T, name string, stage driver.Stage) (*driver.Version, error) {
	t.Helper()
	v, err := s.h.Stager.Read(context.Background(), name, stage)
	return v, s.note(err)
}

func (s *suite) mustRead(t *testing.T, name string, stage driver.Stage) *driver.Version {
	t.Helper()
	v, err := s.read(t, name, stage)
	if err != nil {
		t.Fatalf("Read(%s, %s): %v", name, stage, err)
	}
	return v
}

func (s *suite) put(t *testing.T, name, token string, val []byte) *driver.Version {
	t.Helper()
	v, err := s.h.Stager.PutPending(context.Background(), name, token, val)
	if s.note(err) != nil {
		t.Fatalf("PutPending(%s): %v", name, err)
	}
	if v == nil || v.ID == "" {
		t.Fatalf("PutPending(%s) returned no version id", name)
	}
	return v
}

func (s *suite) promote(t *testing.T, name, pendingID, currentID string) {
	t.Helper()
	if err := s.note(s.h.Stager.Promote(context.Background(), name, pendingID, currentID)); err != nil {
		t.Fatalf("Promote(%s, pending %s, current %q): %v", name, pendingID, currentID, err)
	}
}

// rotate puts val as PENDING with a fresh token and promotes it over
// currentID, returning the new CURRENT version.
func (s *suite) rotate(t *testing.T, name, currentID string, val []byte) *driver.Version {
	t.Helper()
	v := s.put(t, name, token(), val)
	s.promote(t, name, v.ID, currentID)
	return v
}

func wantValue(t *testing.T, what string, got *driver.Version, want []byte) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: nil version", what)
	}
	if string(got.Value) != string(want) {
		t.Fatalf("%s: got another value (len %d, want len %d)", what, len(got.Value), len(want))
	}
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := codes.Of(err); got != want {
		t.Fatalf("%s: got code %v (err %v), want %v", what, got, err, want)
	}
}

func testNotFound(t *testing.T, s *suite) {
	ctx := context.Background()
	name := uniqueName("notfound")
	for _, st := range []driver.Stage{driver.Current, driver.Previous} {
		_, err := s.read(t, name, st)
		wantCode(t, "Read("+string(st)+") of a missing secret", err, codes.NotFound)
	}
	_, err := s.h.Stager.ReadPending(ctx, name)
	wantCode(t, "ReadPending of a missing secret", s.note(err), codes.NotFound)
	rec, err := s.h.Stager.ReadRecord(ctx, name)
	if s.note(err) != nil {
		t.Fatalf("ReadRecord of a missing secret: %v (want an empty record)", err)
	}
	if rec.Rev != "" || len(rec.Data) != 0 {
		t.Fatalf("ReadRecord of a missing secret: got rev %q and %d entries, want empty", rec.Rev, len(rec.Data))
	}
	// A secret with only a CURRENT has no PREVIOUS and no PENDING.
	v := s.rotate(t, name, "", s.key())
	_, err = s.read(t, name, driver.Previous)
	wantCode(t, "Read(PREVIOUS) after the first promotion", err, codes.NotFound)
	_, err = s.h.Stager.ReadPending(ctx, name)
	wantCode(t, "ReadPending after promotion", s.note(err), codes.NotFound)
	if got := s.mustRead(t, name, driver.Current); got.ID != v.ID {
		t.Fatalf("CURRENT is version %s, want %s", got.ID, v.ID)
	}
}

func testReadAfterPromote(t *testing.T, s *suite) {
	name := uniqueName("readafterwrite")
	val := s.key()
	v := s.rotate(t, name, "", val)
	got := s.mustRead(t, name, driver.Current)
	wantValue(t, "CURRENT after promote", got, val)
	if got.ID != v.ID {
		t.Fatalf("CURRENT id %q, want %q", got.ID, v.ID)
	}
	if got.Created.IsZero() {
		t.Errorf("CURRENT has no creation time")
	}
}

func testPendingInvisible(t *testing.T, s *suite) {
	ctx := context.Background()
	name := uniqueName("pendinginvisible")
	first, second := s.key(), s.key()
	v1 := s.rotate(t, name, "", first)
	tok := token()
	v2 := s.put(t, name, tok, second)
	wantValue(t, "CURRENT while a PENDING exists", s.mustRead(t, name, driver.Current), first)
	_, err := s.read(t, name, driver.Previous)
	wantCode(t, "Read(PREVIOUS) while a PENDING exists", err, codes.NotFound)
	p, err := s.h.Stager.ReadPending(ctx, name)
	if s.note(err) != nil {
		t.Fatalf("ReadPending: %v", err)
	}
	wantValue(t, "PENDING", p, second)
	if p.ID != v2.ID {
		t.Fatalf("PENDING id %q, want %q", p.ID, v2.ID)
	}
	if p.Token != tok {
		t.Fatalf("PENDING token %q, want %q", p.Token, tok)
	}
	s.promote(t, name, v2.ID, v1.ID)
	wantValue(t, "CURRENT after promote", s.mustRead(t, name, driver.Current), second)
}

func testPromoteMovesPrevious(t *testing.T, s *suite) {
	name := uniqueName("promoteprevious")
	a, b, c := s.key(), s.key(), s.key()
	va := s.rotate(t, name, "", a)
	vb := s.rotate(t, name, va.ID, b)
	wantValue(t, "CURRENT", s.mustRead(t, name, driver.Current), b)
	prev := s.mustRead(t, name, driver.Previous)
	wantValue(t, "PREVIOUS", prev, a)
	if prev.ID != va.ID {
		t.Fatalf("PREVIOUS id %q, want %q", prev.ID, va.ID)
	}
	s.rotate(t, name, vb.ID, c)
	wantValue(t, "CURRENT after 2nd rotation", s.mustRead(t, name, driver.Current), c)
	wantValue(t, "PREVIOUS after 2nd rotation", s.mustRead(t, name, driver.Previous), b)
}

func testPutPendingIdempotent(t *testing.T, s *suite) {
	name := uniqueName("idempotent")
	s.rotate(t, name, "", s.key())
	tok, val := token(), s.key()
	v1 := s.put(t, name, tok, val)
	v2 := s.put(t, name, tok, val)
	if v1.ID != v2.ID {
		t.Fatalf("PutPending twice with one token wrote two versions (%s, %s)", v1.ID, v2.ID)
	}
	// A retry after a crash may come with a value the issuer made anew; the
	// token alone decides, and the stored value wins.
	v3, err := s.h.Stager.PutPending(context.Background(), name, tok, s.key())
	if s.note(err) != nil {
		t.Fatalf("PutPending with the same token and another value: %v", err)
	}
	if v3.ID != v1.ID {
		t.Fatalf("PutPending with the same token wrote a new version %s (want %s)", v3.ID, v1.ID)
	}
	p, err := s.h.Stager.ReadPending(context.Background(), name)
	if s.note(err) != nil {
		t.Fatal(err)
	}
	wantValue(t, "PENDING after repeated PutPending", p, val)
}

func testPutPendingOtherToken(t *testing.T, s *suite) {
	name := uniqueName("othertoken")
	s.rotate(t, name, "", s.key())
	val := s.key()
	v := s.put(t, name, token(), val)
	_, err := s.h.Stager.PutPending(context.Background(), name, token(), s.key())
	wantCode(t, "PutPending with another token while PENDING exists", s.note(err), codes.FailedPrecondition)
	p, err := s.h.Stager.ReadPending(context.Background(), name)
	if s.note(err) != nil {
		t.Fatal(err)
	}
	if p.ID != v.ID {
		t.Fatalf("the refused PutPending changed PENDING")
	}
	wantValue(t, "PENDING after refused PutPending", p, val)
}

func testPromoteCAS(t *testing.T, s *suite) {
	ctx := context.Background()
	name := uniqueName("cas")
	a := s.key()
	va := s.rotate(t, name, "", a)
	vb := s.put(t, name, token(), s.key())
	// Stale current id.
	err := s.h.Stager.Promote(ctx, name, vb.ID, "no-such-version")
	wantCode(t, "Promote with a stale CURRENT id", s.note(err), codes.Aborted)
	// Stale pending id.
	err = s.h.Stager.Promote(ctx, name, "no-such-version", va.ID)
	wantCode(t, "Promote with a stale PENDING id", s.note(err), codes.Aborted)
	wantValue(t, "CURRENT after refused promotes", s.mustRead(t, name, driver.Current), a)

	// Two promoters racing: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.note(s.h.Stager.Promote(ctx, name, vb.ID, va.ID))
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case codes.Is(err, codes.Aborted):
		default:
			t.Fatalf("racing Promote failed with %v (code %v), want success or Aborted", err, codes.Of(err))
		}
	}
	if ok == 0 {
		t.Fatal("neither of two racing promoters succeeded")
	}
	if cur := s.mustRead(t, name, driver.Current); cur.ID != vb.ID {
		t.Fatalf("CURRENT after race is %s, want %s", cur.ID, vb.ID)
	}
	if prev := s.mustRead(t, name, driver.Previous); prev.ID != va.ID {
		t.Fatalf("PREVIOUS after race is %s, want %s", prev.ID, va.ID)
	}
	// A stale promoter that read CURRENT before the promotion now fails.
	vc := s.put(t, name, token(), s.key())
	err = s.h.Stager.Promote(ctx, name, vc.ID, va.ID)
	wantCode(t, "Promote by a stale promoter", s.note(err), codes.Aborted)
	if cur := s.mustRead(t, name, driver.Current); cur.ID != vb.ID {
		t.Fatalf("a stale Promote changed CURRENT")
	}
}

func testPromoteRetry(t *testing.T, s *suite) {
	name := uniqueName("promoteretry")
	va := s.rotate(t, name, "", s.key())
	b := s.key()
	vb := s.put(t, name, token(), b)
	s.promote(t, name, vb.ID, va.ID)
	s.promote(t, name, vb.ID, va.ID) // retried after a crash: no-op
	wantValue(t, "CURRENT after retried promote", s.mustRead(t, name, driver.Current), b)
	if prev := s.mustRead(t, name, driver.Previous); prev.ID != va.ID {
		t.Fatalf("PREVIOUS after retried promote is %s, want %s", prev.ID, va.ID)
	}
}

func testDiscardPending(t *testing.T, s *suite) {
	ctx := context.Background()
	name := uniqueName("discard")
	a := s.key()
	va := s.rotate(t, name, "", a)
	vb := s.put(t, name, token(), s.key())
	if err := s.note(s.h.Stager.DiscardPending(ctx, name, vb.ID)); err != nil {
		t.Fatalf("DiscardPending: %v", err)
	}
	_, err := s.h.Stager.ReadPending(ctx, name)
	wantCode(t, "ReadPending after discard", s.note(err), codes.NotFound)
	if err := s.note(s.h.Stager.DiscardPending(ctx, name, vb.ID)); err != nil {
		t.Fatalf("DiscardPending twice: %v", err)
	}
	cur := s.mustRead(t, name, driver.Current)
	wantValue(t, "CURRENT after discard", cur, a)
	if cur.ID != va.ID {
		t.Fatalf("discard changed CURRENT")
	}
	// A new rotation can start after a discard, with a new token.
	vc := s.put(t, name, token(), s.key())
	err = s.h.Stager.DiscardPending(ctx, name, vb.ID)
	wantCode(t, "DiscardPending of a version that is no longer PENDING", s.note(err), codes.Aborted)
	s.promote(t, name, vc.ID, va.ID)
	err = s.h.Stager.Promote(ctx, name, vb.ID, vc.ID)
	wantCode(t, "Promote of a discarded version", s.note(err), codes.Aborted)
}

func testRecordCAS(t *testing.T, s *suite) {
	ctx := context.Background()
	st := s.h.Stager
	name := uniqueName("record")
	s.rotate(t, name, "", s.key())
	r0, err := st.ReadRecord(ctx, name)
	if s.note(err) != nil {
		t.Fatalf("ReadRecord: %v", err)
	}
	r1, err := st.WriteRecord(ctx, name, r0.Rev, map[string]string{"phase": "created", "token": "t1"})
	if s.note(err) != nil {
		t.Fatalf("WriteRecord: %v", err)
	}
	if r1.Rev == "" || r1.Rev == r0.Rev {
		t.Fatalf("WriteRecord returned rev %q (before %q), want a new revision", r1.Rev, r0.Rev)
	}
	got, err := st.ReadRecord(ctx, name)
	if s.note(err) != nil {
		t.Fatal(err)
	}
	if got.Rev != r1.Rev || got.Data["phase"] != "created" || got.Data["token"] != "t1" || len(got.Data) != 2 {
		t.Fatalf("ReadRecord after write: rev %q data %v, want rev %q and the written data", got.Rev, got.Data, r1.Rev)
	}
	_, err = st.WriteRecord(ctx, name, r0.Rev, map[string]string{"phase": "stale"})
	wantCode(t, "WriteRecord with a stale revision", s.note(err), codes.Aborted)

	// Racing writers of the same revision: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = st.WriteRecord(ctx, name, r1.Rev, map[string]string{"holder": fmt.Sprint(i)})
			s.note(errs[i])
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case codes.Is(err, codes.Aborted):
		default:
			t.Fatalf("racing WriteRecord: %v (code %v), want success or Aborted", err, codes.Of(err))
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d racing WriteRecord calls on one revision succeeded, want exactly 1", wins, len(errs))
	}
	// The record survives a promotion and does not disturb readers.
	r2, err := st.ReadRecord(ctx, name)
	if s.note(err) != nil {
		t.Fatal(err)
	}
	cur := s.mustRead(t, name, driver.Current)
	v := s.rotate(t, name, cur.ID, s.key())
	r3, err := st.ReadRecord(ctx, name)
	if s.note(err) != nil {
		t.Fatal(err)
	}
	if r3.Data["holder"] != r2.Data["holder"] {
		t.Fatalf("record lost across a promotion: %v, want %v", r3.Data, r2.Data)
	}
	if got := s.mustRead(t, name, driver.Current); got.ID != v.ID {
		t.Fatalf("writing records changed CURRENT")
	}
	if _, err := st.WriteRecord(ctx, name, r3.Rev, map[string]string{}); s.note(err) != nil {
		t.Fatalf("WriteRecord of an empty record: %v", err)
	}
	// A record can be written for a secret that does not exist yet.
	fresh := uniqueName("record-fresh")
	if _, err := st.WriteRecord(ctx, fresh, "", map[string]string{"lease": "x"}); s.note(err) != nil {
		t.Fatalf("WriteRecord on a new secret: %v", err)
	}
	_, err = s.read(t, fresh, driver.Current)
	wantCode(t, "Read(CURRENT) of a secret holding only a record", err, codes.NotFound)
}

func testHandManaged(t *testing.T, s *suite) {
	if s.h.PutByHand == nil {
		t.Fatal("providertest: Harness.PutByHand is nil; every backend can hold a secret written by hand")
	}
	ctx := context.Background()
	name := uniqueName("byhand")
	a, b := s.key(), s.key()
	if err := s.h.PutByHand(ctx, name, a); err != nil {
		t.Fatalf("PutByHand: %v", err)
	}
	wantValue(t, "CURRENT of a hand-managed secret", s.mustRead(t, name, driver.Current), a)
	if err := s.h.PutByHand(ctx, name, b); err != nil {
		t.Fatalf("PutByHand: %v", err)
	}
	cur := s.mustRead(t, name, driver.Current)
	wantValue(t, "CURRENT after a second hand-written version", cur, b)
	// keywarden can take over a hand-managed secret.
	c := s.key()
	vc := s.put(t, name, token(), c)
	wantValue(t, "CURRENT while keywarden's PENDING exists", s.mustRead(t, name, driver.Current), b)
	s.promote(t, name, vc.ID, cur.ID)
	wantValue(t, "CURRENT after taking over", s.mustRead(t, name, driver.Current), c)
	wantValue(t, "PREVIOUS after taking over", s.mustRead(t, name, driver.Previous), b)
}

func testCanceled(t *testing.T, s *suite) {
	name := uniqueName("canceled")
	s.rotate(t, name, "", s.key())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.h.Stager.Read(ctx, name, driver.Current)
	if s.note(err) == nil {
		t.Fatal("Read with a cancelled context succeeded")
	}
	if c := codes.Of(err); c != codes.Canceled && !errors.Is(err, context.Canceled) {
		t.Fatalf("Read with a cancelled context: code %v (%v), want Canceled", c, err)
	}
	_, err = s.h.Stager.PutPending(ctx, name, token(), s.key())
	if s.note(err) == nil {
		t.Fatal("PutPending with a cancelled context succeeded")
	}
	if _, err := s.h.Stager.ReadPending(context.Background(), name); !codes.Is(s.note(err), codes.NotFound) {
		t.Fatalf("a cancelled PutPending left a PENDING behind (err %v)", err)
	}
}

func testConcurrentReads(t *testing.T, s *suite) {
	name := uniqueName("concurrent")
	val := s.key()
	cur := s.rotate(t, name, "", val)
	var wg sync.WaitGroup
	const readers = 8
	errs := make(chan error, readers*2)
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				v, err := s.h.Stager.Read(context.Background(), name, driver.Current)
				if err != nil {
					errs <- s.note(err)
					return
				}
				if string(v.Value) != string(val) && v.ID == cur.ID {
					errs <- errors.New("concurrent read returned a wrong value")
					return
				}
			}
		}()
	}
	// A writer stages and promotes meanwhile.
	wg.Add(1)
	go func() {
		defer wg.Done()
		v, err := s.h.Stager.PutPending(context.Background(), name, token(), s.key())
		if s.note(err) != nil {
			errs <- err
			return
		}
		errs <- s.note(s.h.Stager.Promote(context.Background(), name, v.ID, cur.ID))
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent access: %v", err)
		}
	}
}

func testPayloads(t *testing.T, s *suite) {
	name := uniqueName("payloads")
	json := []byte(`{"api_key":"` + string(s.key()) + `","key_id":"apikey_01"}`)
	s.mu.Lock()
	s.values = append(s.values, json)
	s.mu.Unlock()
	v := s.rotate(t, name, "", json)
	wantValue(t, "JSON payload", s.mustRead(t, name, driver.Current), json)
	multi := []byte("line1\nline2\t\"quoted\" ünïcode")
	s.rotate(t, name, v.ID, multi)
	wantValue(t, "payload with newlines, quotes and UTF-8", s.mustRead(t, name, driver.Current), multi)
}

func uniqueName(kind string) string { return UniqueName("kwc-" + kind) }

// token and fakeKey are the suite's own names for Token and FakeKey.
var token, fakeKey = Token, FakeKey

// UniqueName returns prefix followed by "-" and 8 random hex digits: a fresh
// secret name for tests that share one backend.
func UniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Token returns a fresh rotation token, a 36-character UUID-shaped string as
// the rotator makes them.
func Token() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Rotate makes value the CURRENT version of secret name in st, as
// `keywarden put` does (stage.Put: a one-shot PENDING version promoted over
// the present CURRENT, checked by reading CURRENT back). It returns the new
// version.
func Rotate(t testing.TB, st driver.Stager, name string, value []byte) *driver.Version {
	t.Helper()
	v, err := stage.Put(context.Background(), st, name, value)
	if err != nil {
		t.Fatalf("put %s: %v", name, err)
	}
	return v
}

// FakeKey returns a unique Anthropic-shaped fake key.
func FakeKey() []byte {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return []byte("sk-ant-api03-" + hex.EncodeToString(b) + "AA")
}
