// Package telemetry sets up OpenTelemetry for the gateway: a tracer
// provider with the configured exporter and sampler, and a meter provider
// that always feeds the Prometheus endpoint and, when configured, an OTLP
// or stdout exporter too.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprometheus "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/ssegw/ssegw/config"
)

// Providers are the OpenTelemetry providers of one gateway process.
type Providers struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider

	// Metrics serves every metric in the Prometheus text format.
	Metrics http.Handler

	shutdown []func(context.Context) error
}

// Options are what tests and the demo add to the configuration.
type Options struct {
	// Version is the gateway's version, recorded as service.version.
	Version string

	// SpanProcessors receive every span, besides the exporter's processor.
	SpanProcessors []sdktrace.SpanProcessor
}

// New builds the providers. Keys left empty in cfg fall back to the
// OpenTelemetry environment variables, read by autoexport and the SDK as
// every OpenTelemetry SDK reads them; without either, nothing is exported.
func New(ctx context.Context, cfg config.Telemetry, opts Options) (*Providers, error) {
	res, err := newResource(ctx, cfg, opts.Version)
	if err != nil {
		return nil, err
	}
	p := &Providers{}

	// Traces.
	exporter, err := newSpanExporter(ctx, cfg.Traces)
	if err != nil {
		return nil, fmt.Errorf("telemetry.traces: %w", err)
	}
	traceOptions := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if exporter != nil && !autoexport.IsNoneSpanExporter(exporter) {
		traceOptions = append(traceOptions, sdktrace.WithBatcher(exporter))
	}
	for _, processor := range opts.SpanProcessors {
		traceOptions = append(traceOptions, sdktrace.WithSpanProcessor(processor))
	}
	if ratio := cfg.Traces.SamplerRatio; ratio != nil {
		traceOptions = append(traceOptions, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*ratio))))
	}
	// Without WithSampler, the SDK reads OTEL_TRACES_SAMPLER itself.
	tracerProvider := sdktrace.NewTracerProvider(traceOptions...)
	p.TracerProvider = tracerProvider
	p.shutdown = append(p.shutdown, tracerProvider.Shutdown)

	// Metrics: a Prometheus reader for /metrics, and the configured one.
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promReader, err := otelprometheus.New(otelprometheus.WithRegisterer(registry), otelprometheus.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("telemetry: Prometheus exporter: %w", err)
	}
	meterOptions := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promReader)}
	reader, err := newMetricReader(ctx, cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("telemetry.metrics: %w", err)
	}
	if reader != nil && !autoexport.IsNoneMetricReader(reader) {
		meterOptions = append(meterOptions, sdkmetric.WithReader(reader))
	}
	meterProvider := sdkmetric.NewMeterProvider(meterOptions...)
	p.MeterProvider = meterProvider
	p.Metrics = promhttp.HandlerFor(registry, promhttp.HandlerOpts{})
	p.shutdown = append(p.shutdown, meterProvider.Shutdown)
	return p, nil
}

// Shutdown flushes and stops the exporters.
func (p *Providers) Shutdown(ctx context.Context) error {
	var errs []error
	for _, shutdown := range p.shutdown {
		errs = append(errs, shutdown(ctx))
	}
	return errors.Join(errs...)
}

func newResource(ctx context.Context, cfg config.Telemetry, version string) (*resource.Resource, error) {
	attributes := []attribute.KeyValue{semconv.ServiceName("ssegw")}
	if version != "" {
		attributes = append(attributes, semconv.ServiceVersion(version))
	}
	options := []resource.Option{
		resource.WithAttributes(attributes...),
		// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the
		// default name; the file overrides both.
		resource.WithFromEnv(),
		resource.WithHost(),
		resource.WithProcessPID(),
	}
	if cfg.ServiceName != "" {
		options = append(options, resource.WithAttributes(semconv.ServiceName(cfg.ServiceName)))
	}
	res, err := resource.New(ctx, options...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: describing the process: %w", err)
	}
	return res, nil
}

// newSpanExporter returns the exporter the file names or, when it names
// none, the one the environment names; nil means none.
func newSpanExporter(ctx context.Context, cfg config.TraceExport) (sdktrace.SpanExporter, error) {
	switch cfg.Exporter {
	case "":
		return autoexport.NewSpanExporter(ctx, autoexport.WithFallbackSpanExporter(
			func(context.Context) (sdktrace.SpanExporter, error) { return nil, nil }))
	case config.ExporterNone:
		return nil, nil
	case config.ExporterStdout:
		return stdouttrace.New(stdouttrace.WithWriter(os.Stdout))
	case config.ExporterOTLP:
		var options []otlptracegrpc.Option
		if cfg.Endpoint != "" {
			options = append(options, otlptracegrpc.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			options = append(options, otlptracegrpc.WithInsecure())
		}
		return otlptracegrpc.New(ctx, options...)
	case config.ExporterOTLPHTTP:
		var options []otlptracehttp.Option
		if cfg.Endpoint != "" {
			options = append(options, endpointOption(cfg.Endpoint, otlptracehttp.WithEndpointURL, otlptracehttp.WithEndpoint))
		}
		if cfg.Insecure {
			options = append(options, otlptracehttp.WithInsecure())
		}
		return otlptracehttp.New(ctx, options...)
	}
	return nil, fmt.Errorf("unknown exporter %q", cfg.Exporter)
}

// newMetricReader is newSpanExporter for metrics.
func newMetricReader(ctx context.Context, cfg config.MetricExport) (sdkmetric.Reader, error) {
	var periodic []sdkmetric.PeriodicReaderOption
	if cfg.Interval > 0 {
		periodic = append(periodic, sdkmetric.WithInterval(cfg.Interval))
	}
	var (
		exporter sdkmetric.Exporter
		err      error
	)
	switch cfg.Exporter {
	case "":
		return autoexport.NewMetricReader(ctx, autoexport.WithFallbackMetricReader(
			func(context.Context) (sdkmetric.Reader, error) { return nil, nil }))
	case config.ExporterNone:
		return nil, nil
	case config.ExporterStdout:
		exporter, err = stdoutmetric.New(stdoutmetric.WithWriter(os.Stdout))
	case config.ExporterOTLP:
		var options []otlpmetricgrpc.Option
		if cfg.Endpoint != "" {
			options = append(options, otlpmetricgrpc.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			options = append(options, otlpmetricgrpc.WithInsecure())
		}
		exporter, err = otlpmetricgrpc.New(ctx, options...)
	case config.ExporterOTLPHTTP:
		var options []otlpmetrichttp.Option
		if cfg.Endpoint != "" {
			options = append(options, endpointOption(cfg.Endpoint, otlpmetrichttp.WithEndpointURL, otlpmetrichttp.WithEndpoint))
		}
		if cfg.Insecure {
			options = append(options, otlpmetrichttp.WithInsecure())
		}
		exporter, err = otlpmetrichttp.New(ctx, options...)
	default:
		return nil, fmt.Errorf("unknown exporter %q", cfg.Exporter)
	}
	if err != nil {
		return nil, err
	}
	return sdkmetric.NewPeriodicReader(exporter, periodic...), nil
}

// endpointOption passes a URL ("http://collector:4318") as a URL and a
// bare host:port as an endpoint, so both forms work in the file.
func endpointOption[O any](endpoint string, withURL, withEndpoint func(string) O) O {
	if len(endpoint) > 7 && (endpoint[:7] == "http://" || (len(endpoint) > 8 && endpoint[:8] == "https://")) {
		return withURL(endpoint)
	}
	return withEndpoint(endpoint)
}
