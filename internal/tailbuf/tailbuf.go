// Package tailbuf keeps the last bytes of a stream, such as a test server's
// output, for error messages, or all of them, such as the log lines a test
// scans for key values.
package tailbuf

import "sync"

// Buffer keeps the last Max bytes written to it, or everything when Max is
// 0. It is safe for concurrent use, so loggers on many goroutines can share
// one.
type Buffer struct {
	Max int

	mu  sync.Mutex
	buf []byte
}

// Write appends p, dropping the oldest bytes beyond Max (when set).
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if b.Max > 0 && len(b.buf) > b.Max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.Max:]...)
	}
	return len(p), nil
}

// String returns the kept bytes.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
