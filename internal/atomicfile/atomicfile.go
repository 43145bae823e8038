// Package atomicfile writes the files that hold keys — a file store's file,
// a file sink's key — the one way: a temporary file in the same directory,
// mode 0600, written, synced and renamed over the target, then the
// directory synced; a reader sees the old content or the new, never a mix.
//
// A process killed between the write of its temporary file and the rename
// leaves that file behind, holding what it wrote (keys), for as long as the
// directory lives. The temporary files of a path are named by one rule,
// ".NAME.tmp-*" beside NAME (the * is os.CreateTemp's random digits), so
// that RemoveTemps finds them and IsTemp recognises them.
//
// Errors are the os package's: they name the paths and the call that
// failed, never the content, and callers prefix them. It imports only the
// standard library.
package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"time"
)

// tempPrefix starts the name of every temporary file of path: the name is
// the prefix and os.CreateTemp's random digits.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// createTemp creates a new temporary file of path in its directory, named
// by tempPrefix. The pattern's * is its last, so a * in path's name is
// kept literally.
func createTemp(path string) (*os.File, error) {
	return os.CreateTemp(filepath.Dir(path), tempPrefix(path)+"*")
}

// IsTemp reports whether name, a base name in path's directory, is one of
// path's temporary files: tempPrefix taken literally (a glob would read a
// [ or * in the file's name) and os.CreateTemp's random digits, nothing
// else, so that the temporary files of a neighbour named "NAME.tmp-1"
// (".NAME.tmp-1.tmp-DIGITS") are not NAME's. The base name of path itself
// is never one.
func IsTemp(path, name string) bool {
	rest, ok := strings.CutPrefix(name, tempPrefix(path))
	if !ok || rest == "" {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if rest[i] < '0' || rest[i] > '9' {
			return false
		}
	}
	return true
}

// Options tune Write. The zero value is ready to use.
type Options struct {
	// AfterTempWrite, when set, runs after the temporary file is written,
	// synced and closed, and before its rename over the target: where
	// crash tests stop the process, leaving the temporary file behind.
	// Leave it nil outside tests.
	AfterTempWrite func()
}

// Write puts data in the file at path atomically, mode 0600 whatever the
// umask: a temporary file in path's directory (which must exist) is
// written, synced and renamed over path, and the directory is synced. A
// symlink at path is replaced, not followed. On an error the temporary
// file is removed and path is as it was. The directory's sync is best
// effort: its failure is not reported.
func Write(path string, data []byte, o Options) error {
	f, err := createTemp(path)
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if o.AfterTempWrite != nil {
		o.AfterTempWrite()
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// RemoveTemps removes path's temporary files (IsTemp) that a writer killed
// between its write and its rename left: each holds what it wrote. It is
// best effort and reports nothing.
//
// With minAge 0 (or less) it removes every one, whatever it is: for a caller that
// holds a lock every writer holds while its temporary file exists, so that
// any such file is a dead writer's. Otherwise it removes only the regular
// files last modified more than minAge ago, and leaves a younger one, which
// may be a live writer's.
func RemoveTemps(path string, minAge time.Duration) {
	dir := filepath.Dir(path)
	cutoff := time.Now().Add(-minAge)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !IsTemp(path, e.Name()) {
			continue
		}
		if minAge > 0 {
			fi, err := e.Info()
			if err != nil || !fi.Mode().IsRegular() || !fi.ModTime().Before(cutoff) {
				continue
			}
		}
		_ = os.Remove(filepath.Join(dir, e.Name()))
	}
}
