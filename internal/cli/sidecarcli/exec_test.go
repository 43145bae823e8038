package sidecarcli_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/cli/clitest"
	"github.com/keywarden/keywarden/internal/cli/sidecarcli"
	"github.com/keywarden/keywarden/internal/tailbuf"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
)

// child is a shell program that appends "hup" to $OUT/signals on SIGHUP,
// runs until SIGTERM, and writes its key to $OUT/key.<pid> (the test
// compares it without printing it). The traps come first, so that a signal
// sent once the key is there finds them; the key is written aside and
// renamed, so that the test never reads a file created but not yet written.
const child = `trap 'echo hup >> "$OUT/signals"' HUP
trap 'exit 0' TERM
printf %s "$ANTHROPIC_API_KEY" > "$OUT/tmp.$$" && mv "$OUT/tmp.$$" "$OUT/key.$$"
while :; do sleep 0.02; done`

func keysWritten(t *testing.T, dir string) []string {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var keys []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "key.") {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			keys = append(keys, string(b))
		}
	}
	return keys
}

func supervisorSource(t *testing.T) (*providers.Source, *file.Store) {
	t.Helper()
	st := file.New(filepath.Join(t.TempDir(), "keys.json"))
	rotate(t, st, "prod", keyA)
	src, err := providers.New(context.Background(), st, "prod", providers.Options{Refresh: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src, st
}

func TestSupervisorRestartsOnChange(t *testing.T) {
	out := t.TempDir()
	t.Setenv("OUT", out)
	t.Setenv("ANTHROPIC_API_KEY", "inherited-must-be-replaced")
	src, st := supervisorSource(t)
	sup := &sidecarcli.Supervisor{Path: "/bin/sh", Args: []string{"-c", child}, Env: "ANTHROPIC_API_KEY", Source: src,
		Restart: true, Grace: 10 * time.Second, Stdout: io.Discard, Stderr: io.Discard, Log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() { c, err := sup.Run(ctx, nil); done <- result{c, err} }()
	clitest.WaitFor(t, "first program", func() bool { return len(keysWritten(t, out)) == 1 })
	if keysWritten(t, out)[0] != keyA {
		t.Fatal("the program did not get the key in its environment")
	}
	rotate(t, st, "prod", keyB)
	if _, err := src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	clitest.WaitFor(t, "restart with the new key", func() bool { return len(keysWritten(t, out)) == 2 })
	got := keysWritten(t, out)
	if !(got[0] == keyA && got[1] == keyB || got[0] == keyB && got[1] == keyA) {
		t.Fatal("the restarted program did not get the new key")
	}
	cancel()
	r := <-done
	if !errors.Is(r.err, context.Canceled) || r.code != 0 {
		t.Fatalf("after cancel: code %d err %v", r.code, r.err)
	}
}

func TestSupervisorSignalsOnChange(t *testing.T) {
	out := t.TempDir()
	t.Setenv("OUT", out)
	// As the exec command does (signal.Notify before the Supervisor runs):
	// a program inherits a signal this process ignores (go test started
	// under nohup), and a shell cannot trap a signal ignored on entry.
	catchHUP(t)
	src, st := supervisorSource(t)
	sup := &sidecarcli.Supervisor{Path: "/bin/sh", Args: []string{"-c", child}, Env: "ANTHROPIC_API_KEY", Source: src,
		Signal: syscall.SIGHUP, Grace: 10 * time.Second, Stdout: io.Discard, Stderr: io.Discard, Log: slog.New(slog.DiscardHandler)}
	forward := make(chan os.Signal, 1)
	done := make(chan int, 1)
	go func() { c, _ := sup.Run(context.Background(), forward); done <- c }()
	clitest.WaitFor(t, "program", func() bool { return len(keysWritten(t, out)) == 1 })
	rotate(t, st, "prod", keyB)
	if _, err := src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	clitest.WaitFor(t, "SIGHUP", func() bool { b, _ := os.ReadFile(filepath.Join(out, "signals")); return string(b) == "hup\n" })
	if n := len(keysWritten(t, out)); n != 1 {
		t.Fatalf("%d programs started, want 1 (signal, not restart)", n)
	}
	// A signal sent to exec goes to the program; it exits 0 on SIGTERM.
	forward <- syscall.SIGTERM
	if c := <-done; c != 0 {
		t.Fatalf("exit code %d", c)
	}
}

// catchHUP has this process catch SIGHUP for the test, so that a program
// it starts gets SIGHUP's default disposition, not an inherited SIG_IGN.
func catchHUP(t *testing.T) {
	t.Helper()
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGHUP)
	t.Cleanup(func() { signal.Stop(c) })
}

// TestExecSignalsUnderNohup: `keywarden exec --on-change signal` started
// with its signal ignored (nohup for SIGHUP; an init system or a parent
// for another) still reaches a program that traps it when the key
// changes: the program does not inherit the ignored signal, which a shell
// could not trap.
func TestExecSignalsUnderNohup(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		name string // for --signal and the shell's trap
	}{{syscall.SIGHUP, "HUP"}, {syscall.SIGUSR1, "USR1"}} {
		t.Run(tc.name, func(t *testing.T) { execSignalIgnored(t, tc.sig, tc.name) })
	}
}

func execSignalIgnored(t *testing.T, sig syscall.Signal, name string) {
	signal.Ignore(sig)
	t.Cleanup(func() { signal.Reset(sig) })
	if !signal.Ignored(sig) {
		t.Fatalf("%s is not ignored: the test cannot set up nohup's state", name)
	}
	dir := t.TempDir()
	t.Setenv("OUT", dir)
	store := filepath.Join(dir, "keys.json")
	st := file.New(store)
	rotate(t, st, "prod", keyA)
	cfg := filepath.Join(dir, "kw.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
keys:
  prod: {store: "file:%s?name=prod&refresh=1s&jitter=100ms"}
sidecar: {listen: "", metrics_listen: "off"}
`, store)), 0o600)
	type result struct {
		out *tailbuf.Buffer
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := run(t, "exec", "--config", cfg, "--on-change", "signal", "--signal", "SIG"+name, "--", "sh", "-c",
			`trap 'echo hup >> "$OUT/signals"; exit 0' `+name+`; : > "$OUT/ready"; while :; do sleep 0.02; done`)
		done <- result{out, err}
	}()
	clitest.WaitFor(t, "program", func() bool { _, err := os.Stat(filepath.Join(dir, "ready")); return err == nil })
	rotate(t, st, "prod", keyB)
	clitest.WaitFor(t, name+" trapped by the program", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "signals"))
		return string(b) == "hup\n"
	})
	// The program exits 0 from its trap; exec ends with it.
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("exec: %v\n%s", r.err, r.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("exec did not end with its program")
	}
}

func TestExecCommandExitCode(t *testing.T) {
	t.Setenv("KEYWARDEN_HOME", t.TempDir())
	t.Setenv("KEYWARDEN_CONFIG", "")
	out, err := run(t, "exec", "--", "sh", "-c", `case "$ANTHROPIC_API_KEY" in sk-ant-api03-placeholder-*) exit 3;; esac; exit 4`)
	var ee *cli.ExitError
	if !errors.As(err, &ee) || ee.Code != 3 {
		t.Fatalf("got %v, want exit code 3 (the program saw the key)\n%s", err, out)
	}
	// Without "--", the program's own flags stay the program's.
	if _, err := run(t, "exec", "sh", "-c", `test -n "$ANTHROPIC_API_KEY"`); err != nil {
		t.Fatalf("program flags without --: %v", err)
	}
	t.Setenv("ANTHROPIC_API_KEY", "")
	if _, err := run(t, "exec", "--env", "MY_KEY", "--", "sh", "-c", `test -n "$MY_KEY" && test -z "$ANTHROPIC_API_KEY"`); err != nil {
		t.Fatalf("--env: %v", err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"exec"}, cli.ExitConfig, "no program given"},
		{[]string{"exec", "--on-change", "reload", "--", "true"}, cli.ExitConfig, "on_change"},
		{[]string{"exec", "--signal", "SIGFOO", "--", "true"}, cli.ExitConfig, "unknown signal"},
		{[]string{"exec", "--key", "nope", "--", "true"}, cli.ExitConfig, `no key named "nope"`},
		{[]string{"exec", "--", "/no/such/program"}, 127, "no/such/program"},
	} {
		_, err := run(t, tc.args...)
		var ee *cli.ExitError
		if !errors.As(err, &ee) || ee.Code != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want code %d and %q", tc.args, err, tc.code, tc.want)
		}
	}
}

// groupChild starts a background sleep, records "PID SLEEPPID" in
// $OUT/pids.<pid> and waits: the shape of `sh -c 'sleep 1000; echo after'`
// whose sleep outlived a restart with the old key. With trap set, SIGTERM
// is noted in $OUT/signals and ignored.
func groupChild(trap bool) string {
	s := `sleep 1000 & printf '%s %s' "$$" "$!" > "$OUT/tmp.$$" && mv "$OUT/tmp.$$" "$OUT/pids.$$"
`
	if trap {
		return `trap 'echo term >> "$OUT/signals"' TERM
` + s + `while :; do sleep 0.02; done`
	}
	return s + `wait`
}

// started returns the pids files' process ids: each program and its sleep.
func started(t *testing.T, dir string) (pids [][2]int) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "pids.") {
			var p [2]int
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			if _, err := fmt.Sscan(string(b), &p[0], &p[1]); err != nil {
				t.Fatal(err)
			}
			pids = append(pids, p)
		}
	}
	return pids
}

// groupAlive returns the live (not zombie) processes of group pg, from /proc.
func groupAlive(pg int) []int {
	var live []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pg) {
			live = append(live, pid)
		}
	}
	return live
}

// checkGroupGone fails when a process of the program's group, or its
// sleep, still runs; it kills them so that a failing run leaks nothing.
func checkGroupGone(t *testing.T, p [2]int) {
	t.Helper()
	clitest.WaitFor(t, "the old program's process group to end", func() bool { return len(groupAlive(p[0])) == 0 && !alive(p[1]) })
}

// alive reports whether pid runs (exists and is no zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func killLeftovers(t *testing.T, out string) {
	t.Cleanup(func() {
		for _, p := range started(t, out) {
			_ = syscall.Kill(p[1], syscall.SIGKILL)
			_ = syscall.Kill(-p[0], syscall.SIGKILL)
		}
	})
}

// The tests below leave Stdout and Stderr nil (/dev/null): with a pipe, a
// leftover sleep would hold it open and Run's Wait would hang instead of
// the test failing.

// A restart and exec's own end leave no process of the old program's
// group running: the child the program started goes with it.
func TestSupervisorStopsTheWholeGroup(t *testing.T) {
	for _, how := range []string{"restart", "forwarded SIGTERM", "cancel"} {
		t.Run(how, func(t *testing.T) {
			out := t.TempDir()
			t.Setenv("OUT", out)
			killLeftovers(t, out)
			src, st := supervisorSource(t)
			sup := &sidecarcli.Supervisor{Path: "/bin/sh", Args: []string{"-c", groupChild(false)}, Env: "ANTHROPIC_API_KEY", Source: src,
				Restart: true, Grace: 10 * time.Second, Log: slog.New(slog.DiscardHandler)}
			forward, done, cancel := runSupervisor(t, sup)
			clitest.WaitFor(t, "first program", func() bool { return len(started(t, out)) == 1 })
			first := started(t, out)[0]
			switch how {
			case "restart":
				rotate(t, st, "prod", keyB)
				if _, err := src.Refresh(context.Background()); err != nil {
					t.Fatal(err)
				}
				clitest.WaitFor(t, "restart", func() bool { return len(started(t, out)) == 2 })
				checkGroupGone(t, first)
				cancel()
				<-done
			case "forwarded SIGTERM":
				forward <- syscall.SIGTERM
				if c := <-done; c != 128+int(syscall.SIGTERM) {
					t.Fatalf("exit code %d, want %d", c, 128+int(syscall.SIGTERM))
				}
			case "cancel":
				cancel()
				<-done
			}
			for _, p := range started(t, out) {
				checkGroupGone(t, p)
			}
		})
	}
}

// A SIGTERM sent to exec while a restart waits for the old program to
// stop ends exec with 128+15; no new program starts.
func TestSupervisorSignalDuringRestart(t *testing.T) {
	out := t.TempDir()
	t.Setenv("OUT", out)
	killLeftovers(t, out)
	src, st := supervisorSource(t)
	// Starts are counted in the log: a program signalled at once may die
	// before it writes anything.
	logs := &tailbuf.Buffer{}
	sup := &sidecarcli.Supervisor{Path: "/bin/sh", Args: []string{"-c", groupChild(true)}, Env: "ANTHROPIC_API_KEY", Source: src,
		Restart: true, Grace: time.Second, Log: slog.New(slog.NewTextHandler(logs, nil))}
	forward, done, cancel := runSupervisor(t, sup)
	clitest.WaitFor(t, "first program", func() bool { return len(started(t, out)) == 1 })
	rotate(t, st, "prod", keyB)
	if _, err := src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	clitest.WaitFor(t, "the restart's SIGTERM", func() bool { b, _ := os.ReadFile(filepath.Join(out, "signals")); return len(b) > 0 })
	forward <- syscall.SIGTERM
	select {
	case c := <-done:
		if c != 128+int(syscall.SIGTERM) {
			t.Fatalf("exit code %d, want %d", c, 128+int(syscall.SIGTERM))
		}
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Fatalf("exec kept running after SIGTERM during a restart; %d programs started", len(started(t, out)))
	}
	if n := strings.Count(logs.String(), "exec: started"); n != 1 {
		t.Fatalf("%d programs started, want 1:\n%s", n, logs)
	}
	checkGroupGone(t, started(t, out)[0])
}

// runSupervisor runs sup in the background: the channel of signals it
// forwards, the channel of its exit code, and the cancel of its context.
func runSupervisor(t *testing.T, sup *sidecarcli.Supervisor) (chan os.Signal, chan int, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	forward := make(chan os.Signal, 1)
	done := make(chan int, 1)
	go func() { c, _ := sup.Run(ctx, forward); done <- c }()
	return forward, done, cancel
}

// TestSupervisorTerminalKeepsGroup: run by hand at a terminal, the program
// stays in exec's process group, which the terminal keeps in the
// foreground (in a group of its own, a program reading the terminal would
// be stopped by SIGTTIN). A pseudo-terminal stands in for the terminal.
func TestSupervisorTerminalKeepsGroup(t *testing.T) {
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	defer ptm.Close()
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pts.Close()
	out := t.TempDir()
	t.Setenv("OUT", out)
	src, _ := supervisorSource(t)
	sup := &sidecarcli.Supervisor{Path: "/bin/sh", Args: []string{"-c", groupChild(false)}, Env: "ANTHROPIC_API_KEY", Source: src,
		Restart: true, Grace: 10 * time.Second, Stdin: pts, Log: slog.New(slog.DiscardHandler)}
	_, done, cancel := runSupervisor(t, sup)
	clitest.WaitFor(t, "the program", func() bool { return len(started(t, out)) == 1 })
	p := started(t, out)[0]
	pg, err := syscall.Getpgid(p[0])
	if err != nil {
		t.Fatal(err)
	}
	if pg != syscall.Getpgrp() {
		t.Errorf("at a terminal the program runs in group %d, not exec's %d", pg, syscall.Getpgrp())
	}
	cancel()
	<-done
	syscall.Kill(p[1], syscall.SIGKILL) // its background sleep: only the program itself is stopped here
}

// TestSupervisorKilledTakesTheProgram: a process running the supervisor
// killed with SIGKILL (as the OOM killer does; a real exit, in a child
// process) takes its program with it: the program ran on, unsupervised,
// with a key the next rotation would revoke.
func TestSupervisorKilledTakesTheProgram(t *testing.T) {
	const envChild = "KEYWARDEN_TEST_SUPERVISOR_CHILD"
	if os.Getenv(envChild) != "" {
		src, _ := supervisorSource(t)
		sup := &sidecarcli.Supervisor{Path: "/bin/sh", Args: []string{"-c", groupChild(false)}, Env: "ANTHROPIC_API_KEY", Source: src,
			Restart: true, Grace: 10 * time.Second, Log: slog.New(slog.DiscardHandler)}
		// Goroutines end threads while the program runs, as a program
		// using runtime.LockOSThread may: the program must outlive them
		// (Pdeathsig follows the thread that started it, not the process).
		go func() {
			for range 400 {
				time.Sleep(2 * time.Millisecond)
				go func() {
					runtime.LockOSThread()
					time.Sleep(time.Millisecond)
				}()
			}
		}()
		_, _ = sup.Run(context.Background(), nil)
		os.Exit(0)
	}
	out := t.TempDir()
	t.Setenv("OUT", out)
	killLeftovers(t, out)
	cmd := exec.Command(os.Args[0], "-test.run=^TestSupervisorKilledTakesTheProgram$", "-test.count=1")
	// The child is killed before its own cleanup: its temporary
	// directories go in this test's, which is removed.
	cmd.Env = append(os.Environ(), envChild+"=1", "TMPDIR="+t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	clitest.WaitFor(t, "the program", func() bool { return len(started(t, out)) == 1 })
	p := started(t, out)[0]
	time.Sleep(time.Second) // while the child ends threads
	if !alive(p[0]) {
		t.Fatalf("the program %d ended before its supervisor was killed", p[0])
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-waited
	clitest.WaitFor(t, "the program to die with its supervisor", func() bool { return !alive(p[0]) })
}
