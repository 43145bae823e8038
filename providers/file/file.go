// Package file is keywarden's file store driver and its embedded default: a
// JSON file, mode 0600, holding named secrets with their versions, stages and
// rotation records. Writes are atomic (temp file, fsync, rename) and guarded
// by an advisory lock, so several processes may share one file; a temp file
// a killed writer left (a copy of every key) is removed by the next write.
//
// URL form: file:///etc/keywarden/keys.json?name=prod (absolute path; also
// file://localhost/etc/keywarden/keys.json, RFC 8089), or
// file:keys.json?name=prod (relative to the working directory). Any other
// host is refused. The name parameter selects the secret and is required.
// The file must be a regular file (not a directory, pipe or device).
//
// A hand-managed file needs only versions; the newest version is CURRENT
// while no stage is marked:
//
//	{"secrets": {"prod": {"versions": [{"id": "1", "value": "sk-ant-api03-..."}]}}}
package file

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keywarden/keywarden/internal/atomicfile"
	"github.com/keywarden/keywarden/internal/secretfile"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// Scheme is the URL scheme of the file driver.
const Scheme = "file"

func init() { providers.Register(Scheme, openURL) }

// PathOf returns the file a file: store URL names, as ParsePath does, or
// "" when ParsePath refuses the URL.
func PathOf(u *url.URL) string {
	p, err := ParsePath(u)
	if err != nil {
		return ""
	}
	return p
}

// ParsePath returns the file a file: store URL names: a relative path as
// the opaque part (file:keys.json), an absolute one as the path
// (file:///etc/kw/keys.json, or file://localhost/etc/kw/keys.json as RFC
// 8089 allows). Any other host is refused (file://keys.json named the
// relative path keys.json, file://localhost/tmp/keys.json the relative path
// localhost/tmp/keys.json), as is a URL without a path.
func ParsePath(u *url.URL) (string, error) {
	switch {
	case u.Opaque != "":
		return u.Opaque, nil
	case u.Host != "" && !strings.EqualFold(u.Host, "localhost"):
		return "", codes.Errorf(codes.InvalidArgument,
			"file: %q is a host in the URL, and a file store has none: write file:///ABSOLUTE/PATH (three slashes) or file:RELATIVE/PATH (no slash)", u.Host)
	case u.Path == "":
		return "", codes.Errorf(codes.InvalidArgument, "file: URL has no path (want file:///path/keys.json?name=NAME)")
	}
	return u.Path, nil
}

// lockPath names the lock file of a store at path. Its other files besides
// path itself are the temporary files a write renames over it
// (atomicfile.IsTemp).
func lockPath(path string) string { return path + ".lock" }

// Uses reports which of its files a store at path holds at target: "file",
// "lock file", "temporary file", or "" when target is none of them. Paths
// are compared as given: pass cleaned absolute ones.
func Uses(path, target string) string {
	switch {
	case target == path:
		return "file"
	case target == lockPath(path):
		return "lock file"
	case filepath.Dir(target) == filepath.Dir(path) && atomicfile.IsTemp(path, filepath.Base(target)):
		return "temporary file"
	}
	return ""
}

func openURL(ctx context.Context, u *url.URL) (driver.Reader, string, error) {
	path, err := ParsePath(u)
	if err != nil {
		return nil, "", err
	}
	q := providers.NewQuery(u.Query())
	name := q.String("name", "")
	if err := q.Done("name"); err != nil {
		return nil, "", fmt.Errorf("file: %w", err)
	}
	if name == "" {
		return nil, "", codes.Errorf(codes.InvalidArgument, "file: URL has no name parameter (want file://%s?name=NAME)", path)
	}
	return New(path), name, nil
}

// Store is a file store. It implements driver.Stager.
type Store struct {
	path    string
	afterIO func(changed bool)
	mu      sync.Mutex // serialises this process's writers; the flock serialises processes
}

var _ driver.Stager = (*Store)(nil)

// New returns a Store on the file at path. The file is created, mode 0600,
// on the first write.
func New(path string) *Store { return &Store{path: path} }

// Options tune a Store made by NewWithOptions. The zero value is New's.
type Options struct {
	// AfterIO, when set, is called after each write of the temporary file
	// (changed false: the store's file is as it was) and after each rename
	// of it over the store's file (changed true): the store calls of this
	// driver, where crash tests (providertest/crashtest) stop the process.
	// Leave it nil outside tests.
	AfterIO func(changed bool)
}

// NewWithOptions is New with options.
func NewWithOptions(path string, o Options) *Store { return &Store{path: path, afterIO: o.AfterIO} }

func (s *Store) hook(changed bool) {
	if s.afterIO != nil {
		s.afterIO(changed)
	}
}

// Path returns the file's path.
func (s *Store) Path() string { return s.path }

// Close does nothing: a Store holds no resources between calls.
func (s *Store) Close() error { return nil }

// fileData is the file's JSON form.
type fileData struct {
	Secrets map[string]*secret `json:"secrets"`
	missing bool               // the file does not exist (yet)
}

type secret struct {
	Versions []version   `json:"versions"`
	Current  string      `json:"current,omitempty"`
	Pending  string      `json:"pending,omitempty"`
	Previous string      `json:"previous,omitempty"`
	Record   *recordData `json:"record,omitempty"`
	Next     int         `json:"next_id,omitempty"`
}

type version struct {
	ID      string    `json:"id"`
	Value   string    `json:"value"`
	Created time.Time `json:"created,omitzero"`
	Token   string    `json:"token,omitempty"`
}

type recordData struct {
	Rev  int               `json:"rev"`
	Data map[string]string `json:"data,omitempty"`
}

func (sec *secret) find(id string) *version {
	for i := range sec.Versions {
		if sec.Versions[i].ID == id {
			return &sec.Versions[i]
		}
	}
	return nil
}

func (v *version) toDriver() *driver.Version {
	return &driver.Version{ID: v.ID, Value: []byte(v.Value), Created: v.Created, Token: v.Token}
}

// load reads the file; a file that does not exist reads as an empty
// store with missing set. Anything but a regular file is refused: it is
// opened without blocking (a FIFO would block the open until a writer
// came, for ever), and what was opened is checked, not the path, so that
// nothing swapped in between is read.
func (s *Store) load() (*fileData, error) {
	f, err := os.OpenFile(s.path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return &fileData{Secrets: map[string]*secret{}, missing: true}, nil
	}
	if err != nil {
		return nil, mapErr(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, mapErr(err)
	}
	switch {
	case fi.IsDir():
		return nil, codes.Errorf(codes.InvalidArgument, "file: %s is a directory, not a store file: name the JSON file in it, such as %s", s.path, urlOf(filepath.Join(s.path, "keys.json"), "NAME"))
	case !fi.Mode().IsRegular():
		return nil, codes.Errorf(codes.InvalidArgument, "file: %s is not a regular file (%s): a store is a JSON file", s.path, secretfile.Kind(fi.Mode()))
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, codes.Errorf(codes.PermissionDenied,
			"file: %s is readable or writable by group or others (mode %04o); run: chmod 600 %s", s.path, perm, s.path)
	}
	if fi.Size() > 16<<20 {
		return nil, codes.Errorf(codes.InvalidArgument, "file: %s is %d bytes, larger than 16 MiB: not a keywarden store", s.path, fi.Size())
	}
	var d fileData
	dec := json.NewDecoder(f)
	if err := dec.Decode(&d); err != nil {
		// Decoder errors can quote file content: report only the offset.
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, codes.Errorf(codes.InvalidArgument, "file: %s is not valid JSON (syntax error at byte %d)", s.path, se.Offset)
		}
		return nil, codes.Errorf(codes.InvalidArgument, "file: %s does not hold a keywarden store (want {\"secrets\": {NAME: {\"versions\": [...]}}})", s.path)
	}
	if d.Secrets == nil {
		d.Secrets = map[string]*secret{}
	}
	return &d, nil
}

// save writes d atomically (atomicfile.Write: temp file in the same
// directory, mode 0600, fsync, rename, fsync of the directory). First it
// removes the temporary files a writer killed between its write and its
// rename left beside the store's file: each holds a copy of every key the
// store held. Every writer holds the flock while its temporary file
// exists, so under it any such file is a dead writer's.
func (s *Store) save(d *fileData) error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return codes.Wrap(codes.Internal, "file: encode", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return mapErr(err)
	}
	atomicfile.RemoveTemps(s.path, 0)
	if err := atomicfile.Write(s.path, append(b, '\n'), atomicfile.Options{AfterTempWrite: func() { s.hook(false) }}); err != nil {
		return mapErr(err)
	}
	s.hook(true)
	return nil
}

// update runs fn on the file's content under the process mutex and an
// exclusive flock, and saves the result when fn returns nil.
func (s *Store) update(ctx context.Context, fn func(d *fileData) error) error {
	if err := ctx.Err(); err != nil {
		return codes.FromContext(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	d, err := s.load()
	if err != nil {
		return err
	}
	if err := fn(d); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return codes.FromContext(err)
	}
	return s.save(d)
}

func (s *Store) lock() (func(), error) {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return nil, mapErr(err)
	}
	f, err := os.OpenFile(lockPath(s.path), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, mapErr(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, codes.Wrap(codes.Unavailable, "file: lock "+s.path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func (s *Store) secret(ctx context.Context, name string) (*secret, error) {
	if err := ctx.Err(); err != nil {
		return nil, codes.FromContext(err)
	}
	d, err := s.load()
	if err != nil {
		return nil, err
	}
	if d.missing {
		return nil, codes.Errorf(codes.NotFound, "file: store file %s not found: it does not exist (yet); create it with the secret: keywarden put --store '%s' < key.txt", s.path, urlOf(s.path, name))
	}
	sec := d.Secrets[name]
	if sec == nil || len(sec.Versions) == 0 {
		return nil, codes.Errorf(codes.NotFound, "file: secret %q not found in %s", name, s.path)
	}
	return sec, nil
}

// urlOf spells the store URL of the secret name in the file at path, as
// ParsePath reads it, for messages.
func urlOf(path, name string) string {
	u := url.URL{Scheme: Scheme, Opaque: path, RawQuery: url.Values{"name": {name}}.Encode()}
	if filepath.IsAbs(path) {
		u.Opaque, u.Path = "", path
	}
	return u.String()
}

// Read implements driver.Reader.
func (s *Store) Read(ctx context.Context, name string, stage driver.Stage) (*driver.Version, error) {
	sec, err := s.secret(ctx, name)
	if err != nil {
		return nil, err
	}
	var id string
	switch stage {
	case driver.Current:
		id = sec.Current
		if id == "" {
			if sec.Pending != "" || sec.Previous != "" {
				return nil, codes.Errorf(codes.NotFound, "file: secret %q has no CURRENT version", name)
			}
			// Hand-managed: the newest version.
			return sec.Versions[len(sec.Versions)-1].toDriver(), nil
		}
	case driver.Previous:
		id = sec.Previous
	case driver.Pending:
		id = sec.Pending
	default:
		return nil, codes.Errorf(codes.InvalidArgument, "file: unknown stage %q", stage)
	}
	if id == "" {
		return nil, codes.Errorf(codes.NotFound, "file: secret %q has no %s version", name, stage)
	}
	v := sec.find(id)
	if v == nil {
		return nil, codes.Errorf(codes.Internal, "file: secret %q: stage %s names version %s, which does not exist", name, stage, id)
	}
	return v.toDriver(), nil
}

// ReadPending implements driver.Stager.
func (s *Store) ReadPending(ctx context.Context, name string) (*driver.Version, error) {
	return s.Read(ctx, name, driver.Pending)
}

// currentID is the id readers see as CURRENT ("" for none).
func (sec *secret) currentID() string {
	if sec.Current == "" && sec.Pending == "" && sec.Previous == "" && len(sec.Versions) > 0 {
		return sec.Versions[len(sec.Versions)-1].ID
	}
	return sec.Current
}

// PutPending implements driver.Stager.
func (s *Store) PutPending(ctx context.Context, name, token string, value []byte) (*driver.Version, error) {
	if token == "" {
		return nil, codes.Errorf(codes.InvalidArgument, "file: PutPending needs a rotation token")
	}
	var out *driver.Version
	err := s.update(ctx, func(d *fileData) error {
		sec := d.Secrets[name]
		if sec == nil {
			sec = &secret{}
			d.Secrets[name] = sec
		}
		if sec.Pending != "" {
			p := sec.find(sec.Pending)
			if p != nil && p.Token == token {
				out = p.toDriver()
				return errNoWrite
			}
			return codes.Errorf(codes.FailedPrecondition, "file: secret %q already has a PENDING version %s from another rotation", name, sec.Pending)
		}
		// Pin the hand-managed CURRENT before adding a newer version.
		sec.Current = sec.currentID()
		id := sec.nextID()
		sec.Versions = append(sec.Versions, version{ID: id, Value: string(value), Created: time.Now().UTC(), Token: token})
		sec.Pending = id
		out = sec.find(id).toDriver()
		return nil
	})
	if errors.Is(err, errNoWrite) {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// errNoWrite ends an update without saving.
var errNoWrite = errors.New("no write")

func (sec *secret) nextID() string {
	n := sec.Next
	for _, v := range sec.Versions {
		if i, err := strconv.Atoi(v.ID); err == nil && i > n {
			n = i
		}
	}
	sec.Next = n + 1
	return strconv.Itoa(n + 1)
}

// Promote implements driver.Stager.
func (s *Store) Promote(ctx context.Context, name, pendingID, currentID string) error {
	err := s.update(ctx, func(d *fileData) error {
		sec := d.Secrets[name]
		if sec == nil {
			return codes.Errorf(codes.Aborted, "file: promote %q: secret does not exist", name)
		}
		if sec.Current == pendingID && sec.Previous == currentID && sec.Pending == "" {
			return errNoWrite // retried promote
		}
		if sec.Pending != pendingID || pendingID == "" {
			return codes.Errorf(codes.Aborted, "file: promote %q: version %s is not PENDING (PENDING is %q)", name, pendingID, sec.Pending)
		}
		if cur := sec.currentID(); cur != currentID {
			return codes.Errorf(codes.Aborted, "file: promote %q: CURRENT is %q, not %q", name, cur, currentID)
		}
		sec.Previous, sec.Current, sec.Pending = currentID, pendingID, ""
		return nil
	})
	if errors.Is(err, errNoWrite) {
		return nil
	}
	return err
}

// DiscardPending implements driver.Stager.
func (s *Store) DiscardPending(ctx context.Context, name, pendingID string) error {
	err := s.update(ctx, func(d *fileData) error {
		sec := d.Secrets[name]
		switch {
		case sec == nil || sec.Pending == "":
			return errNoWrite
		case sec.Pending != pendingID:
			return codes.Errorf(codes.Aborted, "file: discard %q: PENDING is version %s, not %s", name, sec.Pending, pendingID)
		}
		sec.Pending = ""
		return nil
	})
	if errors.Is(err, errNoWrite) {
		return nil
	}
	return err
}

// ReadRecord implements driver.Stager.
func (s *Store) ReadRecord(ctx context.Context, name string) (*driver.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, codes.FromContext(err)
	}
	d, err := s.load()
	if err != nil {
		return nil, err
	}
	sec := d.Secrets[name]
	if sec == nil || sec.Record == nil {
		return &driver.Record{}, nil
	}
	return &driver.Record{Rev: strconv.Itoa(sec.Record.Rev), Data: copyMap(sec.Record.Data)}, nil
}

// WriteRecord implements driver.Stager.
func (s *Store) WriteRecord(ctx context.Context, name, rev string, data map[string]string) (*driver.Record, error) {
	var out *driver.Record
	err := s.update(ctx, func(d *fileData) error {
		sec := d.Secrets[name]
		if sec == nil {
			sec = &secret{}
			d.Secrets[name] = sec
		}
		have := ""
		next := 1
		if sec.Record != nil {
			have = strconv.Itoa(sec.Record.Rev)
			next = sec.Record.Rev + 1
		}
		if have != rev {
			return codes.Errorf(codes.Aborted, "file: record of %q changed (revision %s, expected %q)", name, have, rev)
		}
		sec.Record = &recordData{Rev: next, Data: copyMap(data)}
		out = &driver.Record{Rev: strconv.Itoa(next), Data: copyMap(data)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PutByHand appends value as the newest version of name with no stage
// change, the way an operator edits the file; while no stage is marked, the
// newest version is CURRENT.
func (s *Store) PutByHand(ctx context.Context, name string, value []byte) error {
	return s.update(ctx, func(d *fileData) error {
		sec := d.Secrets[name]
		if sec == nil {
			sec = &secret{}
			d.Secrets[name] = sec
		}
		sec.Versions = append(sec.Versions, version{ID: sec.nextID(), Value: string(value), Created: time.Now().UTC()})
		return nil
	})
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func mapErr(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return codes.Wrap(codes.NotFound, "file", err)
	case errors.Is(err, fs.ErrPermission):
		return codes.Wrap(codes.PermissionDenied, "file", err)
	default:
		return codes.Wrap(codes.Unavailable, "file", err)
	}
}
