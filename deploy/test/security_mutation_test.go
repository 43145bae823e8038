package deploytest

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestSecurityChecksCatchWeakSettings weakens one setting at a time in the
// rendered production and development overlays and expects the security
// checks to name it: the checks of TestSecurity can fail.
func TestSecurityChecksCatchWeakSettings(t *testing.T) {
	f := false
	tr := true
	root0 := int64(0)
	allowed := corev1.ContainerRestartPolicy("Never")
	sidecar := func(d *appsv1.Deployment) *corev1.Container { return &d.Spec.Template.Spec.InitContainers[0] }
	app := func(d *appsv1.Deployment) *corev1.Container { return &d.Spec.Template.Spec.Containers[0] }
	rotate := func(cj *batchv1.CronJob) *corev1.Container {
		return &cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
	}
	cases := []struct {
		name    string
		overlay string
		mutate  func(objs []object)
		expect  string
	}{
		{"writable root filesystem", "production", onDeployment(func(d *appsv1.Deployment) { sidecar(d).SecurityContext.ReadOnlyRootFilesystem = &f }), "readOnlyRootFilesystem"},
		{"privilege escalation", "production", onDeployment(func(d *appsv1.Deployment) { app(d).SecurityContext.AllowPrivilegeEscalation = &tr }), "allowPrivilegeEscalation"},
		{"capabilities kept", "production", onDeployment(func(d *appsv1.Deployment) { sidecar(d).SecurityContext.Capabilities.Drop = nil }), "ALL is not dropped"},
		{"capability added", "production", onDeployment(func(d *appsv1.Deployment) {
			sidecar(d).SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		}), "adds"},
		{"root user", "production", onCronJob(func(cj *batchv1.CronJob) { rotate(cj).SecurityContext.RunAsUser = &root0 }), "user 0"},
		{"root allowed", "production", onDeployment(func(d *appsv1.Deployment) {
			app(d).SecurityContext.RunAsNonRoot = nil
			d.Spec.Template.Spec.SecurityContext.RunAsNonRoot = nil
		}), "runAsNonRoot"},
		{"no seccomp", "production", onDeployment(func(d *appsv1.Deployment) {
			app(d).SecurityContext.SeccompProfile = nil
			d.Spec.Template.Spec.SecurityContext.SeccompProfile = nil
		}), "seccompProfile"},
		{"no memory limit", "production", onDeployment(func(d *appsv1.Deployment) { delete(sidecar(d).Resources.Limits, corev1.ResourceMemory) }), "no memory limit"},
		{"service account token", "production", onDeployment(func(d *appsv1.Deployment) { d.Spec.Template.Spec.AutomountServiceAccountToken = nil }), "automountServiceAccountToken"},
		{"host network", "production", onDeployment(func(d *appsv1.Deployment) { d.Spec.Template.Spec.HostNetwork = true }), "host's network"},
		{"latest image", "production", onDeployment(func(d *appsv1.Deployment) { sidecar(d).Image = "ghcr.io/keywarden/keywarden:latest" }), "not pinned"},
		{"key from a Secret", "production", onDeployment(func(d *appsv1.Deployment) {
			for i := range app(d).Env {
				if app(d).Env[i].Name == "ANTHROPIC_API_KEY" {
					app(d).Env[i] = corev1.EnvVar{Name: "ANTHROPIC_API_KEY", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}}
				}
			}
		}), "belongs in the sidecar"},
		{"ordinary init container", "production", onDeployment(func(d *appsv1.Deployment) { sidecar(d).RestartPolicy = &allowed }), "native sidecar"},
		{"readiness on the wrong path", "production", onDeployment(func(d *appsv1.Deployment) { sidecar(d).ReadinessProbe.HTTPGet.Path = "/healthz" }), "readinessProbe on /healthz"},
		{"probe on the wrong port", "production", onDeployment(func(d *appsv1.Deployment) { sidecar(d).LivenessProbe.HTTPGet.Port = intstr.FromInt32(8787) }), "livenessProbe on port 8787"},
		{"no startup probe", "production", onDeployment(func(d *appsv1.Deployment) { sidecar(d).StartupProbe = nil }), "no HTTP startupProbe"},
		{"app not pointed at the sidecar", "production", onDeployment(func(d *appsv1.Deployment) {
			for i := range app(d).Env {
				if app(d).Env[i].Name == "ANTHROPIC_BASE_URL" {
					app(d).Env[i].Value = "https://api.anthropic.com"
				}
			}
		}), "ANTHROPIC_BASE_URL"},
		{"sidecar listens on the pod IP", "production", onConfigMap("keywarden-sidecar", func(s string) string {
			return strings.Replace(s, "listen: 127.0.0.1:8787", "listen: 0.0.0.0:8787\n  client_token_file: /etc/token", 1)
		}), "not loopback"},
		{"metrics on loopback", "production", onConfigMap("keywarden-sidecar", func(s string) string {
			return strings.Replace(s, "metrics_listen: 0.0.0.0:9787", "metrics_listen: 127.0.0.1:9787", 1)
		}), "kubelet's probes cannot reach it"},
		{"config that does not parse", "production", onConfigMap("keywarden-rotator", func(s string) string { return s + "\nbogus: 1\n" }), "bogus"},
		{"rotator rotates nothing", "production", onConfigMap("keywarden-rotator", func(s string) string {
			return "keys:\n  anthropic:\n    store: awssm://anthropic/production?region=us-east-1\n"
		}), "rotates no key"},
		{"concurrent rotations", "production", onCronJob(func(cj *batchv1.CronJob) { cj.Spec.ConcurrencyPolicy = batchv1.AllowConcurrent }), "Forbid"},
		{"no history limit", "production", onCronJob(func(cj *batchv1.CronJob) { cj.Spec.FailedJobsHistoryLimit = nil }), "history limits"},
		{"config errors retried", "production", onCronJob(func(cj *batchv1.CronJob) { cj.Spec.JobTemplate.Spec.PodFailurePolicy = nil }), "exit code 2"},
		{"pods not isolated", "production", onNetworkPolicy("example-app", func(np *networkingv1.NetworkPolicy) {
			np.Spec.PolicyTypes = []networkingv1.PolicyType{"Egress"}
		}), "both Ingress and Egress"},
		{"ingress on every port", "production", onNetworkPolicy("example-app", func(np *networkingv1.NetworkPolicy) {
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{})
		}), "admits every port"},
		{"ingress to the proxy port", "production", onNetworkPolicy("example-app", func(np *networkingv1.NetworkPolicy) {
			p := intstr.FromInt32(8787)
			np.Spec.Ingress[0].Ports = append(np.Spec.Ingress[0].Ports, networkingv1.NetworkPolicyPort{Port: &p})
		}), "admits the sidecar's proxy port"},
		{"egress anywhere", "production", onNetworkPolicy("keywarden-store-egress", func(np *networkingv1.NetworkPolicy) {
			np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{})
		}), "admits every destination"},
		{"Vault token not mounted", "development", onDeployment(func(d *appsv1.Deployment) {
			c := sidecar(d)
			var keep []corev1.VolumeMount
			for _, m := range c.VolumeMounts {
				if m.Name != "vault-token" {
					keep = append(keep, m)
				}
			}
			c.VolumeMounts = keep
		}), "k8s_token_file"},
		{"Vault role mismatch", "development", onServiceAccount("example-app", func(sa *corev1.ServiceAccount) {
			sa.Annotations["keywarden.dev/vault-role"] = "keywarden-rotator"
		}), "Vault role"},
		{"wrong cloud identity", "production", onServiceAccount("example-app", func(sa *corev1.ServiceAccount) {
			sa.Annotations["iam.gke.io/gcp-service-account"] = "x@p.iam.gserviceaccount.com"
		}), "GKE identity"},
		{"audit findings retried", "production", onNamedCronJob("keywarden-audit", func(cj *batchv1.CronJob) { cj.Spec.JobTemplate.Spec.PodFailurePolicy = nil }), "exit code 16"},
		{"audit as another account", "production", onNamedCronJob("keywarden-audit", func(cj *batchv1.CronJob) {
			cj.Spec.JobTemplate.Spec.Template.Spec.ServiceAccountName = "example-app"
		}), "the rotate CronJob runs as"},
		{"audit without the Admin key", "production", func(objs []object) {
			sidecarConfig := ""
			for _, o := range objs {
				if cm, ok := o.obj.(*corev1.ConfigMap); ok && strings.HasPrefix(cm.Name, "keywarden-sidecar-") {
					sidecarConfig = cm.Name
				}
			}
			onNamedCronJob("keywarden-audit", func(cj *batchv1.CronJob) {
				cj.Spec.JobTemplate.Spec.Template.Spec.Volumes[0].ConfigMap.Name = sidecarConfig
			})(objs)
		}, "admin_key_store"},
		{"concurrent audits", "production", onNamedCronJob("keywarden-audit", func(cj *batchv1.CronJob) { cj.Spec.ConcurrencyPolicy = batchv1.AllowConcurrent }), "Forbid"},
		{"default service account", "production", onDeployment(func(d *appsv1.Deployment) { d.Spec.Template.Spec.ServiceAccountName = "" }), "default service account"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := deepCopy(kustomizeBuild(t, "overlays/"+tc.overlay))
			tc.mutate(objs)
			var problems []string
			for _, w := range workloadsOf(objs) {
				problems = append(problems, checkWorkload(objs, w)...)
			}
			problems = append(problems, checkServices(objs)...)
			for _, p := range problems {
				if strings.Contains(p, tc.expect) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got %q", tc.expect, problems)
		})
	}
	t.Run("unchanged", func(t *testing.T) {
		objs := deepCopy(kustomizeBuild(t, "overlays/production"))
		for _, w := range workloadsOf(objs) {
			if ps := checkWorkload(objs, w); len(ps) > 0 {
				t.Errorf("%s: %q", w, ps)
			}
		}
	})
}

func deepCopy(objs []object) []object {
	out := make([]object, len(objs))
	for i, o := range objs {
		o.obj = o.obj.DeepCopyObject()
		out[i] = o
	}
	return out
}

func onDeployment(f func(*appsv1.Deployment)) func([]object) {
	return func(objs []object) {
		for _, o := range objs {
			if d, ok := o.obj.(*appsv1.Deployment); ok && d.Name == "example-app" {
				f(d)
			}
		}
	}
}

func onCronJob(f func(*batchv1.CronJob)) func([]object) {
	return func(objs []object) {
		for _, o := range objs {
			if cj, ok := o.obj.(*batchv1.CronJob); ok {
				f(cj)
			}
		}
	}
}

func onNamedCronJob(name string, f func(*batchv1.CronJob)) func([]object) {
	return func(objs []object) {
		for _, o := range objs {
			if cj, ok := o.obj.(*batchv1.CronJob); ok && cj.Name == name {
				f(cj)
			}
		}
	}
}

func onConfigMap(prefix string, f func(string) string) func([]object) {
	return func(objs []object) {
		for _, o := range objs {
			if cm, ok := o.obj.(*corev1.ConfigMap); ok && strings.HasPrefix(cm.Name, prefix+"-") {
				cm.Data["config.yaml"] = f(cm.Data["config.yaml"])
			}
		}
	}
}

func onNetworkPolicy(name string, f func(*networkingv1.NetworkPolicy)) func([]object) {
	return func(objs []object) {
		for _, o := range objs {
			if np, ok := o.obj.(*networkingv1.NetworkPolicy); ok && np.Name == name {
				f(np)
			}
		}
	}
}

func onServiceAccount(name string, f func(*corev1.ServiceAccount)) func([]object) {
	return func(objs []object) {
		for _, o := range objs {
			if sa, ok := o.obj.(*corev1.ServiceAccount); ok && sa.Name == name {
				if sa.Annotations == nil {
					sa.Annotations = map[string]string{}
				}
				f(sa)
			}
		}
	}
}
