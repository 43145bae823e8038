package rotation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

func TestRecordRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 23, 3, 0, 0, 123, time.UTC)
	s := &state{
		Phase: PhaseGrace, Token: "tok", Holder: "h", LeaseUntil: now.Add(time.Minute), StartedAt: now,
		PendingVersion: "3", NewKeyID: "apikey_new", NewFP: "sha256:aa", OldVersion: "2", OldKeyID: "apikey_old", OldFP: "sha256:bb",
		PromotedAt: now, RevokeDue: now.Add(time.Hour), RevokedAt: now, Reason: "r", LastOutcome: OutcomeRotated,
		LastReason: "lr", LastAttemptAt: now, LastRotatedAt: now, LastFinishedAt: now, Rotations: 7,
		KeyIDs: map[string]string{"sk-ant-api03…sha256:0011aabb": "apikey_01"},
	}
	got, err := decode(&driver.Record{Rev: "5", Data: s.encode()})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
	}
	if empty, err := decode(&driver.Record{}); err != nil || empty.Phase != PhaseIdle {
		t.Fatalf("empty record: %+v %v", empty, err)
	}
	for _, bad := range []map[string]string{
		{"v": "9", "phase": "idle"},
		{"v": "1", "phase": "dancing"},
		{"v": "1", "phase": "grace", "promoted_at": "yesterday"},
		{"v": "1", "phase": "idle", "rotations": "-1"},
		{"v": "1", "phase": "idle", "key_ids": "[1]"},
	} {
		if _, err := decode(&driver.Record{Rev: "1", Data: bad}); err == nil {
			t.Errorf("decode(%v) accepted", bad)
		}
	}
}

func TestEncodeValue(t *testing.T) {
	key := providers.NewSecret("sk-ant-api03-new")
	for _, tc := range []struct {
		name    string
		c       Credential
		field   string
		current string
		want    map[string]any // nil: a bare key
	}{
		{"bare stays bare", Credential{Key: key}, "", "sk-ant-api03-old", nil},
		{"no current", Credential{Key: key}, "", "", nil},
		{"id makes JSON", Credential{Key: key, KeyID: "apikey_1"}, "", "sk-ant-api03-old", map[string]any{"api_key": "sk-ant-api03-new", "key_id": "apikey_1"}},
		{"keeps metadata", Credential{Key: key, KeyID: "apikey_2"}, "", `{"api_key":"old","key_id":"apikey_1","base_url":"https://x"}`,
			map[string]any{"api_key": "sk-ant-api03-new", "key_id": "apikey_2", "base_url": "https://x"}},
		{"drops a stale id", Credential{Key: key}, "", `{"api_key":"old","key_id":"apikey_1"}`, map[string]any{"api_key": "sk-ant-api03-new"}},
		{"custom field", Credential{Key: key, KeyID: "apikey_3"}, "token", `{"token":"old"}`, map[string]any{"token": "sk-ant-api03-new", "key_id": "apikey_3"}},
		{"nothing from a payload that does not decode", Credential{Key: key, KeyID: "apikey_4"}, "", `{"apikey":"sk-ant-api03-old","base_url":"https://x"}`,
			map[string]any{"api_key": "sk-ant-api03-new", "key_id": "apikey_4"}},
		{"bare from a payload that does not decode", Credential{Key: key}, "", `{"apikey":"sk-ant-api03-old"}`, nil},
	} {
		got := encodeValue(tc.c, tc.field, []byte(tc.current))
		if tc.want == nil {
			if string(got) != key.Reveal() {
				t.Errorf("%s: not a bare key", tc.name)
			}
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(got, &m); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(m) != len(tc.want) {
			t.Errorf("%s: %d fields, want %d", tc.name, len(m), len(tc.want))
		}
		for k, v := range tc.want {
			if m[k] != v {
				t.Errorf("%s: field %s", tc.name, k)
			}
		}
		p, err := providers.DecodePayload(got, tc.field)
		if err != nil || !p.Key.Equal(key) || p.KeyID != tc.c.KeyID {
			t.Errorf("%s: consumers would not read it: %v", tc.name, err)
		}
	}
}

type scriptedProbe struct {
	errs []error
	n    int
}

func (p *scriptedProbe) Type() string { return "scripted" }

func (p *scriptedProbe) Probe(ctx context.Context, _ providers.Secret) error {
	p.n++
	if p.n <= len(p.errs) {
		return p.errs[p.n-1]
	}
	return nil
}

func TestRunProbe(t *testing.T) {
	retry := func(after time.Duration) error {
		return &ProbeError{Retryable: true, RetryAfter: after, Err: errors.New("429 rate_limit_error")}
	}
	final := &ProbeError{Err: errors.New("401 authentication_error")}
	r := Retry{Attempts: 4, MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second, Timeout: time.Second}
	for _, tc := range []struct {
		name     string
		errs     []error
		attempts int
		waits    []time.Duration
		fail     string
		// activated: the issuer just activated the key; settle overrides
		// Retry.Settle when not 0.
		activated bool
		settle    time.Duration
	}{
		{"passes at once", nil, 1, nil, "", false, 0},
		{"401 fails at once", []error{final}, 1, nil, "authentication_error", false, 0},
		{"backoff doubles", []error{retry(0), retry(0), retry(0)}, 4, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}, "", false, 0},
		{"retry-after honoured", []error{retry(2 * time.Second)}, 2, []time.Duration{2 * time.Second}, "", false, 0},
		{"retry-after capped", []error{retry(time.Hour)}, 2, []time.Duration{5 * time.Second}, "", false, 0},
		{"retry-after honoured", []error{retry(3 * time.Second)}, 2, []time.Duration{3 * time.Second}, "", false, 0},
		{"gives up", []error{retry(0), retry(0), retry(0), retry(0)}, 4, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}, "gave up after 4 attempts", false, 0},
		{"attempt timeout retried", []error{context.DeadlineExceeded}, 2, []time.Duration{100 * time.Millisecond}, "", false, 0},
		{"other errors fail", []error{errors.New("boom")}, 1, nil, "boom", false, 0},
		{"refusal retried while the key settles", []error{final, final}, 3, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}, "", true, 0},
		{"refusals beyond Attempts while settling", []error{final, final, final, final, final}, 6, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond}, "", true, 0},
		{"refusal fails once settled", []error{final, final, final}, 2, []time.Duration{100 * time.Millisecond}, "still refused after 2 attempts", true, time.Nanosecond},
		{"no settling when disabled", []error{final}, 1, nil, "authentication_error", true, -1},
	} {
		p := &scriptedProbe{errs: tc.errs}
		var waits []time.Duration
		r := r
		if tc.settle != 0 {
			r.Settle = tc.settle
		}
		n, err := runProbe(context.Background(), p, providers.NewSecret("k"), r, tc.activated, func(_ context.Context, d time.Duration) error {
			waits = append(waits, d)
			return nil
		})
		if n != tc.attempts || len(waits) != len(tc.waits) {
			t.Errorf("%s: %d attempts, waits %v; want %d, %v", tc.name, n, waits, tc.attempts, tc.waits)
			continue
		}
		for i := range waits {
			// The shared backoff policy jitters: a wait lies in
			// [base/2, base], unless the server asked for more.
			lo := tc.waits[i] / 2
			if tc.name == "retry-after honoured" {
				lo = tc.waits[i]
			}
			if waits[i] < lo || waits[i] > tc.waits[i] {
				t.Errorf("%s: wait %d = %v, want in [%v, %v]", tc.name, i, waits[i], lo, tc.waits[i])
			}
		}
		if (err != nil) != (tc.fail != "") || (err != nil && !strings.Contains(err.Error(), tc.fail)) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.fail)
		}
	}
	if b := (Retry{}).Budget(); b != 6*30*time.Second+5*30*time.Second {
		t.Errorf("default budget %v", b)
	}
}

func TestKindOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{nil, ExitOK},
		{errors.New("x"), ExitFailed},
		{fail(KindProbe, errors.New("x")), ExitProbe},
		{fail(KindIssuer, fail(KindPoolEmpty, errors.New("x"))), ExitPoolEmpty},
		{codes.Errorf(codes.Unavailable, "down"), ExitStore},
		{failf(KindConflict, "x: %w", ErrInProgress), ExitConflict},
		{&Error{Kind: KindConfig, Err: errors.New("x")}, ExitConfig},
	} {
		if got := ExitCode(tc.err); got != tc.code {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
	if !errors.Is(failf(KindConflict, "x: %w", ErrInProgress), ErrInProgress) {
		t.Error("ErrInProgress lost")
	}
}

// TestCheckedValue: an issued key is stored only as consumers will read it
// back (providers.DecodePayload), under any current payload. want is ""
// for no error.
func TestCheckedValue(t *testing.T) {
	cred := func(k, id string) Credential { return Credential{Key: providers.NewSecret(k), KeyID: id} }
	const good = "sk-ant-api03-good"
	type tc struct {
		c             Credential
		current, want string
	}
	for name, tc := range map[string]tc{
		"bare":                {cred(good, ""), "", ""},
		"with id":             {cred(good, "apikey_1"), "", ""},
		"under JSON":          {cred(good, ""), `{"api_key":"x","base_url":"https://a"}`, ""},
		"space":               {cred("kw key abc", ""), "", "white space"},
		"space under JSON":    {cred("kw key abc", ""), `{"api_key":"x"}`, "white space"},
		"leading space, bare": {cred(" "+good+"abc", ""), "", "starts or ends with white space"},
		"non-ASCII":           {cred("sk-ant-api03-abc\u00e9", ""), "", "outside printable ASCII"},
		"starts like JSON":    {cred("{abc", ""), "", "not a valid JSON object"},
		"bad id":              {cred(good, "apikey 1"), "", "key id"},
	} {
		b, err := checkedValue(tc.c, "", []byte(tc.current))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.want == "" && !bytes.Contains(b, []byte(tc.c.Key.Reveal())):
			t.Errorf("%s: the payload does not hold the key", name)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		case err != nil && strings.Contains(err.Error(), "abc"):
			t.Errorf("%s: the error holds the key: %v", name, err)
		}
	}
}

// TestLeftValidCorrupt: a left_valid field that does not decode, or an
// entry naming no key, is a corrupt record.
func TestLeftValidCorrupt(t *testing.T) {
	for _, v := range []string{`[{`, `{"key_id":"a"}`, `[{"outcome":"rolled_back"}]`, `[{"key_id":"a"}]`} {
		_, err := decode(&driver.Record{Data: map[string]string{"v": recordVersion, "phase": "idle", "left_valid": v}})
		if err == nil || !strings.Contains(err.Error(), "corrupt (fields [left_valid])") {
			t.Errorf("left_valid %s: %v", v, err)
		}
	}
	s := &state{Phase: PhaseIdle, LeftValid: []LeftValidKey{{KeyID: "a", Fingerprint: "sha256:x", Outcome: OutcomeRolledBack, At: time.Unix(1, 0).UTC()}}}
	enc := s.encode()
	back, err := decode(&driver.Record{Data: enc})
	if err != nil || len(back.LeftValid) != 1 || back.LeftValid[0] != s.LeftValid[0] {
		t.Fatalf("round trip: %v %+v", err, back)
	}
	// A record with a list says format 2, which a keywarden older than the
	// list refuses instead of dropping the list on its next write; one
	// without stays format 1, which it reads.
	if enc["v"] != "2" {
		t.Errorf("a record with a left_valid list has format %q, want 2", enc["v"])
	}
	back.LeftValid = nil
	if v := back.encode()["v"]; v != "1" {
		t.Errorf("a record without a list has format %q, want 1", v)
	}
	if _, err := decode(&driver.Record{Data: map[string]string{"v": "3", "phase": "idle"}}); err == nil || !strings.Contains(err.Error(), "upgrade keywarden") {
		t.Errorf("format 3: %v", err)
	}
	// Merged by id or fingerprint, never twice.
	l := addLeftValid(s.LeftValid, LeftValidKey{Fingerprint: "sha256:x", Version: "3", Outcome: OutcomeNotRevoked})
	if len(l) != 1 || l[0].Version != "3" || l[0].Outcome != OutcomeRolledBack {
		t.Fatalf("merged %+v", l)
	}
}
