package usage

import "bytes"

// jsonState is an incremental JSON scanner that keeps only the keys of the
// outer object levels and the few values a Meter reads. It is lenient:
// bytes that are not JSON are skipped, never an error, so that a broken
// body costs nothing more than a missed count.
type jsonState struct {
	state   jstate
	depth   int                      // open containers
	objBits uint64                   // bit i: level i is an object
	key     [trackDepth][keyCap]byte // current key per tracked level
	keyLen  [trackDepth]int          // -1: too long
	target  target                   // what the value being read is
	escape  bool                     // in a string, after a backslash
	skip    int                      // jSkip: containers open in the skipped value
	inStr   bool                     // jSkip: in a string
	num     int64                    // the number being read
	numOK   bool                     // digits only so far, no overflow
}

type jstate uint8

const (
	jValue jstate = iota
	jKeyOrEnd
	jKey
	jColon
	jAfter
	jString
	jNumber
	jLiteral
	jSkip // inside a value that cannot hold what is read
)

type target int8

const (
	tNone target = iota
	tModel
	tError
	tCache1h // usage.cache_creation.ephemeral_1h_input_tokens
	tKind    // tKind + Kind
)

// mayHold reports whether a container opening now can hold a value a
// Meter reads: the root, and the objects under "usage", "error",
// "message", "message"."usage", and the cache_creation object of either
// usage. Every other container is skipped with a tighter loop that only
// counts brackets and strings.
//
// The deepest value read is message.usage.cache_creation's
// ephemeral_1h_input_tokens (an SSE message_start): four object levels,
// whose keys are levels 0-3 of the trackDepth kept.
func (j *jsonState) mayHold() bool {
	switch j.depth {
	case 0:
		return true
	case 1:
		switch string(j.keyAt(0)) {
		case "usage", "error", "message":
			return true
		}
	case 2:
		k0, k1 := string(j.keyAt(0)), string(j.keyAt(1))
		return k0 == "message" && k1 == "usage" || k0 == "usage" && k1 == "cache_creation"
	case 3:
		return j.inMessageUsage() && string(j.keyAt(2)) == "cache_creation"
	}
	return false
}

// inMessageUsage reports whether levels 0 and 1 are message.usage (the
// usage of an SSE message_start).
func (j *jsonState) inMessageUsage() bool {
	return string(j.keyAt(0)) == "message" && string(j.keyAt(1)) == "usage"
}

// cacheField returns the target of a key of a usage's cache_creation
// object: only the 1-hour count is read (the 5-minute one is the rest of
// cache_creation_input_tokens).
func cacheField(k []byte) target {
	if string(k) == "ephemeral_1h_input_tokens" {
		return tCache1h
	}
	return tNone
}

// skipValue skips the bytes of a skipped container from p[i]; it returns
// the index of the last byte consumed.
func (m *Meter) skipValue(p []byte, i int) int {
	j := &m.js
	for ; i < len(p); i++ {
		if j.inStr {
			end, closed, esc := stringEnd(p[i:], j.escape)
			j.escape = esc
			if !closed {
				return len(p)
			}
			i += end
			j.inStr = false
			continue
		}
		switch p[i] {
		case '"':
			j.inStr, j.escape = true, false
		case '{', '[':
			j.skip++
		case '}', ']':
			j.skip--
			if j.skip == 0 {
				j.state = jAfter
				return i
			}
		}
	}
	return len(p)
}

// usageField returns the target of a key of a usage object.
func usageField(k []byte) target {
	switch string(k) {
	case "input_tokens":
		return tKind + target(Input)
	case "output_tokens":
		return tKind + target(Output)
	case "cache_creation_input_tokens":
		return tKind + target(CacheCreation)
	case "cache_read_input_tokens":
		return tKind + target(CacheRead)
	}
	return tNone
}

// keyAt returns the current key of tracked level i, nil when the level is
// an array or its key was too long.
func (j *jsonState) keyAt(i int) []byte {
	if j.objBits&(1<<i) == 0 || j.keyLen[i] < 0 {
		return nil
	}
	return j.key[i][:j.keyLen[i]]
}

// targetHere returns what a value starting now is.
func (j *jsonState) targetHere() target {
	switch j.depth {
	case 1:
		if string(j.keyAt(0)) == "model" {
			return tModel
		}
	case 2:
		k0, k1 := j.keyAt(0), j.keyAt(1)
		switch string(k0) {
		case "usage":
			return usageField(k1)
		case "error":
			if string(k1) == "type" {
				return tError
			}
		case "message":
			if string(k1) == "model" {
				return tModel
			}
		}
	case 3:
		switch {
		case j.inMessageUsage():
			return usageField(j.keyAt(2))
		case string(j.keyAt(0)) == "usage" && string(j.keyAt(1)) == "cache_creation":
			return cacheField(j.keyAt(2))
		}
	case 4:
		if j.inMessageUsage() && string(j.keyAt(2)) == "cache_creation" {
			return cacheField(j.keyAt(3))
		}
	}
	return tNone
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (j *jsonState) push(obj bool) {
	if j.depth < 64 {
		if obj {
			j.objBits |= 1 << j.depth
		} else {
			j.objBits &^= 1 << j.depth
		}
	}
	if j.depth < trackDepth {
		j.keyLen[j.depth] = 0
	}
	j.depth++
}

func (j *jsonState) pop() {
	if j.depth > 0 {
		j.depth--
	}
	j.state = jAfter
}

// scanJSON scans the next bytes of a JSON document.
func (m *Meter) scanJSON(p []byte) {
	j := &m.js
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch j.state {
		case jValue:
			switch {
			case isSpace(c):
			case (c == '{' || c == '[') && !j.mayHold():
				j.state, j.skip, j.inStr = jSkip, 1, false
			case c == '{':
				j.push(true)
				j.state = jKeyOrEnd
			case c == '[':
				j.push(false)
			case c == '}' || c == ']':
				j.pop()
			case c == '"':
				j.target, j.escape = j.targetHere(), false
				m.startValue()
				j.state = jString
			case c == '-' || '0' <= c && c <= '9':
				j.target = j.targetHere()
				j.num, j.numOK = 0, true
				j.state = jNumber
				i--
			default:
				j.state = jLiteral
			}
		case jKeyOrEnd:
			switch c {
			case '"':
				if j.depth >= 1 && j.depth <= trackDepth {
					j.keyLen[j.depth-1] = 0
				}
				j.escape = false
				j.state = jKey
			case '}', ']':
				j.pop()
			default:
				if !isSpace(c) { // lenient: a value where a key belongs
					j.state = jValue
					i--
				}
			}
		case jKey:
			end, closed, esc := stringEnd(p[i:], j.escape)
			m.appendKey(p[i : i+end])
			j.escape = esc
			if !closed {
				i = len(p)
				continue
			}
			i += end
			j.state = jColon
		case jColon:
			switch {
			case c == ':':
				j.state = jValue
			case !isSpace(c): // lenient: no colon
				j.state = jAfter
				i--
			}
		case jAfter:
			switch c {
			case ',':
				if j.inObject() {
					j.state = jKeyOrEnd
				} else {
					j.state = jValue
				}
			case '}', ']':
				j.pop()
			case ':':
				j.state = jValue
			case '"':
				// A key after a missing comma, or a new document: lenient.
				j.state = jKeyOrEnd
				if j.depth == 0 {
					j.state = jValue
				}
				i--
			default:
				if !isSpace(c) && j.depth == 0 {
					j.state = jValue // another document (SSE data)
					i--
				}
			}
		case jString:
			end, closed, esc := stringEnd(p[i:], j.escape)
			if j.target != tNone {
				m.appendValue(p[i : i+end])
			}
			j.escape = esc
			if !closed {
				i = len(p)
				continue
			}
			i += end
			j.state = jAfter
		case jNumber:
			switch {
			case '0' <= c && c <= '9':
				if j.numOK {
					d := int64(c - '0')
					if j.num > (1<<63-1-d)/10 {
						j.numOK = false
					} else {
						j.num = j.num*10 + d
					}
				}
			case c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E':
				j.numOK = false
			default:
				m.endNumber()
				i--
			}
		case jSkip:
			i = m.skipValue(p, i)
		case jLiteral:
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				j.state = jAfter
				i--
			}
		}
	}
}

// inObject reports whether the innermost open container is an object
// (known for the first 64 levels; deeper, objects are assumed, and the
// lenient states recover from a wrong guess).
func (j *jsonState) inObject() bool {
	if j.depth == 0 {
		return false
	}
	if j.depth > 64 {
		return true
	}
	return j.objBits&(1<<(j.depth-1)) != 0
}

// endJSON ends a document: an SSE event was dispatched.
func (m *Meter) endJSON() {
	if m.js.state == jNumber {
		m.endNumber()
	}
	m.js = jsonState{}
}

func (m *Meter) endNumber() {
	j := &m.js
	switch {
	case !j.numOK:
	case j.target >= tKind:
		k := Kind(j.target - tKind)
		m.tokens[k], m.seen[k] = j.num, true
	case j.target == tCache1h:
		m.cache1h = j.num
	}
	j.target = tNone
	j.state = jAfter
}

func (m *Meter) appendKey(b []byte) {
	j := &m.js
	l := j.depth - 1
	if l < 0 || l >= trackDepth || j.keyLen[l] < 0 {
		return
	}
	if j.keyLen[l]+len(b) > keyCap {
		j.keyLen[l] = -1
		return
	}
	j.keyLen[l] += copy(j.key[l][j.keyLen[l]:], b)
}

// startValue clears the value a string target is about to fill: the last
// value seen wins.
func (m *Meter) startValue() {
	switch m.js.target {
	case tModel:
		m.modelLen = 0
	case tError:
		m.errLen = 0
	default:
		m.js.target = tNone // a string where a number belongs
	}
}

func (m *Meter) appendValue(b []byte) {
	buf, n := m.model[:], &m.modelLen
	if m.js.target == tError {
		buf, n = m.errType[:], &m.errLen
	}
	if *n < 0 {
		return
	}
	if *n+len(b) > valueCap {
		copy(buf[*n:], b) // keep the first bytes, whatever the chunks
		*n = -1
		return
	}
	*n += copy(buf[*n:], b)
}

// stringEnd finds the end of a JSON string's remaining bytes in p: the
// index of the closing quote (closed) or len(p), skipping escapes. esc
// says that the previous chunk ended in a backslash; escAtEnd that this
// one does.
func stringEnd(p []byte, esc bool) (end int, closed, escAtEnd bool) {
	i := 0
	if esc {
		if len(p) == 0 {
			return 0, false, true
		}
		i = 1
	}
	// Short strings (keys, most values): a plain loop beats the calls.
	for n := min(len(p), i+24); i < n; i++ {
		switch p[i] {
		case '"':
			return i, true, false
		case '\\':
			i++
			if i >= len(p) {
				return len(p), false, true
			}
		}
	}
	for i < len(p) {
		q := bytes.IndexByte(p[i:], '"')
		seg := p[i:]
		if q >= 0 {
			seg = p[i : i+q]
		}
		b := bytes.IndexByte(seg, '\\')
		if b < 0 {
			if q < 0 {
				return len(p), false, false
			}
			return i + q, true, false
		}
		i += b + 2 // the backslash and the byte it escapes
		if i > len(p) {
			return len(p), false, true
		}
	}
	return len(p), false, false
}
