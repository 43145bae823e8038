package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"

	"github.com/keywarden/keywarden/providers"
)

// keyLike matches values shaped like API keys and bearer credentials: the
// sk-… family (Anthropic, OpenAI), and whatever follows "Bearer ".
var keyLike = regexp.MustCompile(`sk-[A-Za-z0-9_\-]{12,}|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}`)

// Redact replaces everything in s that looks like a key with its
// fingerprint. Keys are never logged on purpose; this is the net under that
// rule, for text that comes from elsewhere (upstream error messages, errors
// of libraries).
func Redact(s string) string {
	if !keyLike.MatchString(s) {
		return s
	}
	return keyLike.ReplaceAllStringFunc(s, func(m string) string {
		return "[redacted " + providers.Fingerprint(m) + "]"
	})
}

// RedactingHandler wraps an slog.Handler and passes every message and
// string-valued attribute (errors included) through Redact.
type RedactingHandler struct{ next slog.Handler }

var _ slog.Handler = RedactingHandler{}

// NewRedactingHandler wraps next.
func NewRedactingHandler(next slog.Handler) RedactingHandler { return RedactingHandler{next} }

// NewLogger returns a logger whose records are redacted before h sees them.
func NewLogger(h slog.Handler) *slog.Logger { return slog.New(NewRedactingHandler(h)) }

// Enabled reports whether the wrapped handler handles level.
func (h RedactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle redacts r and passes it on.
func (h RedactingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, Redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs redacts attrs and passes them on.
func (h RedactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = redactAttr(a)
	}
	return RedactingHandler{h.next.WithAttrs(red)}
}

// WithGroup passes the group on.
func (h RedactingHandler) WithGroup(name string) slog.Handler {
	return RedactingHandler{h.next.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, Redact(v.String()))
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
			return slog.String(a.Key, Redact(x.Error()))
		case interface{ String() string }:
			return slog.String(a.Key, Redact(x.String()))
		default:
			return slog.String(a.Key, Redact(fmt.Sprintf("%+v", x)))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
