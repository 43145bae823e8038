// Command keywarden keeps LLM API keys in a secret manager, serves them from
// memory to services (sidecar proxy, file, environment) and rotates them.
// It only assembles subcommands; their logic lives in internal/ packages.
package main

import (
	"os"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/cli/rotatecli"
	"github.com/keywarden/keywarden/internal/cli/sidecarcli"
	"github.com/keywarden/keywarden/internal/cli/topcli"
	_ "github.com/keywarden/keywarden/providers/all"
)

func main() {
	root := cli.Root(sidecarcli.CheckConfig, rotatecli.CheckConfig)
	root.AddCommand(sidecarcli.Commands()...)
	root.AddCommand(rotatecli.Commands()...)
	root.AddCommand(topcli.Commands()...)
	os.Exit(cli.Main(root))
}
