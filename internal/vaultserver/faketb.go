package main

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// fakeTB is the testing.TB that vault.NewTestCluster wants, for use outside
// a test binary: failures print to stderr and exit, cleanups run at exit.
// Methods the cluster does not call panic through the nil embedded TB.
type fakeTB struct {
	testing.TB
	name string

	mu       sync.Mutex
	cleanups []func()
}

func newFakeTB(name string) *fakeTB { return &fakeTB{name: name} }

func (t *fakeTB) Helper()      {}
func (t *fakeTB) Name() string { return t.name }
func (t *fakeTB) Failed() bool { return false }

func (t *fakeTB) Log(args ...any)                 { fmt.Fprintln(os.Stderr, args...) }
func (t *fakeTB) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (t *fakeTB) Error(args ...any)               { t.Fatal(args...) }
func (t *fakeTB) Errorf(format string, args ...any) {
	t.Fatalf(format, args...)
}

func (t *fakeTB) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"vaultserver: fatal:"}, args...)...)
	os.Exit(1)
}

func (t *fakeTB) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "vaultserver: fatal: "+format+"\n", args...)
	os.Exit(1)
}

func (t *fakeTB) FailNow()         { os.Exit(1) }
func (t *fakeTB) Skip(args ...any) { t.Fatal(append([]any{"skip:"}, args...)...) }
func (t *fakeTB) SkipNow()         { t.Fatal("skip") }
func (t *fakeTB) Skipf(f string, args ...any) {
	t.Fatalf("skip: "+f, args...)
}

func (t *fakeTB) TempDir() string {
	d, err := os.MkdirTemp("", "vaultserver-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (t *fakeTB) Setenv(key, value string) { _ = os.Setenv(key, value) }

func (t *fakeTB) Cleanup(f func()) {
	t.mu.Lock()
	t.cleanups = append(t.cleanups, f)
	t.mu.Unlock()
}

// cleanup runs the registered cleanups, last first.
func (t *fakeTB) cleanup() {
	t.mu.Lock()
	fs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
