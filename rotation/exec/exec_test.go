package exec_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/exec"
)

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cmd.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func issuer(t *testing.T, o exec.Options) *exec.Issuer {
	t.Helper()
	i, err := exec.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func testIssuer(t *testing.T) (*exec.Issuer, string) {
	state := t.TempDir()
	abs, _ := filepath.Abs("testdata/issuer.sh")
	return issuer(t, exec.Options{KeyName: "prod", Command: []string{abs}, Env: []string{"STATE=" + state}}), state
}

func TestCreateRevoke(t *testing.T) {
	i, state := testIssuer(t)
	ctx := context.Background()
	c1, err := i.Create(ctx, "tok-1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c1.Key.Reveal(), "sk-ant-api03-exectest") || c1.KeyID != "apikey_0" {
		t.Fatalf("created %s %q", c1.Key.Fingerprint(), c1.KeyID)
	}
	again, err := i.Create(ctx, "tok-1")
	if err != nil || !again.Key.Equal(c1.Key) {
		t.Fatalf("the token did not reach the command: %v", err)
	}
	if err := i.Revoke(ctx, c1); err != nil {
		t.Fatal(err)
	}
	revoked, _ := os.ReadFile(filepath.Join(state, "revoked"))
	if strings.TrimSpace(string(revoked)) != "apikey_0" {
		t.Fatalf("revoked %q", revoked)
	}
	var in map[string]string
	b, _ := os.ReadFile(filepath.Join(state, "revoke.stdin"))
	if err := json.Unmarshal(b, &in); err != nil || in["key_id"] != "apikey_0" || in["api_key"] != c1.Key.Reveal() || in["action"] != "revoke" {
		t.Fatalf("revoke stdin: %v", err)
	}
	for _, action := range []string{"create", "revoke"} {
		argv, err := os.ReadFile(filepath.Join(state, "argv."+action))
		if err != nil {
			if runtime.GOOS == "linux" {
				t.Fatalf("%s: the script could not record its argv from /proc: %v", action, err)
			}
			t.Skipf("no /proc on %s: %v", runtime.GOOS, err)
		}
		if strings.Contains(string(argv), c1.Key.Reveal()) || strings.Contains(string(argv), "tok-1") || strings.Contains(string(argv), "apikey_0") {
			t.Fatalf("%s: a value reached argv", action)
		}
	}
}

func TestErrors(t *testing.T) {
	const leaked = "sk-ant-api03-thisisaleakedkeyvalue0123456789AA"
	ctx := context.Background()
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"exit status", `echo "upstream said no to ` + leaked + `" >&2; exit 3`, []string{"exit status 3", "upstream said no", "[redacted"}},
		{"not JSON", `echo "api_key=` + leaked + `"`, []string{"stdout is not a JSON object"}},
		{"no api_key", `echo '{"key_id": "x"}'`, []string{"stdout has no api_key"}},
		{"too large", `head -c 100000 /dev/zero | tr '\0' a`, []string{"larger than"}},
		{"failed after printing", `echo '{"api_key": "` + leaked + `"}'; echo "` + leaked + ` was rejected" >&2; exit 1`, []string{"exit status 1", "was rejected"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := issuer(t, exec.Options{Command: []string{script(t, tc.body)}}).Create(ctx, "tok")
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), leaked) || strings.Contains(err.Error(), "thisisaleaked") {
				t.Fatalf("the error leaks the key: %s", providers.Fingerprint(err.Error()))
			}
		})
	}
}

// TestErrorLongStderr: a command that printed a key to stderr (a script
// under `set -x`) and then more than the 4 KiB of stderr that an error
// keeps: the cut falls inside the key, whose end redaction cannot tell
// from other text; the error drops the word the cut fell in.
func TestErrorLongStderr(t *testing.T) {
	key := string(providertest.FakeKey())
	// After the key: "\n", 4075 bytes, "\n": the last 4096 bytes start 19
	// bytes before the key's end.
	body := `printf '+ KEY=%s\n' "` + key + `" >&2; head -c 4075 /dev/zero | tr '\0' x >&2; echo >&2; exit 1`
	_, err := issuer(t, exec.Options{Command: []string{script(t, body)}}).Create(context.Background(), "tok")
	if err == nil || !strings.Contains(err.Error(), "exit status 1") || !strings.Contains(err.Error(), "xxxx") {
		t.Fatalf("want exit status 1 and the stderr's tail, got %d bytes", len(fmt.Sprint(err)))
	}
	if strings.Contains(err.Error(), key[len(key)-16:]) {
		t.Fatalf("the error holds the end of the key: %s", providers.Fingerprint(err.Error()))
	}
}

// TestTimeout checks that a hung command and its children are killed.
func TestTimeout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	body := `sleep 300 & echo $! > ` + pidFile + `; wait`
	i := issuer(t, exec.Options{Command: []string{script(t, body)}, Timeout: 300 * time.Millisecond})
	_, err := i.Create(context.Background(), "tok")
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("want a timeout, got %v", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the command's child %d survived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []exec.Options{{}, {Command: []string{""}}, {Command: []string{"x"}, Env: []string{"NOEQUALS"}}} {
		if _, err := exec.New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// TestRotate runs a whole rotation with the exec issuer on a file store.
func TestRotate(t *testing.T) {
	i, state := testIssuer(t)
	st := file.New(filepath.Join(t.TempDir(), "keys.json"))
	ctx := context.Background()
	if err := st.PutByHand(ctx, "prod", providers.EncodePayload(providers.Payload{Key: providers.NewSecret("sk-ant-api03-oldkeyoldkeyoldkeyoldkeyAA"), KeyID: "apikey_old"})); err != nil {
		t.Fatal(err)
	}
	r, err := rotation.New(rotation.Options{}, &rotation.Key{Name: "prod", Store: st, Secret: "prod", Issuer: i})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Run(ctx, "prod", rotation.RunOptions{Force: true})
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("run: %v %+v", err, res)
	}
	v, _ := st.Read(ctx, "prod", driver.Current)
	p, _ := providers.DecodePayload(v.Value, "")
	if p.KeyID != "apikey_0" {
		t.Fatalf("CURRENT key id %q", p.KeyID)
	}
	revoked, _ := os.ReadFile(filepath.Join(state, "revoked"))
	if strings.TrimSpace(string(revoked)) != "apikey_old" {
		t.Fatalf("revoked %q, want apikey_old", revoked)
	}
}

// TestRotateRefusesUnreadableKey: a command that prints a key a consumer
// could not read (a non-ASCII character, a space, a line break) fails the
// rotation before the key is stored, and the key it created is revoked
// with the revoke command, by id and value; CURRENT is untouched. (Such a
// key was stored as PENDING and stranded the rotation, and the command's
// key was never revoked.)
func TestRotateRefusesUnreadableKey(t *testing.T) {
	for name, key := range map[string]string{
		"non-ASCII":  `sk-ant-api03-AUDIT\u00e9xxxxxxxxxxxxxxxxAA`,
		"space":      `kw key xxxxxxxxxxxxxxxx`,
		"line break": `sk-ant-api03-AUDIT\nxxxxxxxxxxxxxxxxAA`,
	} {
		t.Run(name, func(t *testing.T) {
			state := t.TempDir()
			cmd := script(t, `set -eu
case "$KEYWARDEN_ACTION" in
create) printf '{"api_key": "%s", "key_id": "apikey_bad"}\n' "$BAD_KEY" ;;
revoke) cat > "$STATE/revoke.stdin"; echo "$KEYWARDEN_KEY_ID" >> "$STATE/revoked" ;;
esac`)
			i := issuer(t, exec.Options{KeyName: "prod", Command: []string{cmd}, Env: []string{"STATE=" + state, "BAD_KEY=" + key}})
			st := file.New(filepath.Join(t.TempDir(), "keys.json"))
			ctx := context.Background()
			old := providers.EncodePayload(providers.Payload{Key: providers.NewSecret("sk-ant-api03-oldkeyoldkeyoldkeyoldkeyAA"), KeyID: "apikey_old"})
			if err := st.PutByHand(ctx, "prod", old); err != nil {
				t.Fatal(err)
			}
			r, err := rotation.New(rotation.Options{}, &rotation.Key{Name: "prod", Store: st, Secret: "prod", Issuer: i})
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.Run(ctx, "prod", rotation.RunOptions{Force: true})
			if rotation.KindOf(err) != rotation.KindIssuer || !strings.Contains(err.Error(), "could not read") {
				t.Fatalf("run: %v, want an issuer error saying the key cannot be read", err)
			}
			if strings.Contains(err.Error(), "xxxxxxxx") {
				t.Fatalf("the error holds the key: %s", providers.Fingerprint(err.Error()))
			}
			revoked, _ := os.ReadFile(filepath.Join(state, "revoked"))
			if strings.TrimSpace(string(revoked)) != "apikey_bad" {
				t.Fatalf("revoked %q, want apikey_bad", revoked)
			}
			var in map[string]string
			b, _ := os.ReadFile(filepath.Join(state, "revoke.stdin"))
			if err := json.Unmarshal(b, &in); err != nil || !strings.Contains(in["api_key"], "xxxxxxxx") {
				t.Fatalf("revoke stdin does not carry the key: %v", err)
			}
			if _, err := st.ReadPending(ctx, "prod"); err == nil {
				t.Fatal("the key was stored as PENDING")
			}
			if v, err := st.Read(ctx, "prod", driver.Current); err != nil || string(v.Value) != string(old) {
				t.Fatalf("CURRENT changed: %v", err)
			}
		})
	}
}
