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
