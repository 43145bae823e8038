package residency

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func dropStartupPages() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("residency: %w", err)
	}
	fi, err := os.Stat("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("residency: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, errors.New("residency: /proc/self/exe: no device and inode")
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("residency: %w", err)
	}
	defer f.Close()
	spans, err := readOnlySpans(f, file{path: exe, dev: uint64(st.Dev), ino: st.Ino})
	if err != nil {
		return 0, fmt.Errorf("residency: /proc/self/maps: %w", err)
	}
	var n int64
	for _, s := range spans {
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, s.start, s.end-s.start, unix.MADV_DONTNEED); e != 0 {
			return n, fmt.Errorf("residency: madvise %#x-%#x: %w", s.start, s.end, e)
		}
		n += int64(s.end - s.start)
	}
	return n, nil
}

// file names the executable in a maps listing: by its path (as the kernel
// prints it, " (deleted)" included), or by its device and inode (on
// overlay file systems the two may name different layers, so either
// matches).
type file struct {
	path     string
	dev, ino uint64
}

// span is an address range [start, end).
type span struct{ start, end uintptr }

// readOnlySpans returns the ranges of the mappings in maps (the format of
// /proc/PID/maps) that map the file exe privately and without write
// permission. A writable or shared mapping is never one of them, whatever
// its other fields say.
func readOnlySpans(maps io.Reader, exe file) ([]span, error) {
	var out []span
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		// address perms offset dev inode [path]: the path is the rest of
		// the line after the inode's padding, and may hold spaces.
		line := sc.Text()
		var f [5]string
		rest := line
		for i := range f {
			rest = strings.TrimLeft(rest, " ")
			f[i], rest, _ = strings.Cut(rest, " ")
		}
		path := strings.TrimLeft(rest, " ")
		if perms := f[1]; len(perms) != 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
			continue
		}
		if path != exe.path && !sameFile(f[3], f[4], exe) {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || b <= a {
			continue
		}
		out = append(out, span{uintptr(a), uintptr(b)})
	}
	return out, sc.Err()
}

// sameFile reports whether a mapping's device ("major:minor", hex) and
// inode (decimal) are exe's.
func sameFile(dev, ino string, exe file) bool {
	i, err := strconv.ParseUint(ino, 10, 64)
	if err != nil || i == 0 || i != exe.ino {
		return false
	}
	maj, min, ok := strings.Cut(dev, ":")
	if !ok {
		return false
	}
	ma, err1 := strconv.ParseUint(maj, 16, 32)
	mi, err2 := strconv.ParseUint(min, 16, 32)
	return err1 == nil && err2 == nil && unix.Mkdev(uint32(ma), uint32(mi)) == exe.dev
}
