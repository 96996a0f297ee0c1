package telemetry_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ssegw/ssegw/internal/otlptest"
	"github.com/ssegw/ssegw/telemetry"
)

// TestOTLPSpanExporterMatchesSDK sends the same spans through the SDK's
// own OTLP exporter and through the gateway's, over gRPC and over HTTP.
// The receiver must get the same protobuf messages from both, for every
// attribute type and every span field.
func TestOTLPSpanExporterMatchesSDK(t *testing.T) {
	spans := variedSpans(t)
	for _, transport := range []struct {
		name   string
		start  func(testing.TB) *otlptest.Receiver
		client func(r *otlptest.Receiver) otlptrace.Client
	}{
		{"grpc", otlptest.StartGRPC, func(r *otlptest.Receiver) otlptrace.Client {
			return otlptracegrpc.NewClient(otlptracegrpc.WithEndpoint(r.Addr), otlptracegrpc.WithInsecure())
		}},
		{"http", otlptest.StartHTTP, func(r *otlptest.Receiver) otlptrace.Client {
			return otlptracehttp.NewClient(otlptracehttp.WithEndpoint(r.Addr), otlptracehttp.WithInsecure())
		}},
	} {
		t.Run(transport.name, func(t *testing.T) {
			clearOTelEnv(t)
			ctx := context.Background()
			sdkReceiver, ourReceiver := transport.start(t), transport.start(t)

			sdkExporter, err := otlptrace.New(ctx, transport.client(sdkReceiver))
			if err != nil {
				t.Fatal(err)
			}
			ourExporter, err := telemetry.NewOTLPSpanExporter(ctx, transport.client(ourReceiver))
			if err != nil {
				t.Fatal(err)
			}
			for _, exporter := range []sdktrace.SpanExporter{sdkExporter, ourExporter} {
				// Twice, so that the reused buffer is reused.
				for range 2 {
					if err := exporter.ExportSpans(ctx, spans); err != nil {
						t.Fatalf("%T: %v", exporter, err)
					}
				}
				if err := exporter.Shutdown(ctx); err != nil {
					t.Fatalf("%T: shutdown: %v", exporter, err)
				}
			}

			want, got := sdkReceiver.Spans(), ourReceiver.Spans()
			if len(got) != len(want) || len(want) != 2*len(spans) {
				t.Fatalf("received %d spans from the gateway's exporter and %d from the SDK's, want %d each", len(got), len(want), 2*len(spans))
			}
			// The SDK's exporter orders resources by map iteration, so
			// spans are matched by id.
			bySpanID := map[string]otlptest.Span{}
			for _, span := range want {
				bySpanID[span.SpanIDHex()] = span
			}
			for _, span := range got {
				sdkSpan, ok := bySpanID[span.SpanIDHex()]
				if !ok {
					t.Errorf("span %s %q: the SDK's exporter sent no such span", span.SpanIDHex(), span.GetName())
					continue
				}
				// The one intended difference: the SDK's exporter leaves
				// out a link's trace state, which OTLP has a field for.
				for _, link := range span.GetLinks() {
					if link.GetTraceState() != linkTraceState {
						t.Errorf("span %q: link trace state %q, want %q", span.GetName(), link.GetTraceState(), linkTraceState)
					}
					link.TraceState = ""
				}
				compare := []struct {
					part      string
					got, want proto.Message
				}{
					{"span", span.Span, sdkSpan.Span},
					{"resource", span.Resource, sdkSpan.Resource},
					{"scope", span.Scope, sdkSpan.Scope},
				}
				for _, c := range compare {
					if diff := cmp.Diff(c.want, c.got, protocmp.Transform()); diff != "" {
						t.Errorf("span %q: %s differs (-SDK +gateway):\n%s", span.GetName(), c.part, diff)
					}
				}
				if span.ResourceSchemaURL != sdkSpan.ResourceSchemaURL || span.ScopeSchemaURL != sdkSpan.ScopeSchemaURL {
					t.Errorf("span %q: schema URLs %q and %q, want %q and %q", span.GetName(),
						span.ResourceSchemaURL, span.ScopeSchemaURL, sdkSpan.ResourceSchemaURL, sdkSpan.ScopeSchemaURL)
				}
			}
		})
	}
}

// linkTraceState is the trace state of every span context variedSpans makes.
const linkTraceState = "vendor=value,other=1"

// variedSpans returns ended spans that use every attribute type, events,
// links, each status and span kind, remote and local parents, two
// resources, one with a schema URL, and three scopes, one empty. Some
// values are long enough that their messages need multi-byte lengths.
func variedSpans(t *testing.T) []sdktrace.ReadOnlySpan {
	t.Helper()
	gateway := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.37.0",
		attribute.String("service.name", "ssegw"), attribute.Int64("process.pid", 4242))
	other := resource.NewSchemaless(attribute.String("service.name", "other"))
	scopes := []instrumentation.Scope{
		{Name: "github.com/ssegw/ssegw/gateway", Version: "1.2.3", SchemaURL: "https://opentelemetry.io/schemas/1.37.0",
			Attributes: attribute.NewSet(attribute.Bool("scope.flag", true))},
		{Name: "plain"},
		{},
	}

	every := []attribute.KeyValue{
		attribute.Bool("bool.true", true),
		attribute.Bool("bool.false", false),
		attribute.Int64("int.zero", 0),
		attribute.Int64("int.negative", -7),
		attribute.Int64("int.max", math.MaxInt64),
		attribute.Float64("float.zero", 0),
		attribute.Float64("float.pi", math.Pi),
		attribute.String("string.empty", ""),
		attribute.String("string.unicode", "Größe ✓"),
		attribute.String("string.long", strings.Repeat("x", 200)),
		attribute.String("string.longer", strings.Repeat("y", 20000)),
		attribute.BoolSlice("bools", []bool{true, false}),
		attribute.Int64Slice("ints", []int64{1, -1, 0}),
		attribute.Float64Slice("floats", []float64{0.5, -2}),
		attribute.StringSlice("strings", []string{"a", "", "c"}),
		attribute.StringSlice("strings.none", nil),
		attribute.ByteSlice("bytes", []byte{0, 1, 2, 255}),
		attribute.ByteSlice("bytes.empty", nil),
		attribute.Slice("slice", attribute.StringValue("s"), attribute.Int64Value(3), attribute.SliceValue(attribute.BoolValue(true))),
		attribute.Map("map", attribute.String("k", "v"), attribute.Map("inner", attribute.Int64("n", 1))),
		{Key: "empty"},
	}

	traceID := trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	state, err := trace.ParseTraceState(linkTraceState)
	if err != nil {
		t.Fatal(err)
	}
	context := func(spanID byte, remote bool, flags trace.TraceFlags) trace.SpanContext {
		return trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: traceID, SpanID: trace.SpanID{spanID, 0, 0, 0, 0, 0, 0, 1},
			TraceFlags: flags, TraceState: state, Remote: remote,
		})
	}

	start := time.Date(2026, 12, 5, 1, 2, 3, 456789, time.UTC)
	stubs := []tracetest.SpanStub{{
		Name:        "SSEPython.SumOfRows",
		SpanContext: context(1, false, trace.FlagsSampled),
		Parent:      context(2, true, trace.FlagsSampled),
		SpanKind:    trace.SpanKindServer,
		StartTime:   start,
		EndTime:     start.Add(3 * time.Millisecond),
		Attributes:  every,
		Events: []sdktrace.Event{
			{Name: "result check", Time: start.Add(time.Millisecond), Attributes: every[:5], DroppedAttributeCount: 2},
			{Name: "bare"},
		},
		Links: []sdktrace.Link{
			{SpanContext: context(3, true, 0), Attributes: every[5:9], DroppedAttributeCount: 1},
			{SpanContext: context(4, false, trace.FlagsSampled)},
		},
		Status:               sdktrace.Status{Code: codes.Error, Description: "Unavailable: no ready replica"},
		DroppedAttributes:    3,
		DroppedEvents:        4,
		DroppedLinks:         5,
		Resource:             gateway,
		InstrumentationScope: scopes[0],
	}, {
		Name:                 "SSEPython.SumOfRows attempt",
		SpanContext:          context(5, false, trace.FlagsSampled),
		Parent:               context(1, false, trace.FlagsSampled),
		SpanKind:             trace.SpanKindClient,
		StartTime:            start,
		EndTime:              start,
		Status:               sdktrace.Status{Code: codes.Ok},
		Resource:             gateway,
		InstrumentationScope: scopes[0],
	}, {
		Name:                 "before 1970",
		SpanContext:          context(6, false, 0),
		SpanKind:             trace.SpanKindInternal,
		StartTime:            time.Unix(-5, 0),
		EndTime:              time.Unix(-1, 0),
		Resource:             other,
		InstrumentationScope: scopes[1],
	}, {
		Name:                 "no scope, no resource",
		SpanContext:          context(7, false, trace.FlagsSampled),
		SpanKind:             trace.SpanKindProducer,
		InstrumentationScope: scopes[2],
	}, {
		Name:                 "consumer",
		SpanContext:          context(8, true, trace.FlagsSampled),
		SpanKind:             trace.SpanKindConsumer,
		Resource:             other,
		InstrumentationScope: scopes[0],
	}}

	var spans []sdktrace.ReadOnlySpan
	for _, stub := range stubs {
		spans = append(spans, stub.Snapshot())
	}

	// Many spans in one scope make the scope's message long.
	for i := range 300 {
		stub := stubs[1]
		stub.Name = fmt.Sprintf("attempt %d", i)
		stub.SpanContext = trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: traceID, SpanID: trace.SpanID{9, byte(i >> 8), byte(i), 0, 0, 0, 0, 1}, TraceFlags: trace.FlagsSampled,
		})
		stub.Attributes = every[:10] // up to string.long
		spans = append(spans, stub.Snapshot())
	}
	return spans
}

// BenchmarkSpanExport compares the SDK's OTLP exporter with the gateway's
// on a batch of spans like the gateway's: both end with the bytes the
// client would send.
func BenchmarkSpanExport(b *testing.B) {
	spans := gatewayLikeSpans(512)
	ctx := context.Background()
	for _, bench := range []struct {
		name string
		new  func(otlptrace.Client) (sdktrace.SpanExporter, error)
	}{
		{"exporter=sdk", func(c otlptrace.Client) (sdktrace.SpanExporter, error) { return otlptrace.New(ctx, c) }},
		{"exporter=ssegw", func(c otlptrace.Client) (sdktrace.SpanExporter, error) { return telemetry.NewOTLPSpanExporter(ctx, c) }},
	} {
		b.Run(bench.name, func(b *testing.B) {
			client := &marshalClient{}
			exporter, err := bench.new(client)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := exporter.ExportSpans(ctx, spans); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
		})
	}
}

// gatewayLikeSpans returns n spans shaped as the gateway's: a server span
// with its 24 attributes and a client span with 10, alternately.
func gatewayLikeSpans(n int) []sdktrace.ReadOnlySpan {
	res := resource.NewSchemaless(attribute.String("service.name", "ssegw"), attribute.String("host.name", "qlik-gw-01"))
	scope := instrumentation.Scope{Name: "github.com/ssegw/ssegw/gateway"}
	server := []attribute.KeyValue{
		attribute.String("rpc.system", "grpc"), attribute.String("rpc.service", "qlik.sse.Connector"),
		attribute.String("rpc.method", "ExecuteFunction"),
		attribute.String("server.address", "127.0.0.1"), attribute.Int64("server.port", 50055),
		attribute.String("client.address", "127.0.0.1"), attribute.Int64("client.port", 53422),
		attribute.String("qlik.sse.engine", "SSEPython"), attribute.Int64("qlik.sse.function.id", 0),
		attribute.String("qlik.sse.function.name", "SumOfRows"), attribute.String("qlik.sse.function.type", "TENSOR"),
		attribute.String("qlik.sse.app.id", "3f2a9c1e-5b7d-4e8a-9c0f-1a2b3c4d5e6f"),
		attribute.String("qlik.sse.user.id", "9b74c9897bac770ffc029102a200c5de"),
		attribute.Int64("qlik.sse.cardinality", 10),
		attribute.Int64("rpc.grpc.status_code", 0),
		attribute.Int64("qlik.sse.messages.in", 1), attribute.Int64("qlik.sse.messages.out", 1),
		attribute.Int64("qlik.sse.bytes.in", 180), attribute.Int64("qlik.sse.bytes.out", 120),
		attribute.Int64("qlik.sse.rows.in", 10), attribute.Int64("qlik.sse.rows.out", 10),
		attribute.Int64("qlik.sse.attempts", 1), attribute.Float64("qlik.sse.replica_wait", 0),
		attribute.String("qlik.sse.backend.address", "127.0.0.1:50051"),
	}
	client := append([]attribute.KeyValue(nil), server[:10]...)
	spans := make([]sdktrace.ReadOnlySpan, n)
	start := time.Now()
	for i := range spans {
		stub := tracetest.SpanStub{
			Name: "SSEPython.SumOfRows",
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
				TraceID: trace.TraceID{byte(i), 1}, SpanID: trace.SpanID{byte(i), 2}, TraceFlags: trace.FlagsSampled,
			}),
			SpanKind:             trace.SpanKindServer,
			StartTime:            start,
			EndTime:              start.Add(time.Millisecond),
			Attributes:           server,
			Resource:             res,
			InstrumentationScope: scope,
		}
		if i%2 == 1 {
			stub.SpanKind, stub.Attributes = trace.SpanKindClient, client
		}
		spans[i] = stub.Snapshot()
	}
	return spans
}

// marshalClient does what the SDK's clients do before sending: wrap the
// spans in a request and marshal it.
type marshalClient struct{ sent int }

func (*marshalClient) Start(context.Context) error { return nil }
func (*marshalClient) Stop(context.Context) error  { return nil }

func (c *marshalClient) UploadTraces(_ context.Context, spans []*tracepb.ResourceSpans) error {
	wire, err := proto.Marshal(&coltracepb.ExportTraceServiceRequest{ResourceSpans: spans})
	c.sent += len(wire)
	return err
}
