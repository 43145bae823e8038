package rotatecli_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/promgate"
	"github.com/keywarden/keywarden/rotation/promgate/promtest"
)

// `keywarden rotate` with a revoke_gate, against a real Prometheus that
// scrapes two consumers of the key; one of them cannot read the store.
func TestRotateRevokeGate(t *testing.T) {
	e := newEnv(t, "issuer: {type: random}\n")
	e.seed(oldKey)
	web, stuck := promtest.NewConsumer(t, file.New(e.store), "prod", "prod", "web-1"), promtest.NewConsumer(t, file.New(e.store), "prod", "prod", "batch-7")
	prom := promtest.Start(t, time.Second, web.Target(), stuck.Target())
	e.write(fmt.Sprintf("grace: 2s\nissuer: {type: random}\nrevoke_gate: {prometheus_url: %q, checks: 2, interval: 1s, max_wait: 3s, policy: hold}\n", prom.URL))
	oldFP := providers.Fingerprint(oldKey)
	client, err := promgate.New(promgate.Options{URL: prom.URL})
	if err != nil {
		t.Fatal(err)
	}
	promtest.Eventually(t, "Prometheus reports both consumers", func() bool {
		hs, err := client.Holders(context.Background(), "prod", oldFP)
		return err == nil && len(hs) == 2
	})
	stuck.Fail(true)
	out, stderr, code := run(t, "", "rotate", "--config", e.cfg, "--force")
	if code != 0 || !strings.Contains(out, "prod: rotated") {
		t.Fatalf("rotate: exit %d\n%s\n%s", code, out, stderr)
	}
	newFP := providers.Fingerprint(e.current())
	promtest.Eventually(t, "web-1 holds the new key", func() bool { return web.Fingerprint() == newFP })
	out, stderr, code = run(t, "", "rotate", "--config", e.cfg, "--wait")
	if code != rotation.ExitGateHeld || !strings.Contains(out, "gate_held") || !strings.Contains(out, "pod=batch-7") || strings.Contains(out, "pod=web-1") {
		t.Fatalf("rotate --wait with batch-7 stuck: exit %d, want %d\n%s\n%s", code, rotation.ExitGateHeld, out, stderr)
	}
	out, _, code = run(t, "", "status", "--config", e.cfg)
	if code != 0 || !strings.Contains(out, "1 consumers still hold the old key") || !strings.Contains(out, "pod=batch-7") || !strings.Contains(out, "then policy hold") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	out, _, code = run(t, "", "rotate", "--config", e.cfg, "--dry-run")
	if code != 0 || !strings.Contains(out, "revoke gate (prometheus "+prom.URL+"): 1 consumers still report the old key") {
		t.Fatalf("dry run: exit %d\n%s", code, out)
	}
	// batch-7 recovers; once Prometheus has seen it let go of the old key,
	// the next run revokes (past max_wait, a run that still sees it holds).
	stuck.Fail(false)
	promtest.Eventually(t, "Prometheus sees batch-7 on the new key", func() bool {
		hs, err := client.Holders(context.Background(), "prod", oldFP)
		return err == nil && len(hs) == 0
	})
	out, stderr, code = run(t, "", "rotate", "--config", e.cfg, "--wait")
	if code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("rotate --wait after batch-7 recovered: exit %d\n%s\n%s", code, out, stderr)
	}
	if strings.Contains(out+stderr, oldKey) || strings.Contains(out+stderr, e.current()) {
		t.Fatal("a key value was printed")
	}
}

func TestRotateRevokeGateConfig(t *testing.T) {
	for _, tc := range []struct{ gate, want string }{
		{"{prometheus_url: \"prom:9090\"}", `keys.prod.rotation.revoke_gate: promgate: "prom:9090" is not an http(s) URL`},
		{"{prometheus_url: \"http://prom:9090\", policy: maybe}", `revoke_gate.policy "maybe": want hold or revoke`},
		{"{prometheus_url: \"http://prom:9090\", checks: -1}", "revoke_gate.checks -1 is negative"},
		{"{prometheus_url: \"http://prom:9090\", bogus: 1}", "bogus"},
	} {
		e := newEnv(t, "issuer: {type: random}\nrevoke_gate: "+tc.gate+"\n")
		e.seed(oldKey)
		_, stderr, code := run(t, "", "rotate", "--config", e.cfg, "--dry-run")
		if code != rotation.ExitConfig || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, want 2 and %q:\n%s", tc.gate, code, tc.want, stderr)
		}
	}
}
