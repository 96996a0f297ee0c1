package gateway_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/bench/grpcproxy"
	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// startGRPCProxy serves github.com/mwitkow/grpc-proxy's transparent handler
// (v0.0.0-20181017164139-0f1106ef9c76, the version the Go module proxy
// serves) in front of backend, as the benchmark's grpc-proxy target does,
// with gRPC's own flow-control windows, and returns its address. It is
// the baseline the gateway's own handler replaced. When codes is not nil,
// it receives the status code the handler returned for each call: what a
// span or a metric would record.
func startGRPCProxy(t testing.TB, backend string, maxMessageSize int, codes chan<- codes.Code) string {
	t.Helper()
	record := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		if codes != nil {
			codes <- status.Code(err)
		}
		return err
	}
	p, err := grpcproxy.New(backend, grpcproxy.Options{
		MaxMessageSize: maxMessageSize,
		ServerOptions:  []grpc.ServerOption{grpc.StreamInterceptor(record)},
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(lis)
	t.Cleanup(p.Close)
	return lis.Addr().String()
}

// TestGatewayFixesGRPCProxy runs the cases where grpc-proxy's handler gets
// SSE traffic wrong against both front ends: the gateway must pass each,
// and grpc-proxy fails each, which is why the gateway has its own handler.
func TestGatewayFixesGRPCProxy(t *testing.T) {
	table, err := proto.Marshal(&ssepb.TableDescription{Name: "result", Fields: []*ssepb.FieldDescription{{Name: "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		plugin func(ssetest.Stream) error
		// check calls through front and returns "" when the behaviour is
		// right, else what went wrong.
		check func(t *testing.T, front ssepb.ConnectorClient) string
	}{
		{
			// A plugin that sends its headers at once and waits for the
			// client's second bundle: a client that waits for the headers
			// first stalls when they travel only with the first message.
			name: "headers before the first message",
			plugin: func(s ssetest.Stream) error {
				if err := s.SendHeader(metadata.Pairs("x-early", "1")); err != nil {
					return err
				}
				for i := 0; i < 2; i++ {
					if _, err := s.Recv(); err != nil {
						return err
					}
				}
				return nil
			},
			check: func(t *testing.T, front ssepb.ConnectorClient) string {
				ctx, cancel := context.WithTimeout(functionContext(t, testContext(t), 0), 2*time.Second)
				defer cancel()
				stream, err := front.ExecuteFunction(ctx)
				if err != nil {
					return err.Error()
				}
				if err := stream.Send(&ssepb.BundledRows{}); err != nil {
					return err.Error()
				}
				header, err := stream.Header()
				if err != nil || len(header.Get("x-early")) == 0 {
					return "no response header before the first message"
				}
				return ""
			},
		},
		{
			// A LOAD ... EXTENSION whose result is empty still needs its
			// table description, which comes in the headers.
			name: "table description with zero rows",
			plugin: func(s ssetest.Stream) error {
				if _, err := s.Recv(); err != io.EOF {
					return status.Error(codes.InvalidArgument, "expected no rows")
				}
				return s.SendHeader(metadata.Pairs(ssepb.TableDescriptionKey, string(table)))
			},
			check: func(t *testing.T, front ssepb.ConnectorClient) string {
				out := exchange(functionContext(t, testContext(t), 0), front)
				if out.err != io.EOF {
					return "call failed: " + out.err.Error()
				}
				if got := out.header.Get(ssepb.TableDescriptionKey); len(got) != 1 || got[0] != string(table) {
					return "qlik-tabledescription-bin lost"
				}
				return ""
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPath(t, &ssetest.Connector{Execute: tt.plugin}, nil)
			if problem := tt.check(t, p.viaGateway); problem != "" {
				t.Errorf("through the gateway: %s", problem)
			}
			grpcProxy := ssetest.Dial(t, startGRPCProxy(t, p.plugin.Addr, 4<<20, nil))
			if problem := tt.check(t, grpcProxy); problem == "" {
				t.Errorf("through grpc-proxy: the call went right; if the library was fixed, reconsider using it")
			} else {
				t.Logf("through grpc-proxy, as expected: %s", problem)
			}
		})
	}
}

// TestGatewayRecordsClientErrorCode checks the status the front end itself
// records for a call that fails on the client's side: here a request over
// the message size limit. The client gets ResourceExhausted from gRPC either
// way, but grpc-proxy's handler returns Internal for every client-side
// error, so its spans, metrics and logs would count the client's mistake as
// a gateway failure. When the client's reset arrives first, it records
// Canceled instead; either way not the client's code.
func TestGatewayRecordsClientErrorCode(t *testing.T) {
	plugin := func(s ssetest.Stream) error {
		_, err := s.Recv()
		return err
	}
	p := newPath(t, &ssetest.Connector{Execute: plugin}, func(cfg *config.Config) {
		cfg.Limits.MaxMessageSize = 1 << 20
	})
	proxyCodes := make(chan codes.Code, 1)
	grpcProxy := ssetest.Dial(t, startGRPCProxy(t, p.plugin.Addr, 1<<20, proxyCodes))
	tooLarge := make(ssetest.Raw, 1<<20+1)

	out := exchange(functionContext(t, testContext(t), 0), p.viaGateway, tooLarge)
	if code := status.Code(out.err); code != codes.ResourceExhausted {
		t.Errorf("client got %v through the gateway, want ResourceExhausted", code)
	}
	record := p.gateway.Logs.WaitFor(t, "call", 5*time.Second, nil)
	if record["code"] != codes.ResourceExhausted.String() {
		t.Errorf("gateway recorded %v, want ResourceExhausted", record["code"])
	}

	out = exchange(functionContext(t, testContext(t), 0), grpcProxy, tooLarge)
	if code := status.Code(out.err); code != codes.ResourceExhausted {
		t.Errorf("client got %v through grpc-proxy, want ResourceExhausted", code)
	}
	select {
	case code := <-proxyCodes:
		if code != codes.Internal && code != codes.Canceled {
			t.Errorf("grpc-proxy recorded %v; if the library was fixed, reconsider using it", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("grpc-proxy's handler did not return")
	}
}

// compareTarget is one way to reach the benchmark's plugin.
type compareTarget struct {
	name    string
	address string
}

// startCompareTargets starts a plugin whose ExecuteFunction is execute and,
// in front of it, the gateway and grpc-proxy. It returns the three ways to
// call it: directly, through the gateway and through grpc-proxy.
func startCompareTargets(b *testing.B, execute func(ssetest.Stream) error) []compareTarget {
	b.Helper()
	plugin := ssetest.StartPlugin(b, &ssetest.Connector{Execute: execute}).Addr
	gw := ssetest.StartGateway(b, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("Bench", nil)},
		Engines:   map[string]*config.Engine{"Bench": ssetest.Engine(plugin)},
		Log:       config.Log{Level: "warn"},
	}).Addrs[0]
	return []compareTarget{
		{"direct", plugin},
		{"ssegw", gw},
		{"grpc-proxy", startGRPCProxy(b, plugin, 16<<20, nil)},
	}
}

// BenchmarkForwarding compares, in one run, a call that streams 100
// bundles of 1,000 rows to a plugin that echoes each one back, made
// directly, through the gateway, and through grpc-proxy. The plugin echoes
// raw bytes, so its own cost is small and B/op and allocs/op show what
// each front end adds.
func BenchmarkForwarding(b *testing.B) {
	echo := func(s ssetest.Stream) error {
		for {
			var message ssetest.Raw
			if err := s.RecvMsg(&message); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
			if err := s.SendMsg(&message); err != nil {
				return err
			}
		}
	}
	targets := startCompareTargets(b, echo)
	bundle, err := proto.Marshal(ssetest.NumericBundle(1000, 3))
	if err != nil {
		b.Fatal(err)
	}
	requests := make([]ssetest.Raw, 100)
	for i := range requests {
		requests[i] = bundle
	}
	md, err := ssepb.FunctionCallMetadata(0, &ssepb.CommonRequestHeader{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := metadata.NewOutgoingContext(context.Background(), md)
	for _, target := range targets {
		b.Run(target.name, func(b *testing.B) {
			client := ssetest.Dial(b, target.address, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
			b.SetBytes(int64(2 * len(bundle) * len(requests)))
			b.ReportAllocs()
			for b.Loop() {
				out := exchange(ctx, client, requests...)
				if out.err != io.EOF || len(out.messages) != len(requests) {
					b.Fatalf("call: %v, %d messages", out.err, len(out.messages))
				}
			}
		})
	}
}

// BenchmarkSmallCalls compares, in one run, many concurrent calls of one
// bundle of 10 rows each, the shape of a chart's scalar function, made
// directly, through the gateway, and through grpc-proxy. Here the cost per
// call, not per byte, decides: headers, streams, spans and metrics.
func BenchmarkSmallCalls(b *testing.B) {
	echo := func(s ssetest.Stream) error {
		var message ssetest.Raw
		if err := s.RecvMsg(&message); err != nil {
			return err
		}
		return s.SendMsg(&message)
	}
	targets := startCompareTargets(b, echo)
	bundle, err := proto.Marshal(ssetest.NumericBundle(10, 2))
	if err != nil {
		b.Fatal(err)
	}
	md, err := ssepb.FunctionCallMetadata(0, &ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: 10})
	if err != nil {
		b.Fatal(err)
	}
	ctx := metadata.NewOutgoingContext(context.Background(), md)
	for _, target := range targets {
		b.Run(target.name, func(b *testing.B) {
			client := ssetest.Dial(b, target.address)
			b.SetParallelism(16) // callers per core, as a busy Qlik engine
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					out := exchange(ctx, client, bundle)
					if out.err != io.EOF || len(out.messages) != 1 {
						b.Errorf("call: %v, %d messages", out.err, len(out.messages))
						return
					}
				}
			})
		})
	}
}
