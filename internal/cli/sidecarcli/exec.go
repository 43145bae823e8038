package sidecarcli

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/proxy/settings"
)

func execCmd() *cobra.Command {
	var key, env, onChange, sig string
	cmd := &cobra.Command{
		Use:   "exec [flags] -- PROGRAM [ARGS...]",
		Short: "Run a program with the key in its environment; restart or signal it when the key changes",
		Long: `exec runs PROGRAM with the configured key in an environment variable
(ANTHROPIC_API_KEY unless --env or sidecar.exec.env says otherwise), never on its
command line. When the key changes in the store, exec restarts the program with
the new key (SIGTERM, then SIGKILL after the shutdown timeout), or with
--on-change signal sends it a signal (SIGHUP by default), for programs that
re-read their key. SIGINT, SIGTERM and SIGHUP sent to exec go to the program.
exec exits with the program's exit code.

  keywarden exec -- python app.py
  keywarden exec --key staging --on-change signal --signal SIGUSR1 -- ./server`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cli.Exit(cli.ExitConfig, errNoProgram)
			}
			c, err := cli.LoadConfig(cmd)
			if err != nil {
				return err
			}
			s := &c.Sidecar
			if cmd.Flags().Changed("key") {
				s.Exec.Key = key
			}
			if cmd.Flags().Changed("env") {
				s.Exec.Env = env
			}
			if cmd.Flags().Changed("on-change") {
				s.Exec.OnChange = onChange
			}
			if cmd.Flags().Changed("signal") {
				s.Exec.Signal = sig
			}
			if err := checkExec(c); err != nil {
				return cli.Exit(cli.ExitConfig, err)
			}
			path, err := exec.LookPath(args[0])
			if err != nil {
				return cli.Exit(127, fmt.Errorf("exec: %w", err))
			}
			lg, err := logger(cmd)
			if err != nil {
				return err
			}
			k, err := c.Key(s.ExecKey(c))
			if err != nil {
				return cli.Exit(cli.ExitConfig, err)
			}
			// The program gets the terminal's signals itself too; exec
			// forwards those sent to it alone (kill PID). Catching them,
			// and the signal a key change sends, also gives the program
			// their default disposition when exec was started with them
			// ignored (nohup): a Go program's child inherits an ignored
			// signal only while the program does not handle it, and a
			// shell cannot trap a signal ignored on entry.
			forward := make(chan os.Signal, 4)
			signal.Notify(forward, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, execSignal(s.Exec.Signal))
			defer signal.Stop(forward)
			src, err := openWaiting(cmd.Context(), k, startTimeout(s), lg, nil)
			if err != nil {
				return err
			}
			defer src.Close()
			sup := &Supervisor{
				Path: path, Args: args[1:], Env: or(s.Exec.Env, DefaultExecEnv), Source: src,
				Restart: s.Exec.OnChange != config.OnChangeSignal, Signal: execSignal(s.Exec.Signal),
				Grace: orDuration(s.Timeouts.Shutdown.D, settings.DefaultShutdownTimeout),
				Stdin: cmd.InOrStdin(), Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(), Log: lg,
			}
			dropStartupPages(lg)
			code, err := sup.Run(cmd.Context(), forward)
			if err != nil {
				return cli.Exit(cli.ExitFailed, err)
			}
			if code != 0 {
				return cli.Exit(code, fmt.Errorf("exec: %s exited with code %d", args[0], code))
			}
			return nil
		},
	}
	// Flags after the program's name are the program's, even without "--".
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVar(&key, "key", "", "key to run with (default: sidecar.exec.key, else the only key)")
	cmd.Flags().StringVar(&env, "env", "", "environment variable for the key (default ANTHROPIC_API_KEY)")
	cmd.Flags().StringVar(&onChange, "on-change", "", "restart or signal (default restart)")
	cmd.Flags().StringVar(&sig, "signal", "", "signal sent with --on-change signal (default SIGHUP)")
	return cmd
}

// DefaultExecEnv is the environment variable exec puts the key in when
// sidecar.exec.env and --env are unset.
const DefaultExecEnv = "ANTHROPIC_API_KEY"

// DefaultExecSignal is the signal sent with on_change: signal when
// sidecar.exec.signal and --signal are unset.
const DefaultExecSignal = syscall.SIGHUP

// execSignal returns the configured signal (checked at load), or
// DefaultExecSignal.
func execSignal(name string) syscall.Signal {
	if name == "" {
		return DefaultExecSignal
	}
	sig, _ := config.ParseSignal(name)
	return sig
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// checkExec validates the exec settings after the flags were applied, with
// the config's own rules.
func checkExec(c *config.Config) error {
	s := &c.Sidecar
	if s.Exec.Key == "" && c.DefaultKey() == "" && len(s.Routes) == 0 {
		return fmt.Errorf("exec: several keys (%v) and none chosen; pass --key NAME", c.Names())
	}
	// Only the exec settings are checked here: a stand-in route names the
	// key, so that a config without routes passes.
	return (&config.Sidecar{Exec: s.Exec, Routes: []config.Route{{Prefix: "/", Key: s.ExecKey(c)}}}).Validate(c)
}
