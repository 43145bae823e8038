package deploytest

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/proxy/settings"
)

// render is one rendering of the deployment files: a Kustomize directory or
// a Helm values example.
type render struct {
	name string
	objs []object
}

// allRenders returns the Kustomize renders, and the Helm renders of every
// values example (when helm is available).
func allRenders(t *testing.T) []render {
	t.Helper()
	var rs []render
	for _, kz := range kustomizations {
		rs = append(rs, render{"kustomize " + kz.dir, kustomizeBuild(t, kz.dir)})
	}
	for _, ex := range helmExamples(t) {
		rs = append(rs, render{"helm " + ex.name, helmTemplate(t, ex.file, defaultKubeVersion)})
	}
	return rs
}

// TestSecurity asserts the security settings of every rendered workload:
// non-root, read-only root filesystem, no privilege escalation, all
// capabilities dropped, seccomp RuntimeDefault, requests and limits, no
// service account token; the native sidecar's probes, ports and config; the
// rotation CronJob's policies; and NetworkPolicies that keep the sidecar's
// port inside the pod.
func TestSecurity(t *testing.T) {
	total := 0
	for _, r := range allRenders(t) {
		t.Run(r.name, func(t *testing.T) {
			ws := workloadsOf(r.objs)
			for _, w := range ws {
				for _, p := range checkWorkload(r.objs, w) {
					t.Errorf("%s: %s", w, p)
				}
				total++
			}
			for _, p := range checkServices(r.objs) {
				t.Error(p)
			}
		})
	}
	if total == 0 {
		t.Fatal("no workload rendered")
	}
	t.Logf("%d workloads checked", total)
}

// checkWorkload returns what is wrong with a workload.
func checkWorkload(objs []object, w workload) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }
	spec := w.spec
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		add("automountServiceAccountToken is not false")
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		add("uses the host's network, PID or IPC namespace")
	}
	if spec.ServiceAccountName == "" || spec.ServiceAccountName == "default" {
		add("runs as the default service account")
	} else if serviceAccount(objs, w) == nil {
		add("service account %s is not rendered", spec.ServiceAccountName)
	}
	for _, c := range w.containers() {
		for _, p := range checkContainer(c, psc) {
			add("container %s: %s", c.Name, p)
		}
	}
	var sidecarListen string
	for _, c := range w.containers() {
		if !isKeywarden(c) {
			continue
		}
		cfg, err := configOf(objs, w, c)
		if err != nil {
			add("%v", err)
			continue
		}
		for _, p := range checkIdentity(objs, w, c, cfg) {
			add("container %s: %s", c.Name, p)
		}
		if len(c.Args) == 0 {
			add("container %s: no subcommand", c.Name)
			continue
		}
		switch c.Args[0] {
		case "sidecar":
			sidecarListen = cfg.Sidecar.ListenAddr()
			for _, p := range checkSidecar(w, c, cfg) {
				add("sidecar %s: %s", c.Name, p)
			}
		case "rotate", "rotator":
			for _, p := range checkRotator(w, c, cfg) {
				add("rotator %s: %s", c.Name, p)
			}
		case "audit":
			for _, p := range checkAudit(objs, w, cfg) {
				add("audit %s: %s", c.Name, p)
			}
		default:
			add("container %s runs keywarden %s; want sidecar, rotate, rotator or audit", c.Name, c.Args[0])
		}
	}
	ps = append(ps, checkPolicies(objs, w, sidecarListen)...)
	return ps
}

// checkContainer checks one container's security context and resources,
// with the pod's security context as the fallback.
func checkContainer(c corev1.Container, psc *corev1.PodSecurityContext) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = psc.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		add("runAsNonRoot is not true")
	}
	user := sc.RunAsUser
	if user == nil {
		user = psc.RunAsUser
	}
	if user != nil && *user == 0 {
		add("runs as user 0")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		add("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		add("allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		add("is privileged")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		add("capabilities: ALL is not dropped")
	} else if len(sc.Capabilities.Add) > 0 {
		add("capabilities: adds %v", sc.Capabilities.Add)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		add("seccompProfile is not RuntimeDefault")
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[res]; !ok {
			add("no %s request", res)
		}
		if _, ok := c.Resources.Limits[res]; !ok {
			add("no %s limit", res)
		}
	}
	if isKeywarden(c) && (strings.HasSuffix(c.Image, ":latest") || !strings.ContainsAny(c.Image[strings.LastIndex(c.Image, "/")+1:], ":@")) {
		add("image %q is not pinned to a version", c.Image)
	}
	for _, e := range c.Env {
		if (e.Name == "ANTHROPIC_API_KEY" || e.Name == "ANTHROPIC_AUTH_TOKEN") && e.ValueFrom != nil {
			add("takes %s from %v: the key belongs in the sidecar only", e.Name, e.ValueFrom)
		}
	}
	return ps
}

// checkSidecar checks the native sidecar: how it runs, its probes on the
// config's metrics port, its loopback proxy, and the application containers
// pointed at it.
func checkSidecar(w workload, c corev1.Container, cfg *config.Config) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		add("not a native sidecar (restartPolicy: Always)")
	}
	if err := cfg.Sidecar.Ready(cfg); err != nil {
		add("config: %v", err)
	}
	listen := cfg.Sidecar.ListenAddr()
	if !settings.IsLoopback(listen) {
		add("the proxy listens on %q, not loopback", listen)
	}
	metrics := cfg.Sidecar.MetricsAddr()
	host, portStr, err := net.SplitHostPort(metrics)
	if err != nil {
		add("metrics_listen %q: %v", metrics, err)
		return ps
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		add("metrics_listen %q is loopback: the kubelet's probes cannot reach it", metrics)
	}
	port, _ := strconv.Atoi(portStr)
	probes := []struct {
		name, path string
		p          *corev1.Probe
	}{{"startupProbe", "/readyz", c.StartupProbe}, {"readinessProbe", "/readyz", c.ReadinessProbe}, {"livenessProbe", "/healthz", c.LivenessProbe}}
	for _, pr := range probes {
		switch {
		case pr.p == nil || pr.p.HTTPGet == nil:
			add("no HTTP %s", pr.name)
		case pr.p.HTTPGet.Path != pr.path:
			add("%s on %s, want %s", pr.name, pr.p.HTTPGet.Path, pr.path)
		case resolvePort(c, pr.p.HTTPGet.Port) != port:
			add("%s on port %s, but metrics_listen is %s", pr.name, pr.p.HTTPGet.Port.String(), metrics)
		}
	}
	for _, app := range w.spec.Containers {
		want := "http://" + listen
		got := ""
		for _, e := range app.Env {
			if e.Name == "ANTHROPIC_BASE_URL" {
				got = e.Value
			}
		}
		if got != want {
			add("container %s: ANTHROPIC_BASE_URL=%q, want %q", app.Name, got, want)
		}
	}
	return ps
}

// resolvePort returns the number of a probe port, by number or name.
func resolvePort(c corev1.Container, p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return -1
}

// checkRotator checks the rotator's config and, for a CronJob, its job
// policies; for the daemon, its probes.
func checkRotator(w workload, c corev1.Container, cfg *config.Config) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }
	rotated := 0
	for _, k := range cfg.Keys {
		if k.Rotation != nil {
			rotated++
		}
	}
	if rotated == 0 {
		add("config rotates no key (no rotation: section)")
	}
	switch {
	case c.Args[0] == "rotate" && w.cron == nil:
		add("keywarden rotate outside a CronJob")
	case c.Args[0] == "rotate":
		// Config (2) and empty pool (14) are final; store (12), issuer (13)
		// and other (1) failures are retried.
		ps = append(ps, checkCronJob(w.cron, []int32{2, 14}, []int32{1, 12, 13})...)
	case c.Args[0] == "rotator":
		if w.cron != nil || w.job != nil {
			add("the rotator daemon in a Job")
		}
		metrics := cfg.Rotator.MetricsAddr()
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--metrics-listen="); ok {
				metrics = v
			}
		}
		host, portStr, err := net.SplitHostPort(metrics)
		if err != nil {
			add("metrics address %q: %v", metrics, err)
			break
		}
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			add("metrics address %q is loopback: the kubelet's probes cannot reach it", metrics)
		}
		port, _ := strconv.Atoi(portStr)
		for name, p := range map[string]*corev1.Probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
			switch {
			case p == nil || p.HTTPGet == nil:
				add("no HTTP %s", name)
			case p.HTTPGet.Path != "/healthz":
				add("%s on %s; the rotator serves /healthz", name, p.HTTPGet.Path)
			case resolvePort(c, p.HTTPGet.Port) != port:
				add("%s on port %s, but the metrics address is %s", name, p.HTTPGet.Port.String(), metrics)
			}
		}
	}
	return ps
}

// checkAudit checks the `keywarden audit` CronJob: it reads the Admin key
// store, so it has the rotator's config and service account; it runs alone,
// keeps a history, and findings (16) or a config error (2) fail the Job at
// once.
func checkAudit(objs []object, w workload, cfg *config.Config) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }
	if w.cron == nil {
		return []string{"keywarden audit outside a CronJob"}
	}
	admin := false
	for _, k := range cfg.Keys {
		admin = admin || k.Rotation != nil && k.Rotation.Issuer.AdminKeyStore != ""
	}
	if !admin {
		add("config names no admin_key_store: the audit cannot list the organization's keys")
	}
	for _, o := range workloadsOf(objs) {
		if o.cron == nil || o.cron == w.cron {
			continue
		}
		for _, c := range o.spec.Containers {
			if isKeywarden(c) && len(c.Args) > 0 && c.Args[0] == "rotate" {
				if o.spec.ServiceAccountName != w.spec.ServiceAccountName {
					add("service account %s, but the rotate CronJob runs as %s", w.spec.ServiceAccountName, o.spec.ServiceAccountName)
				}
				if configPath(c) != "" && !sameConfigMap(o.spec, w.spec) {
					add("config is not the rotate CronJob's")
				}
			}
		}
	}
	// Findings (16) and a config error (2) are final; store (12) and other
	// (1) failures are retried.
	return append(ps, checkCronJob(w.cron, []int32{2, 16}, []int32{1, 12})...)
}

// sameConfigMap reports whether two pods mount the same ConfigMap as
// keywarden's config volume.
func sameConfigMap(a, b *corev1.PodSpec) bool {
	name := func(s *corev1.PodSpec) string {
		for _, v := range s.Volumes {
			if v.Name == "keywarden-config" && v.ConfigMap != nil {
				return v.ConfigMap.Name
			}
		}
		return ""
	}
	return name(a) != "" && name(a) == name(b)
}

// failFastCodes returns the exit codes a Job's podFailurePolicy fails the Job
// on at once.
func failFastCodes(js batchv1.JobSpec) map[int32]bool {
	failFast := map[int32]bool{}
	if js.PodFailurePolicy != nil {
		for _, r := range js.PodFailurePolicy.Rules {
			if r.Action == batchv1.PodFailurePolicyActionFailJob && r.OnExitCodes != nil && r.OnExitCodes.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn {
				for _, v := range r.OnExitCodes.Values {
					failFast[v] = true
				}
			}
		}
	}
	return failFast
}

// checkCronJob checks a CronJob's scheduling and failure policy: the exit
// codes final must fail the Job at once, those in retried must not.
func checkCronJob(cj *batchv1.CronJob, final, retried []int32) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }
	s := cj.Spec
	if s.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		add("concurrencyPolicy %q, want Forbid", s.ConcurrencyPolicy)
	}
	if s.SuccessfulJobsHistoryLimit == nil || s.FailedJobsHistoryLimit == nil {
		add("no history limits")
	}
	if s.StartingDeadlineSeconds == nil {
		add("no startingDeadlineSeconds")
	}
	js := s.JobTemplate.Spec
	if js.BackoffLimit == nil || *js.BackoffLimit > 6 {
		add("backoffLimit unset or above 6")
	}
	if js.ActiveDeadlineSeconds == nil {
		add("no activeDeadlineSeconds")
	}
	if js.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		add("restartPolicy %q, want Never (podFailurePolicy needs it)", js.Template.Spec.RestartPolicy)
	}
	failFast := failFastCodes(js)
	for _, code := range final {
		if !failFast[code] {
			add("exit code %d (a retry cannot fix it) does not fail the Job at once", code)
		}
	}
	for _, code := range retried {
		if failFast[code] {
			add("exit code %d (transient) fails the Job without a retry", code)
		}
	}
	return ps
}

// checkIdentity checks that what the store URLs need from Kubernetes is
// there: Vault's projected token at k8s_token_file, and the matching role
// annotation; no annotation of another cloud than the store's.
func checkIdentity(objs []object, w workload, c corev1.Container, cfg *config.Config) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }
	sa := serviceAccount(objs, w)
	ann := map[string]string{}
	if sa != nil {
		ann = sa.Annotations
	}
	for _, name := range cfg.Names() {
		u, err := url.Parse(cfg.Keys[name].Store)
		if err != nil {
			add("key %s: store URL: %v", name, err)
			continue
		}
		q := u.Query()
		switch u.Scheme {
		case "vault":
			if q.Get("auth") != "kubernetes" {
				continue
			}
			if role := ann["keywarden.dev/vault-role"]; role != q.Get("role") {
				add("key %s: Vault role %q, but the service account says keywarden.dev/vault-role=%q", name, q.Get("role"), role)
			}
			if f := q.Get("k8s_token_file"); f != "" && !projectedToken(w, c, f) {
				add("key %s: k8s_token_file %s is not a projected service account token mounted in the container", name, f)
			}
		case "wif":
			if f := q.Get("token_file"); f != "" && !projectedToken(w, c, f) {
				add("key %s: token_file %s is not a projected service account token (with the rule's audience) mounted in the container", name, f)
			}
		case "awssm":
			if _, ok := ann["iam.gke.io/gcp-service-account"]; ok {
				add("key %s on AWS, but the service account has a GKE identity", name)
			}
		case "gcpsm":
			if _, ok := ann["eks.amazonaws.com/role-arn"]; ok {
				add("key %s on GCP, but the service account has an AWS role", name)
			}
		}
	}
	return ps
}

// projectedToken reports whether file is a service account token projected
// into the container with an audience.
func projectedToken(w workload, c corev1.Container, file string) bool {
	return tokenAudience(w, c, file) != ""
}

// checkPolicies checks the NetworkPolicies that select a workload's pods:
// both directions are restricted, no egress rule is open to every
// destination, and no ingress rule admits the sidecar's proxy port.
func checkPolicies(objs []object, w workload, sidecarListen string) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }
	nps := policiesFor(objs, w)
	var ingress, egress bool
	for _, np := range nps {
		for _, t := range np.Spec.PolicyTypes {
			ingress = ingress || t == "Ingress"
			egress = egress || t == "Egress"
		}
		for i, r := range np.Spec.Egress {
			if len(r.To) == 0 {
				add("NetworkPolicy %s: egress rule %d admits every destination", np.Name, i)
			}
		}
		for i, r := range np.Spec.Ingress {
			if len(r.Ports) == 0 {
				add("NetworkPolicy %s: ingress rule %d admits every port", np.Name, i)
			}
			if sidecarListen == "" {
				continue
			}
			_, lp, _ := net.SplitHostPort(sidecarListen)
			for _, p := range r.Ports {
				if p.Port != nil && p.Port.String() == lp {
					add("NetworkPolicy %s: ingress rule %d admits the sidecar's proxy port %s", np.Name, i, lp)
				}
			}
		}
	}
	if !ingress || !egress {
		add("not selected by NetworkPolicies for both Ingress and Egress (ingress %v, egress %v)", ingress, egress)
	}
	return ps
}

// checkServices refuses Services that expose a sidecar's proxy port.
func checkServices(objs []object) []string {
	var ps []string
	for _, w := range workloadsOf(objs) {
		c, ok := w.sidecar()
		if !ok {
			continue
		}
		cfg, err := configOf(objs, w, c)
		if err != nil {
			continue
		}
		_, lp, _ := net.SplitHostPort(cfg.Sidecar.ListenAddr())
		for _, o := range objs {
			svc, ok := o.obj.(*corev1.Service)
			if !ok {
				continue
			}
			for _, p := range svc.Spec.Ports {
				if p.TargetPort.String() == lp || strconv.Itoa(int(p.Port)) == lp {
					ps = append(ps, fmt.Sprintf("Service %s exposes port %s, the sidecar's proxy port", svc.Name, lp))
				}
			}
		}
	}
	return ps
}
