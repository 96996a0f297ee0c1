package grpcproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// TestMain fails the package when a test leaves goroutines behind, such as
// a connection that Close did not end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestProxyForwardsCalls checks that a call through the proxy reaches the
// plugin with Qlik's headers, that a full-duplex call comes back whole,
// and that Close ends Serve.
func TestProxyForwardsCalls(t *testing.T) {
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{PluginIdentifier: "proxied"}, nil
		},
		Execute: func(s ssetest.Stream) error {
			md, _ := metadata.FromIncomingContext(s.Context())
			if _, err := ssepb.ReadFunctionRequestHeader(md); err != nil {
				return status.Errorf(codes.InvalidArgument, "reading the function header: %v", err)
			}
			return ssetest.Echo(s)
		},
	})
	proxy, err := New(plugin.Addr, Options{StreamWindow: 64 << 10, ConnWindow: 1 << 20, MaxMessageSize: int(config.DefaultMaxMessageSize)})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- proxy.Serve(lis) }()

	client := ssetest.Dial(t, lis.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	capabilities, err := client.GetCapabilities(ctx, &ssepb.Empty{})
	if err != nil {
		t.Fatalf("GetCapabilities through the proxy: %v", err)
	}
	if got := capabilities.GetPluginIdentifier(); got != "proxied" {
		t.Errorf("plugin identifier = %q, want proxied", got)
	}

	// Bundles of 100 kB, larger than a flow-control window of 64 KiB,
	// sent while the echoes come back.
	md, err := ssepb.FunctionCallMetadata(0, &ssepb.CommonRequestHeader{AppId: "app"})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := client.ExecuteFunction(metadata.NewOutgoingContext(ctx, md))
	if err != nil {
		t.Fatal(err)
	}
	bundle := ssetest.NumericBundle(5000, 2)
	const bundles = 8
	sent := make(chan error, 1)
	go func() {
		for range bundles {
			if err := stream.Send(bundle); err != nil {
				sent <- err
				return
			}
		}
		sent <- stream.CloseSend()
	}()
	received := 0
	for {
		echo, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("after %d echoes: %v", received, err)
		}
		if !proto.Equal(echo, bundle) {
			t.Fatalf("echo %d differs from the bundle sent", received)
		}
		received++
	}
	if err := <-sent; err != nil {
		t.Errorf("sending: %v", err)
	}
	if received != bundles {
		t.Errorf("got %d echoes, want %d", received, bundles)
	}

	proxy.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after Close = %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve did not return after Close")
	}
}
