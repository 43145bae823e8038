package rotation

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

	"github.com/keywarden/keywarden/providers/backoff"
)

// EventType names what happened.
type EventType string

// The events a rotator emits.
const (
	// EventRotated: a new key was promoted to CURRENT.
	EventRotated EventType = "rotation.promoted"
	// EventRevoked: the old key was revoked; the rotation is complete.
	EventRevoked EventType = "rotation.revoked"
	// EventFailed: a run failed (probe failure, conflict, store or issuer
	// error); Outcome and Reason say why.
	EventFailed EventType = "rotation.failed"
	// EventPoolLow: the issuer's pool is running low (or is empty).
	EventPoolLow EventType = "pool.low"
	// EventLeaseBroken: an operator broke the key's lease
	// (`rotate --break-lease`); Holder and LeaseUntil say whose it was.
	EventLeaseBroken EventType = "rotation.lease_broken"
	// EventKeyID: an operator attached an issuer key id to a stored
	// version or a pool key (`keywarden key-id`).
	EventKeyID EventType = "rotation.key_id"
	// EventGateHeld: the revoke gate's max_wait is over and consumers still
	// report the old key; both keys stay valid (policy hold). Reason lists
	// them.
	EventGateHeld EventType = "rotation.gate_held"
	// EventGateForced: the old key is revoked although consumers still
	// reported it when the gate's max_wait ended (policy revoke).
	EventGateForced EventType = "rotation.gate_forced"
	// EventRolledBack: an operator made the old key CURRENT again during
	// the grace (`keywarden put` of it): the rotation ended without
	// revoking either key; the new key is PREVIOUS and still valid (the
	// old and new versions, fingerprints and ids name them).
	EventRolledBack EventType = "rotation.rolled_back"
	// EventNotRevoked: the rotation ended without revoking the old key (no
	// value or id to revoke it by, or an operator's `rotate --abandon` of
	// the revocation): it is still valid and must be revoked by hand.
	// Reason says why; the old version, fingerprint and id name it.
	EventNotRevoked EventType = "rotation.not_revoked"
)

// Event is what a Notifier receives. It holds version ids, key ids and
// fingerprints, never a key value, so it is safe to send anywhere.
type Event struct {
	Type           EventType `json:"type"`
	Key            string    `json:"key"`
	Time           time.Time `json:"time"`
	Outcome        string    `json:"outcome,omitempty"`
	Reason         string    `json:"reason,omitempty"`
	Phase          Phase     `json:"phase,omitempty"`
	NewVersion     string    `json:"new_version,omitempty"`
	NewFingerprint string    `json:"new_fingerprint,omitempty"`
	NewKeyID       string    `json:"new_key_id,omitempty"`
	OldVersion     string    `json:"old_version,omitempty"`
	OldFingerprint string    `json:"old_fingerprint,omitempty"`
	OldKeyID       string    `json:"old_key_id,omitempty"`
	RevokeDue      time.Time `json:"revoke_due,omitzero"`
	PoolKeys       *int      `json:"pool_keys,omitempty"`
	ExitCode       int       `json:"exit_code,omitempty"`
	Holder         string    `json:"holder,omitempty"`
	LeaseUntil     time.Time `json:"lease_until,omitzero"`
}

// Notifier receives rotation events. Notify must not block for long; its
// error is logged and does not change a run's outcome.
type Notifier interface {
	Notify(ctx context.Context, e Event) error
}

// NotifierFunc adapts a function to Notifier.
type NotifierFunc func(ctx context.Context, e Event) error

// Notify calls f.
func (f NotifierFunc) Notify(ctx context.Context, e Event) error { return f(ctx, e) }

// Webhook posts each event as JSON to a URL.
type Webhook struct {
	// URL receives POST requests with the Event as a JSON body.
	URL string
	// Timeout bounds one delivery (default 10s).
	Timeout time.Duration
	// Client sends the requests (default: a client with no redirects).
	Client *http.Client
}

var _ Notifier = (*Webhook)(nil)

// Notify posts e, trying once more (after a wait of webhookBackoff, or the
// receiver's retry-after when longer, up to the delivery timeout) when the
// first attempt fails with a network error, a 429 or a 5xx status.
func (w *Webhook) Notify(ctx context.Context, e Event) error {
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("rotation: webhook: encode event: %w", err)
	}
	timeout := w.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	c := w.Client
	if c == nil {
		c = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	var last error
	var after time.Duration
	for attempt := 0; attempt < webhookAttempts; attempt++ {
		if attempt > 0 {
			if err := backoff.Sleep(ctx, min(webhookBackoff.After(attempt-1, after), timeout)); err != nil {
				return err
			}
		}
		retry, ra, err := w.post(ctx, c, timeout, body)
		if err == nil {
			return nil
		}
		last, after = err, ra
		if !retry {
			break
		}
	}
	return last
}

// Webhook delivery tries and the waits between them.
const webhookAttempts = 2

var webhookBackoff = backoff.Policy{Min: time.Second, Max: 10 * time.Second}

func (w *Webhook) post(ctx context.Context, c *http.Client, timeout time.Duration, body []byte) (retry bool, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return false, 0, fmt.Errorf("rotation: webhook %s: %w", redactURL(w.URL), err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "keywarden-rotator")
	resp, err := c.Do(req)
	if err != nil {
		// url.Error quotes the URL, which may carry a token (Slack-style
		// hooks): report the host only.
		return true, 0, fmt.Errorf("rotation: webhook %s: %w", redactURL(w.URL), unwrapURLError(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		retry := resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
		return retry, parseRetryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("rotation: webhook %s answered %s", redactURL(w.URL), resp.Status)
	}
	return false, 0, nil
}

// parseRetryAfter parses a Retry-After header in seconds (0 when absent or
// not a number of seconds).
func parseRetryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// redactURL returns scheme://host of raw: webhook paths and queries often
// carry tokens.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(webhook URL)"
	}
	return u.Scheme + "://" + u.Host + "/…"
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
