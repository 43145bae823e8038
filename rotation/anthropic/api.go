package anthropic

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/netrule"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/redact"
)

// DefaultBaseURL is the API's default base URL.
const DefaultBaseURL = "https://api.anthropic.com"

// CheckBaseURL checks a base URL that keys are sent to in x-api-key (the
// Admin key by an Issuer, a new key by a Probe): "" (DefaultBaseURL), or
// an absolute URL that netrule.CheckSecure accepts: https, or plain http
// only to this machine, without user info. NewIssuer refuses a base URL it
// refuses; a Probe never sends to one. Its errors never hold user info.
func CheckBaseURL(base string) error {
	if base == "" {
		return nil
	}
	u, err := url.Parse(base)
	if err != nil {
		return fmt.Errorf("anthropic: base URL is not a URL")
	}
	if err := netrule.CheckSecure(u); err != nil {
		return fmt.Errorf("anthropic: base URL %s://%s: %w", u.Scheme, u.Host, err)
	}
	return nil
}

// maxBody bounds the response bodies read.
const maxBody = 1 << 20

// APIError is an error answer of the Claude API:
// {"type":"error","error":{"type":"...","message":"..."}}.
type APIError struct {
	Status     int
	Type       string // e.g. authentication_error, rate_limit_error
	Message    string // redacted
	RequestID  string
	RetryAfter time.Duration
	op         string // "GET /v1/models"
}

func (e *APIError) Error() string {
	typ := e.Type
	if typ == "" {
		typ = http.StatusText(e.Status)
	}
	s := fmt.Sprintf("%s: %d %s", e.op, e.Status, typ)
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RequestID != "" {
		s += " (request-id " + e.RequestID + ")"
	}
	return s
}

// Retryable reports whether the same request may succeed later: rate
// limited (429), overloaded (529), server errors (5xx), timeouts and
// conflicts (408, 409).
func (e *APIError) Retryable() bool {
	switch {
	case e.Status == http.StatusTooManyRequests, e.Status == http.StatusRequestTimeout, e.Status == http.StatusConflict:
		return true
	case e.Status >= 500:
		return true
	}
	return false
}

// client sends requests to the Claude API with a key in x-api-key.
type client struct {
	base    string
	version string
	http    *http.Client
	err     error // CheckBaseURL's verdict on base: when set, nothing is sent
}

// newHTTPClient returns a client that never follows redirects: the key is
// in x-api-key, which Go's client would forward to another host.
func newHTTPClient(c *http.Client) *http.Client {
	if c == nil {
		c = &http.Client{Timeout: time.Minute}
	}
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}

func newClient(base, version string, hc *http.Client) *client {
	if base == "" {
		base = DefaultBaseURL
	}
	if version == "" {
		version = providers.DefaultAnthropicVersion
	}
	return &client{base: strings.TrimRight(base, "/"), version: version, http: newHTTPClient(hc), err: CheckBaseURL(base)}
}

// do sends one request and decodes a 2xx JSON answer into out (when not
// nil). A non-2xx answer is an *APIError; a failure to send is returned as
// is (wrapped), without the URL's query.
func (c *client) do(ctx context.Context, key providers.Secret, method, path string, body, out any) error {
	op := method + " " + strings.SplitN(path, "?", 2)[0]
	if c.err != nil {
		return fmt.Errorf("%s: %w", op, c.err)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s: encode: %w", op, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("x-api-key", key.Reveal())
	req.Header.Set("anthropic-version", c.version)
	req.Header.Set("accept", "application/json")
	req.Header.Set("user-agent", "keywarden-rotator")
	if body != nil {
		req.Header.Set("content-type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("%s: read the answer: %w", op, err)
	}
	if resp.StatusCode/100 != 2 {
		return apiError(op, resp, b, key)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s: the answer is not the JSON expected: %w", op, err)
	}
	return nil
}

// apiError decodes an error answer. Its message passes through redaction:
// the key never belongs in it, and this makes sure.
func apiError(op string, resp *http.Response, body []byte, key providers.Secret) *APIError {
	e := &APIError{op: op, Status: resp.StatusCode, RequestID: resp.Header.Get("request-id"), RetryAfter: retryAfter(resp.Header.Get("retry-after"))}
	var env struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil {
		e.Type, e.Message = env.Error.Type, env.Error.Message
	}
	if resp.StatusCode == 529 && e.Type == "" {
		e.Type = "overloaded_error"
	}
	msg := e.Message
	if v := key.Reveal(); v != "" {
		msg = strings.ReplaceAll(msg, v, "[redacted "+key.Fingerprint()+"]")
	}
	msg = redact.String(msg)
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	e.Message = msg
	return e
}

// retryAfter parses a retry-after header: seconds, or an HTTP date.
func retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}
