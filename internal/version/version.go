// Package version holds keywarden's build stamp, set with -ldflags -X.
package version

import "runtime"

// Set at build time: -ldflags "-X github.com/keywarden/keywarden/internal/version.Version=v1.2.3 ...".
var (
	Version = "dev"
	Commit  = "unknown"
	Date    = "unknown"
)

// String returns "keywarden VERSION (commit COMMIT, built DATE, GOVERSION)".
func String() string {
	return "keywarden " + Version + " (commit " + Commit + ", built " + Date + ", " + runtime.Version() + ")"
}
