package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ssegw/ssegw/bench"
	"github.com/ssegw/ssegw/bench/grpcproxy"
	"github.com/ssegw/ssegw/bench/h2relay"
	"github.com/ssegw/ssegw/config"
)

func newBenchCommand() *cobra.Command {
	opts := bench.Options{}
	var quick bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Compare the gateway with a direct connection, other proxies and relays on loopback",
		Long: `Measure Qlik-like workloads against several targets in one run, all
started by the benchmark on 127.0.0.1 in front of one example plugin:

  direct         the plugin itself
  ssegw          the gateway, plaintext
  ssegw-mtls     the gateway with mutual TLS towards the client
  ssegw-tracing  the gateway tracing every call to an OTLP receiver
  nginx          nginx grpc_pass (skipped when nginx is not installed)
  haproxy        HAProxy in HTTP/2 mode (skipped when not installed)
  tcp-relay      HAProxy in TCP mode (skipped when not installed): a byte
                 pump that reads no HTTP/2, as a reference for what any
                 process in the path costs
  go-h2-relay    a bare HTTP/2 relay in Go (ssegw bench go-h2-relay),
                 without grpc-go and without any of the gateway's
                 features, as a reference for what a Go process costs that
                 ends each stream and relays its frames
  grpc-proxy     github.com/mwitkow/grpc-proxy on grpc-go (ssegw bench
                 grpc-proxy), without any of the gateway's features, as a
                 reference for what grpc-go's two sides cost a proxy

Workloads: small (many small SumOfRows calls), large (Echo calls of many
large bundles, sent and read at once), sweep (small calls at rising
concurrency, with each target's resident memory), memory (resident memory
of fresh targets under small and under large calls).

Runs are interleaved: each round runs every target once, so that drift of
the machine's speed affects all alike. The tables give medians over the
rounds and each target's ratio to the direct connection. A target that
stalls or fails is reported and left out of the rest of that workload.
Ctrl-C stops every process the benchmark started.

A full run took four to five minutes on a 2-core machine, and --quick
under a minute.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if quick {
				if !cmd.Flags().Changed("duration") {
					opts.Duration = bench.QuickDuration
				}
				if !cmd.Flags().Changed("rounds") {
					opts.Rounds = bench.QuickRounds
				}
				if !cmd.Flags().Changed("call-timeout") {
					opts.CallTimeout = bench.QuickCallTimeout
				}
				if !cmd.Flags().Changed("large-bundles") {
					opts.LargeBundles = bench.QuickLargeBundles
				}
				if !cmd.Flags().Changed("memory-bundles") {
					opts.MemoryBundles = bench.QuickMemoryBundles
				}
			}
			return runBench(cmd, opts)
		},
	}
	flags := cmd.Flags()
	flags.BoolVar(&quick, "quick", false, "for a first look: one round of 200 ms runs, large calls of 40 bundles, memory calls of 2, a 5s call deadline; flags given explicitly still apply")
	flags.StringSliceVar(&opts.Targets, "targets", bench.AllTargets, "targets to measure, comma-separated")
	flags.StringSliceVar(&opts.Workloads, "workloads", bench.AllWorkloads, "workloads to run, comma-separated")
	flags.DurationVar(&opts.Duration, "duration", bench.DefaultDuration, "measuring window of each run")
	flags.IntVar(&opts.Rounds, "rounds", bench.DefaultRounds, "rounds per setting; the tables give the median")
	flags.DurationVar(&opts.CallTimeout, "call-timeout", bench.DefaultCallTimeout, "deadline of every call; a call that reaches it counts as a stall")
	flags.IntVar(&opts.Concurrency, "concurrency", bench.DefaultConcurrency, "concurrent callers of the small workload")
	flags.IntVar(&opts.SmallRows, "small-rows", bench.DefaultSmallRows, "rows in a small call's one bundle")
	flags.IntVar(&opts.LargeConcurrency, "large-concurrency", bench.DefaultLargeConcurrency, "concurrent callers of the large workload")
	flags.IntVar(&opts.LargeBundles, "large-bundles", bench.DefaultLargeBundles, "bundles in a large call")
	flags.IntVar(&opts.LargeRows, "large-rows", bench.DefaultLargeRows, "rows in a large call's bundle")
	flags.IntSliceVar(&opts.Levels, "levels", bench.DefaultLevels, "concurrent streams at each step of the sweep")
	flags.IntVar(&opts.MemoryConcurrency, "memory-concurrency", bench.DefaultMemoryConcurrency, "concurrent callers of the memory workload")
	flags.IntVar(&opts.MemoryBundles, "memory-bundles", bench.DefaultMemoryBundles, "bundles in a large call of the memory workload")
	flags.BoolVar(&opts.AccessLog, "access-log", false, "turn the gateways' access log on, one record per call")
	flags.BoolVar(&opts.Pprof, "pprof", false, "serve Go's profiles on each gateway's admin listener, whose address the progress lines give")
	flags.StringVar(&opts.OutDir, "out", "", "folder for bench.md and the SVG plots; empty writes only the tables to stdout")
	cmd.AddCommand(newBenchRelayCommand(), newBenchGRPCProxyCommand())
	return cmd
}

// benchReference is a reference target of the benchmark: a server in
// front of one plugin, which the benchmark measures as a process of its
// own.
type benchReference interface {
	Serve(lis net.Listener) error
	Close()
}

// newBenchRelayCommand returns the command that runs the go-h2-relay
// target.
func newBenchRelayCommand() *cobra.Command {
	return newBenchReferenceCommand(bench.TargetGoH2Relay,
		"Relay cleartext HTTP/2 calls to one plugin: the benchmark's go-h2-relay target",
		`Relay cleartext HTTP/2 calls (gRPC without TLS) from --listen to the plugin
at --backend, with none of the gateway's features.`,
		func(backend string, limits config.Limits, logger *slog.Logger) (benchReference, error) {
			return h2relay.New(backend, h2relay.Options{
				StreamWindow: int32(limits.StreamWindow),
				ConnWindow:   int32(limits.ConnWindow()),
				Logger:       logger,
			}), nil
		})
}

// newBenchGRPCProxyCommand returns the command that runs the grpc-proxy
// target.
func newBenchGRPCProxyCommand() *cobra.Command {
	return newBenchReferenceCommand(bench.TargetGRPCProxy,
		"Proxy gRPC calls to one plugin with grpc-proxy: the benchmark's grpc-proxy target",
		`Proxy gRPC calls in plaintext from --listen to the plugin at --backend
with github.com/mwitkow/grpc-proxy on grpc-go, with none of the gateway's
features.`,
		func(backend string, limits config.Limits, _ *slog.Logger) (benchReference, error) {
			return grpcproxy.New(backend, grpcproxy.Options{
				StreamWindow:   int32(limits.StreamWindow),
				ConnWindow:     int32(limits.ConnWindow()),
				MaxMessageSize: int(config.DefaultMaxMessageSize),
			})
		})
}

// newBenchReferenceCommand returns the command that runs a reference
// target. It is hidden: it serves the benchmark and nothing else. Its help
// begins with doing, a paragraph on what the target does with a call.
//
// A target runs with the gateway's default flow-control windows, which
// start gets in limits, and the gateway's heap floor, so that its CPU
// and memory compare with the gateway's.
func newBenchReferenceCommand(name, short, doing string, start func(backend string, limits config.Limits, logger *slog.Logger) (benchReference, error)) *cobra.Command {
	var listen, backend string
	cmd := &cobra.Command{
		Use:   name,
		Short: short,
		Long: doing + `

ssegw bench runs it as its ` + name + ` target. It prints "listening on
ADDRESS" once bound. It has no TLS and no access control, so it listens
on a loopback address only.`,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkReferenceAddresses(listen, backend); err != nil {
				return err
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			stopFloor, _ := startHeapFloor()
			defer stopFloor()
			server, err := start(backend, config.Limits{StreamWindow: config.DefaultStreamWindow}, logger)
			if err != nil {
				return err
			}
			lis, err := net.Listen("tcp", listen)
			if err != nil {
				server.Close()
				return fmt.Errorf("--listen %s: %w", listen, err)
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			stopListening := context.AfterFunc(ctx, func() { lis.Close() })
			defer stopListening()
			fmt.Fprintf(cmd.OutOrStdout(), "listening on %s\n", lis.Addr())

			err = server.Serve(lis)
			// A second signal while the connections close ends the
			// process at once.
			stop()
			server.Close()
			if ctx.Err() != nil {
				return nil // stopped by a signal
			}
			return err
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "loopback host:port to listen on; port 0 picks a free one")
	cmd.Flags().StringVar(&backend, "backend", "", "the plugin's host:port (required)")
	return cmd
}

// checkReferenceAddresses checks a reference target's flags before it
// binds anything.
func checkReferenceAddresses(listen, backend string) error {
	if backend == "" {
		return errors.New("--backend is required: the plugin's host:port")
	}
	if _, _, err := net.SplitHostPort(backend); err != nil {
		return fmt.Errorf("--backend %q is not a host:port: %w", backend, err)
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return fmt.Errorf("--listen %q is not a host:port: %w", listen, err)
	}
	if !config.IsLoopbackAddress(listen) {
		return fmt.Errorf("--listen %q is not a loopback address: it has no TLS and no access control, so give 127.0.0.1:PORT or [::1]:PORT", listen)
	}
	return nil
}

// runBench runs the benchmark until it ends or a signal interrupts it.
// Either way, every process it started is stopped before it returns.
func runBench(cmd *cobra.Command, opts bench.Options) error {
	ctx, stop := signalContext(cmd)
	defer stop()

	opts.Version = versionString()
	opts.Out = cmd.OutOrStdout()
	opts.Progress = cmd.ErrOrStderr()
	opts.Targets = trimAll(opts.Targets)
	opts.Workloads = trimAll(opts.Workloads)
	err := bench.Run(ctx, opts)
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return errors.New("benchmark interrupted; every process it started was stopped")
	}
	if err != nil {
		return fmt.Errorf("benchmark: %w", err)
	}
	return nil
}

// trimAll removes the spaces around each name of a comma-separated list,
// and the names left empty.
func trimAll(names []string) []string {
	trimmed := make([]string, 0, len(names))
	for _, name := range names {
		if name = strings.TrimSpace(name); name != "" {
			trimmed = append(trimmed, name)
		}
	}
	return trimmed
}
