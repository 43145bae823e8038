//go:build keywarden_no_gcp

package all

import "github.com/keywarden/keywarden/providers"

func init() { providers.RegisterLeftOut("gcpsm", "keywarden_no_gcp") }
