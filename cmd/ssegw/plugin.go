package main

import (
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// pluginFlags are the settings of the example plugin, with the flags of
// the examples/plugin program.
type pluginFlags struct {
	address        string
	name           string
	tlsDir         string
	maxMessageSize int
	functions      string
	delay          time.Duration
}

// newPluginCommand returns the plugin command, which runs the example
// plugin in its own process. The benchmark and the container set-up start
// it this way, so that one binary contains everything they need.
func newPluginCommand() *cobra.Command {
	var flags pluginFlags
	cmd := &cobra.Command{
		Use:   "plugin",
		Short: "Run the example SSE plugin (for trials, benchmarks and tests)",
		Long: `Run the example SSE plugin: Echo (function id 0), SumOfRows (1),
SumOfColumn (2), and script evaluation that returns the first parameter
of each row, or of the first row for an aggregation.
It prints "listening on ADDRESS" once it accepts calls, so that a caller
that chose port 0 learns the port. SIGINT and SIGTERM stop it after the
calls in flight, within 5s.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPlugin(cmd, flags)
		},
	}
	cmd.Flags().StringVar(&flags.address, "address", "127.0.0.1:50055", "host:port to listen on; port 0 picks a free port")
	cmd.Flags().StringVar(&flags.name, "name", "example", "name reported in the capabilities and the x-example-plugin header")
	cmd.Flags().StringVar(&flags.tlsDir, "tls-dir", "", "folder with root_cert.pem, sse_server_cert.pem and sse_server_key.pem for mutual TLS; empty for plaintext")
	cmd.Flags().IntVar(&flags.maxMessageSize, "max-message-size", 64<<20, "largest message received and sent, in bytes")
	cmd.Flags().StringVar(&flags.functions, "functions", "", "comma-separated names of the functions to offer, such as Echo,SumOfRows; empty offers all")
	cmd.Flags().DurationVar(&flags.delay, "delay", 0, "time added before each answer to a function or script call, to act as a slow plugin; capabilities come at once")
	return cmd
}

// runPlugin serves the example plugin until a signal arrives or the
// command's context ends.
func runPlugin(cmd *cobra.Command, flags pluginFlags) error {
	if flags.maxMessageSize < 1 {
		return fmt.Errorf("invalid --max-message-size %d: give a size in bytes, such as 67108864 for 64 MiB", flags.maxMessageSize)
	}
	ctx, stopSignals := signalContext(cmd)
	defer stopSignals()

	// Build the server, with mutual TLS when a certificate folder is given.
	options := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(flags.maxMessageSize),
		grpc.MaxSendMsgSize(flags.maxMessageSize),
	}
	if flags.tlsDir != "" {
		tlsConfig, err := tlsutil.ServerFilesInDir(flags.tlsDir, "", "", "").ServerConfig()
		if err != nil {
			return fmt.Errorf("loading the plugin's certificates from %s: %w", flags.tlsDir, err)
		}
		options = append(options, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	server := grpc.NewServer(options...)
	functions, err := example.ParseFunctions(flags.functions)
	if err != nil {
		return fmt.Errorf("--functions: %w", err)
	}
	behaviour := example.Options{Delay: flags.delay, Functions: functions}
	ssepb.RegisterConnectorServer(server, example.NewServerWith(flags.name, behaviour))

	// Listen, and tell the caller where.
	lis, err := net.Listen("tcp", flags.address)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", flags.address, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "listening on %s\n", lis.Addr())

	if err := example.Serve(ctx, server, lis, cmd.ErrOrStderr()); err != nil {
		return fmt.Errorf("serving the plugin on %s: %w", lis.Addr(), err)
	}
	return nil
}
