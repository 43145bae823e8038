// Package all registers every keywarden store driver: import it for its side
// effect to make every URL scheme available to providers.Open.
//
// A binary can be built without the cloud drivers it does not use, which
// makes it smaller and its memory at rest lower (docs/benchmarks.md): the
// build tags keywarden_no_aws, keywarden_no_gcp and keywarden_no_vault each
// leave one out (env://, file:// and wif:// are always in). A store URL of a
// driver left out fails with an error that names the tag.
package all

import (
	_ "github.com/keywarden/keywarden/providers/env"        // env://
	_ "github.com/keywarden/keywarden/providers/federation" // wif:// (keyless: Workload Identity Federation)
	_ "github.com/keywarden/keywarden/providers/file"       // file://
)
