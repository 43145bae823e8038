// Package filesink writes the key of a providers.Source to a file, and again
// on every change of the key, for programs that read their key from a file.
// Each write is atomic: a temporary file in the same directory, mode 0600,
// synced, then renamed over the target; a reader sees the old key or the new
// one, never a mix.
package filesink

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/keywarden/keywarden/providers"
)

// Sink keeps a file in step with a Source. Create it with Start.
type Sink struct {
	path  string
	src   *providers.Source
	log   *slog.Logger
	unsub func()

	mu      sync.Mutex // serialises writes
	written string     // fingerprint of the value last written
	closed  bool
}

// Start writes src's CURRENT key to path and subscribes to its changes.
// The first write must succeed. log may be nil (slog.Default()).
func Start(path string, src *providers.Source, log *slog.Logger) (*Sink, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Sink{path: path, src: src, log: log.With("file", path)}
	// Subscribe before the first write: a change notified while it runs
	// is then written by the subscriber (sync skips a value already
	// written), where it would otherwise reach nobody.
	s.unsub = src.Subscribe(func(providers.Change) {
		if err := s.sync(); err != nil {
			s.log.Error("filesink: writing the new key failed; the file holds the previous key", "error", err)
		}
	})
	if err := s.sync(); err != nil {
		s.unsub()
		return nil, err
	}
	return s, nil
}

// Path returns the file's path.
func (s *Sink) Path() string { return s.path }

// sync writes the CURRENT key unless the file already holds it.
func (s *Sink) sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	k := s.src.Current()
	if k.Fingerprint == s.written {
		return nil
	}
	if err := Write(s.path, k.Value); err != nil {
		return err
	}
	s.written = k.Fingerprint
	s.log.Info("filesink: wrote the key", "version", k.VersionID, "fingerprint", k.Fingerprint)
	return nil
}

// Close stops following the Source. The file stays, holding the last key.
// It is safe to call more than once.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		if s.unsub != nil {
			s.unsub()
		}
	}
	return nil
}

// Write puts v in the file at path atomically, mode 0600: a temporary file
// in the same directory is written, synced and renamed over path, and the
// directory is synced. Errors never hold the value.
func Write(path string, v providers.Secret) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("filesink: %w", err)
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
		return fmt.Errorf("filesink: %w", err)
	}
	if _, err := f.WriteString(v.Reveal()); err != nil {
		return fmt.Errorf("filesink: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("filesink: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("filesink: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("filesink: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
