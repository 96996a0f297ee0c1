package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/gateway"
)

// drainTimeout bounds how long a stopping gateway waits for calls in flight.
const drainTimeout = 30 * time.Second

func newServeCommand() *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway with a configuration file",
		Long: `Run the gateway. The configuration file is YAML; every key can be
overridden by an environment variable: SSEGW_ followed by the key path in
capitals, joined by underscores, such as SSEGW_LOG_LEVEL=debug or
SSEGW_ENGINES_SSEPYTHON_REQUEST_TIMEOUT=30s.

SIGINT and SIGTERM stop the gateway after the calls in flight end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd, configFile)
		},
	}
	cmd.Flags().StringVarP(&configFile, "config", "c", "config.yaml", "configuration file")
	return cmd
}

func serve(cmd *cobra.Command, configFile string) error {
	cfg, err := config.Load(configFile, os.Environ())
	if err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "ssegw: invalid configuration, nothing started:\n%v\n", err)
		return exitError{code: 2}
	}
	logger := gateway.NewLogger(cfg.Log, cmd.ErrOrStderr())

	g, err := gateway.New(cfg, logger, gateway.Options{UserAgent: userAgent()})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := g.Start(); err != nil {
		g.Shutdown(context.Background())
		return err
	}

	<-ctx.Done()
	logger.Info("stopping; waiting for calls in flight", "drain_timeout", drainTimeout)
	drainCtx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	g.Shutdown(drainCtx)
	logger.Info("stopped")
	return nil
}
