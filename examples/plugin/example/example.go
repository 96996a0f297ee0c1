// Package example is a small SSE plugin: the one the demo, the tests and
// the benchmarks put behind the gateway. Its functions are deliberately
// simple so that every result can be checked.
package example

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/ssepb"
)

// Function ids of the plugin, as listed in its capabilities.
const (
	FunctionEcho        = 0
	FunctionSumOfRows   = 1
	FunctionSumOfColumn = 2
)

// InstanceHeader is the response header in which the plugin names itself,
// so a client can see which replica served a call.
const InstanceHeader = "x-example-plugin"

// Server implements qlik.sse.Connector.
type Server struct {
	ssepb.UnimplementedConnectorServer

	// Name identifies this instance in its capabilities and in the
	// x-example-plugin response header.
	name string

	options Options
}

// Options change the plugin's behaviour, for tests and demonstrations of
// the gateway. The zero value is the plain plugin.
type Options struct {
	// Functions, when not empty, limits the capabilities to the functions
	// with these names, as a different version of a plugin would.
	Functions []string

	// Delay is added before each response to a call: each bundle or an
	// aggregation's result, like a slow plugin. The capabilities come at
	// once, so that the gateway's health probe finds the plugin healthy.
	Delay time.Duration
}

// NewServer returns a plugin that calls itself name.
func NewServer(name string) *Server {
	return &Server{name: name}
}

// NewServerWith returns a plugin with options.
func NewServerWith(name string, options Options) *Server {
	return &Server{name: name, options: options}
}

// Capabilities returns the plugin's function list.
func (s *Server) Capabilities() *ssepb.Capabilities {
	capabilities := s.allCapabilities()
	if len(s.options.Functions) == 0 {
		return capabilities
	}
	var kept []*ssepb.FunctionDefinition
	for _, function := range capabilities.Functions {
		if slices.Contains(s.options.Functions, function.GetName()) {
			kept = append(kept, function)
		}
	}
	capabilities.Functions = kept
	return capabilities
}

// ParseFunctions reads a comma-separated list of the plugin's function
// names, such as "Echo, SumOfRows", for Options.Functions. An unknown name
// is an error, since a plugin that offers nothing by mistake would look
// like a gateway fault.
func ParseFunctions(list string) ([]string, error) {
	var known []string
	for _, function := range NewServer("").allCapabilities().GetFunctions() {
		known = append(known, function.GetName())
	}
	var names []string
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("unknown function %q: the example plugin has %s", name, strings.Join(known, ", "))
		}
		names = append(names, name)
	}
	return names, nil
}

func (s *Server) allCapabilities() *ssepb.Capabilities {
	return &ssepb.Capabilities{
		AllowScript:      true,
		PluginIdentifier: s.name,
		PluginVersion:    "1.0.0",
		Functions: []*ssepb.FunctionDefinition{
			{
				FunctionId: FunctionEcho, Name: "Echo",
				FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_STRING,
				Params: []*ssepb.Parameter{{Name: "text", DataType: ssepb.DataType_STRING}},
			},
			{
				FunctionId: FunctionSumOfRows, Name: "SumOfRows",
				FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_NUMERIC,
				Params: []*ssepb.Parameter{
					{Name: "a", DataType: ssepb.DataType_NUMERIC},
					{Name: "b", DataType: ssepb.DataType_NUMERIC},
				},
			},
			{
				FunctionId: FunctionSumOfColumn, Name: "SumOfColumn",
				FunctionType: ssepb.FunctionType_AGGREGATION, ReturnType: ssepb.DataType_NUMERIC,
				Params: []*ssepb.Parameter{{Name: "column", DataType: ssepb.DataType_NUMERIC}},
			},
		},
	}
}

func (s *Server) GetCapabilities(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
	if err := grpc.SetHeader(ctx, metadata.Pairs(InstanceHeader, s.name)); err != nil {
		return nil, err
	}
	return s.Capabilities(), nil
}

// wait sleeps for the configured delay, or until the call ends.
func (s *Server) wait(ctx context.Context) error {
	if s.options.Delay <= 0 {
		return nil
	}
	timer := time.NewTimer(s.options.Delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// ExecuteFunction runs the function named by the call's function header.
func (s *Server) ExecuteFunction(stream grpc.BidiStreamingServer[ssepb.BundledRows, ssepb.BundledRows]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	header, err := ssepb.ReadFunctionRequestHeader(md)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if header == nil {
		return status.Errorf(codes.InvalidArgument, "missing %s header", ssepb.FunctionRequestHeaderKey)
	}
	if !s.offers(header.GetFunctionId()) {
		return status.Errorf(codes.Unimplemented, "unknown function id %d", header.GetFunctionId())
	}
	if err := stream.SendHeader(metadata.Pairs(InstanceHeader, s.name)); err != nil {
		return err
	}
	switch header.GetFunctionId() {
	case FunctionEcho:
		return s.mapRows(stream, func(row *ssepb.Row) *ssepb.Row { return row })
	case FunctionSumOfRows:
		return s.mapRows(stream, func(row *ssepb.Row) *ssepb.Row {
			var sum float64
			for _, dual := range row.GetDuals() {
				sum += dual.GetNumData()
			}
			return &ssepb.Row{Duals: []*ssepb.Dual{{NumData: sum}}}
		})
	case FunctionSumOfColumn:
		return s.sumColumn(stream)
	}
	return status.Errorf(codes.Unimplemented, "unknown function id %d", header.GetFunctionId())
}

// EvaluateScript returns the first parameter of each row, whatever the
// script says: enough to show that scripts, their headers and their rows
// travel intact. An aggregation (ScriptAggr...) returns one row, the
// first parameter of the first row, as Qlik expects of it.
func (s *Server) EvaluateScript(stream grpc.BidiStreamingServer[ssepb.BundledRows, ssepb.BundledRows]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	header, err := ssepb.ReadScriptRequestHeader(md)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if header == nil {
		return status.Errorf(codes.InvalidArgument, "missing %s header", ssepb.ScriptRequestHeaderKey)
	}
	if err := stream.SendHeader(metadata.Pairs(InstanceHeader, s.name)); err != nil {
		return err
	}
	firstParameter := func(row *ssepb.Row) *ssepb.Row {
		if len(row.GetDuals()) == 0 {
			return &ssepb.Row{Duals: []*ssepb.Dual{{}}}
		}
		first := row.GetDuals()[0]
		numeric := len(header.GetParams()) > 0 && header.GetParams()[0].GetDataType() == ssepb.DataType_NUMERIC
		if numeric && header.GetReturnType() == ssepb.DataType_STRING {
			// Qlik reads a string result's text only: give a number one.
			first = &ssepb.Dual{NumData: first.GetNumData(), StrData: strconv.FormatFloat(first.GetNumData(), 'g', -1, 64)}
		}
		return &ssepb.Row{Duals: []*ssepb.Dual{first}}
	}
	if header.GetFunctionType() != ssepb.FunctionType_AGGREGATION {
		return s.mapRows(stream, firstParameter)
	}
	var first *ssepb.Row
	return s.aggregate(stream, func(row *ssepb.Row) {
		if first == nil {
			first = row
		}
	}, func() *ssepb.Row { return firstParameter(first) })
}

// mapRows answers each bundle as soon as it arrives, with one output row
// per input row, as a scalar or tensor function must.
func (s *Server) mapRows(stream grpc.BidiStreamingServer[ssepb.BundledRows, ssepb.BundledRows], fn func(*ssepb.Row) *ssepb.Row) error {
	for {
		bundle, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for i, row := range bundle.GetRows() {
			bundle.Rows[i] = fn(row)
		}
		if err := s.wait(stream.Context()); err != nil {
			return err
		}
		if err := stream.Send(bundle); err != nil {
			return err
		}
	}
}

// sumColumn sums the first column over every bundle.
func (s *Server) sumColumn(stream grpc.BidiStreamingServer[ssepb.BundledRows, ssepb.BundledRows]) error {
	var sum float64
	return s.aggregate(stream, func(row *ssepb.Row) {
		if duals := row.GetDuals(); len(duals) > 0 {
			sum += duals[0].GetNumData()
		}
	}, func() *ssepb.Row { return &ssepb.Row{Duals: []*ssepb.Dual{{NumData: sum}}} })
}

// aggregate calls add with every row of every bundle, and returns the one
// row of result only after the last bundle, as an aggregation must.
func (s *Server) aggregate(stream grpc.BidiStreamingServer[ssepb.BundledRows, ssepb.BundledRows], add func(*ssepb.Row), result func() *ssepb.Row) error {
	for {
		bundle, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		for _, row := range bundle.GetRows() {
			add(row)
		}
	}
	if err := s.wait(stream.Context()); err != nil {
		return err
	}
	return stream.Send(&ssepb.BundledRows{Rows: []*ssepb.Row{result()}})
}

// offers reports whether the plugin's capabilities list the function id.
func (s *Server) offers(id int32) bool {
	for _, function := range s.Capabilities().GetFunctions() {
		if function.GetFunctionId() == id {
			return true
		}
	}
	return false
}

// String names the plugin, for logs.
func (s *Server) String() string {
	return fmt.Sprintf("example plugin %q", s.name)
}

var _ ssepb.ConnectorServer = (*Server)(nil)

// StopTimeout bounds how long Serve waits for calls in flight once ctx
// ends.
const StopTimeout = 5 * time.Second

// Serve serves on lis until ctx ends, then stops the server as Stop does,
// for up to StopTimeout, and writes to log that it is stopping and whether
// it ended calls. It returns Serve's error when serving fails first.
func Serve(ctx context.Context, server *grpc.Server, lis net.Listener, log io.Writer) error {
	served := make(chan error, 1)
	go func() { served <- server.Serve(lis) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintf(log, "stopping; waiting for calls in flight, for up to %v\n", StopTimeout)
	if !Stop(server, StopTimeout) {
		fmt.Fprintf(log, "stopped: ended the calls still in flight after %v\n", StopTimeout)
	}
	return nil
}

// Stop lets the server's calls in flight finish, for up to timeout, then
// ends the rest. gRPC's graceful stop alone would wait for as long as a
// client keeps a call open. It reports whether every call finished.
func Stop(server *grpc.Server, timeout time.Duration) bool {
	stopped := make(chan struct{})
	go func() {
		server.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-stopped:
		return true
	case <-timer.C:
		server.Stop()
		<-stopped
		return false
	}
}
