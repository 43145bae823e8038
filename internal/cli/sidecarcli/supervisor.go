package sidecarcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

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
// returns its exit code (128+N when signal N ended it). Signals received on
// forward are passed to the program.
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
		if err := cmd.Start(); err != nil {
			return 127, fmt.Errorf("exec: start %s: %w", s.Path, err)
		}
		s.Log.Info("exec: started", "program", s.Path, "pid", cmd.Process.Pid, "version", k.VersionID, "fingerprint", k.Fingerprint)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		restart := false
		for !restart {
			select {
			case <-done:
				return exitCode(cmd.ProcessState), nil
			case sig := <-forward:
				_ = cmd.Process.Signal(sig)
			case <-changes:
				if s.Restart {
					s.Log.Info("exec: key changed; restarting the program", "pid", cmd.Process.Pid)
					s.stop(cmd, done)
					restart = true
				} else {
					s.Log.Info("exec: key changed; signalling the program", "pid", cmd.Process.Pid, "signal", s.Signal.String())
					_ = cmd.Process.Signal(s.Signal)
				}
			case <-ctx.Done():
				s.stop(cmd, done)
				return exitCode(cmd.ProcessState), ctx.Err()
			}
		}
	}
}

// stop sends SIGTERM, waits up to Grace, then kills.
func (s *Supervisor) stop(cmd *exec.Cmd, done <-chan error) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(s.Grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.Log.Warn("exec: the program did not stop in time; killing it", "pid", cmd.Process.Pid, "grace", s.Grace)
		_ = cmd.Process.Kill()
		<-done
	}
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
