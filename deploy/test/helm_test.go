package deploytest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The chart's lowest supported Kubernetes version (native sidecars) and a
// current one; every example renders for both.
const (
	defaultKubeVersion = "1.29.0"
	currentKubeVersion = "1.34.0"
)

// helmExample is a documented values example of the chart, with the kinds it
// renders.
type helmExample struct {
	name  string
	file  string // "" for the chart's defaults
	kinds map[string]int
}

// helmExamples are the chart's defaults and its ci/*-values.yaml files; each
// file must be listed in wantHelmKinds.
func helmExamples(t testing.TB) []helmExample {
	t.Helper()
	files, err := filepath.Glob(path("deploy", "helm", "keywarden", "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values examples in deploy/helm/keywarden/ci: %v", err)
	}
	exs := []helmExample{{name: "defaults", kinds: map[string]int{}}}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), "-values.yaml")
		k, ok := wantHelmKinds[name]
		if !ok {
			t.Errorf("values example %s is not in wantHelmKinds: add it with the kinds it renders", name)
			continue
		}
		exs = append(exs, helmExample{name: name, file: f, kinds: k})
	}
	return exs
}

var wantHelmKinds = map[string]map[string]int{
	"rotator-cronjob-aws":         {"ConfigMap": 1, "CronJob": 1, "NetworkPolicy": 1, "ServiceAccount": 1},
	"rotator-daemon-gcp":          {"ConfigMap": 1, "Deployment": 1, "NetworkPolicy": 1, "ServiceAccount": 1},
	"sidecar-workload-vault":      {"ConfigMap": 2, "CronJob": 1, "Deployment": 1, "NetworkPolicy": 2, "PodDisruptionBudget": 1, "ServiceAccount": 2},
	"sidecar-config-pod-identity": {"ConfigMap": 1, "NetworkPolicy": 1, "ServiceAccount": 1},
	"sidecar-federation":          {"ConfigMap": 1, "Deployment": 1, "NetworkPolicy": 1, "ServiceAccount": 1},
	"rotator-audit-aws":           {"ConfigMap": 1, "CronJob": 2, "NetworkPolicy": 1, "ServiceAccount": 1},
}

// helmTemplate renders the chart with a values file ("" for the defaults)
// and decodes the output strictly. Renders are cached per test binary.
func helmTemplate(t testing.TB, values, kubeVersion string) []object {
	t.Helper()
	key := values + "@" + kubeVersion
	helmMu.Lock()
	objs, ok := helmCache[key]
	helmMu.Unlock()
	if ok {
		return objs
	}
	args := []string{"template", "kw", path("deploy", "helm", "keywarden"), "--namespace", "llm", "--kube-version", kubeVersion}
	if values != "" {
		args = append(args, "--values", values)
	}
	out := mustRun(t, root, tool(t, "install-helm.sh"), args...)
	objs, err := decodeAll("helm template "+filepath.Base(values), []byte(out))
	if err != nil {
		t.Fatalf("strict decode: %v", err)
	}
	helmMu.Lock()
	helmCache[key] = objs
	helmMu.Unlock()
	return objs
}

var (
	helmMu    sync.Mutex
	helmCache = map[string][]object{}
)

// TestHelmLint runs `helm lint --strict` on the chart with its defaults and
// with every values example.
func TestHelmLint(t *testing.T) {
	helm := tool(t, "install-helm.sh")
	for _, ex := range helmExamples(t) {
		t.Run(ex.name, func(t *testing.T) {
			args := []string{"lint", "--strict", "--kube-version", defaultKubeVersion, path("deploy", "helm", "keywarden")}
			if ex.file != "" {
				args = append(args, "--values", ex.file)
			}
			out := mustRun(t, root, helm, args...)
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Errorf("helm lint: %s", out)
			}
		})
	}
}

// TestHelmTemplate renders every values example for the lowest and a current
// Kubernetes version, decodes every object strictly, and checks the kinds.
func TestHelmTemplate(t *testing.T) {
	for _, ex := range helmExamples(t) {
		for _, kv := range []string{defaultKubeVersion, currentKubeVersion} {
			t.Run(ex.name+"/"+kv, func(t *testing.T) {
				objs := helmTemplate(t, ex.file, kv)
				if got := kinds(objs); !equalCounts(got, ex.kinds) {
					t.Errorf("kinds = %v, want %v", got, ex.kinds)
				}
			})
		}
	}
}

// TestHelmRefusesBadValues checks that the values schema and the chart's own
// checks refuse values that would deploy something broken, and say which
// value is wrong.
func TestHelmRefusesBadValues(t *testing.T) {
	helm := tool(t, "install-helm.sh")
	rotatorAWS := path("deploy", "helm", "keywarden", "ci", "rotator-cronjob-aws-values.yaml")
	federation := path("deploy", "helm", "keywarden", "ci", "sidecar-federation-values.yaml")
	cases := []struct {
		name   string
		args   []string
		expect string
	}{
		{"unknown mode", []string{"--set", "rotator.mode=hourly"}, "/rotator/mode"},
		{"unknown identity", []string{"--set", "identity.type=azure"}, "/identity/type"},
		{"typo in a value", []string{"--set", "rotator.enabeld=true"}, "enabeld"},
		{"port out of range", []string{"--set", "sidecar.metricsPort=70000"}, "/sidecar/metricsPort"},
		{"tag as digest", []string{"--set", "image.digest=latest"}, "/image/digest"},
		{"store that is not a URL", []string{"--set", "rotator.enabled=true", "--set", "rotator.config.keys.a.store=secret"}, "store"},
		{"rotator without keys", []string{"--set", "rotator.enabled=true", "--set", "networkPolicy.enabled=false"}, "rotator.config.keys"},
		{"sidecar without keys", []string{"--set", "sidecar.enabled=true", "--set", "networkPolicy.enabled=false"}, "sidecar.config.keys"},
		{"IRSA without a role", []string{"--values", rotatorAWS, "--set", "identity.aws.rotatorRoleArn="}, "identity.aws.rotatorRoleArn"},
		{"no store egress", []string{"--values", rotatorAWS, "--set", "networkPolicy.storeEgress=null"}, "networkPolicy.storeEgress"},
		{"workload without containers", []string{"--set", "sidecar.enabled=true", "--set", "sidecar.config.keys.a.store=env://K", "--set", "sidecar.workload.enabled=true", "--set", "networkPolicy.enabled=false"}, "sidecar.workload.containers"},
		{"federation without a rule", []string{"--values", federation, "--set", "federation.ruleId="}, "/federation/ruleId"},
		{"federation rule without its prefix", []string{"--values", federation, "--set", "federation.ruleId=rule_01abc"}, "/federation/ruleId"},
		{"federation without an organization", []string{"--values", federation, "--set", "federation.organizationId="}, "/federation/organizationId"},
		{"federation token too short-lived", []string{"--values", federation, "--set", "federation.tokenExpirationSeconds=60"}, "/federation/tokenExpirationSeconds"},
		{"audit without the rotator", []string{"--set", "audit.enabled=true"}, "rotator.enabled"},
		{"sidecar pods unknown", []string{"--set", "sidecar.enabled=true", "--set", "sidecar.config.keys.a.store=env://K", "--set-json", `networkPolicy.storeEgress=[{"to":[{"ipBlock":{"cidr":"10.0.0.0/8"}}]}]`}, "sidecar.podSelector"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"template", "kw", path("deploy", "helm", "keywarden"), "--kube-version", defaultKubeVersion}, tc.args...)
			r, err := run(context.Background(), root, nil, helm, args...)
			if err != nil {
				t.Fatal(err)
			}
			if r.code == 0 {
				t.Fatalf("helm template %v succeeded; want an error naming %s", tc.args, tc.expect)
			}
			if !strings.Contains(r.stderr, tc.expect) {
				t.Errorf("error does not name %s:\n%s", tc.expect, r.stderr)
			}
		})
	}
}

// TestHelmReadme checks that the chart's README documents every top-level
// value and every values example.
func TestHelmReadme(t *testing.T) {
	readme, err := os.ReadFile(path("deploy", "helm", "keywarden", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	values, err := os.ReadFile(path("deploy", "helm", "keywarden", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(values), "\n") {
		if line == "" || line[0] == ' ' || line[0] == '#' || !strings.Contains(line, ":") {
			continue
		}
		key := line[:strings.Index(line, ":")]
		if !strings.Contains(string(readme), "`"+key) {
			t.Errorf("README.md does not document the value %s", key)
		}
	}
	for _, ex := range helmExamples(t) {
		if ex.file != "" && !strings.Contains(string(readme), filepath.Base(ex.file)) {
			t.Errorf("README.md does not mention the example %s", filepath.Base(ex.file))
		}
	}
}
