package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/gateway"
	"github.com/ssegw/ssegw/sseclient"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// Host names of the demo's engines on the shared listener. They only ever
// travel as TLS server names and :authority values; nothing resolves them.
const (
	demoHostA = "alpha.ssegw.test"
	demoHostB = "beta.ssegw.test"
)

func newDemoCommand() *cobra.Command {
	var verbose, keepRunning bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the gateway, two example plugins and Qlik-like calls on loopback",
		Long: `Run a self-contained demonstration on 127.0.0.1: make a certificate set
in a temporary folder, start two example plugins as the engines ExampleA
and ExampleB, start the gateway with mutual TLS in front of them (one port
per engine, and one shared port that routes by host name), send Qlik-like
calls through it, print what came back, and stop everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), cmd.OutOrStdout(), verbose, keepRunning)
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "show the gateway's log: its start-up, its replicas' health and a line per call")
	cmd.Flags().BoolVar(&keepRunning, "keep-running", false, "keep the gateway and plugins running after the calls, until interrupted, to look at the status page")
	return cmd
}

func runDemo(ctx context.Context, out io.Writer, verbose, keepRunning bool) error {
	if ctx == nil {
		ctx = context.Background()
	}
	// Stop on a signal at any point, so that the deferred calls remove the
	// temporary folder with its private keys. Without a handler, Go ends
	// the process at once on SIGHUP, as when the terminal closes.
	ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stopSignals()
	// A reader of the output that goes away, as with `ssegw demo | head`,
	// would end the process at the next write for the same reason. With
	// SIGPIPE caught, that write fails instead, and the demo runs to its
	// end. The signal also comes for broken connections, which the demo's
	// own calls report, so it does not stop the demo.
	brokenPipes := make(chan os.Signal, 1)
	signal.Notify(brokenPipes, syscall.SIGPIPE)
	defer signal.Stop(brokenPipes)
	callsCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	// Make the certificates: the gateway's folder and Qlik's.
	dir, err := os.MkdirTemp("", "ssegw-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	certs, err := tlsutil.WriteSet(dir, []string{"localhost", "127.0.0.1", demoHostA, demoHostB}, tlsutil.SetOptions{})
	if err != nil {
		return fmt.Errorf("making certificates: %w", err)
	}

	// Start two plaintext plugins on loopback: the "insecure plugins" that
	// the gateway secures.
	pluginA, stopA, err := startDemoPlugin("example-a")
	if err != nil {
		return err
	}
	defer stopA()
	pluginB, stopB, err := startDemoPlugin("example-b")
	if err != nil {
		return err
	}
	defer stopB()

	// Start the gateway: one mutual TLS port per engine, and one shared
	// port where the host name chooses the engine.
	serverTLS := &config.ServerTLS{Dir: certs.GatewayDir}
	cfg := &config.Config{
		Listeners: []config.Listener{
			{Address: "127.0.0.1:0", Engine: "ExampleA", TLS: serverTLS},
			{Address: "127.0.0.1:0", Engine: "ExampleB", TLS: serverTLS},
			{Address: "127.0.0.1:0", TLS: serverTLS},
		},
		Engines: map[string]*config.Engine{
			"ExampleA": {Hosts: []string{demoHostA}, Backends: []config.Backend{{Address: pluginA}}},
			"ExampleB": {Hosts: []string{demoHostB}, Backends: []config.Backend{{Address: pluginB}}},
		},
		Admin: config.Admin{Address: "127.0.0.1:0"},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("demo configuration: %w", err)
	}
	logOutput, level := io.Discard, "info"
	if verbose {
		logOutput, level = os.Stderr, "debug"
	}
	logger := gateway.NewLogger(config.Log{Level: level, Format: "text"}, logOutput)
	g, err := gateway.New(cfg, logger, gateway.Options{UserAgent: userAgent(), Version: version})
	if err != nil {
		return err
	}
	defer g.Shutdown(context.Background())
	if err := g.Start(); err != nil {
		return err
	}
	addrs := g.Addrs()
	fmt.Fprintf(out, "Plugins: example-a on %s, example-b on %s (plaintext, loopback)\n", pluginA, pluginB)
	fmt.Fprintf(out, "Gateway, mutual TLS: ExampleA on %s, ExampleB on %s, both by host name on %s\n", addrs[0], addrs[1], addrs[2])
	fmt.Fprintf(out, "Qlik's certificate folder: %s (removed when the demo ends)\n", certs.QlikDir)
	fmt.Fprintf(out, "QlikView Settings.ini line for this gateway:\n  SSEPlugin=ExampleA,%s,%s;ExampleB,%s,%s\n\n", addrs[0], certs.QlikDir, addrs[1], certs.QlikDir)

	// Call each engine as Qlik would, by port and by host name.
	targets := []struct {
		engine, address, serverName string
	}{
		{"ExampleA", addrs[0].String(), ""},
		{"ExampleB", addrs[1].String(), ""},
		{"ExampleA", addrs[2].String(), demoHostA},
		{"ExampleB", addrs[2].String(), demoHostB},
	}
	for _, target := range targets {
		if err := demoCalls(callsCtx, out, certs.QlikDir, target.engine, target.address, target.serverName); err != nil {
			if ctx.Err() != nil {
				return errors.New("the demo was stopped by a signal before its calls ended")
			}
			return fmt.Errorf("%s via %s: %w", target.engine, target.address, err)
		}
	}

	// What the gateway recorded: one span and one access log record per
	// call, with the trace id under which a tracing backend shows it.
	fmt.Fprintln(out, "The gateway's record of each call, oldest first:")
	calls := g.RecentCalls()
	slices.Reverse(calls)
	width := len("function")
	for _, call := range calls {
		width = max(width, len(call.Engine)+1+len(call.Function))
	}
	fmt.Fprintf(out, "  %-*s %8s %8s %12s  %-6s %s\n", width, "function", "rows in", "rows out", "duration", "status", "trace id")
	for _, call := range calls {
		fmt.Fprintf(out, "  %-*s %8d %8d %12v  %-6s %s\n", width, call.Engine+"."+call.Function, call.RowsIn, call.RowsOut,
			call.Duration.Round(time.Microsecond), call.Code, call.TraceID)
	}
	admin := g.AdminAddr()
	if keepRunning {
		fmt.Fprintf(out, "\nThe gateway keeps running: status page http://%s/, metrics http://%s/metrics. Press Ctrl-C to stop.\n", admin, admin)
		<-ctx.Done()
	} else {
		fmt.Fprintln(out, "\nRun with --keep-running to keep the gateway up, with its certificate folders, and see its status page and metrics.")
	}
	fmt.Fprintln(out, "\nDemo finished: every call went through the gateway and came back intact.")
	return nil
}

// demoCalls makes a GetCapabilities, an ExecuteFunction and an
// EvaluateScript call to one engine and prints what came back.
func demoCalls(ctx context.Context, out io.Writer, qlikDir, engine, address, serverName string) error {
	client, err := sseclient.Dial(address, sseclient.Options{TLSDir: qlikDir, ServerName: serverName})
	if err != nil {
		return err
	}
	defer client.Close()
	route := "port " + address
	if serverName != "" {
		route = "host " + serverName + " on " + address
	}
	fmt.Fprintf(out, "%s via %s\n", engine, route)

	// Capabilities.
	capabilities, header, err := client.Capabilities(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, function := range capabilities.GetFunctions() {
		names = append(names, function.GetName())
	}
	fmt.Fprintf(out, "  %-18s served by %-10s functions: %s; scripts allowed: %v\n",
		"GetCapabilities", servedBy(header), strings.Join(names, ", "), capabilities.GetAllowScript())

	// A scalar function over two columns.
	common := &ssepb.CommonRequestHeader{AppId: "demo-app", UserId: "demo-user", Cardinality: 3}
	rows := &ssepb.BundledRows{Rows: []*ssepb.Row{
		numericRow(1, 2), numericRow(10, 20), numericRow(0.5, 0.25),
	}}
	result, err := client.ExecuteFunction(ctx, example.FunctionSumOfRows, common, []*ssepb.BundledRows{rows})
	if err != nil {
		return err
	}
	var sums []string
	for _, row := range result.Rows() {
		sums = append(sums, fmt.Sprint(row.GetDuals()[0].GetNumData()))
	}
	fmt.Fprintf(out, "  %-18s served by %-10s [1+2 10+20 0.5+0.25] = [%s] in %v\n",
		engine+".SumOfRows", servedBy(result.Header), strings.Join(sums, " "), result.Duration.Round(time.Microsecond))

	// A script call, which the example plugin answers with its first
	// parameter.
	script := &ssepb.ScriptRequestHeader{
		Script: "args[0]", FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_STRING,
		Params: []*ssepb.Parameter{{Name: "text", DataType: ssepb.DataType_STRING}},
	}
	words := &ssepb.BundledRows{Rows: []*ssepb.Row{stringRow("hello"), stringRow("Qlik")}}
	result, err = client.EvaluateScript(ctx, script, common, []*ssepb.BundledRows{words})
	if err != nil {
		return err
	}
	var echoed []string
	for _, row := range result.Rows() {
		echoed = append(echoed, row.GetDuals()[0].GetStrData())
	}
	fmt.Fprintf(out, "  %-18s served by %-10s [hello Qlik] = [%s]\n\n", "ScriptEvalStr", servedBy(result.Header), strings.Join(echoed, " "))
	return nil
}

func startDemoPlugin(name string) (address string, stop func(), err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("starting plugin %s: %w", name, err)
	}
	server := grpc.NewServer()
	ssepb.RegisterConnectorServer(server, example.NewServer(name))
	go func() {
		if err := server.Serve(lis); err != nil {
			slog.Error("demo plugin stopped", "plugin", name, "error", err)
		}
	}()
	return lis.Addr().String(), server.Stop, nil
}

func servedBy(header map[string][]string) string {
	if values := header[example.InstanceHeader]; len(values) > 0 {
		return values[0]
	}
	return "unknown"
}

func numericRow(values ...float64) *ssepb.Row {
	row := &ssepb.Row{}
	for _, v := range values {
		row.Duals = append(row.Duals, &ssepb.Dual{NumData: v})
	}
	return row
}

func stringRow(text string) *ssepb.Row {
	return &ssepb.Row{Duals: []*ssepb.Dual{{StrData: text}}}
}
