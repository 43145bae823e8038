package topcli

import (
	"context"
	"io"
	"net/http"
	"time"
)

// Run runs n refreshes of the view of url to out (in place when tty) with
// the clock now, calling after (when not nil) after each scrape.
func Run(ctx context.Context, url string, n int, tty bool, out io.Writer, now func() time.Time, after func(i int)) error {
	r := &runner{url: url, interval: time.Millisecond, n: n, tty: tty, out: out, client: &http.Client{}, now: now, afterScrape: after}
	return r.run(ctx)
}

// HasRow reports whether a line of text has fields starting with want.
var HasRow = hasRow
