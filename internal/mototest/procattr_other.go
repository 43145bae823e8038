//go:build !linux

package mototest

import "os/exec"

// setProcAttr does nothing outside Linux: Main stops the server.
func setProcAttr(*exec.Cmd) {}
