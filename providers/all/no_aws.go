//go:build keywarden_no_aws

package all

import "github.com/keywarden/keywarden/providers"

func init() { providers.RegisterLeftOut("awssm", "keywarden_no_aws") }
