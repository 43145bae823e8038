package rotatecli_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/cli/rotatecli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/rotation"
)

// killedRun leaves e's key in a rotation whose holder ("other-pod") died
// after recording probing: its lease is live.
func killedRun(t *testing.T, e *env) {
	t.Helper()
	c, err := config.Load(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := rotatecli.Build(context.Background(), c, rotatecli.BuildOptions{Holder: "other-pod",
		AfterStep: func(_ context.Context, _ string, b rotation.Boundary) error {
			if b == rotation.AfterRecordProbing {
				return errors.New("killed")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, _ = r.Run(context.Background(), "prod", rotation.RunOptions{Force: true})
}

// TestBreakLeaseCLI: after a kill -9, every run exits 11 until the lease
// runs out; `rotate --break-lease` frees it at once, logs whose it was, and
// finishes the rotation.
func TestBreakLeaseCLI(t *testing.T) {
	e := newEnv(t, "issuer: {type: random, prefix: kw-}\n")
	e.seed(oldKey)
	killedRun(t, e)
	for _, args := range [][]string{nil, {"--force"}, {"--abandon"}} {
		if _, _, code := run(t, "", append([]string{"rotate", "--config", e.cfg}, args...)...); code != rotation.ExitConflict {
			t.Fatalf("rotate %v under the dead holder's lease: exit %d, want 11", args, code)
		}
	}
	out, stderr, code := run(t, "", "rotate", "--config", e.cfg, "--break-lease")
	if code != 0 || !strings.Contains(out, "prod: rotated") {
		t.Fatalf("--break-lease: exit %d\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "rotation lease broken") || !strings.Contains(stderr, "holder=other-pod") || !strings.Contains(stderr, "lease_until=") {
		t.Fatalf("the break is not logged with the holder and its expiry:\n%s", stderr)
	}
	if cur := e.current(); cur == oldKey || !strings.HasPrefix(cur, "kw-") {
		t.Fatal("not rotated")
	}
	if rec := e.record(); rec["phase"] != "grace" || rec["holder"] != "" {
		t.Fatalf("record %v", rec)
	}
}

// TestKeyIDCLI: `keywarden key-id` attaches an id to CURRENT through the
// rotation record; status shows it; bad input exits 2.
func TestKeyIDCLI(t *testing.T) {
	e := newEnv(t, "issuer: {type: random}\n")
	e.seed(oldKey)
	out, stderr, code := run(t, "", "key-id", "prod", "kid_0123", "--stage", "current", "--config", e.cfg)
	if code != 0 || !strings.Contains(out, "prod: current version 1 (") || !strings.Contains(out, "has key id kid_0123") {
		t.Fatalf("key-id: exit %d\n%s\n%s", code, out, stderr)
	}
	out, _, code = run(t, "", "status", "--config", e.cfg, "--json")
	var st []rotation.KeyStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || st[0].Current == nil || st[0].Current.KeyID != "kid_0123" {
		t.Fatalf("status after key-id: exit %d %v: %s", code, err, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"key-id", "prod", "kid_1", "--stage", "sideways"}, `key-id: --stage "sideways": want current, previous or pending`},
		{[]string{"key-id", "prod", "kid_1", "--stage", "previous"}, "rotation: prod has no PREVIOUS version"},
		{[]string{"key-id", "prod", "kid 1"}, "rotation: the key id given is not an issuer key id (providers: key id holds white space at byte 3"},
	} {
		_, stderr, code := run(t, "", append(tc.args, "--config", e.cfg)...)
		if code != cli.ExitConfig || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, want 2 with %q: %s", tc.args, code, tc.want, stderr)
		}
	}
	if cur := e.current(); cur != oldKey {
		t.Fatal("key-id changed CURRENT")
	}
}

// TestKeyIDInput: a key pasted by mistake as key-id's ID is refused (exit
// 2) before anything is written, and printed nowhere: not on stdout (text
// or --json), not in the record, not in status.
func TestKeyIDInput(t *testing.T) {
	e := newEnv(t, "issuer: {type: random}\n")
	e.seed(oldKey)
	pasted := string(providertest.FakeKey())
	all := ""
	for _, args := range [][]string{nil, {"--json"}} {
		out, stderr, code := run(t, "", append([]string{"key-id", "prod", pasted, "--config", e.cfg}, args...)...)
		all += out + stderr
		if code != cli.ExitConfig || !strings.Contains(stderr, "not an issuer key id") {
			t.Errorf("key-id KEY %v: exit %d, want 2\n%s", args, code, strings.ReplaceAll(stderr, pasted[13:], "<the key>"))
		}
	}
	if _, ok := e.record()["key_ids"]; ok {
		t.Error("the key was recorded as an id")
	}
	out, stderr, _ := run(t, "", "status", "--config", e.cfg, "--json")
	all += out + stderr
	if strings.Contains(all, pasted) || strings.Contains(all, pasted[13:]) {
		t.Fatal("the key given as an id was printed")
	}
}

// TestStatusWithoutRotation: a key without a rotation section shows its
// versions (it exited 2 naming `rotate`).
func TestStatusWithoutRotation(t *testing.T) {
	e := newEnv(t, "issuer: {type: random}\n")
	e.seed(oldKey)
	doc := fmt.Sprintf("keys:\n  plain:\n    store: \"file://%s?name=prod\"\n", e.store)
	cfg := filepath.Join(e.dir, "plain.yaml")
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--key", "plain"}, nil} {
		out, stderr, code := run(t, "", append([]string{"status", "--config", cfg}, args...)...)
		if code != 0 || !strings.Contains(out, "plain (no rotation section: versions only)") || !strings.Contains(out, "version 1") ||
			!strings.Contains(out, "sha256:") || strings.Contains(out, "rotate") {
			t.Fatalf("status %v: exit %d\n%s\n%s", args, code, out, stderr)
		}
		if strings.Contains(out+stderr, oldKey) {
			t.Fatal("a key value was printed")
		}
	}
}

// TestErrorChains: each layer of a failure's message is named once
// ("rotation: prod: rotation: ..." is gone); the full lines are asserted.
func TestErrorChains(t *testing.T) {
	t.Run("lease held", func(t *testing.T) {
		e := newEnv(t, "issuer: {type: random}\n")
		e.seed(oldKey)
		killedRun(t, e)
		out, _, code := run(t, "", "rotate", "--config", e.cfg)
		want := "prod: conflict (exit 11): rotation: prod: a rotation of this key is in progress: phase probing, held by other-pod until "
		if code != rotation.ExitConflict || !strings.HasPrefix(out, want) || strings.Count(out, "rotation: ") != 1 {
			t.Fatalf("exit %d\n got %s\nwant %s…", code, out, want)
		}
	})
	t.Run("issuer", func(t *testing.T) {
		e := newEnv(t, "issuer: {type: exec, command: [/bin/false]}\n")
		e.seed(oldKey)
		out, _, code := run(t, "", "rotate", "--config", e.cfg)
		want := "prod: issuer_error (exit 13): rotation: prod: create a key: exec: /bin/false: exit status 1\n"
		if code != rotation.ExitIssuer || out != want {
			t.Fatalf("exit %d\n got %q\nwant %q", code, out, want)
		}
	})
	t.Run("corrupt record", func(t *testing.T) {
		e := newEnv(t, "issuer: {type: random}\n")
		e.seed(oldKey)
		if _, err := e.st.WriteRecord(context.Background(), "prod", "", map[string]string{"v": "1", "phase": "dancing"}); err != nil {
			t.Fatal(err)
		}
		out, _, code := run(t, "", "rotate", "--config", e.cfg)
		want := "prod: store_error (exit 12): rotation: prod: decode the rotation record: the rotation record is corrupt (fields [phase]); inspect it in the store, or delete it to start over\n"
		if code != rotation.ExitStore || out != want {
			t.Fatalf("exit %d\n got %q\nwant %q", code, out, want)
		}
	})
}
