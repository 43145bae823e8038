//go:build !keywarden_no_gcp

package all

import _ "github.com/keywarden/keywarden/providers/gcp" // gcpsm://
