//go:build !unix

package exec

import osexec "os/exec"

// setProcessGroup does nothing where process groups do not exist; the
// command alone is killed on cancellation.
func setProcessGroup(*osexec.Cmd) {}
