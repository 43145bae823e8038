package filesink_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/keywarden/keywarden/internal/filesink"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
)

// A program that reads its key from a file gets one that keywarden keeps
// current: the sidecar's file_sink does this for the configured key.
func ExampleStart() {
	dir, _ := os.MkdirTemp("", "keywarden-example")
	defer os.RemoveAll(dir)
	st := file.New(filepath.Join(dir, "keys.json"))
	if err := st.PutByHand(context.Background(), "prod", []byte("sk-ant-api03-example-0123456789abcdefghijklmnop")); err != nil {
		log.Fatal(err)
	}
	src, err := providers.New(context.Background(), st, "prod", providers.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	sink, err := filesink.Start(filepath.Join(dir, "anthropic-key"), src, filesink.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer sink.Close()

	b, _ := os.ReadFile(sink.Path())
	fi, _ := os.Stat(sink.Path())
	fmt.Println(providers.Fingerprint(string(b)) == src.Current().Fingerprint, fi.Mode().Perm())
	// Output: true -rw-------
}
