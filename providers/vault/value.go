package vault

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// Field names of the versions the driver writes.
const (
	valueField       = "value"
	valueBase64Field = "value_base64"
)

// encodeValue returns the KV data of a version holding value: {"value": v}
// for UTF-8 payloads (keys, JSON), {"value_base64": ...} otherwise.
func encodeValue(value []byte) map[string]any {
	if utf8.Valid(value) {
		return map[string]any{valueField: string(value)}
	}
	return map[string]any{valueBase64Field: base64.StdEncoding.EncodeToString(value)}
}

// decodeValue returns the payload of a version: the single "value" (or
// "value_base64") field as written by the driver or by
// `vault kv put secret/NAME value=...`, or else the JSON object of all the
// fields, for hand-written secrets such as api_key=... key_id=....
func decodeValue(data map[string]any) ([]byte, error) {
	if len(data) == 1 {
		if v, ok := data[valueField].(string); ok {
			return []byte(v), nil
		}
		if v, ok := data[valueBase64Field].(string); ok {
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return nil, errors.New("field value_base64 is not base64")
			}
			return b, nil
		}
	}
	if len(data) == 0 {
		return nil, errors.New("the version holds no fields")
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, errors.New("the version's fields do not encode as JSON")
	}
	return b, nil
}
