package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/gateway"
	"github.com/ssegw/ssegw/internal/gcfloor"
	"github.com/ssegw/ssegw/telemetry"
)

func newServeCommand() *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway with a configuration file",
		Long: `Run the gateway. The configuration file is YAML; every key can be
overridden by an environment variable: SSEGW_ followed by the key path in
capitals, joined by underscores, such as SSEGW_LOG_LEVEL=debug or
SSEGW_ENGINES_SSEPYTHON_REQUEST_TIMEOUT=30s.

SIGINT and SIGTERM stop the gateway after the calls in flight end, within
drain_timeout; a second signal ends them at once.`,
		Args: rejectConfigArgument,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("config") {
				if _, err := os.Stat(configFile); errors.Is(err, fs.ErrNotExist) {
					fmt.Fprintf(cmd.ErrOrStderr(), "ssegw: invalid configuration, nothing started:\n%s\n", missingDefaultConfig(configFile))
					return exitError{code: 2}
				}
			}
			return serve(cmd, configFile)
		},
	}
	cmd.Flags().StringVarP(&configFile, "config", "c", "config.yaml", "configuration file")
	return cmd
}

// serve runs the gateway until SIGINT or SIGTERM. The first signal drains
// the calls in flight, up to drain_timeout; a second one ends them at once.
func serve(cmd *cobra.Command, configFile string) error {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	run, stop := context.WithCancel(context.Background())
	defer stop()
	force, forceNow := context.WithCancelCause(context.Background())
	defer forceNow(nil)
	go func() {
		select {
		case <-signals:
		case <-run.Done():
			return
		}
		stop()
		select {
		case <-signals:
			forceNow(errors.New("a second stop signal came"))
		case <-force.Done():
		}
	}()
	return runGatewayUntil(run, force, configFile, cmd.ErrOrStderr())
}

// heapFloor is the heap size below which the gateway does not collect
// garbage, unless GOGC is set. Each call allocates a few kilobytes while
// the gateway keeps only a few megabytes live, so Go's default pacing
// collects dozens of times a second under load. In benchmark runs on two
// cores, the floor gave 20 % more small calls per second for about 30 MiB
// more resident memory (docs/PERFORMANCE.md).
const heapFloor = 32 << 20

// startHeapFloor starts the heap floor unless GOGC is set. It returns the
// floor's stop, and log attributes naming the setting that applies.
func startHeapFloor() (stop func(), collection []any) {
	// An empty GOGC is unset for Go as well.
	if gogc := os.Getenv("GOGC"); gogc != "" {
		return func() {}, []any{"gogc", gogc}
	}
	return gcfloor.Start(heapFloor).Stop, []any{"heap_floor", config.ByteSize(heapFloor).String()}
}

// runGateway runs the gateway of configFile until ctx ends, then drains
// the calls in flight, up to drain_timeout. The Windows service runs it.
func runGateway(ctx context.Context, configFile string, stderr io.Writer) error {
	return runGatewayUntil(ctx, context.Background(), configFile, stderr)
}

// runGatewayUntil is runGateway, with force ending the drain early.
func runGatewayUntil(ctx, force context.Context, configFile string, stderr io.Writer) error {
	ignoreHangup()
	cfg, err := config.Load(configFile, os.Environ())
	if err == nil {
		// The OpenTelemetry variables are configuration too: a bad one
		// must not make a service manager restart the gateway forever.
		err = telemetry.CheckEnvironment(cfg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ssegw: invalid configuration, nothing started:\n%v\n", err)
		return exitError{code: 2}
	}
	logger := gateway.NewLogger(cfg.Log, stderr)
	stopFloor, collection := startHeapFloor()
	defer stopFloor()
	if limit := debug.SetMemoryLimit(-1); limit != math.MaxInt64 {
		collection = append(collection, "memory_limit", config.ByteSize(limit).String())
	}
	logger.Info("garbage collection", collection...)

	g, err := gateway.New(cfg, logger, gateway.Options{UserAgent: userAgent(), Version: version})
	if err != nil {
		return err
	}

	// Reload on SIGHUP, and when the file changes. SIGHUP is caught from
	// before the listeners open until the gateway has stopped. One that
	// comes while the gateway starts is applied once it has started.
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	reloads := make(chan struct{}, 1)
	requestReload := func() {
		select {
		case reloads <- struct{}{}:
		default: // one is pending already
		}
	}
	defer notifyHangup(watchCtx, requestReload, func() {
		logger.Info("SIGHUP ignored: the gateway is stopping; no reload")
	})()
	if err := g.Start(); err != nil {
		g.Shutdown(context.Background())
		return err
	}
	if err := config.Watch(watchCtx, configFile, requestReload); err != nil {
		logger.Warn("the configuration file is not watched; reload with SIGHUP", "error", err.Error())
	}
	reloader := make(chan struct{})
	go func() {
		defer close(reloader)
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-reloads:
				if watchCtx.Err() != nil {
					return // select picks at random among ready cases
				}
				reload(g, logger, configFile)
			}
		}
	}()

	// Run until asked to stop, then drain, once a reload under way is done.
	<-ctx.Done()
	stopWatching()
	<-reloader
	message := "stopping; waiting for calls in flight"
	if force.Done() != nil { // not under a service manager, which has no second signal
		message += ", a second signal ends them"
	}
	drainTimeout := g.Config().DrainTimeout // as last reloaded
	logger.Info(message, "drain_timeout", drainTimeout.String())
	drainCtx, cancel := context.WithTimeoutCause(force, drainTimeout, fmt.Errorf("drain_timeout (%v) passed", drainTimeout))
	defer cancel()
	// Not drainCtx.Err(): flushing telemetry after the calls may outlast
	// drain_timeout.
	if err := g.Shutdown(drainCtx); err != nil {
		logger.Warn("the calls still in flight were ended", "reason", err.Error())
	}
	logger.Info("stopped")
	return nil
}

// reload reads the configuration file again and applies it. A file with
// problems is refused, and the running configuration stays.
func reload(g *gateway.Gateway, logger *slog.Logger, configFile string) {
	cfg, err := config.Load(configFile, os.Environ())
	if err != nil {
		logger.Error("configuration not reloaded; the running one stays", "error", oneLine(err))
		return
	}
	warnings, err := g.Reload(cfg)
	for _, warning := range warnings {
		logger.Warn("configuration change not applied until restart", "change", warning)
	}
	if err != nil {
		logger.Error("configuration not reloaded; the running one stays", "error", oneLine(err))
	}
}

// oneLine puts an error of several lines, such as a configuration's
// problems one per line, on one line for the log, whose handlers would
// show each line break as \n. The problems are separated by " | ",
// since a problem's own text may contain semicolons.
func oneLine(err error) string {
	lines := strings.Split(err.Error(), "\n")
	text := lines[0]
	for _, line := range lines[1:] {
		if strings.HasSuffix(text, ":") {
			text += " " + line
		} else {
			text += " | " + line
		}
	}
	return text
}
