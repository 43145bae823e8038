// Package filesink writes the key of a providers.Source to a file, and again
// on every change of the key, for programs that read their key from a file.
// Each write is atomic: a temporary file in the same directory, mode 0600,
// synced, then renamed over the target; a reader sees the old key or the new
// one, never a mix. A temporary file left by a process killed mid-write
// (it holds a key) is removed by the next sink on the path once it is a
// minute old.
package filesink

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/keywarden/keywarden/internal/atomicfile"
	"github.com/keywarden/keywarden/providers"
)

// DefaultCheck is how often a Sink checks that its file still holds the
// key, when neither Options.Check nor the Source's refresh interval is
// shorter.
const DefaultCheck = 10 * time.Second

// firstRetry is the wait before the first retry of a failed write; each
// further failure doubles it, up to the check interval.
const firstRetry = time.Second

// Options configure a Sink; the zero value is ready to use.
type Options struct {
	// Check is how often the sink reads the file back and rewrites it
	// when it no longer holds the CURRENT key (removed, replaced, its
	// directory recreated), and the longest wait between retries of a
	// failed write. Default: the Source's refresh interval, at most
	// DefaultCheck.
	Check time.Duration
	// Logger receives events; never the key (slog.Default()).
	Logger *slog.Logger
}

// Sink keeps a file in step with a Source. Create it with Start.
//
// A write that fails (disk full, directory missing, permission denied) is
// logged and retried with backoff until the file holds the CURRENT key;
// CheckHealth reports the failure meanwhile.
type Sink struct {
	path  string
	src   *providers.Source
	log   *slog.Logger
	check time.Duration
	unsub func()
	kick  chan struct{} // wakes the loop after a failed write
	stop  chan struct{} // closed by Close
	done  chan struct{} // closed when the loop returned
	once  sync.Once

	mu     sync.Mutex // serialises writes
	closed bool

	smu     sync.Mutex // guards the state below, never held during I/O
	written string     // fingerprint of the value the file holds ("" unknown)
	err     error      // the last write's error; nil once a write or check succeeds
	okAt    time.Time  // when the file was last seen or made to hold the key
}

// Start writes src's CURRENT key to path, subscribes to its changes and
// checks the file in the background (see Options). The first write must
// succeed.
func Start(path string, src *providers.Source, o Options) (*Sink, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Sink{path: path, src: src, log: log.With("file", path), check: checkInterval(o.Check, src),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	// Subscribe before the first write: a change notified while it runs
	// is then written by the subscriber (sync skips a value already
	// written), where it would otherwise reach nobody.
	s.unsub = src.Subscribe(func(providers.Change) {
		if err := s.sync(false); err != nil {
			s.log.Error("filesink: writing the new key failed; the file holds the previous key; retrying", "error", err)
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	})
	if err := s.sync(false); err != nil {
		s.unsub()
		return nil, err
	}
	go s.loop()
	return s, nil
}

// checkInterval returns o.Check, else the Source's refresh interval when
// it is shorter than DefaultCheck, else DefaultCheck.
func checkInterval(check time.Duration, src *providers.Source) time.Duration {
	if check > 0 {
		return check
	}
	if r := src.Options().Refresh; r > 0 && r < DefaultCheck {
		return r
	}
	return DefaultCheck
}

// Path returns the file's path.
func (s *Sink) Path() string { return s.path }

// CheckHealth returns nil when the file held the CURRENT key at the last
// write or check, and an error saying why not otherwise: the last write
// failed, or the key changed and is not written yet. It never blocks on
// a write under way.
func (s *Sink) CheckHealth() error {
	k := s.src.Current()
	s.smu.Lock()
	defer s.smu.Unlock()
	if s.err != nil {
		return s.err
	}
	if k.Fingerprint != s.written {
		return fmt.Errorf("filesink: %s does not hold the current key (version %s) yet", s.path, k.VersionID)
	}
	return nil
}

// LastSuccess returns when the file was last written or found to hold
// the CURRENT key.
func (s *Sink) LastSuccess() time.Time {
	s.smu.Lock()
	defer s.smu.Unlock()
	return s.okAt
}

// loop retries a failed write with backoff, and checks the file every
// s.check, until Close.
func (s *Sink) loop() {
	defer close(s.done)
	failures := 0
	t := time.NewTimer(s.check)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick: // a subscriber's write failed: retry soon
			failures = max(failures, 1)
			t.Reset(backoff(failures, s.check))
			continue
		case <-t.C:
		}
		if err := s.sync(true); err != nil {
			failures++
			wait := backoff(failures, s.check)
			s.log.Error("filesink: the file does not hold the current key; retrying", "error", err, "failures", failures, "retry_in", wait)
			t.Reset(wait)
			continue
		}
		failures = 0
		t.Reset(s.check)
	}
}

// backoff returns the wait after failures failed writes in a row:
// firstRetry doubled for each, at most limit.
func backoff(failures int, limit time.Duration) time.Duration {
	d := firstRetry
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// sync writes the CURRENT key unless the file holds it already: as far as
// the sink knows, or, with verify, as the file read back says.
func (s *Sink) sync(verify bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	k := s.src.Current()
	s.smu.Lock()
	known := k.Fingerprint == s.written
	s.smu.Unlock()
	atomicfile.RemoveTemps(s.path, staleTemp)
	if known && (!verify || holds(s.path, k.Value)) {
		s.succeeded(k.Fingerprint)
		return nil
	}
	if known {
		s.log.Warn("filesink: the file no longer holds the current key (removed or replaced); writing it again", "version", k.VersionID)
	}
	if err := Write(s.path, k.Value); err != nil {
		s.smu.Lock()
		s.err = fmt.Errorf("filesink: %s does not hold the current key (version %s): %w", s.path, k.VersionID, err)
		if known {
			s.written = "" // replaced by something that is not the key
		}
		s.smu.Unlock()
		return err
	}
	s.succeeded(k.Fingerprint)
	s.log.Info("filesink: wrote the key", "version", k.VersionID, "fingerprint", k.Fingerprint)
	return nil
}

// succeeded records that the file holds the key of fingerprint fp, and
// logs the end of a failure.
func (s *Sink) succeeded(fp string) {
	s.smu.Lock()
	failed := s.err != nil
	s.written, s.err, s.okAt = fp, nil, time.Now()
	s.smu.Unlock()
	if failed {
		s.log.Info("filesink: the file holds the current key again", "fingerprint", fp)
	}
}

// holds reports whether the file at path is a regular file holding v
// exactly. It reads at most one byte more than v.
func holds(path string, v providers.Secret) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return false
	}
	want := []byte(v.Reveal())
	var got bytes.Buffer
	if _, err := io.Copy(&got, io.LimitReader(f, int64(len(want))+1)); err != nil && !errors.Is(err, io.EOF) {
		return false
	}
	return subtle.ConstantTimeCompare(got.Bytes(), want) == 1
}

// Close stops following the Source and checking the file. The file stays,
// holding the last key. It is safe to call more than once.
func (s *Sink) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.unsub()
		close(s.stop)
		<-s.done
	})
	return nil
}

// staleTemp is the age past which a temporary file of a sink's path is a
// dead writer's: a write holds its own for milliseconds. A process killed
// between Write's write and its rename (OOM, a SIGKILL at the end of a
// grace period) leaves one, holding a key; each sync removes those older
// than this (atomicfile.RemoveTemps). No lock is taken by every writer of
// the path, so a younger one may be a live writer's, and is left.
const staleTemp = time.Minute

// afterTempWrite, set by tests only, runs between the temporary file's
// close and its rename: where a crash test stops the process.
var afterTempWrite func()

// Write puts v in the file at path atomically, mode 0600 (atomicfile.Write):
// a temporary file in the same directory is written, synced and renamed
// over path, and the directory is synced. Errors never hold the value.
func Write(path string, v providers.Secret) error {
	b := []byte(v.Reveal())
	defer clear(b)
	if err := atomicfile.Write(path, b, atomicfile.Options{AfterTempWrite: afterTempWrite}); err != nil {
		return fmt.Errorf("filesink: %w", err)
	}
	return nil
}
