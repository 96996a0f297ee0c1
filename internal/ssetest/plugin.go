package ssetest

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// Stream is the server side of an ExecuteFunction or EvaluateScript call.
type Stream = grpc.BidiStreamingServer[ssepb.BundledRows, ssepb.BundledRows]

// Echo sends every bundle of a call back as it arrives, until the client
// half-closes.
func Echo(s Stream) error {
	for {
		bundle, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(bundle); err != nil {
			return err
		}
	}
}

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

// Headers of a HoldingPlugin: its name in every response, and the request
// header that makes it hold a call.
const (
	ReplicaHeader = "x-replica"
	HoldHeader    = "x-hold"
)

// HoldingPlugin is a test plugin that names itself in the ReplicaHeader
// response header as soon as an ExecuteFunction call starts, and holds
// the call until Release: every call, or with holdAll false only calls
// that carry HoldHeader. A call then sends one empty bundle after the
// client's last message. It counts the connections made to it.
type HoldingPlugin struct {
	*Plugin
	Name  string
	Held  chan struct{} // receives one value per call it holds
	Conns atomic.Int64

	release     chan struct{}
	releaseOnce sync.Once
}

// StartHoldingPlugin starts a HoldingPlugin named name on a free port. The
// test's end releases its calls.
func StartHoldingPlugin(t testing.TB, name string, holdAll bool) *HoldingPlugin {
	t.Helper()
	p := &HoldingPlugin{Name: name, Held: make(chan struct{}, 100), release: make(chan struct{})}
	p.Plugin = StartPlugin(t, &Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{PluginIdentifier: name}, nil
		},
		Execute: func(s Stream) error {
			if err := s.SendHeader(metadata.Pairs(ReplicaHeader, name)); err != nil {
				return err
			}
			md, _ := metadata.FromIncomingContext(s.Context())
			if holdAll || len(md.Get(HoldHeader)) > 0 {
				p.Held <- struct{}{}
				select {
				case <-p.release:
				case <-s.Context().Done():
					return s.Context().Err()
				}
			}
			for {
				if _, err := s.Recv(); errors.Is(err, io.EOF) {
					return s.Send(&ssepb.BundledRows{})
				} else if err != nil {
					return err
				}
			}
		},
	}, grpc.StatsHandler(&connCounter{count: &p.Conns}))
	t.Cleanup(p.Release)
	return p
}

// Release lets every held call, and every later one, finish.
func (p *HoldingPlugin) Release() {
	p.releaseOnce.Do(func() { close(p.release) })
}

// WaitHeld waits until n calls are held on the plugin.
func (p *HoldingPlugin) WaitHeld(t testing.TB, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for i := range n {
		select {
		case <-p.Held:
		case <-timeout:
			t.Fatalf("%d of %d calls held on plugin %s within 10s", i, n, p.Name)
		}
	}
}

// connCounter is a server stats handler that counts connections.
type connCounter struct {
	count *atomic.Int64
}

func (c *connCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (c *connCounter) HandleRPC(context.Context, stats.RPCStats)                         {}
func (c *connCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c *connCounter) HandleConn(_ context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnBegin); ok {
		c.count.Add(1)
	}
}
