package rotatecli_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/rotation"
)

// TestLeftValidCLI: status lists the keys rotations left valid (text and
// JSON); --revoke-left-valid revokes the one with an id and keeps the one
// without (exit 11, saying how to clear it); --forget-left-valid drops it;
// no output names a key value.
func TestLeftValidCLI(t *testing.T) {
	e := newEnv(t, "issuer: {type: random, prefix: kw-}\n")
	e.seed(oldKey)
	lv, _ := json.Marshal([]rotation.LeftValidKey{
		{KeyID: "kid_left", Fingerprint: "sha256:0000aaaa", Version: "7", Outcome: rotation.OutcomeRolledBack},
		{Fingerprint: "sha256:1111bbbb", Version: "3", Outcome: rotation.OutcomeNotRevoked},
	})
	rec, err := e.st.ReadRecord(context.Background(), "prod")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.WriteRecord(context.Background(), "prod", rec.Rev, map[string]string{"v": "1", "phase": "idle", "left_valid": string(lv)}); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := run(t, "", "status", "--config", e.cfg)
	if code != 0 || !strings.Contains(out, "left valid    2 keys rotations left VALID") || !strings.Contains(out, "sha256:0000aaaa  key id kid_left  version 7: rolled_back") ||
		!strings.Contains(out, "no issuer id") || !strings.Contains(out, "--forget-left-valid=sha256:1111bbbb") {
		t.Fatalf("status: exit %d\n%s\n%s", code, out, stderr)
	}
	out, _, _ = run(t, "", "status", "--config", e.cfg, "--json")
	var st []rotation.KeyStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st[0].LeftValid) != 2 || st[0].LeftValid[0].KeyID != "kid_left" {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	all := out
	out, stderr, code = run(t, "", "rotate", "--config", e.cfg, "--revoke-left-valid")
	all += out + stderr
	if code != rotation.ExitConflict || !strings.Contains(out, "revoked and dropped from the list: sha256:0000aaaa") || !strings.Contains(out, "keywarden cannot revoke it") {
		t.Fatalf("--revoke-left-valid: exit %d\n%s\n%s", code, out, stderr)
	}
	// Every run says what is left, for a CronJob whose output and log are
	// all there is (the gauge is the daemon's, or pushed with --push-gateway).
	out, stderr, code = run(t, "", "rotate", "--config", e.cfg, "--key", "prod")
	all += out + stderr
	if code != 0 || !strings.Contains(out, "prod: keys rotations left valid at the issuer: 1 ") ||
		!strings.Contains(stderr, "keys that rotations left valid are still valid at the issuer") || !strings.Contains(stderr, "sha256:1111bbbb") {
		t.Fatalf("rotate with a key left valid: exit %d\n%s\n%s", code, out, stderr)
	}
	if _, stderr, code := run(t, "", "rotate", "--config", e.cfg, "--forget-left-valid=sha256:1111bbbb"); code != 2 || !strings.Contains(stderr, "needs --key") {
		t.Fatalf("--forget-left-valid without --key: exit %d %s", code, stderr)
	}
	if _, stderr, code := run(t, "", "rotate", "--config", e.cfg, "--key", "prod", "--abandon", "--revoke-left-valid"); code != 2 || !strings.Contains(stderr, "go alone") {
		t.Fatalf("--revoke-left-valid --abandon: exit %d %s", code, stderr)
	}
	out, stderr, code = run(t, "", "rotate", "--config", e.cfg, "--key", "prod", "--forget-left-valid=sha256:1111bbbb", "--json")
	all += out + stderr
	if code != 0 || !strings.Contains(out, `"outcome":"left_valid_forgotten"`) {
		t.Fatalf("--forget-left-valid: exit %d\n%s\n%s", code, out, stderr)
	}
	out, _, _ = run(t, "", "status", "--config", e.cfg)
	all += out
	if strings.Contains(out, "left valid") {
		t.Fatalf("status after clearing:\n%s", out)
	}
	if strings.Contains(all, oldKey) || !strings.Contains(all, "sha256:") {
		t.Fatal("a key value was printed")
	}
}

// TestForgetLeftValidInput: an empty --forget-left-valid= (an unset shell
// variable) is refused, not read as "no flag" (which ran a rotation); a
// key pasted by mistake as its value is never printed, in text or JSON.
func TestForgetLeftValidInput(t *testing.T) {
	e := newEnv(t, "issuer: {type: random, prefix: kw-}\n")
	e.seed(oldKey)
	before, err := e.st.ReadRecord(context.Background(), "prod")
	if err != nil {
		t.Fatal(err)
	}
	// And --key= (which would rotate every key), --config= (which would
	// use the embedded default store): the rule is every command's.
	for _, args := range [][]string{{"--key", "prod", "--forget-left-valid="}, {"--key="}, {"--key", "prod", "--config="}} {
		_, stderr, code := run(t, "", append([]string{"rotate", "--config", e.cfg}, args...)...)
		flag, _, _ := strings.Cut(args[len(args)-1], "=")
		if code != 2 || !strings.Contains(stderr, flag+" is empty") {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		if after, err := e.st.ReadRecord(context.Background(), "prod"); err != nil || after.Rev != before.Rev {
			t.Fatalf("%v changed the record (a rotation ran?): %v", args, err)
		}
	}
	const pasted = "sk-ant-api03-pasted-by-mistake-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"
	for _, args := range [][]string{nil, {"--json"}} {
		out, stderr, code := run(t, "", append([]string{"rotate", "--config", e.cfg, "--key", "prod", "--forget-left-valid=" + pasted}, args...)...)
		if code == 0 || strings.Contains(out+stderr, pasted) || strings.Contains(out+stderr, "pasted-by-mistake") {
			t.Fatalf("--forget-left-valid=KEY %v: exit %d, the key printed?\n%s\n%s", args, code, out, stderr)
		}
	}
}
