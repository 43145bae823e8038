package providers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// DefaultAnthropicVersion is the anthropic-version a Transport made by
// NewClient sets on requests that carry none.
const DefaultAnthropicVersion = "2023-06-01"

// DefaultMaxRetryBody is the largest request body a Transport keeps in
// memory so that it can send it again after a 401 (Transport.MaxRetryBody).
const DefaultMaxRetryBody = 1 << 20

// Auth says how a Transport presents the key to the upstream.
type Auth uint8

const (
	// AuthAPIKey sends "x-api-key: KEY", as the Claude API wants.
	AuthAPIKey Auth = iota
	// AuthBearer sends "Authorization: Bearer KEY", for upstreams that use it.
	AuthBearer
)

// String returns the config spelling: "x-api-key" or "bearer".
func (a Auth) String() string {
	if a == AuthBearer {
		return "bearer"
	}
	return "x-api-key"
}

// VersionPolicy says what a Transport does with the anthropic-version header.
type VersionPolicy uint8

const (
	// VersionSetIfAbsent sets Transport.Version on requests that carry no
	// anthropic-version, and leaves the client's own version alone.
	VersionSetIfAbsent VersionPolicy = iota
	// VersionEnforce replaces whatever the client sent with Transport.Version.
	VersionEnforce
)

// String returns the config spelling: "set-if-absent" or "enforce".
func (p VersionPolicy) String() string {
	if p == VersionEnforce {
		return "enforce"
	}
	return "set-if-absent"
}

// EventKind names what happened in a Transport's 401 handling.
type EventKind uint8

// The events a Transport reports to Transport.OnEvent.
const (
	// EventUnauthorized: the upstream answered 401 authentication_error to
	// Event.Key.
	EventUnauthorized EventKind = iota + 1
	// EventRetryRefreshed: the request is sent again with Event.Key, the
	// CURRENT key after a refresh.
	EventRetryRefreshed
	// EventRetryPrevious: the refreshed key was the rejected one, and the
	// request is sent again with Event.Key, the PREVIOUS key.
	EventRetryPrevious
	// EventNotReplayable: no retry, as the body was too large to keep or
	// could not be replayed.
	EventNotReplayable
	// EventNoOtherKey: no retry, as the store holds no other key to try.
	EventNoOtherKey
	// EventRefreshFailed: the refresh after a 401 failed (Event.Err); the
	// PREVIOUS key is tried when there is one.
	EventRefreshFailed
)

var eventNames = [...]string{"", "unauthorized", "retry_refreshed", "retry_previous", "not_replayable", "no_other_key", "refresh_failed"}

// String returns the event's name as metrics and logs spell it.
func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event is one step of a Transport's 401 handling. It carries key snapshots,
// which print as version and fingerprint only.
type Event struct {
	Kind EventKind
	Key  *Key  // the rejected key, or the key of the retry
	Err  error // set for EventRefreshFailed
}

// Transport is an http.RoundTripper that sends the key of a Source on every
// request, and that survives a rotation: when the upstream answers 401
// authentication_error, it refreshes the Source (one store read shared by
// every caller, see Source.RefreshIfCurrent) and sends the request once more
// with the new key; when the store still holds the rejected key as CURRENT
// and has a PREVIOUS, it tries that once instead. It never retries twice.
//
// A retry needs the body again: bodies with GetBody (as http.NewRequest makes
// for byte and string readers) are replayed from it; other bodies are kept in
// memory when their size is at most MaxRetryBody, and otherwise the 401 is
// returned as it came.
//
// The client's own credentials (x-api-key, Authorization) never reach the
// upstream: they are replaced or removed. The key goes on every request the
// Transport sends: use it only in clients that talk to the upstream, and do
// not let them follow redirects to other hosts (NewClient's does not). Transport does not modify the
// caller's request. Set the fields before first use and do not change them
// afterwards; a Transport is safe for concurrent use. The sidecar proxy uses
// this same Transport, so the library and the proxy share one retry rule.
type Transport struct {
	// Source supplies the key. Required.
	Source *Source
	// Base sends the requests (http.DefaultTransport when nil).
	Base http.RoundTripper
	// Auth selects the header the key goes in (AuthAPIKey).
	Auth Auth
	// Version is the anthropic-version to send; "" leaves the header alone.
	Version string
	// VersionPolicy says when Version replaces the client's header
	// (VersionSetIfAbsent).
	VersionPolicy VersionPolicy
	// MaxRetryBody is the largest body without GetBody that is kept in memory
	// for a retry (DefaultMaxRetryBody when 0; negative: none is kept).
	MaxRetryBody int64
	// OnEvent, when set, is called on every step of the 401 handling, for
	// metrics and logs. It must be quick and safe for concurrent use.
	OnEvent func(Event)

	once    sync.Once
	version []string                    // Version as a shared header value
	bearer  atomic.Pointer[bearerValue] // "Bearer KEY" of the last key used
}

type bearerValue struct {
	k *Key
	h []string
}

var _ http.RoundTripper = (*Transport)(nil)

// NewClient returns an *http.Client that sends src's key on every request,
// with the Transport's 401 rule, and anthropic-version DefaultAnthropicVersion
// when the request has none. It has no overall timeout, so long streams are
// not cut; bound requests with their context. Hand it to an SDK, e.g.
// anthropic.NewClient(option.WithHTTPClient(providers.NewClient(src))).
//
// The client follows redirects only within the host of the first request:
// the Transport puts the key on every request it sends, so a redirect to
// another host would carry the key there.
func NewClient(src *Source) *http.Client {
	return &http.Client{
		Transport:     &Transport{Source: src, Version: DefaultAnthropicVersion},
		CheckRedirect: sameHostRedirects,
	}
}

// sameHostRedirects stops at a redirect to another host, returning the
// redirect response itself, and after 10 redirects.
func sameHostRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("providers: stopped after 10 redirects")
	}
	if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
		return http.ErrUseLastResponse
	}
	return nil
}

// Canonical header names.
const (
	hdrAPIKey  = "X-Api-Key"
	hdrAuth    = "Authorization"
	hdrVersion = "Anthropic-Version"
)

func (t *Transport) init() {
	t.once.Do(func() {
		if t.Version != "" {
			t.version = []string{t.Version}
		}
	})
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

func (t *Transport) maxRetryBody() int64 {
	if t.MaxRetryBody == 0 {
		return DefaultMaxRetryBody
	}
	return t.MaxRetryBody
}

// RoundTrip sends req with the Source's key, and once more after a 401
// authentication_error when a new or previous key may succeed.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	out := new(http.Request)
	*out = *req
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = make(http.Header, 2)
	}
	return t.roundTrip(out)
}

// RoundTripOwned is RoundTrip for a caller that owns req and does not use it
// afterwards, such as a reverse proxy's outgoing request: it sets the key
// headers on req's own header map instead of a copy, which saves copying
// every header on every request.
func (t *Transport) RoundTripOwned(req *http.Request) (*http.Response, error) {
	if req.Header == nil {
		req.Header = make(http.Header, 2)
	}
	return t.roundTrip(req)
}

func (t *Transport) roundTrip(out *http.Request) (*http.Response, error) {
	t.init()
	if t.Source == nil {
		closeBody(out)
		return nil, errors.New("providers: Transport has no Source")
	}
	replayable, err := t.prepareBody(out)
	if err != nil {
		return nil, err
	}
	a, err := t.Begin(out.Context(), HTTPFields(out.Header))
	if err != nil {
		closeBody(out)
		return nil, err
	}
	resp, err := t.base().RoundTrip(out)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	body, classified := peekErrorBody(resp)
	next, kind := a.Rejected(out.Context(), body, classified, replayable)
	if next == nil {
		return resp, nil
	}
	retry, err := retryRequest(out)
	if err != nil {
		// The body cannot be had again: the first answer stands.
		a.NotReplayable()
		return resp, nil
	}
	_ = resp.Body.Close()
	a.Retry(HTTPFields(retry.Header), next, kind)
	return t.base().RoundTrip(retry)
}

// nextKey returns the key to retry with after k was rejected: the CURRENT
// key after a coalesced refresh when it differs, else the PREVIOUS key when
// it differs, else nil.
func (t *Transport) nextKey(ctx context.Context, k *Key, seq uint64) (*Key, EventKind) {
	cur, err := t.Source.RefreshIfCurrent(ctx, k, seq)
	if err != nil {
		t.emit(Event{Kind: EventRefreshFailed, Key: k, Err: err})
		// A rejected short-lived token is dropped, as the SDKs do: the
		// next requests wait for a new one rather than send it again.
		t.Source.drop(k)
	} else if cur != nil && !sameKey(cur, k) {
		return cur, EventRetryRefreshed
	}
	if ctx.Err() != nil {
		return nil, 0
	}
	if p := t.Source.Previous(); p != nil && !sameKey(p, k) {
		return p, EventRetryPrevious
	}
	return nil, 0
}

func sameKey(a, b *Key) bool { return a == b || a.Value.Equal(b.Value) }

func (t *Transport) emit(ev Event) {
	if t.OnEvent != nil {
		t.OnEvent(ev)
	}
}

// Fields is a request's header as the key rule reads and changes it (see
// Attempt): fields by canonical name (as net/http.CanonicalHeaderKey
// writes it), each with its values. HTTPFields makes an http.Header one; an
// engine that keeps a request's header its own way implements it there.
type Fields interface {
	// Values returns the values of the field name, or nil when absent.
	Values(name string) []string
	// Replace sets the values of the field name to vs, adding the field
	// when absent. vs may be shared: neither side changes it afterwards.
	Replace(name string, vs []string)
	// Del removes the field name.
	Del(name string)
}

// HTTPFields is an http.Header as Fields: the names it is given are
// canonical already, so they are used as map keys as they are.
type HTTPFields http.Header

// Values returns h[name].
func (h HTTPFields) Values(name string) []string { return h[name] }

// Replace sets h[name] to vs.
func (h HTTPFields) Replace(name string, vs []string) { h[name] = vs }

// Del deletes h[name].
func (h HTTPFields) Del(name string) { delete(h, name) }

// setHeaders puts k in the auth header, removes the other auth header, and
// applies the version policy. The values are shared slices: no allocation.
func (t *Transport) setHeaders(h Fields, k *Key) {
	if k.OAuth {
		h.Del(hdrAPIKey)
		h.Replace(hdrAuth, t.bearerHeader(k))
		mergeOAuthBeta(h)
	} else if t.Auth == AuthBearer {
		h.Del(hdrAPIKey)
		h.Replace(hdrAuth, t.bearerHeader(k))
	} else {
		h.Del(hdrAuth)
		h.Replace(hdrAPIKey, k.HeaderValue())
	}
	if t.version != nil && (t.VersionPolicy == VersionEnforce || len(h.Values(hdrVersion)) == 0) {
		h.Replace(hdrVersion, t.version)
	}
}

func (t *Transport) bearerHeader(k *Key) []string {
	if b := t.bearer.Load(); b != nil && b.k == k {
		return b.h
	}
	b := &bearerValue{k: k, h: []string{"Bearer " + k.Value.Reveal()}}
	t.bearer.Store(b)
	return b.h
}

// OAuthBeta is the anthropic-beta value that requests authenticated with an
// OAuth access token (Key.OAuth, as minted by Workload Identity Federation)
// must carry.
const OAuthBeta = "oauth-2025-04-20"

const hdrBeta = "Anthropic-Beta"

// oauthBetaValue is OAuthBeta as a shared header value.
var oauthBetaValue = []string{OAuthBeta}

// mergeOAuthBeta adds OAuthBeta to the client's anthropic-beta values: the
// client's own values are kept in their order, and OAuthBeta is not added
// twice. Several header lines are joined into one comma-separated line.
func mergeOAuthBeta(h Fields) {
	const beta = OAuthBeta
	vs := h.Values(hdrBeta)
	if len(vs) == 0 || (len(vs) == 1 && strings.TrimSpace(vs[0]) == "") {
		h.Replace(hdrBeta, oauthBetaValue)
		return
	}
	if len(vs) == 1 && !strings.Contains(vs[0], beta) {
		// The common case: one line without it; append, keeping the
		// client's spelling.
		h.Replace(hdrBeta, []string{strings.TrimRight(vs[0], ", \t") + "," + beta})
		return
	}
	var b strings.Builder
	for _, v := range vs {
		for part := range strings.SplitSeq(v, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			if strings.EqualFold(part, beta) && len(vs) == 1 {
				return // already there, on its one line: leave it as sent
			}
			if strings.EqualFold(part, beta) {
				continue // added once, at the end
			}
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(part)
		}
	}
	if b.Len() > 0 {
		b.WriteByte(',')
	}
	b.WriteString(beta)
	h.Replace(hdrBeta, []string{b.String()})
}

// prepareBody makes out's body replayable when it can be: it reports true
// when GetBody can produce the body again (or there is none).
func (t *Transport) prepareBody(out *http.Request) (bool, error) {
	if out.Body == nil || out.Body == http.NoBody {
		return true, nil
	}
	if out.GetBody != nil {
		return true, nil
	}
	orig := out.Body
	kept, rest, err := t.KeepBody(orig, out.ContentLength, nil)
	if err != nil {
		_ = orig.Close()
		return false, fmt.Errorf("providers: read request body: %w", err)
	}
	if rest != nil {
		if rest != io.Reader(orig) {
			out.Body = &prefixBody{Reader: rest, c: orig}
		}
		return false, nil
	}
	_ = orig.Close()
	setBytesBody(out, kept)
	return true, nil
}

func setBytesBody(out *http.Request, b []byte) {
	out.ContentLength = int64(len(b))
	out.TransferEncoding = nil
	if len(b) == 0 {
		out.Body = http.NoBody
		out.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
		return
	}
	// NopCloser over a bytes.Reader, which net/http knows to be in memory:
	// it then writes the headers and the body in one write, not two.
	out.Body = io.NopCloser(bytes.NewReader(b))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

type prefixBody struct {
	io.Reader
	c io.Closer
}

func (p *prefixBody) Close() error { return p.c.Close() }

// retryRequest returns a copy of out with its own header map and a fresh
// body from GetBody: the first attempt's request may still be read by the
// base transport.
func retryRequest(out *http.Request) (*http.Request, error) {
	r := new(http.Request)
	*r = *out
	r.Header = out.Header.Clone()
	if out.GetBody != nil {
		b, err := out.GetBody()
		if err != nil {
			return nil, err
		}
		r.Body = b
	}
	return r, nil
}

func closeBody(r *http.Request) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
}

// peekErrorBody reads the start of a 401 body, at most MaxErrorBody bytes,
// and puts it back, so that the caller still gets the body whole; whole
// reports that it is all of the body.
func peekErrorBody(resp *http.Response) (b []byte, whole bool) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxErrorBody+1))
	if err != nil || len(b) > MaxErrorBody {
		resp.Body = &prefixBody{Reader: io.MultiReader(bytes.NewReader(b), resp.Body), c: resp.Body}
		return b, false
	}
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b, true
}
