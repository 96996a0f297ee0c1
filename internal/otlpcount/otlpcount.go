// Package otlpcount is an OTLP/gRPC trace collector that only counts the
// spans it receives. Benchmarks use it in place of a collector on another
// host. It shares the CPU with what they measure, so it walks the wire
// format and decodes nothing else. In one profile, decoding every export
// took about a quarter of the CPU that tracing added.
package otlpcount

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Receiver serves OTLP's TraceService and counts spans.
type Receiver struct {
	// Addr is the host:port the receiver listens on.
	Addr string

	server *grpc.Server
	spans  atomic.Int64
}

// spanCount is the number of spans in an export request, as spanCodec
// decodes it.
type spanCount int

// exportDesc serves the Export method of OTLP's TraceService.
var exportDesc = grpc.ServiceDesc{
	ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Export",
		Handler: func(server any, _ context.Context, decode func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var count spanCount
			if err := decode(&count); err != nil {
				return nil, err
			}
			server.(*Receiver).spans.Add(int64(count))
			return &exportResponse{}, nil
		},
	}},
}

// exportResponse is an ExportTraceServiceResponse with no fields set,
// which encodes to no bytes.
type exportResponse struct{}

// Start serves OTLP traces on a free port of 127.0.0.1.
func Start() (*Receiver, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting the OTLP receiver: %w", err)
	}
	receiver := &Receiver{Addr: lis.Addr().String(), server: grpc.NewServer(grpc.ForceServerCodecV2(spanCodec{}))}
	receiver.server.RegisterService(&exportDesc, receiver)
	go receiver.server.Serve(lis) //nolint:errcheck // Serve returns only when stop ends it
	return receiver, nil
}

// Spans returns how many spans arrived.
func (r *Receiver) Spans() int64 { return r.spans.Load() }

// Stop closes the listener and every connection.
func (r *Receiver) Stop() {
	r.server.Stop()
}

// spanCodec counts the spans of an ExportTraceServiceRequest and encodes
// the empty response.
type spanCodec struct{}

func (spanCodec) Marshal(v any) (mem.BufferSlice, error) {
	if _, ok := v.(*exportResponse); !ok {
		return nil, fmt.Errorf("span receiver codec: cannot encode %T", v)
	}
	return nil, nil
}

func (spanCodec) Unmarshal(data mem.BufferSlice, v any) error {
	count, ok := v.(*spanCount)
	if !ok {
		return fmt.Errorf("span receiver codec: cannot decode into %T", v)
	}
	buffer := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buffer.Free()
	// ExportTraceServiceRequest.resource_spans (1) contains ScopeSpans in
	// its field 2, which contains the Spans in its field 2.
	n := 0
	err := eachField(buffer.ReadOnlyData(), 1, func(resourceSpans []byte) error {
		return eachField(resourceSpans, 2, func(scopeSpans []byte) error {
			return eachField(scopeSpans, 2, func([]byte) error { n++; return nil })
		})
	})
	*count = spanCount(n)
	return err
}

func (spanCodec) Name() string { return "proto" }

// eachField calls f with the contents of every length-delimited field
// numbered field in the message b.
func eachField(b []byte, field protowire.Number, f func([]byte) error) error {
	for len(b) > 0 {
		number, wireType, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if number == field && wireType == protowire.BytesType {
			value, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if err := f(value); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(number, wireType, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

var _ encoding.CodecV2 = spanCodec{}
