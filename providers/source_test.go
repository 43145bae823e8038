package providers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	_ "github.com/keywarden/keywarden/providers/env"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	keyA = "sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-aaaa"
	keyB = "sk-ant-api03-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB-bbbb"
	keyC = "sk-ant-api03-CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC-cccc"
)

// store returns a file store holding keyA as CURRENT of "prod".
func store(t testing.TB) *file.Store {
	t.Helper()
	st := file.New(filepath.Join(t.TempDir(), "keys.json"))
	rotate(t, st, keyA)
	return st
}

// rotate makes val the CURRENT of "prod" through PENDING and Promote.
func rotate(t testing.TB, st *file.Store, val string) {
	t.Helper()
	providertest.Rotate(t, st, "prod", []byte(val))
}

func newSource(t testing.TB, d *providertest.Faulty, o providers.Options) *providers.Source {
	t.Helper()
	src, err := providers.New(context.Background(), d, "prod", o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func TestFirstLoadAndRefresh(t *testing.T) {
	st := store(t)
	d := providertest.NewFaulty(st)
	src := newSource(t, d, providers.Options{Refresh: -1})
	if src.Key().Reveal() != keyA {
		t.Fatal("first load did not install the CURRENT key")
	}
	if src.Previous() != nil {
		t.Fatal("PREVIOUS set on a secret with one version")
	}
	var changes []providers.Change
	var mu sync.Mutex
	unsub := src.Subscribe(func(c providers.Change) { mu.Lock(); changes = append(changes, c); mu.Unlock() })
	defer unsub()
	old := src.Current()
	rotate(t, st, keyB)
	k, err := src.Refresh(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if k.Value.Reveal() != keyB || src.Key().Reveal() != keyB {
		t.Fatal("refresh did not install the new key")
	}
	if p := src.Previous(); p == nil || p.Value.Reveal() != keyA {
		t.Fatal("PREVIOUS is not the old key after a rotation")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 1 {
		t.Fatalf("%d change notifications, want 1", len(changes))
	}
	c := changes[0]
	if c.OldVersion != old.VersionID || c.NewVersion != k.VersionID || c.OldFingerprint != old.Fingerprint || c.NewFingerprint != k.Fingerprint {
		t.Fatalf("change %+v does not match old %s new %s", c, old.VersionID, k.VersionID)
	}
	// A refresh without change notifies nobody and keeps the snapshot.
	if _, err := src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if src.Current() != k || len(changes) != 1 {
		t.Fatal("an unchanged refresh replaced the snapshot or notified")
	}
}

func TestFirstLoadBlocksUntilCtx(t *testing.T) {
	st := store(t)
	d := providertest.NewFaulty(st)
	d.Fail(codes.Errorf(codes.Unavailable, "test: backend down"))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := providers.New(ctx, d, "prod", providers.Options{MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "backend down") {
		t.Fatalf("got %v, want the deadline and the last error", err)
	}
	if d.Reads() < 2 {
		t.Fatalf("first load tried %d times, want retries with backoff", d.Reads())
	}
	// A deadline that cuts a read short still reports the store's last
	// answer (under load it reported only "context deadline exceeded").
	slow := providertest.NewFaulty(st)
	slow.Fail(codes.Errorf(codes.Unavailable, "test: backend down"))
	slow.Delay(120 * time.Millisecond)
	sctx, scancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer scancel()
	if _, err := providers.New(sctx, slow, "prod", providers.Options{MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "backend down") {
		t.Fatalf("deadline during a read: got %v, want the deadline and the last error", err)
	}
	// A permanent error fails at once.
	d.Fail(codes.Errorf(codes.PermissionDenied, "test: denied"))
	_, err = providers.New(context.Background(), d, "prod", providers.Options{})
	if !codes.Is(err, codes.PermissionDenied) {
		t.Fatalf("got %v, want PermissionDenied at once", err)
	}
}

func TestServesLastGoodUntilMaxStale(t *testing.T) {
	st := store(t)
	d := providertest.NewFaulty(st)
	src := newSource(t, d, providers.Options{Refresh: 5 * time.Millisecond, Jitter: time.Millisecond,
		MaxStale: 150 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	d.Fail(codes.Errorf(codes.Unavailable, "test: outage"))
	// Through the outage, the last good key is served and health stays OK
	// until max_stale.
	deadline := time.Now().Add(5 * time.Second)
	for src.CheckHealth() == nil {
		if src.Key().Reveal() != keyA {
			t.Fatal("the last good key was not served during the outage")
		}
		if time.Now().After(deadline) {
			t.Fatal("health never went bad past max_stale")
		}
		time.Sleep(5 * time.Millisecond)
	}
	err := src.CheckHealth()
	if !codes.Is(err, codes.Unavailable) || !strings.Contains(err.Error(), "outage") || !strings.Contains(err.Error(), "max_stale") {
		t.Fatalf("health: %v", err)
	}
	if _, err := src.Usable(); err == nil {
		t.Fatal("Usable returned a key past max_stale")
	}
	if src.Key().IsZero() {
		t.Fatal("the Source served an empty key")
	}
	st2 := src.Stats()
	if st2.Failures < 2 {
		t.Fatalf("%d failures counted", st2.Failures)
	}
	// Recovery.
	d.Fail(nil)
	for src.CheckHealth() != nil {
		if time.Now().After(deadline) {
			t.Fatal("health did not recover")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRefreshCoalesces(t *testing.T) {
	st := store(t)
	d := providertest.NewFaulty(st)
	src := newSource(t, d, providers.Options{Refresh: -1})
	before := d.Reads()
	d.Delay(50 * time.Millisecond)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := src.Refresh(context.Background()); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d refreshes failed", failed.Load())
	}
	// The goroutines start over a few ms; a 50 ms read absorbs them in one
	// or a few flights, never one per caller.
	if n := d.Reads() - before; n > 5 {
		t.Fatalf("1000 concurrent Refresh calls cost %d store reads", n)
	}
}

// TestRefreshIfCurrent: a rejected key is refreshed unless a store read
// began after the request took it, however recent the last read is.
func TestRefreshIfCurrent(t *testing.T) {
	st := store(t)
	d := providertest.NewFaulty(st)
	src := newSource(t, d, providers.Options{Refresh: -1})

	// A read just before the request, then the store changes and the
	// upstream rejects the key: a refresh happens (it was skipped for a
	// second after any read).
	if _, err := src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	seen, seq := src.Taken()
	rotate(t, st, keyB)
	n := d.Reads()
	k, err := src.RefreshIfCurrent(context.Background(), seen, seq)
	if err != nil || k.Value.Reveal() != keyB || d.Reads() != n+1 {
		t.Fatalf("RefreshIfCurrent after a read that preceded the request: key %v, %d reads, %v", k, d.Reads()-n, err)
	}
	// The key is replaced already: no read.
	n = d.Reads()
	if k2, err := src.RefreshIfCurrent(context.Background(), seen, seq); err != nil || k2 != k || d.Reads() != n {
		t.Fatal("RefreshIfCurrent of an already replaced key read the store again")
	}

	// A read that began after the request took its key stands, even when
	// it found no change: no second read.
	seen, seq = src.Taken()
	if _, err := src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	n = d.Reads()
	if k3, err := src.RefreshIfCurrent(context.Background(), seen, seq); err != nil || k3 != seen || d.Reads() != n {
		t.Fatalf("RefreshIfCurrent after a later read: %d reads, %v", d.Reads()-n, err)
	}
}

// gated holds a Source's read of CURRENT after it read the store, while
// armed, so that a test can act while a read with an old answer is under
// way.
type gated struct {
	driver.Reader
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gated) Read(ctx context.Context, name string, stage driver.Stage) (*driver.Version, error) {
	v, err := g.Reader.Read(ctx, name, stage)
	if stage == driver.Current && g.armed.CompareAndSwap(true, false) {
		close(g.entered)
		<-g.release
	}
	return v, err
}

// TestRefreshIfCurrentOlderReadUnderWay: a store read that began before the
// request took its key (and so may predate the rotation) does not stand in
// for a fresh one: RefreshIfCurrent waits it out and reads again.
func TestRefreshIfCurrentOlderReadUnderWay(t *testing.T) {
	st := store(t)
	g := &gated{Reader: st, entered: make(chan struct{}), release: make(chan struct{})}
	src, err := providers.New(context.Background(), g, "prod", providers.Options{Refresh: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	g.armed.Store(true)
	old := make(chan *providers.Key, 1)
	go func() { k, _ := src.Refresh(context.Background()); old <- k }()
	<-g.entered // the read has the store's old answer
	rotate(t, st, keyB)
	seen, seq := src.Taken()
	got := make(chan *providers.Key, 1)
	go func() { k, _ := src.RefreshIfCurrent(context.Background(), seen, seq); got <- k }()
	close(g.release)
	if k := <-old; k.Value.Reveal() != keyA {
		t.Fatalf("the held read returned %v, want the old key", k)
	}
	if k := <-got; k == nil || k.Value.Reveal() != keyB {
		t.Fatalf("RefreshIfCurrent returned %v, the answer of a read that began before the request; want the new key", k)
	}
}

// TestRefreshIfCurrentOlderReadFindsNewKey: a store read that began before
// the request took its key, waited out, found the key that replaced it:
// that answer is used, with no second read (a storm of rejections during
// one slow read costs that read only).
func TestRefreshIfCurrentOlderReadFindsNewKey(t *testing.T) {
	st := store(t)
	d := providertest.NewFaulty(st)
	g := &gated{Reader: d, entered: make(chan struct{}), release: make(chan struct{})}
	src, err := providers.New(context.Background(), g, "prod", providers.Options{Refresh: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	rotate(t, st, keyB)
	g.armed.Store(true)
	go src.Refresh(context.Background()) //nolint:errcheck // its answer is checked below
	<-g.entered                          // the read has the new key, held
	seen, seq := src.Taken()             // still the old key; the read counts as earlier
	if seen.Value.Reveal() != keyA {
		t.Fatal("the held read was applied early")
	}
	n := d.Reads()
	got := make(chan *providers.Key, 1)
	go func() { k, _ := src.RefreshIfCurrent(context.Background(), seen, seq); got <- k }()
	close(g.release)
	if k := <-got; k == nil || k.Value.Reveal() != keyB {
		t.Fatalf("RefreshIfCurrent returned %v, want the new key the held read found", k)
	}
	if r := d.Reads() - n; r != 0 {
		t.Fatalf("RefreshIfCurrent read the store %d more times after the held read found a new key", r)
	}
}

// TestRefreshIfCurrentStorm: many rejections of one key cost one store read,
// whether the store holds a new key or still the rejected one.
func TestRefreshIfCurrentStorm(t *testing.T) {
	for _, changed := range []bool{true, false} {
		t.Run(fmt.Sprintf("changed=%v", changed), func(t *testing.T) {
			st := store(t)
			d := providertest.NewFaulty(st)
			src := newSource(t, d, providers.Options{Refresh: -1})
			seen, seq := src.Taken()
			if changed {
				rotate(t, st, keyB)
			}
			d.Delay(5 * time.Millisecond)
			n := d.Reads()
			var wg sync.WaitGroup
			for i := 0; i < 200; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := src.RefreshIfCurrent(context.Background(), seen, seq); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if reads := d.Reads() - n; reads != 1 {
				t.Fatalf("200 rejections cost %d store reads, want 1", reads)
			}
		})
	}
}

func TestCloseIdempotentNoLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	st := store(t)
	d := providertest.NewFaulty(st)
	src, err := providers.New(context.Background(), d, "prod", providers.Options{Refresh: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	d.Delay(time.Second)
	go src.Refresh(context.Background()) //nolint:errcheck // cut by Close
	time.Sleep(5 * time.Millisecond)
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Refresh(context.Background()); err == nil {
		t.Fatal("Refresh after Close succeeded")
	}
}

// TestNoKeyInLogsOrErrors runs the Source's paths with a known key and scans
// every captured log line and error string for it.
func TestNoKeyInLogsOrErrors(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(lockedWriter{&logs, &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st := store(t)
	d := providertest.NewFaulty(st)
	src := newSource(t, d, providers.Options{Refresh: 2 * time.Millisecond, Jitter: time.Millisecond,
		MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, MaxStale: 2 * time.Millisecond, Logger: logger})
	var errs []error
	rotate(t, st, keyB)
	_, err := src.Refresh(context.Background())
	errs = append(errs, err)
	d.Fail(codes.Errorf(codes.Unavailable, "test: outage"))
	time.Sleep(20 * time.Millisecond)
	errs = append(errs, src.CheckHealth())
	d.Fail(nil)
	// A malformed payload, an oversized one, and one missing its field.
	for _, bad := range []string{`{"api_key": "` + keyC + `"`, `{"other":"` + keyC + `"}`, keyC + strings.Repeat("x", providers.MaxPayload), keyC + "\n" + keyC} {
		_, err := providers.DecodePayload([]byte(bad), "")
		if err == nil {
			t.Fatalf("payload of len %d decoded", len(bad))
		}
		errs = append(errs, err)
	}
	rotate(t, st, `{"api_key": 12}`)
	_, err = src.Refresh(context.Background())
	errs = append(errs, err)
	rotate(t, st, keyC)
	_, _ = src.Refresh(context.Background())
	k := src.Current()
	logger.Info("key printed every way", "secret", k.Value, "key", k)
	w := lockedWriter{&logs, &mu}
	fmt.Fprintf(w, "%v %+v %#v %s %q %x %d\n", k.Value, k.Value, k.Value, k.Value, k.Value, k.Value, k.Value)
	fmt.Fprintf(w, "%v %+v %#v %d %v %+v %#v %x\n", k, k, k, k, *k, *k, *k, *k)
	b, _ := json.Marshal(k)
	w.Write(b)

	mu.Lock()
	out := logs.String()
	mu.Unlock()
	for _, e := range errs {
		if e != nil {
			out += "\n" + e.Error()
		}
	}
	if !strings.Contains(out, "key changed") || !strings.Contains(out, "outage") {
		t.Fatalf("the capture misses the log lines it should hold:\n%s", out)
	}
	for _, secret := range []string{keyA, keyB, keyC, keyA[13:40], keyC[13:40]} {
		if strings.Contains(out, secret) {
			t.Errorf("a key value (or a part of it) appears in logs or errors")
		}
	}
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ url, want string }{
		{"", "empty store URL"},
		{"nosuch://x", `unknown store scheme "nosuch"`},
		{"nosuch://x", "known schemes: env, file"},
		{"keys.json", "has no scheme"},
		{"file://%zz", "malformed store URL"},
		{"awssm://user:pw@x/y", "must not carry credentials"},
		// A fragment or a pair url.Parse cannot read was dropped silently.
		{"env://KEY#pw", "has a #fragment, which no store reads"},
		{"env://KEY#", "has a #fragment"},
		{"env://KEY?refresh=1m;jitter=pw", "query of store URL \"env://KEY\" is malformed"},
		{"env://KEY?refresh=1m&jitter=%zzpw", "is malformed"},
	} {
		_, err := providers.Open(ctx, tc.url, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q): got %v, want an error containing %q", tc.url, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("Open(%q) echoes credentials: %v", tc.url, err)
		}
	}
}

// TestRedactStore: a printed store URL never shows user info, neither its
// own nor that of a URL given as a parameter (endpoint=, address=), written
// plainly or escaped, nor in text that does not parse as a URL.
func TestRedactStore(t *testing.T) {
	for in, want := range map[string]string{
		"awssm://anthropic/prod?region=us-east-1&endpoint=http://admin:S3CRETPASS@127.0.0.1:1": "awssm://anthropic/prod?region=us-east-1&endpoint=http://127.0.0.1:1",
		"vault://secret/p?address=http://u:PASSW0RD@vault.example.com:8200&auth=token":         "vault://secret/p?address=http://vault.example.com:8200&auth=token",
		"vault://secret/p?address=" + url.QueryEscape("https://u:PASSW0RD@v:8200/x?a=b@c"):     "vault://secret/p?address=" + url.QueryEscape("https://v:8200/x?a=b@c"),
		"awssm://u:S3CRETPASS@x/y?region=r":                                                    "awssm://x/y?region=r",
		"awssm://x/%zz?endpoint=http://a:S3CRETPASS@h":                                         "awssm://x/%zz?endpoint=http://h",
		"awssm://x/y?endpoint=http%3A%2F%2Fa:S3CRETPASS%40h%zz":                                "awssm://x/y?endpoint=…",
		"awssm:///team+ops@corp/key=1?region=r&profile=a@b":                                    "awssm:///team+ops@corp/key=1?region=r&profile=a@b",
	} {
		got := providers.RedactStore(in)
		if got != want {
			t.Errorf("RedactStore(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "S3CRETPASS") || strings.Contains(got, "PASSW0RD") {
			t.Errorf("RedactStore(%q) shows the password: %q", in, got)
		}
	}
}

func TestLeftOutDriver(t *testing.T) {
	providers.RegisterLeftOut("leftout", "keywarden_no_leftout")
	_, err := providers.Open(context.Background(), "leftout://projects/p/secrets/s", nil)
	if err == nil || !strings.Contains(err.Error(), "the leftout:// driver is not in this binary") ||
		!strings.Contains(err.Error(), "-tags keywarden_no_leftout") {
		t.Fatalf("Open of a driver left out: %v, want an error naming the build tag", err)
	}
	if codes.Of(err) != codes.InvalidArgument {
		t.Fatalf("code %v, want InvalidArgument (a configuration this binary cannot serve)", codes.Of(err))
	}
}

func TestSecretRedaction(t *testing.T) {
	s := providers.NewSecret(keyA)
	for _, out := range []string{
		s.String(), s.GoString(), fmt.Sprint(s), fmt.Sprintf("%v|%+v|%#v|%s|%q|%x|%X|%d|%10s", s, s, s, s, s, s, s, s, s),
		fmt.Sprint([]providers.Secret{s}), fmt.Sprintf("%+v", struct{ K providers.Secret }{s}),
	} {
		if strings.Contains(out, keyA[13:]) || strings.Contains(out, "AAAAAAAA") {
			t.Fatalf("redaction failed: %s", out)
		}
	}
	j, _ := json.Marshal(map[string]any{"k": s})
	if strings.Contains(string(j), "AAAAAAAA") {
		t.Fatalf("JSON: %s", j)
	}
	if got := providers.Fingerprint(keyA); !strings.HasPrefix(got, "sk-ant-api03-…sha256:") {
		t.Fatalf("fingerprint %q", got)
	}
	if providers.Fingerprint("short") == providers.Fingerprint("other") {
		t.Fatal("fingerprints collide")
	}
}

// One store call that never returns (a hung NFS or FUSE mount; the driver
// ignores its context) does not lock the Source: the read fails Unavailable
// after the read timeout, the next refresh starts a new read that sees the
// recovered store, the stuck call's late answer is dropped, and Close
// returns while the call is still stuck.
func TestStuckStoreCallDoesNotWedge(t *testing.T) {
	st := store(t)
	d := providertest.NewFaulty(st)
	src := newSource(t, d, providers.Options{Refresh: -1})
	providers.SetReadTimeout(src, 200*time.Millisecond)
	freed := make(chan struct{})
	var once sync.Once
	free := func() {
		once.Do(func() { close(freed) })
		for d.Stuck() != 0 { // the held calls end before the leak check
			time.Sleep(time.Millisecond)
		}
	}
	t.Cleanup(free)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // bounds a hang only
	defer cancel()
	d.Hang(freed)
	_, err := src.Refresh(ctx)
	if codes.Of(err) != codes.Unavailable {
		t.Fatalf("refresh of a hung store: %v, want Unavailable after the read timeout", err)
	}
	if d.Stuck() != 1 {
		t.Fatalf("%d store calls held, want 1", d.Stuck())
	}

	// The store recovers (new calls go through) with a new key; the old
	// call is still stuck.
	d.Hang(nil)
	rotate(t, st, keyB)
	k, err := src.Refresh(ctx)
	if err != nil || k.Value.Reveal() != keyB {
		t.Fatalf("refresh after the store recovered: %v, %v; want keyB", k, err)
	}

	// The stuck call's answer comes late and is dropped: no read counted,
	// CURRENT untouched.
	before := src.Stats()
	rotate(t, st, keyC)
	free()
	if after := src.Stats(); after.Reads != before.Reads || after.Failures != before.Failures || src.Key().Reveal() != keyB {
		t.Fatalf("the abandoned call's answer was installed: reads %d→%d, failures %d→%d",
			before.Reads, after.Reads, before.Failures, after.Failures)
	}

	// Close does not wait for a call that ignores its context.
	freed2 := make(chan struct{})
	t.Cleanup(func() {
		close(freed2)
		for d.Stuck() != 0 {
			time.Sleep(time.Millisecond)
		}
	})
	d.Hang(freed2)
	providers.SetReadTimeout(src, time.Hour)
	refreshed := make(chan error, 1)
	go func() {
		_, err := src.Refresh(ctx)
		refreshed <- err
	}()
	for d.Stuck() != 1 {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- src.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Close waited for a store call that ignores its context")
	}
	if err := <-refreshed; codes.Of(err) != codes.Canceled {
		t.Fatalf("refresh under way at Close: %v, want Canceled", err)
	}
}
