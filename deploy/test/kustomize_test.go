package deploytest

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/keywarden/keywarden/internal/config"
)

// kustomizations are the directories `kustomize build` renders, with the
// kinds each must produce.
var kustomizations = []struct {
	dir   string
	kinds map[string]int
}{
	// CronJobs: keywarden rotate and keywarden audit.
	{"base", map[string]int{"ConfigMap": 2, "CronJob": 2, "Deployment": 1, "NetworkPolicy": 2, "Service": 1, "ServiceAccount": 2}},
	{"overlays/development", map[string]int{"ConfigMap": 2, "CronJob": 2, "Deployment": 1, "NetworkPolicy": 3, "Service": 1, "ServiceAccount": 2}},
	// The rotator runs as a daemon in staging: only the audit CronJob.
	{"overlays/staging", map[string]int{"ConfigMap": 2, "CronJob": 1, "Deployment": 2, "NetworkPolicy": 4, "Service": 1, "ServiceAccount": 2}},
	{"overlays/production", map[string]int{"ConfigMap": 2, "CronJob": 2, "Deployment": 1, "NetworkPolicy": 4, "PodDisruptionBudget": 1, "Service": 1, "ServiceAccount": 2}},
	// Keyless: the application and its sidecar only; no rotator, no store.
	{"overlays/keyless", map[string]int{"ConfigMap": 1, "Deployment": 1, "NetworkPolicy": 1, "Service": 1, "ServiceAccount": 1}},
}

// kustomizeBuild renders a directory under deploy/kubernetes with the
// Kustomize API (what `kustomize build` and `kubectl apply -k` run) and
// decodes the result strictly. Renders are cached per test binary.
func kustomizeBuild(t testing.TB, dir string) []object {
	t.Helper()
	kzMu.Lock()
	defer kzMu.Unlock()
	if objs, ok := kzCache[dir]; ok {
		return objs
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), path("deploy", "kubernetes", dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	objs, err := decodeAll("kustomize build "+dir, out)
	if err != nil {
		t.Fatalf("strict decode: %v", err)
	}
	kzCache[dir] = objs
	return objs
}

var (
	kzMu    sync.Mutex
	kzCache = map[string][]object{}
)

// TestKustomizeBuild renders the base and every overlay and decodes every
// object strictly into the Kubernetes API types.
func TestKustomizeBuild(t *testing.T) {
	overlays, err := filepath.Glob(path("deploy", "kubernetes", "overlays", "*"))
	if err != nil || len(overlays) == 0 {
		t.Fatalf("no overlays: %v", err)
	}
	listed := map[string]bool{}
	for _, kz := range kustomizations {
		listed[kz.dir] = true
	}
	for _, o := range overlays {
		if rel := "overlays/" + filepath.Base(o); !listed[rel] {
			t.Errorf("%s is not in kustomizations: add it with the kinds it renders", rel)
		}
	}
	for _, kz := range kustomizations {
		t.Run(kz.dir, func(t *testing.T) {
			objs := kustomizeBuild(t, kz.dir)
			if got := kinds(objs); !equalCounts(got, kz.kinds) {
				t.Errorf("kinds = %v, want %v", got, kz.kinds)
			}
			t.Logf("%d objects: %v", len(objs), kinds(objs))
		})
	}
}

// TestKustomizeEnvironmentsUseDifferentKeys checks that no two overlays read
// the same store: every environment has its own key.
func TestKustomizeEnvironmentsUseDifferentKeys(t *testing.T) {
	seen := map[string]string{}
	for _, kz := range kustomizations {
		if !strings.HasPrefix(kz.dir, "overlays/") {
			continue
		}
		stores := map[string]bool{}
		for _, cfg := range configsOf(t, kustomizeBuild(t, kz.dir)) {
			for _, k := range cfg.cfg.Keys {
				stores[storeIdentity(k.Store)] = true
			}
		}
		if len(stores) == 0 {
			t.Errorf("%s: no keywarden config", kz.dir)
		}
		for s := range stores {
			if other, dup := seen[s]; dup {
				t.Errorf("%s and %s read the same key %s: give each environment its own key", other, kz.dir, s)
			}
			seen[s] = kz.dir
		}
	}
}

// storeIdentity is a store URL without its query: the secret it names.
func storeIdentity(u string) string {
	s, _, _ := strings.Cut(u, "?")
	return s
}

// TestKubernetesFiles parses every YAML file under deploy/kubernetes
// strictly, as what it is: a Kustomization or Component, Kubernetes objects,
// or a keywarden config file.
func TestKubernetesFiles(t *testing.T) {
	var files []string
	err := filepath.WalkDir(path("deploy", "kubernetes"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	counts := map[string]int{}
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var head struct {
			APIVersion string         `json:"apiVersion"`
			Kind       string         `json:"kind"`
			Keys       map[string]any `json:"keys"`
		}
		if err := yaml.Unmarshal(b, &head); err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		switch {
		case head.Kind == "Kustomization" || head.Kind == "Component":
			var k kustypes.Kustomization
			if err := yaml.UnmarshalStrict(b, &k); err != nil {
				t.Errorf("%s: %v", rel, err)
			}
			counts["kustomize"]++
		case head.APIVersion != "":
			objs, err := decodeAll(rel, b)
			if err != nil {
				t.Errorf("%v", err)
			}
			counts["objects"] += len(objs)
		case head.Keys != nil:
			if _, err := config.Parse(b); err != nil {
				t.Errorf("%s: keywarden config: %v", rel, err)
			}
			counts["configs"]++
		default:
			t.Errorf("%s: neither a Kustomization, Kubernetes objects nor a keywarden config", rel)
		}
	}
	t.Logf("%d files: %v", len(files), counts)
	if counts["kustomize"] == 0 || counts["objects"] == 0 || counts["configs"] == 0 {
		t.Errorf("found %v; want kustomizations, objects and configs", counts)
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
