// Command ssegw is a gateway for Qlik Server-Side Extension (SSE) traffic:
// Qlik engines connect to it instead of to their SSE plugins, and it
// forwards each call to the right plugin.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
var (
	version = "dev"
	commit  = ""
	date    = ""
)

// exitError carries the exit status of a command that has already
// printed its own message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	if err := newRootCommand().Execute(); err != nil {
		var exit exitError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		fmt.Fprintf(os.Stderr, "ssegw: %v\n", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "ssegw",
		Short:         "A gateway between Qlik engines and their Server-Side Extension plugins",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCommand(), newDemoCommand(), newCertsCommand(), newImportSettingsCommand(), newValidateCommand(), newBenchCommand(), newPluginCommand(), newCallCommand(), newServiceCommand(), newVersionCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and build date",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "ssegw %s\n", versionString())
		},
	}
}

// versionString returns the stamped version, or what the Go toolchain
// recorded when the binary was built without stamps.
func versionString() string {
	v, c, d := version, commit, date
	if info, ok := debug.ReadBuildInfo(); ok && c == "" {
		for _, setting := range info.Settings {
			switch setting.Key {
			case "vcs.revision":
				c = setting.Value
			case "vcs.time":
				d = setting.Value
			}
		}
	}
	text := v
	if c != "" {
		text += " commit " + c
	}
	if d != "" {
		text += " built " + d
	}
	return text
}

// userAgent is what the gateway sends to plugins.
func userAgent() string {
	return "ssegw/" + version
}
