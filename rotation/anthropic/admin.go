package anthropic

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/backoff"
)

// Key statuses of the Admin API.
const (
	StatusActive   = "active"
	StatusInactive = "inactive"
	StatusArchived = "archived"
	StatusExpired  = "expired"
)

// apiKey is an Admin API key object. It never holds the key's value.
type apiKey struct {
	ID             string     `json:"id"`
	Type           string     `json:"type"`
	Name           string     `json:"name"`
	Status         string     `json:"status"`
	PartialKeyHint string     `json:"partial_key_hint"`
	WorkspaceID    string     `json:"workspace_id"`
	CreatedAt      time.Time  `json:"created_at"`
	ExpiresAt      *time.Time `json:"expires_at"`
}

// org returns the key as the audit lists it.
func (k *apiKey) org() OrgKey {
	return OrgKey{ID: k.ID, Name: k.Name, Status: k.Status, Hint: k.PartialKeyHint, CreatedAt: k.CreatedAt, ExpiresAt: k.expiry()}
}

// expiry returns when the key expires, zero when never.
func (k *apiKey) expiry() time.Time {
	if k.ExpiresAt == nil {
		return time.Time{}
	}
	return *k.ExpiresAt
}

type listPage struct {
	Data    []apiKey `json:"data"`
	HasMore bool     `json:"has_more"`
	FirstID string   `json:"first_id"`
	LastID  string   `json:"last_id"`
}

// admin calls the Admin API's key endpoints with the Admin key.
type admin struct {
	c        *client
	key      func(context.Context) (providers.Secret, error)
	attempts int
	backoff  backoff.Policy
}

// call sends one Admin API request, retrying rate limits, overloads,
// server and network errors with the backoff policy (honouring
// retry-after).
func (a *admin) call(ctx context.Context, method, path string, body, out any) error {
	key, err := a.key(ctx)
	if err != nil {
		return fmt.Errorf("read the Admin key: %w", err)
	}
	var last error
	for n := 0; n < a.attempts; n++ {
		if n > 0 {
			var after time.Duration
			var ae *APIError
			if errors.As(last, &ae) {
				after = ae.RetryAfter
			}
			if err := backoff.Sleep(ctx, a.backoff.After(n-1, after)); err != nil {
				return err
			}
		}
		err := a.c.do(ctx, key, method, path, body, out)
		if err == nil {
			return nil
		}
		last = err
		var ae *APIError
		if errors.As(err, &ae) && !ae.Retryable() {
			return adminHint(ae)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("gave up after %d attempts: %w", a.attempts, last)
}

// adminHint adds what to do to the Admin API's refusals.
func adminHint(e *APIError) error {
	switch e.Status {
	case 401:
		return fmt.Errorf("%w: the Admin key is invalid (an sk-ant-admin01-... key from Console > Settings > Admin keys)", e)
	case 403:
		return fmt.Errorf("%w: the Admin key may not manage this organization's API keys", e)
	}
	return e
}

func (a *admin) get(ctx context.Context, id string) (*apiKey, error) {
	var k apiKey
	if err := a.call(ctx, "GET", "/v1/organizations/api_keys/"+url.PathEscape(id), nil, &k); err != nil {
		return nil, err
	}
	return &k, nil
}

func (a *admin) setStatus(ctx context.Context, id, status string) (*apiKey, error) {
	var k apiKey
	if err := a.call(ctx, "POST", "/v1/organizations/api_keys/"+url.PathEscape(id), map[string]string{"status": status}, &k); err != nil {
		return nil, err
	}
	if k.Status != "" && k.Status != status {
		return nil, fmt.Errorf("POST /v1/organizations/api_keys/%s: asked for status %s, got %s", id, status, k.Status)
	}
	return &k, nil
}

// each calls fn for every API key of the organization, page by page
// (GET /v1/organizations/api_keys, 1000 a page).
func (a *admin) each(ctx context.Context, fn func(apiKey)) error {
	after := ""
	for page := 0; ; page++ {
		if page >= 1000 {
			return errors.New("GET /v1/organizations/api_keys: more than 1000 pages")
		}
		q := url.Values{"limit": {"1000"}}
		if after != "" {
			q.Set("after_id", after)
		}
		var p listPage
		if err := a.call(ctx, "GET", "/v1/organizations/api_keys?"+q.Encode(), nil, &p); err != nil {
			return err
		}
		for _, k := range p.Data {
			fn(k)
		}
		if !p.HasMore || p.LastID == "" || p.LastID == after {
			return nil
		}
		after = p.LastID
	}
}

// Which key of several matching a hint findByHint prefers.
const (
	preferAny      = ""
	preferActive   = StatusActive   // a key to revoke: the one still in use
	preferInactive = StatusInactive // a pool key to activate: the one held back
)

// findByHint lists every API key of the organization, page by page, and
// returns the one whose partial_key_hint matches key, by matchHint's rule.
func (a *admin) findByHint(ctx context.Context, key providers.Secret, exclude []string, prefer string) (*apiKey, error) {
	var all []apiKey
	if err := a.each(ctx, func(k apiKey) { all = append(all, k) }); err != nil {
		return nil, err
	}
	keys := make([]OrgKey, len(all))
	for i, k := range all {
		keys[i] = k.org()
	}
	i, err := matchHint(keys, key, exclude, prefer)
	if err != nil {
		return nil, err
	}
	return &all[i], nil
}

// matchHint is the one rule that finds a key without id among the
// organization's keys by partial_key_hint (revocation, activation, pool
// draws and the audit all use it): the index of the key in keys whose
// hint matches key. Keys whose id is in exclude (ids already known for
// other keys) never match. When several still match, the only one with
// status prefer wins; an ambiguity that remains is an error wrapping
// errAmbiguous, with the candidates in an *ambiguousError.
func matchHint(keys []OrgKey, key providers.Secret, exclude []string, prefer string) (int, error) {
	var found []int
	for i, k := range keys {
		if hintMatches(k.Hint, key.Reveal()) && !slices.Contains(exclude, k.ID) {
			found = append(found, i)
		}
	}
	if len(found) > 1 && prefer != preferAny {
		var pick []int
		for _, i := range found {
			if keys[i].Status == prefer {
				pick = append(pick, i)
			}
		}
		if len(pick) == 1 {
			found = pick
		}
	}
	switch len(found) {
	case 0:
		return -1, fmt.Errorf("no API key of the organization matches key %s (by partial_key_hint); is it from another organization? attach its id with `keywarden key-id`", key.Fingerprint())
	case 1:
		return found[0], nil
	}
	ids := make([]string, len(found))
	for n, i := range found {
		ids[n] = keys[i].ID + " (" + keys[i].Status + ")"
	}
	return -1, &ambiguousError{Candidates: found, msg: fmt.Sprintf("%d API keys match key %s by partial_key_hint (%s); attach the right id with `keywarden key-id`", len(found), key.Fingerprint(), strings.Join(ids, ", "))}
}

// ambiguousError is matchHint's error when several keys match: Candidates
// are their indexes. It wraps errAmbiguous.
type ambiguousError struct {
	Candidates []int
	msg        string
}

func (e *ambiguousError) Error() string { return errAmbiguous.Error() + ": " + e.msg }
func (e *ambiguousError) Unwrap() error { return errAmbiguous }

// errAmbiguous marks a partial_key_hint that matches several keys.
var errAmbiguous = errors.New("ambiguous key hint")

// hintMatches reports whether a partial_key_hint such as
// "sk-ant-api03-R2D...igAA" matches key: the key starts with the part before
// the ellipsis and ends with the part after it.
func hintMatches(hint, key string) bool {
	pre, post, ok := strings.Cut(hint, "...")
	if !ok {
		pre, post, ok = strings.Cut(hint, "…")
	}
	if !ok || pre == "" || post == "" || len(pre)+len(post) > len(key) {
		return false
	}
	return strings.HasPrefix(key, pre) && strings.HasSuffix(key, post)
}
