package tailbuf_test

import (
	"fmt"
	"testing"

	"github.com/keywarden/keywarden/internal/tailbuf"
)

func TestKeepsTail(t *testing.T) {
	b := &tailbuf.Buffer{Max: 5}
	for i := 0; i < 12; i++ {
		fmt.Fprint(b, i%10)
	}
	if got := b.String(); got != "78901" {
		t.Fatalf("kept %q, want the last 5 bytes 78901", got)
	}
}

func TestUnbounded(t *testing.T) {
	b := &tailbuf.Buffer{}
	for i := 0; i < 1000; i++ {
		fmt.Fprint(b, i%10)
	}
	if got := b.String(); len(got) != 1000 || got[:3] != "012" {
		t.Fatalf("kept %d bytes starting %q, want all 1000 from 012", len(got), got[:3])
	}
}
