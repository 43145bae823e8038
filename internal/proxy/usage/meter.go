// Package usage reads token usage, the model and upstream error types from
// Claude API responses as their bytes pass, and prices the tokens.
//
// It knows nothing of an HTTP engine: a [Meter] is an io.Writer fed the
// response body, chunk by chunk, in whatever pieces the engine reads it;
// [Header] is the one accessor it needs for response headers. The Meter
// scans incrementally with a fixed amount of state (no body, event or line
// is ever held), so that a huge body or an endless stream costs no memory,
// and the caller writes each chunk on to its client before or after
// feeding it, never waiting for more.
//
// What it reads, as the Claude API documents it:
//   - JSON (a Messages response, or any error body): the top-level model
//     and usage {input_tokens, output_tokens, cache_creation_input_tokens,
//     cache_read_input_tokens, cache_creation: {ephemeral_1h_input_tokens}},
//     and error.type of an error body.
//   - SSE (a streamed Messages response): each event's data as JSON:
//     message_start's message.model and message.usage, message_delta's
//     usage (whose output_tokens is cumulative: the final count, not an
//     increment), and the error.type of an `event: error` frame.
//
// For each kind of token the last value seen wins: message_delta's
// cumulative counts replace message_start's. The same holds for the
// 1-hour cache's share of the cache writes (cache_creation.
// ephemeral_1h_input_tokens), which is no kind of its own: it is part of
// cache_creation_input_tokens, read only to price it (see [Usage]).
package usage

import "bytes"

// Kind is a kind of token, as the usage object counts them.
type Kind int

// The kinds of token.
const (
	Input Kind = iota
	Output
	CacheCreation
	CacheRead
	// NumKinds is the number of kinds.
	NumKinds
)

var kindNames = [NumKinds]string{"input", "output", "cache_creation", "cache_read"}

// String returns the kind's metric label: input, output, cache_creation or
// cache_read.
func (k Kind) String() string {
	if k < 0 || k >= NumKinds {
		return "unknown"
	}
	return kindNames[k]
}

// Tokens counts tokens by kind.
type Tokens [NumKinds]int64

// Total returns the sum over every kind.
func (t Tokens) Total() int64 {
	var n int64
	for _, v := range t {
		n += v
	}
	return n
}

// Usage is what one answer used: its tokens by kind, and how many of its
// cache creation tokens went to the 1-hour cache, which costs more than
// the 5-minute one (see [Price]). Tokens[CacheCreation] stays the total of
// both caches, as the usage object's cache_creation_input_tokens; the
// 1-hour share is not a metric kind.
type Usage struct {
	Tokens Tokens
	// CacheCreation1h is usage.cache_creation.ephemeral_1h_input_tokens:
	// the part of Tokens[CacheCreation] written to the 1-hour cache.
	CacheCreation1h int64
}

// Format is the format of a response body.
type Format uint8

// The formats a Meter reads.
const (
	// None: the body is not read.
	None Format = iota
	// JSON: one JSON document.
	JSON
	// SSE: a text/event-stream whose data are JSON documents.
	SSE
)

// FormatOf returns the Format the Meter reads for a Content-Type value:
// ContentFormat's, or None in a build with the accounting off.
func FormatOf[T string | []byte](contentType T) Format {
	if !enabled {
		return None
	}
	return ContentFormat(contentType)
}

// ContentFormat returns the Format of a Content-Type value (a string, or
// the bytes an HTTP engine holds): JSON for application/json, SSE for
// text/event-stream (case-insensitive, parameters ignored), else None. It
// is the one reading of a content type, for the accounting and for the
// proxy's flushing of event streams alike.
func ContentFormat[T string | []byte](ct T) Format {
	if i := indexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = trimSpace(ct)
	switch {
	case equalFold(ct, "application/json"):
		return JSON
	case equalFold(ct, "text/event-stream"):
		return SSE
	}
	return None
}

// Bounds of the scanner's state.
const (
	trackDepth = 4  // object levels whose keys are kept (message.usage.cache_creation.<key>)
	keyCap     = 32 // longest key kept (longer keys never match)
	valueCap   = 64 // longest model or error type kept (longer: truncated, flagged)
	fieldCap   = 8  // longest SSE field name kept
	eventCap   = 16 // longest SSE event name kept
)

// Meter reads one response body. The zero value reads nothing until Reset.
// A Meter is not safe for concurrent use; reuse it with Reset.
type Meter struct {
	format  Format
	tokens  Tokens
	seen    [NumKinds]bool
	cache1h int64 // Usage.CacheCreation1h

	model    [valueCap]byte
	modelLen int // -1: longer than valueCap
	errType  [valueCap]byte
	errLen   int // 0: none; -1: too long

	js jsonState

	// SSE line state
	sse      sseState
	lastCR   bool
	field    [fieldCap]byte
	fieldLen int
	event    [eventCap]byte
	eventLen int  // -1: longer than eventCap
	isEvent  bool // the field being read is "event"
}

type sseState uint8

const (
	sseLineStart sseState = iota
	sseField
	sseSpace // after "data:", an optional space
	sseData
	sseSkip // rest of a line of another field
)

// Reset makes m ready to read a new body of format f.
func (m *Meter) Reset(f Format) {
	*m = Meter{format: f}
}

// Format returns the format m reads.
func (m *Meter) Format() Format { return m.format }

// Write scans p. It never fails and never keeps p.
func (m *Meter) Write(p []byte) (int, error) {
	switch m.format {
	case JSON:
		m.scanJSON(p)
	case SSE:
		m.scanSSE(p)
	}
	return len(p), nil
}

// Tokens returns the tokens read so far, and which kinds were seen.
func (m *Meter) Tokens() (Tokens, [NumKinds]bool) { return m.tokens, m.seen }

// Usage returns the tokens read so far with the 1-hour cache's share of
// the cache writes, for [Catalog.UsageCost].
func (m *Meter) Usage() Usage { return Usage{Tokens: m.tokens, CacheCreation1h: m.cache1h} }

// Model returns the model named in the body, nil when none was seen. It is
// valid until the next Reset. A name longer than 64 bytes is returned
// truncated with a trailing '…' marker byte 0xff, so that it matches no
// known model.
func (m *Meter) Model() []byte {
	switch {
	case m.modelLen < 0:
		return append(m.model[:valueCap-1:valueCap-1], 0xff)
	case m.modelLen == 0:
		return nil
	}
	return m.model[:m.modelLen]
}

// ErrorType returns the error.type of an error body or SSE error event,
// nil when none was seen; valid until the next Reset (a type longer than
// 64 bytes ends in 0xff, as Model).
func (m *Meter) ErrorType() []byte {
	switch {
	case m.errLen < 0:
		return append(m.errType[:valueCap-1:valueCap-1], 0xff)
	case m.errLen == 0:
		return nil
	}
	return m.errType[:m.errLen]
}

func (m *Meter) scanSSE(p []byte) {
	for i := 0; i < len(p); {
		c := p[i]
		switch m.sse {
		case sseLineStart:
			if c == '\n' && m.lastCR {
				m.lastCR = false
				i++
				continue
			}
			m.lastCR = false
			if c == '\n' || c == '\r' {
				m.lastCR = c == '\r'
				m.endJSON() // a blank line dispatches the event
				m.eventLen = 0
				i++
				continue
			}
			m.sse, m.fieldLen = sseField, 0
		case sseField:
			switch c {
			case ':':
				m.sse, m.isEvent = sseSkip, false
				switch {
				case m.fieldLen == 4 && string(m.field[:4]) == "data" && m.wanted():
					m.sse = sseSpace
				case m.fieldLen == 5 && string(m.field[:5]) == "event":
					m.sse, m.isEvent, m.eventLen = sseSpace, true, 0
				}
				i++
			case '\n', '\r':
				m.eol(c) // a field without a value: nothing to read
				i++
			default:
				if m.fieldLen < fieldCap {
					m.field[m.fieldLen] = c
				}
				m.fieldLen++
				i++
			}
		case sseSpace:
			m.sse = sseData
			if c == ' ' {
				i++
			}
		case sseData:
			j := lineEnd(p[i:])
			if m.isEvent {
				m.appendEvent(p[i : i+max(j, 0)])
				if j < 0 {
					m.appendEvent(p[i:])
					return
				}
			} else {
				if j < 0 {
					m.scanJSON(p[i:])
					return
				}
				m.scanJSON(p[i : i+j])
				m.scanJSON(newline) // data lines join with a newline
			}
			m.eol(p[i+j])
			i += j + 1
		case sseSkip:
			j := lineEnd(p[i:])
			if j < 0 {
				return
			}
			m.eol(p[i+j])
			i += j + 1
		}
	}
}

var newline = []byte{'\n'}

// lineEnd returns the index of the first CR or LF in p, or -1.
func lineEnd(p []byte) int {
	j := bytes.IndexByte(p, '\n')
	seg := p
	if j >= 0 {
		seg = p[:j]
	}
	if k := bytes.IndexByte(seg, '\r'); k >= 0 {
		return k
	}
	return j
}

func (m *Meter) appendEvent(b []byte) {
	if m.eventLen < 0 {
		return
	}
	if m.eventLen+len(b) > eventCap {
		m.eventLen = -1
		return
	}
	m.eventLen += copy(m.event[m.eventLen:], b)
}

// wanted reports whether the data of the current event are read: those of
// message_start, message_delta and error events, and of events without a
// name. The others (content_block_delta above all, the bulk of a stream)
// are skipped unread.
func (m *Meter) wanted() bool {
	switch string(m.event[:max(m.eventLen, 0)]) {
	case "", "message_start", "message_delta", "error":
		return m.eventLen >= 0
	}
	return false
}

func (m *Meter) eol(c byte) {
	m.sse, m.lastCR = sseLineStart, c == '\r'
}

// Small string helpers, so that the package needs no strings import on
// its hot path.
func indexByte[T string | []byte](s T, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func trimSpace[T string | []byte](s T) T {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// equalFold reports whether s equals lower, a lower-case ASCII string,
// ignoring the case of s's letters.
func equalFold[T string | []byte](s T, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
