//go:build !keywarden_no_aws

package all

import _ "github.com/keywarden/keywarden/providers/aws" // awssm://
