// Package telemetry sets up OpenTelemetry for the gateway: a tracer
// provider with the configured exporter and sampler, and a meter provider
// that always feeds the Prometheus endpoint and, when configured, an OTLP
// or stdout exporter too.
package telemetry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

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

	// TracesExport and MetricsExport describe where spans and metrics are
	// exported, such as "OTLP/gRPC to collector:4317", for the start-up log.
	TracesExport, MetricsExport string

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
// OpenTelemetry environment variables, as the SDKs read them, and New
// rejects those that CheckEnvironment reports. Only CheckEnvironment has
// the listeners, to report a Prometheus port that one of them takes.
// Without either, nothing is exported.
func New(ctx context.Context, cfg config.Telemetry, opts Options) (*Providers, error) {
	if err := checkEnvironment(cfg, nil); err != nil {
		return nil, err
	}
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
	exporting := exporter != nil
	p.TracesExport = describeExport(cfg.Traces.Exporter, cfg.Traces.Endpoint, cfg.Traces.Insecure, "TRACES", exporting)
	otlp, isOTLP := exporter.(*otlpSpanExporter)
	batch := defaultBatchSettings
	if exporting {
		if batch, err = batchSettingsFromEnv(); err != nil {
			exporter.Shutdown(ctx)
			return nil, fmt.Errorf("telemetry.traces: %w", err)
		}
	}
	switch {
	case !exporting && len(opts.SpanProcessors) == 0:
		p.TracerProvider = idTracerProvider{}
	case isOTLP && len(opts.SpanProcessors) == 0 && recorderApplies(cfg.Traces.SamplerRatio):
		sampler := ratioSampler(cfg.Traces.SamplerRatio)
		if sampler == nil {
			sampler = sdktrace.ParentBased(sdktrace.AlwaysSample()) // the SDK's default
		}
		recorder := newSpanRecorder(res, sampler, otlp.client, batch).start()
		p.TracerProvider = recorder
		p.shutdown = append(p.shutdown, recorder.Shutdown)
	default:
		traceOptions := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
		if exporting {
			traceOptions = append(traceOptions, sdktrace.WithBatcher(exporter, batch.sdkOptions()...))
		}
		for _, processor := range opts.SpanProcessors {
			traceOptions = append(traceOptions, sdktrace.WithSpanProcessor(processor))
		}
		if sampler := ratioSampler(cfg.Traces.SamplerRatio); sampler != nil {
			traceOptions = append(traceOptions, sdktrace.WithSampler(sampler))
		}
		// Without WithSampler, the SDK reads OTEL_TRACES_SAMPLER itself.
		tracerProvider := sdktrace.NewTracerProvider(traceOptions...)
		p.TracerProvider = tracerProvider
		p.shutdown = append(p.shutdown, tracerProvider.Shutdown)
	}

	// Metrics: a Prometheus reader for /metrics, and the configured one.
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promReader, err := otelprometheus.New(otelprometheus.WithRegisterer(registry), otelprometheus.WithoutScopeInfo())
	if err != nil {
		p.Shutdown(ctx) // stops the span exporter started above
		return nil, fmt.Errorf("telemetry: Prometheus exporter: %w", err)
	}
	meterOptions := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promReader)}
	reader, err := newMetricReader(ctx, cfg.Metrics)
	if err != nil {
		p.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry.metrics: %w", err)
	}
	metricsExported := reader != nil
	if metricsExported {
		meterOptions = append(meterOptions, sdkmetric.WithReader(reader))
	}
	p.MetricsExport = describeExport(cfg.Metrics.Exporter, cfg.Metrics.Endpoint, cfg.Metrics.Insecure, "METRICS", metricsExported)
	meterProvider := sdkmetric.NewMeterProvider(meterOptions...)
	p.MeterProvider = meterProvider
	p.Metrics = promhttp.HandlerFor(registry, promhttp.HandlerOpts{})
	p.shutdown = append(p.shutdown, meterProvider.Shutdown)
	return p, nil
}

// ratioSampler returns the sampler that sampler_ratio sets: new traces
// kept in that ratio, and calls in a trace following their parent. It
// returns nil when the key is unset.
func ratioSampler(ratio *float64) sdktrace.Sampler {
	if ratio == nil {
		return nil
	}
	return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*ratio))
}

// Shutdown flushes and stops the exporters, all at once, because a
// collector of spans that does not respond would otherwise use all of
// ctx's time and leave the last metrics unsent.
func (p *Providers) Shutdown(ctx context.Context) error {
	errs := make([]error, len(p.shutdown))
	var wg sync.WaitGroup
	for i, shutdown := range p.shutdown {
		wg.Go(func() { errs[i] = shutdown(ctx) })
	}
	wg.Wait()
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
// none, the one OTEL_TRACES_EXPORTER and OTEL_EXPORTER_OTLP_PROTOCOL name;
// nil means none. An endpoint in the file applies in both cases.
func newSpanExporter(ctx context.Context, cfg config.TraceExport) (sdktrace.SpanExporter, error) {
	exporter, err := traceExporterName(cfg)
	if err != nil {
		return nil, err
	}
	switch exporter {
	case config.ExporterNone:
		return nil, nil
	case config.ExporterStdout:
		return stdouttrace.New(stdouttrace.WithWriter(os.Stdout))
	case config.ExporterOTLP:
		var options []otlptracegrpc.Option
		if cfg.Endpoint != "" {
			options = append(options, endpointOption(cfg.Endpoint, "", otlptracegrpc.WithEndpointURL, otlptracegrpc.WithEndpoint))
		}
		if cfg.Insecure {
			options = append(options, otlptracegrpc.WithInsecure())
		}
		return newOTLPSpanExporter(ctx, otlptracegrpc.NewClient(options...))
	case config.ExporterOTLPHTTP:
		var options []otlptracehttp.Option
		if cfg.Endpoint != "" {
			options = append(options, endpointOption(cfg.Endpoint, "/v1/traces", otlptracehttp.WithEndpointURL, otlptracehttp.WithEndpoint))
		}
		if cfg.Insecure {
			options = append(options, otlptracehttp.WithInsecure())
		}
		return newOTLPSpanExporter(ctx, otlptracehttp.NewClient(options...))
	}
	return nil, fmt.Errorf("unknown exporter %q", exporter)
}

// exporterName returns the exporter to use: the file's, else the one the
// environment names as the OpenTelemetry SDKs read it (otlp, with the
// protocol from the signal's or the common OTEL_EXPORTER_OTLP_PROTOCOL,
// http/protobuf by default; console; none), else none. ok is false for
// any other environment value.
func exporterName(fromFile, exporterVariable, protocolVariable string) (string, bool) {
	if fromFile != "" {
		return fromFile, true
	}
	switch os.Getenv(exporterVariable) {
	case "", "none":
		return config.ExporterNone, true
	case "console":
		return config.ExporterStdout, true
	case "otlp":
		protocol := os.Getenv(protocolVariable)
		if protocol == "" {
			protocol = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		if protocol == "grpc" {
			return config.ExporterOTLP, true
		}
		return config.ExporterOTLPHTTP, true
	}
	return "", false
}

// prometheusFromEnvironment is the metric exporter that
// OTEL_METRICS_EXPORTER=prometheus names, which autoexport serves.
const prometheusFromEnvironment = "prometheus"

// traceExporterName returns the trace exporter to use, or an error naming
// the variable when OTEL_TRACES_EXPORTER names one the gateway lacks, or
// the OTLP protocol for it is not one the gateway has.
func traceExporterName(cfg config.TraceExport) (string, error) {
	name, ok := exporterName(cfg.Exporter, "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if !ok {
		return "", unknownExporter("OTEL_TRACES_EXPORTER", "otlp, console or none")
	}
	if cfg.Exporter == "" {
		return name, checkProtocol("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	}
	return name, nil
}

// checkProtocol returns an error naming the protocol variable in effect
// when the exporter variable selects OTLP over a protocol other than grpc
// and http/protobuf. The SDKs' http/json is not one of them, and a
// misspelt grpc would otherwise send OTLP/HTTP to the gRPC port.
func checkProtocol(exporterVariable, protocolVariable string) error {
	if os.Getenv(exporterVariable) != "otlp" {
		return nil
	}
	if os.Getenv(protocolVariable) == "" {
		protocolVariable = "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	switch os.Getenv(protocolVariable) {
	case "", "grpc", "http/protobuf":
		return nil
	}
	return fmt.Errorf("environment variable %s=%q is invalid: want grpc or http/protobuf", protocolVariable, os.Getenv(protocolVariable))
}

// metricExporterName is traceExporterName for metrics, which may also be
// served to Prometheus on a port of their own, with the producers that
// OTEL_METRICS_PRODUCERS names.
func metricExporterName(cfg config.MetricExport) (string, error) {
	name, ok := exporterName(cfg.Exporter, "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
	if ok && cfg.Exporter == "" {
		return name, checkProtocol("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
	}
	if ok {
		return name, nil
	}
	if os.Getenv("OTEL_METRICS_EXPORTER") != prometheusFromEnvironment {
		return "", unknownExporter("OTEL_METRICS_EXPORTER", "otlp, prometheus, console or none")
	}
	var errs []error
	if producers := os.Getenv("OTEL_METRICS_PRODUCERS"); producers != "" {
		for producer := range strings.SplitSeq(producers, ",") {
			if producer != "prometheus" && producer != "none" {
				errs = append(errs, fmt.Errorf("environment variable OTEL_METRICS_PRODUCERS=%q is invalid: producer %q is unknown; want a comma-separated list of prometheus and none", producers, producer))
				break
			}
		}
	}
	host, port := prometheusHostPort()
	// Listening resolves a service name, as http-alt, to its port.
	if _, err := net.LookupPort("tcp", port); err != nil {
		errs = append(errs, fmt.Errorf("environment variable OTEL_EXPORTER_PROMETHEUS_PORT=%q is invalid: want a port number from 0 to 65535, or a service name", port))
	}
	// The port joined to a bare IPv6 address would read as part of it.
	if _, _, err := net.SplitHostPort(host + ":9464"); err != nil {
		errs = append(errs, fmt.Errorf("environment variable OTEL_EXPORTER_PROMETHEUS_HOST=%q is invalid: want a host name or an IP address, an IPv6 one in brackets such as [::1]", host))
	}
	return prometheusFromEnvironment, errors.Join(errs...)
}

func unknownExporter(variable, known string) error {
	return fmt.Errorf("environment variable %s=%q is invalid: want one exporter of %s", variable, os.Getenv(variable), known)
}

// CheckEnvironment returns every problem of the OpenTelemetry environment
// variables that would stop the gateway of cfg at start, without creating
// any exporter, so that ssegw validate reports them before a start fails
// on them. New calls it first.
func CheckEnvironment(cfg *config.Config) error {
	return checkEnvironment(cfg.Telemetry, cfg.PortTakenBy)
}

// checkEnvironment is CheckEnvironment for the telemetry section alone.
// portTakenBy, when not nil, names the listener that takes an address.
func checkEnvironment(cfg config.Telemetry, portTakenBy func(address string) string) error {
	var errs []error
	if err := checkResourceAttributes(); err != nil {
		errs = append(errs, fmt.Errorf("telemetry: environment variable OTEL_RESOURCE_ATTRIBUTES=%q is invalid: %w; want comma-separated key=value pairs, the values percent-encoded", os.Getenv("OTEL_RESOURCE_ATTRIBUTES"), err))
	}

	// A bad protocol leaves the exporter's name, so that the exporter's
	// other variables are checked as well.
	name, err := traceExporterName(cfg.Traces)
	errs = append(errs, under("telemetry.traces", err)...)
	if name != "" && name != config.ExporterNone {
		_, err := batchSettingsFromEnv()
		errs = append(errs, under("telemetry.traces", err)...)
		if cfg.Traces.SamplerRatio == nil {
			errs = append(errs, under("telemetry.traces", checkSampler())...)
		}
		if cfg.Traces.Endpoint == "" {
			errs = append(errs, under("telemetry.traces", checkEndpointVariable(name, "TRACES"))...)
		} else if cfg.Traces.Exporter == "" {
			errs = append(errs, under("telemetry.traces.endpoint", config.CheckEndpoint(cfg.Traces.Endpoint, name))...)
		}
	}

	name, err = metricExporterName(cfg.Metrics)
	errs = append(errs, under("telemetry.metrics", err)...)
	switch name {
	case config.ExporterOTLP, config.ExporterOTLPHTTP, config.ExporterStdout:
		if cfg.Metrics.Interval == 0 {
			errs = append(errs, under("telemetry.metrics", checkMilliseconds("OTEL_METRIC_EXPORT_INTERVAL"))...)
		}
		errs = append(errs, under("telemetry.metrics", checkMilliseconds("OTEL_METRIC_EXPORT_TIMEOUT"))...)
		if cfg.Metrics.Endpoint == "" {
			errs = append(errs, under("telemetry.metrics", checkEndpointVariable(name, "METRICS"))...)
		} else if cfg.Metrics.Exporter == "" {
			errs = append(errs, under("telemetry.metrics.endpoint", config.CheckEndpoint(cfg.Metrics.Endpoint, name))...)
		}
	case prometheusFromEnvironment:
		if portTakenBy != nil {
			errs = append(errs, under("telemetry.metrics", checkPrometheusPort(portTakenBy))...)
		}
	}
	return errors.Join(errs...)
}

// checkSampler returns why the SDK would not use OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG, which it reads when the file sets no
// sampler_ratio. The SDK logs a value it cannot use on Go's standard
// logger and goes on with its default sampler, or with a ratio of 1, where
// a mistyped ratio would go unnoticed.
func checkSampler() error {
	sampler := strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER")))
	switch sampler {
	case "", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
		return nil
	case "traceidratio", "parentbased_traceidratio":
		arg := strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER_ARG"))
		if arg == "" {
			return nil
		}
		if ratio, err := strconv.ParseFloat(arg, 64); err != nil || ratio < 0 || ratio > 1 {
			return fmt.Errorf("environment variable OTEL_TRACES_SAMPLER_ARG=%q is invalid: want a ratio from 0 to 1", arg)
		}
		return nil
	}
	return fmt.Errorf("environment variable OTEL_TRACES_SAMPLER=%q is invalid: want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio", os.Getenv("OTEL_TRACES_SAMPLER"))
}

// checkMilliseconds returns why the SDK would ignore a duration variable
// of the metric reader, which it reads as a positive whole number of
// milliseconds.
func checkMilliseconds(variable string) error {
	value := os.Getenv(variable)
	if value == "" {
		return nil
	}
	if n, err := strconv.ParseInt(value, 10, 64); err != nil || n <= 0 || n > int64(math.MaxInt64/int64(time.Millisecond)) {
		return fmt.Errorf("environment variable %s=%q is invalid: want a positive whole number of milliseconds", variable, value)
	}
	return nil
}

// checkEndpointVariable checks the endpoint variable in effect for an OTLP
// exporter of a signal ("TRACES" or "METRICS"): the signal's own, else the
// common one, trimmed as the SDK reads them. The SDK reads it as a URL.
// Two cases fail for certain. A value that does not parse, the SDK logs
// on Go's standard logger and then sends to its default collector. And
// for OTLP/HTTP, a value without a host fails every export.
func checkEndpointVariable(exporter, signal string) error {
	if exporter != config.ExporterOTLP && exporter != config.ExporterOTLPHTTP {
		return nil
	}
	variable := "OTEL_EXPORTER_OTLP_" + signal + "_ENDPOINT"
	value := strings.TrimSpace(os.Getenv(variable))
	if value == "" {
		variable = "OTEL_EXPORTER_OTLP_ENDPOINT"
		value = strings.TrimSpace(os.Getenv(variable))
	}
	if value == "" {
		return nil
	}
	example := "http://collector:4317"
	if exporter == config.ExporterOTLPHTTP {
		example = "http://collector:4318"
		if variable != "OTEL_EXPORTER_OTLP_ENDPOINT" {
			// The SDK adds the signal's path to the common variable only.
			example += "/v1/" + strings.ToLower(signal)
		}
	}
	u, err := url.Parse(value)
	switch {
	case err != nil:
		return fmt.Errorf("environment variable %s=%q is invalid: it is not a URL (%v); write it as %s, or https:// for TLS", variable, os.Getenv(variable), errors.Unwrap(err), example)
	case exporter == config.ExporterOTLPHTTP && u.Host == "":
		return fmt.Errorf("environment variable %s=%q is invalid: it names no host; write it as %s, or https:// for TLS", variable, os.Getenv(variable), example)
	}
	return nil
}

// checkPrometheusPort returns an error when the Prometheus exporter would
// listen where one of the gateway's listeners does: the gateway would
// start it first and then fail on its own listener's port.
func checkPrometheusPort(portTakenBy func(address string) string) error {
	host, port := prometheusHostPort()
	address := host + ":" + port // joined as autoexport joins them
	key := portTakenBy(address)
	if key == "" {
		return nil
	}
	setting := func(variable, value string) string {
		if os.Getenv(variable) == "" {
			return fmt.Sprintf("%s unset (%s)", variable, value)
		}
		return fmt.Sprintf("%s=%q", variable, value)
	}
	return fmt.Errorf("the Prometheus exporter would listen on %s (%s, %s), which %s takes; give it a port of its own with OTEL_EXPORTER_PROMETHEUS_PORT",
		address, setting("OTEL_EXPORTER_PROMETHEUS_HOST", host), setting("OTEL_EXPORTER_PROMETHEUS_PORT", port), key)
}

// prometheusHostPort returns the host and port of autoexport's
// Prometheus exporter, with the specification's defaults.
func prometheusHostPort() (host, port string) {
	return cmp.Or(os.Getenv("OTEL_EXPORTER_PROMETHEUS_HOST"), "localhost"), cmp.Or(os.Getenv("OTEL_EXPORTER_PROMETHEUS_PORT"), "9464")
}

// under returns err, or each error it joins, with key before it, so that
// every line of a joined error names its key.
func under(key string, err error) []error {
	if err == nil {
		return nil
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{fmt.Errorf("%s: %w", key, err)}
	}
	var errs []error
	for _, e := range joined.Unwrap() {
		errs = append(errs, under(key, e)...)
	}
	return errs
}

// checkResourceAttributes returns why the SDK would reject
// OTEL_RESOURCE_ATTRIBUTES, or a value in it that is not valid percent
// encoding, which the SDK keeps as it is with a message on Go's standard
// logger, outside the gateway's log.
func checkResourceAttributes() error {
	for pair := range strings.SplitSeq(os.Getenv("OTEL_RESOURCE_ATTRIBUTES"), ",") {
		if _, value, ok := strings.Cut(pair, "="); ok {
			if _, err := url.PathUnescape(strings.TrimSpace(value)); err != nil {
				return fmt.Errorf("%q: %w", pair, err)
			}
		}
	}
	_, err := resource.New(context.Background(), resource.WithFromEnv())
	return err
}

// describeExport returns where a signal ("TRACES" or "METRICS") is exported,
// with the endpoint taken as the SDK takes it: the file's, else the
// signal's variable, else the common one, else the SDK's default. OTLP
// endpoints are followed by "(TLS)" or "(plaintext)".
func describeExport(fromFile, endpoint string, insecure bool, signal string, exporting bool) string {
	if !exporting {
		return "none"
	}
	kind, ok := exporterName(fromFile, "OTEL_"+signal+"_EXPORTER", "OTEL_EXPORTER_OTLP_"+signal+"_PROTOCOL")
	if !ok {
		return os.Getenv("OTEL_" + signal + "_EXPORTER")
	}
	for _, variable := range []string{"OTEL_EXPORTER_OTLP_" + signal + "_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if endpoint == "" {
			endpoint = os.Getenv(variable)
		}
	}
	switch kind {
	case config.ExporterOTLP:
		return "OTLP/gRPC to " + cmp.Or(endpoint, "localhost:4317") + security(endpoint, insecure, signal)
	case config.ExporterOTLPHTTP:
		return "OTLP/HTTP to " + cmp.Or(endpoint, "localhost:4318") + security(endpoint, insecure, signal)
	}
	return kind
}

// security returns whether an OTLP endpoint is reached in plaintext or over
// TLS, decided as the SDK decides it: the insecure key, else the endpoint
// URL's scheme, else OTEL_EXPORTER_OTLP_*INSECURE, else TLS.
func security(endpoint string, insecure bool, signal string) string {
	if insecure {
		return " (plaintext)"
	}
	if u, err := url.Parse(endpoint); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		if u.Scheme == "http" {
			return " (plaintext)"
		}
		return " (TLS)"
	}
	for _, variable := range []string{"OTEL_EXPORTER_OTLP_" + signal + "_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"} {
		if value := os.Getenv(variable); value != "" {
			if strings.EqualFold(value, "true") {
				return " (plaintext)"
			}
			return " (TLS)"
		}
	}
	return " (TLS)"
}

// newMetricReader is newSpanExporter for metrics.
func newMetricReader(ctx context.Context, cfg config.MetricExport) (sdkmetric.Reader, error) {
	exporterKind, err := metricExporterName(cfg)
	if err != nil {
		return nil, err
	}
	if exporterKind == prometheusFromEnvironment {
		// autoexport serves it on a port of its own, with the producers
		// OTEL_METRICS_PRODUCERS names.
		reader, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return nil, fmt.Errorf("environment variable OTEL_METRICS_EXPORTER=prometheus: %w", err)
		}
		return reader, nil
	}
	var periodic []sdkmetric.PeriodicReaderOption
	if cfg.Interval > 0 {
		periodic = append(periodic, sdkmetric.WithInterval(cfg.Interval))
	}
	var exporter sdkmetric.Exporter
	switch exporterKind {
	case config.ExporterNone:
		return nil, nil
	case config.ExporterStdout:
		exporter, err = stdoutmetric.New(stdoutmetric.WithWriter(os.Stdout))
	case config.ExporterOTLP:
		var options []otlpmetricgrpc.Option
		if cfg.Endpoint != "" {
			options = append(options, endpointOption(cfg.Endpoint, "", otlpmetricgrpc.WithEndpointURL, otlpmetricgrpc.WithEndpoint))
		}
		if cfg.Insecure {
			options = append(options, otlpmetricgrpc.WithInsecure())
		}
		exporter, err = otlpmetricgrpc.New(ctx, options...)
	case config.ExporterOTLPHTTP:
		var options []otlpmetrichttp.Option
		if cfg.Endpoint != "" {
			options = append(options, endpointOption(cfg.Endpoint, "/v1/metrics", otlpmetrichttp.WithEndpointURL, otlpmetrichttp.WithEndpoint))
		}
		if cfg.Insecure {
			options = append(options, otlpmetrichttp.WithInsecure())
		}
		exporter, err = otlpmetrichttp.New(ctx, options...)
	default:
		return nil, fmt.Errorf("unknown exporter %q", exporterKind)
	}
	if err != nil {
		return nil, err
	}
	return sdkmetric.NewPeriodicReader(exporter, periodic...), nil
}

// endpointOption passes a URL ("http://collector:4318") as a URL and a
// bare host:port as an endpoint, so both forms work in the file. Over
// HTTP, a URL without a path gets the signal's path; gRPC has no path, and
// an http URL means plaintext.
func endpointOption[O any](endpoint, signalPath string, withURL, withEndpoint func(string) O) O {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return withEndpoint(endpoint)
	}
	if signalPath != "" && (u.Path == "" || u.Path == "/") {
		u.Path = signalPath
	}
	return withURL(u.String())
}
