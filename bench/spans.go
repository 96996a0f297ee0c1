package bench

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"

	traceservice "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// spanReceiver is an OTLP/gRPC trace collector inside the benchmark
// process: the exporter of the gateway with tracing on sends its spans
// here. It only counts them, so that receiving costs little.
type spanReceiver struct {
	traceservice.UnimplementedTraceServiceServer

	address string
	server  *grpc.Server
	spans   atomic.Int64
}

// startSpanReceiver serves OTLP traces on a free port of 127.0.0.1.
func startSpanReceiver() (*spanReceiver, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting the OTLP receiver: %w", err)
	}
	receiver := &spanReceiver{address: lis.Addr().String(), server: grpc.NewServer()}
	traceservice.RegisterTraceServiceServer(receiver.server, receiver)
	go receiver.server.Serve(lis) //nolint:errcheck // Serve returns only when stop ends it
	return receiver, nil
}

// Export counts the spans of one export request.
func (r *spanReceiver) Export(_ context.Context, request *traceservice.ExportTraceServiceRequest) (*traceservice.ExportTraceServiceResponse, error) {
	count := 0
	for _, resourceSpans := range request.GetResourceSpans() {
		for _, scopeSpans := range resourceSpans.GetScopeSpans() {
			count += len(scopeSpans.GetSpans())
		}
	}
	r.spans.Add(int64(count))
	return &traceservice.ExportTraceServiceResponse{}, nil
}

// stop closes the listener and every connection.
func (r *spanReceiver) stop() {
	r.server.Stop()
}

var _ traceservice.TraceServiceServer = (*spanReceiver)(nil)
