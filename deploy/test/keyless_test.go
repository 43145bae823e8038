package deploytest

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// ruleAudience is the audience of the federation rule in the keyless
// examples.
const ruleAudience = "https://api.anthropic.com"

// keylessRenders are the keyless renders: the Kustomize overlay and the Helm
// values example with federation.enabled.
func keylessRenders(t *testing.T) []render {
	t.Helper()
	return []render{
		{"kustomize overlays/keyless", kustomizeBuild(t, "overlays/keyless")},
		{"helm sidecar-federation", helmTemplate(t, path("deploy", "helm", "keywarden", "ci", "sidecar-federation-values.yaml"), defaultKubeVersion)},
	}
}

// TestKeyless checks the keyless renders: every key is a wif:// source whose
// token_file is a projected service account token with the rule's audience,
// and nothing holds or rotates a key: no Secret, no reference to one, no Job
// or CronJob.
func TestKeyless(t *testing.T) {
	for _, r := range keylessRenders(t) {
		t.Run(r.name, func(t *testing.T) {
			for _, p := range checkKeyless(r.objs, ruleAudience) {
				t.Error(p)
			}
		})
	}
}

// TestKeylessChecksCatchMistakes breaks one thing at a time in the keyless
// renders and expects checkKeyless to name it.
func TestKeylessChecksCatchMistakes(t *testing.T) {
	cases := []struct {
		name   string
		mutate func([]object) []object
		expect string
	}{
		{"wrong audience", mutateKeylessPod(func(s *corev1.PodSpec) {
			for _, v := range s.Volumes {
				if v.Projected != nil {
					v.Projected.Sources[0].ServiceAccountToken.Audience = "vault"
				}
			}
		}), "audience"},
		{"token not mounted", mutateKeylessPod(func(s *corev1.PodSpec) {
			var keep []corev1.VolumeMount
			for _, m := range s.InitContainers[0].VolumeMounts {
				if m.MountPath != "/var/run/secrets/anthropic" {
					keep = append(keep, m)
				}
			}
			s.InitContainers[0].VolumeMounts = keep
		}), "token_file"},
		{"key from a Secret", mutateKeylessPod(func(s *corev1.PodSpec) {
			s.Containers[0].Env = append(s.Containers[0].Env, corev1.EnvVar{Name: "ANTHROPIC_API_KEY_REAL", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "anthropic"}, Key: "api_key"}}})
		}), "Secret"},
		{"rotation CronJob", func(objs []object) []object {
			return append(objs, object{source: "test", obj: &batchv1.CronJob{}, name: "keywarden-rotate"})
		}, "CronJob"},
		{"key Secret", func(objs []object) []object {
			return append(objs, object{source: "test", obj: &corev1.Secret{}, name: "anthropic"})
		}, "Secret"},
	}
	for _, r := range keylessRenders(t) {
		for _, tc := range cases {
			t.Run(r.name+"/"+tc.name, func(t *testing.T) {
				problems := checkKeyless(tc.mutate(deepCopy(r.objs)), ruleAudience)
				for _, p := range problems {
					if strings.Contains(p, tc.expect) {
						return
					}
				}
				t.Errorf("no problem mentions %q; got %q", tc.expect, problems)
			})
		}
	}
}

func mutateKeylessPod(f func(*corev1.PodSpec)) func([]object) []object {
	return func(objs []object) []object {
		for _, o := range objs {
			if d, ok := o.obj.(*appsv1.Deployment); ok {
				f(&d.Spec.Template.Spec)
			}
		}
		return objs
	}
}

// checkKeyless returns what makes a render not keyless.
func checkKeyless(objs []object, audience string) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }
	sidecars := 0
	for _, o := range objs {
		switch o.obj.(type) {
		case *corev1.Secret:
			add("%s: a keyless deployment holds no key Secret", o)
		case *batchv1.CronJob, *batchv1.Job:
			add("%s: nothing rotates in keyless mode (no CronJob or Job)", o)
		}
	}
	for _, w := range workloadsOf(objs) {
		for _, p := range secretRefs(w.spec) {
			add("%s: %s", w, p)
		}
		c, ok := w.sidecar()
		if !ok {
			continue
		}
		sidecars++
		cfg, err := configOf(objs, w, c)
		if err != nil {
			add("%s: %v", w, err)
			continue
		}
		for _, name := range cfg.Names() {
			u, err := url.Parse(cfg.Keys[name].Store)
			if err != nil || u.Scheme != "wif" || !strings.HasPrefix(u.Host, "fdrl_") {
				add("%s: key %s: store %q is not wif://fdrl_…", w, name, cfg.Keys[name].Store)
				continue
			}
			file := u.Query().Get("token_file")
			if got := tokenAudience(w, c, file); got != audience {
				add("%s: key %s: token_file %s: projected token audience %q, want the rule's %q", w, name, file, got, audience)
			}
		}
	}
	if sidecars == 0 {
		add("no keywarden sidecar rendered")
	}
	return ps
}

// tokenAudience returns the audience of the service account token projected
// at file in the container, or "" when no such token is mounted there.
func tokenAudience(w workload, c corev1.Container, file string) string {
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, file)
		if file == "" || err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		for _, v := range w.spec.Volumes {
			if v.Name != m.Name || v.Projected == nil {
				continue
			}
			for _, s := range v.Projected.Sources {
				if t := s.ServiceAccountToken; t != nil && t.Path == rel {
					return t.Audience
				}
			}
		}
	}
	return ""
}

// secretRefs lists every reference of a pod to a Secret: volumes, env and
// envFrom.
func secretRefs(s *corev1.PodSpec) []string {
	var ps []string
	for _, v := range s.Volumes {
		if v.Secret != nil {
			ps = append(ps, fmt.Sprintf("volume %s mounts Secret %s", v.Name, v.Secret.SecretName))
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					ps = append(ps, fmt.Sprintf("volume %s projects Secret %s", v.Name, src.Secret.Name))
				}
			}
		}
	}
	for _, c := range append(append([]corev1.Container{}, s.InitContainers...), s.Containers...) {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ps = append(ps, fmt.Sprintf("container %s: env %s from Secret %s", c.Name, e.Name, e.ValueFrom.SecretKeyRef.Name))
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				ps = append(ps, fmt.Sprintf("container %s: envFrom Secret %s", c.Name, e.SecretRef.Name))
			}
		}
	}
	return ps
}
