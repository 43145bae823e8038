package sidecarcli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/redact"
)

// startWindow is how long one attempt to open a Source may wait before the
// wait is logged and reported again.
var startWindow = 5 * time.Second

// openStarting opens the Source of each named key (each once), waiting up
// to timeout for each key whose store fails. While it waits, it logs each key
// it waits for with its store (redacted) and the last error, and, when
// metricsAddr is set, serves /healthz (200) and /readyz (503 with the same
// reasons) there. Past timeout it returns an error naming the key, the
// store, the setting and the last error.
func openStarting(ctx context.Context, c *config.Config, names []string, timeout time.Duration, metricsAddr string, lg *slog.Logger) (sources, error) {
	st := &startState{waiting: map[string]string{}}
	if metricsAddr != "" {
		hs, err := proxy.ListenStarting(metricsAddr, st.notReady, lg)
		if err != nil {
			return nil, cli.Exit(cli.ExitFailed, err)
		}
		served := make(chan error, 1)
		go func() { served <- hs.Serve() }()
		defer func() { hs.Close(); <-served }()
	}
	srcs := sources{}
	for _, name := range names {
		if srcs[name] != nil {
			continue
		}
		k, err := c.Key(name)
		if err != nil {
			srcs.close()
			return nil, cli.Exit(cli.ExitConfig, err)
		}
		src, err := openWaiting(ctx, k, timeout, lg, st)
		if err != nil {
			srcs.close()
			return nil, err
		}
		srcs[name] = src
	}
	return srcs, nil
}

// startState is what a starting sidecar waits for, for /readyz.
type startState struct {
	mu      sync.Mutex
	waiting map[string]string // key name → reason
}

func (s *startState) set(key, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reason == "" {
		delete(s.waiting, key)
	} else {
		s.waiting[key] = reason
	}
}

// notReady returns the reasons, one line per key; "starting" before the
// first attempt of a key ended.
func (s *startState) notReady() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waiting) == 0 {
		return "starting: reading the keys from their stores\n"
	}
	lines := make([]string, 0, len(s.waiting))
	for _, r := range s.waiting {
		lines = append(lines, r+"\n")
	}
	sort.Strings(lines)
	return strings.Join(lines, "")
}

// openWaiting opens k's Source, retrying in windows of startWindow until
// timeout has passed or ctx is done. After each failed window it logs and
// records (st may be nil) the key, its store and the last error.
func openWaiting(ctx context.Context, k *config.Key, timeout time.Duration, lg *slog.Logger, st *startState) (*providers.Source, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	store := redactStore(k.Store)
	start := time.Now()
	opts := k.SourceOptions()
	opts.Logger = lg
	last := ""
	for {
		wctx, cancel := context.WithTimeout(ctx, startWindow)
		src, err := providers.Open(wctx, k.Store, &opts)
		windowOver := wctx.Err() != nil
		cancel()
		if err == nil {
			if st != nil {
				st.set(k.Name, "")
			}
			return src, nil
		}
		if !windowOver {
			// Not a wait: the store refused for good (bad URL, no such
			// secret, no permission...).
			return nil, cli.Exit(cli.ExitFailed, fmt.Errorf("sidecar: key %s: %w", k.Name, err))
		}
		// Keep the most telling error: a read cut short by the window's
		// end says less than the refusal an earlier window saw.
		if e := lastError(err); last == "" || !errors.Is(e, context.DeadlineExceeded) {
			last = redact.String(e.Error())
		}
		waited := time.Since(start).Round(time.Second)
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, cli.Exit(cli.ExitFailed, fmt.Errorf(
					"sidecar: key %s: no good read of store %s within the start timeout %v (sidecar.start_timeout; raise it or fix the store); last error: %s",
					k.Name, store, timeout, last))
			}
			return nil, cli.Exit(cli.ExitFailed, fmt.Errorf("sidecar: key %s: stopped while waiting for store %s: %w", k.Name, store, ctx.Err()))
		}
		lg.Warn("sidecar: waiting for the first read of a key; not listening until it succeeds",
			"key", k.Name, "store", store, "waited", waited, "gives_up_after", timeout, "last_error", last)
		if st != nil {
			st.set(k.Name, fmt.Sprintf("key %s: waiting for the first read of store %s for %v (gives up after %v): last error: %s",
				k.Name, store, waited, timeout, last))
		}
	}
}

// lastError returns the store's own error from a first read that ran out
// of time: providers joins the last read error and the context's error;
// the one that is not the context's is the store's.
func lastError(err error) error {
	var multi interface{ Unwrap() []error }
	if errors.As(err, &multi) {
		for _, e := range multi.Unwrap() {
			if !errors.Is(e, context.DeadlineExceeded) && !errors.Is(e, context.Canceled) {
				return e
			}
		}
	}
	return err
}

// redactStore returns a store URL fit for logs: no user info, and no value
// shaped like a secret.
func redactStore(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable store URL)"
	}
	return redact.String(providers.Redact(u))
}
