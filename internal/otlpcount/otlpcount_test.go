package otlpcount

import (
	"context"
	"testing"

	traceservice "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestSpanReceiverCounts sends the receiver what an OTLP exporter sends,
// spans spread over several resources and scopes, and checks the count.
func TestSpanReceiverCounts(t *testing.T) {
	receiver, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer receiver.Stop()
	conn, err := grpc.NewClient("passthrough:///"+receiver.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	spans := func(n int) []*tracepb.Span {
		list := make([]*tracepb.Span, n)
		for i := range list {
			list[i] = &tracepb.Span{Name: "R.SumOfRows", TraceId: make([]byte, 16), SpanId: make([]byte, 8)}
		}
		return list
	}
	request := &traceservice.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans(3)}, {Spans: spans(2)}}, SchemaUrl: "x"},
		{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans(4)}}},
	}}
	client := traceservice.NewTraceServiceClient(conn)
	for range 2 {
		if _, err := client.Export(context.Background(), request); err != nil {
			t.Fatalf("Export: %v", err)
		}
	}
	if got := receiver.Spans(); got != 18 {
		t.Errorf("receiver counted %d spans, want 18", got)
	}
}
