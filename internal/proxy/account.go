package proxy

import (
	"net/http"
	"sync"

	"github.com/keywarden/keywarden/internal/proxy/usage"
	"github.com/keywarden/keywarden/internal/telemetry"
)

// meterWriter is the proxy's side of the accounting: it passes every
// write and flush on to the client at once, and feeds the bytes written to
// a usage.Meter after they went out, so that nothing is buffered or held
// back; the Meter sees only bytes and a header accessor, never net/http.
type meterWriter struct {
	http.ResponseWriter
	m        usage.Meter
	rl       *telemetry.RateLimitGauges
	messages bool // a Messages request: its usage is read
	status   int
	own      bool // the sidecar answered itself (upstream failure)
	gone     bool // the client went away before an answer
}

var meterPool = sync.Pool{New: func() any { return new(meterWriter) }}

func getMeterWriter(w http.ResponseWriter, rl *telemetry.RateLimitGauges, messages bool) *meterWriter {
	mw := meterPool.Get().(*meterWriter)
	mw.ResponseWriter, mw.rl, mw.messages, mw.status, mw.own, mw.gone = w, rl, messages, 0, false, false
	mw.m.Reset(usage.None)
	return mw
}

func putMeterWriter(mw *meterWriter) {
	mw.ResponseWriter, mw.rl = nil, nil
	meterPool.Put(mw)
}

// WriteHeader decides what to read of the body: the usage of a Messages
// answer (JSON or SSE), the error type of an error answer (JSON); and
// records the upstream's rate-limit headers.
func (w *meterWriter) WriteHeader(code int) {
	if code >= 200 && w.status == 0 {
		w.status = code
		if !w.own {
			h := w.ResponseWriter.Header()
			f := usage.FormatOf(h.Get("Content-Type"))
			if !(w.messages && code < 300 || code >= 400 && f == usage.JSON) {
				f = usage.None
			}
			w.m.Reset(f)
			if rl, ok := usage.ReadRateLimits(h); ok {
				w.rl.Set(&rl)
			}
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write writes p to the client, then reads it.
func (w *meterWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	if w.m.Format() != usage.None {
		_, _ = w.m.Write(p[:n])
	}
	return n, err
}

// Flush flushes the client's connection.
func (w *meterWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
		return
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap returns the client's ResponseWriter, for http.ResponseController.
func (w *meterWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

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
