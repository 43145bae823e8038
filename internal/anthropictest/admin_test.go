package anthropictest_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
)

type keyObject struct {
	ID             string  `json:"id"`
	Type           string  `json:"type"`
	Name           string  `json:"name"`
	Status         string  `json:"status"`
	CreatedAt      string  `json:"created_at"`
	ExpiresAt      *string `json:"expires_at"`
	PartialKeyHint string  `json:"partial_key_hint"`
	WorkspaceID    *string `json:"workspace_id"`
	CreatedBy      struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	} `json:"created_by"`
}

type keyPage struct {
	Data    []keyObject `json:"data"`
	HasMore bool        `json:"has_more"`
	FirstID *string     `json:"first_id"`
	LastID  *string     `json:"last_id"`
}

func listKeys(t *testing.T, s *anthropictest.Server, query string) (int, keyPage, []byte) {
	t.Helper()
	resp, b := call(t, "GET", s.URL()+"/v1/organizations/api_keys"+query, headers(s.AdminKey()), "")
	var p keyPage
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatalf("list: %v: %s", err, b)
		}
	}
	return resp.StatusCode, p, b
}

func ids(p keyPage) []string {
	out := make([]string, len(p.Data))
	for i, k := range p.Data {
		out[i] = k.ID
	}
	return out
}

// TestAdminPagination walks 45 keys forward with after_id and back with
// before_id, and checks has_more, first_id, last_id, limits and filters.
func TestAdminPagination(t *testing.T) {
	s := anthropictest.Start(t)
	var created []string // oldest first
	for i := range 45 {
		st := anthropictest.StatusInactive
		if i%3 == 0 {
			st = anthropictest.StatusActive
		}
		created = append(created, s.AddKey("", st).ID)
	}
	newestFirst := slices.Clone(created)
	slices.Reverse(newestFirst)

	// The default limit is 20.
	_, p, _ := listKeys(t, s, "")
	if len(p.Data) != 20 || !p.HasMore || *p.FirstID != newestFirst[0] || *p.LastID != newestFirst[19] {
		t.Fatalf("first page: %d keys, has_more %v", len(p.Data), p.HasMore)
	}
	// Forward with after_id.
	var seen []string
	after := ""
	for pages := 1; ; pages++ {
		q := "?limit=10"
		if after != "" {
			q += "&after_id=" + after
		}
		_, p, _ := listKeys(t, s, q)
		seen = append(seen, ids(p)...)
		if !p.HasMore {
			if pages != 5 || len(p.Data) != 5 {
				t.Fatalf("forward: %d pages, the last of %d", pages, len(p.Data))
			}
			break
		}
		after = *p.LastID
	}
	if !slices.Equal(seen, newestFirst) {
		t.Fatalf("forward walk listed %d keys out of order", len(seen))
	}
	// Backward with before_id from the oldest key.
	var back []string
	before := newestFirst[44]
	for pages := 1; ; pages++ {
		_, p, _ := listKeys(t, s, "?limit=10&before_id="+before)
		back = append(ids(p), back...)
		if !p.HasMore {
			if pages != 5 || len(p.Data) != 4 {
				t.Fatalf("backward: %d pages, the last of %d", pages, len(p.Data))
			}
			break
		}
		before = *p.FirstID
	}
	if !slices.Equal(back, newestFirst[:44]) {
		t.Fatalf("backward walk listed %d keys out of order", len(back))
	}
	// Status filter, with a cursor whose key the filter drops.
	_, p, _ = listKeys(t, s, "?status=active&limit=1000")
	if len(p.Data) != 15 || p.HasMore {
		t.Fatalf("status=active: %d keys", len(p.Data))
	}
	for _, k := range p.Data {
		if k.Status != "active" {
			t.Fatalf("status=active listed a %s key", k.Status)
		}
	}
	_, p, _ = listKeys(t, s, "?status=active&limit=2&after_id="+newestFirst[0]) // newestFirst[0] is inactive
	if len(p.Data) != 2 || p.Data[0].Status != "active" || !p.HasMore {
		t.Fatalf("filtered page after a filtered-out cursor: %+v", p)
	}
	// An empty page has null first_id and last_id.
	code, p, b := listKeys(t, s, "?status=archived")
	if code != 200 || len(p.Data) != 0 || p.HasMore || p.FirstID != nil || p.LastID != nil {
		t.Fatalf("empty page: %s", b)
	}
	if _, p, _ = listKeys(t, s, "?workspace_id=wrkspc_01nope"); len(p.Data) != 0 {
		t.Fatal("workspace_id filter kept keys of the default workspace")
	}
	if _, p, _ = listKeys(t, s, "?limit=1000&created_by_user_id="+createdBy(t, s)); len(p.Data) != 45 {
		t.Fatalf("created_by_user_id filter: %d keys", len(p.Data))
	}
	if _, p, _ = listKeys(t, s, "?created_by_user_id=user_01nope"); len(p.Data) != 0 {
		t.Fatal("created_by_user_id filter kept another user's keys")
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=ten", "?status=revoked", "?after_id=apikey_01nope", "?after_id=" + created[0] + "&before_id=" + created[1]} {
		if code, _, b := listKeys(t, s, q); code != 400 || errorOf(t, b).Error.Type != "invalid_request_error" {
			t.Errorf("%s: %d %s", q, code, b)
		}
	}
	if code, p, _ := listKeys(t, s, "?limit=1000"); code != 200 || len(p.Data) != 45 || p.HasMore {
		t.Errorf("limit=1000: %d keys, has_more %v", len(p.Data), p.HasMore)
	}
}

// createdBy returns the created_by user of the newest key.
func createdBy(t *testing.T, s *anthropictest.Server) string {
	t.Helper()
	_, q, _ := listKeys(t, s, "?limit=1")
	if len(q.Data) == 0 || !strings.HasPrefix(q.Data[0].CreatedBy.ID, "user_01") || q.Data[0].CreatedBy.Type != "user" {
		t.Fatalf("created_by: %+v", q.Data)
	}
	return q.Data[0].CreatedBy.ID
}

func update(t *testing.T, s *anthropictest.Server, id, body string) (int, keyObject, []byte) {
	t.Helper()
	resp, b := call(t, "POST", s.URL()+"/v1/organizations/api_keys/"+url.PathEscape(id), headers(s.AdminKey()), body)
	var k keyObject
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, &k); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, k, b
}

// TestAdminStatusTransitions drives every documented transition through
// POST /v1/organizations/api_keys/{id} and checks the data plane follows.
func TestAdminStatusTransitions(t *testing.T) {
	s := anthropictest.Start(t)
	works := func(k anthropictest.Key) bool {
		resp, _ := call(t, "GET", s.URL()+"/v1/models", headers(k.Value), "")
		return resp.StatusCode == 200
	}
	for _, tc := range []struct {
		from   string
		body   string
		status int    // of the update
		then   string // status afterwards
		works  bool   // the key works afterwards
	}{
		{"inactive", `{"status":"active"}`, 200, "active", true},
		{"active", `{"status":"inactive"}`, 200, "inactive", false},
		{"active", `{"status":"archived"}`, 200, "archived", false},
		{"inactive", `{"status":"archived"}`, 200, "archived", false},
		{"active", `{"status":"active"}`, 200, "active", true},
		{"active", `{"name":"renamed"}`, 200, "active", true},
		{"active", `{}`, 200, "active", true},
		{"archived", `{"status":"active"}`, 400, "archived", false},
		{"archived", `{"status":"inactive"}`, 400, "archived", false},
		{"archived", `{"name":"x"}`, 400, "archived", false},
		{"expired", `{"status":"active"}`, 400, "expired", false},
		{"expired", `{"status":"archived"}`, 200, "archived", false},
		{"active", `{"status":"expired"}`, 400, "active", true},
		{"active", `{"status":"deleted"}`, 400, "active", true},
		{"active", `{"colour":"red"}`, 400, "active", true},
		{"active", `{"status":`, 400, "active", true},
	} {
		t.Run(tc.from+" "+tc.body, func(t *testing.T) {
			k := s.AddKey("", tc.from)
			code, obj, b := update(t, s, k.ID, tc.body)
			if code != tc.status {
				t.Fatalf("update: %d, want %d: %s", code, tc.status, b)
			}
			if code == 200 && (obj.Status != tc.then || obj.ID != k.ID || obj.Type != "api_key" || obj.PartialKeyHint != k.Hint()) {
				t.Fatalf("update answered %s", b)
			}
			if code == 200 && strings.Contains(tc.body, "name") && obj.Name != "renamed" {
				t.Fatalf("name not updated: %s", b)
			}
			now, _ := s.Key(k.ID)
			if now.Status != tc.then {
				t.Fatalf("status %s, want %s", now.Status, tc.then)
			}
			if works(k) != tc.works {
				t.Fatalf("key works: %v, want %v", !tc.works, tc.works)
			}
		})
	}
	// SetStatus applies the same rules.
	k := s.AddKey("", anthropictest.StatusArchived)
	if err := s.SetStatus(k.ID, anthropictest.StatusActive); err == nil || !strings.HasPrefix(err.Error(), "anthropictest: ") {
		t.Fatalf("SetStatus reactivated an archived key: %v", err)
	}
	if err := s.SetStatus("apikey_01nope", anthropictest.StatusActive); err == nil {
		t.Fatal("SetStatus of an unknown key succeeded")
	}
	// Updates need a JSON body.
	h := headers(s.AdminKey())
	h["content-type"] = "text/plain"
	if resp, _ := call(t, "POST", s.URL()+"/v1/organizations/api_keys/"+k.ID, h, `{}`); resp.StatusCode != 400 {
		t.Fatalf("text/plain update: %d", resp.StatusCode)
	}
	if code, _, _ := update(t, s, "apikey_01nope", `{"status":"active"}`); code != 404 {
		t.Fatalf("unknown id: %d", code)
	}
}

// TestKeyObject checks the Admin API's key object and the hint format.
func TestKeyObject(t *testing.T) {
	clk := newClock()
	s := anthropictest.Start(t, anthropictest.WithClock(clk.Now))
	const value = "sk-ant-api03-R2D2c3po0123456789abcdefghijklmnopqrstuvwxyzigAA"
	k := s.AddKey(value, anthropictest.StatusActive)
	if k.Hint() != "sk-ant-api03-R2D...igAA" {
		t.Fatalf("hint %q, want the documented sk-ant-api03-R2D...igAA", k.Hint())
	}
	if !strings.HasPrefix(k.ID, "apikey_01") || len(k.ID) != len("apikey_01Rj2N8SVvo6BePZj99NhmiT") {
		t.Fatalf("id %q", k.ID)
	}
	g := s.AddKey("", anthropictest.StatusActive)
	if !strings.HasPrefix(g.Value, "sk-ant-api03-") || !strings.HasSuffix(g.Value, "AA") || len(g.Value) != 108 {
		t.Fatalf("generated value of %d characters", len(g.Value))
	}
	if err := s.ExpireAt(k.ID, clk.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	resp, b := call(t, "GET", s.URL()+"/v1/organizations/api_keys/"+k.ID, headers(s.AdminKey()), "")
	var o keyObject
	if resp.StatusCode != 200 || json.Unmarshal(b, &o) != nil {
		t.Fatalf("get: %d %s", resp.StatusCode, b)
	}
	want := keyObject{ID: k.ID, Type: "api_key", Name: k.Name, Status: "active", CreatedAt: "2026-05-04T12:00:00.000000Z", PartialKeyHint: "sk-ant-api03-R2D...igAA"}
	if o.ExpiresAt == nil || *o.ExpiresAt != "2026-05-04T13:00:00.000000Z" || o.WorkspaceID != nil {
		t.Fatalf("expires_at/workspace_id: %s", b)
	}
	o.ExpiresAt, o.CreatedBy = nil, want.CreatedBy
	if o != want {
		t.Fatalf("got %+v\nwant %+v", o, want)
	}
	for _, field := range []string{`"principal":`, `"scope":`, `"created_by":{"id":"user_01`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("no %s in %s", field, b)
		}
	}
	if strings.Contains(string(b), value) {
		t.Fatal("the Admin API returned a key's value")
	}
}

// TestExpiryAndActivationDelay moves a fake clock: a key expires at its
// time, and an activated key works only after the activation delay.
func TestExpiryAndActivationDelay(t *testing.T) {
	clk := newClock()
	s := anthropictest.Start(t, anthropictest.WithClock(clk.Now), anthropictest.WithActivationDelay(5*time.Second))
	get := func(k anthropictest.Key) (int, string) {
		resp, b := call(t, "GET", s.URL()+"/v1/models", headers(k.Value), "")
		if resp.StatusCode != 200 {
			return resp.StatusCode, errorOf(t, b).Error.Message
		}
		return 200, ""
	}
	old := s.AddKey("", anthropictest.StatusActive)
	if code, _ := get(old); code != 200 {
		t.Fatal("a key added active does not work at once")
	}
	if err := s.ExpireAt(old.ID, clk.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	fresh := s.AddKey("", anthropictest.StatusInactive)
	if code, _, b := update(t, s, fresh.ID, `{"status":"active"}`); code != 200 {
		t.Fatalf("activate: %s", b)
	}
	if code, _ := get(fresh); code != 401 {
		t.Fatalf("a just-activated key works before the delay: %d", code)
	}
	if k, _ := s.Key(fresh.ID); !k.ActiveFrom.Equal(clk.Now().Add(5 * time.Second)) {
		t.Fatalf("ActiveFrom %v", k.ActiveFrom)
	}
	clk.Advance(5 * time.Second)
	if code, _ := get(fresh); code != 200 {
		t.Fatalf("the key does not work after the delay: %d", code)
	}
	clk.Advance(time.Minute)
	if code, msg := get(old); code != 401 || !strings.Contains(msg, "expired") {
		t.Fatalf("an expired key: %d %q", code, msg)
	}
	if k, _ := s.Key(old.ID); k.Status != anthropictest.StatusExpired {
		t.Fatalf("status %s, want expired", k.Status)
	}
	if _, p, _ := listKeys(t, s, "?status=expired"); len(p.Data) != 1 || p.Data[0].ID != old.ID {
		t.Fatalf("status=expired lists %v", ids(p))
	}
	if err := s.ExpireAt(old.ID, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(old); code != 200 {
		t.Fatal("a key whose expiry was lifted does not work")
	}
}

// TestAdminFaults: faults apply to the Admin API too, by path pattern.
func TestAdminFaults(t *testing.T) {
	s := anthropictest.Start(t)
	k := s.AddKey("", anthropictest.StatusInactive)
	s.FailNext(2, 529, "/v1/organizations/api_keys/*")
	if code, _, _ := listKeys(t, s, ""); code != 200 {
		t.Fatalf("the list matched the pattern of a single key: %d", code)
	}
	for i := range 2 {
		if code, _, b := update(t, s, k.ID, `{"status":"active"}`); code != 529 || errorOf(t, b).Error.Type != "overloaded_error" {
			t.Fatalf("update %d: %d %s", i, code, b)
		}
	}
	if code, _, _ := update(t, s, k.ID, `{"status":"active"}`); code != 200 {
		t.Fatalf("after the faults: %d", code)
	}
	if n := s.Stats().ByStatus[529]; n != 2 {
		t.Fatalf("529s: %d", n)
	}
}
