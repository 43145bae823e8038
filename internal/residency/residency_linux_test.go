package residency

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestReadOnlySpans(t *testing.T) {
	const maps = `00400000-00401000 r--p 00000000 fd:01 1234    /usr/bin/keywarden
00401000-00a00000 r-xp 00001000 fd:01 1234    /usr/bin/keywarden
00a00000-00c00000 r--p 00600000 fd:01 1234    /usr/bin/keywarden
00c00000-00c10000 rw-p 00800000 fd:01 1234    /usr/bin/keywarden
00c10000-00c20000 rwxp 00810000 fd:01 1234    /usr/bin/keywarden
00c20000-00c30000 r--s 00000000 fd:01 1234    /usr/bin/keywarden
00d00000-00d10000 r-xp 00000000 fd:01 9999    /usr/lib/other.so
00e00000-00e10000 r-xp 00000000 fd:02 1234    /mnt/same inode other device
00f00000-00f10000 r-xp 00000000 00:2f 777     /usr/bin/keywarden
01000000-01010000 r-xp 00000000 00:00 0 
7ffd0000-7ffd1000 r-xp 00000000 00:00 0                          [vdso]
c000000000-c000400000 rw-p 00000000 00:00 0 
`
	got, err := readOnlySpans(strings.NewReader(maps), file{path: "/nowhere", dev: 0xfd<<8 | 1, ino: 1234})
	if err != nil {
		t.Fatal(err)
	}
	want := []span{{0x400000, 0x401000}, {0x401000, 0xa00000}, {0xa00000, 0xc00000}}
	if len(got) != len(want) {
		t.Fatalf("by device and inode: got %x, want %x", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("by device and inode: got %x, want %x", got, want)
		}
	}
	// By path (overlay file systems print another layer's device and
	// inode), a path with spaces and one deleted since it started.
	for _, path := range []string{"/usr/bin/keywarden", "/opt/my tools/keywarden (deleted)"} {
		m := strings.ReplaceAll(maps, "/usr/bin/keywarden", path)
		got, err := readOnlySpans(strings.NewReader(m), file{path: path, dev: 1, ino: 1})
		if err != nil {
			t.Fatal(err)
		}
		// The three read-only private mappings, and the one of another
		// device whose path is the executable's.
		if len(got) != 4 || got[3] != (span{0xf00000, 0xf10000}) {
			t.Errorf("by path %q: got %x", path, got)
		}
	}
}

// marker lives in the executable's data, a private writable mapping of
// the file: were it dropped, the page would be read again from the file
// and marker would be 1 again.
var marker = 1

func TestDropStartupPages(t *testing.T) {
	marker = 42
	before := rssFile(t)
	// Other goroutines run code while the pages go.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					_ = strconv.Itoa(len(strings.Repeat("x", 100)))
				}
			}
		}()
	}
	n, err := DropStartupPages()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	t.Logf("executable mappings advised: %d KiB; RssFile %d → %d KiB", n>>10, before, after)
	if n < 1<<20 {
		t.Errorf("advised %d bytes: the test binary's code alone is larger", n)
	}
	if after >= before {
		t.Errorf("RssFile %d KiB before, %d after: nothing was dropped", before, after)
	}
	if marker != 42 {
		t.Fatalf("marker = %d after dropping pages: the executable's data was dropped", marker)
	}
	// The code runs on, its pages mapped again as it goes.
	if s := strings.ToUpper("still running"); s != "STILL RUNNING" {
		t.Fatal(s)
	}
}

// rssFile returns the process's resident file pages, in KiB.
func rssFile(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
