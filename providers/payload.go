package providers

import (
	"bytes"
	"encoding/json"
	"sort"
	"unicode/utf8"

	"github.com/keywarden/keywarden/providers/codes"
)

// MaxPayload is the largest payload keywarden accepts from a store: a key
// with some metadata fits in far less, and GCP's own limit is 64 KiB.
const MaxPayload = 64 << 10

// DefaultField is the JSON field that holds the key when the payload is a
// JSON object and no field is configured.
const DefaultField = "api_key"

// Payload is a decoded secret payload.
type Payload struct {
	// Key is the key value.
	Key Secret
	// KeyID is the upstream's id of the key (for example apikey_01...), which
	// rotation needs to revoke it; "" when the payload does not carry it.
	KeyID string
}

// DecodePayload decodes a stored payload. A payload that starts with '{' is
// a JSON object whose field (DefaultField when "") holds the key, with an
// optional "key_id"; anything else is the raw key, surrounding white space
// trimmed. Errors never echo the payload.
func DecodePayload(raw []byte, field string) (Payload, error) {
	if field == "" {
		field = DefaultField
	}
	if len(raw) > MaxPayload {
		return Payload{}, codes.Errorf(codes.InvalidArgument, "providers: payload of %d bytes is larger than the %d-byte limit", len(raw), MaxPayload)
	}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return Payload{}, codes.Errorf(codes.InvalidArgument, "providers: payload is empty")
	}
	if !utf8.Valid(trimmed) {
		return Payload{}, codes.Errorf(codes.InvalidArgument, "providers: payload is not valid UTF-8")
	}
	if trimmed[0] != '{' {
		if bytes.ContainsAny(trimmed, "\r\n\x00") {
			return Payload{}, codes.Errorf(codes.InvalidArgument, "providers: raw payload holds a line break or NUL; store the bare key or a JSON object")
		}
		return Payload{Key: NewSecret(string(trimmed))}, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &obj); err != nil {
		// json errors can quote input; report only the position class.
		return Payload{}, codes.Errorf(codes.InvalidArgument, "providers: payload starts with '{' but is not a valid JSON object")
	}
	rawKey, ok := obj[field]
	if !ok {
		return Payload{}, codes.Errorf(codes.InvalidArgument, "providers: JSON payload has no field %q (fields present: %s); set field= to the one holding the key", field, fieldNames(obj))
	}
	var key string
	if err := json.Unmarshal(rawKey, &key); err != nil {
		return Payload{}, codes.Errorf(codes.InvalidArgument, "providers: JSON payload field %q is not a string", field)
	}
	if key == "" {
		return Payload{}, codes.Errorf(codes.InvalidArgument, "providers: JSON payload field %q is empty", field)
	}
	p := Payload{Key: NewSecret(key)}
	if rawID, ok := obj["key_id"]; ok {
		if err := json.Unmarshal(rawID, &p.KeyID); err != nil {
			return Payload{}, codes.Errorf(codes.InvalidArgument, "providers: JSON payload field \"key_id\" is not a string")
		}
	}
	return p, nil
}

// EncodePayload encodes a key and its upstream id as the JSON object that
// DecodePayload reads with the default field.
func EncodePayload(p Payload) []byte {
	b, _ := json.Marshal(struct {
		APIKey string `json:"api_key"`
		KeyID  string `json:"key_id,omitempty"`
	}{p.Key.Reveal(), p.KeyID})
	return b
}

func fieldNames(obj map[string]json.RawMessage) string {
	if len(obj) == 0 {
		return "none"
	}
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	b, _ := json.Marshal(names)
	return string(b)
}
