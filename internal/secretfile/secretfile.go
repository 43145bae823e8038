// Package secretfile reads the small files that hold credentials — client
// tokens, identity tokens, Vault tokens and role ids — the one way: opened
// without blocking and checked after the open, so that a named pipe, a
// device or a directory at the path is an error at once instead of a read
// that waits for ever (a FIFO's open blocks until a writer comes), and what
// was checked is what is read. It imports only the standard library.
package secretfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// MaxSize is the largest credential file Read takes: tokens are bytes to a
// few kilobytes (a JWT with many claims); a larger file is not one.
const MaxSize = 1 << 20

// Read returns the content of the regular file at path, at most MaxSize
// bytes, and its file info (of the opened file: callers check its mode).
// Its errors name the path and what is wrong, never any content, and wrap
// the os error when there is one (fs.ErrNotExist, fs.ErrPermission).
func Read(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fi, fmt.Errorf("%s is %s, not a regular file", path, Kind(fi.Mode()))
	}
	if fi.Size() > MaxSize {
		return nil, fi, fmt.Errorf("%s is %d bytes, larger than %d: not a credential file", path, fi.Size(), MaxSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fi, err
	}
	if len(b) > MaxSize {
		return nil, fi, fmt.Errorf("%s grew past %d bytes while read: not a credential file", path, MaxSize)
	}
	return b, fi, nil
}

// Kind names what a non-regular file is, for messages.
func Kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "mode " + m.String()
}

// CheckEnv checks the files that the environment variables names name for
// a cloud SDK to read itself (AWS_WEB_IDENTITY_TOKEN_FILE, VAULT_CACERT,
// GOOGLE_APPLICATION_CREDENTIALS, ...): a variable that is set must name a
// regular file, or one that does not exist (the SDK then says so). It only
// looks at the path (stat, never open), so a named pipe there is an error
// at once, not a read by the SDK that waits for ever.
func CheckEnv(names ...string) error {
	for _, n := range names {
		p := os.Getenv(n)
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s=%s is %s, not a regular file", n, p, Kind(fi.Mode()))
		}
	}
	return nil
}
