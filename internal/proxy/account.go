package proxy

import (
	"sync"

	"github.com/valyala/fasthttp"

	"github.com/keywarden/keywarden/internal/proxy/usage"
	"github.com/keywarden/keywarden/internal/telemetry"
)

// meterWriter is the proxy's side of the accounting: the answer's bytes
// are fed to a usage.Meter after they went out to the client, so that
// nothing is buffered or held back; the Meter sees only bytes and a header
// accessor.
type meterWriter struct {
	m        usage.Meter
	rl       *telemetry.RateLimitGauges
	limits   usage.RateLimits // the answer's rate-limit headers, read as respond copies them
	messages bool             // a Messages request: its usage is read
	status   int
	own      bool // the sidecar answered itself (upstream failure)
	gone     bool // the client went away before an answer
}

var meterPool = sync.Pool{New: func() any { return new(meterWriter) }}

func getMeterWriter(rl *telemetry.RateLimitGauges, messages bool) *meterWriter {
	mw := meterPool.Get().(*meterWriter)
	mw.rl, mw.messages, mw.status, mw.own, mw.gone = rl, messages, 0, false, false
	mw.limits = usage.RateLimits{}
	mw.m.Reset(usage.None)
	return mw
}

func putMeterWriter(mw *meterWriter) {
	mw.rl = nil
	meterPool.Put(mw)
}

// header decides what to read of the upstream's answer with status and
// header h: the usage of a Messages answer (JSON or SSE), the error type
// of an error answer (JSON); and records the upstream's rate-limit
// headers, read into w.limits as the header was copied.
func (w *meterWriter) header(status int, h *fasthttp.ResponseHeader) {
	w.status = status
	f := usage.FormatOf(h.ContentType())
	if !(w.messages && status < 300 || status >= 400 && f == usage.JSON) {
		f = usage.None
	}
	w.m.Reset(f)
	if w.limits.Any() {
		w.rl.Set(&w.limits)
	}
}

// wrote reads p, a part of the answer's body that went out.
func (w *meterWriter) wrote(p []byte) {
	if w.m.Format() != usage.None {
		_, _ = w.m.Write(p)
	}
}

// account records what a forwarded request used: its tokens and cost by
// model, and its upstream error type. It returns the tokens and the cost.
func (w *meterWriter) account(s *telemetry.Spend, cat *usage.Catalog) (tokens int64, usd float64) {
	switch {
	case w.gone:
		return 0, 0
	case w.own:
		s.SidecarError()
		return 0, 0
	}
	if w.messages {
		if u := w.m.Usage(); u.Tokens.Total() > 0 {
			tokens = u.Tokens.Total()
			usd = s.Tokens(cat.Lookup(w.m.Model()), u)
		}
	}
	et := w.m.ErrorType()
	if et == nil && w.status >= 400 {
		et = otherError
	}
	s.Request(et)
	return tokens, usd
}

var otherError = []byte(usage.OtherError)
