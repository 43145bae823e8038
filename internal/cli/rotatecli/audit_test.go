package rotatecli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/rotation/anthropic"
)

// `keywarden audit` against the fake Claude API: a managed CURRENT, a pool
// key, an archived pool key, and an orphan active key; exit 16 on the
// findings, the table and --json, no key value printed.
func TestAudit(t *testing.T) {
	api := anthropictest.Start(t)
	cur := api.AddKey("", anthropictest.StatusActive)
	poolKey := api.AddKey("", anthropictest.StatusInactive)
	dead := api.AddKey("", anthropictest.StatusArchived)
	orphan := api.AddKey("", anthropictest.StatusActive)
	for range 250 {
		api.AddKey("", anthropictest.StatusInactive)
	}
	e := anthropicEnv(t, api)
	if err := e.st.PutByHand(context.Background(), "prod", []byte(cur.Value)); err != nil { // by value: matched by hint
		t.Fatal(err)
	}
	for _, k := range []anthropictest.Key{poolKey, dead} {
		if _, _, code := run(t, k.Value, "pool", "add", "prod", "--config", e.cfg, "--key-id", k.ID); code != 0 {
			t.Fatalf("pool add: exit %d", code)
		}
	}
	out, stderr, code := run(t, "", "audit", "--config", e.cfg)
	if code != 16 || !strings.Contains(out, orphan.ID) || !strings.Contains(out, "unmanaged_active") || !strings.Contains(out, "pool_unusable") {
		t.Fatalf("audit: exit %d\n%s\n%s", code, out, stderr)
	}
	if strings.Contains(out, cur.ID) || strings.Contains(out, poolKey.ID) {
		t.Fatalf("managed keys in sound state listed without --all:\n%s", out)
	}
	out, _, code = run(t, "", "audit", "--config", e.cfg, "--json", "--all", "--fail-on", "none")
	var fs []anthropic.Finding
	if err := json.Unmarshal([]byte(out), &fs); err != nil || code != 0 {
		t.Fatalf("--json: exit %d %v\n%s", code, err, out)
	}
	classes := map[string]string{}
	for _, f := range fs {
		classes[f.ID] += f.Class + "/" + f.Role + " "
	}
	for id, want := range map[string]string{cur.ID: "managed/prod CURRENT", poolKey.ID: "managed/prod pool", dead.ID: "pool_unusable/prod pool", orphan.ID: "unmanaged_active/"} {
		if !strings.Contains(classes[id], want) {
			t.Errorf("%s: %q, want %q", id, classes[id], want)
		}
	}
	if len(fs) != 4 {
		t.Errorf("%d findings, want 4 (the 250 retired keys have none)", len(fs))
	}
	for _, k := range []anthropictest.Key{cur, poolKey, dead, orphan} {
		if strings.Contains(out+stderr, k.Value) {
			t.Fatal("a key value was printed")
		}
	}
	if _, stderr, code := run(t, "", "audit", "--config", e.cfg, "--fail-on", "info"); code != 2 || !strings.Contains(stderr, "want warning, critical or none") {
		t.Fatalf("--fail-on info: exit %d %s", code, stderr)
	}
}

// A pool key added without --key-id is recognised by the partial_key_hint
// rule revocation uses, not reported as unmanaged_active (a false
// critical); a pool key whose hint matches two keys of the organization is
// reported ambiguous_hint on both, with what to do, never guessed.
func TestAuditPoolKeyWithoutID(t *testing.T) {
	api := anthropictest.Start(t)
	cur := api.AddKey("", anthropictest.StatusActive)
	held := api.AddKey("", anthropictest.StatusInactive) // the way it should be
	leftOn := api.AddKey("", anthropictest.StatusActive) // created in the Console, never set inactive
	twinA := api.AddKey("", anthropictest.StatusActive)  // in the pool, without id
	twinB := api.AddKey(twinA.Value[:16]+strings.Repeat("q", len(twinA.Value)-20)+twinA.Value[len(twinA.Value)-4:], anthropictest.StatusActive)
	if twinA.Hint() != twinB.Hint() {
		t.Fatalf("twin hints %s and %s", twinA.Hint(), twinB.Hint())
	}
	for range 120 {
		api.AddKey("", anthropictest.StatusInactive)
	}
	e := anthropicEnv(t, api)
	if err := e.st.PutByHand(context.Background(), "prod", []byte(cur.Value)); err != nil {
		t.Fatal(err)
	}
	for _, k := range []anthropictest.Key{held, leftOn, twinA} {
		if _, _, code := run(t, k.Value, "pool", "add", "prod", "--config", e.cfg); code != 0 { // no --key-id
			t.Fatalf("pool add: exit %d", code)
		}
	}
	out, stderr, code := run(t, "", "audit", "--config", e.cfg, "--json", "--all", "--fail-on", "critical")
	var fs []anthropic.Finding
	if err := json.Unmarshal([]byte(out), &fs); err != nil {
		t.Fatalf("--json: exit %d %v\n%s\n%s", code, err, out, stderr)
	}
	got := map[string][]anthropic.Finding{}
	for _, f := range fs {
		got[f.ID] = append(got[f.ID], f)
	}
	if code != 0 {
		t.Errorf("exit %d, want 0: no critical finding (%s)", code, stderr)
	}
	for _, tc := range []struct {
		k           anthropictest.Key
		class, role string
	}{
		{cur, anthropic.ClassManaged, "prod CURRENT"},
		{held, anthropic.ClassManaged, "prod pool"},
		{leftOn, anthropic.ClassPoolUnusable, "prod pool"},
		{twinA, anthropic.ClassAmbiguousHint, "prod pool"},
		{twinB, anthropic.ClassAmbiguousHint, "prod pool"},
	} {
		fs := got[tc.k.ID]
		if len(fs) != 1 || fs[0].Class != tc.class || fs[0].Role != tc.role {
			t.Errorf("%s: %+v, want one %s finding of %s", tc.k.ID, fs, tc.class, tc.role)
			continue
		}
		if tc.class == anthropic.ClassAmbiguousHint {
			for _, want := range []string{twinA.ID, twinB.ID, "pool add --key-id"} {
				if !strings.Contains(fs[0].Detail, want) {
					t.Errorf("%s: detail %q lacks %q", tc.k.ID, fs[0].Detail, want)
				}
			}
		}
	}
	if len(got) != 5 {
		t.Errorf("%d keys with findings, want 5: %v", len(got), got)
	}
	// Following the advice: the id attached, the pool key is known
	// (pool_unusable: it is active), and twinB is what it is, an active key
	// nobody manages.
	if out, stderr, code := run(t, twinA.Value, "pool", "add", "prod", "--config", e.cfg, "--key-id", twinA.ID); code != 0 {
		t.Fatalf("pool add --key-id of a pool key without id: exit %d\n%s%s", code, out, stderr)
	}
	out2, _, _ := run(t, "", "audit", "--config", e.cfg, "--json", "--fail-on", "none")
	var after []anthropic.Finding
	if err := json.Unmarshal([]byte(out2), &after); err != nil {
		t.Fatal(err)
	}
	classes := map[string]string{}
	for _, f := range after {
		classes[f.ID] += f.Class + "/" + f.Role + " "
		if strings.Contains(f.Detail, "known by value only") {
			t.Errorf("still ambiguous after the id was attached: %+v", f)
		}
	}
	if !strings.Contains(classes[twinA.ID], "pool_unusable/prod pool") || !strings.Contains(classes[twinB.ID], "unmanaged_active/") {
		t.Errorf("after pool add --key-id: %v", classes)
	}
	for _, k := range []anthropictest.Key{cur, held, leftOn, twinA, twinB} {
		if strings.Contains(out+stderr+out2, k.Value) {
			t.Fatal("a key value was printed")
		}
	}
}

// anthropicEnv configures key prod with an anthropic issuer on api, its
// Admin key and pool in files, and no probe.
func anthropicEnv(t *testing.T, api *anthropictest.Server) *env {
	t.Helper()
	dir := t.TempDir()
	admin := filepath.Join(dir, "admin.json")
	if err := file.New(admin).PutByHand(context.Background(), "admin", []byte(api.AdminKey())); err != nil {
		t.Fatal(err)
	}
	return newEnv(t, fmt.Sprintf("base_url: %q\nissuer: {type: anthropic, admin_key_store: \"file://%s?name=admin\", pool_store: \"file://%s?name=pool\"}\nprobe: {type: none}\n", api.URL(), admin, filepath.Join(dir, "pool.json")))
}

// `keywarden status` counts only the pool keys a draw can use and lists
// the others with why, and the ones that expire, by fingerprint and id.
func TestStatusListsPoolKeys(t *testing.T) {
	api := anthropictest.Start(t)
	cur := api.AddKey("", anthropictest.StatusActive)
	dead := api.AddKey("", anthropictest.StatusArchived)
	soon := api.AddKey("", anthropictest.StatusInactive)
	if err := api.ExpireAt(soon.ID, time.Now().Add(5*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	fine := api.AddKey("", anthropictest.StatusInactive)
	e := anthropicEnv(t, api)
	if err := e.st.PutByHand(context.Background(), "prod", []byte(cur.Value)); err != nil {
		t.Fatal(err)
	}
	for _, k := range []anthropictest.Key{dead, soon, fine} {
		if _, _, code := run(t, k.Value, "pool", "add", "prod", "--config", e.cfg); code != 0 {
			t.Fatalf("pool add: exit %d", code)
		}
	}
	out, stderr, code := run(t, "", "status", "--config", e.cfg)
	fp := func(k anthropictest.Key) string { return providers.NewSecret(k.Value).Fingerprint() }
	for _, want := range []string{
		"2 keys available",
		fp(dead) + " " + dead.ID + ": unusable, is archived",
		fp(soon) + " " + soon.ID + ": expires ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q: exit %d\n%s\n%s", want, code, out, stderr)
		}
	}
	if strings.Contains(out, fp(fine)) {
		t.Errorf("a usable key that never expires is listed:\n%s", out)
	}
	for _, k := range []anthropictest.Key{cur, dead, soon, fine} {
		if strings.Contains(out+stderr, k.Value) {
			t.Fatal("a key value was printed")
		}
	}
}

// TestRotationCommandsInputErrors: flags and configs the rotation commands
// refuse, each with exit 2 and a message that names the fix (not another
// command's prefix).
func TestRotationCommandsInputErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kw.yaml")
	if err := os.WriteFile(cfg, []byte(`keys: {prod: {store: "file://`+filepath.Join(dir, "keys.json")+`?name=prod"}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"key-id", "prod", "apikey_01X"}, "keys.prod: no rotation section (rotated keys: none)"},
		{[]string{"audit"}, "keys: no key has a rotation section"},
		{[]string{"audit", "--expiring-within", "-5h"}, "audit: --expiring-within -5h0m0s"},
		{[]string{"rotate", "--dry-run", "--timeout", "-1s"}, "rotate: --timeout -1s"},
	} {
		_, stderr, code := run(t, "", append(tc.args, "--config", cfg)...)
		if code != cli.ExitConfig || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "rotate: key") {
			t.Errorf("%v: exit %d %q, want exit 2 naming %q", tc.args, code, stderr, tc.want)
		}
	}
}
