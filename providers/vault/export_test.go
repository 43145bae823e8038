package vault

// LoginCount returns the number of successful logins of s so far.
func LoginCount(s *Store) int { return s.sess.loginCount() }

// SetBeforeStagesWrite installs f to run between the read of a stage
// document and its check-and-set write, and returns a function restoring the
// previous hook. Not for parallel tests.
func SetBeforeStagesWrite(f func(name string)) (restore func()) {
	old := beforeStagesWrite
	beforeStagesWrite = f
	return func() { beforeStagesWrite = old }
}
