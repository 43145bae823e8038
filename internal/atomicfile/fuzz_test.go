package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzTempName: for any file name, the temporary file createTemp makes for
// it (os.CreateTemp's real naming) is IsTemp of it, in its directory, and
// the name itself never is.
func FuzzTempName(f *testing.F) {
	for _, s := range []string{"keys.json", "keys[1].json", "keys*.json", "*", "a*b*", ".hidden", ".tmp-", "k.tmp-1", "ключ", "with space"} {
		f.Add(s)
	}
	// A file is created and removed for each input: in memory (tmpfs)
	// where there is one.
	dir, err := os.MkdirTemp("/dev/shm", "kw-fuzz-")
	if err != nil {
		dir = f.TempDir()
	} else {
		f.Cleanup(func() { os.RemoveAll(dir) })
	}
	f.Fuzz(func(t *testing.T, name string) {
		path := filepath.Join(dir, name)
		if filepath.Dir(path) != dir || filepath.Base(path) != name {
			return // not a name in dir ("", ".", "..", a slash)
		}
		if IsTemp(path, name) {
			t.Fatalf("IsTemp(%q, %q): the file itself", path, name)
		}
		tmp, err := createTemp(path)
		if err != nil {
			return // not a file name the system takes (NUL, too long)
		}
		tmp.Close()
		defer os.Remove(tmp.Name())
		if filepath.Dir(tmp.Name()) != dir || !IsTemp(path, filepath.Base(tmp.Name())) {
			t.Fatalf("createTemp(%q) made %q, which IsTemp does not recognise", path, tmp.Name())
		}
	})
}
