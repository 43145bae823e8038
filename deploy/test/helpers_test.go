package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	serializerjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// root is the repository root.
var root = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}()

// path joins elements to the repository root.
func path(elem ...string) string { return filepath.Join(append([]string{root}, elem...)...) }

// inCI reports whether the tests run in CI, where a tool that cannot be
// installed is a failure, not a reason to skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// unavailable skips the test, or fails it in CI.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatalf("%s (CI=true: a missing tool is a failure)", msg)
	}
	t.Skip(msg)
}

// result is what a command did.
type result struct {
	stdout, stderr string
	code           int
}

// run runs a command with a timeout and returns its output and exit code;
// err is set only when it could not run or was killed.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ctx.Err() == nil {
		r.code = ee.ExitCode()
		return r, nil
	}
	return r, err
}

// mustRun runs a command and fails the test unless it exits 0.
func mustRun(t testing.TB, dir string, name string, args ...string) string {
	t.Helper()
	r, err := run(context.Background(), dir, nil, name, args...)
	if err != nil || r.code != 0 {
		t.Fatalf("%s %s: exit %d, %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), r.code, err, r.stdout, r.stderr)
	}
	return r.stdout
}

// tool returns the path a scripts/install-*.sh script printed, installing the
// tool on first use (once per test binary).
func tool(t testing.TB, script string) string {
	t.Helper()
	toolsMu.Lock()
	defer toolsMu.Unlock()
	if p, ok := tools[script]; ok {
		if p == "" {
			unavailable(t, "%s failed earlier", script)
		}
		return p
	}
	start := time.Now()
	r, err := run(context.Background(), root, nil, path("scripts", script))
	if err != nil || r.code != 0 {
		tools[script] = ""
		unavailable(t, "scripts/%s: exit %d, %v\n%s", script, r.code, err, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	p := lines[len(lines)-1]
	tools[script] = p
	t.Logf("scripts/%s: %s (%v)", script, p, time.Since(start).Round(time.Millisecond))
	return p
}

var (
	toolsMu sync.Mutex
	tools   = map[string]string{}
)

// scheme knows every kind the deployment files may hold; any other kind is an
// error.
var scheme = func() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	for _, add := range []func(*k8sruntime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, networkingv1.AddToScheme,
		policyv1.AddToScheme, rbacv1.AddToScheme, autoscalingv2.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strict decodes YAML into the Kubernetes API types: unknown fields,
// duplicate fields and unknown kinds are errors.
var strict = serializerjson.NewSerializerWithOptions(serializerjson.DefaultMetaFactory, scheme, scheme,
	serializerjson.SerializerOptions{Yaml: true, Strict: true})

// object is one decoded Kubernetes object and where it came from.
type object struct {
	source string
	gvk    schema.GroupVersionKind
	obj    k8sruntime.Object
	name   string
}

func (o object) String() string { return fmt.Sprintf("%s %s (%s)", o.gvk.Kind, o.name, o.source) }

// decodeAll splits a multi-document YAML stream and decodes each document
// strictly.
func decodeAll(source string, data []byte) ([]object, error) {
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []object
	for i := 0; ; i++ {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		if isBlank(doc) {
			continue
		}
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		name := ""
		if m, ok := obj.(interface{ GetName() string }); ok {
			name = m.GetName()
		}
		objs = append(objs, object{source: source, gvk: *gvk, obj: obj, name: name})
	}
}

// isBlank reports whether a YAML document holds only comments and space.
func isBlank(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		l := strings.TrimSpace(line)
		if l != "" && !strings.HasPrefix(l, "#") && l != "---" {
			return false
		}
	}
	return true
}

// kinds counts the objects by kind.
func kinds(objs []object) map[string]int {
	m := map[string]int{}
	for _, o := range objs {
		m[o.gvk.Kind]++
	}
	return m
}
