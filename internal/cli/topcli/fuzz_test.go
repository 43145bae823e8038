package topcli

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary metrics bodies (untrusted: whatever answers on
// the metrics address) to the parser and the view. Property: no panic, and
// whatever the body holds, the frame top prints (the view with and without
// rates, and the error line of a body it refuses) holds no control
// character other than newline, so a body cannot drive the terminal.
func FuzzParse(f *testing.F) {
	f.Add([]byte(prevBody))
	f.Add([]byte(curBody))
	f.Add([]byte("keywarden_sidecar_client_requests_total{client=\"\x1b[2J\",error_type=\"\\n\t\"} 1\n"))
	f.Add([]byte("# TYPE keywarden_sidecar_tokens_total histogram\nkeywarden_sidecar_tokens_total_bucket{le=\"+Inf\"} 1\n"))
	f.Add([]byte("keywarden_sidecar_cost_usd_total{client=\"a\",model=\"m\"} 1e308\nkeywarden_sidecar_cost_usd_total{client=\"a\",model=\"m\",route=\"2\"} 1e308\n"))
	if b, err := os.ReadFile(filepath.Join("testdata", "sidecar.prom")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := parse(body, t0)
		var out bytes.Buffer
		h := header{url: "http://127.0.0.1:9787/metrics", at: t0, interval: time.Second}
		if err != nil {
			render(&out, h, nil, err)
			checkPlain(t, out.Bytes())
			return
		}
		later, _ := parse(body, t0.Add(time.Second))
		for _, v := range []view{newView(nil, s), newView(s, later), newView(later, s)} {
			render(&out, h, &v, nil)
		}
		checkPlain(t, out.Bytes())
	})
}
