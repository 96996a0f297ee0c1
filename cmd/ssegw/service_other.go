//go:build !windows

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newServiceCommand returns the service command, which exists on Windows
// only. Elsewhere it returns an error that names the systemd unit instead.
func newServiceCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "service",
		Short:              "Install and control the Windows service (Windows only)",
		Args:               cobra.ArbitraryArgs,
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("the service command exists on Windows only; on Linux, run the gateway with the systemd unit deploy/systemd/ssegw.service (see docs/DEPLOY.md)")
		},
	}
}
