//go:build !linux

package vaulttest

import "os/exec"

// setProcAttr does nothing here: the server exits when its standard input
// (a pipe from the test binary) closes.
func setProcAttr(*exec.Cmd) {}

// killGroup kills the `go run` process.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}
