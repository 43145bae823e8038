package proxy_test

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
)

// TestZeroDowntimeRotationsUnderLoad rotates the key 20 times while
// clients send Messages requests, streaming and not, through the sidecar.
// Each rotation runs the protocol the rotator follows: the new key is
// activated upstream, written as PENDING and promoted in the store, and the
// old key is revoked upstream after a grace period of one refresh interval
// plus jitter. No request may fail.
//
// A consumer late with its refresh (a loaded machine delays timers) gets a
// 401 and is saved by the 401 rule, since its last read is older than the
// grace period and so than MinForcedGap.
//
// In "revoked at once", the old key is revoked right after the promotion
// and the Source never refreshes in the background: the 401 rule alone
// carries every rotation, with forced refreshes always allowed
// (MinForcedGap 0). It is not a safe way to rotate: with background refresh,
// a 401 can join a store read that began before the promotion and get the
// old key back, and with a MinForcedGap longer than the time since the last
// read no read happens at all. The grace period is what makes a rotation
// safe, and config validation enforces it.
func TestZeroDowntimeRotationsUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revoke bool
	}{{"grace", false}, {"revoked at once", true}} {
		t.Run(tc.name, func(t *testing.T) { testRotations(t, tc.revoke) })
	}
}

func testRotations(t *testing.T, revokeAtOnce bool) {
	const (
		rotations = 20
		refresh   = 20 * time.Millisecond
		jitter    = 5 * time.Millisecond
		// grace is refresh + jitter with room for a loaded machine's
		// scheduling delays: a store read that began before a promotion
		// must end before the revocation.
		grace = 250 * time.Millisecond
	)
	gap := 20 * time.Millisecond
	if revokeAtOnce {
		gap = 300 * time.Millisecond
	}
	keys := make([]string, rotations+1)
	for i := range keys {
		keys[i] = fmt.Sprintf("sk-ant-api03-ROTATION%02d-%s", i, strings.Repeat("x", 60))
	}
	up := newUpstream(t, keyA, keys[0])
	so := providers.Options{Refresh: refresh, Jitter: jitter}
	if revokeAtOnce {
		so = providers.Options{Refresh: -1}
	}
	rot := newEnvWith(t, up, so, nil)
	if !revokeAtOnce {
		// Time is scaled down from production (refresh 5m, grace at least
		// 5m30s, MinForcedGap 1s), keeping the order of the three:
		// MinForcedGap ≤ refresh + jitter ≤ grace. Restored by newEnv's cleanup.
		providers.MinForcedGap = refresh
	}
	rot.store.rotate(t, keys[0])
	if _, err := rot.src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	up.SetValid(keys[0])

	load := startLoad(rot)
	for i := 1; i <= rotations; i++ {
		old, next := keys[i-1], keys[i]
		up.SetValid(old, next) // the new key works before anyone uses it
		rot.store.rotate(t, next)
		if !revokeAtOnce {
			time.Sleep(grace) // every consumer has refreshed
		}
		up.SetValid(next) // the old key is revoked
		// Rotations are hours apart in production; here, long enough apart
		// that no request, nor its retry, nor a store read spans two of them,
		// even under -race on a loaded machine.
		time.Sleep(gap)
	}
	ok, failed := load.stop(t)
	t.Logf("%d requests succeeded across %d rotations; %d failed", ok, rotations, failed)
	if failed != 0 {
		t.Fatalf("%d requests failed across %d rotations", failed, rotations)
	}
	m := rot.scrape(t)
	if revokeAtOnce && metricValue(m, `keywarden_sidecar_retries_total{reason="refreshed",route="/"}`) == "0" {
		t.Fatal("no request needed the 401 rule: the test did not test it")
	}
	if ok < 4*rotations {
		t.Fatalf("only %d requests ran: not a load", ok)
	}
	if got := rot.src.Current().Value.Reveal(); got != keys[rotations] {
		t.Fatal("the Source does not hold the last key")
	}
	t.Logf("retries: refreshed %s, previous %s; upstream 401s %s",
		metricValue(m, `keywarden_sidecar_retries_total{reason="refreshed",route="/"}`),
		metricValue(m, `keywarden_sidecar_retries_total{reason="previous",route="/"}`),
		metricValue(m, `keywarden_sidecar_upstream_unauthorized_total{route="/"}`))
	for _, k := range keys {
		if strings.Contains(rot.logs.String(), k) || strings.Contains(m, k) {
			t.Fatal("a log line or metric holds a key")
		}
	}
}

func metricValue(text, series string) string {
	m := regexp.MustCompile(regexp.QuoteMeta(series) + ` (\S+)`).FindStringSubmatch(text)
	if m == nil {
		return "0"
	}
	if f, err := strconv.ParseFloat(m[1], 64); err == nil {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return m[1]
}

// load is six clients sending Messages requests through an env's proxy,
// half of them streaming, until stopped.
type load struct {
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	e          *env
	ok, failed atomic.Int64
	failures   sync.Map
}

func startLoad(e *env) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, e: e}
	for w := 0; w < 6; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			stream := w%2 == 0
			for ctx.Err() == nil {
				body := msgBody
				if stream {
					body = streamBody
				}
				resp, err := e.srv.Client().Post(e.srv.URL+"/v1/messages", "application/json", strings.NewReader(body))
				if err != nil {
					l.failed.Add(1)
					l.failures.Store(err.Error(), true)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 && (!stream || strings.Contains(string(b), "message_stop")) {
					l.ok.Add(1)
				} else {
					l.failed.Add(1)
					l.failures.Store(fmt.Sprintf("%d %s", resp.StatusCode, b), true)
				}
			}
		}()
	}
	return l
}

// stop ends the load and returns the requests that succeeded and failed,
// logging each distinct failure.
func (l *load) stop(t *testing.T) (ok, failed int64) {
	l.cancel()
	l.wg.Wait()
	l.e.srv.Client().CloseIdleConnections()
	l.failures.Range(func(k, _ any) bool { t.Logf("failure: %v", k); return true })
	return l.ok.Load(), l.failed.Load()
}
