//go:build !keywarden_no_vault

package all

import _ "github.com/keywarden/keywarden/providers/vault" // vault://
