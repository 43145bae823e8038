package proxy

import (
	"bufio"
	"bytes"
	"strconv"
	"testing"
)

// TestWriteChunk: a chunk's size is written in hex, as strconv would,
// allocating nothing (streams write one per event).
func TestWriteChunk(t *testing.T) {
	for _, n := range []int{0, 1, 9, 15, 16, 17, 255, 256, 4095, 4096, 65535, 1 << 20} {
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		p := bytes.Repeat([]byte("a"), n)
		if err := writeChunk(w, p); err != nil {
			t.Fatal(err)
		}
		_ = w.Flush()
		if want := strconv.FormatInt(int64(n), 16) + "\r\n" + string(p) + "\r\n"; b.String() != want {
			t.Fatalf("a chunk of %d bytes written as %.12q…", n, b.String())
		}
	}
	w, p := bufio.NewWriterSize(new(bytes.Buffer), 64), make([]byte, 100)
	if a := testing.AllocsPerRun(100, func() { _ = writeChunk(w, p) }); a != 0 {
		t.Fatalf("writeChunk allocates %v times", a)
	}
}
