package rotation

import (
	"bytes"
	"encoding/json"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
)

// checkedValue returns the payload to store for an issued key (see
// encodeValue) after reading it back the way every consumer does
// (providers.DecodePayload): a key that readers would refuse (white space,
// a character outside printable ASCII, an id shaped like a key...) is
// refused here, before it reaches the store, where it would strand the
// rotation. Its errors never hold the key.
func checkedValue(c Credential, field string, current []byte) ([]byte, error) {
	b := encodeValue(c, field, current)
	p, err := providers.DecodePayload(b, field)
	if err != nil {
		return nil, err
	}
	if !p.Key.Equal(c.Key) {
		// A bare key is read back trimmed.
		return nil, codes.Errorf(codes.InvalidArgument, "the key starts or ends with white space; a key is printable ASCII without spaces")
	}
	return b, nil
}

// salvageKeyID returns the key id of a stored payload that does not decode
// (a key readers refuse, written by an older keywarden), when the payload is
// a JSON object whose "key_id" is a valid id, so that the key can still be
// revoked when it is discarded; "" otherwise.
func salvageKeyID(raw []byte) string {
	var obj struct {
		KeyID string `json:"key_id"`
	}
	if json.Unmarshal(bytes.TrimSpace(raw), &obj) != nil || providers.CheckKeyID(obj.KeyID) != nil {
		return ""
	}
	return obj.KeyID
}

// encodeValue returns the payload to store for a new key. When the current
// payload is a JSON object that consumers read (providers.DecodePayload),
// the new one keeps its other fields (metadata such as a base URL) and
// replaces the key (in field) and the key id; from a payload that does not
// decode (a hand edit with the key under a wrong field, say) nothing is
// carried over: its unknown fields may hold the old key. A new
// key with an id is stored as a JSON object; one without, under a current
// payload that is a bare key or absent, as a bare key (which DecodePayload
// reads whatever the configured field).
func encodeValue(c Credential, field string, current []byte) []byte {
	if field == "" {
		field = providers.DefaultField
	}
	obj := map[string]any{}
	cur := bytes.TrimSpace(current)
	isJSON := len(cur) > 0 && cur[0] == '{' && json.Unmarshal(cur, &obj) == nil
	if isJSON {
		if _, err := providers.DecodePayload(cur, field); err != nil {
			isJSON = false
		}
	}
	if !isJSON {
		if c.KeyID == "" {
			return []byte(c.Key.Reveal())
		}
		obj = map[string]any{}
	}
	obj[field] = c.Key.Reveal()
	if c.KeyID != "" {
		obj["key_id"] = c.KeyID
	} else {
		delete(obj, "key_id")
	}
	b, _ := json.Marshal(obj)
	return b
}
