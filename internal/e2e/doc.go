// Package e2e holds keywarden's end-to-end test of zero-downtime rotation:
// the sidecar proxy and a library client (the official Go SDK over
// providers.NewClient) under steady concurrent load against the fake Claude
// API of internal/anthropictest, while the real rotator, with the Anthropic
// issuer and probe, performs twenty rotations on each store (file, AWS
// Secrets Manager on moto, GCP Secret Manager on gcpsmfake, Vault KV v2 on a
// real Vault core). Run it with `make e2e`; `make test` runs it too.
//
// The package has no code of its own: everything is in its test.
package e2e
