// Package all registers every keywarden store driver: import it for its side
// effect to make every URL scheme available to providers.Open.
package all

import (
	_ "github.com/keywarden/keywarden/providers/aws"        // awssm://
	_ "github.com/keywarden/keywarden/providers/env"        // env://
	_ "github.com/keywarden/keywarden/providers/federation" // wif:// (keyless: Workload Identity Federation)
	_ "github.com/keywarden/keywarden/providers/file"       // file://
	_ "github.com/keywarden/keywarden/providers/gcp"        // gcpsm://
	_ "github.com/keywarden/keywarden/providers/vault"      // vault://
)
