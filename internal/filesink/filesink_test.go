package filesink_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keywarden/keywarden/internal/filesink"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	keyA = "sk-ant-api03-FILESINKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-aaaa"
	keyB = "sk-ant-api03-FILESINKBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB-bbbb"
)

func rotate(t *testing.T, st *file.Store, val string) {
	t.Helper()
	ctx := context.Background()
	cur := ""
	if v, err := st.Read(ctx, "prod", "CURRENT"); err == nil {
		cur = v.ID
	}
	p, err := st.PutPending(ctx, "prod", fmt.Sprintf("fs-%d", time.Now().UnixNano()), []byte(val))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Promote(ctx, "prod", p.ID, cur); err != nil {
		t.Fatal(err)
	}
}

// newSource returns a temporary directory, a file store in it whose key
// "prod" holds keyA, and a Source on it without background refresh (closed
// by the test's cleanup).
func newSource(t *testing.T) (string, *file.Store, *providers.Source) {
	t.Helper()
	dir := t.TempDir()
	st := file.New(filepath.Join(dir, "keys.json"))
	rotate(t, st, keyA)
	src, err := providers.New(context.Background(), st, "prod", providers.Options{Refresh: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return dir, st, src
}

func TestSinkFollowsTheKey(t *testing.T) {
	dir, st, src := newSource(t)
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&logs, &logMu}, nil))
	out := filepath.Join(dir, "run", "anthropic-key")
	if err := os.Mkdir(filepath.Dir(out), 0o700); err != nil {
		t.Fatal(err)
	}
	sink, err := filesink.Start(out, src, filesink.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	check := func(want string) {
		t.Helper()
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want {
			t.Fatalf("file holds %s, want %s", providers.Fingerprint(string(b)), providers.Fingerprint(want))
		}
		fi, _ := os.Stat(out)
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %04o, want 0600", fi.Mode().Perm())
		}
	}
	check(keyA)
	rotate(t, st, keyB)
	if _, err := src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	check(keyB)
	// No temporary file is left behind.
	ents, _ := os.ReadDir(filepath.Dir(out))
	if len(ents) != 1 {
		t.Fatalf("%d files in the sink's directory, want 1", len(ents))
	}
	sink.Close()
	sink.Close()
	rotate(t, st, keyA)
	if _, err := src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	check(keyB) // closed: no longer follows
	logMu.Lock()
	defer logMu.Unlock()
	if strings.Contains(logs.String(), "FILESINK") {
		t.Fatal("a log line holds the key")
	}
	if !strings.Contains(logs.String(), "fingerprint=sk-ant-api03-") {
		t.Fatalf("no fingerprint logged: %s", logs.String())
	}
}

func TestWriteErrorsHoldNoKey(t *testing.T) {
	err := filesink.Write(filepath.Join(t.TempDir(), "missing-dir", "k"), providers.NewSecret(keyA))
	if err == nil || strings.Contains(err.Error(), "FILESINK") {
		t.Fatalf("got %v, want an error without the key", err)
	}
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// A change notified while Start writes the first key is written too: Start
// subscribes before its first write. Each round starts a Sink while a
// Refresh installs a new key; without the ordering, most rounds leave the
// file on the old key.
func TestStartKeepsAChangeDuringTheFirstWrite(t *testing.T) {
	dir, st, src := newSource(t)
	out := filepath.Join(dir, "k")
	missed := 0
	const rounds = 100
	for i := range rounds {
		v := keyA
		if i%2 == 0 {
			v = keyB
		}
		rotate(t, st, v)
		done := make(chan error, 1)
		go func() { _, err := src.Refresh(context.Background()); done <- err }()
		sink, err := filesink.Start(out, src, filesink.Options{Logger: slog.New(slog.DiscardHandler)})
		if rerr := <-done; rerr != nil {
			t.Fatal(rerr)
		}
		if err != nil {
			t.Fatal(err)
		}
		// Refresh returned: its subscribers ran, so the file must hold
		// the key the Source holds now.
		if b, _ := os.ReadFile(out); string(b) != src.Key().Reveal() {
			missed++
		}
		sink.Close()
		if err := os.Remove(out); err != nil {
			t.Fatal(err)
		}
	}
	if missed > 0 {
		t.Fatalf("%d of %d Starts left the file on the old key", missed, rounds)
	}
}

// A write that fails is retried until the file holds the current key, and
// CheckHealth reports the failure meanwhile; the file is also read back on
// every check, so a file lost without a key change (its directory
// recreated) is written again.
func TestSinkConvergesAfterAFailure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		breaks func(dir string) error
		change bool // a key change lands while the file cannot be written
	}{
		{"directory removed, key changed", os.RemoveAll, true},
		{"directory removed, key unchanged", os.RemoveAll, false},
		{"parent replaced by a file, key changed", func(dir string) error {
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
			return os.WriteFile(dir, nil, 0o600)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, st, src := newSource(t)
			run := filepath.Join(dir, "run")
			if err := os.Mkdir(run, 0o700); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(run, "anthropic-key")
			sink, err := filesink.Start(out, src, filesink.Options{Check: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			if err := sink.CheckHealth(); err != nil {
				t.Fatalf("after the first write: %v", err)
			}
			if err := tc.breaks(run); err != nil {
				t.Fatal(err)
			}
			want := keyA
			if tc.change {
				want = keyB
				rotate(t, st, keyB)
				if _, err := src.Refresh(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "CheckHealth to report the failed write", func() bool { return sink.CheckHealth() != nil })
			if err := sink.CheckHealth(); strings.Contains(err.Error(), "FILESINK") {
				t.Fatal("the health error holds the key")
			}
			if err := os.RemoveAll(run); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(run, 0o700); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the file to hold the current key", func() bool {
				b, _ := os.ReadFile(out)
				return string(b) == want
			})
			waitFor(t, "CheckHealth to recover", func() bool { return sink.CheckHealth() == nil })
			if time.Since(sink.LastSuccess()) > time.Minute {
				t.Fatalf("LastSuccess %v, want recent", sink.LastSuccess())
			}
		})
	}
}

// waitFor polls cond until it holds, for at most 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestKilledWriteLeavesNoKeyCopy: a process killed between Write's write
// of its temporary file and the rename (a real exit, in a child process)
// leaves that file, holding the key, beside the sink's path. A sink on the
// path removes it once it is older than a write could be, and leaves a
// younger one (a live writer's) alone.
func TestKilledWriteLeavesNoKeyCopy(t *testing.T) {
	const envPath = "KEYWARDEN_FILESINK_KILL_PATH"
	if p := os.Getenv(envPath); p != "" {
		filesink.SetAfterTempWrite(func() { os.Exit(86) })
		_ = filesink.Write(p, providers.NewSecret(keyB))
		os.Exit(1) // not reached: the hook exits
	}
	dir, _, src := newSource(t)
	path := filepath.Join(dir, "api-key")
	temps := func() []string {
		t.Helper()
		m, err := filepath.Glob(filepath.Join(dir, ".api-key.tmp-*"))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWriteLeavesNoKeyCopy$", "-test.count=1")
		cmd.Env = append(os.Environ(), envPath+"="+path)
		if err := cmd.Run(); err == nil || cmd.ProcessState.ExitCode() != 86 {
			t.Fatalf("child: %v; want exit 86 between the write and the rename", err)
		}
	}
	left := temps()
	if len(left) != 2 {
		t.Fatalf("after two killed writes: temporary files %q, want 2", left)
	}
	if b, err := os.ReadFile(left[0]); err != nil || string(b) != keyB {
		t.Fatalf("a killed write's temporary file does not hold its key (err %v): the crash point is not where this test thinks", err)
	}
	old := time.Now().Add(-filesink.StaleTemp - time.Second)
	if err := os.Chtimes(left[0], old, old); err != nil {
		t.Fatal(err)
	}
	s, err := filesink.Start(path, src, filesink.Options{Check: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := temps(); len(got) != 1 || got[0] != left[1] {
		t.Fatalf("after the sink's start: temporary files %q; want only the one younger than %v (%s)", got, filesink.StaleTemp, left[1])
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != keyA {
		t.Fatalf("the sink's file: err %v, holds the current key %v", err, string(b) == keyA)
	}
}
