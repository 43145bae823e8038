package sidecarcli

import "time"

// SetStartWindow shortens the window after which a start that waits is
// logged and reported, and returns the undo.
func SetStartWindow(d time.Duration) func() {
	old := startWindow
	startWindow = d
	return func() { startWindow = old }
}
