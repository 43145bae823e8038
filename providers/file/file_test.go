package file_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/providertest/crashtest"
)

func TestConformance(t *testing.T) {
	st := file.New(filepath.Join(t.TempDir(), "keys.json"))
	providertest.Run(t, providertest.Harness{Stager: st, PutByHand: st.PutByHand})
}

func TestRefusesReadableByOthers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	st := file.New(path)
	ctx := context.Background()
	if err := st.PutByHand(ctx, "prod", []byte("sk-ant-api03-secretvalue-0123456789")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("store written with mode %04o, want 0600", fi.Mode().Perm())
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := st.Read(ctx, "prod", driver.Current)
		if !codes.Is(err, codes.PermissionDenied) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: got %v, want PermissionDenied telling to chmod 600", mode, err)
		}
	}
}

func TestMalformedFileDoesNotEcho(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	const secret = "sk-ant-api03-THISMUSTNOTLEAK0123456789"
	if err := os.WriteFile(path, []byte(`{"secrets": {"prod": "`+secret+`"`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := file.New(path).Read(context.Background(), "prod", driver.Current)
	if !codes.Is(err, codes.InvalidArgument) {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
	if strings.Contains(err.Error(), "THISMUSTNOTLEAK") {
		t.Fatalf("error echoes the file content: %v", err)
	}
}

func TestOpenURL(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.json")
	st := file.New(path)
	ctx := context.Background()
	if err := st.PutByHand(ctx, "prod", []byte(`{"api_key":"sk-ant-api03-abcdefghijklmnopqrstuvwxyz","key_id":"apikey_01"}`)); err != nil {
		t.Fatal(err)
	}
	src, err := providers.Open(ctx, "file://"+path+"?name=prod&refresh=1h", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if got := src.Current(); got.KeyID != "apikey_01" || got.Value.Reveal() != "sk-ant-api03-abcdefghijklmnopqrstuvwxyz" {
		t.Fatalf("opened key id %q fingerprint %s", got.KeyID, got.Fingerprint)
	}
	for _, tc := range []struct{ url, want string }{
		{"file://" + path, "no name parameter"},
		{"file://" + path + "?name=prod&colour=blue", "unknown parameter(s) colour"},
		{"file://" + path + "?name=missing", "not found"},
		{"file://" + path + "?name=prod&refresh=soon", "not a positive Go duration"},
	} {
		_, err := providers.Open(ctx, tc.url, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q): got %v, want an error containing %q", tc.url, err, tc.want)
		}
	}
}

// TestTwoProcessesShareAFile runs two Stores on one path, as two processes
// would, and checks the record CAS across them.
func TestTwoStoresShareAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	a, b := file.New(path), file.New(path)
	ctx := context.Background()
	r, err := a.WriteRecord(ctx, "k", "", map[string]string{"lease": "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteRecord(ctx, "k", "", map[string]string{"lease": "b"}); !codes.Is(err, codes.Aborted) {
		t.Fatalf("second store's stale write: %v, want Aborted", err)
	}
	got, err := b.ReadRecord(ctx, "k")
	if err != nil || got.Rev != r.Rev || got.Data["lease"] != "a" {
		t.Fatalf("b reads %+v, %v; want a's record", got, err)
	}
}

// TestParsePath: file://localhost/abs is /abs (RFC 8089; it read as the
// relative path localhost/abs), and any other host is refused with the
// right spellings (file://keys.json read as the relative path keys.json).
func TestParsePath(t *testing.T) {
	for raw, want := range map[string]string{
		"file:///tmp/x/keys.json":          "/tmp/x/keys.json",
		"file://localhost/tmp/x/keys.json": "/tmp/x/keys.json",
		"file://LocalHost/tmp/x/keys.json": "/tmp/x/keys.json",
		"file:/tmp/x/keys.json":            "/tmp/x/keys.json",
		"file:keys.json":                   "keys.json",
		"file:dir/keys.json":               "dir/keys.json",
		"file://keys.json":                 "write file:///ABSOLUTE/PATH (three slashes) or file:RELATIVE/PATH",
		"file://example.com/tmp/keys.json": `"example.com" is a host in the URL`,
		"file://localhost:80/tmp/k.json":   "is a host in the URL",
		"file://localhost":                 "no path",
		"file://":                          "no path",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := file.ParsePath(u)
		if strings.HasPrefix(want, "/") || !strings.Contains(want, " ") {
			if err != nil || got != want || file.PathOf(u) != want {
				t.Errorf("ParsePath(%s) = %q, %v; want %q", raw, got, err, want)
			}
			continue
		}
		if !codes.Is(err, codes.InvalidArgument) || !strings.Contains(err.Error(), want) || file.PathOf(u) != "" {
			t.Errorf("ParsePath(%s) = %q, %v; want InvalidArgument containing %q", raw, got, err, want)
		}
	}
	// Through Open, file://localhost/abs reads the file at /abs.
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := file.New(path).PutByHand(context.Background(), "prod", []byte("sk-ant-api03-abcdefghijklmnopqrstuvwxyz")); err != nil {
		t.Fatal(err)
	}
	src, err := providers.Open(context.Background(), "file://localhost"+path+"?name=prod", nil)
	if err != nil {
		t.Fatal(err)
	}
	src.Close()
}

// TestNotAStoreFile: a directory, a FIFO (whose open blocked for ever) and
// a missing file each say what they are.
func TestNotAStoreFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nonexistent.json")
	for path, want := range map[string]string{
		dir:     "is a directory, not a store file: name the JSON file in it, such as file://" + dir + "/keys.json?name=NAME",
		fifo:    "is not a regular file (a named pipe)",
		missing: "store file " + missing + " not found: it does not exist (yet); create it with the secret: keywarden put --store 'file://" + missing + "?name=prod' < key.txt",
	} {
		errc := make(chan error, 1)
		go func() {
			_, err := file.New(path).Read(context.Background(), "prod", driver.Current)
			errc <- err
		}()
		var err error
		select {
		case err = <-errc:
		case <-time.After(10 * time.Second): // a hang guard, not a speed claim
			t.Fatalf("Read of %s does not return", path)
		}
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "chmod") {
			t.Errorf("Read of %s: %v, want %q", path, err, want)
		}
	}
	// A relative path is spelt file:PATH in the advice.
	t.Chdir(dir)
	_, err := file.New("keys.json").Read(context.Background(), "prod", driver.Current)
	if err == nil || !strings.Contains(err.Error(), "--store 'file:keys.json?name=prod'") {
		t.Errorf("Read of a missing relative file: %v", err)
	}
}

// TestKilledWriterLeavesNoKeyCopy: a process killed between the write of
// its temporary file and the rename (a real exit, by crashtest's counter at
// the store's AfterIO hook) leaves that file beside the store, holding every
// key the store held; the next write removes it, and the store holds what
// it held before the killed write.
func TestKilledWriterLeavesNoKeyCopy(t *testing.T) {
	const pending = "sk-ant-api03-killedwriterPENDINGvalue-AA"
	if crashtest.IsChild() {
		c, err := crashtest.FromEnv()
		if err != nil {
			t.Fatal(err)
		}
		st := file.NewWithOptions(os.Getenv(crashtest.EnvPrefix+"PATH"), file.Options{AfterIO: c.TickFile})
		c.Arm()
		if _, err := st.PutPending(context.Background(), "k", "tok", []byte(pending)); err != nil {
			t.Fatal(err)
		}
		c.Report()
		os.Exit(0)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "keys[1].json") // glob characters are literal
	ctx := context.Background()
	st := file.New(path)
	if _, err := st.WriteRecord(ctx, "k", "", map[string]string{"phase": "idle"}); err != nil {
		t.Fatal(err)
	}
	res, err := crashtest.Spawn(ctx, "TestKilledWriterLeavesNoKeyCopy", []string{
		crashtest.EnvCase + "=file-temp", crashtest.EnvAt + "=1", crashtest.EnvPrefix + "PATH=" + path})
	if err != nil || !res.Crashed {
		t.Fatalf("child: %+v, %v; want a crash after the temporary file's write", res, err)
	}
	temps := func() []string {
		var out []string
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if file.Uses(path, filepath.Join(dir, e.Name())) == "temporary file" {
				out = append(out, e.Name())
			}
		}
		return out
	}
	left := temps()
	if len(left) != 1 {
		t.Fatalf("after the kill: temporary files %q, want the killed writer's one", left)
	}
	if b, err := os.ReadFile(filepath.Join(dir, left[0])); err != nil || !strings.Contains(string(b), "killedwriter") {
		t.Fatalf("the killed writer's temporary file does not hold its PENDING (err %v): the crash point is not where this test thinks", err)
	}
	if v, err := st.ReadPending(ctx, "k"); v != nil || (err != nil && !codes.Is(err, codes.NotFound)) {
		t.Fatalf("PENDING after the killed write: %v, %v; want none (the rename never happened)", v, err)
	}
	if _, err := st.WriteRecord(ctx, "k", "", map[string]string{"phase": "idle", "n": "2"}); !codes.Is(err, codes.Aborted) {
		// The record exists: a create-only write is refused, and refused
		// writes save nothing; write it properly next.
		t.Fatalf("create-only write over an existing record: %v, want Aborted", err)
	}
	r, err := st.ReadRecord(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteRecord(ctx, "k", r.Rev, map[string]string{"phase": "idle", "n": "2"}); err != nil {
		t.Fatal(err)
	}
	if left := temps(); len(left) != 0 {
		t.Fatalf("after the next write: temporary files %q left, each a copy of the store's keys", left)
	}
}

// FuzzStoreFile: arbitrary bytes as a store's file (a hand edit gone
// wrong, a truncated copy) never panic any call of the driver, and no
// error quotes the file's content.
func FuzzStoreFile(f *testing.F) {
	const marker = "sk-ant-api03-FUZZMARKER"
	f.Add(`{"secrets": {"k": {"versions": [{"id": "1", "value": "` + marker + `"}]}}}`)
	f.Add(`{"secrets": {"k": {"versions": [{"id": "1", "value": "` + marker + `"}, {"id": "2", "value": "v2"}], "current": "2", "pending": "1", "previous": "9", "next_id": 3, "record": {"rev": 1, "data": {"phase": "idle"}}}}}`)
	f.Add(`{"secrets": {"k": null}}`)
	f.Add(`{"secrets": {"k": {"versions": null, "current": "1"}}}`)
	f.Add(`{"secrets": {"k": {"versions": [], "record": null, "next_id": -1}}}`)
	f.Add(`{"secrets": {"k": {"versions": [{"id": "", "value": ""}, {"id": "", "value": "x"}], "pending": ""}}}`)
	f.Add(`{"secrets": {"k": {"versions": [{"id": "1", "value": "` + marker + `"}]}}, "secrets": 5}`)
	f.Add(`{"secrets": {"k": {"versions": [{"id": "1", "value": "` + marker + `", "created": "` + marker + `"}]}}}`)
	f.Add(`[` + marker + `]`)
	// Each call that writes syncs the file and its directory: on a disk
	// that makes a few hundred executions a second; in memory (tmpfs),
	// where there is one, many more.
	dir, err := os.MkdirTemp("/dev/shm", "kw-fuzz-")
	if err != nil {
		dir = f.TempDir()
	} else {
		f.Cleanup(func() { os.RemoveAll(dir) })
	}
	var n int
	f.Fuzz(func(t *testing.T, content string) {
		n++
		path := filepath.Join(dir, fmt.Sprintf("keys-%d.json", n))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(path + ".lock")
		defer os.Remove(path)
		st := file.New(path)
		ctx := context.Background()
		check := func(op string, err error) {
			if err != nil && strings.Contains(err.Error(), "FUZZMARKER") {
				t.Fatalf("%s: the error quotes the file: %v", op, err)
			}
		}
		cur, err := st.Read(ctx, "k", driver.Current)
		check("Read CURRENT", err)
		_, err = st.Read(ctx, "k", driver.Previous)
		check("Read PREVIOUS", err)
		pend, err := st.ReadPending(ctx, "k")
		check("ReadPending", err)
		rec, err := st.ReadRecord(ctx, "k")
		check("ReadRecord", err)
		rev := ""
		if rec != nil {
			rev = rec.Rev
		}
		_, err = st.WriteRecord(ctx, "k", rev, map[string]string{"phase": "idle"})
		check("WriteRecord", err)
		if pend != nil {
			curID := ""
			if cur != nil {
				curID = cur.ID
			}
			check("Promote", st.Promote(ctx, "k", pend.ID, curID))
		}
		p, err := st.PutPending(ctx, "k", "fuzz-token", []byte("sk-ant-api03-new"))
		check("PutPending", err)
		if p != nil {
			check("DiscardPending", st.DiscardPending(ctx, "k", p.ID))
		}
	})
}
