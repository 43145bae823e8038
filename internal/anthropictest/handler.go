package anthropictest

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// handler serves a Server's HTTP API.
type handler Server

var _ http.Handler = (*handler)(nil)

// apiError is one documented error answer.
type apiError struct {
	status int
	typ    string
	msg    string
}

var (
	errMissingKey  = &apiError{401, "authentication_error", "x-api-key header is required"}
	errInvalidKey  = &apiError{401, "authentication_error", "invalid x-api-key"}
	errExpiredKey  = &apiError{401, "authentication_error", "invalid x-api-key: this API key has expired"}
	errNotAdmin    = &apiError{403, "permission_error", "this endpoint requires an Admin API key (sk-ant-admin01-...); API keys cannot use the Admin API"}
	errNoVersion   = &apiError{400, "invalid_request_error", "anthropic-version: header is required"}
	errCORS        = &apiError{401, "authentication_error", "CORS requests must set 'anthropic-dangerous-direct-browser-access' header"}
	errContentType = &apiError{400, "invalid_request_error", "content-type: this endpoint takes application/json"}
	errNotFound    = &apiError{404, "not_found_error", "Not found"}
	errMethod      = &apiError{405, "invalid_request_error", "Method Not Allowed"}
	errBadJSON     = &apiError{400, "invalid_request_error", "the request body is not valid JSON"}
	errNotObject   = &apiError{400, "invalid_request_error", "the request body must be a JSON object"}
	errTooLarge    = &apiError{413, "request_too_large", "Request exceeds the maximum allowed number of bytes."}
)

// errorTypes is the documented status → error type table, with the
// messages injected faults answer.
var errorTypes = map[int][2]string{
	400: {"invalid_request_error", "Invalid request"},
	401: {"authentication_error", "invalid x-api-key"},
	402: {"billing_error", "Your credit balance is too low to access the Claude API."},
	403: {"permission_error", "Your API key does not have permission to use the specified resource."},
	404: {"not_found_error", "The requested resource could not be found."},
	409: {"conflict_error", "Conflict"},
	413: {"request_too_large", "Request exceeds the maximum allowed number of bytes."},
	429: {"rate_limit_error", "This request would exceed the rate limit for your organization. Please try again later."},
	500: {"api_error", "Internal server error"},
	529: {"overloaded_error", "Overloaded"},
}

func injected(status int) *apiError {
	if t, ok := errorTypes[status]; ok {
		return &apiError{status, t[0], t[1]}
	}
	if status >= 500 {
		return &apiError{status, "api_error", "Internal server error"}
	}
	return &apiError{status, "invalid_request_error", http.StatusText(status)}
}

// Versions of anthropic-version the fake accepts.
var versions = map[string]bool{"2023-06-01": true, "2023-01-01": true}

// maxBody is the Messages API's request size limit.
const maxBody = 32 << 20

// Header values shared by every response: net/http only reads them.
var (
	hdrJSON   = []string{"application/json"}
	hdrSSE    = []string{"text/event-stream; charset=utf-8"}
	hdrNoCach = []string{"no-cache"}
	hdrStar   = []string{"*"}
)

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := (*Server)(h)
	n := s.counter.Add(1)
	reqID := s.requestID(n)
	w.Header()["Request-Id"] = []string{reqID}
	if d := time.Duration(s.latency.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	o := s.route(w, r, reqID, n)
	s.record(o, reqID, r)
}

// route authenticates r, then serves it.
func (s *Server) route(w http.ResponseWriter, r *http.Request, reqID string, n uint64) outcome {
	var o outcome
	if len(r.Header["Origin"]) > 0 && !s.cfg.allowOrigin {
		if !strings.EqualFold(r.Header.Get("Anthropic-Dangerous-Direct-Browser-Access"), "true") {
			o.status = s.fail(w, reqID, errCORS)
			return o
		}
		w.Header()["Access-Control-Allow-Origin"] = hdrStar
		w.Header()["Access-Control-Expose-Headers"] = hdrStar
	}
	path := r.URL.Path
	if path == TokenPath { // oauth.go
		o.status = s.tokenEndpoint(w, r, reqID)
		return o
	}
	admin := strings.HasPrefix(path, "/v1/organizations/")
	var v string
	if vs := r.Header["X-Api-Key"]; len(vs) > 0 {
		v = vs[0]
	}
	var authErr *apiError
	switch {
	case v == "" && len(r.Header["Authorization"]) > 0: // oauth.go
		o.key, authErr = s.bearer(r, admin)
		o.unknown, o.rejected = o.key == nil, o.key != nil && authErr != nil
	case v == "":
		o.unknown, authErr = true, errMissingKey
	case v == s.cfg.adminKey:
		o.admin = true
		if !admin {
			authErr = errInvalidKey
		}
	default:
		o.key = s.keys.lookup(v)
		switch {
		case o.key == nil:
			o.unknown, authErr = true, errInvalidKey
		case admin:
			authErr = errNotAdmin
		default:
			if authErr = o.key.check(s.now); authErr != nil {
				o.rejected = true
			}
		}
	}
	if authErr != nil {
		o.status = s.fail(w, reqID, authErr)
		return o
	}
	if e := checkVersion(r.Header["Anthropic-Version"]); e != nil {
		o.status = s.fail(w, reqID, e)
		return o
	}
	if st, ok := s.fault.takeRequest(path); ok {
		o.status = s.fail(w, reqID, injected(st))
		return o
	}
	if admin {
		o.status = s.admin(w, r, reqID)
		return o
	}
	switch {
	case path == "/v1/messages":
		if r.Method != http.MethodPost {
			o.status = s.fail(w, reqID, errMethod)
			return o
		}
		o.status, o.streamErr = s.messages(w, r, reqID, n)
	case path == "/v1/messages/count_tokens":
		if r.Method != http.MethodPost {
			o.status = s.fail(w, reqID, errMethod)
			return o
		}
		o.status = s.countTokens(w, r, reqID)
	case path == "/v1/models":
		if r.Method != http.MethodGet {
			o.status = s.fail(w, reqID, errMethod)
			return o
		}
		o.status = s.listModels(w, r, reqID)
	case strings.HasPrefix(path, "/v1/models/"):
		if r.Method != http.MethodGet {
			o.status = s.fail(w, reqID, errMethod)
			return o
		}
		o.status = s.getModel(w, reqID, strings.TrimPrefix(path, "/v1/models/"))
	default:
		o.status = s.fail(w, reqID, errNotFound)
	}
	return o
}

func checkVersion(vs []string) *apiError {
	switch {
	case len(vs) == 0 || (len(vs) == 1 && vs[0] == ""):
		return errNoVersion
	case len(vs) == 1 && versions[vs[0]]:
		return nil
	}
	return &apiError{400, "invalid_request_error", "anthropic-version: " + strconv.Quote(strings.Join(vs, ", ")) + " is not a valid version"}
}

// fail writes the documented error body of e and returns its status.
func (s *Server) fail(w http.ResponseWriter, reqID string, e *apiError) int {
	hdr := w.Header()
	hdr["Content-Type"] = hdrJSON
	if e.status == http.StatusTooManyRequests {
		ra := s.cfg.retryAfter
		secs := int64((ra + time.Second - 1) / time.Second)
		hdr["Retry-After"] = []string{strconv.FormatInt(secs, 10)}
		hdr["Anthropic-Ratelimit-Requests-Limit"] = []string{s.requestLimit()}
		hdr["Anthropic-Ratelimit-Requests-Remaining"] = []string{"0"}
		hdr["Anthropic-Ratelimit-Requests-Reset"] = []string{s.now().Add(ra).UTC().Format(time.RFC3339)}
	}
	bp := getBuf()
	b := appendError(*bp, e, reqID)
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
	*bp = b
	putBuf(bp)
	return e.status
}

func appendError(b []byte, e *apiError, reqID string) []byte {
	b = append(b, `{"type":"error","error":{"type":"`...)
	b = append(b, e.typ...)
	b = append(b, `","message":`...)
	b = appendString(b, e.msg)
	b = append(b, `},"request_id":"`...)
	b = append(b, reqID...)
	return append(b, `"}`...)
}

// writeJSON writes a 200 with body b.
func writeJSON(w http.ResponseWriter, b []byte) int {
	w.Header()["Content-Type"] = hdrJSON
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return http.StatusOK
}

// isJSON reports whether a content-type is application/json, with or
// without parameters.
func isJSON(ct string) bool {
	ct = strings.TrimLeft(ct, " \t")
	const mt = "application/json"
	if len(ct) < len(mt) || !strings.EqualFold(ct[:len(mt)], mt) {
		return false
	}
	rest := strings.TrimLeft(ct[len(mt):], " \t")
	return rest == "" || rest[0] == ';'
}

// requestID returns the request id of request n: "req_011C" and 20
// characters, as the real ones.
func (s *Server) requestID(n uint64) string {
	var b [28]byte
	copy(b[:], "req_011C")
	copy(b[8:16], s.idSalt[:8])
	putBase58(b[16:], n)
	return string(b[:])
}

// appendMessageID appends the message id of request n: "msg_01" and 22
// characters.
func (s *Server) appendMessageID(b []byte, n uint64) []byte {
	var id [28]byte
	copy(id[:], "msg_01")
	copy(id[6:16], s.idSalt[:])
	putBase58(id[16:], n)
	return append(b, id[:]...)
}

// putBase58 writes n in base58 into all of dst, zero-padded.
func putBase58(dst []byte, n uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = base58[n%58]
		n /= 58
	}
}
