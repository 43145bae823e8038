package atomicfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keywarden/keywarden/internal/atomicfile"
)

const key = "sk-ant-api03-ATOMICFILEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-aaaa"

// names returns the names in dir, sorted.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// check fails unless path is a regular file, mode 0600, holding want.
func check(t *testing.T, path, want string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: mode %v, want a regular file, mode 0600", path, fi.Mode())
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != want {
		t.Fatalf("%s holds %q (err %v), want %q", path, b, err, want)
	}
}

// TestWrite: a new file, a file of another mode and a symlink are each
// replaced by a regular file, mode 0600 whatever the umask, and no
// temporary file is left.
func TestWrite(t *testing.T) {
	old := syscall.Umask(0o277) // os.CreateTemp's 0600 becomes 0400
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := atomicfile.Write(path, []byte(key), atomicfile.Options{}); err != nil {
		t.Fatal(err)
	}
	check(t, path, key)

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(path, []byte("second"), atomicfile.Options{}); err != nil {
		t.Fatal(err)
	}
	check(t, path, "second")

	// A symlink at the path is replaced, and what it named is untouched.
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("other"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, path); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(path, []byte("third"), atomicfile.Options{}); err != nil {
		t.Fatal(err)
	}
	check(t, path, "third")
	if b, err := os.ReadFile(other); err != nil || string(b) != "other" {
		t.Fatalf("the symlink's target holds %q (err %v), want it untouched", b, err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"key", "other"}) {
		t.Fatalf("files left: %q, want key and other", got)
	}
}

// TestWriteFails: a failed write leaves the path as it was and no
// temporary file, and its error wraps the os error without the data.
func TestWriteFails(t *testing.T) {
	dir := t.TempDir()
	err := atomicfile.Write(filepath.Join(dir, "missing", "key"), []byte(key), atomicfile.Options{})
	if !errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "ATOMICFILE") {
		t.Fatalf("into a missing directory: %v, want ErrNotExist without the data", err)
	}
	// The rename over a directory that is not empty fails.
	path := filepath.Join(dir, "key")
	if err := os.MkdirAll(filepath.Join(path, "in"), 0o700); err != nil {
		t.Fatal(err)
	}
	err = atomicfile.Write(path, []byte(key), atomicfile.Options{})
	if err == nil || strings.Contains(err.Error(), "ATOMICFILE") {
		t.Fatalf("over a directory: %v, want an error without the data", err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"key"}) {
		t.Fatalf("after a failed rename: files %q, want only the directory", got)
	}
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		t.Fatalf("after a failed rename: %v, %v; want the directory as it was", fi, err)
	}
}

// TestAfterTempWrite: the hook runs once, when the temporary file holds the
// data and the path still holds the old content.
func TestAfterTempWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := atomicfile.Write(path, []byte("old"), atomicfile.Options{}); err != nil {
		t.Fatal(err)
	}
	calls := 0
	hook := func() {
		calls++
		check(t, path, "old")
		var temps []string
		for _, n := range names(t, dir) {
			if atomicfile.IsTemp(path, n) {
				temps = append(temps, n)
			}
		}
		if len(temps) != 1 {
			t.Fatalf("in the hook: temporary files %q, want one", temps)
		}
		check(t, filepath.Join(dir, temps[0]), "new")
	}
	if err := atomicfile.Write(path, []byte("new"), atomicfile.Options{AfterTempWrite: hook}); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Fatalf("hook called %d times, want 1", calls)
	}
	check(t, path, "new")
}

// TestIsTemp: the rule is taken literally (glob characters, a * in the
// name), names the file itself, its lock file or a bare prefix never, and
// every name Write's temporary file gets (seen from its hook) always.
func TestIsTemp(t *testing.T) {
	for _, tc := range []struct {
		path, name string
		want       bool
	}{
		{"/d/keys.json", ".keys.json.tmp-123", true},
		{"/d/keys.json", ".keys.json.tmp-x", false},
		{"/d/keys.json", ".keys.json.tmp-12x", false},
		// A neighbour named keys.json.tmp-1 has its own temporary files.
		{"/d/keys.json", ".keys.json.tmp-1.tmp-123", false},
		{"/d/keys.json.tmp-1", ".keys.json.tmp-1.tmp-123", true},
		{"/d/keys.json", ".keys.json.tmp-", false},
		{"/d/keys.json", "keys.json", false},
		{"/d/keys.json", "keys.json.lock", false},
		{"/d/keys.json", ".keys.json.tmp", false},
		{"/d/keys.json", ".other.json.tmp-1", false},
		{"/d/keys.json", "..keys.json.tmp-1", false},
		{"/d/keys[1].json", ".keys[1].json.tmp-1", true},
		{"/d/keys[1].json", ".keys1.json.tmp-1", false},
		{"/d/keys?.json", ".keysX.json.tmp-1", false},
		{"/d/keys*.json", ".keys*.json.tmp-1", true},
		{"/d/keys*.json", ".keys.json.tmp-1", false},
		{"/d/keys*.json", ".keysX.json.tmp-1", false},
		{"rel/.hidden", "..hidden.tmp-1", true},
		{"key", ".key.tmp-1", true},
	} {
		if got := atomicfile.IsTemp(tc.path, tc.name); got != tc.want {
			t.Errorf("IsTemp(%q, %q) = %v, want %v", tc.path, tc.name, got, tc.want)
		}
	}
	dir := t.TempDir()
	for _, name := range []string{"keys.json", "keys[1].json", "keys*.json", "k?y", ".hidden", "with space", "ключ"} {
		path := filepath.Join(dir, name)
		before := names(t, dir)
		var made []string // what the write made besides name
		hook := func() {
			for _, n := range names(t, dir) {
				if n != name && !slices.Contains(before, n) {
					made = append(made, n)
				}
			}
		}
		if err := atomicfile.Write(path, nil, atomicfile.Options{AfterTempWrite: hook}); err != nil {
			t.Fatal(err)
		}
		if len(made) != 1 || !atomicfile.IsTemp(path, made[0]) {
			t.Errorf("Write of %q made %q: want one temporary file, IsTemp", name, made)
		}
	}
}

// TestRemoveTemps: with minAge 0 every temporary file of the path goes,
// whatever it is; with a minAge only the regular ones older than it. The
// path, its lock file, a bare prefix and another path's temporary files
// stay.
func TestRemoveTemps(t *testing.T) {
	old := time.Now().Add(-time.Hour)
	for _, tc := range []struct {
		minAge time.Duration
		left   []string
	}{
		{0, []string{".keys.json.tmp-", ".keys.json.tmp-1.tmp-5", ".other.tmp-1", "keys.json", "keys.json.lock"}},
		{time.Minute, []string{".keys.json.tmp-", ".keys.json.tmp-1.tmp-5", ".keys.json.tmp-3", ".keys.json.tmp-4", ".keys.json.tmp-6", ".other.tmp-1", "keys.json", "keys.json.lock"}},
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, "keys.json")
		for _, n := range []string{"keys.json", "keys.json.lock", ".keys.json.tmp-", ".keys.json.tmp-2", ".keys.json.tmp-6", ".keys.json.tmp-1.tmp-5", ".other.tmp-1"} {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(key), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Mkdir(filepath.Join(dir, ".keys.json.tmp-3"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("keys.json", filepath.Join(dir, ".keys.json.tmp-4")); err != nil {
			t.Fatal(err)
		}
		for _, n := range names(t, dir) {
			if n == ".keys.json.tmp-6" { // the young one
				continue
			}
			tv := unix.NsecToTimeval(old.UnixNano())
			if err := unix.Lutimes(filepath.Join(dir, n), []unix.Timeval{tv, tv}); err != nil {
				t.Fatal(err)
			}
		}
		atomicfile.RemoveTemps(path, tc.minAge)
		if got := names(t, dir); !slices.Equal(got, tc.left) {
			t.Errorf("RemoveTemps(%v): left %q, want %q", tc.minAge, got, tc.left)
		}
	}
}
