// Package grpcproxy serves github.com/mwitkow/grpc-proxy's transparent
// handler in front of one plugin: the benchmark's grpc-proxy target.
//
// Like the gateway, it ends each call on a grpc-go server and opens one on
// a grpc-go client connection to the plugin, and it forwards messages
// between the two. Unlike the gateway, it has none of the gateway's
// features: no routing, spans, metrics, deadlines, admission, waiting for
// a replica or replay. Measured beside the gateway, it shows how much of
// the gateway's cost per call lies in grpc-go's two sides and how much in
// what the gateway adds.
//
// The library's handler gets some calls wrong, which is why the gateway
// has a handler of its own: TestGatewayFixesGRPCProxy in the gateway
// package lists the cases. The benchmark's workloads meet none of them.
// This is a reference for measurements, not something to put before Qlik.
package grpcproxy

import (
	"context"
	"fmt"
	"net"

	"github.com/mwitkow/grpc-proxy/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// Options are the proxy's settings, the same on both sides.
type Options struct {
	// StreamWindow and ConnWindow are fixed HTTP/2 flow-control windows;
	// 0 leaves gRPC's, which grow with the measured bandwidth. Each
	// applies on its own.
	StreamWindow int32
	ConnWindow   int32

	MaxMessageSize int

	// ServerOptions are added to the server's own, last.
	ServerOptions []grpc.ServerOption
}

// Proxy is the proxy's server and its one client connection to the
// plugin.
type Proxy struct {
	server *grpc.Server
	conn   *grpc.ClientConn
}

// New returns a proxy to the plugin at backend, a host:port reached in
// plaintext. It dials on its first call.
func New(backend string, opts Options) (*Proxy, error) {
	dialOptions := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithCodec(proxy.Codec()), //nolint:staticcheck // the library needs the deprecated codec API
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(opts.MaxMessageSize), grpc.MaxCallSendMsgSize(opts.MaxMessageSize)),
	}
	serverOptions := []grpc.ServerOption{
		grpc.CustomCodec(proxy.Codec()), //nolint:staticcheck // as above
		grpc.MaxRecvMsgSize(opts.MaxMessageSize),
		grpc.MaxSendMsgSize(opts.MaxMessageSize),
	}
	if opts.StreamWindow > 0 {
		dialOptions = append(dialOptions, grpc.WithInitialWindowSize(opts.StreamWindow))
		serverOptions = append(serverOptions, grpc.InitialWindowSize(opts.StreamWindow))
	}
	if opts.ConnWindow > 0 {
		dialOptions = append(dialOptions, grpc.WithInitialConnWindowSize(opts.ConnWindow))
		serverOptions = append(serverOptions, grpc.InitialConnWindowSize(opts.ConnWindow))
	}

	conn, err := grpc.NewClient("passthrough:///"+backend, dialOptions...)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", backend, err)
	}
	// The library's director decides where a call goes. Here it always
	// goes to the plugin, with the client's headers, which the library
	// does not pass on by itself.
	director := func(ctx context.Context, _ string) (context.Context, *grpc.ClientConn, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		return metadata.NewOutgoingContext(ctx, md.Copy()), conn, nil
	}

	serverOptions = append(serverOptions, grpc.UnknownServiceHandler(proxy.TransparentHandler(director)))
	server := grpc.NewServer(append(serverOptions, opts.ServerOptions...)...)
	return &Proxy{server: server, conn: conn}, nil
}

// Serve accepts calls on lis until Close.
func (p *Proxy) Serve(lis net.Listener) error {
	return p.server.Serve(lis)
}

// Close ends every call at once and closes the connection to the plugin.
func (p *Proxy) Close() {
	p.server.Stop()
	p.conn.Close()
}
