// Package clitest holds the helpers the command packages' tests share:
// running a command tree in process, a free loopback port, and waiting for
// a condition.
package clitest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/cli"
)

// Run runs root with args and stdin in process, as main does, and returns
// its output, its error output (the error's text appended) and its exit
// code (cli.ExitConfig for an error that carries none).
func Run(t testing.TB, root *cobra.Command, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.ExecuteContext(context.Background())
	code = cli.ExitOK
	if err != nil {
		code = cli.ExitConfig
		var ee *cli.ExitError
		if errors.As(err, &ee) {
			code = ee.Code
		}
		errb.WriteString(cli.ErrText(err)) // as cli.Main prints it
	}
	return out.String(), errb.String(), code
}

// FreeAddr returns a loopback address with a port free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// WaitFor polls cond every 10 ms and fails the test when it has not held
// within 20 s; what names the condition in the failure.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
