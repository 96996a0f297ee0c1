//go:build !windows

package main

import (
	"errors"
	"slices"

	"github.com/spf13/cobra"
)

// linuxServiceHint names what takes the service command's place on Linux.
const linuxServiceHint = "on Linux, run the gateway with the systemd unit deploy/systemd/ssegw.service (see docs/DEPLOY.md)"

// newServiceCommand returns the service command, which works on Windows
// only. Elsewhere it shows the Windows help, and otherwise returns an
// error that names the systemd unit instead.
func newServiceCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "service",
		Short:              "Install and control the Windows service (Windows only)",
		Long:               "Windows only: on this system the command shows this help. Instead,\n" + linuxServiceHint + ".\n\n" + serviceLong,
		Example:            serviceExample,
		Args:               cobra.ArbitraryArgs,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if slices.Contains(args, "--help") || slices.Contains(args, "-h") {
				return cmd.Help()
			}
			return errors.New("the service command exists on Windows only; " + linuxServiceHint)
		},
	}
}
