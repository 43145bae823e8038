package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// apiError is an error answer in the Claude API's shape, so that SDKs
// report the sidecar's refusals as they report the API's own:
// {"type":"error","error":{"type":"permission_error","message":"..."}}.
type apiError struct {
	status int
	body   []byte
}

func newAPIError(status int, typ, msg string) apiError {
	b, _ := json.Marshal(struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}{Type: "error", Error: struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}{typ, msg}})
	return apiError{status: status, body: b}
}

// The sidecar's own answers, built once.
var (
	errNotProxy = newAPIError(http.StatusForbidden, "permission_error",
		"keywarden: request targets other than a path (absolute URIs, CONNECT, *) are refused: the sidecar is not a forward proxy; send requests to its base URL")
	errMethod = newAPIError(http.StatusMethodNotAllowed, "invalid_request_error",
		"keywarden: method not forwarded; the sidecar forwards GET, POST and DELETE only")
	errToken = newAPIError(http.StatusUnauthorized, "authentication_error",
		"keywarden: missing or wrong client token; send it in x-keywarden-token (or as the x-api-key or bearer token)")
	errBadTarget = newAPIError(http.StatusBadRequest, "invalid_request_error",
		"keywarden: the request target is not a valid path and query")
	errNoRoute = newAPIError(http.StatusForbidden, "permission_error",
		"keywarden: no route serves this path prefix")
	errBadPath = newAPIError(http.StatusForbidden, "permission_error",
		"keywarden: path refused: it holds empty, '.' or '..' segments or backslashes")
	errAdmin = newAPIError(http.StatusForbidden, "permission_error",
		"keywarden: the Admin API (/v1/organizations) is never forwarded")
	errNotAllowed = newAPIError(http.StatusForbidden, "permission_error",
		"keywarden: path not in the sidecar's allow_paths")
	errRate = newAPIError(http.StatusTooManyRequests, "rate_limit_error",
		"keywarden: this client is over the sidecar's rate limit; retry after the retry-after header's seconds")
	errConcurrency = newAPIError(http.StatusTooManyRequests, "rate_limit_error",
		"keywarden: this client has too many requests under way at the sidecar; retry after the retry-after header's seconds")
	errBadHeader = newAPIError(http.StatusBadRequest, "invalid_request_error",
		"keywarden: a request header name or value is not valid HTTP; it is not forwarded")
	errUpstream = newAPIError(http.StatusBadGateway, "api_error",
		"keywarden: the upstream could not be reached or broke off")
	errUpstreamTimeout = newAPIError(http.StatusGatewayTimeout, "api_error",
		"keywarden: the upstream sent no response headers within the sidecar's header timeout")
	errConnectTimeout = newAPIError(http.StatusGatewayTimeout, "api_error",
		"keywarden: the upstream could not be reached in time (connection or TLS handshake)")
)

// write sends the error. retryAfter > 0 sets the retry-after header.
func (e apiError) write(cc *clientConn, retryAfter int) {
	h := cc.header()
	h.SetContentType("application/json")
	if retryAfter > 0 {
		var b [20]byte
		h.SetBytesV("Retry-After", strconv.AppendInt(b[:0], int64(retryAfter), 10))
	}
	cc.writeHeader(e.status, int64(len(e.body)))
	_, _ = cc.Write(e.body)
}
