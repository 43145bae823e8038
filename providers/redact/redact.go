// Package redact removes key-shaped values from text and log records. Keys
// are never logged on purpose; this is the net under that rule, for text that
// comes from elsewhere (upstream error messages, errors of libraries, issuer
// commands). It is public so that issuers and probes outside keywarden use the
// same net.
package redact

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/keywarden/keywarden/providers"
)

// String replaces every occurrence of the known secrets in s, and anything
// else in s shaped like a key (providers.RedactKeys), with the value's
// fingerprint.
func String(s string, known ...providers.Secret) string {
	for _, sec := range known {
		if v := sec.Reveal(); len(v) >= 8 {
			s = strings.ReplaceAll(s, v, "[redacted "+sec.Fingerprint()+"]")
		}
	}
	return providers.RedactKeys(s)
}

// Handler wraps an slog.Handler and passes every message and
// string-valued attribute (errors included) through String.
type Handler struct{ next slog.Handler }

var _ slog.Handler = Handler{}

// NewHandler wraps next.
func NewHandler(next slog.Handler) Handler { return Handler{next} }

// NewLogger returns a logger whose records are redacted before h sees them.
func NewLogger(h slog.Handler) *slog.Logger { return slog.New(NewHandler(h)) }

// Enabled reports whether the wrapped handler handles level.
func (h Handler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle redacts r and passes it on.
func (h Handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, String(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs redacts attrs and passes them on.
func (h Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = redactAttr(a)
	}
	return Handler{h.next.WithAttrs(red)}
}

// WithGroup passes the group on.
func (h Handler) WithGroup(name string) slog.Handler {
	return Handler{h.next.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, String(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, ga := range g {
			red[i] = redactAttr(ga)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, String(x.Error()))
		case interface{ String() string }:
			return slog.String(a.Key, String(x.String()))
		default:
			return slog.String(a.Key, String(fmt.Sprintf("%+v", x)))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
