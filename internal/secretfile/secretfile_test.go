package secretfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/secretfile"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, fi, err := secretfile.Read(tok)
	if err != nil || string(b) != "abc\n" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("Read: %q %v %v", b, fi, err)
	}
	if _, _, err := secretfile.Read(filepath.Join(dir, "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, secretfile.MaxSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := secretfile.Read(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("large file: %v", err)
	}
	if _, _, err := secretfile.Read(dir); err == nil || !strings.Contains(err.Error(), "is a directory, not a regular file") {
		t.Errorf("directory: %v", err)
	}
}

// TestNamedPipeDoesNotBlock: a FIFO at the path (no writer ever comes) is
// an error at once; os.ReadFile would block in open for ever.
func TestNamedPipeDoesNotBlock(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "token")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, _, err := secretfile.Read(fifo); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "is a named pipe, not a regular file") {
			t.Fatalf("FIFO: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read blocked on a named pipe")
	}
}

// TestCheckEnv: a variable naming a named pipe or a directory is an error
// naming the variable; a regular file, a missing file and an unset or empty
// variable pass.
func TestCheckEnv(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	reg := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(reg, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KW_T_REG", reg)
	t.Setenv("KW_T_MISSING", filepath.Join(dir, "missing"))
	t.Setenv("KW_T_EMPTY", "")
	t.Setenv("KW_T_FIFO", fifo)
	t.Setenv("KW_T_DIR", dir)
	if err := secretfile.CheckEnv("KW_T_REG", "KW_T_MISSING", "KW_T_EMPTY", "KW_T_UNSET"); err != nil {
		t.Fatalf("regular, missing, empty, unset: %v", err)
	}
	for name, kind := range map[string]string{"KW_T_FIFO": "a named pipe", "KW_T_DIR": "a directory"} {
		err := secretfile.CheckEnv("KW_T_REG", name)
		if err == nil || !strings.Contains(err.Error(), name+"=") || !strings.Contains(err.Error(), kind) {
			t.Errorf("%s: %v; want an error naming the variable and %q", name, err, kind)
		}
	}
}
