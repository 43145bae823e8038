package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/config"
)

const rotationBase = `
keys:
  prod:
    store: awssm://anthropic/prod?region=us-east-1
    refresh: 1m
    jitter: 10s
    rotation:
`

func TestRotationParse(t *testing.T) {
	c, err := config.Parse([]byte(rotationBase + `
      schedule: "CRON_TZ=Europe/Paris 0 3 * * 1"
      grace: 5m
      start_jitter: 2m
      on_probe_failure: discard
      base_url: http://127.0.0.1:8080
      issuer:
        type: anthropic
        admin_key_store: awssm://anthropic/admin?region=us-east-1
        pool_store: awssm://anthropic/prod-pool?region=us-east-1
        revoke_status: archived
        pool_low: 3
      probe:
        model: claude-sonnet-4-5
        attempts: 3
        timeout: 5s
        settle: 12s
      webhook: {url: "https://hooks.example.com/kw", timeout: 3s}
rotator:
  lease: 5m
  metrics_listen: off
  webhook: {url: "https://hooks.example.com/all"}
`))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := c.Key("prod")
	r := k.Rotation
	if r.GraceInterval(k) != 5*time.Minute || r.StartJitter.D != 2*time.Minute || r.OnProbeFailure != "discard" {
		t.Fatalf("rotation %+v", r)
	}
	if r.ProbeType() != "anthropic" || r.Probe.Retry().Attempts != 3 || r.Probe.Retry().Settle != 12*time.Second || r.APIBaseURL() != "http://127.0.0.1:8080" {
		t.Fatalf("probe %+v", r.Probe)
	}
	if r.Issuer.PoolLow != 3 || r.Issuer.RevokeStatus != "archived" || r.Webhook.Timeout.D != 3*time.Second {
		t.Fatalf("issuer %+v", r.Issuer)
	}
	if c.Rotator.Lease.D != 5*time.Minute || c.Rotator.MetricsAddr() != "" || c.Rotator.Webhook.URL == "" {
		t.Fatalf("rotator %+v", c.Rotator)
	}
}

func TestRotationDefaults(t *testing.T) {
	for _, tc := range []struct {
		doc       string
		grace     time.Duration
		probeType string
	}{
		// 2 × (1m + 10s) is below the 10m floor.
		{rotationBase + "      issuer: {type: random}\n", 10 * time.Minute, "none"},
		{rotationBase + "      issuer: {type: exec, command: [/bin/mint]}\n      probe: {type: http, url: \"https://x/me\", headers: {Authorization: \"Bearer {{key}}\"}}\n", 10 * time.Minute, "http"},
		{strings.Replace(rotationBase, "refresh: 1m", "refresh: 10m", 1) + "      issuer: {type: anthropic, admin_key_store: \"file:///a.json?name=admin\", pool_store: \"file:///a.json?name=pool\"}\n", 2 * (10*time.Minute + 10*time.Second), "anthropic"},
	} {
		c, err := config.Parse([]byte(tc.doc))
		if err != nil {
			t.Fatalf("%s: %v", tc.doc, err)
		}
		k, _ := c.Key("prod")
		if g := k.Rotation.GraceInterval(k); g != tc.grace {
			t.Errorf("grace %v, want %v", g, tc.grace)
		}
		if p := k.Rotation.ProbeType(); p != tc.probeType {
			t.Errorf("probe %q, want %q", p, tc.probeType)
		}
		if c.Rotator.Lease.D != 0 || c.Rotator.MetricsAddr() != config.DefaultRotatorMetricsListen {
			t.Errorf("rotator defaults %+v", c.Rotator)
		}
	}
}

func TestRotationErrors(t *testing.T) {
	anthropic := "      issuer: {type: anthropic, admin_key_store: \"awssm://admin\", pool_store: \"awssm://pool\"}\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"no issuer", rotationBase + "      schedule: \"@weekly\"\n", "rotation.issuer.type: missing; set anthropic"},
		{"bad issuer", rotationBase + "      issuer: {type: openai}\n", `issuer.type: "openai": want anthropic, exec or random`},
		{"bad schedule", rotationBase + "      schedule: \"0 3 * *\"\n" + anthropic, "keys.prod.rotation.schedule: schedule \"0 3 * *\""},
		{"six fields", rotationBase + "      schedule: \"0 0 3 * * 1\"\n" + anthropic, "use 5 fields"},
		{"bad zone", rotationBase + "      schedule: \"CRON_TZ=Mars/Olympus 0 3 * * 1\"\n" + anthropic, "rotation.schedule"},
		{"zone only", rotationBase + "      schedule: \"CRON_TZ=UTC\"\n" + anthropic, "has a time zone but no schedule"},
		{"short grace", rotationBase + "      grace: 30s\n" + anthropic, "keys.prod.rotation.grace: 30s is shorter than the key's refresh + jitter (1m10s)"},
		{"negative jitter", rotationBase + "      start_jitter: -1s\n" + anthropic, "start_jitter: must not be negative"},
		{"bad base url", rotationBase + "      base_url: api.anthropic.com\n" + anthropic, `base_url: api.anthropic.com: not an absolute http(s) URL`},
		// The Admin key and new keys travel to the base URL, a new key to
		// the http probe's URL: never in clear text across a network.
		{"clear base url", rotationBase + "      base_url: \"http://192.0.2.2:18901\"\n" + anthropic, `base_url: http://192.0.2.2:18901: would cross the network in clear text`},
		{"base url credentials", rotationBase + "      base_url: \"https://u:S3CRET@api.example.com\"\n" + anthropic, `base_url: https://api.example.com: must not carry credentials`},
		{"clear probe url", rotationBase + anthropic + "      probe: {type: http, url: \"http://api.example.com/me\", headers: {A: \"{{key}}\"}}\n", "probe.url: http://api.example.com/me: would cross the network in clear text"},
		{"random prefix space", rotationBase + "      issuer: {type: random, prefix: 'kw key '}\n", "prefix: keys made with it are refused by every reader: providers: JSON payload field \"api_key\": the key holds white space at byte 2"},
		{"random prefix non-ASCII", rotationBase + "      issuer: {type: random, prefix: 'kwé-'}\n", "outside printable ASCII"},
		{"rotator metrics port", "keys: {p: {store: \"env://K\"}}\nrotator: {metrics_listen: \"127.0.0.1:99999\"}\n", "rotator.metrics_listen: \"127.0.0.1:99999\": the port must be a number from 1 to 65535"},
		{"rotator metrics service", "keys: {p: {store: \"env://K\"}}\nrotator: {metrics_listen: \"127.0.0.1:http\"}\n", "the port must be a number"},
		{"rotator metrics port 0", "keys: {p: {store: \"env://K\"}}\nrotator: {metrics_listen: \"127.0.0.1:0\"}\n", "the port must be a number"},
		{"no admin store", rotationBase + "      issuer: {type: anthropic, pool_store: \"awssm://pool\"}\n", "issuer.admin_key_store: missing; set a store URL"},
		{"no pool store", rotationBase + "      issuer: {type: anthropic, admin_key_store: \"awssm://admin\"}\n", "issuer.pool_store: missing"},
		{"pool is the key", rotationBase + "      issuer: {type: anthropic, admin_key_store: \"awssm://admin\", pool_store: \"awssm://anthropic/prod?region=us-east-1&refresh=1m\"}\n", "is the key's own store"},
		{"pool is the admin key", rotationBase + "      issuer: {type: anthropic, admin_key_store: \"awssm://admin\", pool_store: \"awssm://admin\"}\n", "must be different secrets"},
		{"store not a URL", rotationBase + "      issuer: {type: anthropic, admin_key_store: \"admin.json\", pool_store: \"awssm://pool\"}\n", `admin_key_store: "admin.json" is not a store URL`},
		{"revoke status", rotationBase + "      issuer: {type: anthropic, admin_key_store: \"awssm://admin\", pool_store: \"awssm://pool\", revoke_status: deleted}\n", `revoke_status: "deleted": want inactive`},
		{"field of another issuer", rotationBase + "      issuer: {type: random, command: [x]}\n", "issuer.command: not used by the random issuer (its fields: bytes, encoding, prefix)"},
		{"exec without command", rotationBase + "      issuer: {type: exec}\n", "issuer.command: missing"},
		{"exec template", rotationBase + "      issuer: {type: exec, command: [mint, \"{{key}}\"]}\n", "commands take no templates"},
		{"exec env", rotationBase + "      issuer: {type: exec, command: [mint], env: {\"A B\": x}}\n", `env: "A B" is not a variable name`},
		{"random bytes", rotationBase + "      issuer: {type: random, bytes: 8}\n", "bytes: 8 is out of range"},
		{"random encoding", rotationBase + "      issuer: {type: random, encoding: base32}\n", `encoding: "base32"`},
		{"probe type", rotationBase + anthropic + "      probe: {type: ping}\n", `probe.type: "ping": want anthropic, http or none`},
		{"http probe without url", rotationBase + anthropic + "      probe: {type: http, headers: {A: \"{{key}}\"}}\n", "probe.url: missing"},
		{"http probe key in url", rotationBase + anthropic + "      probe: {type: http, url: \"https://x/?k={{key}}\", headers: {A: \"{{key}}\"}}\n", "must not carry {{key}}"},
		{"http probe no key header", rotationBase + anthropic + "      probe: {type: http, url: \"https://x/\", headers: {A: b}}\n", "no header carries {{key}}"},
		{"http probe status", rotationBase + anthropic + "      probe: {type: http, url: \"https://x/\", headers: {A: \"{{key}}\"}, expect_status: 2000}\n", "expect_status: 2000"},
		{"anthropic probe with url", rotationBase + anthropic + "      probe: {url: \"https://x/\"}\n", "are for type http"},
		{"http probe with model", rotationBase + anthropic + "      probe: {type: http, model: m, url: \"https://x/\", headers: {A: \"{{key}}\"}}\n", "are for type anthropic"},
		{"backoffs", rotationBase + anthropic + "      probe: {backoff: 10s, max_backoff: 1s}\n", "max_backoff: 1s is below backoff 10s"},
		{"webhook url", rotationBase + anthropic + "      webhook: {url: \"hooks.example.com\"}\n", "rotation.webhook.url: \"hooks.example.com\" is not an http(s) URL"},
		{"unknown rotation field", rotationBase + anthropic + "      colour: blue\n", `unknown field "colour" (known fields here: base_url, grace, issuer, on_probe_failure, probe, revoke_gate, rotate_before_expiry, schedule, start_jitter, webhook)`},
		{"unknown issuer field", rotationBase + "      issuer: {type: random, size: 3}\n", `unknown field "size" (known fields here: admin_key_store, bytes, command, encoding, env, pool_low, pool_store, prefix, revoke_command, revoke_status, timeout, type)`},
		{"lease", "keys: {p: {store: \"env://K\"}}\nrotator: {lease: 5s}\n", "rotator.lease: 5s is shorter than 10s"},
		{"rotator metrics", "keys: {p: {store: \"env://K\"}}\nrotator: {metrics_listen: \"9788\"}\n", "rotator.metrics_listen: \"9788\" is not host:port"},
		{"rotator webhook", "keys: {p: {store: \"env://K\"}}\nrotator: {webhook: {timeout: 1s}}\n", "rotator.webhook.url: missing"},
		{"push gateway url", "keys: {p: {store: \"env://K\"}}\nrotator: {push_gateway: {timeout: 1s}}\n", "rotator.push_gateway.url: required"},
		{"push gateway label", "keys: {p: {store: \"env://K\"}}\nrotator: {push_gateway: {url: \"http://pg:9091\", labels: {key: x}}}\n", `rotator.push_gateway: pushgw: label "key" is taken`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant an error containing %q", err, tc.want)
			}
			// Each rule is said once.
			if n := strings.Count(err.Error(), tc.want); n != 1 {
				t.Fatalf("%q is said %d times in %v", tc.want, n, err)
			}
		})
	}
}
