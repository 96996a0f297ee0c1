// Package example is a small SSE plugin: the one the demo, the tests and
// the benchmarks put behind the gateway. Its functions are deliberately
// simple so that every result can be checked.
package example

import (
	"context"
	"errors"
	"fmt"
	"io"

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
}

// NewServer returns a plugin that calls itself name.
func NewServer(name string) *Server {
	return &Server{name: name}
}

// Capabilities returns the plugin's function list.
func (s *Server) Capabilities() *ssepb.Capabilities {
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
	if err := stream.SendHeader(metadata.Pairs(InstanceHeader, s.name)); err != nil {
		return err
	}
	switch header.GetFunctionId() {
	case FunctionEcho:
		return mapRows(stream, func(row *ssepb.Row) *ssepb.Row { return row })
	case FunctionSumOfRows:
		return mapRows(stream, func(row *ssepb.Row) *ssepb.Row {
			var sum float64
			for _, dual := range row.GetDuals() {
				sum += dual.GetNumData()
			}
			return &ssepb.Row{Duals: []*ssepb.Dual{{NumData: sum}}}
		})
	case FunctionSumOfColumn:
		return sumColumn(stream)
	}
	return status.Errorf(codes.Unimplemented, "unknown function id %d", header.GetFunctionId())
}

// EvaluateScript returns the first parameter of each row, whatever the
// script says: enough to show that scripts, their headers and their rows
// travel intact.
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
	return mapRows(stream, func(row *ssepb.Row) *ssepb.Row {
		if len(row.GetDuals()) == 0 {
			return &ssepb.Row{Duals: []*ssepb.Dual{{}}}
		}
		return &ssepb.Row{Duals: row.GetDuals()[:1]}
	})
}

// mapRows answers each bundle as soon as it arrives, with one output row
// per input row, as a scalar or tensor function must.
func mapRows(stream grpc.BidiStreamingServer[ssepb.BundledRows, ssepb.BundledRows], fn func(*ssepb.Row) *ssepb.Row) error {
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
		if err := stream.Send(bundle); err != nil {
			return err
		}
	}
}

// sumColumn sums the first column over every bundle and returns one row,
// as an aggregation must, only after the last bundle.
func sumColumn(stream grpc.BidiStreamingServer[ssepb.BundledRows, ssepb.BundledRows]) error {
	var sum float64
	for {
		bundle, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		for _, row := range bundle.GetRows() {
			if duals := row.GetDuals(); len(duals) > 0 {
				sum += duals[0].GetNumData()
			}
		}
	}
	return stream.Send(&ssepb.BundledRows{Rows: []*ssepb.Row{{Duals: []*ssepb.Dual{{NumData: sum}}}}})
}

// String names the plugin, for logs.
func (s *Server) String() string {
	return fmt.Sprintf("example plugin %q", s.name)
}

var _ ssepb.ConnectorServer = (*Server)(nil)
