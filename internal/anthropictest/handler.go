package anthropictest

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Handler returns the fake as an http.Handler, for a load run that serves it
// from its own listener.
func (s *Server) Handler() http.Handler { return &handler{s} }

type handler struct{ s *Server }

type apiError struct {
	status int
	typ    string
	msg    string
}

var (
	errMissingKey       = &apiError{401, "authentication_error", "x-api-key header is required"}
	errInvalidKey       = &apiError{401, "authentication_error", "invalid x-api-key"}
	errExpiredKey       = &apiError{401, "authentication_error", "This API key has expired"}
	errAdminOnDataPlane = &apiError{401, "authentication_error", "invalid x-api-key"}
	errNotAdmin         = &apiError{401, "authentication_error", "invalid x-api-key: the Admin API requires an admin key (sk-ant-admin...)"}
	errVersion          = &apiError{400, "invalid_request_error", "anthropic-version: header is required"}
	errCORS             = &apiError{401, "authentication_error", "CORS requests are not allowed for this Organization because of the Origin header. Requests from a browser must not use an API key directly."}
	errContentType      = &apiError{400, "invalid_request_error", "content-type: must be application/json"}
	errNotFound         = &apiError{404, "not_found_error", "Not found"}
	errMethod           = &apiError{405, "invalid_request_error", "Method not allowed"}
	errBody             = &apiError{400, "invalid_request_error", "the request body is not valid JSON"}
)

// errorTypes is the documented status → error type table.
var errorTypes = map[int]string{
	400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
	403: "permission_error", 404: "not_found_error", 409: "conflict_error",
	413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error",
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.s
	id := "req_011C" + strconv.FormatUint(s.reqID.Add(1)+1e12, 36)
	w.Header().Set("request-id", id)
	if d := time.Duration(s.latency.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	keyID, status := h.route(w, r, id)
	s.record(status, keyID)
}

func (h *handler) fail(w http.ResponseWriter, reqID string, e *apiError) int {
	if e.status == 429 {
		w.Header().Set("retry-after", "1")
	}
	w.Header().Set("content-type", "application/json")
	w.WriteHeader(e.status)
	b, _ := json.Marshal(map[string]any{
		"type":       "error",
		"error":      map[string]string{"type": e.typ, "message": e.msg},
		"request_id": reqID,
	})
	_, _ = w.Write(b)
	return e.status
}

func (h *handler) route(w http.ResponseWriter, r *http.Request, reqID string) (string, int) {
	s := h.s
	if r.Header.Get("Origin") != "" && !s.opts.AllowOrigin {
		return "", h.fail(w, reqID, errCORS)
	}
	if st, ok := s.takeFault(r.URL.Path); ok {
		typ := errorTypes[st]
		if typ == "" {
			typ = "api_error"
		}
		return "", h.fail(w, reqID, &apiError{st, typ, fmt.Sprintf("injected %d", st)})
	}
	path := r.URL.Path
	if strings.HasPrefix(path, "/v1/organizations/") {
		return "", h.admin(w, r, reqID)
	}
	keyID, aerr := s.lookup(r.Header.Get("x-api-key"))
	if aerr != nil {
		return "", h.fail(w, reqID, aerr)
	}
	if r.Header.Get("anthropic-version") == "" {
		return "", h.fail(w, reqID, errVersion)
	}
	switch {
	case path == "/v1/messages":
		return keyID, h.messages(w, r, reqID)
	case path == "/v1/messages/count_tokens":
		return keyID, h.countTokens(w, r, reqID)
	case path == "/v1/models":
		if r.Method != http.MethodGet {
			return "", h.fail(w, reqID, errMethod)
		}
		return keyID, writeJSON(w, 200, modelList)
	case strings.HasPrefix(path, "/v1/models/"):
		m, ok := modelByID[strings.TrimPrefix(path, "/v1/models/")]
		if !ok {
			return "", h.fail(w, reqID, &apiError{404, "not_found_error", "model: " + strings.TrimPrefix(path, "/v1/models/")})
		}
		return keyID, writeJSON(w, 200, m)
	}
	return "", h.fail(w, reqID, errNotFound)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) int {
	w.Header().Set("content-type", "application/json")
	w.Header().Set("content-length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
	return status
}

func jsonBody(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("content-type"))
	return err == nil && mt == "application/json"
}

type messageRequest struct {
	Model     string `json:"model"`
	MaxTokens int    `json:"max_tokens"`
	Stream    bool   `json:"stream"`
	Messages  []struct {
		Role string `json:"role"`
	} `json:"messages"`
}

func (h *handler) readMessage(w http.ResponseWriter, r *http.Request, reqID string, needMax bool) (*messageRequest, int) {
	if r.Method != http.MethodPost {
		return nil, h.fail(w, reqID, errMethod)
	}
	if !jsonBody(r) {
		return nil, h.fail(w, reqID, errContentType)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 32<<20+1))
	if err != nil {
		return nil, h.fail(w, reqID, errBody)
	}
	if len(b) > 32<<20 {
		return nil, h.fail(w, reqID, &apiError{413, "request_too_large", "Request exceeds the maximum allowed number of bytes."})
	}
	var m messageRequest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, h.fail(w, reqID, errBody)
	}
	switch {
	case m.Model == "":
		return nil, h.fail(w, reqID, &apiError{400, "invalid_request_error", "model: Field required"})
	case len(m.Messages) == 0:
		return nil, h.fail(w, reqID, &apiError{400, "invalid_request_error", "messages: Field required"})
	case needMax && m.MaxTokens <= 0:
		return nil, h.fail(w, reqID, &apiError{400, "invalid_request_error", "max_tokens: Field required"})
	}
	return &m, 0
}

func (h *handler) messages(w http.ResponseWriter, r *http.Request, reqID string) int {
	m, st := h.readMessage(w, r, reqID, true)
	if m == nil {
		return st
	}
	if m.Stream {
		return h.stream(w, r, m)
	}
	return writeJSON(w, 200, messageBody(m.Model))
}

func (h *handler) countTokens(w http.ResponseWriter, r *http.Request, reqID string) int {
	m, st := h.readMessage(w, r, reqID, false)
	if m == nil {
		return st
	}
	return writeJSON(w, 200, []byte(`{"input_tokens":`+strconv.Itoa(10*len(m.Messages))+`}`))
}

// stream writes the documented SSE event order, flushing every event.
func (h *handler) stream(w http.ResponseWriter, r *http.Request, m *messageRequest) int {
	s := h.s
	fl, _ := w.(http.Flusher)
	w.Header().Set("content-type", "text/event-stream")
	w.Header().Set("cache-control", "no-cache")
	w.WriteHeader(200)
	send := func(first bool, event, data string) bool {
		if !first && s.opts.EventDelay > 0 {
			select {
			case <-time.After(s.opts.EventDelay):
			case <-r.Context().Done():
				return false
			}
		}
		if _, err := io.WriteString(w, "event: "+event+"\ndata: "+data+"\n\n"); err != nil {
			return false
		}
		if fl != nil {
			fl.Flush()
		}
		return true
	}
	if !send(true, "message_start", `{"type":"message_start","message":{"id":"msg_01fake","type":"message","role":"assistant","model":"`+m.Model+`","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}`) {
		return 200
	}
	if n := s.streamErr.Load(); n > 0 && s.streamErr.CompareAndSwap(n, n-1) {
		send(false, "error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
		return 200
	}
	steps := []struct{ ev, data string }{
		{"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`},
		{"ping", `{"type":"ping"}`},
	}
	for i := 0; i < s.opts.Deltas; i++ {
		steps = append(steps, struct{ ev, data string }{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"tok` + strconv.Itoa(i) + ` "}}`})
	}
	steps = append(steps,
		struct{ ev, data string }{"content_block_stop", `{"type":"content_block_stop","index":0}`},
		struct{ ev, data string }{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":` + strconv.Itoa(s.opts.Deltas) + `}}`},
		struct{ ev, data string }{"message_stop", `{"type":"message_stop"}`},
	)
	for _, st := range steps {
		if !send(false, st.ev, st.data) {
			return 200
		}
	}
	return 200
}

var (
	models = []map[string]string{
		{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"},
		{"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5", "created_at": "2025-10-01T00:00:00Z"},
		{"type": "model", "id": "claude-opus-4-1", "display_name": "Claude Opus 4.1", "created_at": "2025-08-05T00:00:00Z"},
	}
	modelList = func() []byte {
		b, _ := json.Marshal(map[string]any{"data": models, "has_more": false, "first_id": models[0]["id"], "last_id": models[len(models)-1]["id"]})
		return b
	}()
	modelByID = func() map[string][]byte {
		out := map[string][]byte{}
		for _, m := range models {
			b, _ := json.Marshal(m)
			out[m["id"]] = b
		}
		return out
	}()
	msgBodies = map[string][]byte{}
)

func messageBody(model string) []byte {
	if b, ok := msgBodies[model]; ok {
		return b
	}
	b, _ := json.Marshal(map[string]any{
		"id": "msg_01fake", "type": "message", "role": "assistant", "model": model,
		"content":     []map[string]string{{"type": "text", "text": "Hello from the fake Claude API."}},
		"stop_reason": "end_turn", "stop_sequence": nil,
		"usage": map[string]int{"input_tokens": 10, "output_tokens": 8},
	})
	return b
}

func init() {
	for _, m := range models {
		msgBodies[m["id"]] = messageBody(m["id"])
	}
}

var _ http.Handler = (*handler)(nil)
