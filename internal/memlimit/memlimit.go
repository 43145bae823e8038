// Package memlimit gives a long-running keywarden a soft memory limit
// (runtime/debug.SetMemoryLimit) from its container's when GOMEMLIMIT is
// not set: a pod spec written without it otherwise lets Go's collector
// double the heap past the container's limit in a burst (1,000 TLS
// streams opened at once), and the kernel kills the sidecar.
package memlimit

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
)

// Headroom is what the soft limit leaves below the container's for what Go
// does not count — the executable's pages, the kernel's socket buffers —
// as docs/operations.md ("Memory sizing") measured: 32 MiB, or a quarter
// of the limit when that is more.
func Headroom(limit int64) int64 { return max(32<<20, limit/4) }

// unlimited is the smallest value read as no limit (cgroup v1 writes
// 9223372036854771712 for none).
const unlimited = 1 << 60

// FromCgroup returns the memory limit of this process's cgroup, read from
// root (the root of the file system: /proc/self/cgroup and /sys/fs/cgroup
// under it), and the file it came from; ok is false when there is none.
// cgroup v2's memory.max and v1's memory.limit_in_bytes are read, at the
// cgroup's path and at the mount's root (a container's own namespace).
func FromCgroup(root fs.FS) (limit int64, from string, ok bool) {
	var cands []string
	if f, err := root.Open("proc/self/cgroup"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// hierarchy-id:controllers:path
			parts := strings.SplitN(sc.Text(), ":", 3)
			if len(parts) != 3 {
				continue
			}
			p := strings.TrimPrefix(path.Clean("/"+parts[2]), "/")
			switch {
			case parts[0] == "0" && parts[1] == "":
				cands = append(cands, path.Join("sys/fs/cgroup", p, "memory.max"))
			case hasController(parts[1], "memory"):
				cands = append(cands, path.Join("sys/fs/cgroup/memory", p, "memory.limit_in_bytes"))
			}
		}
		f.Close()
	}
	cands = append(cands, "sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes")
	for _, c := range cands {
		b, err := fs.ReadFile(root, c)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0, "/" + c, false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			continue
		}
		if n >= unlimited {
			return 0, "/" + c, false
		}
		return n, "/" + c, true
	}
	return 0, "", false
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// Set sets the soft memory limit from the container's, less Headroom,
// unless GOMEMLIMIT is set (the operator's choice wins) or no limit is
// found, and says what it did (for the log; "" when nothing). A container
// too small for the headroom gets half its limit.
func Set() string {
	if os.Getenv("GOMEMLIMIT") != "" {
		return ""
	}
	limit, from, ok := FromCgroup(os.DirFS("/"))
	if !ok {
		return ""
	}
	soft := limit - Headroom(limit)
	if soft < limit/2 {
		soft = limit / 2
	}
	debug.SetMemoryLimit(soft)
	return fmt.Sprintf("soft memory limit %d MiB: the container's %d MiB (%s) less %d MiB for the executable's pages and the kernel's buffers; set GOMEMLIMIT to choose another",
		soft>>20, limit>>20, from, (limit-soft)>>20)
}
