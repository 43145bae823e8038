package anthropictest

import (
	"encoding/json"
	"io"
	"strconv"
	"sync"
)

// The hot path writes JSON by appending to pooled buffers and reads the
// few request fields it validates with a scanner over the top level of the
// body: no reflection, no per-request maps.

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 1<<20 {
		return // a huge body: let it go
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// readBody appends r to buf, up to limit bytes; tooLarge reports a body
// longer than that.
func readBody(r io.Reader, buf []byte, limit int) (out []byte, tooLarge bool, err error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			return buf, true, nil
		}
		if err == io.EOF {
			return buf, false, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
}

// appendString appends s as a JSON string.
func appendString[S ~string | ~[]byte](b []byte, s S) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// messageRequest holds the fields of a Messages or count_tokens body that
// the fake validates.
type messageRequest struct {
	model                 []byte
	hasModel, modelString bool
	maxTokens             int64
	hasMax, maxInt        bool
	stream, streamBool    bool
	hasStream             bool
	hasMessages, msgList  bool
	messages              int
	tokens                int // a rough input token estimate: bytes / 4
}

// scanMessage reads the top level of b, a valid JSON document. ok is false
// when b is not an object.
func scanMessage(b []byte) (m messageRequest, ok bool) {
	m.tokens = max(len(b)/4, 1)
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return m, false
	}
	i++
	for {
		i = skipSpace(b, i)
		if b[i] == ',' {
			i = skipSpace(b, i+1)
		}
		if b[i] == '}' {
			return m, true
		}
		ke := endString(b, i)
		name := b[i+1 : ke-1]
		i = skipSpace(b, ke) + 1 // the colon
		i = skipSpace(b, i)
		ve := endValue(b, i)
		v := b[i:ve]
		switch string(name) {
		case "model":
			m.hasModel = true
			m.model, m.modelString = stringValue(v)
		case "max_tokens":
			m.hasMax = true
			m.maxTokens, m.maxInt = intValue(v)
		case "stream":
			m.hasStream = true
			m.stream, m.streamBool = string(v) == "true", string(v) == "true" || string(v) == "false"
		case "messages":
			m.hasMessages = true
			if v[0] == '[' {
				m.msgList = true
				m.messages = countElements(v)
			}
		}
		i = ve
	}
}

// validate returns the invalid_request_error of m, or nil.
func (m *messageRequest) validate(needMax bool) *apiError {
	bad := func(msg string) *apiError { return &apiError{400, "invalid_request_error", msg} }
	switch {
	case !m.hasModel:
		return bad("model: Field required")
	case !m.modelString:
		return bad("model: Input should be a valid string")
	case !m.hasMessages:
		return bad("messages: Field required")
	case !m.msgList:
		return bad("messages: Input should be a valid list")
	case m.messages == 0:
		return bad("messages: at least one message is required")
	case needMax && !m.hasMax:
		return bad("max_tokens: Field required")
	case needMax && !m.maxInt:
		return bad("max_tokens: Input should be a valid integer")
	case needMax && m.maxTokens < 1:
		return bad("max_tokens: Input should be greater than or equal to 1")
	case m.hasStream && !m.streamBool:
		return bad("stream: Input should be a valid boolean")
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// endString returns the index just after the string starting at b[i].
func endString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// endValue returns the index just after the value starting at b[i].
func endValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return endString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = endString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	return j
}

// countElements counts the elements of the array v.
func countElements(v []byte) int {
	i := skipSpace(v, 1)
	if v[i] == ']' {
		return 0
	}
	n := 0
	for {
		n++
		i = skipSpace(v, endValue(v, i))
		if v[i] == ']' {
			return n
		}
		i = skipSpace(v, i+1) // the comma
	}
}

// stringValue returns the content of the JSON string v, unescaped.
func stringValue(v []byte) ([]byte, bool) {
	if v[0] != '"' {
		return nil, false
	}
	raw := v[1 : len(v)-1]
	for _, c := range raw {
		if c == '\\' {
			var s string
			if json.Unmarshal(v, &s) != nil {
				return nil, false
			}
			return []byte(s), true
		}
	}
	return raw, true
}

func intValue(v []byte) (int64, bool) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}
