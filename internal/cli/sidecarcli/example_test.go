package sidecarcli_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/keywarden/keywarden/internal/cli/sidecarcli"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
)

// What `keywarden exec -- PROGRAM` does: the program gets the key in its
// environment (never on its command line) and is restarted with the new
// key when it changes.
func ExampleSupervisor() {
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

	sup := &sidecarcli.Supervisor{
		Path: "/bin/sh", Args: []string{"-c", `case "$ANTHROPIC_API_KEY" in sk-ant-*) echo has a key;; esac`},
		Env: "ANTHROPIC_API_KEY", Source: src, Restart: true, Grace: 10 * time.Second,
		Stdout: os.Stdout, Stderr: os.Stderr, Log: slog.New(slog.DiscardHandler),
	}
	code, err := sup.Run(context.Background(), nil)
	fmt.Println("exit code", code, err)
	// Output:
	// has a key
	// exit code 0 <nil>
}
