// Command ssegw is a gateway for Qlik Server-Side Extension (SSE) traffic:
// Qlik engines connect to it instead of to their SSE plugins, and it
// forwards each call to the right plugin.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

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

// signalContext returns the command's context, which an interrupt or
// SIGTERM ends until stop is called.
func signalContext(cmd *cobra.Command) (ctx context.Context, stop context.CancelFunc) {
	ctx = cmd.Context()
	if ctx == nil {
		ctx = context.Background() // RunE called without Execute, as some tests do
	}
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "ssegw",
		Short:         "A gateway between Qlik engines and their Server-Side Extension plugins",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCommand(), newDemoCommand(), newCertsCommand(), newImportSettingsCommand(), newValidateCommand(), newBenchCommand(), newPluginCommand(), newCallCommand(), newServiceCommand(), newVersionCommand())
	rejectUnknownSubcommands(root)
	return root
}

// rejectUnknownSubcommands makes every command below root that only groups
// subcommands, such as certs, fail on an argument that names none of them.
// cobra checks this for the root alone: below it, "ssegw certs chek" would
// print the help of certs and exit 0. Without arguments, or with help,
// such a command still prints its help and exits 0.
func rejectUnknownSubcommands(root *cobra.Command) {
	for _, cmd := range root.Commands() {
		rejectUnknownSubcommands(cmd)
		if !cmd.HasSubCommands() || cmd.Runnable() {
			continue
		}
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || args[0] == "help" {
				return cmd.Help()
			}
			return unknownCommandError(cmd, args[0])
		}
	}
}

// unknownCommandError returns the error for name, an argument of cmd that
// names none of its subcommands, with the subcommands of a similar name.
func unknownCommandError(cmd *cobra.Command, name string) error {
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default
	}
	message := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	if suggestions := cmd.SuggestionsFor(name); len(suggestions) > 0 {
		return fmt.Errorf("%s; did you mean %s?", message, strings.Join(suggestions, " or "))
	}
	var names []string
	for _, sub := range cmd.Commands() {
		if sub.IsAvailableCommand() {
			names = append(names, sub.Name())
		}
	}
	return fmt.Errorf("%s; its commands are %s", message, strings.Join(names, ", "))
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
	// Go records the commit's time, not the build's.
	dateLabel := " built "
	if info, ok := debug.ReadBuildInfo(); ok && c == "" {
		for _, setting := range info.Settings {
			switch setting.Key {
			case "vcs.revision":
				c = setting.Value
			case "vcs.time":
				d, dateLabel = setting.Value, " committed "
			}
		}
	}
	text := v
	if c != "" {
		text += " commit " + c
	}
	if d != "" {
		text += dateLabel + d
	}
	return text
}

// userAgent is what the gateway sends to plugins.
func userAgent() string {
	return "ssegw/" + version
}
