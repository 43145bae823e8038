package mototest

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill moto when the test binary dies without
// running Main (a panic, a timeout, kill -9), so no server is left behind.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
