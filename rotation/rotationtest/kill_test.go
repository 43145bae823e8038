package rotationtest_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/rotation"
	rexec "github.com/keywarden/keywarden/rotation/exec"
)

// killRotator returns a rotator of key "prod" in the file store at path,
// with the exec issuer keeping its state in dir.
func killRotator(t *testing.T, store, state string, afterStep func(context.Context, string, rotation.Boundary) error) *rotation.Rotator {
	t.Helper()
	script, err := filepath.Abs("testdata/issuer.sh")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := rexec.New(rexec.Options{KeyName: "prod", Command: []string{script}, Env: []string{"STATE=" + state}})
	if err != nil {
		t.Fatal(err)
	}
	weekly, _ := rotation.ParseSchedule("@weekly")
	r, err := rotation.New(rotation.Options{Holder: "pod-0", AfterStep: afterStep, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		&rotation.Key{Name: "prod", Store: file.New(store), Secret: "prod", Issuer: iss, Schedule: weekly})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestKillHelper is the child process of TestKillAtEveryBoundary: it runs a
// rotation and SIGKILLs itself at the boundary KW_KILL_AT.
func TestKillHelper(t *testing.T) {
	at := os.Getenv("KW_KILL_AT")
	if at == "" {
		t.Skip("helper process for TestKillAtEveryBoundary")
	}
	r := killRotator(t, os.Getenv("KW_STORE"), os.Getenv("KW_STATE"), func(_ context.Context, _ string, b rotation.Boundary) error {
		if string(b) == at {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
		return nil
	})
	_, err := r.Run(context.Background(), "prod", rotation.RunOptions{Force: true})
	t.Fatalf("the run was not killed at %s: %v", at, err)
}

// TestKillAtEveryBoundary kills a real rotator process with SIGKILL at each
// step boundary, then runs a new one: the rotation converges, the old key
// is revoked exactly once, one key is minted.
func TestKillAtEveryBoundary(t *testing.T) {
	for _, b := range rotation.Boundaries {
		if b == rotation.AfterActivate {
			continue // the exec issuer activates nothing
		}
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			store, state := filepath.Join(dir, "keys.json"), filepath.Join(dir, "issuer")
			if err := os.Mkdir(state, 0o700); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			st := file.New(store)
			old := providers.NewSecret("sk-ant-api03-oldkeyoldkeyoldkeyoldkey0000AA")
			if err := st.PutByHand(ctx, "prod", providers.EncodePayload(providers.Payload{Key: old, KeyID: "apikey_old"})); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), "KW_KILL_AT="+string(b), "KW_STORE="+store, "KW_STATE="+state)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("the child was not killed: %v\n%s", err, out)
			}
			res, err := killRotator(t, store, state, nil).Run(ctx, "prod", rotation.RunOptions{})
			if err != nil {
				t.Fatalf("resumed run: %v", err)
			}
			want := rotation.OutcomeRevoked
			if b == rotation.AfterDone {
				want = rotation.OutcomeNothing
			}
			if res.Outcome != want {
				t.Fatalf("resumed run: %s: %s", res.Outcome, res.Message)
			}
			cur, err := st.Read(ctx, "prod", driver.Current)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := providers.DecodePayload(cur.Value, "")
			if p.KeyID != "apikey_k0" {
				t.Fatalf("CURRENT is %q, want the one minted key apikey_k0", p.KeyID)
			}
			if _, err := os.Stat(filepath.Join(state, "token.")); err == nil {
				t.Fatal("minted without a token")
			}
			if m, _ := filepath.Glob(filepath.Join(state, "token.*")); len(m) != 1 {
				t.Fatalf("%d keys minted, want 1", len(m))
			}
			calls, _ := os.ReadFile(filepath.Join(state, "revoke.calls"))
			revokes := strings.Fields(string(calls))
			if len(revokes) == 0 || revokes[0] != "apikey_old" || (len(revokes) > 1 && b != rotation.AfterRevoke) || len(revokes) > 2 {
				t.Fatalf("revoke calls %v", revokes)
			}
			if _, err := os.Stat(filepath.Join(state, "revoked.apikey_k0")); err == nil {
				t.Fatal("CURRENT was revoked")
			}
			if _, err := st.ReadPending(ctx, "prod"); err == nil {
				t.Fatal("PENDING left behind")
			}
		})
	}
}
