package anthropictest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/anthropictest"
)

// TestRecording: which key served each request, counts per key and
// status, a bounded log, and Reset.
func TestRecording(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.WithLog(3))
	a := s.AddKey("", anthropictest.StatusActive)
	b := s.AddKey("", anthropictest.StatusActive)
	call(t, "POST", s.URL()+"/v1/messages", headers(a.Value), msgBody)
	call(t, "POST", s.URL()+"/v1/messages", headers(b.Value), msgBody)
	if err := s.SetStatus(a.ID, anthropictest.StatusInactive); err != nil {
		t.Fatal(err)
	}
	call(t, "POST", s.URL()+"/v1/messages", headers(a.Value), msgBody) // a revoked key: 401
	call(t, "GET", s.URL()+"/v1/organizations/api_keys", headers(s.AdminKey()), "")
	call(t, "GET", s.URL()+"/v1/models", headers("sk-ant-api03-unknown"), "")

	st := s.Stats()
	want := anthropictest.Stats{
		Requests: 5, UnknownKey: 1,
		ByStatus: map[int]int64{200: 3, 401: 2},
		Keys:     map[string]anthropictest.KeyStats{a.ID: {Served: 1, Rejected: 1}, b.ID: {Served: 1}},
	}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Fatalf("stats\n %+v\nwant\n %+v", st, want)
	}
	if st.Errors() != 2 || s.Served(a.ID) != 1 || s.Count(401) != 2 {
		t.Fatalf("Errors %d, Served %d, Count(401) %d", st.Errors(), s.Served(a.ID), s.Count(401))
	}
	log := s.Log()
	if len(log) != 3 {
		t.Fatalf("log of %d entries, want the last 3", len(log))
	}
	wantLog := []struct {
		keyID  string
		status int
		path   string
	}{{a.ID, 401, "/v1/messages"}, {anthropictest.AdminKeyID, 200, "/v1/organizations/api_keys"}, {"", 401, "/v1/models"}}
	for i, w := range wantLog {
		e := log[i]
		if e.KeyID != w.keyID || e.Status != w.status || e.Path != w.path || !strings.HasPrefix(e.RequestID, "req_") || e.Time.IsZero() {
			t.Errorf("log[%d] = %+v, want %+v", i, e, w)
		}
	}
	s.Reset()
	if st := s.Stats(); st.Requests != 0 || len(st.ByStatus) != 0 || len(st.Keys) != 0 || len(s.Log()) != 0 {
		t.Fatalf("after Reset: %+v, log %d", st, len(s.Log()))
	}
	if _, ok := s.Key(a.ID); !ok {
		t.Fatal("Reset dropped the keys")
	}
}

// TestKeyRedaction: a Key printed any way never shows its value.
func TestKeyRedaction(t *testing.T) {
	s := anthropictest.New()
	k := s.AddKey("", anthropictest.StatusActive)
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(f, k); strings.Contains(out, k.Value) || !strings.Contains(out, k.ID) {
			t.Errorf("%s prints %q", f, out)
		}
	}
	if out := fmt.Sprintf("%v", []anthropictest.Key{k}); strings.Contains(out, k.Value) {
		t.Errorf("a slice of keys prints the value")
	}
	t.Logf("key %v", k) // shows id and hint only
}

func TestAddKeyMistakes(t *testing.T) {
	s := anthropictest.New()
	k := s.AddKey("", anthropictest.StatusActive)
	for name, f := range map[string]func(){
		"duplicate":  func() { s.AddKey(k.Value, anthropictest.StatusActive) },
		"admin key":  func() { s.AddKey(s.AdminKey(), anthropictest.StatusActive) },
		"bad status": func() { s.AddKey("", "revoked") },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("no panic")
				}
				if msg := fmt.Sprint(r); strings.Contains(msg, k.Value) || strings.Contains(msg, s.AdminKey()) {
					t.Fatalf("the panic shows a key value: %s", msg)
				}
			}()
			f()
		})
	}
	if got, ok := s.KeyByValue(k.Value); !ok || got.ID != k.ID {
		t.Fatal("KeyByValue")
	}
	if len(s.Keys()) != 1 {
		t.Fatalf("%d keys after failed adds", len(s.Keys()))
	}
}

// TestLeaked: a key's secret part found in a text, truncated prefix or
// not, names that key; the admin key is named AdminKeyID.
func TestLeaked(t *testing.T) {
	s := anthropictest.New()
	a := s.AddKey("", anthropictest.StatusActive)
	b := s.AddKey("", anthropictest.StatusInactive)
	if got := s.Leaked("nothing here " + a.Hint()); len(got) != 0 {
		t.Errorf("Leaked of a text with a hint only: %v", got)
	}
	if got := s.Leaked("x-api-key: " + a.Value); len(got) != 1 || got[0] != a.ID {
		t.Errorf("Leaked of a whole key: %v, want [%s]", got, a.ID)
	}
	text := "…" + strings.TrimPrefix(b.Value, "sk-ant-api03-") + " and " + s.AdminKey()
	if got := s.Leaked(text); len(got) != 2 || got[0] != b.ID || got[1] != anthropictest.AdminKeyID {
		t.Errorf("Leaked: %v, want [%s %s]", got, b.ID, anthropictest.AdminKeyID)
	}
}
