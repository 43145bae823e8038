package providers

import "time"

// SetReadTimeout sets the bound of one store read of s (refreshTimeout by
// default), for tests of a store call that never returns. Call it before
// the Source reads again.
func SetReadTimeout(s *Source, d time.Duration) {
	s.mu.Lock()
	s.readTimeout = d
	s.mu.Unlock()
}
