// Package cli holds what keywarden's subcommands share: the root command,
// config loading with the embedded default, logging, and exit codes. Each
// way in adds its subcommands from its own package; cmd/keywarden only
// assembles them.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/version"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/rotation"
)

// Exit codes shared by every subcommand. Package rotation owns every exit
// code (0, 1 and 2 included, and its own outcomes from 10 up), so that
// `rotate` and the other commands can never disagree; these are the same
// constants under the names the other commands use.
const (
	ExitOK     = rotation.ExitOK
	ExitFailed = rotation.ExitFailed // a runtime failure: store, network, upstream
	ExitConfig = rotation.ExitConfig // bad flags, configuration or input
)

// ExitError carries an exit code out of a command.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Exit wraps err with an exit code; nil stays nil.
func Exit(code int, err error) error {
	if err == nil {
		return nil
	}
	return &ExitError{Code: code, Err: err}
}

// Root returns the root command with the version and check subcommands, and
// the --config and --log-level flags.
func Root(checks ...ConfigCheck) *cobra.Command {
	root := &cobra.Command{
		Use:           "keywarden",
		Short:         "keywarden keeps LLM API keys in a secret manager, serves them from memory and rotates them",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Every command takes --log-level and --log-format, so every
		// command checks them (with Logger's rule), whether it logs or not.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := refuseEmptyFlags(cmd); err != nil {
				return err
			}
			_, err := Logger(cmd, io.Discard)
			return err
		},
	}
	root.PersistentFlags().StringP("config", "c", "", "config file (YAML); without it, the embedded default: a local file store under $KEYWARDEN_HOME or ./.keywarden")
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().String("log-format", "text", "log format: text or json")
	root.AddCommand(versionCmd(), checkCmd(checks), putCmd())
	return root
}

// EmptyOK marks a string flag whose empty value means something (such as
// "no listener"): refuseEmptyFlags lets it be given empty.
func EmptyOK(f *pflag.Flag) {
	if f.Annotations == nil {
		f.Annotations = map[string][]string{}
	}
	f.Annotations[emptyOK] = []string{"true"}
}

const emptyOK = "keywarden_empty_ok"

// refuseEmptyFlags refuses a string flag given with an empty value
// (--key=, or --key "$KEY" with KEY unset), unless marked EmptyOK: for
// most flags empty is what leaving the flag out means, and `rotate
// --key=` would rotate every key, `--forget-left-valid=` run a rotation.
func refuseEmptyFlags(cmd *cobra.Command) error {
	var err error
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if err != nil || f.Value.Type() != "string" || f.Value.String() != "" {
			return
		}
		if _, ok := f.Annotations[emptyOK]; ok {
			return
		}
		err = Exit(ExitConfig, fmt.Errorf("--%s is empty (an unset shell variable?): give it a value, or leave it out", f.Name))
	})
	return err
}

// Main runs root with the process's arguments and returns the exit code.
func Main(root *cobra.Command) int {
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return ExitOK
	}
	// The net under "no error carries a key": whatever a command's error
	// chain quotes, a key-shaped value prints as its fingerprint.
	fmt.Fprintln(os.Stderr, "keywarden:", ErrText(err))
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	// Flag and argument errors from cobra are usage errors.
	return ExitConfig
}

// ErrText is an error's text as every command prints it, on stderr or in
// its output (tables, JSON): whatever the error chain quotes from input (a
// store URL, a path, a name), a key-shaped value prints as its
// fingerprint (providers.RedactKeys).
func ErrText(err error) string { return providers.RedactKeys(err.Error()) }

// LoadConfig loads --config, or the embedded default when it is not set.
func LoadConfig(cmd *cobra.Command) (*config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	if path == "" {
		if env := os.Getenv("KEYWARDEN_CONFIG"); env != "" {
			path = env
		}
	}
	if path != "" {
		c, err := config.Load(path)
		return c, Exit(ExitConfig, err)
	}
	c, created, err := config.Default(cmd.Context())
	if err != nil {
		return nil, Exit(ExitConfig, err)
	}
	if created {
		fmt.Fprintf(cmd.ErrOrStderr(), `keywarden: no --config given: created the embedded default store %s
keywarden: it holds key %q with a PLACEHOLDER value, not a real key. Put your key in with
keywarden:     keywarden put %s < key.txt      (reads stdin; never pass a key as an argument)
keywarden: or point --config at a config file naming your secret manager (see README).
`, config.DefaultStorePath(), config.DefaultKeyName, config.DefaultKeyName)
	}
	return c, nil
}

// Logger returns the logger selected by --log-level and --log-format,
// writing to w.
func Logger(cmd *cobra.Command, w io.Writer) (*slog.Logger, error) {
	lvl, _ := cmd.Flags().GetString("log-level")
	format, _ := cmd.Flags().GetString("log-format")
	var level slog.Level
	if err := level.UnmarshalText([]byte(lvl)); err != nil {
		return nil, Exit(ExitConfig, fmt.Errorf("--log-level %q: want debug, info, warn or error", lvl))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		opts.ReplaceAttr = durationString
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, Exit(ExitConfig, fmt.Errorf("--log-format %q: want text or json", format))
}

// durationString writes a duration as the text format does ("30s"), not
// as the JSON handler's nanoseconds (30000000000).
func durationString(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), version.String())
			return nil
		},
	}
}
