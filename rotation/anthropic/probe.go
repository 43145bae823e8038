package anthropic

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/rotation"
)

// ProbeOptions configure a Probe.
type ProbeOptions struct {
	// BaseURL is the API's base URL (DefaultBaseURL). The key is sent
	// there: one CheckBaseURL refuses fails every probe, without sending.
	BaseURL string
	// Version is the anthropic-version header (providers.DefaultAnthropicVersion).
	Version string
	// Model, when set, is also checked with POST /v1/messages/count_tokens
	// (free), proving the key may use that model.
	Model string
	// HTTPClient sends the requests; redirects are never followed.
	HTTPClient *http.Client
}

// Probe proves a Claude API key works: GET /v1/models (no tokens billed)
// answers 200, and, with a Model, count_tokens for it answers 200.
type Probe struct {
	c     *client
	model string
}

var _ rotation.Probe = (*Probe)(nil)

// NewProbe returns a Probe.
func NewProbe(o ProbeOptions) *Probe {
	return &Probe{c: newClient(o.BaseURL, o.Version, o.HTTPClient), model: o.Model}
}

// Type returns "anthropic".
func (*Probe) Type() string { return "anthropic" }

// Probe tries key once. 401 and 403 are refusals (not Retryable) with the
// API's error type: the rotator tries them again only while a key it just
// activated settles (rotation.Retry.Settle); 429, 5xx and 529 (and network
// errors) are retryable, with the server's retry-after.
func (p *Probe) Probe(ctx context.Context, key providers.Secret) error {
	if p.c.err != nil {
		return &rotation.ProbeError{Err: p.c.err} // no retry can fix it
	}
	if err := p.c.do(ctx, key, "GET", "/v1/models?limit=1", nil, nil); err != nil {
		return classify(ctx, err)
	}
	if p.model == "" {
		return nil
	}
	body := map[string]any{
		"model":    p.model,
		"messages": []map[string]string{{"role": "user", "content": "ping"}},
	}
	if err := p.c.do(ctx, key, "POST", "/v1/messages/count_tokens", body, nil); err != nil {
		err = classify(ctx, err)
		var pe *rotation.ProbeError
		if errors.As(err, &pe) && !pe.Retryable {
			pe.Err = fmt.Errorf("model %s: %w", p.model, pe.Err)
		}
		return err
	}
	return nil
}

// classify turns a request error into a *rotation.ProbeError.
func classify(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return &rotation.ProbeError{Retryable: ae.Retryable(), RetryAfter: ae.RetryAfter, Err: ae}
	}
	// Network errors: the API may be unreachable for a moment.
	return &rotation.ProbeError{Retryable: true, Err: err}
}
