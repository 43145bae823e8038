package aws

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/keywarden/keywarden/providers/codes"
)

// Staging labels.
const (
	labelCurrent  = "AWSCURRENT"
	labelPending  = "AWSPENDING"
	labelPrevious = "AWSPREVIOUS"
	// labelRecord marks the version holding the rotation record.
	labelRecord = "KWRECORD"
	// labelBase marks the placeholder version of a secret the driver
	// created, when it could not be the secret's first version.
	labelBase = "KWBASE"
)

// VersionId prefixes of keywarden's bookkeeping versions, which readers never
// see.
const (
	recordPrefix = "kwrec-"
	basePrefix   = "kwbase-"
)

// baseID is the VersionId of the placeholder version a secret created by the
// driver starts with. Being constant, concurrent creators write the same
// version, which AWS accepts as one idempotent request.
const baseID = basePrefix + "placeholder-v1-000000000000000000"

// baseValue is the placeholder's content, for whoever reads AWSCURRENT with
// another tool before keywarden's first promotion.
const baseValue = `{"keywarden":"placeholder: no key has been promoted to AWSCURRENT yet"}`

// AWS accepts ClientRequestTokens (and so VersionIds) of 32 to 64 characters.
const (
	minVersionID = 32
	maxVersionID = 64
	// maxToken is the longest rotation token: "kw" + 2 digits + "-" + token.
	maxToken = maxVersionID - 5
)

// hidden reports whether version id is one of keywarden's bookkeeping
// versions.
func hidden(id string) bool {
	return strings.HasPrefix(id, recordPrefix) || strings.HasPrefix(id, basePrefix)
}

// pendingID derives the VersionId of the PENDING version written with
// rotation token: "kw", the token's length in two digits, "-", the token,
// padded with zeros to AWS's minimum length. The token can be read back with
// tokenOf. Tokens are 1 to 59 letters, digits, '-' or '_'; the rotator's
// UUIDs are.
func pendingID(token string) (string, error) {
	if token == "" || len(token) > maxToken || strings.TrimFunc(token, tokenRune) != "" {
		return "", codes.Errorf(codes.InvalidArgument,
			"aws: rotation token must be 1 to %d letters, digits, '-' or '_' (got %d characters)", maxToken, len(token))
	}
	id := fmt.Sprintf("kw%02d-%s", len(token), token)
	if len(id) < minVersionID {
		id += strings.Repeat("0", minVersionID-len(id))
	}
	return id, nil
}

func tokenRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}

// tokenOf returns the rotation token encoded in a VersionId made by
// pendingID, or "" for any other VersionId (versions written by hand).
func tokenOf(id string) string {
	if len(id) < minVersionID || !strings.HasPrefix(id, "kw") || id[4] != '-' {
		return ""
	}
	n, err := strconv.Atoi(id[2:4])
	if err != nil || n < 1 || 5+n > len(id) {
		return ""
	}
	tok := id[5 : 5+n]
	if want, err := pendingID(tok); err != nil || want != id {
		return ""
	}
	return tok
}

// recordID derives the VersionId of the record revision that follows rev.
// Every writer of the successor of rev derives the same id, so AWS lets only
// one of them create it.
func recordID(rev string) string {
	sum := sha256.Sum256([]byte("keywarden/record/v1\x00" + rev))
	return recordPrefix + hex.EncodeToString(sum[:20])
}
