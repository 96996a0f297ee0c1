package ssetest

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// Stream is the server side of an ExecuteFunction or EvaluateScript call.
type Stream = grpc.BidiStreamingServer[ssepb.BundledRows, ssepb.BundledRows]

// Connector is a qlik.sse.Connector whose methods each test sets. A nil
// method answers Unimplemented, as a plugin without it would.
type Connector struct {
	ssepb.UnimplementedConnectorServer

	Capabilities func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error)
	Execute      func(Stream) error
	Script       func(Stream) error
}

func (c *Connector) GetCapabilities(ctx context.Context, empty *ssepb.Empty) (*ssepb.Capabilities, error) {
	if c.Capabilities == nil {
		return nil, status.Error(codes.Unimplemented, "test plugin has no GetCapabilities")
	}
	return c.Capabilities(ctx, empty)
}

func (c *Connector) ExecuteFunction(stream Stream) error {
	if c.Execute == nil {
		return status.Error(codes.Unimplemented, "test plugin has no ExecuteFunction")
	}
	return c.Execute(stream)
}

func (c *Connector) EvaluateScript(stream Stream) error {
	if c.Script == nil {
		return status.Error(codes.Unimplemented, "test plugin has no EvaluateScript")
	}
	return c.Script(stream)
}

// IsProbe reports whether a call is one of the gateway's health probes
// rather than a call forwarded from a client.
func IsProbe(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(routing.ProbeHeader)) > 0
}

// Plugin is a test plugin serving on loopback.
type Plugin struct {
	Addr   string
	Server *grpc.Server
}

// StartPlugin serves connector on 127.0.0.1 at a free port until the test
// ends. It accepts messages up to 64 MiB and uses Codec, so handlers may
// read and write Raw messages; opts come last and can override both.
func StartPlugin(t testing.TB, connector *Connector, opts ...grpc.ServerOption) *Plugin {
	t.Helper()
	return StartPluginAt(t, "127.0.0.1:0", connector, opts...)
}

// StartPluginAt is StartPlugin on a given address, for restarting a plugin
// where the gateway expects it.
func StartPluginAt(t testing.TB, address string, connector *Connector, opts ...grpc.ServerOption) *Plugin {
	t.Helper()
	return ServePlugin(t, address, connector, opts...)
}

// ServePlugin serves any Connector implementation, such as the example
// plugin, as StartPluginAt does.
func ServePlugin(t testing.TB, address string, connector ssepb.ConnectorServer, opts ...grpc.ServerOption) *Plugin {
	t.Helper()
	lis, err := net.Listen("tcp", address)
	if err != nil {
		t.Fatalf("test plugin: %v", err)
	}
	return ServePluginOn(t, lis, connector, opts...)
}

// ServePluginOn serves connector on lis. A test that listens first and
// serves later has a plugin whose connections wait in the listen queue,
// unanswered, until it starts.
func ServePluginOn(t testing.TB, lis net.Listener, connector ssepb.ConnectorServer, opts ...grpc.ServerOption) *Plugin {
	t.Helper()
	options := append([]grpc.ServerOption{
		grpc.ForceServerCodecV2(Codec{}),
		grpc.MaxRecvMsgSize(64 << 20),
		grpc.MaxSendMsgSize(64 << 20),
	}, opts...)
	server := grpc.NewServer(options...)
	ssepb.RegisterConnectorServer(server, connector)
	go server.Serve(lis)
	t.Cleanup(server.Stop)
	return &Plugin{Addr: lis.Addr().String(), Server: server}
}
