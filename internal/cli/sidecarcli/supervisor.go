package sidecarcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keywarden/keywarden/providers"
)

// Supervisor runs a program with a Source's key in its environment, and on
// every change of the key restarts it with the new key, or sends it a
// signal (for programs that re-read the key, say from a file sink).
type Supervisor struct {
	// Path and Args are the program and its arguments (Args without the
	// program name).
	Path string
	Args []string
	// Env is the variable that carries the key, e.g. ANTHROPIC_API_KEY.
	Env string
	// Source supplies the key.
	Source *providers.Source
	// Restart selects restart on change; otherwise Signal is sent.
	Restart bool
	Signal  os.Signal
	// Grace is how long a program may take to stop after SIGTERM before it
	// is killed.
	Grace time.Duration
	// Stdin, Stdout and Stderr are the program's.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Log receives events; never the key.
	Log *slog.Logger
}

// Run runs the program until it exits on its own or ctx is done, and
// returns its exit code (128+N when signal N ended it). The program runs
// in a process group of its own, and every signal goes to the whole
// group, so that nothing it started keeps running with an old key: signals
// received on forward, the signal of on-change signal, and the SIGTERM and
// SIGKILL of a stop. When the program has exited, whatever is left of its
// group is killed. Except when Stdin is a terminal (a person runs exec
// by hand): the program then stays in exec's group, which the terminal
// keeps in the foreground (a program of another group that read the
// terminal would be stopped), and only the program itself is signalled. A SIGINT or SIGTERM received on forward while a restart
// stops the program ends Run with 128+N and starts no new program. Should
// the process running Run die without stopping the program (SIGKILL, the
// OOM killer), the kernel kills the program (PR_SET_PDEATHSIG); what the
// program itself started is left to it.
func (s *Supervisor) Run(ctx context.Context, forward <-chan os.Signal) (int, error) {
	changes := make(chan struct{}, 1)
	unsub := s.Source.Subscribe(func(providers.Change) {
		select {
		case changes <- struct{}{}:
		default:
		}
	})
	defer unsub()
	for {
		k := s.Source.Current()
		cmd := exec.Command(s.Path, s.Args...)
		cmd.Env = append(withoutVar(os.Environ(), s.Env), s.Env+"="+k.Value.Reveal())
		cmd.Stdin, cmd.Stdout, cmd.Stderr = s.Stdin, s.Stdout, s.Stderr
		group := !isTerminal(s.Stdin)
		// Pdeathsig: should exec itself die without stopping the program
		// (SIGKILL, the OOM killer), the kernel kills the program, which
		// would otherwise run on unsupervised with a key that the next
		// rotation revokes.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: group, Pdeathsig: syscall.SIGKILL}
		pg := target{group: group} // the program leads its group
		started := make(chan error, 1)
		done := make(chan error, 1)
		go func() {
			// The kernel sends Pdeathsig when the thread that started the
			// program ends, not the process: this goroutine keeps its
			// thread until the program is gone (Go ends a thread only when
			// a goroutine locked to it returns locked).
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if err := cmd.Start(); err != nil {
				started <- err
				return
			}
			pg.pid = cmd.Process.Pid
			started <- nil
			err := cmd.Wait()
			// The program is gone; what it left behind holds the same
			// key and goes too. The group's id cannot name another group
			// while one of its members lives.
			if pg.group {
				_ = syscall.Kill(-pg.pid, syscall.SIGKILL)
			}
			done <- err
		}()
		if err := <-started; err != nil {
			return 127, fmt.Errorf("exec: start %s: %w", s.Path, err)
		}
		s.Log.Info("exec: started", "program", s.Path, "pid", pg.pid, "version", k.VersionID, "fingerprint", k.Fingerprint)
		restart := false
		for !restart {
			select {
			case <-done:
				return exitCode(cmd.ProcessState), nil
			case sig := <-forward:
				pg.signal(sig)
			case <-changes:
				if !s.Restart {
					s.Log.Info("exec: key changed; signalling the program", "pid", pg.pid, "signal", s.Signal.String())
					pg.signal(s.Signal)
					continue
				}
				s.Log.Info("exec: key changed; restarting the program", "pid", pg.pid)
				if sig := s.stop(pg, done, forward); sig != 0 {
					s.Log.Info("exec: stopped by a signal during the restart; not starting the program again", "signal", sig.String())
					return 128 + int(sig), nil
				}
				if err := ctx.Err(); err != nil {
					return exitCode(cmd.ProcessState), err
				}
				restart = true
			case <-ctx.Done():
				s.stop(pg, done, forward)
				return exitCode(cmd.ProcessState), ctx.Err()
			}
		}
	}
}

// stop sends SIGTERM to the process group pg, waits up to Grace for its
// leader to exit (done), then kills the group. Signals received on
// forward meanwhile go to the group too; stop returns the first SIGINT or
// SIGTERM among them (0 if none), which ends exec.
func (s *Supervisor) stop(pg target, done <-chan error, forward <-chan os.Signal) syscall.Signal {
	pg.signal(syscall.SIGTERM)
	t := time.NewTimer(s.Grace)
	defer t.Stop()
	var term syscall.Signal
	for {
		select {
		case <-done:
			return term
		case sig := <-forward:
			pg.signal(sig)
			if ss, ok := sig.(syscall.Signal); ok && term == 0 && (ss == syscall.SIGINT || ss == syscall.SIGTERM) {
				term = ss
			}
		case <-t.C:
			s.Log.Warn("exec: the program did not stop in time; killing its process group", "pid", pg.pid, "grace", s.Grace)
			pg.signal(syscall.SIGKILL)
			<-done
			return term
		}
	}
}

// target is the program exec runs: with group, the leader of a process
// group of its own, every member of which is signalled.
type target struct {
	pid   int
	group bool
}

// signal sends sig to the program's group, or to the program alone.
func (t target) signal(sig os.Signal) {
	ss, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	if t.group {
		_ = syscall.Kill(-t.pid, ss)
		return
	}
	_ = syscall.Kill(t.pid, ss)
}

// isTerminal reports whether r is a terminal (a character device that
// answers a terminal's ioctl).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return 1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func withoutVar(env []string, name string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, name+"=") {
			out = append(out, e)
		}
	}
	return out
}

var errNoProgram = errors.New("exec: no program given; use keywarden exec -- PROGRAM [ARGS...]")
