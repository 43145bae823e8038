package memlimit

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
)

func TestFromCgroup(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	for _, tc := range []struct {
		name  string
		fs    fstest.MapFS
		limit int64
		from  string
	}{
		{"v2 at the cgroup's path", fstest.MapFS{
			"proc/self/cgroup":                          file("0::/kubepods/pod1/c1\n"),
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max": file("100663296\n"),
			"sys/fs/cgroup/memory.max":                  file("max\n"),
		}, 96 << 20, "/sys/fs/cgroup/kubepods/pod1/c1/memory.max"},
		{"v2 in the container's namespace", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("67108864\n"),
		}, 64 << 20, "/sys/fs/cgroup/memory.max"},
		{"v2 without a limit", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("max\n"),
		}, 0, "/sys/fs/cgroup/memory.max"},
		{"v1", fstest.MapFS{
			"proc/self/cgroup": file("12:pids:/a\n4:cpuacct,memory:/a/b\n0::/\n"),
			"sys/fs/cgroup/memory/a/b/memory.limit_in_bytes": file("134217728\n"),
		}, 128 << 20, "/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes"},
		{"v1 without a limit", fstest.MapFS{
			"proc/self/cgroup":                           file("4:memory:/\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("9223372036854771712\n"),
		}, 0, "/sys/fs/cgroup/memory/memory.limit_in_bytes"},
		{"unreadable values are skipped", fstest.MapFS{
			"proc/self/cgroup":                           file("0::/x\n"),
			"sys/fs/cgroup/x/memory.max":                 file("lots\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("-1\n"),
		}, 0, ""},
		{"no cgroup file system", fstest.MapFS{}, 0, ""},
		{"a path climbing out stays under the mount", fstest.MapFS{
			"proc/self/cgroup":             file("0::/../../etc\n"),
			"sys/fs/cgroup/etc/memory.max": file("1048576\n"),
		}, 1 << 20, "/sys/fs/cgroup/etc/memory.max"},
	} {
		limit, from, ok := FromCgroup(tc.fs)
		if limit != tc.limit || from != tc.from || ok != (tc.limit > 0) {
			t.Errorf("%s: got %d %q %v, want %d %q", tc.name, limit, from, ok, tc.limit, tc.from)
		}
	}
}

func TestHeadroom(t *testing.T) {
	for limit, want := range map[int64]int64{96 << 20: 32 << 20, 1 << 30: 256 << 20, 64 << 20: 32 << 20} {
		if got := Headroom(limit); got != want {
			t.Errorf("Headroom(%d MiB) = %d MiB, want %d", limit>>20, got>>20, want>>20)
		}
	}
}

// TestSetKeepsGOMEMLIMIT: the operator's GOMEMLIMIT wins.
func TestSetKeepsGOMEMLIMIT(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "123MiB")
	before := debug.SetMemoryLimit(-1)
	if msg := Set(); msg != "" || debug.SetMemoryLimit(-1) != before {
		t.Fatalf("Set with GOMEMLIMIT: %q, limit %d (was %d)", msg, debug.SetMemoryLimit(-1), before)
	}
}

// TestSetInAMemoryCgroup runs a process in a real memory cgroup (v1) of
// 96 MiB: Set gives it a soft limit of 64 MiB, as the manifests' pair.
func TestSetInAMemoryCgroup(t *testing.T) {
	if p := os.Getenv("MEMLIMIT_CGROUP_PROCS"); p != "" {
		if err := os.WriteFile(p, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			fmt.Println("join:", err)
			os.Exit(1)
		}
		msg := Set()
		fmt.Printf("limit %d\n%s\n", debug.SetMemoryLimit(-1), msg)
		os.Exit(0)
	}
	dir := ownMemoryCgroup(t)
	cg := filepath.Join(dir, fmt.Sprintf("kw-memlimit-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		unavailable(t, "create a memory cgroup: "+err.Error())
	}
	t.Cleanup(func() { os.Remove(cg) })
	if err := os.WriteFile(filepath.Join(cg, "memory.limit_in_bytes"), []byte("100663296"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSetInAMemoryCgroup$")
	cmd.Env = append(os.Environ(), "MEMLIMIT_CGROUP_PROCS="+filepath.Join(cg, "cgroup.procs"), "GOMEMLIMIT=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("limit %d\n", int64(64<<20))) || !strings.Contains(string(out), "the container's 96 MiB") {
		t.Fatalf("in a 96 MiB cgroup:\n%s", out)
	}
}

// ownMemoryCgroup returns this process's cgroup v1 memory directory.
func ownMemoryCgroup(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		unavailable(t, err.Error())
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && hasController(parts[1], "memory") {
			d := filepath.Join("/sys/fs/cgroup/memory", parts[2])
			if _, err := os.Stat(filepath.Join(d, "memory.limit_in_bytes")); err == nil {
				return d
			}
		}
	}
	unavailable(t, "no cgroup v1 memory controller")
	return ""
}

// unavailable skips, or fails under CI=true, where the machine has one.
func unavailable(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("a memory cgroup is needed under CI: %s", why)
	}
	t.Skip("no memory cgroup to test in: " + why)
}
