package rotation

import (
	"bytes"
	"encoding/json"

	"github.com/keywarden/keywarden/providers"
)

// encodeValue returns the payload to store for a new key. When the current
// payload is a JSON object, the new one keeps its other fields (metadata
// such as a base URL) and replaces the key (in field) and the key id. A new
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
