package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// NewOTLPSpanExporter lets the external tests compare the gateway's span
// exporter with the SDK's.
var NewOTLPSpanExporter = newOTLPSpanExporter

// DescribeExport lets the external tests check the start-up log's words.
var DescribeExport = describeExport

// NewSpanRecorder lets the external tests compare the gateway's span
// recorder with the SDK's tracer provider.
func NewSpanRecorder(res *resource.Resource, sampler sdktrace.Sampler, client otlptrace.Client) (trace.TracerProvider, func(context.Context) error) {
	r := newSpanRecorder(res, sampler, client, defaultBatchSettings).start()
	return r, r.Shutdown
}

// NewSmallSpanRecorder is NewSpanRecorder with a batch of batchSize spans,
// a queue of queueSize and no scheduled export.
func NewSmallSpanRecorder(client otlptrace.Client, batchSize, queueSize int) (trace.TracerProvider, func(context.Context) error) {
	return NewBatchingSpanRecorder(client, BatchSettings{
		ScheduleDelay: time.Hour, ExportTimeout: recorderExportTimeout, QueueSize: queueSize, BatchSize: batchSize,
	})
}

// RecorderApplies lets the external tests check when the recorder
// replaces the SDK.
var RecorderApplies = recorderApplies

// BatchSettings are the batch span processor's settings, for the external
// tests.
type BatchSettings struct {
	ScheduleDelay, ExportTimeout time.Duration
	QueueSize, BatchSize         int
}

// RecorderBatchSettings returns the settings of tp when it is the span
// recorder, and false otherwise.
func RecorderBatchSettings(tp trace.TracerProvider) (BatchSettings, bool) {
	r, ok := tp.(*spanRecorder)
	if !ok {
		return BatchSettings{}, false
	}
	return BatchSettings{r.scheduleDelay, r.exportTimeout, r.queueSize, r.batchSize}, true
}

// NewBatchingSpanRecorder is NewSpanRecorder with settings, an empty
// resource and every span sampled.
func NewBatchingSpanRecorder(client otlptrace.Client, settings BatchSettings) (trace.TracerProvider, func(context.Context) error) {
	r := newSpanRecorder(resource.Empty(), sdktrace.AlwaysSample(), client, batchSettings{
		scheduleDelay: settings.ScheduleDelay, exportTimeout: settings.ExportTimeout,
		queueSize: settings.QueueSize, batchSize: settings.BatchSize,
	})
	r.start()
	return r, r.Shutdown
}
