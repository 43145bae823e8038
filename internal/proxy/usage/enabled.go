//go:build !keywarden_nousage

package usage

// enabled is false only in a build with the keywarden_nousage tag, which
// bench/run.sh uses to measure the sidecar with the accounting off, side by
// side with the real build (see docs/benchmarks.md). No release is built
// with that tag.
const enabled = true
