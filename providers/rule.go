package providers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
)

// Attempt is one request's course through a Transport's key rule, for a
// caller that sends its requests itself rather than through an
// http.RoundTripper (the sidecar's upstream engine). Transport.RoundTrip
// follows the same course, so the library and the sidecar share one rule:
//
//	a, err := t.Begin(ctx, h)         // the key goes into h (Fields)
//	... send; on a 401 ...
//	next, kind := a.Rejected(ctx, body, classified, replayable)
//	if next != nil { a.Retry(h2, next, kind); send again }
//
// h is the request's header as Fields: HTTPFields(req.Header) for an
// http.Request, or the engine's own.
//
// An Attempt is used by one request at a time.
type Attempt struct {
	t   *Transport
	key *Key   // the key of the first try
	seq uint64 // store reads begun before it was taken
}

// Key returns the key the first try was sent with.
func (a *Attempt) Key() *Key { return a.key }

// Begin takes the key for a request and sets the auth and version headers
// on h (see SetHeaders). A short-lived token within its last moments, or
// expired, is waited for first: one is never sent past its expiry.
func (t *Transport) Begin(ctx context.Context, h Fields) (Attempt, error) {
	t.init()
	if t.Source == nil {
		return Attempt{}, errors.New("providers: Transport has no Source")
	}
	// The key and the count of store reads begun at that instant: a read
	// counted later began after this request took its key (see
	// RefreshIfCurrent).
	k, seq := t.Source.Taken()
	if !k.Expires.IsZero() {
		var err error
		if k, err = t.Source.Fresh(ctx); err != nil {
			return Attempt{}, err
		}
		// Fresh may have waited for a read: count it, and any begun since,
		// as earlier (at worst one needless read after a rejection).
		seq = t.Source.ReadSeq()
	}
	a := Attempt{t: t, key: k, seq: seq}
	t.setHeaders(h, k)
	return a, nil
}

// Rejected applies the 401 rule to a 401 answer to the first try: body is
// the start of its body and classified reports that body is all of it (at
// most MaxErrorBody bytes), replayable that the request's body can be sent
// again. It returns the key to retry with and the event that retry is,
// or nil when the 401 stands (not a rejection of the key, the body cannot
// be replayed, or no other key). It reports the steps to OnEvent.
func (a *Attempt) Rejected(ctx context.Context, body []byte, classified, replayable bool) (*Key, EventKind) {
	t, k := a.t, a.key
	if !classified || !RejectsKey(body) {
		return nil, 0
	}
	t.emit(Event{Kind: EventUnauthorized, Key: k})
	if !replayable {
		t.emit(Event{Kind: EventNotReplayable, Key: k})
		return nil, 0
	}
	next, kind := t.nextKey(ctx, k, a.seq)
	if next == nil && ctx.Err() == nil {
		t.emit(Event{Kind: EventNoOtherKey, Key: k})
	}
	return next, kind
}

// Retry reports the retry with next (of the kind Rejected returned) and
// sets its headers on h, the retry's own header.
func (a *Attempt) Retry(h Fields, next *Key, kind EventKind) {
	a.t.emit(Event{Kind: kind, Key: next})
	a.t.setHeaders(h, next)
}

// NotReplayable reports that the retry Rejected asked for could not be
// sent, as the body could not be had again: the first answer stands.
func (a *Attempt) NotReplayable() { a.t.emit(Event{Kind: EventNotReplayable, Key: a.key}) }

// MaxErrorBody is the most of a 401 body read to classify it (see
// Attempt.Rejected); the API's error bodies are about a hundred bytes.
const MaxErrorBody = 16 << 10

// RejectsKey reports whether the body of a 401 answer says the key was
// rejected: an error of type authentication_error, or not an error in the
// Claude API's shape at all (an upstream of another kind).
func RejectsKey(body []byte) bool {
	var e struct {
		Error struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Type == "" {
		return true
	}
	return e.Error.Type == "authentication_error"
}

// KeepBody reads a request body to keep it for a retry, within
// MaxRetryBody: contentLength is its length, or 0 or less when unknown. It
// returns the whole body in kept (appended to buf[:0]) when it fits, and
// otherwise rest, the reader to send the body from (what was read, then
// the remainder of r): such a request is not replayed after a 401.
func (t *Transport) KeepBody(r io.Reader, contentLength int64, buf []byte) (kept []byte, rest io.Reader, err error) {
	limit := t.maxRetryBody()
	if limit < 0 || contentLength > limit {
		return nil, r, nil
	}
	if contentLength > 0 {
		b := slices.Grow(buf[:0], int(contentLength))[:contentLength]
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, nil, err
		}
		return b, nil, nil
	}
	// Unknown length: keep up to limit bytes; past it, send what was read
	// followed by the rest, without a retry.
	b := buf[:0]
	for int64(len(b)) <= limit {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(max(cap(b), 512), int(limit+1)-len(b)))
		}
		n, err := r.Read(b[len(b):min(cap(b), int(limit+1))])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
	return nil, io.MultiReader(bytes.NewReader(b), r), nil
}
