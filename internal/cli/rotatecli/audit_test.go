package rotatecli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/anthropictest"
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
	dir := t.TempDir()
	admin := filepath.Join(dir, "admin.json")
	poolPath := filepath.Join(dir, "pool.json")
	if err := file.New(admin).PutByHand(context.Background(), "admin", []byte(api.AdminKey())); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, fmt.Sprintf("base_url: %q\nissuer: {type: anthropic, admin_key_store: \"file://%s?name=admin\", pool_store: \"file://%s?name=pool\"}\nprobe: {type: none}\n", api.URL(), admin, poolPath))
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
