//go:build keywarden_no_vault

package all

import "github.com/keywarden/keywarden/providers"

func init() { providers.RegisterLeftOut("vault", "keywarden_no_vault") }
