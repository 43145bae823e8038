// Package promgate answers a rotation's revoke gate from Prometheus: which
// consumers (sidecars, and Go services through the library's Source and
// internal/telemetry) still report a key's old fingerprint in
// keywarden_key_info{key, version, fingerprint}. It is a small client of
// Prometheus' HTTP query API (GET /api/v1/query, an instant vector) on
// net/http and encoding/json.
package promgate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keywarden/keywarden/internal/netrule"
	"github.com/keywarden/keywarden/rotation"
)

// Metric is the series every consumer exports for the key it holds.
const Metric = "keywarden_key_info"

// DefaultTimeout bounds one query.
const DefaultTimeout = 10 * time.Second

// maxBody bounds the answer read from Prometheus.
const maxBody = 4 << 20

// Options configure a Client.
type Options struct {
	// URL is Prometheus' base URL, e.g. http://prometheus.monitoring:9090
	// (the query goes to URL/api/v1/query). Required.
	URL string
	// BearerTokenFile holds a bearer token, read at each query (so a
	// rotated token is picked up).
	BearerTokenFile string
	// Username and PasswordFile give basic auth (not with a bearer token).
	Username     string
	PasswordFile string
	// Selector adds label matchers (name: exact value), e.g. {namespace:
	// prod}. The key label defaults to the rotated key's name; a "key"
	// entry replaces it (consumers may call the key differently).
	Selector map[string]string
	// Timeout bounds one query (DefaultTimeout).
	Timeout time.Duration
	// Client sends the queries (default: a client with Timeout).
	Client *http.Client
}

// Client asks Prometheus who holds a key. It implements
// rotation.Consumers.
type Client struct {
	o    Options
	base *url.URL
}

var _ rotation.Consumers = (*Client)(nil)

// New returns a Client, after checking the options.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.URL)
	switch {
	case o.URL == "":
		return nil, errors.New("promgate: no Prometheus URL")
	case err != nil || !netrule.IsHTTP(u):
		return nil, fmt.Errorf("promgate: %q is not an http(s) URL", o.URL)
	case u.User != nil:
		return nil, errors.New("promgate: the Prometheus URL must not carry credentials; use bearer_token_file or basic_auth")
	case o.BearerTokenFile != "" && (o.Username != "" || o.PasswordFile != ""):
		return nil, errors.New("promgate: give a bearer token or basic auth, not both")
	case (o.Username == "") != (o.PasswordFile == ""):
		return nil, errors.New("promgate: basic auth needs both a username and a password file")
	case o.Timeout < 0:
		return nil, fmt.Errorf("promgate: timeout %v is negative", o.Timeout)
	}
	for name := range o.Selector {
		if !validLabel(name) {
			return nil, fmt.Errorf("promgate: selector: %q is not a label name", name)
		}
		if name == "fingerprint" || name == "__name__" {
			return nil, fmt.Errorf("promgate: selector: %q is set by the gate", name)
		}
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: o.Timeout}
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v1/query"
	// The URL is printed (status, messages, errors): without its query and
	// fragment, which no query sends and which may hold a token.
	return &Client{o: o, base: netrule.WithoutQuery(u)}, nil
}

func validLabel(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Describe names the Prometheus server asked: its URL without query or
// fragment.
func (c *Client) Describe() string {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/api/v1/query")
	u.RawPath = ""
	return "prometheus " + u.String()
}

// Query returns the PromQL query that lists the holders of the key named
// key with fingerprint fp.
func (c *Client) Query(key, fp string) string {
	m := map[string]string{"key": key}
	maps.Copy(m, c.o.Selector)
	m["fingerprint"] = fp
	var b strings.Builder
	b.WriteString(Metric + "{")
	for i, name := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(name + "=" + strconv.Quote(m[name]))
	}
	b.WriteString("}")
	return b.String()
}

// Holders returns the series of keywarden_key_info that report fp for key:
// one per consumer, by its labels. An answer that may be incomplete (one
// with warnings, such as a partial response of Thanos, Cortex or Mimir
// when a store was unreachable) is an error, never an empty list.
func (c *Client) Holders(ctx context.Context, key, fp string) ([]rotation.Holder, error) {
	q := *c.base
	q.RawQuery = url.Values{
		"query": {c.Query(key, fp)},
		// Thanos answers with an error instead of a partial response
		// (warnings) when a store is unreachable; Prometheus ignores
		// parameters it does not know.
		"partial_response": {"false"},
	}.Encode()
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, q.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("promgate: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	switch {
	case c.o.BearerTokenFile != "":
		tok, err := readSecretFile(c.o.BearerTokenFile)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case c.o.Username != "":
		pw, err := readSecretFile(c.o.PasswordFile)
		if err != nil {
			return nil, err
		}
		req.SetBasicAuth(c.o.Username, pw)
	}
	resp, err := c.o.Client.Do(req)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil, err
		}
		return nil, fmt.Errorf("promgate: query %s: %w", c.base.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("promgate: read the answer: %w", err)
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("promgate: the answer is larger than %d bytes", maxBody)
	}
	series, err := ParseVector(body)
	if err != nil {
		return nil, fmt.Errorf("promgate: %s (HTTP %d): %w", c.base.Redacted(), resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("promgate: %s: HTTP %d", c.base.Redacted(), resp.StatusCode)
	}
	out := make([]rotation.Holder, 0, len(series))
	for _, s := range series {
		out = append(out, rotation.Holder(s))
	}
	return out, nil
}

// readSecretFile reads a token or password file; its content never
// appears in an error.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("promgate: read the credential file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// answer is the JSON envelope of /api/v1/query. Infos (PromQL's
// informational annotations) do not make an answer incomplete and are not
// read.
type answer struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Data      json.RawMessage `json:"data"`
}

type vectorData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  []json.RawMessage `json:"value"`
}

// ParseVector parses an answer of Prometheus' /api/v1/query and returns the
// label sets of the instant vector's samples (samples with value 0 left
// out). An error answer, an answer with warnings (it may be incomplete:
// Thanos, Cortex and Mimir warn when part of the data was unreachable),
// another result type or a malformed body is an error: an unknown answer,
// never an empty one.
func ParseVector(body []byte) ([]map[string]string, error) {
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("malformed answer: %w", err)
	}
	switch a.Status {
	case "success":
	case "error":
		return nil, fmt.Errorf("prometheus error %s: %s", orUnknown(printable(a.ErrorType, 40)), printable(a.Error, 300))
	default:
		return nil, fmt.Errorf("malformed answer: status %q", printable(a.Status, 40))
	}
	if len(a.Warnings) > 0 {
		more := ""
		if len(a.Warnings) > 1 {
			more = fmt.Sprintf(" (and %d more)", len(a.Warnings)-1)
		}
		return nil, fmt.Errorf("the answer may be incomplete: warning %q%s", printable(a.Warnings[0], 300), more)
	}
	var d vectorData
	if err := json.Unmarshal(a.Data, &d); err != nil {
		return nil, fmt.Errorf("malformed answer data: %w", err)
	}
	if d.ResultType != "vector" {
		return nil, fmt.Errorf("result type %q, want vector", printable(d.ResultType, 40))
	}
	var samples []sample
	if err := json.Unmarshal(d.Result, &samples); err != nil {
		return nil, fmt.Errorf("malformed result: %w", err)
	}
	if samples == nil {
		return nil, errors.New("malformed result: not a list")
	}
	out := make([]map[string]string, 0, len(samples))
	for i, s := range samples {
		if len(s.Value) != 2 {
			return nil, fmt.Errorf("sample %d: value has %d elements, want [time, \"value\"]", i, len(s.Value))
		}
		var v string
		if err := json.Unmarshal(s.Value[1], &v); err != nil {
			return nil, fmt.Errorf("sample %d: value is not a string", i)
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, fmt.Errorf("sample %d: value %q is not a number", i, printable(v, 40))
		}
		if f == 0 {
			continue
		}
		if s.Metric == nil {
			s.Metric = map[string]string{}
		}
		out = append(out, s.Metric)
	}
	return out, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// printable returns s for an error message: cut to at most n bytes on a
// rune boundary (with "…" when cut), each rune that is not printable (a
// control character, an escape sequence's ESC, a bidi override, a byte
// that is not UTF-8) replaced by U+FFFD.
func printable(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		if i+w > n {
			b.WriteString("…")
			break
		}
		if !unicode.IsPrint(r) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
		i += w
	}
	return b.String()
}
