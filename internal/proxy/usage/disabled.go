//go:build keywarden_nousage

package usage

// enabled is false: this build reads no response body and no rate-limit
// header (FormatOf returns None, ReadRateLimits reports nothing), so that
// bench/run.sh can measure what the accounting costs. No release is built
// with this tag.
const enabled = false
