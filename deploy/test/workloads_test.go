package deploytest

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/keywarden/keywarden/internal/config"
)

// workload is an object that runs pods.
type workload struct {
	object
	meta metav1.ObjectMeta // the pod template's
	spec *corev1.PodSpec
	cron *batchv1.CronJob
	job  *batchv1.JobSpec
}

// workloadsOf returns the objects that run pods.
func workloadsOf(objs []object) []workload {
	var ws []workload
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			ws = append(ws, workload{object: o, meta: v.Spec.Template.ObjectMeta, spec: &v.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			ws = append(ws, workload{object: o, meta: v.Spec.Template.ObjectMeta, spec: &v.Spec.Template.Spec})
		case *appsv1.DaemonSet:
			ws = append(ws, workload{object: o, meta: v.Spec.Template.ObjectMeta, spec: &v.Spec.Template.Spec})
		case *batchv1.Job:
			ws = append(ws, workload{object: o, meta: v.Spec.Template.ObjectMeta, spec: &v.Spec.Template.Spec, job: &v.Spec})
		case *batchv1.CronJob:
			js := &v.Spec.JobTemplate.Spec
			ws = append(ws, workload{object: o, meta: js.Template.ObjectMeta, spec: &js.Template.Spec, cron: v, job: js})
		case *corev1.Pod:
			ws = append(ws, workload{object: o, meta: v.ObjectMeta, spec: &v.Spec})
		}
	}
	return ws
}

// containers returns the init containers and the containers.
func (w workload) containers() []corev1.Container {
	return append(append([]corev1.Container{}, w.spec.InitContainers...), w.spec.Containers...)
}

// isKeywarden reports whether a container runs the keywarden image.
func isKeywarden(c corev1.Container) bool {
	img := c.Image
	if i := strings.IndexAny(img, "@"); i >= 0 {
		img = img[:i]
	}
	if i := strings.LastIndex(img, ":"); i > strings.LastIndex(img, "/") {
		img = img[:i]
	}
	return img == "keywarden" || strings.HasSuffix(img, "/keywarden")
}

// sidecar returns the keywarden native sidecar of a workload, if any.
func (w workload) sidecar() (corev1.Container, bool) {
	for _, c := range w.spec.InitContainers {
		if isKeywarden(c) && len(c.Args) > 0 && c.Args[0] == "sidecar" {
			return c, true
		}
	}
	return corev1.Container{}, false
}

// configPath returns the --config argument of a keywarden container.
func configPath(c corev1.Container) string {
	for i, a := range c.Args {
		switch {
		case strings.HasPrefix(a, "--config="):
			return strings.TrimPrefix(a, "--config=")
		case (a == "--config" || a == "-c") && i+1 < len(c.Args):
			return c.Args[i+1]
		}
	}
	return ""
}

// kwConfig is a keywarden config file found in a ConfigMap.
type kwConfig struct {
	source string
	cfg    *config.Config
}

// configOf finds and parses the config file a keywarden container runs with:
// its --config path, the volume mounted there, the ConfigMap of the volume.
func configOf(objs []object, w workload, c corev1.Container) (*config.Config, error) {
	p := configPath(c)
	if p == "" {
		return nil, fmt.Errorf("container %s has no --config", c.Name)
	}
	var mount *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if filepath.Dir(p) == filepath.Clean(m.MountPath) {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil {
		return nil, fmt.Errorf("container %s: nothing is mounted at %s", c.Name, filepath.Dir(p))
	}
	var vol *corev1.Volume
	for i, v := range w.spec.Volumes {
		if v.Name == mount.Name {
			vol = &w.spec.Volumes[i]
		}
	}
	if vol == nil || vol.ConfigMap == nil {
		return nil, fmt.Errorf("container %s: volume %s is not a ConfigMap", c.Name, mount.Name)
	}
	key := filepath.Base(p)
	for _, it := range vol.ConfigMap.Items {
		if it.Path == key {
			key = it.Key
		}
	}
	for _, o := range objs {
		cm, ok := o.obj.(*corev1.ConfigMap)
		if !ok || cm.Name != vol.ConfigMap.Name {
			continue
		}
		data, ok := cm.Data[key]
		if !ok {
			return nil, fmt.Errorf("ConfigMap %s has no %s", cm.Name, key)
		}
		cfg, err := config.Parse([]byte(data))
		if err != nil {
			return nil, fmt.Errorf("ConfigMap %s, %s: %w", cm.Name, key, err)
		}
		return cfg, nil
	}
	return nil, fmt.Errorf("container %s: no ConfigMap %s", c.Name, vol.ConfigMap.Name)
}

// configsOf parses every keywarden config (config.yaml) held in a ConfigMap.
func configsOf(t testing.TB, objs []object) []kwConfig {
	t.Helper()
	var out []kwConfig
	for _, o := range objs {
		cm, ok := o.obj.(*corev1.ConfigMap)
		if !ok {
			continue
		}
		data, ok := cm.Data["config.yaml"]
		if !ok {
			continue
		}
		cfg, err := config.Parse([]byte(data))
		if err != nil {
			t.Errorf("%s: %v", o, err)
			continue
		}
		out = append(out, kwConfig{source: o.String(), cfg: cfg})
	}
	return out
}

// serviceAccount returns the ServiceAccount a workload runs as.
func serviceAccount(objs []object, w workload) *corev1.ServiceAccount {
	name := w.spec.ServiceAccountName
	for _, o := range objs {
		if sa, ok := o.obj.(*corev1.ServiceAccount); ok && sa.Name == name {
			return sa
		}
	}
	return nil
}

// policiesFor returns the NetworkPolicies that select a workload's pods.
func policiesFor(objs []object, w workload) []*networkingv1.NetworkPolicy {
	var ps []*networkingv1.NetworkPolicy
	for _, o := range objs {
		np, ok := o.obj.(*networkingv1.NetworkPolicy)
		if !ok {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err == nil && sel.Matches(labels.Set(w.meta.Labels)) {
			ps = append(ps, np)
		}
	}
	return ps
}
