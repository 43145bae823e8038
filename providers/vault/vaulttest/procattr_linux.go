package vaulttest

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts `go run` and the server it starts into their own process
// group, so killGroup reaches both, and makes the kernel kill `go run` when
// the test binary dies. The server itself exits when its standard input
// (a pipe from the test binary) closes.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup kills the process group of cmd.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
