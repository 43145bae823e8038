// Package topcli holds `keywarden top`: a terminal view of a running
// sidecar's live usage, per client and model (requests/s, tokens/s, spend
// and its hourly rate, errors by type), its budgets and the upstream
// rate-limit headroom per key, read from the sidecar's Prometheus metrics
// endpoint and refreshed in place.
package topcli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/netrule"
	"github.com/keywarden/keywarden/internal/proxy/settings"
)

// defaultInterval is the time between two refreshes.
const defaultInterval = 2 * time.Second

// Commands returns the top subcommand.
func Commands() []*cobra.Command { return []*cobra.Command{topCmd()} }

func topCmd() *cobra.Command {
	var (
		metricsURL string
		interval   time.Duration
		once       bool
		iterations int
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show a running sidecar's live usage: requests, tokens, spend, errors, budgets",
		Long: `top reads a running sidecar's metrics endpoint (` + settings.DefaultMetricsListen + `/metrics by default;
--config takes sidecar.metrics_listen from a config file, --metrics-url names any
endpoint) every --interval and shows, per client and model, requests/s, tokens/s,
spend in USD and USD per hour, errors by type, the budgets (used, left, refused)
and the upstream rate-limit headroom per key. Routes are summed. Rates are the
difference between two scrapes, so they appear from the second refresh on. On a terminal it
refreshes in place until Ctrl-C; otherwise it prints one block of plain lines
per refresh. --once (or -n N) stops after one (N) scrapes, for scripts; a failed
last scrape exits non-zero. The metrics carry no key and no client token.`,
		Example: `  keywarden top
  keywarden top --config kw.yaml --interval 5s
  keywarden top --metrics-url http://10.0.0.7:9787/metrics --once`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := resolveURL(cmd, metricsURL)
			if err != nil {
				return err
			}
			if interval <= 0 {
				return cli.Exit(cli.ExitConfig, fmt.Errorf("top: --interval %s: want a positive duration, e.g. 2s", interval))
			}
			if iterations < 0 {
				return cli.Exit(cli.ExitConfig, fmt.Errorf("top: -n %d: want a number of refreshes, 0 for no end", iterations))
			}
			if once {
				iterations = 1
			}
			out := cmd.OutOrStdout()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			r := &runner{url: u, interval: interval, n: iterations, tty: isTerminal(out), out: out,
				client: &http.Client{}, now: time.Now}
			return r.run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&metricsURL, "metrics-url", "", "the sidecar's metrics URL (host:port is enough); overrides --config's sidecar.metrics_listen")
	f.DurationVar(&interval, "interval", defaultInterval, "time between two refreshes")
	f.BoolVar(&once, "once", false, "scrape once, print the totals and exit (same as -n 1)")
	f.IntVarP(&iterations, "iterations", "n", 0, "stop after this many refreshes (0: until interrupted)")
	cmd.MarkFlagsMutuallyExclusive("once", "iterations")
	return cmd
}

// resolveURL returns the metrics URL: --metrics-url, or the config's
// sidecar.metrics_listen when a config is named (--config or
// KEYWARDEN_CONFIG), or the sidecar's default address. Without a config it
// loads none, so that top never creates the embedded default store.
func resolveURL(cmd *cobra.Command, flag string) (string, error) {
	if cmd.Flags().Changed("metrics-url") {
		u, err := parseMetricsURL(flag)
		return u, cli.Exit(cli.ExitConfig, err)
	}
	var metrics string
	if path, _ := cmd.Flags().GetString("config"); path != "" || os.Getenv("KEYWARDEN_CONFIG") != "" {
		c, err := cli.LoadConfig(cmd)
		if err != nil {
			return "", err
		}
		metrics = c.Sidecar.MetricsListen
	}
	_, addr := settings.ListenAddrs("", "", metrics)
	if addr == "" {
		return "", cli.Exit(cli.ExitConfig, errors.New("top: sidecar.metrics_listen is off, so the sidecar serves no metrics; turn it on or pass --metrics-url"))
	}
	return "http://" + dialable(addr) + "/metrics", nil
}

// parseMetricsURL accepts an http(s) URL, or host:port for
// http://host:port/metrics.
func parseMetricsURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("top: --metrics-url: want http://host:port/metrics or host:port")
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/metrics"
	}
	u.Host = dialable(u.Host)
	return u.String(), nil
}

// dialable turns a listen address into one to connect to: an unspecified
// host (":9787", "0.0.0.0:9787", "[::]:9787") becomes loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// shownURL returns the metrics URL as top prints it (its header, its
// errors): without the password, the query and the fragment
// (netrule.WithoutQuery), which a scrape of the sidecar never needs and
// which may hold a token.
func shownURL(u *url.URL) string { return netrule.WithoutQuery(u).Redacted() }

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// runner scrapes and shows the view until its refreshes are done or its
// context ends.
type runner struct {
	url      string
	interval time.Duration
	n        int  // refreshes; 0: until the context ends
	tty      bool // refresh in place with ANSI codes
	out      io.Writer
	client   *http.Client
	now      func() time.Time

	// afterScrape, when set, runs after the i-th scrape (from 0): a test
	// hook to act between two scrapes.
	afterScrape func(i int)
}

// run shows n refreshes (or refreshes until ctx ends, which is no error).
// A failed scrape shows its error and top keeps trying; the error of a
// failed last scrape is returned with ExitFailed. A single refresh that
// fails prints nothing and returns its error.
func (r *runner) run(ctx context.Context) error {
	var prev *snapshot
	var err error
	redacted := r.url
	if u, perr := url.Parse(r.url); perr == nil {
		redacted = shownURL(u)
	}
	for i := 0; r.n == 0 || i < r.n; i++ {
		if i > 0 {
			t := time.NewTimer(r.interval)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		var cur *snapshot
		cur, err = scrape(ctx, r.client, r.url, r.now)
		if ctx.Err() != nil {
			return nil // interrupted
		}
		if r.afterScrape != nil {
			r.afterScrape(i)
		}
		if err != nil && r.n == 1 {
			break
		}
		h := header{url: redacted}
		if r.n != 1 {
			h.interval = r.interval
		}
		var frame bytes.Buffer
		if err != nil {
			h.at = r.now()
			render(&frame, h, nil, err)
		} else {
			h.at = cur.at
			v := newView(prev, cur)
			render(&frame, h, &v, nil)
			prev = cur
		}
		b := frame.Bytes()
		switch {
		case r.tty:
			b = inPlace(b, i == 0)
		case i > 0:
			b = append([]byte("\n"), b...)
		}
		if _, werr := r.out.Write(b); werr != nil {
			return cli.Exit(cli.ExitFailed, fmt.Errorf("top: %w", werr))
		}
	}
	return cli.Exit(cli.ExitFailed, err)
}
