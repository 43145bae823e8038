package providers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/keywarden/keywarden/providers/codes"
)

// MaxPayload is the largest payload keywarden accepts from a store: a key
// with some metadata fits in far less, and GCP's own limit is 64 KiB.
const MaxPayload = 64 << 10

// DefaultField is the JSON field that holds the key when the payload is a
// JSON object and no field is configured.
const DefaultField = "api_key"

// KeyIDField is the JSON field of a payload that holds the key's upstream
// id; it cannot also hold the key (Options.Field).
const KeyIDField = "key_id"

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
// trimmed.
//
// It is strict, so that a payload that cannot work fails here, clearly,
// rather than as a 401 on every request: the key must be printable ASCII
// without white space (every API key format is), and a payload that is JSON
// but not an object (null, true, false, an array, a string such as
// "\"sk-ant-…\"") is refused. Errors name the problem and, for a bad
// character, its byte offset; they never echo the payload or any part of it.
func DecodePayload(raw []byte, field string) (Payload, error) {
	p, err := decodePayload(raw, field)
	if err != nil {
		return Payload{}, fmt.Errorf("providers: %w", err)
	}
	return p, nil
}

// decodePayload is DecodePayload with errors not yet prefixed, for callers
// that put them in a chain of their own.
func decodePayload(raw []byte, field string) (Payload, error) {
	if field == "" {
		field = DefaultField
	}
	if len(raw) > MaxPayload {
		return Payload{}, codes.Errorf(codes.InvalidArgument, "payload of %d bytes is larger than the %d-byte limit", len(raw), MaxPayload)
	}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return Payload{}, codes.Errorf(codes.InvalidArgument, "payload is empty")
	}
	if !utf8.Valid(trimmed) {
		return Payload{}, codes.Errorf(codes.InvalidArgument, "payload is not valid UTF-8")
	}
	switch {
	case trimmed[0] == '{':
		return decodeObject(trimmed, field)
	case trimmed[0] == '"' || trimmed[0] == '[':
		kind := "string"
		if trimmed[0] == '[' {
			kind = "array"
		}
		if !json.Valid(trimmed) {
			return Payload{}, codes.Errorf(codes.InvalidArgument, "payload starts with %q like a JSON %s but is not valid JSON; store the bare key or a JSON object {%q: \"...\"}", trimmed[0], kind, field)
		}
		return Payload{}, codes.Errorf(codes.InvalidArgument, "payload is a JSON %s, not a key; store the bare key (without quotes) or a JSON object {%q: \"...\"}", kind, field)
	case string(trimmed) == "null" || string(trimmed) == "true" || string(trimmed) == "false":
		return Payload{}, codes.Errorf(codes.InvalidArgument, "payload is the JSON literal %s, not a key; store the bare key or a JSON object {%q: \"...\"}", trimmed, field)
	case (trimmed[0] == '-' || trimmed[0] >= '0' && trimmed[0] <= '9') && json.Valid(trimmed):
		// No API key is a number; a number here is a mistake (a wrong
		// field, a stray value), never said by its value.
		return Payload{}, codes.Errorf(codes.InvalidArgument, "payload is a JSON number, not a key; store the bare key or a JSON object {%q: \"...\"}", field)
	}
	if err := checkKey(trimmed); err != nil {
		return Payload{}, fmt.Errorf("raw payload: %w", err)
	}
	return Payload{Key: NewSecret(string(trimmed))}, nil
}

func decodeObject(b []byte, field string) (Payload, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		// json errors can quote input; say only what is wrong.
		return Payload{}, codes.Errorf(codes.InvalidArgument, "payload starts with '{' but is not a valid JSON object")
	}
	if name, dup := duplicateField(b); dup {
		// encoding/json keeps the last of duplicates silently: a reader
		// of the document could take the other one for the key.
		return Payload{}, codes.Errorf(codes.InvalidArgument, "JSON payload has the field %q more than once; keep one", name)
	}
	rawKey, ok := obj[field]
	if !ok {
		return Payload{}, codes.Errorf(codes.InvalidArgument, "JSON payload has no field %q (fields present: %s); set field= to the one holding the key", field, fieldNames(obj))
	}
	var key string
	if err := json.Unmarshal(rawKey, &key); err != nil {
		return Payload{}, codes.Errorf(codes.InvalidArgument, "JSON payload field %q is not a string", field)
	}
	if key == "" {
		return Payload{}, codes.Errorf(codes.InvalidArgument, "JSON payload field %q is empty", field)
	}
	if err := checkKey([]byte(key)); err != nil {
		return Payload{}, fmt.Errorf("JSON payload field %q: %w", field, err)
	}
	p := Payload{Key: NewSecret(key)}
	if rawID, ok := obj[KeyIDField]; ok {
		if err := json.Unmarshal(rawID, &p.KeyID); err != nil {
			return Payload{}, codes.Errorf(codes.InvalidArgument, "JSON payload field \"key_id\" is not a string")
		}
		if err := checkKeyID(p.KeyID); err != nil {
			return Payload{}, fmt.Errorf("JSON payload field \"key_id\": %w", err)
		}
	}
	return p, nil
}

// duplicateField returns the first top-level field name that b, a valid
// JSON object, holds more than once.
func duplicateField(b []byte) (string, bool) {
	d := json.NewDecoder(bytes.NewReader(b))
	if _, err := d.Token(); err != nil { // '{'
		return "", false
	}
	seen := map[string]bool{}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return "", false
		}
		name, _ := t.(string)
		if seen[name] {
			return name, true
		}
		seen[name] = true
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return "", false
		}
	}
	return "", false
}

// checkKey accepts a key of printable ASCII without white space, and names
// the first other byte by its offset and class, never by its value.
func checkKey(k []byte) error {
	if i, class := badByte(k); i >= 0 {
		return codes.Errorf(codes.InvalidArgument, "the key holds %s at byte %d of %d; a key is printable ASCII without spaces (a stray quote, line break or pasted space?)", class, i, len(k))
	}
	return nil
}

// CheckKeyID accepts an upstream key id ("" included) made of printable
// ASCII without white space, as every issuer's ids are, so that an id
// prints safely in tables and logs. It refuses an id shaped like a key (by
// the rule RedactKeys is built on): ids are printed in full, so a key
// given as an id by mistake would be printed too. Its errors never echo
// the id.
func CheckKeyID(id string) error {
	if err := checkKeyID(id); err != nil {
		return fmt.Errorf("providers: %w", err)
	}
	return nil
}

func checkKeyID(id string) error {
	if i, class := badByte([]byte(id)); i >= 0 {
		return codes.Errorf(codes.InvalidArgument, "key id holds %s at byte %d; an id is printable ASCII without spaces", class, i)
	}
	if KeyShaped(id) {
		return codes.Errorf(codes.InvalidArgument, "key id is %s, not an id: give the key's id (such as apikey_01…), never the key itself", KeyShapes)
	}
	return nil
}

// ErrKeyShapedID is CheckVersionID's refusal.
var ErrKeyShapedID = codes.Errorf(codes.InvalidArgument, "a version's id is %s; ids are printed, so the key must be in the version's value, never in its id: fix the store", KeyShapes)

// CheckVersionID refuses (ErrKeyShapedID) the id of a store's version
// shaped like a key: a hand-written file store with "id" and "value"
// swapped, a store's bug. Version ids are printed as they are (check's
// table, the key_info metric's label, rotation's results, events, record
// and status), so every reader of versions refuses such a one, never
// quoting it.
func CheckVersionID(id string) error {
	if KeyShaped(id) {
		return ErrKeyShapedID
	}
	return nil
}

// badByte returns the offset and class of the first byte that is not
// printable ASCII (0x21-0x7e), or -1.
func badByte(b []byte) (int, string) {
	for i, c := range b {
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f':
			return i, "white space"
		case c < 0x20 || c == 0x7f:
			return i, "a control character"
		case c >= 0x80:
			return i, "a character outside printable ASCII"
		}
	}
	return -1, ""
}

// EncodePayload encodes a key and its upstream id as the JSON object that
// DecodePayload reads with the default field.
func EncodePayload(p Payload) []byte { return EncodePayloadField(p, DefaultField) }

// EncodePayloadField encodes a key and its upstream id as a JSON object with
// the key in field (DefaultField when ""), as DecodePayload reads it with
// that field.
func EncodePayloadField(p Payload, field string) []byte {
	if field == "" {
		field = DefaultField
	}
	obj := map[string]string{field: p.Key.Reveal()}
	if p.KeyID != "" && field != KeyIDField {
		obj[KeyIDField] = p.KeyID
	}
	b, _ := json.Marshal(obj)
	return b
}

// maxListedField is the longest field name an error lists: longer names are
// only counted, so that a key stored by mistake as a field name never
// reaches a message.
const maxListedField = 16

// fieldNames lists the payload's field names for an error message: the
// short identifier-like ones by name, the others only by count.
func fieldNames(obj map[string]json.RawMessage) string {
	if len(obj) == 0 {
		return "none"
	}
	names := make([]string, 0, len(obj))
	others := 0
	for k := range obj {
		if listable(k) {
			names = append(names, k)
		} else {
			others++
		}
	}
	sort.Strings(names)
	b, _ := json.Marshal(names)
	out := string(b)
	if others > 0 {
		out += fmt.Sprintf(" and %d not shown", others)
	}
	return out
}

func listable(name string) bool {
	if name == "" || len(name) > maxListedField || strings.HasPrefix(name, "sk-") {
		return false
	}
	for _, c := range []byte(name) {
		if !(c == '_' || c == '-' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
