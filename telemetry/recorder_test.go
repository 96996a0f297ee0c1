package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/otlptest"
	"github.com/ssegw/ssegw/telemetry"
)

// TestSpanRecorderMatchesSDK makes the same calls on the SDK's tracer
// provider, exporting with the SDK's OTLP exporter, and on the gateway's
// span recorder. The collector must receive the same spans from both,
// apart from their random ids. The comparison covers names, kinds, times,
// attributes with their limits and replacements, events, errors, links,
// statuses, parents, flags, trace state, resource and scope. Neither may
// send a span that the sampler dropped.
func TestSpanRecorderMatchesSDK(t *testing.T) {
	clearOTelEnv(t)
	ctx := context.Background()
	res := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.37.0", attribute.String("service.name", "ssegw"))
	sampler := sdktrace.ParentBased(sdktrace.AlwaysSample())
	newClient := func(r *otlptest.Receiver) otlptrace.Client {
		return otlptracegrpc.NewClient(otlptracegrpc.WithEndpoint(r.Addr), otlptracegrpc.WithInsecure())
	}

	sdkReceiver, ourReceiver := otlptest.StartGRPC(t), otlptest.StartGRPC(t)
	sdkExporter, err := otlptrace.New(ctx, newClient(sdkReceiver))
	if err != nil {
		t.Fatal(err)
	}
	sdkProvider := sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithSampler(sampler), sdktrace.WithBatcher(sdkExporter))
	ourClient := newClient(ourReceiver)
	if err := ourClient.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ourProvider, ourShutdown := telemetry.NewSpanRecorder(res, sampler, ourClient)

	sdkNotes := recordSpans(t, sdkProvider)
	ourNotes := recordSpans(t, ourProvider)
	if err := sdkProvider.Shutdown(ctx); err != nil {
		t.Fatalf("SDK shutdown: %v", err)
	}
	if err := ourShutdown(ctx); err != nil {
		t.Fatalf("recorder shutdown: %v", err)
	}
	if diff := cmp.Diff(sdkNotes, ourNotes); diff != "" {
		t.Errorf("what the spans reported while recorded differs (-SDK +recorder):\n%s", diff)
	}

	want, got := byName(t, sdkReceiver.Spans()), byName(t, ourReceiver.Spans())
	if len(want) != len(recordedNames) {
		t.Fatalf("the SDK exported %d spans, want %d: the test's expectations are out of date", len(want), len(recordedNames))
	}
	for _, name := range recordedNames {
		sdkSpan, ok := want[name]
		if !ok {
			t.Fatalf("the SDK exported no span %q", name)
		}
		span, ok := got[name]
		if !ok {
			t.Errorf("the recorder exported no span %q", name)
			continue
		}
		for _, check := range []struct {
			part      string
			got, want string
		}{
			{"parent", parentName(span, got), parentName(sdkSpan, want)},
			{"trace", traceRoot(span, got), traceRoot(sdkSpan, want)},
		} {
			if check.got != check.want {
				t.Errorf("span %q: %s %q, want %q", name, check.part, check.got, check.want)
			}
		}
		compare := []struct {
			part      string
			got, want proto.Message
		}{
			{"span", withoutIDs(span.Span), withoutIDs(sdkSpan.Span)},
			{"resource", span.Resource, sdkSpan.Resource},
			{"scope", span.Scope, sdkSpan.Scope},
		}
		for _, c := range compare {
			if diff := cmp.Diff(c.want, c.got, protocmp.Transform()); diff != "" {
				t.Errorf("span %q: %s differs (-SDK +recorder):\n%s", name, c.part, diff)
			}
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("the recorder exported span %q, which the SDK did not", name)
		}
	}
}

// recordedNames are the spans that recordSpans ends and the sampler keeps.
var recordedNames = []string{
	"root renamed", "child", "ok", "remote child", "new root", "over the limits", "ended twice",
}

// recordSpans makes the calls that TestSpanRecorderMatchesSDK compares,
// and returns what the spans reported meanwhile.
func recordSpans(t *testing.T, provider trace.TracerProvider) []string {
	t.Helper()
	var notes []string
	note := func(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }
	tracer := provider.Tracer("github.com/ssegw/ssegw/gateway",
		trace.WithInstrumentationVersion("1.2.3"), trace.WithSchemaURL("https://opentelemetry.io/schemas/1.37.0"),
		trace.WithInstrumentationAttributes(attribute.Bool("scope.flag", true)))
	at := func(ms int) time.Time {
		return time.Date(2026, 12, 5, 1, 2, 3, 0, time.UTC).Add(time.Duration(ms) * time.Millisecond)
	}
	every := everyAttribute()
	state, err := trace.ParseTraceState("vendor=value")
	if err != nil {
		t.Fatal(err)
	}
	remoteParent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled, TraceState: state, Remote: true,
	})
	linked := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{7}, SpanID: trace.SpanID{8}})

	rootCtx, root := tracer.Start(context.Background(), "root", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(at(0)), trace.WithAttributes(attribute.String("set.at.start", "yes")))
	note("root recording: %v", root.IsRecording())
	root.SetAttributes(every...)
	root.SetAttributes(attribute.String("string.empty", "replaced"), attribute.Int64("int.max", 1))
	root.SetName("root renamed")

	_, child := tracer.Start(rootCtx, "child", trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(at(1)))
	child.AddEvent("result check", trace.WithTimestamp(at(2)), trace.WithAttributes(every[:5]...))
	child.RecordError(errors.New("plugin gone"), trace.WithTimestamp(at(4)))
	child.RecordError(nil)
	child.AddLink(trace.Link{SpanContext: linked, Attributes: every[5:9]})
	child.AddLink(trace.Link{}) // nothing to link: left out
	child.SetStatus(codes.Error, "Unavailable: no ready replica")
	child.SetStatus(codes.Unset, "ignored")
	child.End(trace.WithTimestamp(at(5)))

	_, ok := tracer.Start(rootCtx, "ok", trace.WithTimestamp(at(6)))
	ok.SetStatus(codes.Ok, "an Ok status has no description")
	ok.SetStatus(codes.Error, "too late: Ok is final")
	ok.End(trace.WithTimestamp(at(7)))

	remoteCtx := trace.ContextWithRemoteSpanContext(context.Background(), remoteParent)
	_, remote := tracer.Start(remoteCtx, "remote child", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(at(8)),
		trace.WithLinks(trace.Link{SpanContext: linked}))
	note("remote child trace id: %s, state %q", remote.SpanContext().TraceID(), remote.SpanContext().TraceState())
	remote.End(trace.WithTimestamp(at(9)))

	unsampled := trace.ContextWithRemoteSpanContext(context.Background(), remoteParent.WithTraceFlags(0))
	droppedCtx, dropped := tracer.Start(unsampled, "dropped")
	note("dropped: recording %v, sampled %v, valid %v, in its context %v", dropped.IsRecording(), dropped.SpanContext().IsSampled(),
		dropped.SpanContext().IsValid(), trace.SpanContextFromContext(droppedCtx).Equal(dropped.SpanContext()))
	dropped.End()

	newRootCtx, newRoot := tracer.Start(rootCtx, "new root", trace.WithNewRoot(), trace.WithTimestamp(at(10)))
	note("new root in its context: %v", trace.SpanFromContext(newRootCtx).SpanContext().Equal(newRoot.SpanContext()))
	newRoot.End(trace.WithTimestamp(at(11)))

	_, over := tracer.Start(rootCtx, "over the limits", trace.WithTimestamp(at(12)))
	for i := range 200 {
		over.SetAttributes(attribute.Int("attribute."+fmt.Sprint(i), i))
	}
	over.SetAttributes(attribute.Int("attribute.5", -5)) // an existing key still takes a new value
	for i := range 130 {
		over.AddEvent(fmt.Sprint("event ", i), trace.WithTimestamp(at(13)))
	}
	over.End(trace.WithTimestamp(at(14)))

	_, twice := tracer.Start(rootCtx, "ended twice", trace.WithTimestamp(at(15)))
	twice.End(trace.WithTimestamp(at(16)))
	note("ended: recording %v", twice.IsRecording())
	twice.SetAttributes(attribute.String("after.end", "ignored"))
	twice.AddEvent("after end")
	twice.SetName("renamed after end")
	twice.SetStatus(codes.Error, "after end")
	twice.End(trace.WithTimestamp(at(17)))

	root.End(trace.WithTimestamp(at(20)))
	return notes
}

// everyAttribute returns one attribute of each type, with edge values.
func everyAttribute() []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.Bool("bool.true", true),
		attribute.Bool("bool.false", false),
		attribute.Int64("int.zero", 0),
		attribute.Int64("int.max", 1<<62),
		attribute.Float64("float.pi", 3.14159),
		attribute.String("string.empty", ""),
		attribute.String("string.unicode", "Größe ✓"),
		attribute.BoolSlice("bools", []bool{true, false}),
		attribute.Int64Slice("ints", []int64{1, -1, 0}),
		attribute.Float64Slice("floats", []float64{0.5, -2}),
		attribute.StringSlice("strings", []string{"a", "", "c"}),
		attribute.ByteSlice("bytes", []byte{0, 1, 2, 255}),
		attribute.Slice("slice", attribute.StringValue("s"), attribute.Int64Value(3)),
		attribute.Map("map", attribute.String("k", "v")),
		{Key: ""}, // invalid: dropped and counted
	}
}

// byName indexes spans by name, which recordSpans keeps unique.
func byName(t *testing.T, spans []otlptest.Span) map[string]otlptest.Span {
	t.Helper()
	named := map[string]otlptest.Span{}
	for _, span := range spans {
		if _, seen := named[span.GetName()]; seen {
			t.Errorf("span %q exported twice", span.GetName())
		}
		named[span.GetName()] = span
	}
	return named
}

// parentName returns the name of span's parent among spans, the parent's
// id when it is not among them, or "" for a root.
func parentName(span otlptest.Span, spans map[string]otlptest.Span) string {
	if len(span.ParentSpanId) == 0 {
		return ""
	}
	for name, other := range spans {
		if other.SpanIDHex() == span.ParentSpanIDHex() {
			return name
		}
	}
	return "id " + span.ParentSpanIDHex()
}

// traceRoot returns the name of the root span of span's trace among spans,
// or the trace id when the root is not among them.
func traceRoot(span otlptest.Span, spans map[string]otlptest.Span) string {
	for name, other := range spans {
		if other.TraceIDHex() == span.TraceIDHex() && len(other.ParentSpanId) == 0 {
			return name
		}
	}
	return "trace " + span.TraceIDHex()
}

// withoutIDs returns a copy of span without its random ids, which the
// test compares through parentName and traceRoot.
func withoutIDs(span *tracepb.Span) *tracepb.Span {
	span = proto.Clone(span).(*tracepb.Span)
	span.TraceId, span.SpanId, span.ParentSpanId = nil, nil, nil
	return span
}

// TestSpanRecorderBatches checks when the recorder exports: as soon as a
// batch is full, not before, and at shutdown, each request a batch at
// most. Spans that end while the queue is full are dropped, as in the
// SDK, and reported to OpenTelemetry's error handler; the rest are
// exported.
func TestSpanRecorderBatches(t *testing.T) {
	var handled []string
	var handledMu sync.Mutex
	previous := otel.GetErrorHandler()
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		handledMu.Lock()
		defer handledMu.Unlock()
		handled = append(handled, err.Error())
	}))
	t.Cleanup(func() { otel.SetErrorHandler(previous) })
	client := newBlockingClient()
	provider, shutdown := telemetry.NewSmallSpanRecorder(client, 2, 4)
	tracer := provider.Tracer("test")
	record := func(n int) {
		for range n {
			_, span := tracer.Start(context.Background(), "span")
			span.End()
		}
	}

	record(1)
	record(1) // the batch is full: an export starts and blocks
	select {
	case n := <-client.started:
		if n != 2 {
			t.Errorf("first export has %d spans, want the batch of 2", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no export within 10 s of a full batch")
	}
	record(10) // 4 wait in the queue, 6 are dropped
	close(client.release)
	if err := shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if got := client.exported(); !slices.Equal(got, []int{2, 2, 2}) {
		t.Errorf("exports had %v spans, want [2 2 2]: a full batch, then the queue of 4 at shutdown, in batches", got)
	}
	handledMu.Lock()
	defer handledMu.Unlock()
	want := "6 spans dropped: they ended faster than the collector took them, and the export queue of 4 spans was full"
	if !slices.Equal(handled, []string{want}) {
		t.Errorf("errors reported to OpenTelemetry = %q, want [%q]", handled, want)
	}
}

// TestSpanRecorderSplitsLargeRequests checks that spans too large for one
// export request go out in several, none over 3 MiB, because collectors
// keep gRPC's default limit of 4 MiB. It also checks that strings that are
// not UTF-8 leave each request valid, since the client decodes each one as
// a collector would.
func TestSpanRecorderSplitsLargeRequests(t *testing.T) {
	client := newBlockingClient()
	close(client.release)
	provider, shutdown := telemetry.NewSmallSpanRecorder(client, 100, 100)
	tracer := provider.Tracer("test")
	large := strings.Repeat("x", 64<<10)
	for range 100 {
		_, span := tracer.Start(context.Background(), "span \xff")
		span.SetAttributes(attribute.String("large", large), attribute.String("invalid", "a\xffb"))
		span.End()
	}
	if err := shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	client.mu.Lock()
	defer client.mu.Unlock()
	total := 0
	for _, n := range client.counts {
		total += n
	}
	if total != 100 {
		t.Errorf("exports had %v spans, %d in all, want 100", client.counts, total)
	}
	if len(client.sizes) < 3 {
		t.Errorf("6.4 MiB of spans went out in %d requests, want at least 3", len(client.sizes))
	}
	for _, size := range client.sizes {
		if size > 3<<20 {
			t.Errorf("a request had %d bytes, want at most 3 MiB", size)
		}
	}
}

// blockingClient is an OTLP client whose uploads wait for release. It
// reports each upload's span count on started.
type blockingClient struct {
	started chan int
	release chan struct{}
	mu      sync.Mutex
	counts  []int
	sizes   []int // bytes of each upload, encoded
}

func newBlockingClient() *blockingClient {
	return &blockingClient{started: make(chan int, 10), release: make(chan struct{})}
}

func (*blockingClient) Start(context.Context) error { return nil }
func (*blockingClient) Stop(context.Context) error  { return nil }

func (c *blockingClient) UploadTraces(ctx context.Context, carriers []*tracepb.ResourceSpans) error {
	n, size := 0, 0
	for _, carrier := range carriers {
		wire, err := proto.Marshal(carrier)
		if err != nil {
			return err
		}
		size += len(wire)
		var decoded tracepb.ResourceSpans
		if err := proto.Unmarshal(wire, &decoded); err != nil {
			return err
		}
		for _, scope := range decoded.GetScopeSpans() {
			n += len(scope.GetSpans())
		}
	}
	c.mu.Lock()
	c.counts = append(c.counts, n)
	c.sizes = append(c.sizes, size)
	c.mu.Unlock()
	select {
	case c.started <- n:
	default: // no test waits for this many exports
	}
	select {
	case <-c.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *blockingClient) exported() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.counts)
}

// TestRecorderApplies checks which settings the recorder leaves to the
// SDK: those of its sampler, batching and span limits that it does not
// read.
func TestRecorderApplies(t *testing.T) {
	ratio := 0.5
	cases := []struct {
		name     string
		env      map[string]string
		ratio    *float64
		recorder bool
	}{
		{"defaults", nil, nil, true},
		{"sampler_ratio", nil, &ratio, true},
		{"OTEL_TRACES_SAMPLER", map[string]string{"OTEL_TRACES_SAMPLER": "always_off"}, nil, false},
		{"OTEL_TRACES_SAMPLER under sampler_ratio", map[string]string{"OTEL_TRACES_SAMPLER": "always_off"}, &ratio, true},
		{"OTEL_BSP_MAX_QUEUE_SIZE", map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, &ratio, true},
		{"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", map[string]string{"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "10"}, nil, false},
		{"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", map[string]string{"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "10"}, nil, false},
		{"OTEL_SERVICE_NAME", map[string]string{"OTEL_SERVICE_NAME": "gw"}, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clearOTelEnv(t)
			for name, value := range c.env {
				t.Setenv(name, value)
			}
			if got := telemetry.RecorderApplies(c.ratio); got != c.recorder {
				t.Errorf("RecorderApplies = %v, want %v", got, c.recorder)
			}
		})
	}
}

// TestSpanRecorderShutdownBounded checks that a shutdown cancels a stuck
// export, one the collector never responds to, once the shutdown's context
// ends, rather than waiting for the export's own 30 s timeout.
func TestSpanRecorderShutdownBounded(t *testing.T) {
	client := newBlockingClient() // never released
	provider, shutdown := telemetry.NewSmallSpanRecorder(client, 1, 4)
	_, span := provider.Tracer("test").Start(context.Background(), "span")
	span.End()
	select {
	case <-client.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no export within 10 s of a full batch")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	returned := make(chan error, 1)
	go func() { returned <- shutdown(ctx) }()
	select {
	case err := <-returned:
		if err != nil {
			t.Logf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown still waits 10 s after its context ended")
	}
}

// TestSpanRecorderTracersMeanwhile creates tracers while spans are
// exported, which the race detector checks, and expects every span of
// every tracer at shutdown.
func TestSpanRecorderTracersMeanwhile(t *testing.T) {
	client := newBlockingClient()
	close(client.release)
	provider, shutdown := telemetry.NewSmallSpanRecorder(client, 1, 1000)
	const tracers = 50
	var wg sync.WaitGroup
	for i := range tracers {
		wg.Go(func() {
			_, span := provider.Tracer(fmt.Sprint("scope ", i)).Start(context.Background(), "span")
			span.End()
		})
	}
	wg.Wait()
	if err := shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	total := 0
	for _, n := range client.exported() {
		total += n
	}
	if total != tracers {
		t.Errorf("exported %d spans, want %d, one per tracer", total, tracers)
	}
}

// TestBatchSettingsFromEnvironment checks that the recorder takes its
// batch settings from the OTEL_BSP_* variables, read as the SDK reads
// them, so that a larger queue does not send the spans through the
// slower SDK.
func TestBatchSettingsFromEnvironment(t *testing.T) {
	receiver := otlptest.StartGRPC(t)
	cfg := config.Telemetry{Traces: config.TraceExport{Exporter: config.ExporterOTLP, Endpoint: receiver.Addr, Insecure: true}}
	defaults := telemetry.BatchSettings{ScheduleDelay: 5 * time.Second, ExportTimeout: 30 * time.Second, QueueSize: 2048, BatchSize: 512}
	tests := []struct {
		name string
		env  map[string]string
		want telemetry.BatchSettings
	}{
		{"defaults", nil, defaults},
		{"every variable", map[string]string{
			"OTEL_BSP_SCHEDULE_DELAY": "250", "OTEL_BSP_EXPORT_TIMEOUT": "1000",
			"OTEL_BSP_MAX_QUEUE_SIZE": "10000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1000",
		}, telemetry.BatchSettings{ScheduleDelay: 250 * time.Millisecond, ExportTimeout: time.Second, QueueSize: 10000, BatchSize: 1000}},
		{"batch over a small queue", map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1000"},
			telemetry.BatchSettings{ScheduleDelay: 5 * time.Second, ExportTimeout: 30 * time.Second, QueueSize: 100, BatchSize: 100}},
		{"batch over a large queue", map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "1000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2000"},
			telemetry.BatchSettings{ScheduleDelay: 5 * time.Second, ExportTimeout: 30 * time.Second, QueueSize: 1000, BatchSize: 512}},
		{"no export timeout", map[string]string{"OTEL_BSP_EXPORT_TIMEOUT": "0"},
			telemetry.BatchSettings{ScheduleDelay: 5 * time.Second, ExportTimeout: 0, QueueSize: 2048, BatchSize: 512}},
		{"largest values", map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "2147483647", "OTEL_BSP_MAX_QUEUE_SIZE": "2147483647"},
			telemetry.BatchSettings{ScheduleDelay: 2147483647 * time.Millisecond, ExportTimeout: 30 * time.Second, QueueSize: 2147483647, BatchSize: 512}},
		{"empty value", map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": ""}, defaults},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTelEnv(t)
			for name, value := range tt.env {
				t.Setenv(name, value)
			}
			p, err := telemetry.New(context.Background(), cfg, telemetry.Options{})
			if err != nil {
				t.Fatalf("telemetry.New: %v", err)
			}
			defer shutdown(t, p)
			got, ok := telemetry.RecorderBatchSettings(p.TracerProvider)
			if !ok {
				t.Fatalf("tracer provider is %T, want the span recorder", p.TracerProvider)
			}
			if got != tt.want {
				t.Errorf("batch settings = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestBadBatchSettingRejected checks that an OTEL_BSP_* value out of range
// or not a whole number stops telemetry.New with an error that names the
// variable, and leaves no goroutine of the exporter behind. That holds
// whether the recorder or the SDK would take the spans, since the SDK's
// batch span processor panics on a negative queue size, and a delay past
// the range overflows a time.Duration. Without an exporter, nothing reads
// the variables.
func TestBadBatchSettingRejected(t *testing.T) {
	receiver := otlptest.StartGRPC(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	exporting := config.Telemetry{Traces: config.TraceExport{Exporter: config.ExporterOTLP, Endpoint: receiver.Addr, Insecure: true}}
	tests := []struct {
		name, variable, value string
		throughSDK            bool
	}{
		{"negative queue", "OTEL_BSP_MAX_QUEUE_SIZE", "-1", false},
		{"negative queue through the SDK", "OTEL_BSP_MAX_QUEUE_SIZE", "-1", true},
		{"zero batch", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0", false},
		{"negative timeout through the SDK", "OTEL_BSP_EXPORT_TIMEOUT", "-1", true},
		{"delay not a number", "OTEL_BSP_SCHEDULE_DELAY", "5s", false},
		{"delay past the range", "OTEL_BSP_SCHEDULE_DELAY", "9223372036855", false},
		{"queue past the range", "OTEL_BSP_MAX_QUEUE_SIZE", "2147483648", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTelEnv(t)
			t.Setenv(tt.variable, tt.value)
			if tt.throughSDK {
				t.Setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "64")
			}
			p, err := telemetry.New(context.Background(), exporting, telemetry.Options{})
			if err == nil {
				shutdown(t, p)
				t.Fatalf("telemetry.New with %s=%q = nil error, want one", tt.variable, tt.value)
			}
			if want := fmt.Sprintf("environment variable %s=%q is invalid", tt.variable, tt.value); !strings.Contains(err.Error(), want) {
				t.Errorf("telemetry.New error = %q, want it to contain %q", err, want)
			}
		})
	}

	t.Run("no exporter", func(t *testing.T) {
		clearOTelEnv(t)
		t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "-1")
		p, err := telemetry.New(context.Background(), config.Telemetry{}, telemetry.Options{})
		if err != nil {
			t.Fatalf("telemetry.New without an exporter: %v", err)
		}
		shutdown(t, p)
	})
}

// TestSpanRecorderExportTimeout checks that the recorder bounds each
// export by its export timeout, and that a timeout of 0 leaves an export
// unbounded, as OTEL_BSP_EXPORT_TIMEOUT=0 does in the SDK.
func TestSpanRecorderExportTimeout(t *testing.T) {
	for _, timeout := range []time.Duration{0, time.Hour} {
		t.Run(timeout.String(), func(t *testing.T) {
			client := &deadlineClient{deadlines: make(chan deadline, 1)}
			provider, shutdown := telemetry.NewBatchingSpanRecorder(client, telemetry.BatchSettings{
				ScheduleDelay: time.Hour, ExportTimeout: timeout, QueueSize: 10, BatchSize: 1,
			})
			defer shutdown(context.Background())
			_, span := provider.Tracer("test").Start(context.Background(), "span")
			span.End() // a full batch: the recorder exports it at once

			var got deadline
			select {
			case got = <-client.deadlines:
			case <-time.After(10 * time.Second):
				t.Fatal("no export within 10 s of a full batch")
			}
			if timeout == 0 {
				if got.set {
					t.Errorf("export deadline in %v, want none", got.left)
				}
				return
			}
			if !got.set || got.left > timeout || got.left < timeout-time.Minute {
				t.Errorf("export deadline set %v, in %v; want one in about %v", got.set, got.left, timeout)
			}
		})
	}
}

// deadline is whether an export's context had a deadline, and how far.
type deadline struct {
	set  bool
	left time.Duration
}

// deadlineClient records the deadline of each export's context.
type deadlineClient struct{ deadlines chan deadline }

func (*deadlineClient) Start(context.Context) error { return nil }
func (*deadlineClient) Stop(context.Context) error  { return nil }

func (c *deadlineClient) UploadTraces(ctx context.Context, _ []*tracepb.ResourceSpans) error {
	when, ok := ctx.Deadline()
	select {
	case c.deadlines <- deadline{set: ok, left: time.Until(when)}:
	default: // only the first export is checked
	}
	return nil
}
