package rotatecli_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/cli/clitest"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/promgate/promtest"
	"github.com/keywarden/keywarden/rotation/pushgw"
)

// pushEnv is key prod (anthropic issuer on the fake API, a pool of two keys,
// one expiring in 30 days) and key other (random issuer, 2s grace), both
// seeded; it returns the env and the key values to look for in output.
func pushEnv(t *testing.T) (*env, []string) {
	t.Helper()
	api := anthropictest.Start(t)
	cur := api.AddKey("", anthropictest.StatusActive)
	expiring := api.AddKey("", anthropictest.StatusInactive)
	if err := api.ExpireAt(expiring.ID, time.Now().Add(30*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	spare := api.AddKey("", anthropictest.StatusInactive)
	e := anthropicEnv(t, api)
	if err := e.st.PutByHand(context.Background(), "prod", []byte(cur.Value)); err != nil {
		t.Fatal(err)
	}
	for _, k := range []anthropictest.Key{spare, expiring} {
		if _, _, code := run(t, k.Value, "pool", "add", "prod", "--config", e.cfg, "--key-id", k.ID); code != 0 {
			t.Fatalf("pool add: exit %d", code)
		}
	}
	e.appendConfig(fmt.Sprintf("  other:\n    store: \"file://%s?name=other\"\n    refresh: 1s\n    rotation:\n      schedule: \"@weekly\"\n      grace: 2s\n      issuer: {type: random, prefix: kw-}\n", e.store))
	if err := e.st.PutByHand(context.Background(), "other", []byte(oldKey)); err != nil {
		t.Fatal(err)
	}
	return e, []string{cur.Value, expiring.Value, spare.Value, oldKey}
}

func (e *env) appendConfig(yaml string) {
	e.t.Helper()
	f, err := os.OpenFile(e.cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(yaml); err != nil {
		e.t.Fatal(err)
	}
}

// gauge returns the value of the one series named name of key's group,
// failing when there is not exactly one.
func gauge(t *testing.T, samples []promtest.Sample, name, key string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{"job": pushgw.Job, pushgw.GroupLabel: key, "key": key}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	got := promtest.Find(samples, name, want)
	if len(got) != 1 {
		t.Fatalf("%s%v: %d series, want 1: %v", name, want, len(got), got)
	}
	return got[0].Value
}

func near(v float64, t time.Time) bool {
	return v > float64(t.Add(-time.Minute).Unix()) && v < float64(t.Add(time.Minute).Unix())
}

// `keywarden rotate --push-gateway` against a real Pushgateway: each key's
// state gauges (the daemon's names and labels) in a group of its own, no
// counter, no key value; a later run replaces its key's group (stale
// series go) and leaves the other key's alone; config and flags combine.
func TestRotatePushGateway(t *testing.T) {
	pg := promtest.StartPushgateway(t)
	e, values := pushEnv(t)
	var all string // every output and push, to look for key values in
	// rotate runs keywarden rotate with args, wants exit 0 and each of
	// wants in its output, and returns what the gateway serves then.
	rotate := func(wants []string, args ...string) ([]promtest.Sample, string) {
		t.Helper()
		out, stderr, code := run(t, "", append([]string{"rotate", "--config", e.cfg}, args...)...)
		all += out + stderr
		for _, w := range wants {
			if code != 0 || !strings.Contains(out, w) {
				t.Fatalf("rotate %v: exit %d, want 0 and %q\n%s\n%s", args, code, w, out, stderr)
			}
		}
		samples, body := pg.Samples(t)
		all += body
		return samples, body
	}
	samples, body := rotate([]string{"prod: rotated"}, "--key", "prod", "--force", "--push-gateway", pg.URL, "--push-label", "namespace=llm")
	// The rotation is in grace (prod's default grace is 10m): the old key
	// is due for revocation; one usable key is left in the pool, with its
	// expiry; CURRENT never expires.
	if v := gauge(t, samples, "keywarden_rotation_revoke_due_timestamp_seconds", "prod", "namespace", "llm"); v < float64(time.Now().Add(5*time.Minute).Unix()) {
		t.Errorf("revoke due %v, want about 10 minutes from now", v)
	}
	if v := gauge(t, samples, "keywarden_pool_keys", "prod"); v != 1 {
		t.Errorf("pool keys %v, want 1", v)
	}
	if v := gauge(t, samples, "keywarden_rotation_keys_left_valid", "prod"); v != 0 {
		t.Errorf("keys left valid %v, want 0", v)
	}
	if v := gauge(t, samples, "keywarden_rotation_last_success_timestamp_seconds", "prod"); !near(v, time.Now()) {
		t.Errorf("last success %v, want now", v)
	}
	if v := gauge(t, samples, "keywarden_rotation_last_run_timestamp_seconds", "prod", "outcome", rotation.OutcomeRotated); !near(v, time.Now()) {
		t.Errorf("last run %v, want now", v)
	}
	if v := gauge(t, samples, "keywarden_key_expiry_timestamp_seconds", "prod"); v != 0 {
		t.Errorf("key expiry %v, want 0 (never)", v)
	}
	poolExp := promtest.Find(samples, "keywarden_pool_key_expiry_timestamp_seconds", map[string]string{"key": "prod", "usable": "true"})
	if len(poolExp) != 1 || !near(poolExp[0].Value, time.Now().Add(30*24*time.Hour)) || !strings.Contains(poolExp[0].Labels["fingerprint"], "sha256:") {
		t.Errorf("pool key expiry: %v, want the expiring key's, in 30 days", poolExp)
	}
	for _, counter := range []string{"keywarden_rotation_runs_total", "keywarden_rotation_duration_seconds", "keywarden_rotation_probe_attempts_total"} {
		if strings.Contains(body, counter) {
			t.Errorf("%s pushed: a counter of one run means nothing", counter)
		}
	}
	if got := promtest.Find(samples, "push_time_seconds", map[string]string{"job": pushgw.Job, pushgw.GroupLabel: "prod", "namespace": "llm"}); len(got) != 1 || !near(got[0].Value, time.Now()) {
		t.Errorf("push_time_seconds of prod's group: %v", got)
	}

	// other pushes through the config's settings: prod's group stays.
	e.appendConfig(fmt.Sprintf("rotator:\n  push_gateway: {url: %q, labels: {namespace: llm}}\n", pg.URL))
	samples, _ = rotate([]string{"other: rotated"}, "--key", "other", "--force")
	if v := gauge(t, samples, "keywarden_rotation_revoke_due_timestamp_seconds", "other", "namespace", "llm"); v == 0 {
		t.Error("other: no revocation due after its rotation")
	}
	if v := gauge(t, samples, "keywarden_pool_keys", "prod"); v != 1 {
		t.Errorf("prod's group after other's push: pool keys %v, want 1", v)
	}
	if got := promtest.Find(samples, "keywarden_pool_keys", map[string]string{"key": "other"}); len(got) != 0 {
		t.Errorf("other has no pool, yet: %v", got)
	}

	// other's revocation: its revoke_due goes to 0, its last run's outcome
	// replaces the one before.
	samples, _ = rotate([]string{"other: revoked"}, "--key", "other", "--wait")
	if v := gauge(t, samples, "keywarden_rotation_revoke_due_timestamp_seconds", "other"); v != 0 {
		t.Errorf("other: revoke due %v after the revocation, want 0", v)
	}
	if runs := promtest.Find(samples, "keywarden_rotation_last_run_timestamp_seconds", map[string]string{"key": "other"}); len(runs) != 1 || runs[0].Labels["outcome"] != rotation.OutcomeRevoked {
		t.Errorf("other: last run series %v, want only outcome revoked", runs)
	}

	// A run of both keys with nothing to do still pushes the whole state
	// of each: prod in grace, other's last success.
	samples, _ = rotate([]string{"prod: grace", "other: nothing_due"}, "--push-label", "namespace=llm")
	if v := gauge(t, samples, "keywarden_rotation_revoke_due_timestamp_seconds", "prod"); v == 0 {
		t.Error("prod: revoke due 0 while in grace")
	}
	if gauge(t, samples, "keywarden_rotation_last_run_timestamp_seconds", "prod", "outcome", rotation.OutcomeWaiting) == 0 {
		t.Error("prod: no last run")
	}
	if gauge(t, samples, "keywarden_rotation_last_success_timestamp_seconds", "other") == 0 {
		t.Error("other: a nothing_due run lost the last success")
	}
	for _, v := range values {
		if strings.Contains(all, v) {
			t.Fatal("a key value was printed or pushed")
		}
	}
	for _, k := range []string{"prod", "other"} {
		if cur := e.currentOf(k); strings.Contains(all, cur) {
			t.Fatalf("%s: the CURRENT key value was printed or pushed", k)
		}
	}
}

// A Pushgateway that cannot be reached: the rotation is done and stays
// done, the log says the push failed (no key value), and rotate exits 1 so
// that the CronJob retries (a rerun is idempotent and pushes again); a
// run that failed keeps its own exit code.
func TestRotatePushGatewayDown(t *testing.T) {
	e := newEnv(t, "issuer: {type: random, prefix: kw-}\n")
	e.seed(oldKey)
	down := "http://" + clitest.FreeAddr(t)
	out, stderr, code := run(t, "", "rotate", "--config", e.cfg, "--force", "--push-gateway", down)
	if code != cli.ExitFailed || !strings.Contains(out, "prod: rotated") ||
		!strings.Contains(stderr, "could not push the rotation metrics") || !strings.Contains(stderr, down) {
		t.Fatalf("exit %d, want %d\n%s\n%s", code, cli.ExitFailed, out, stderr)
	}
	cur := e.current()
	if cur == oldKey {
		t.Fatal("the failed push undid the rotation")
	}
	if strings.Contains(out+stderr, cur) || strings.Contains(out+stderr, oldKey) {
		t.Fatal("a key value was printed")
	}
	// The CronJob's retry: nothing to rotate again, the push fails again.
	out, stderr, code = run(t, "", "rotate", "--config", e.cfg, "--push-gateway", down)
	if code != cli.ExitFailed || !strings.Contains(out, "prod: grace") || e.current() != cur {
		t.Fatalf("retry: exit %d\n%s\n%s", code, out, stderr)
	}
	// A failed run keeps its exit code (the issuer fails: 13).
	e = newEnv(t, "issuer: {type: exec, command: [/bin/false]}\n")
	e.seed(oldKey)
	if _, stderr, code = run(t, "", "rotate", "--config", e.cfg, "--force", "--push-gateway", down); code != rotation.ExitIssuer || !strings.Contains(stderr, "could not push") {
		t.Fatalf("issuer failure: exit %d, want %d\n%s", code, rotation.ExitIssuer, stderr)
	}
}

// Push settings rotate refuses, with exit 2 and the fix.
func TestRotatePushGatewayConfig(t *testing.T) {
	e := newEnv(t, "issuer: {type: random}\n")
	e.seed(oldKey)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--push-gateway", "pushgateway:9091"}, "is not an http(s) URL"},
		{[]string{"--push-gateway", "http://u:p@pushgateway:9091"}, "must not carry credentials"},
		{[]string{"--push-gateway", "http://pushgateway:9091/metrics/job/x"}, "base URL"},
		{[]string{"--push-gateway", "http://pushgateway:9091", "--push-label", "key=prod"}, `label "key" is taken`},
		{[]string{"--push-gateway", "http://pushgateway:9091", "--push-label", "job=x"}, `label "job" is taken`},
		{[]string{"--push-gateway", "http://pushgateway:9091", "--push-label", "a-b=x"}, "not a valid label name"},
		{[]string{"--push-label", "namespace=x"}, "labels given without a Pushgateway URL"},
	} {
		_, stderr, code := run(t, "", append([]string{"rotate", "--config", e.cfg}, tc.args...)...)
		if code != cli.ExitConfig || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, want 2 and %q\n%s", tc.args, code, tc.want, stderr)
		}
	}
	e.appendConfig("rotator:\n  push_gateway: {url: \"pushgateway:9091\"}\n")
	if _, stderr, code := run(t, "", "check", "--config", e.cfg); code != cli.ExitConfig || !strings.Contains(stderr, "rotator.push_gateway: pushgw: the Pushgateway URL is not an http(s) URL") {
		t.Errorf("check: exit %d\n%s", code, stderr)
	}
}

// TestRotatePushLabelInput: a key pasted by mistake as a --push-label
// value is refused (exit 2) before anything runs or is pushed (the value
// would be a label of every pushed series, and in the gateway's URL), and
// printed nowhere.
func TestRotatePushLabelInput(t *testing.T) {
	var mu sync.Mutex
	var pushed []string
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		pushed = append(pushed, r.URL.String())
	}))
	defer gw.Close()
	e := newEnv(t, "issuer: {type: random}\n")
	e.seed(oldKey)
	pasted := string(providertest.FakeKey())
	for _, args := range [][]string{nil, {"--json"}} {
		out, stderr, code := run(t, "", append([]string{"rotate", "--config", e.cfg, "--push-gateway", gw.URL, "--push-label", "namespace=" + pasted}, args...)...)
		if code != cli.ExitConfig || !strings.Contains(stderr, `label "namespace": the value is shaped like a key`) ||
			strings.Contains(out+stderr, pasted) || strings.Contains(out+stderr, pasted[13:]) {
			t.Fatalf("--push-label namespace=KEY %v: exit %d, want 2, the key printed nowhere", args, code)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pushed) > 0 || e.current() != oldKey {
		t.Fatalf("%d pushes; rotated: %v", len(pushed), e.current() != oldKey)
	}
}
