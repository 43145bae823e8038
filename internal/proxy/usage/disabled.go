//go:build keywarden_nousage

package usage

// enabled is false: this build reads no response body and no rate-limit
// header (FormatOf returns None, RateLimits.Add reads nothing), so that
// bench/run.sh can measure what the accounting costs. No release is built
// with this tag.
const enabled = false
