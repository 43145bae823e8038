// Package httpprobe is a rotation probe that sends one HTTP request carrying
// the new key in a header and expects a status, for keys of any service.
//
// Header values are templates: {{key}} stands for the key, e.g.
// "Authorization: Bearer {{key}}". The key never goes into the URL (where
// proxies and servers log it): New refuses a URL holding {{key}}.
package httpprobe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/netrule"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/rotation"
)

// Placeholder stands for the key in header templates.
const Placeholder = "{{key}}"

// Options configure a Probe.
type Options struct {
	// Method is the request method (default GET).
	Method string
	// URL is the absolute URL to call: https, or plain http only to this
	// machine (see CheckURL), since the request carries the key.
	URL string
	// Headers are sent with every request; {{key}} in a value is replaced
	// by the key. At least one header must carry the key.
	Headers map[string]string
	// ExpectStatus is the status that means the key works (default 200).
	ExpectStatus int
	// HTTPClient sends the requests; redirects are never followed.
	HTTPClient *http.Client
}

// Probe sends the configured request.
type Probe struct {
	o      Options
	client *http.Client
}

var _ rotation.Probe = (*Probe)(nil)

// New returns a Probe, or an error naming what is wrong in o.
func New(o Options) (*Probe, error) {
	if o.Method == "" {
		o.Method = http.MethodGet
	}
	o.Method = strings.ToUpper(o.Method)
	if o.ExpectStatus == 0 {
		o.ExpectStatus = http.StatusOK
	}
	if o.ExpectStatus < 100 || o.ExpectStatus > 599 {
		return nil, fmt.Errorf("httpprobe: expect_status %d is not an HTTP status", o.ExpectStatus)
	}
	if err := CheckURL(o.URL); err != nil {
		return nil, err
	}
	carries := false
	for k, v := range o.Headers {
		if k == "" || strings.ContainsAny(k, " :\r\n") || strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("httpprobe: header %q is not a valid header name and value", k)
		}
		if strings.Contains(v, Placeholder) {
			carries = true
		}
	}
	if !carries {
		return nil, fmt.Errorf("httpprobe: no header carries %s; add one, e.g. Authorization: \"Bearer %s\"", Placeholder, Placeholder)
	}
	c := o.HTTPClient
	if c == nil {
		c = &http.Client{Timeout: time.Minute}
	}
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Probe{o: o, client: &cc}, nil
}

// CheckURL checks a probe's URL. The probe sends the key (in a header), so
// the URL must be one netrule.CheckSecure accepts (https, or plain http
// only to this machine, without user info), and must not carry {{key}}.
// New refuses a URL it refuses. Its errors never hold user info.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("httpprobe: url is not a URL")
	}
	if err := netrule.CheckSecure(u); err != nil {
		return fmt.Errorf("httpprobe: url %s://%s: %w", u.Scheme, u.Host, err)
	}
	if strings.Contains(raw, Placeholder) || strings.Contains(u.String(), url.QueryEscape(Placeholder)) {
		return fmt.Errorf("httpprobe: url must not carry %s: URLs are logged; put the key in a header", Placeholder)
	}
	return nil
}

// Type returns "http".
func (*Probe) Type() string { return "http" }

// Probe sends the request once. The expected status passes; 429, 5xx and
// network errors are retryable (with retry-after); any other status fails.
func (p *Probe) Probe(ctx context.Context, key providers.Secret) error {
	u, _ := url.Parse(p.o.URL)
	what := p.o.Method + " " + u.Scheme + "://" + u.Host + u.Path
	req, err := http.NewRequestWithContext(ctx, p.o.Method, p.o.URL, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for k, v := range p.o.Headers {
		req.Header.Set(textproto.CanonicalMIMEHeaderKey(k), strings.ReplaceAll(v, Placeholder, key.Reveal()))
	}
	resp, err := p.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return &rotation.ProbeError{Retryable: true, Err: fmt.Errorf("%s: %w", what, err)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode == p.o.ExpectStatus {
		return nil
	}
	retry := resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
	return &rotation.ProbeError{
		Retryable:  retry,
		RetryAfter: retryAfter(resp.Header.Get("Retry-After")),
		Err:        fmt.Errorf("%s: status %d, want %d", what, resp.StatusCode, p.o.ExpectStatus),
	}
}

func retryAfter(v string) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}
