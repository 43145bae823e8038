package providers

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// OpenFunc opens a driver for a store URL and returns it with the name of the
// secret the URL points at. The URL's query holds only the driver's own
// parameters: providers removes the portable ones (field, refresh, jitter,
// max_stale) first. A driver must reject parameters it does not know, with
// Query.Done.
type OpenFunc func(ctx context.Context, u *url.URL) (d driver.Reader, name string, err error)

var (
	regMu sync.RWMutex
	reg   = map[string]OpenFunc{}
)

// Register makes a driver available to Open under a URL scheme. Driver
// packages call it from init, so importing a driver package is enough to use
// its scheme. It panics when the scheme is registered twice.
func Register(scheme string, open OpenFunc) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := reg[scheme]; dup {
		panic("providers: scheme registered twice: " + scheme)
	}
	reg[scheme] = open
}

// RegisterLeftOut registers a driver that this binary was built without
// (package all, build tag tag): its store URLs fail with an error saying
// so, rather than as an unknown scheme.
func RegisterLeftOut(scheme, tag string) {
	Register(scheme, func(context.Context, *url.URL) (driver.Reader, string, error) {
		return nil, "", codes.Errorf(codes.InvalidArgument,
			"the %s:// driver is not in this binary: it was built with -tags %s; use a build without that tag (the default build has every driver)", scheme, tag)
	})
}

// Schemes returns the registered URL schemes, sorted.
func Schemes() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	s := make([]string, 0, len(reg))
	for k := range reg {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// portableParams are the query parameters that providers handles itself.
var portableParams = []string{"field", "refresh", "jitter", "max_stale"}

// OpenDriver parses a store URL and opens its driver. It returns the driver,
// the secret's name, and the portable parameters removed from the query.
//
// Its errors never carry a key-shaped value: a key pasted into a store URL
// (env://sk-ant-…, ?api_key=sk-ant-…) is redacted from the URL and from the
// driver's own message (see RedactKeys).
func OpenDriver(ctx context.Context, rawURL string) (driver.Reader, string, url.Values, error) {
	d, name, portable, err := openDriver(ctx, rawURL)
	if err != nil {
		return nil, "", nil, redactedError{err}
	}
	return d, name, portable, nil
}

// redactedError is an error whose text passes through RedactKeys; its
// chain (codes, sentinel errors) is kept for errors.Is and errors.As.
type redactedError struct{ err error }

func (e redactedError) Error() string { return RedactKeys(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }

func openDriver(ctx context.Context, rawURL string) (driver.Reader, string, url.Values, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, "", nil, err
	}
	regMu.RLock()
	open, ok := reg[u.Scheme]
	regMu.RUnlock()
	if !ok {
		return nil, "", nil, codes.Errorf(codes.InvalidArgument,
			"providers: unknown store scheme %q in %q (known schemes: %s; import the driver package to register it)",
			u.Scheme, Redact(u), strings.Join(Schemes(), ", "))
	}
	portable := splitPortable(u)
	d, name, err := open(ctx, u)
	if err != nil {
		return nil, "", nil, fmt.Errorf("providers: open %s: %w", Redact(u), err)
	}
	return d, name, portable, nil
}

// OpenStager opens a store URL for rotation: its driver must implement
// driver.Stager.
func OpenStager(ctx context.Context, rawURL string) (driver.Stager, string, error) {
	d, name, _, err := OpenDriver(ctx, rawURL)
	if err != nil {
		return nil, "", err
	}
	st, err := AsStager(d)
	if err != nil {
		_ = d.Close()
		return nil, "", err
	}
	return st, name, nil
}

// ErrKeyless is in the chain of AsStager's (and OpenStager's) error for a
// keyless source (driver.Keyless, such as wif://): there is nothing to put,
// rotate or revoke. Commands test it with errors.Is to say so and succeed.
var ErrKeyless = errors.New("nothing to rotate")

// AsStager returns d as a driver.Stager, or a clear error when d is a
// read-only driver.
func AsStager(d driver.Reader) (driver.Stager, error) {
	if k, ok := d.(driver.Keyless); ok {
		return nil, codes.Errorf(codes.FailedPrecondition, "providers: %w: %s", ErrKeyless, k.NothingToRotate())
	}
	st, ok := d.(driver.Stager)
	if !ok {
		return nil, codes.Errorf(codes.Unimplemented,
			"providers: store %T is read-only: it cannot hold PENDING versions or rotation records; rotate keys kept in file, awssm, gcpsm or vault stores", d)
	}
	return st, nil
}

// splitPortable removes the portable parameters from u's query and returns
// them.
func splitPortable(u *url.URL) url.Values {
	q := u.Query()
	portable := url.Values{}
	for _, p := range portableParams {
		if v, ok := q[p]; ok {
			portable[p] = v
			delete(q, p)
		}
	}
	u.RawQuery = q.Encode()
	return portable
}

// SameStore reports whether two store URLs name the same secret: they are
// equal once the portable parameters (which change how a secret is read, not
// which one) are removed and the remaining query is put in a canonical
// order. URLs that do not parse are the same only when equal as strings.
func SameStore(a, b string) bool {
	canon := func(s string) string {
		u, err := parseURL(s)
		if err != nil {
			return s
		}
		splitPortable(u)
		return u.String()
	}
	return a == b || canon(a) == canon(b)
}

func parseURL(rawURL string) (*url.URL, error) {
	if strings.TrimSpace(rawURL) == "" {
		return nil, codes.Errorf(codes.InvalidArgument, "providers: empty store URL (want scheme://..., known schemes: %s)", strings.Join(Schemes(), ", "))
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse errors quote the input, which may hold a secret
		// (a password in user info): keep only the reason, unquoted.
		reason := err.Error()
		var ue *url.Error
		if errors.As(err, &ue) {
			reason = ue.Err.Error()
		}
		return nil, codes.Errorf(codes.InvalidArgument, "providers: malformed store URL: %s", quoted.ReplaceAllString(reason, "…"))
	}
	if u.Scheme == "" {
		return nil, codes.Errorf(codes.InvalidArgument,
			"providers: store URL %q has no scheme (want scheme://..., known schemes: %s)", Redact(u), strings.Join(Schemes(), ", "))
	}
	if u.User != nil {
		return nil, codes.Errorf(codes.InvalidArgument, "providers: store URL must not carry credentials (user info); use the store's own credential chain")
	}
	if strings.Contains(rawURL, "#") {
		// No store reads a fragment: url.Parse would drop it, and with it
		// whatever the user meant by it (a '#' in a name, a parameter).
		c := *u
		c.Fragment, c.RawFragment = "", ""
		return nil, codes.Errorf(codes.InvalidArgument, "providers: store URL %q has a #fragment, which no store reads; remove it (a '#' inside a name or value is written %%23)", Redact(&c))
	}
	if _, err := url.ParseQuery(u.RawQuery); err != nil {
		// URL.Query drops a pair it cannot parse, silently; the error
		// quotes the pair, which may hold a secret.
		c := *u
		c.RawQuery = ""
		return nil, codes.Errorf(codes.InvalidArgument, "providers: the query of store URL %q is malformed (a ';' between parameters, or a '%%' not followed by two hex digits?); separate parameters with '&' and write '%%' as %%25", Redact(&c))
	}
	return u, nil
}

// quoted matches a quoted part of a url.Parse error, which is input.
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// Redact returns the URL as a string for messages: without user info, its
// own or that of a URL given as a parameter's value (endpoint=,
// address=, …), and with every key-shaped value redacted (RedactKeys).
// The rest of the query is printed as written.
func Redact(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = redactQueryUserInfo(c.RawQuery)
	return RedactKeys(c.String())
}

// RedactStore returns a store URL as Redact prints it, or, when it does
// not parse, the text without anything that looks like user info and with
// every key-shaped value redacted: for tables and messages that show a
// configured store.
func RedactStore(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		return Redact(u)
	}
	return RedactKeys(stripUserInfo(rawURL))
}

// redactQueryUserInfo removes the user info of every URL-valued parameter
// of a raw query, whether written plainly or escaped; the rest is kept as
// written. A value that does not unescape and holds an '@' is replaced as a
// whole.
func redactQueryUserInfo(raw string) string {
	if !strings.Contains(raw, "@") && !strings.Contains(strings.ToLower(raw), "%40") {
		return raw
	}
	pairs := strings.Split(raw, "&")
	for i, pair := range pairs {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			continue
		}
		v = stripUserInfo(v) // as written: endpoint=http://u:p@host
		uv, err := url.QueryUnescape(v)
		switch {
		case err != nil && (strings.Contains(v, "@") || strings.Contains(strings.ToLower(v), "%40")):
			v = "…"
		case err == nil && stripUserInfo(uv) != uv: // escaped: http%3A%2F%2Fu%3Ap%40host
			v = url.QueryEscape(stripUserInfo(uv))
		}
		pairs[i] = k + "=" + v
	}
	return strings.Join(pairs, "&")
}

// stripUserInfo removes what stands between each "://" in s and the last
// '@' of the authority that follows it: the user info of every URL in s,
// parsed or not.
func stripUserInfo(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		end := strings.IndexAny(s, "/?#")
		if end < 0 {
			end = len(s)
		}
		if at := strings.LastIndex(s[:end], "@"); at >= 0 {
			s = s[at+1:]
		}
	}
}

// keyLike matches values shaped like API keys and bearer credentials: the
// sk-… family (Anthropic, OpenAI), whatever follows "Bearer ", and JWTs
// (identity tokens: a workload's token for federation, a Kubernetes
// service account's).
var keyLike = regexp.MustCompile(`sk-[A-Za-z0-9_\-]{12,}|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*`)

// KeyShaped reports whether s, a name, id or label value that keywarden
// prints as it is, holds a value shaped like a key (the pattern of
// RedactKeys): a key pasted by mistake. Such input is refused, and never
// quoted. A short match inside a word is no key: "task-summary-prod" holds
// "sk-summary-prod", which starts after a letter and is shorter than any
// real key (keyMinLen); a match that starts s or follows a character other
// than a letter or digit counts at any length, as does a long one glued to
// a word.
func KeyShaped(s string) bool {
	for _, m := range keyLike.FindAllStringIndex(s, -1) {
		if m[0] == 0 || !isAlnum(s[m[0]-1]) || m[1]-m[0] >= keyMinLen {
			return true
		}
	}
	return false
}

// KeyShapes names what KeyShaped finds, for the refusals of input it
// matches: they say what was found, never the input.
const KeyShapes = "shaped like a key (sk-…, a bearer token or a JWT)"

// keyMinLen: every API key is longer (an Anthropic key about 108
// characters, OpenAI's 51 and more).
const keyMinLen = 40

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// RedactKeys replaces every key-shaped value in s with its fingerprint. It
// is the one pattern of "looks like a key" that every message, log record
// (package redact) and printed store URL goes through.
func RedactKeys(s string) string {
	if !keyLike.MatchString(s) {
		return s
	}
	return keyLike.ReplaceAllStringFunc(s, func(m string) string {
		return "[redacted " + Fingerprint(m) + "]"
	})
}

// Query reads a driver's URL parameters and reports the ones it did not read.
// Drivers use it so that every driver validates its URL the same way.
type Query struct {
	vals url.Values
	used map[string]bool
	errs []string
}

// NewQuery wraps a URL query.
func NewQuery(v url.Values) *Query { return &Query{vals: v, used: map[string]bool{}} }

// String returns parameter key, or def when absent. A parameter given more
// than once, or given with an empty value, is an error (reported by Done,
// naming the parameter and never its value) and reads as def: no store URL
// means one of two values, and "key=" is never a way to ask for a default
// (leave the parameter out).
func (q *Query) String(key, def string) string {
	q.used[key] = true
	v, ok := q.vals[key]
	switch {
	case !ok || len(v) == 0:
		return def
	case len(v) > 1:
		q.errs = append(q.errs, fmt.Sprintf("parameter %s is given %d times; give it once", key, len(v)))
		return def
	case v[0] == "":
		q.errs = append(q.errs, fmt.Sprintf("parameter %s is empty; give it a value, or leave it out for its default", key))
		return def
	}
	return v[0]
}

// Bool returns parameter key parsed as a boolean ("true", "false", "1", "0").
func (q *Query) Bool(key string, def bool) bool {
	s := q.String(key, "")
	switch strings.ToLower(s) {
	case "":
		return def
	case "true", "1", "yes":
		return true
	case "false", "0", "no":
		return false
	}
	q.errs = append(q.errs, fmt.Sprintf("parameter %s=%q is not a boolean (use true or false)", key, s))
	return def
}

// Duration returns parameter key parsed as a Go duration such as 30s or 5m.
func (q *Query) Duration(key string, def time.Duration) time.Duration {
	s := q.String(key, "")
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		q.errs = append(q.errs, fmt.Sprintf("parameter %s=%q is not a positive Go duration (e.g. 30s, 5m)", key, s))
		return def
	}
	return d
}

// Done returns an InvalidArgument error naming any parameter that was not
// read, listing the known ones, or any parameter that failed to parse, was
// given twice or was empty. Its text passes through RedactKeys, so that a
// key pasted as a value is never echoed.
func (q *Query) Done(known ...string) error {
	var unknown []string
	for k := range q.vals {
		if !q.used[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	if len(unknown) > 0 {
		q.errs = append(q.errs, fmt.Sprintf("unknown parameter(s) %s (known: %s)",
			strings.Join(unknown, ", "), strings.Join(append(known, portableParams...), ", ")))
	}
	if len(q.errs) > 0 {
		return codes.Errorf(codes.InvalidArgument, "%s", RedactKeys(strings.Join(q.errs, "; ")))
	}
	return nil
}
