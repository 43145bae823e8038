package anthropictest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// replyText is the text of every non-streamed answer.
const replyText = "Hello from the fake Claude API."

// readMessage reads and validates a Messages or count_tokens body. m
// points into *bp, which the caller puts back with putBuf once done.
func (s *Server) readMessage(r *http.Request, needMax bool) (m messageRequest, bp *[]byte, e *apiError) {
	if !isJSON(r.Header.Get("Content-Type")) {
		return m, nil, errContentType
	}
	if r.ContentLength > maxBody {
		return m, nil, errTooLarge
	}
	bp = getBuf()
	b, tooLarge, err := readBody(r.Body, (*bp)[:0], maxBody)
	*bp = b
	switch {
	case tooLarge:
		return m, bp, errTooLarge
	case err != nil || !json.Valid(b):
		return m, bp, errBadJSON
	}
	m, ok := scanMessage(b)
	if !ok {
		return m, bp, errNotObject
	}
	if e := m.validate(needMax); e != nil {
		return m, bp, e
	}
	if _, known := modelIndex[string(m.model)]; !known && !s.cfg.anyModel {
		return m, bp, &apiError{404, "not_found_error", "model: " + string(m.model)}
	}
	return m, bp, nil
}

func (s *Server) messages(w http.ResponseWriter, r *http.Request, reqID string, n uint64) (status int, streamErr bool) {
	m, in, e := s.readMessage(r, true)
	if in != nil {
		defer putBuf(in)
	}
	if e != nil {
		return s.fail(w, reqID, e), false
	}
	cu := s.cacheUsage(m.model)
	if m.stream {
		return s.stream(w, r, &m, n, cu)
	}
	s.useRate(w, m.tokens, replyTokens, cu)
	bp := getBuf()
	b := append((*bp)[:0], `{"id":"`...)
	b = s.appendMessageID(b, n)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = appendString(b, m.model)
	b = append(b, `,"content":[{"type":"text","text":"`+replyText+`"}],"stop_reason":"end_turn","stop_sequence":null,"usage":`...)
	b = appendUsage(b, m.tokens, replyTokens, cu)
	b = append(b, '}')
	status = writeJSON(w, b)
	*bp = b
	putBuf(bp)
	return status, false
}

// messageDeltaHead is the data of a message_delta event up to its usage's
// fields.
const messageDeltaHead = `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{`

// replyTokens is the output_tokens of every non-streamed answer.
const replyTokens = 8

// useRate sets the rate-limit headers of an answer of in input and out
// output tokens (with cu's cache writes as input).
func (s *Server) useRate(w http.ResponseWriter, in, out int, cu *CacheUsage) {
	if s.rate.Load() == nil {
		return
	}
	used := int64(in)
	if cu != nil {
		used += cu.Write5m + cu.Write1h
	}
	s.setRateHeaders(w.Header(), used, int64(out))
}

func (s *Server) countTokens(w http.ResponseWriter, r *http.Request, reqID string) int {
	m, in, e := s.readMessage(r, false)
	if in != nil {
		defer putBuf(in)
	}
	if e != nil {
		return s.fail(w, reqID, e)
	}
	var a [48]byte
	b := append(a[:0], `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(m.tokens), 10)
	return writeJSON(w, append(b, '}'))
}

// streamPlan is the precomputed part of a stream: every event after
// message_start.
type streamPlan struct {
	delay  time.Duration
	frames [][]byte
	deltas int // content_block_delta events: the answer's output_tokens
	// deltaAt is the index of message_delta in frames, written anew
	// with the whole usage when the answer has cache usage.
	deltaAt int
}

func newStreamPlan(deltas int, delay time.Duration) *streamPlan {
	deltas = max(deltas, 1)
	p := &streamPlan{delay: delay, deltas: deltas}
	add := func(event, data string) {
		p.frames = append(p.frames, []byte("event: "+event+"\ndata: "+data+"\n\n"))
	}
	add("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
	add("ping", `{"type":"ping"}`)
	for i := range deltas {
		add("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"tok`+strconv.Itoa(i)+` "}}`)
	}
	add("content_block_stop", `{"type":"content_block_stop","index":0}`)
	p.deltaAt = len(p.frames)
	add("message_delta", messageDeltaHead+`"output_tokens":`+strconv.Itoa(deltas)+`}}`)
	add("message_stop", `{"type":"message_stop"}`)
	return p
}

type rcFlusher struct{ rc *http.ResponseController }

func (f rcFlusher) Flush() { _ = f.rc.Flush() }

// stream answers with the documented SSE events, flushing each, with the
// plan's delay before every event after message_start.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, m *messageRequest, n uint64, cu *CacheUsage) (status int, streamErr bool) {
	plan := s.plan.Load()
	sf, failing := s.fault.takeStream()
	s.useRate(w, m.tokens, plan.deltas, cu)
	hdr := w.Header()
	hdr["Content-Type"] = hdrSSE
	hdr["Cache-Control"] = hdrNoCach
	w.WriteHeader(http.StatusOK)
	fl, ok := w.(http.Flusher)
	if !ok {
		fl = rcFlusher{http.NewResponseController(w)}
	}

	bp := getBuf()
	b := append((*bp)[:0], "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\""...)
	b = s.appendMessageID(b, n)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = appendString(b, m.model)
	b = append(b, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":`...)
	b = appendUsage(b, m.tokens, 1, cu)
	b = append(b, "}}\n\n"...)
	_, err := w.Write(b)
	*bp = b
	putBuf(bp)
	if err != nil {
		return http.StatusOK, false
	}
	fl.Flush()

	var t *time.Timer
	wait := func() bool {
		if plan.delay <= 0 {
			return true
		}
		if t == nil {
			t = time.NewTimer(plan.delay)
		} else {
			t.Reset(plan.delay)
		}
		select {
		case <-t.C:
			return true
		case <-r.Context().Done():
			t.Stop()
			return false
		}
	}
	errAt := len(plan.frames) + 1 // events before the error: never
	if failing {
		errAt = min(sf.after, len(plan.frames)) // never after message_stop
	}
	for i, f := range plan.frames {
		if !wait() {
			return http.StatusOK, false
		}
		if i+1 == errAt {
			e := injected(sf.status)
			eb := append([]byte("event: error\ndata: "), `{"type":"error","error":{"type":"`+e.typ+`","message":`...)
			eb = appendString(eb, e.msg)
			_, _ = w.Write(append(eb, "}}\n\n"...))
			fl.Flush()
			return http.StatusOK, true
		}
		if i == plan.deltaAt && cu != nil {
			bp := getBuf()
			f = appendMessageDelta((*bp)[:0], m.tokens, plan.deltas, cu)
			_, err = w.Write(f)
			*bp = f
			putBuf(bp)
		} else {
			_, err = w.Write(f)
		}
		if err != nil {
			return http.StatusOK, false
		}
		fl.Flush()
	}
	return http.StatusOK, false
}
