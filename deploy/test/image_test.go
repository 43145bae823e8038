package deploytest

import (
	"archive/tar"
	"context"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// The image's fixed layout.
const (
	imageBinary = "usr/local/bin/keywarden"
	imageCA     = "etc/ssl/certs/ca-certificates.crt"
	imageUser   = "65532:65532"
)

// TestImage builds the image with scripts/image.sh (podman, FROM scratch,
// vfs storage), then checks its configuration (non-root numeric user,
// keywarden as the entrypoint), exports a container's filesystem and checks
// that it holds only the binary and the CA certificates (no shell), and runs
// the exported binary here to print its version. Containers cannot be
// started in this sandbox (the OCI runtime's setrlimit is refused), so the
// binary runs on the host.
func TestImage(t *testing.T) {
	const version = "v0.0.0-deploytest"
	image := "localhost/keywarden:deploytest"
	podmanRoot := path(".run", "podman")
	r, err := run(context.Background(), root, []string{"VERSION=" + version, "COMMIT=deadbee", "PODMAN_ROOT=" + podmanRoot},
		path("scripts", "image.sh"), image)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case r.code == 3:
		unavailable(t, "podman: %s", strings.TrimSpace(r.stderr))
	case r.code != 0:
		t.Fatalf("scripts/image.sh: exit %d\n%s", r.code, r.stderr)
	}
	podman := func(args ...string) string {
		t.Helper()
		return mustRun(t, root, "podman", append([]string{"--storage-driver", "vfs", "--root", filepath.Join(podmanRoot, "storage"),
			"--runroot", filepath.Join(podmanRoot, "run")}, args...)...)
	}

	var inspect []struct {
		Config struct {
			User       string
			Entrypoint []string
			Cmd        []string
			Labels     map[string]string
		}
		Size int64
	}
	if err := json.Unmarshal([]byte(podman("image", "inspect", image)), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("podman image inspect: %v (%d images)", err, len(inspect))
	}
	cfg := inspect[0].Config
	if cfg.User != imageUser {
		t.Errorf("user %q, want %q", cfg.User, imageUser)
	}
	if uid, err := strconv.Atoi(strings.Split(cfg.User, ":")[0]); err != nil || uid == 0 {
		t.Errorf("user %q is not a numeric non-root user", cfg.User)
	}
	if want := []string{"/" + imageBinary}; !equalStrings(cfg.Entrypoint, want) {
		t.Errorf("entrypoint %q, want %q", cfg.Entrypoint, want)
	}
	if len(cfg.Cmd) != 0 {
		t.Errorf("cmd %q, want none", cfg.Cmd)
	}
	if cfg.Labels["org.opencontainers.image.version"] != version {
		t.Errorf("label org.opencontainers.image.version = %q, want %q", cfg.Labels["org.opencontainers.image.version"], version)
	}
	t.Logf("image %s: user %s, entrypoint %v, %d bytes", image, cfg.User, cfg.Entrypoint, inspect[0].Size)

	id := strings.TrimSpace(podman("create", image, "version"))
	defer podman("rm", id)
	dir := t.TempDir()
	tarball := filepath.Join(dir, "fs.tar")
	podman("export", "-o", tarball, id)
	files := extract(t, tarball, dir)
	var names []string
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	if want := []string{imageCA, imageBinary}; !equalStrings(names, want) {
		t.Errorf("the image's files are %q; want only %q (no shell, nothing else)", names, want)
	}
	for _, shell := range []string{"bin/sh", "bin/bash", "bin/busybox", "usr/bin/env"} {
		if _, ok := files[shell]; ok {
			t.Errorf("the image has %s", shell)
		}
	}
	if m := files[imageBinary]; m&0o111 == 0 || m&0o022 != 0 {
		t.Errorf("%s has mode %v; want executable and not writable by group or others", imageBinary, m)
	}

	bin := filepath.Join(dir, imageBinary)
	checkStatic(t, bin)
	checkCA(t, filepath.Join(dir, imageCA))
	out := mustRun(t, dir, bin, "version")
	if !strings.Contains(out, "keywarden "+version) || !strings.Contains(out, "deadbee") {
		t.Errorf("keywarden version printed %q; want the stamped version %s and commit", out, version)
	}
	t.Logf("exported binary: %s", strings.TrimSpace(out))
}

// extract unpacks regular files from a tar into dir and returns their modes
// by path; directories are left out.
func extract(t *testing.T, tarball, dir string) map[string]os.FileMode {
	t.Helper()
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string]os.FileMode{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(filepath.Clean(h.Name), "/")
		if h.Typeflag == tar.TypeDir {
			continue
		}
		files[name] = h.FileInfo().Mode()
		if h.Typeflag != tar.TypeReg || strings.Contains(name, "..") {
			continue
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, h.FileInfo().Mode().Perm())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, tr); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// checkStatic checks that a binary is a static ELF executable: no program
// interpreter and no shared libraries, so it runs on scratch.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter: not static", bin)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", bin, libs)
	}
}

// checkCA checks that the image's CA bundle is a PEM file of many
// certificates.
func checkCA(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			n++
		}
	}
	if n < 50 {
		t.Errorf("%s holds %d certificates; want a full CA bundle", file, n)
	}
}

// TestDockerfile parses deploy/container/Dockerfile with BuildKit's own
// parser (it cannot be built here: its base images need the network) and
// checks what the issue asks of it, and that the prebuilt Dockerfile that
// `make image` builds has the same runtime: user, entrypoint, base.
func TestDockerfile(t *testing.T) {
	multi := parseDockerfile(t, path("deploy", "container", "Dockerfile"))
	prebuilt := parseDockerfile(t, path("deploy", "container", "Dockerfile.prebuilt"))
	if len(multi) != 2 {
		t.Fatalf("Dockerfile has %d stages; want a build stage and a runtime stage", len(multi))
	}
	build, final := multi[0], multi[1]
	if !strings.HasPrefix(build.BaseName, "golang:") {
		t.Errorf("build stage FROM %s; want golang", build.BaseName)
	}
	var buildRun string
	for _, c := range build.Commands {
		if r, ok := c.(*instructions.RunCommand); ok {
			buildRun += strings.Join(r.CmdLine, " ") + "\n"
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-ldflags", "internal/version.Version=${VERSION}", "./cmd/keywarden"} {
		if !strings.Contains(buildRun, want) {
			t.Errorf("build stage does not build with %s", want)
		}
	}
	if !strings.HasPrefix(final.BaseName, "gcr.io/distroless/static") && final.BaseName != "scratch" {
		t.Errorf("runtime stage FROM %s; want distroless static or scratch", final.BaseName)
	}
	for _, st := range [][]instructions.Stage{multi[1:], prebuilt} {
		s := st[len(st)-1]
		user, entry := "", []string(nil)
		for _, c := range s.Commands {
			switch c := c.(type) {
			case *instructions.RunCommand:
				t.Errorf("%s: the runtime stage runs %q: it has no shell", s.Name, c.CmdLine)
			case *instructions.UserCommand:
				user = c.User
			case *instructions.EntrypointCommand:
				if !c.PrependShell {
					entry = c.CmdLine
				} else {
					t.Errorf("ENTRYPOINT in shell form needs a shell")
				}
			}
		}
		if user != imageUser {
			t.Errorf("runtime stage USER %q, want %q", user, imageUser)
		}
		if !equalStrings(entry, []string{"/" + imageBinary}) {
			t.Errorf("runtime stage ENTRYPOINT %q, want [/%s]", entry, imageBinary)
		}
	}
	if len(prebuilt) != 1 || prebuilt[0].BaseName != "scratch" {
		t.Errorf("Dockerfile.prebuilt: want one stage FROM scratch")
	}
	ignore, err := os.ReadFile(path("deploy", "container", "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatalf("Dockerfile.dockerignore: %v", err)
	}
	for _, want := range []string{".git", ".run", "bin"} {
		if !strings.Contains(string(ignore), want) {
			t.Errorf("Dockerfile.dockerignore does not leave out %s", want)
		}
	}
}

func parseDockerfile(t *testing.T, file string) []instructions.Stage {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return stages
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
