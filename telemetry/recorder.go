package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// spanRecorder is the tracer provider when spans go to an OTLP collector
// with the SDK's default span limits. It records each span in a
// small struct, queues it when it ends, and writes the queued spans in the
// OTLP wire format at the next export.
//
// The SDK's spans cost the gateway about a sixth of its CPU on small calls
// with every call traced. Most of it went to their generality: attributes
// normalised, copied into a read-only snapshot and deduplicated through a
// map when the span ends. Here an ended span is queued as it is and
// encoded once, by the exporting goroutine.
//
// The sampler is the SDK's own (parent-based, with the configured ratio),
// and the SDK's OTLP clients send the batches, as for otlpSpanExporter.
// The batching follows the OTEL_BSP_* variables (see batchSettingsFromEnv).
// Settings this recorder does not read (OTEL_TRACES_SAMPLER without a
// sampler_ratio, and the span limit variables) send the gateway through
// the SDK instead: see recorderApplies.
type spanRecorder struct {
	embedded.TracerProvider

	sampler  sdktrace.Sampler
	client   otlptrace.Client
	resource *resource.Resource

	batchSettings

	mu      sync.Mutex
	tracers []*recordingTracer // by instrumentation scope
	queue   []*recordedSpan    // ended spans waiting for the next export
	dropped int                // spans dropped with the queue full, since the last report
	stopped bool

	full chan struct{} // a batch is full; capacity 1
	stop chan struct{}
	done chan struct{}
	// exports is the parent context of background exports, cancelled when
	// a shutdown runs out of time.
	exports      context.Context
	cancelExport context.CancelFunc

	// buf is the encoded request, and spare the queue's other slice, both
	// reused by the exporting goroutine only.
	buf   []byte
	spare []*recordedSpan
}

// The SDK's defaults for the batch span processor and the span limits.
const (
	recorderBatchSize     = 512
	recorderQueueSize     = 2048
	recorderScheduleDelay = 5 * time.Second
	recorderExportTimeout = 30 * time.Second
	recorderCountLimit    = 128 // attributes, events, links, and attributes per event or link
)

// recorderApplies reports whether the recorder can stand in for the SDK:
// it reads no environment variable of the SDK's sampler or span limits,
// so their presence sends spans through the SDK.
func recorderApplies(samplerRatio *float64) bool {
	for _, entry := range os.Environ() {
		name, _, _ := strings.Cut(entry, "=")
		switch {
		case name == "OTEL_TRACES_SAMPLER" || name == "OTEL_TRACES_SAMPLER_ARG":
			if samplerRatio == nil {
				return false
			}
		case strings.HasPrefix(name, "OTEL_SPAN_"), strings.HasPrefix(name, "OTEL_EVENT_"),
			strings.HasPrefix(name, "OTEL_LINK_"), strings.HasPrefix(name, "OTEL_ATTRIBUTE_"):
			return false
		}
	}
	return true
}

// batchSettings are the settings of a batch span processor.
type batchSettings struct {
	scheduleDelay, exportTimeout time.Duration
	queueSize, batchSize         int
}

// defaultBatchSettings are the SDK's defaults.
var defaultBatchSettings = batchSettings{
	scheduleDelay: recorderScheduleDelay, exportTimeout: recorderExportTimeout,
	queueSize: recorderQueueSize, batchSize: recorderBatchSize,
}

// maxBatchSetting is the largest value of an OTEL_BSP_* variable. The
// OpenTelemetry specification recommends that SDKs support integers from
// 0 to 2³¹−1, and the limit keeps a delay in milliseconds far below the
// overflow of a time.Duration.
const maxBatchSetting = 1<<31 - 1

// batchSettingsFromEnv reads the OTEL_BSP_* variables as the SDK (v1.47)
// does: whole numbers, delays in milliseconds, an empty value as unset,
// an export timeout of 0 as none, and a batch larger than the queue cut
// down to the default batch size, or to the queue when that is smaller.
// A value out of range or not a number is an error, as a bad
// key of the gateway's own configuration is. The SDK ignores such a
// value, or panics on a negative size, and the specification recommends a
// warning and the default, which would leave a mistyped queue unnoticed.
func batchSettingsFromEnv() (batchSettings, error) {
	settings := defaultBatchSettings
	var errs []error
	read := func(name, unit string, lowest int, apply func(n int)) {
		value := os.Getenv(name)
		if value == "" {
			return
		}
		n, err := strconv.Atoi(value)
		if err != nil || n < lowest || n > maxBatchSetting {
			errs = append(errs, fmt.Errorf("environment variable %s=%q is invalid: want a whole number of %s from %d to %d",
				name, value, unit, lowest, maxBatchSetting))
			return
		}
		apply(n)
	}
	read("OTEL_BSP_SCHEDULE_DELAY", "milliseconds", 1, func(n int) { settings.scheduleDelay = time.Duration(n) * time.Millisecond })
	read("OTEL_BSP_EXPORT_TIMEOUT", "milliseconds (0 for none)", 0, func(n int) { settings.exportTimeout = time.Duration(n) * time.Millisecond })
	read("OTEL_BSP_MAX_QUEUE_SIZE", "spans", 1, func(n int) { settings.queueSize = n })
	read("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "spans", 1, func(n int) { settings.batchSize = n })
	if settings.batchSize > settings.queueSize {
		settings.batchSize = min(recorderBatchSize, settings.queueSize)
	}
	return settings, errors.Join(errs...)
}

// sdkOptions returns settings as options of the SDK's batch span processor.
func (settings batchSettings) sdkOptions() []sdktrace.BatchSpanProcessorOption {
	return []sdktrace.BatchSpanProcessorOption{
		sdktrace.WithBatchTimeout(settings.scheduleDelay), sdktrace.WithExportTimeout(settings.exportTimeout),
		sdktrace.WithMaxQueueSize(settings.queueSize), sdktrace.WithMaxExportBatchSize(settings.batchSize),
	}
}

// newSpanRecorder returns a recorder that samples with sampler, batches
// with settings, and sends its batches through client, which it owns
// from then on.
func newSpanRecorder(res *resource.Resource, sampler sdktrace.Sampler, client otlptrace.Client, settings batchSettings) *spanRecorder {
	r := &spanRecorder{
		sampler: sampler, client: client, resource: res, batchSettings: settings,
		full: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	r.exports, r.cancelExport = context.WithCancel(context.Background())
	return r
}

// Tracer returns the tracer of one instrumentation scope.
func (r *spanRecorder) Tracer(name string, options ...trace.TracerOption) trace.Tracer {
	cfg := trace.NewTracerConfig(options...)
	scope := instrumentation.Scope{
		Name: name, Version: cfg.InstrumentationVersion(), SchemaURL: cfg.SchemaURL(), Attributes: cfg.InstrumentationAttributes(),
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.tracers {
		if t.scope == scope {
			return t
		}
	}
	t := &recordingTracer{recorder: r, scope: scope}
	r.tracers = append(r.tracers, t)
	return t
}

// start begins exporting in the background.
func (r *spanRecorder) start() *spanRecorder {
	go r.run()
	return r
}

// run exports a batch when one is full, and what there is every
// scheduleDelay, until Shutdown.
func (r *spanRecorder) run() {
	defer close(r.done)
	tick := time.NewTicker(r.scheduleDelay)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-r.full:
		case <-tick.C:
		}
		ctx, cancel := r.exportContext()
		if err := r.export(ctx); err != nil {
			otel.Handle(err)
		}
		cancel()
		r.reportDropped()
	}
}

// exportContext bounds one export by the export timeout, where 0 means
// no bound, as in the SDK.
func (r *spanRecorder) exportContext() (context.Context, context.CancelFunc) {
	if r.exportTimeout == 0 {
		return context.WithCancel(r.exports)
	}
	return context.WithTimeout(r.exports, r.exportTimeout)
}

// reportDropped reports the spans dropped since the last report to
// OpenTelemetry's error handler, which the gateway counts and logs. The
// SDK's queue drops spans the same way, and logs the count only at debug
// level.
func (r *spanRecorder) reportDropped() {
	r.mu.Lock()
	dropped := r.dropped
	r.dropped = 0
	r.mu.Unlock()
	if dropped > 0 {
		otel.Handle(&DroppedSpansError{Spans: dropped, QueueSize: r.queueSize})
	}
}

// DroppedSpansError reports spans that the recorder dropped because its
// export queue was full. It reaches OpenTelemetry's error handler apart
// from export errors, so that a handler that limits its warnings can keep
// a count of its own for it: a failing collector reports an export error
// just before each count.
type DroppedSpansError struct {
	Spans     int // dropped since the last report
	QueueSize int
}

func (e *DroppedSpansError) Error() string {
	return fmt.Sprintf("%d spans dropped: they ended faster than the collector took them, and the export queue of %d spans was full", e.Spans, e.QueueSize)
}

// export encodes the spans queued so far and sends them in requests of
// up to batchSize spans, as the SDK's batcher does, and of up to
// maxRequestBytes. One request of the whole queue, with script texts in
// the spans, could pass a collector's message limit (gRPC's default is
// 4 MiB) and lose every span in it.
// Spans that end meanwhile go to the next export. Encoding here, rather
// than in End, keeps it off the calls' goroutines, whose stacks it made
// grow.
func (r *spanRecorder) export(ctx context.Context) error {
	r.mu.Lock()
	spans := r.queue
	r.queue = r.spare[:0]
	tracers := r.tracers[:len(r.tracers):len(r.tracers)] // Tracer may append meanwhile
	r.mu.Unlock()
	if len(spans) == 0 {
		r.spare = spans
		return nil
	}

	var errs []error
	for batch := range slices.Chunk(spans, r.batchSize) {
		errs = append(errs, r.exportBatch(ctx, batch, tracers))
	}
	r.spare = spans[:0]
	return errors.Join(errs...)
}

// maxRequestBytes bounds an export request below gRPC's default message
// limit of 4 MiB, which collectors keep: a larger request loses every
// span in it. Spans with long attributes, such as script texts, can reach
// it in fewer than batchSize spans.
const maxRequestBytes = 3 << 20

// exportBatch encodes batch and sends it, in halves while its encoding is
// over maxRequestBytes and it has more than one span, and then frees its
// spans.
func (r *spanRecorder) exportBatch(ctx context.Context, batch []*recordedSpan, tracers []*recordingTracer) error {
	group := resourceGroup{resource: r.resource}
	for _, t := range tracers {
		var scoped []spanFields
		for _, span := range batch {
			if span.tracer == t {
				scoped = append(scoped, span)
			}
		}
		if len(scoped) > 0 {
			group.scopes = append(group.scopes, scopeGroup{scope: t.scope, spans: scoped})
		}
	}
	r.buf = appendResourceSpans(r.buf[:0], group)
	if len(r.buf) > maxRequestBytes && len(batch) > 1 {
		half := len(batch) / 2
		return errors.Join(r.exportBatch(ctx, batch[:half], tracers), r.exportBatch(ctx, batch[half:], tracers))
	}
	for i, span := range batch {
		span.release()
		batch[i] = nil
	}
	return upload(ctx, r.client, []*tracepb.ResourceSpans{carrier(r.buf)})
}

// add queues an ended span for the next export, or drops it when
// queueSize spans wait already, as the SDK's queue does when the
// collector cannot keep up.
func (r *spanRecorder) add(span *recordedSpan) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || len(r.queue) >= r.queueSize {
		if !r.stopped {
			r.dropped++
		}
		span.release()
		return
	}
	r.queue = append(r.queue, span)
	if len(r.queue)%r.batchSize == 0 {
		select {
		case r.full <- struct{}{}:
		default: // an export is due already
		}
	}
}

// Shutdown exports what is left and stops the client, within ctx: an
// export under way, which may be retrying against an absent collector, is
// ended when ctx ends.
func (r *spanRecorder) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return nil
	}
	r.stopped = true
	r.mu.Unlock()
	close(r.stop)
	select {
	case <-r.done:
	case <-ctx.Done():
		r.cancelExport()
		<-r.done
	}
	r.cancelExport()
	err := r.export(ctx)
	r.reportDropped()
	if stopErr := r.client.Stop(ctx); err == nil {
		err = stopErr
	}
	return err
}

// recordingTracer starts the spans of one instrumentation scope.
type recordingTracer struct {
	embedded.Tracer
	recorder *spanRecorder
	scope    instrumentation.Scope
}

// Start begins a span as the SDK does: a child of the span in ctx, or the
// root of a new trace, sampled by the recorder's sampler.
func (t *recordingTracer) Start(ctx context.Context, name string, options ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(options...)
	if cfg.NewRoot() {
		ctx = trace.ContextWithSpanContext(ctx, trace.SpanContext{})
	}
	parent := trace.SpanContextFromContext(ctx)
	traceID := parent.TraceID()
	if !traceID.IsValid() {
		traceID = newTraceID()
	}
	sampled := t.recorder.sampler.ShouldSample(sdktrace.SamplingParameters{
		ParentContext: ctx, TraceID: traceID, Name: name, Kind: cfg.SpanKind(), Attributes: cfg.Attributes(), Links: cfg.Links(),
	})
	flags := parent.TraceFlags() &^ trace.FlagsSampled
	if sampled.Decision == sdktrace.RecordAndSample {
		flags |= trace.FlagsSampled
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: newSpanID(), TraceFlags: flags, TraceState: sampled.Tracestate,
	})
	if sampled.Decision == sdktrace.Drop {
		ctx = trace.ContextWithSpanContext(ctx, sc)
		return ctx, trace.SpanFromContext(ctx)
	}

	s := &recordedSpan{tracer: t, sc: sc, parent: parent, name: name, kind: cfg.SpanKind(), start: cfg.Timestamp()}
	if s.kind == 0 {
		s.kind = trace.SpanKindInternal
	}
	if s.start.IsZero() {
		s.start = time.Now()
	}
	s.SetAttributes(sampled.Attributes...)
	s.SetAttributes(cfg.Attributes()...)
	for _, link := range cfg.Links() {
		s.AddLink(link)
	}
	return trace.ContextWithSpan(ctx, s), s
}

// recordedSpan is one span under way. Its methods are those that the
// encoder reads (see spanFields) and those of trace.Span.
type recordedSpan struct {
	embedded.Span
	tracer *recordingTracer
	sc     trace.SpanContext
	parent trace.SpanContext
	kind   trace.SpanKind
	start  time.Time

	mu                sync.Mutex
	ended             bool
	end               time.Time
	name              string
	attributes        []attribute.KeyValue
	attributesBox     *[]attribute.KeyValue // from attributeSlices, for attributes
	droppedAttributes int
	events            []sdktrace.Event
	droppedEvents     int
	links             []sdktrace.Link
	droppedLinks      int
	status            sdktrace.Status
}

func (s *recordedSpan) SpanContext() trace.SpanContext { return s.sc }

func (s *recordedSpan) IsRecording() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.ended
}

func (s *recordedSpan) SetStatus(code codes.Code, description string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Ok is final and Error replaces Unset, as in the SDK.
	if s.ended || s.status.Code > code {
		return
	}
	s.status = sdktrace.Status{Code: code}
	if code == codes.Error {
		s.status.Description = description
	}
}

func (s *recordedSpan) SetName(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.name = name
	}
}

// SetAttributes sets attributes, a later value replacing an earlier one of
// the same key, and counts those over the limit as dropped.
func (s *recordedSpan) SetAttributes(attributes ...attribute.KeyValue) {
	if len(attributes) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	if s.attributesBox == nil {
		s.attributesBox = attributeSlices.Get().(*[]attribute.KeyValue)
		s.attributes = (*s.attributesBox)[:0]
	}
	s.attributes, s.droppedAttributes = setAttributes(s.attributes, s.droppedAttributes, attributes)
}

// setAttributes adds attributes to list, replacing the values of keys it
// has and dropping invalid ones and those over the limit.
func setAttributes(list []attribute.KeyValue, dropped int, attributes []attribute.KeyValue) ([]attribute.KeyValue, int) {
	// Grown once for all of them: a list fresh from the pool, which loses
	// its lists at each collection, would otherwise double seven times for
	// the gateway's server span, copying 8 kB.
	list = slices.Grow(list, min(len(attributes), recorderCountLimit-len(list)))
	for _, kv := range attributes {
		if !kv.Valid() {
			dropped++
			continue
		}
		if i := indexOfKey(list, kv.Key); i >= 0 {
			list[i] = kv
			continue
		}
		if len(list) >= recorderCountLimit {
			dropped++
			continue
		}
		list = append(list, kv)
	}
	return list, dropped
}

// indexOfKey returns where key is in list, or -1. A span has a few dozen
// attributes at most, which a scan covers faster than a map is built.
func indexOfKey(list []attribute.KeyValue, key attribute.Key) int {
	for i := range list {
		if list[i].Key == key {
			return i
		}
	}
	return -1
}

// AddEvent adds an event. Its attribute keys are made unique, the last
// value winning, as OTLP requires; the SDK (v1.47) sends a repeated key
// of an event twice.
func (s *recordedSpan) AddEvent(name string, options ...trace.EventOption) {
	cfg := trace.NewEventConfig(options...)
	event := sdktrace.Event{Name: name, Time: cfg.Timestamp()}
	event.Attributes, event.DroppedAttributeCount = setAttributes(nil, 0, cfg.Attributes())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.events = appendEvicting(s.events, event, &s.droppedEvents)
}

func (s *recordedSpan) AddLink(link trace.Link) {
	if !link.SpanContext.IsValid() && len(link.Attributes) == 0 && link.SpanContext.TraceState().Len() == 0 {
		return
	}
	l := sdktrace.Link{SpanContext: link.SpanContext}
	l.Attributes, l.DroppedAttributeCount = setAttributes(nil, 0, link.Attributes)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.links = appendEvicting(s.links, l, &s.droppedLinks)
}

// appendEvicting appends item to list, and when list is at
// recorderCountLimit, first drops its oldest item and counts it in
// dropped, as the SDK does with events and links.
func appendEvicting[T any](list []T, item T, dropped *int) []T {
	if len(list) >= recorderCountLimit {
		list = append(list[:0], list[1:]...)
		*dropped++
	}
	return append(list, item)
}

// RecordError adds an exception event, as the SDK does.
func (s *recordedSpan) RecordError(err error, options ...trace.EventOption) {
	if err == nil {
		return
	}
	options = append(options, trace.WithAttributes(semconv.ExceptionType(errorType(err)), semconv.ExceptionMessage(err.Error())))
	s.AddEvent(semconv.ExceptionEventName, options...)
}

// errorType names an error's type as the SDK does: its package path and
// name, or the type itself for a type without a name.
func errorType(err error) string {
	t := reflect.TypeOf(err)
	if t.PkgPath() == "" && t.Name() == "" {
		return t.String()
	}
	return t.PkgPath() + "." + t.Name()
}

// End ends the span and queues it for export when sampled.
//
// NOTE: unlike the SDK's End, it does not record a panic under way as an
// exception event when deferred. The gateway ends its spans explicitly,
// never in a deferred call.
func (s *recordedSpan) End(options ...trace.SpanEndOption) {
	cfg := trace.NewSpanEndConfig(options...)
	end := cfg.Timestamp()
	if end.IsZero() {
		end = time.Now()
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended, s.end = true, end
	s.mu.Unlock()

	if s.sc.IsSampled() {
		s.tracer.recorder.add(s)
	} else {
		s.release()
	}
}

// release returns the span's attribute list to its pool once nothing
// reads it: after export, or at End for a span not exported.
func (s *recordedSpan) release() {
	if s.attributesBox != nil {
		clear(s.attributes) // let go of the values' strings
		*s.attributesBox = s.attributes[:0]
		attributeSlices.Put(s.attributesBox)
		s.attributes, s.attributesBox = nil, nil
	}
}

func (s *recordedSpan) TracerProvider() trace.TracerProvider { return s.tracer.recorder }

// The methods below are those of spanFields, which the encoder reads once
// the span ended.

func (s *recordedSpan) Parent() trace.SpanContext        { return s.parent }
func (s *recordedSpan) Name() string                     { return s.name }
func (s *recordedSpan) SpanKind() trace.SpanKind         { return s.kind }
func (s *recordedSpan) StartTime() time.Time             { return s.start }
func (s *recordedSpan) EndTime() time.Time               { return s.end }
func (s *recordedSpan) Attributes() []attribute.KeyValue { return s.attributes }
func (s *recordedSpan) DroppedAttributes() int           { return s.droppedAttributes }
func (s *recordedSpan) Events() []sdktrace.Event         { return s.events }
func (s *recordedSpan) DroppedEvents() int               { return s.droppedEvents }
func (s *recordedSpan) Links() []sdktrace.Link           { return s.links }
func (s *recordedSpan) DroppedLinks() int                { return s.droppedLinks }
func (s *recordedSpan) Status() sdktrace.Status          { return s.status }

// attributeSlices pools the spans' attribute lists, which every traced
// call would otherwise allocate.
var attributeSlices = sync.Pool{New: func() any { return new([]attribute.KeyValue) }}
