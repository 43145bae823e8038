package providers_test

import (
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
)

func TestDecodePayload(t *testing.T) {
	for _, tc := range []struct {
		name, in, field, key, id, err string
	}{
		{name: "raw key", in: "  " + keyA + "\n", key: keyA},
		{name: "raw key CRLF", in: keyA + "\r\n", key: keyA},
		{name: "object", in: `{"api_key":"` + keyA + `","key_id":"apikey_1"}`, key: keyA, id: "apikey_1"},
		{name: "object null id", in: `{"api_key":"` + keyA + `","key_id":null}`, key: keyA},
		{name: "other field", in: `{"token":"` + keyA + `"}`, field: "token", key: keyA},
		{name: "field empty", in: `{"api_key":""}`, err: "is empty"},
		{name: "field null", in: `{"api_key":null}`, err: "is empty"},
		{name: "field number", in: `{"api_key":1}`, err: "not a string"},
		{name: "id number", in: `{"api_key":"x","key_id":2}`, err: `"key_id" is not a string`},
		{name: "id with space", in: `{"api_key":"x","key_id":"apikey 2"}`, err: `"key_id": key id holds white space at byte 6`},
		// A key given as the id would be printed in full by check and status.
		{name: "key as id", in: `{"api_key":"` + keyA + `","key_id":"` + keyB + `"}`, err: `"key_id": key id is shaped like a key`},
		{name: "JWT as id", in: `{"api_key":"` + keyA + `","key_id":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}`, err: "shaped like a key"},
		{name: "no field", in: `{"x":"y"}`, err: `no field "api_key" (fields present: ["x"])`},
		{name: "truncated object", in: `{`, err: "not a valid JSON object"},
		{name: "empty", in: "", err: "payload is empty"},
		{name: "blank", in: " \n\t ", err: "payload is empty"},
		{name: "not UTF-8", in: "\xff\xfe", err: "UTF-8"},
		{name: "too large", in: strings.Repeat("k", providers.MaxPayload+1), err: "larger than"},
		// JSON that is not an object is not a key: every request would 401.
		{name: "null", in: "null", err: "the JSON literal null, not a key"},
		{name: "true", in: " true\n", err: "the JSON literal true"},
		{name: "false", in: "false", err: "the JSON literal false"},
		{name: "number", in: "123", err: "payload is a JSON number, not a key"},
		{name: "negative float", in: " -1.5e3\n", err: "payload is a JSON number"},
		{name: "duplicate field", in: `{"api_key":"` + keyA + `","api_key":"` + keyB + `"}`, err: `has the field "api_key" more than once`},
		{name: "duplicate other field", in: `{"api_key":"` + keyA + `","key_id":"a","key_id":"b"}`, err: `has the field "key_id" more than once`},
		{name: "array", in: `[]`, err: "payload is a JSON array, not a key"},
		{name: "array of key", in: `["` + keyA + `"]`, err: "payload is a JSON array"},
		{name: "JSON string", in: `"` + keyA + `"`, err: "payload is a JSON string, not a key; store the bare key (without quotes)"},
		{name: "half quoted", in: `"` + keyA, err: "like a JSON string but is not valid JSON"},
		// White space and control characters inside a key.
		{name: "inner space", in: "sk-ant-api03-abc def", err: "raw payload: the key holds white space at byte 16 of 20"},
		{name: "two lines", in: keyA + "\n" + keyB, err: "the key holds white space at byte 86"},
		{name: "tab", in: "abc\tdef", err: "white space at byte 3"},
		{name: "NUL", in: "abc\x00def", err: "a control character at byte 3"},
		{name: "escape", in: "abc\x1b[0mdef", err: "a control character at byte 3"},
		{name: "DEL", in: "abc\x7f", err: "a control character at byte 3"},
		{name: "non-ASCII", in: "sk-ant-api03-ключ", err: "outside printable ASCII at byte 13"},
		{name: "no-break space", in: "abc\u00a0def", err: "outside printable ASCII at byte 3"},
		{name: "field with newline", in: `{"api_key":"` + keyA + `\n"}`, err: `field "api_key": the key holds white space at byte 86`},
		{name: "field with space", in: `{"api_key":" ` + keyA + `"}`, err: `white space at byte 0`},
		{name: "field with NUL", in: `{"api_key":"ab\u0000c"}`, err: `a control character at byte 2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := providers.DecodePayload([]byte(tc.in), tc.field)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !codes.Is(err, codes.InvalidArgument) {
					t.Fatalf("DecodePayload: %v, want InvalidArgument containing %q", err, tc.err)
				}
				for _, k := range []string{keyA, keyB, keyA[13:30], "ключ", "def"} {
					if strings.Contains(tc.in, k) && strings.Contains(err.Error(), k) {
						t.Fatalf("the error quotes the payload: %v", err)
					}
				}
				return
			}
			if err != nil || p.Key.Reveal() != tc.key || p.KeyID != tc.id {
				t.Fatalf("DecodePayload = %s %q, %v", p.Key, p.KeyID, err)
			}
		})
	}
	for _, id := range []string{keyA, "prefix" + keyB, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"} {
		err := providers.CheckKeyID(id)
		if err == nil || !codes.Is(err, codes.InvalidArgument) || strings.Contains(err.Error(), id[10:]) {
			t.Errorf("CheckKeyID of a key-shaped id: %v, want InvalidArgument not echoing it", err)
		}
	}
	for _, id := range []string{"", "apikey_01Abc", "sk-short", "key_9"} {
		if err := providers.CheckKeyID(id); err != nil {
			t.Errorf("CheckKeyID(%q): %v", id, err)
		}
	}
	round, err := providers.DecodePayload(providers.EncodePayload(providers.Payload{Key: providers.NewSecret(keyB), KeyID: "apikey_9"}), "")
	if err != nil || round.Key.Reveal() != keyB || round.KeyID != "apikey_9" {
		t.Fatal("EncodePayload does not round-trip")
	}
}

// TestDecodePayloadFieldNames: a JSON payload without the configured field
// lists its short field names, but never a long one, which may be a key
// stored as a name by mistake.
func TestDecodePayloadFieldNames(t *testing.T) {
	_, err := providers.DecodePayload([]byte(`{"`+keyA+`":"x","sk-short":"y","key":"z","partial_key_hint":"w"}`), "")
	if err == nil {
		t.Fatal("decoded a payload without its field")
	}
	msg := err.Error()
	if !strings.Contains(msg, `["key","partial_key_hint"] and 2 not shown`) {
		t.Fatalf("field list: %v", err)
	}
	if strings.Contains(msg, keyA[:20]) || strings.Contains(msg, "sk-short") {
		t.Fatalf("the error lists a key-shaped field name: %v", err)
	}
}

// keyShaped finds runs that could be (part of) a key: 20 or more key
// characters in a row.
var keyShaped = regexp.MustCompile(`[A-Za-z0-9_-]{20,}`)

// FuzzDecodePayload: DecodePayload never panics; a decoded key is never
// empty and holds only printable ASCII without white space; a decoded key id
// likewise; and no error quotes a key-shaped part of the payload, nor the
// key another field of it holds.
func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{
		keyA, " " + keyA + "\r\n", `{"api_key":"` + keyA + `","key_id":"apikey_01"}`,
		`{"token":"` + keyA + `"}`, `{"` + keyA + `":1}`, "null", "[]", `"` + keyA + `"`, `["x"]`,
		"", " ", "a b", "a\x00b", "\xff", `{"api_key":"a\u0000b"}`, `{"api_key":"a\u2028b"}`,
		`{"api_key":"x","key_id":"a\tb"}`, `{"api_key":"x","api_key":"y"}`, `{"api_key":"x"} trailing`,
		"true", "12345", `{"a":{"b":[1,2,3]}}`,
	} {
		f.Add([]byte(s), "")
	}
	f.Add([]byte(`{"token":"`+keyA+`"}`), "token")
	f.Add([]byte(`{"api_key":"`+keyA+`"}`), "token")
	f.Fuzz(func(t *testing.T, raw []byte, field string) {
		if len(field) > 64 {
			return
		}
		p, err := providers.DecodePayload(raw, field)
		if err != nil {
			if !codes.Is(err, codes.InvalidArgument) {
				t.Fatalf("error without InvalidArgument: %v", err)
			}
			msg := err.Error()
			for _, run := range keyShaped.FindAllString(string(raw), -1) {
				if strings.Contains(msg, run) && !strings.Contains(field, run) {
					t.Fatalf("the error %q quotes a key-shaped part of the payload", msg)
				}
			}
			// The key of the default field, when the payload holds one,
			// never shows in an error about another field.
			if dp, derr := providers.DecodePayload(raw, ""); derr == nil && len(dp.Key.Reveal()) >= 20 && strings.Contains(msg, dp.Key.Reveal()) {
				t.Fatalf("the error %q quotes the key", msg)
			}
			return
		}
		k := p.Key.Reveal()
		if k == "" {
			t.Fatal("decoded an empty key")
		}
		for _, s := range []string{k, p.KeyID} {
			for _, r := range s {
				if r <= ' ' || r > '~' || unicode.IsSpace(r) || unicode.IsControl(r) {
					t.Fatalf("decoded a key or id holding %U", r)
				}
			}
		}
		// What EncodePayload writes decodes to the same key and id.
		round, err := providers.DecodePayload(providers.EncodePayload(p), "")
		if err != nil || !round.Key.Equal(p.Key) || round.KeyID != p.KeyID {
			t.Fatalf("EncodePayload of a decoded payload does not round-trip: %v", err)
		}
	})
}
