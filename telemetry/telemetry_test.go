package telemetry_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/otlptest"
	"github.com/ssegw/ssegw/telemetry"
)

// Names of what emit records.
const (
	checkSpan   = "telemetry-check"
	checkMetric = "ssegw.test.checks"
)

// clearOTelEnv unsets every OTEL_* variable for the test, so that the
// environment the tests run in cannot send anything anywhere.
func clearOTelEnv(t *testing.T) {
	t.Helper()
	for _, entry := range os.Environ() {
		key, _, _ := strings.Cut(entry, "=")
		if strings.HasPrefix(key, "OTEL_") {
			unsetenv(t, key)
		}
	}
}

// unsetenv removes key from the environment until the test ends.
func unsetenv(t *testing.T, key string) {
	t.Helper()
	t.Setenv(key, "") // restores the old value when the test ends
	if err := os.Unsetenv(key); err != nil {
		t.Fatal(err)
	}
}

// setenv sets every variable of env until the test ends.
func setenv(t *testing.T, env map[string]string) {
	t.Helper()
	for key, value := range env {
		t.Setenv(key, value)
	}
}

// newProviders builds providers from cfg or fails the test.
func newProviders(t *testing.T, cfg config.Telemetry, opts telemetry.Options) *telemetry.Providers {
	t.Helper()
	p, err := telemetry.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatalf("telemetry.New(%+v) = %v", cfg, err)
	}
	return p
}

// emit records one span named checkSpan and one counter named checkMetric,
// then shuts the providers down, which flushes both to their exporters.
func emit(t *testing.T, p *telemetry.Providers) {
	t.Helper()
	record(t, p)
	shutdown(t, p)
}

// record records what emit does, without the shutdown.
func record(t *testing.T, p *telemetry.Providers) {
	t.Helper()
	ctx := context.Background()
	_, span := p.TracerProvider.Tracer("telemetry-test").Start(ctx, checkSpan)
	span.End()
	counter, err := p.MeterProvider.Meter("telemetry-test").Int64Counter(checkMetric)
	if err != nil {
		t.Fatal(err)
	}
	counter.Add(ctx, 1)
}

func shutdown(t *testing.T, p *telemetry.Providers) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown() = %v, want nil", err)
	}
}

// spanNames returns the names of the spans a receiver got.
func spanNames(r *otlptest.Receiver) []string {
	var names []string
	for _, span := range r.Spans() {
		names = append(names, span.GetName())
	}
	return names
}

// receivers are one OTLP receiver of each kind.
type receivers struct {
	grpc, http *otlptest.Receiver
}

func startReceivers(t *testing.T) receivers {
	t.Helper()
	return receivers{grpc: otlptest.StartGRPC(t), http: otlptest.StartHTTP(t)}
}

// byKind returns the receiver named "grpc" or "http", or nil for "".
func (r receivers) byKind(kind string) *otlptest.Receiver {
	switch kind {
	case "grpc":
		return r.grpc
	case "http":
		return r.http
	}
	return nil
}

// checkDelivery checks that the span and metric of emit reached exactly
// the receivers named by wantTraces and wantMetrics ("grpc", "http" or ""
// for none), and nothing reached the others.
func checkDelivery(t *testing.T, r receivers, wantTraces, wantMetrics string) {
	t.Helper()
	for _, kind := range []string{"grpc", "http"} {
		receiver := r.byKind(kind)
		wantSpans := 0
		if kind == wantTraces {
			wantSpans = 1
		}
		if got := receiver.SpanCount(); got != wantSpans {
			t.Errorf("%s receiver: spans = %d, want %d", kind, got, wantSpans)
		}
		if kind == wantTraces && !slices.Contains(spanNames(receiver), checkSpan) {
			t.Errorf("%s receiver: span names = %q, want %q among them", kind, spanNames(receiver), checkSpan)
		}
		gotMetrics := receiver.MetricRequests() > 0
		if gotMetrics != (kind == wantMetrics) {
			t.Errorf("%s receiver: got metrics = %v, want %v", kind, gotMetrics, kind == wantMetrics)
		}
		if kind == wantMetrics && !slices.Contains(receiver.MetricNames(), checkMetric) {
			t.Errorf("%s receiver: metric names = %q, want %q among them", kind, receiver.MetricNames(), checkMetric)
		}
		if kind == "http" {
			for _, path := range receiver.Paths() {
				if path != otlptest.TracesPath && path != otlptest.MetricsPath {
					t.Errorf("http receiver: request to path %q, want %s or %s", path, otlptest.TracesPath, otlptest.MetricsPath)
				}
			}
		}
	}
}

// TestNoExportWithoutConfiguration checks that without telemetry keys and
// without OTEL_TRACES_EXPORTER or OTEL_METRICS_EXPORTER nothing is
// exported, although spans are still made for the access log. The OTLP
// endpoint variable names an in-process receiver, so an exporter made by
// mistake would connect there instead of to the default localhost:4317,
// and the receiver counts the connection.
func TestNoExportWithoutConfiguration(t *testing.T) {
	clearOTelEnv(t)
	receiver := otlptest.StartGRPC(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.URL())
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	recorder := tracetest.NewSpanRecorder()
	p := newProviders(t, config.Telemetry{}, telemetry.Options{SpanProcessors: []sdktrace.SpanProcessor{recorder}})

	// Make a span and a metric, and read the Prometheus output before the
	// shutdown stops the reader behind it.
	ctx := context.Background()
	_, span := p.TracerProvider.Tracer("telemetry-test").Start(ctx, checkSpan)
	span.End()
	counter, err := p.MeterProvider.Meter("telemetry-test").Int64Counter(checkMetric)
	if err != nil {
		t.Fatal(err)
	}
	counter.Add(ctx, 1)
	scrape := httptest.NewRecorder()
	p.Metrics.ServeHTTP(scrape, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	shutdown(t, p)

	if got := len(recorder.Ended()); got != 1 {
		t.Errorf("spans recorded = %d, want 1", got)
	}
	if want := "ssegw_test_checks_total"; !strings.Contains(scrape.Body.String(), want) {
		t.Errorf("Prometheus output lacks %s:\n%s", want, scrape.Body.String())
	}
	if got := receiver.Connections(); got != 0 {
		t.Errorf("connections to the OTLP endpoint = %d, want 0", got)
	}
	if got := receiver.TraceRequests(); got != 0 {
		t.Errorf("trace export requests = %d, want 0", got)
	}
	if got := receiver.MetricRequests(); got != 0 {
		t.Errorf("metric export requests = %d, want 0", got)
	}
}

// TestEnvironmentSelectsExporter checks that, with no telemetry keys in
// the file, the OTEL_* variables choose the exporter, its protocol and
// its endpoint, as in every OpenTelemetry SDK.
func TestEnvironmentSelectsExporter(t *testing.T) {
	tests := []struct {
		name string
		env  func(receivers) map[string]string
		// wantTraces and wantMetrics name the receiver, "grpc" or "http",
		// or "" for none.
		wantTraces, wantMetrics string
	}{
		{
			name: "otlp over gRPC",
			env: func(r receivers) map[string]string {
				return map[string]string{
					"OTEL_TRACES_EXPORTER":        "otlp",
					"OTEL_METRICS_EXPORTER":       "otlp",
					"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
					"OTEL_EXPORTER_OTLP_ENDPOINT": r.grpc.URL(),
					"OTEL_EXPORTER_OTLP_INSECURE": "true",
				}
			},
			wantTraces:  "grpc",
			wantMetrics: "grpc",
		},
		{
			name: "otlp over gRPC, insecure from the http scheme",
			env: func(r receivers) map[string]string {
				return map[string]string{
					"OTEL_TRACES_EXPORTER":        "otlp",
					"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
					"OTEL_EXPORTER_OTLP_ENDPOINT": r.grpc.URL(),
				}
			},
			wantTraces: "grpc",
		},
		{
			name: "otlp over HTTP",
			env: func(r receivers) map[string]string {
				return map[string]string{
					"OTEL_TRACES_EXPORTER":        "otlp",
					"OTEL_METRICS_EXPORTER":       "otlp",
					"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
					"OTEL_EXPORTER_OTLP_ENDPOINT": r.http.URL(),
				}
			},
			wantTraces:  "http",
			wantMetrics: "http",
		},
		{
			name: "otlp without a protocol means HTTP",
			env: func(r receivers) map[string]string {
				return map[string]string{
					"OTEL_TRACES_EXPORTER":        "otlp",
					"OTEL_EXPORTER_OTLP_ENDPOINT": r.http.URL(),
				}
			},
			wantTraces: "http",
		},
		{
			name: "signal endpoints",
			env: func(r receivers) map[string]string {
				return map[string]string{
					"OTEL_TRACES_EXPORTER":                "otlp",
					"OTEL_METRICS_EXPORTER":               "otlp",
					"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL":  "grpc",
					"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":  r.grpc.URL(),
					"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": r.http.URL() + otlptest.MetricsPath,
				}
			},
			wantTraces:  "grpc",
			wantMetrics: "http",
		},
		{
			name: "none",
			env: func(r receivers) map[string]string {
				return map[string]string{
					"OTEL_TRACES_EXPORTER":        "none",
					"OTEL_METRICS_EXPORTER":       "none",
					"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
					"OTEL_EXPORTER_OTLP_ENDPOINT": r.grpc.URL(),
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTelEnv(t)
			r := startReceivers(t)
			setenv(t, tt.env(r))
			emit(t, newProviders(t, config.Telemetry{}, telemetry.Options{}))
			checkDelivery(t, r, tt.wantTraces, tt.wantMetrics)
		})
	}
}

// TestFileExporters checks the exporters that telemetry.traces and
// telemetry.metrics configure, with the environment clear. It covers OTLP
// over gRPC, and OTLP over HTTP with the endpoint as host:port and as a
// base URL. To a base URL the exporter adds the signal's path, as it does
// for OTEL_EXPORTER_OTLP_ENDPOINT.
func TestFileExporters(t *testing.T) {
	tests := []struct {
		name                    string
		cfg                     func(receivers) config.Telemetry
		wantTraces, wantMetrics string
	}{
		{
			name:        "otlp",
			cfg:         func(r receivers) config.Telemetry { return bothSignals(config.ExporterOTLP, r.grpc.Addr, true) },
			wantTraces:  "grpc",
			wantMetrics: "grpc",
		},
		{
			name:        "otlp-http to host:port",
			cfg:         func(r receivers) config.Telemetry { return bothSignals(config.ExporterOTLPHTTP, r.http.Addr, true) },
			wantTraces:  "http",
			wantMetrics: "http",
		},
		{
			name:        "otlp-http to a URL",
			cfg:         func(r receivers) config.Telemetry { return bothSignals(config.ExporterOTLPHTTP, r.http.URL(), false) },
			wantTraces:  "http",
			wantMetrics: "http",
		},
		{
			name:        "otlp-http to a URL, insecure set",
			cfg:         func(r receivers) config.Telemetry { return bothSignals(config.ExporterOTLPHTTP, r.http.URL(), true) },
			wantTraces:  "http",
			wantMetrics: "http",
		},
		{
			name:        "otlp to a URL",
			cfg:         func(r receivers) config.Telemetry { return bothSignals(config.ExporterOTLP, r.grpc.URL(), false) },
			wantTraces:  "grpc",
			wantMetrics: "grpc",
		},
		{
			name: "none",
			cfg:  func(r receivers) config.Telemetry { return bothSignals(config.ExporterNone, r.grpc.Addr, true) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTelEnv(t)
			r := startReceivers(t)
			emit(t, newProviders(t, tt.cfg(r), telemetry.Options{}))
			checkDelivery(t, r, tt.wantTraces, tt.wantMetrics)
		})
	}
}

// bothSignals sends traces and metrics the same way.
func bothSignals(exporter, endpoint string, insecure bool) config.Telemetry {
	return config.Telemetry{
		Traces:  config.TraceExport{Exporter: exporter, Endpoint: endpoint, Insecure: insecure},
		Metrics: config.MetricExport{Exporter: exporter, Endpoint: endpoint, Insecure: insecure},
	}
}

// TestExportDescribed checks the words the start-up log uses for where a
// signal goes, with the endpoint taken from the file, the signal's
// variable, the common variable or the SDK's default, in that order.
func TestExportDescribed(t *testing.T) {
	tests := []struct {
		name               string
		exporter, endpoint string
		insecure           bool
		env                map[string]string
		want               string
	}{
		{"file, gRPC", config.ExporterOTLP, "collector:4317", false, nil, "OTLP/gRPC to collector:4317 (TLS)"},
		{"file, gRPC, insecure", config.ExporterOTLP, "collector:4317", true, nil, "OTLP/gRPC to collector:4317 (plaintext)"},
		{"file, HTTP, default endpoint", config.ExporterOTLPHTTP, "", false, nil, "OTLP/HTTP to localhost:4318 (TLS)"},
		{"file endpoint over the variables", config.ExporterOTLP, "collector:4317", false,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4317"}, "OTLP/gRPC to collector:4317 (TLS)"},
		{"variables, HTTP by default", "", "", false,
			map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "OTLP/HTTP to http://c:4318 (plaintext)"},
		{"signal's variables first", "", "", false,
			map[string]string{
				"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
				"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://t:4317",
			}, "OTLP/gRPC to https://t:4317 (TLS)"},
		{"gRPC default endpoint, insecure variable", "", "", false,
			map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_INSECURE": "true"},
			"OTLP/gRPC to localhost:4317 (plaintext)"},
		{"stdout", config.ExporterStdout, "", false, nil, "stdout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTelEnv(t)
			setenv(t, tt.env)
			if got := telemetry.DescribeExport(tt.exporter, tt.endpoint, tt.insecure, "TRACES", true); got != tt.want {
				t.Errorf("DescribeExport(%q, %q, %v) = %q, want %q", tt.exporter, tt.endpoint, tt.insecure, got, tt.want)
			}
		})
	}
	if got := telemetry.DescribeExport(config.ExporterOTLP, "collector:4317", false, "TRACES", false); got != "none" {
		t.Errorf("DescribeExport of a signal not exported = %q, want none", got)
	}
}

// TestFileWinsOverEnvironment checks that a key set in telemetry.traces or
// telemetry.metrics takes precedence over the OTEL_* variable for the same
// setting, while the variables still fill the keys left empty.
func TestFileWinsOverEnvironment(t *testing.T) {
	// Every case's environment sends both signals over gRPC to the
	// receiver "env".
	environment := func(env *otlptest.Receiver) map[string]string {
		return map[string]string{
			"OTEL_TRACES_EXPORTER":        "otlp",
			"OTEL_METRICS_EXPORTER":       "otlp",
			"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			"OTEL_EXPORTER_OTLP_ENDPOINT": env.URL(),
		}
	}
	tests := []struct {
		name string
		// cfg gets a gRPC receiver and an HTTP receiver for the file to
		// name.
		cfg func(file receivers) config.Telemetry
		// wantTraces and wantMetrics name the receiver that gets the
		// signal: "grpc" or "http" of the file's, "env", or "" for none.
		wantTraces, wantMetrics string
	}{
		{
			name:        "otlp to another endpoint",
			cfg:         func(file receivers) config.Telemetry { return bothSignals(config.ExporterOTLP, file.grpc.Addr, true) },
			wantTraces:  "grpc",
			wantMetrics: "grpc",
		},
		{
			name: "otlp-http over the variables' gRPC",
			cfg: func(file receivers) config.Telemetry {
				return bothSignals(config.ExporterOTLPHTTP, file.http.Addr, true)
			},
			wantTraces:  "http",
			wantMetrics: "http",
		},
		{
			name: "none",
			cfg:  func(file receivers) config.Telemetry { return bothSignals(config.ExporterNone, "", false) },
		},
		{
			name: "empty keys use the variables",
			cfg: func(file receivers) config.Telemetry {
				return config.Telemetry{}
			},
			wantTraces:  "env",
			wantMetrics: "env",
		},
		{
			name:        "endpoint without exporter",
			cfg:         func(file receivers) config.Telemetry { return bothSignals("", file.grpc.Addr, true) },
			wantTraces:  "grpc",
			wantMetrics: "grpc",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTelEnv(t)
			file := startReceivers(t)
			env := otlptest.StartGRPC(t)
			setenv(t, environment(env))
			emit(t, newProviders(t, tt.cfg(file), telemetry.Options{}))

			all := map[string]*otlptest.Receiver{"grpc": file.grpc, "http": file.http, "env": env}
			for _, name := range []string{"grpc", "http", "env"} {
				receiver := all[name]
				wantSpans := 0
				if name == tt.wantTraces {
					wantSpans = 1
				}
				if got := receiver.SpanCount(); got != wantSpans {
					t.Errorf("receiver %s: spans = %d, want %d", name, got, wantSpans)
				}
				if got := receiver.MetricRequests() > 0; got != (name == tt.wantMetrics) {
					t.Errorf("receiver %s: got metrics = %v, want %v", name, got, name == tt.wantMetrics)
				}
			}
		})
	}
}

// TestServiceName checks service.name and service.version of exported
// spans: telemetry.service_name, else OTEL_SERVICE_NAME, else a
// service.name in OTEL_RESOURCE_ATTRIBUTES, else "ssegw".
func TestServiceName(t *testing.T) {
	tests := []struct {
		name        string
		env         map[string]string
		serviceName string
		version     string
		wantName    string
		wantVersion string // "" means no service.version attribute
	}{
		{name: "default", wantName: "ssegw"},
		{name: "version", version: "1.2.3", wantName: "ssegw", wantVersion: "1.2.3"},
		{name: "OTEL_SERVICE_NAME", env: map[string]string{"OTEL_SERVICE_NAME": "from-env"}, wantName: "from-env"},
		{
			name:     "OTEL_RESOURCE_ATTRIBUTES",
			env:      map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,team=bi"},
			wantName: "from-attributes",
		},
		{
			name: "OTEL_SERVICE_NAME over OTEL_RESOURCE_ATTRIBUTES",
			env: map[string]string{
				"OTEL_SERVICE_NAME":        "from-env",
				"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes",
			},
			wantName: "from-env",
		},
		{
			name:        "file over OTEL_SERVICE_NAME",
			env:         map[string]string{"OTEL_SERVICE_NAME": "from-env"},
			serviceName: "from-file",
			wantName:    "from-file",
		},
		{name: "file", serviceName: "from-file", version: "2.0.0", wantName: "from-file", wantVersion: "2.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTelEnv(t)
			setenv(t, tt.env)
			receiver := otlptest.StartGRPC(t)
			cfg := config.Telemetry{
				ServiceName: tt.serviceName,
				Traces:      config.TraceExport{Exporter: config.ExporterOTLP, Endpoint: receiver.Addr, Insecure: true},
				Metrics:     config.MetricExport{Exporter: config.ExporterNone},
			}
			emit(t, newProviders(t, cfg, telemetry.Options{Version: tt.version}))

			spans := receiver.Spans()
			if len(spans) != 1 {
				t.Fatalf("spans = %d, want 1", len(spans))
			}
			resource := spans[0].ResourceAttributes()
			if got := resource["service.name"]; got != tt.wantName {
				t.Errorf("service.name = %v, want %q", got, tt.wantName)
			}
			version, hasVersion := resource["service.version"]
			if tt.wantVersion == "" && hasVersion {
				t.Errorf("service.version = %v, want none", version)
			}
			if tt.wantVersion != "" && version != tt.wantVersion {
				t.Errorf("service.version = %v, want %q", version, tt.wantVersion)
			}
		})
	}
}

// TestSampling checks which spans are exported under sampler_ratio and
// OTEL_TRACES_SAMPLER: a new trace ("root") and a span continuing a
// sampled trace from a client ("continued"). A ratio in the file takes
// precedence over the variables and follows a parent's decision.
func TestSampling(t *testing.T) {
	ratio := func(r float64) *float64 { return &r }
	tests := []struct {
		name          string
		env           map[string]string
		ratio         *float64
		wantRoot      bool
		wantContinued bool
	}{
		{name: "default records every trace", wantRoot: true, wantContinued: true},
		{name: "always_off", env: map[string]string{"OTEL_TRACES_SAMPLER": "always_off"}},
		{
			name:          "parentbased_traceidratio 0",
			env:           map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"},
			wantContinued: true,
		},
		{name: "ratio 1", ratio: ratio(1), wantRoot: true, wantContinued: true},
		{name: "ratio 0", ratio: ratio(0), wantContinued: true},
		{
			name:          "ratio 1 over always_off",
			env:           map[string]string{"OTEL_TRACES_SAMPLER": "always_off"},
			ratio:         ratio(1),
			wantRoot:      true,
			wantContinued: true,
		},
		{
			name:          "ratio 0 over always_on",
			env:           map[string]string{"OTEL_TRACES_SAMPLER": "always_on"},
			ratio:         ratio(0),
			wantContinued: true,
		},
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTelEnv(t)
			setenv(t, tt.env)
			receiver := otlptest.StartGRPC(t)
			cfg := config.Telemetry{
				Traces:  config.TraceExport{Exporter: config.ExporterOTLP, Endpoint: receiver.Addr, Insecure: true, SamplerRatio: tt.ratio},
				Metrics: config.MetricExport{Exporter: config.ExporterNone},
			}
			p := newProviders(t, cfg, telemetry.Options{})
			tracer := p.TracerProvider.Tracer("telemetry-test")
			ctx := context.Background()
			_, root := tracer.Start(ctx, "root")
			root.End()
			_, continued := tracer.Start(trace.ContextWithRemoteSpanContext(ctx, parent), "continued")
			continued.End()
			shutdown(t, p)

			names := spanNames(receiver)
			if got := slices.Contains(names, "root"); got != tt.wantRoot {
				t.Errorf("root span exported = %v, want %v", got, tt.wantRoot)
			}
			if got := slices.Contains(names, "continued"); got != tt.wantContinued {
				t.Errorf("continued span exported = %v, want %v", got, tt.wantContinued)
			}
		})
	}
}

// TestStdoutExporter checks that the stdout exporters can be configured
// and write the span and the metric to standard output when shut down.
func TestStdoutExporter(t *testing.T) {
	clearOTelEnv(t)

	// The exporters take os.Stdout when they are made, so point it at a
	// pipe for that moment.
	reader, writer, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	stdout := os.Stdout
	os.Stdout = writer
	p, err := telemetry.New(context.Background(), config.Telemetry{
		Traces:  config.TraceExport{Exporter: config.ExporterStdout},
		Metrics: config.MetricExport{Exporter: config.ExporterStdout},
	}, telemetry.Options{})
	os.Stdout = stdout
	if err != nil {
		writer.Close()
		t.Fatalf("telemetry.New with stdout exporters = %v", err)
	}
	output := make(chan string, 1)
	go func() {
		data, _ := io.ReadAll(reader)
		output <- string(data)
	}()
	emit(t, p)
	writer.Close()

	select {
	case text := <-output:
		if !strings.Contains(text, checkSpan) {
			t.Errorf("stdout lacks the span %q:\n%s", checkSpan, text)
		}
		if !strings.Contains(text, checkMetric) {
			t.Errorf("stdout lacks the metric %q:\n%s", checkMetric, text)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading the stdout exporters' output did not end within 10s")
	}
}

// TestUnknownExporterRejected checks that New fails on an exporter name
// it does not know, naming the key and the value.
func TestUnknownExporterRejected(t *testing.T) {
	tests := []struct {
		name    string
		cfg     config.Telemetry
		wantKey string
	}{
		{name: "traces", cfg: config.Telemetry{Traces: config.TraceExport{Exporter: "zipkin"}}, wantKey: "telemetry.traces"},
		{name: "metrics", cfg: config.Telemetry{Metrics: config.MetricExport{Exporter: "zipkin"}}, wantKey: "telemetry.metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTelEnv(t)
			p, err := telemetry.New(context.Background(), tt.cfg, telemetry.Options{})
			if err == nil {
				shutdown(t, p)
				t.Fatalf("telemetry.New(%+v) = nil error, want one", tt.cfg)
			}
			if !strings.Contains(err.Error(), tt.wantKey) {
				t.Errorf("telemetry.New(%+v) = %q, want it to name %s", tt.cfg, err, tt.wantKey)
			}
			if !strings.Contains(err.Error(), "zipkin") {
				t.Errorf("telemetry.New(%+v) = %q, want it to name the value zipkin", tt.cfg, err)
			}
		})
	}
}

// TestBadEnvironmentRejected checks that New and CheckEnvironment reject
// an OpenTelemetry variable that names an exporter, producer, protocol or
// port the gateway cannot use, or resource attributes it cannot read, with
// the same error naming the variable and its value. It also checks that
// both accept every name the gateway has.
func TestBadEnvironmentRejected(t *testing.T) {
	tests := []struct {
		name, variable, value string
		also                  map[string]string
		wantKey               string
	}{
		{name: "traces", variable: "OTEL_TRACES_EXPORTER", value: "zipkin", wantKey: "telemetry.traces"},
		{name: "traces list", variable: "OTEL_TRACES_EXPORTER", value: "otlp,console", wantKey: "telemetry.traces"},
		{name: "metrics", variable: "OTEL_METRICS_EXPORTER", value: "prom", wantKey: "telemetry.metrics"},
		{name: "producer", variable: "OTEL_METRICS_PRODUCERS", value: "prometheus,opencensus",
			also: map[string]string{"OTEL_METRICS_EXPORTER": "prometheus"}, wantKey: "telemetry.metrics"},
		{name: "Prometheus port", variable: "OTEL_EXPORTER_PROMETHEUS_PORT", value: "not-a-port",
			also: map[string]string{"OTEL_METRICS_EXPORTER": "prometheus"}, wantKey: "telemetry.metrics"},
		{name: "misspelt protocol", variable: "OTEL_EXPORTER_OTLP_PROTOCOL", value: "grcp",
			also: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, wantKey: "telemetry.traces"},
		{name: "signal's protocol", variable: "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", value: "http/json",
			also: map[string]string{"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantKey: "telemetry.metrics"},
		{name: "resource attributes", variable: "OTEL_RESOURCE_ATTRIBUTES", value: "foo", wantKey: "telemetry"},
		{name: "resource attribute escape", variable: "OTEL_RESOURCE_ATTRIBUTES", value: "team=bi,a=%zz", wantKey: "telemetry"},
		{name: "Prometheus host", variable: "OTEL_EXPORTER_PROMETHEUS_HOST", value: "::1",
			also: map[string]string{"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "0"}, wantKey: "telemetry.metrics"},
		{name: "sampler", variable: "OTEL_TRACES_SAMPLER", value: "bogus",
			also: map[string]string{"OTEL_TRACES_EXPORTER": "console"}, wantKey: "telemetry.traces"},
		{name: "sampler ratio", variable: "OTEL_TRACES_SAMPLER_ARG", value: "2",
			also: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}, wantKey: "telemetry.traces"},
		{name: "metric export interval", variable: "OTEL_METRIC_EXPORT_INTERVAL", value: "abc",
			also: map[string]string{"OTEL_METRICS_EXPORTER": "console"}, wantKey: "telemetry.metrics"},
		{name: "endpoint", variable: "OTEL_EXPORTER_OTLP_ENDPOINT", value: "http://[::1",
			also: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, wantKey: "telemetry.traces"},
		{name: "signal's endpoint", variable: "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", value: "::1",
			also: map[string]string{"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317"}, wantKey: "telemetry.metrics"},
		{name: "endpoint without a scheme", variable: "OTEL_EXPORTER_OTLP_ENDPOINT", value: "127.0.0.1:4319",
			also: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantKey: "telemetry.traces"},
		{name: "common endpoint behind a blank signal's", variable: "OTEL_EXPORTER_OTLP_ENDPOINT", value: "localhost:4318",
			also: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": " "}, wantKey: "telemetry.traces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTelEnv(t)
			t.Setenv(tt.variable, tt.value)
			for variable, value := range tt.also {
				t.Setenv(variable, value)
			}
			want := fmt.Sprintf("%s: environment variable %s=%q is invalid", tt.wantKey, tt.variable, tt.value)
			checkErr := telemetry.CheckEnvironment(&config.Config{})
			if checkErr == nil || !strings.HasPrefix(checkErr.Error(), want) {
				t.Errorf("CheckEnvironment = %v, want an error starting with %q", checkErr, want)
			}
			p, err := telemetry.New(context.Background(), config.Telemetry{}, telemetry.Options{})
			if err == nil {
				shutdown(t, p)
				t.Fatalf("telemetry.New with %s=%q = nil error, want one", tt.variable, tt.value)
			}
			if checkErr != nil && err.Error() != checkErr.Error() {
				t.Errorf("telemetry.New error = %q, want what CheckEnvironment reports, %q", err, checkErr)
			}
		})
	}

	t.Run("every problem", func(t *testing.T) {
		clearOTelEnv(t)
		for variable, value := range map[string]string{
			"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "bogus", "OTEL_BSP_MAX_QUEUE_SIZE": "x",
			"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_METRICS_PRODUCERS": "foo", "OTEL_EXPORTER_PROMETHEUS_PORT": "99999",
		} {
			t.Setenv(variable, value)
		}
		err := telemetry.CheckEnvironment(&config.Config{})
		if err == nil {
			t.Fatal("CheckEnvironment = nil, want four problems")
		}
		lines := strings.Split(err.Error(), "\n")
		for i, want := range []string{
			`telemetry.traces: environment variable OTEL_EXPORTER_OTLP_PROTOCOL="bogus" is invalid`,
			`telemetry.traces: environment variable OTEL_BSP_MAX_QUEUE_SIZE="x" is invalid`,
			`telemetry.metrics: environment variable OTEL_METRICS_PRODUCERS="foo" is invalid`,
			`telemetry.metrics: environment variable OTEL_EXPORTER_PROMETHEUS_PORT="99999" is invalid`,
		} {
			if i >= len(lines) || !strings.HasPrefix(lines[i], want) {
				t.Errorf("CheckEnvironment line %d: want it to start with %q; all:\n%v", i+1, want, err)
			}
		}
		if len(lines) != 4 {
			t.Errorf("CheckEnvironment gave %d lines, want 4:\n%v", len(lines), err)
		}
	})

	t.Run("Prometheus port of a listener", func(t *testing.T) {
		cfg := &config.Config{
			Listeners: []config.Listener{{Address: "127.0.0.1:50051"}},
			Admin:     config.Admin{Address: "127.0.0.1:8081"},
		}
		for port, key := range map[string]string{"50051": "listeners[0].address", "8081": "admin.address"} {
			clearOTelEnv(t)
			t.Setenv("OTEL_METRICS_EXPORTER", "prometheus")
			t.Setenv("OTEL_EXPORTER_PROMETHEUS_PORT", port) // on localhost, the default host
			want := fmt.Sprintf(`telemetry.metrics: the Prometheus exporter would listen on localhost:%s `+
				`(OTEL_EXPORTER_PROMETHEUS_HOST unset (localhost), OTEL_EXPORTER_PROMETHEUS_PORT=%q), which %s takes`, port, port, key)
			if err := telemetry.CheckEnvironment(cfg); err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("CheckEnvironment with port %s = %v, want an error starting with %q", port, err, want)
			}
		}
		t.Setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "LocalHost")
		if err := telemetry.CheckEnvironment(cfg); err == nil {
			t.Error("CheckEnvironment on LocalHost = nil, want the same error as on localhost")
		}
		t.Setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.2")
		if err := telemetry.CheckEnvironment(cfg); err != nil {
			t.Errorf("CheckEnvironment on another host = %v, want nil", err)
		}
	})

	// The file's keys take the place of some variables, which then do not
	// count, and the Prometheus exporter reads no interval.
	t.Run("variables the file overrides", func(t *testing.T) {
		ratio := 0.5
		cfg := &config.Config{Telemetry: config.Telemetry{
			Traces:  config.TraceExport{Exporter: config.ExporterOTLP, Endpoint: "localhost:4317", SamplerRatio: &ratio},
			Metrics: config.MetricExport{Exporter: config.ExporterOTLP, Endpoint: "localhost:4317", Interval: time.Minute},
		}}
		clearOTelEnv(t)
		for variable, value := range map[string]string{
			"OTEL_TRACES_SAMPLER": "bogus", "OTEL_EXPORTER_OTLP_ENDPOINT": "::1", "OTEL_METRIC_EXPORT_INTERVAL": "abc",
		} {
			t.Setenv(variable, value)
		}
		if err := telemetry.CheckEnvironment(cfg); err != nil {
			t.Errorf("CheckEnvironment = %v, want nil: the file sets the sampler, the endpoints and the interval", err)
		}

		clearOTelEnv(t)
		t.Setenv("OTEL_METRICS_EXPORTER", "prometheus")
		t.Setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "0")
		t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "abc")
		t.Setenv("OTEL_METRIC_EXPORT_TIMEOUT", "abc")
		if err := telemetry.CheckEnvironment(&config.Config{}); err != nil {
			t.Errorf("CheckEnvironment with the prometheus exporter = %v, want nil: it reads no interval", err)
		}
	})

	t.Run("file endpoint for the environment's exporter", func(t *testing.T) {
		clearOTelEnv(t)
		t.Setenv("OTEL_TRACES_EXPORTER", "otlp") // OTLP/HTTP, the SDKs' default protocol
		cfg := &config.Config{Telemetry: config.Telemetry{Traces: config.TraceExport{Endpoint: "unix:/run/otel.sock"}}}
		want := `telemetry.traces.endpoint: "unix:/run/otel.sock" is a gRPC target; OTLP/HTTP takes an http:// or https:// URL`
		if err := telemetry.CheckEnvironment(cfg); err == nil || err.Error() != want {
			t.Errorf("CheckEnvironment = %v, want %q", err, want)
		}
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
		if err := telemetry.CheckEnvironment(cfg); err != nil {
			t.Errorf("CheckEnvironment over gRPC = %v, want nil", err)
		}
	})

	t.Run("endpoint variables that work", func(t *testing.T) {
		for _, env := range []map[string]string{
			{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "unix:/run/otel/collector.sock"},
			{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": " http://collector:4318 "},
			{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "HTTPS://collector/v1/traces"},
			{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "otel-collector:4317"},
			{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "//collector:4318"},
		} {
			clearOTelEnv(t)
			for variable, value := range env {
				t.Setenv(variable, value)
			}
			if err := telemetry.CheckEnvironment(&config.Config{}); err != nil {
				t.Errorf("CheckEnvironment with %v = %v, want nil", env, err)
			}
		}
	})

	t.Run("IPv6 host in brackets", func(t *testing.T) {
		clearOTelEnv(t)
		t.Setenv("OTEL_METRICS_EXPORTER", "prometheus")
		t.Setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "[::1]")
		if err := telemetry.CheckEnvironment(&config.Config{}); err != nil {
			t.Errorf("CheckEnvironment = %v, want nil", err)
		}
	})

	t.Run("known names", func(t *testing.T) {
		r := startReceivers(t) // so that a shutdown's last export has somewhere to go
		for _, env := range []map[string]string{
			{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_METRICS_EXPORTER": "otlp",
				"OTEL_EXPORTER_OTLP_ENDPOINT": r.grpc.URL()},
			{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": r.http.URL()},
			{"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grcp"},
			{"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_BSP_MAX_QUEUE_SIZE": "-1"},
			{"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_METRICS_PRODUCERS": "prometheus,none",
				"OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": "0"},
			{"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,team=b%20i"},
			{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "ParentBased_TraceIDRatio", "OTEL_TRACES_SAMPLER_ARG": "0.25",
				"OTEL_METRICS_EXPORTER": "console", "OTEL_METRIC_EXPORT_INTERVAL": "60000", "OTEL_METRIC_EXPORT_TIMEOUT": "30000"},
			{"OTEL_TRACES_EXPORTER": "none", "OTEL_TRACES_SAMPLER": "bogus", "OTEL_EXPORTER_OTLP_ENDPOINT": "::1"},
		} {
			clearOTelEnv(t)
			for variable, value := range env {
				t.Setenv(variable, value)
			}
			if err := telemetry.CheckEnvironment(&config.Config{}); err != nil {
				t.Errorf("CheckEnvironment with %v = %v, want nil", env, err)
			}
			p, err := telemetry.New(context.Background(), config.Telemetry{}, telemetry.Options{})
			if err != nil {
				t.Errorf("telemetry.New with %v = %v, want nil", env, err)
				continue
			}
			shutdown(t, p)
		}
	})
}

// TestIDsWithoutExporter checks the tracer of a gateway that exports no
// spans: it records nothing, yet every span has ids, so that the access
// log names a trace and a plugin gets a traceparent. A span continues its
// parent's trace with the parent's flags; a span without a parent begins
// a sampled trace, as the SDK's default sampler would.
func TestIDsWithoutExporter(t *testing.T) {
	clearOTelEnv(t)
	p := newProviders(t, config.Telemetry{}, telemetry.Options{})
	tracer := p.TracerProvider.Tracer("telemetry-test")

	rootCtx, root := tracer.Start(context.Background(), checkSpan)
	rootContext := root.SpanContext()
	if root.IsRecording() {
		t.Error("root span is recording, want a span that records nothing")
	}
	if !rootContext.IsValid() || !rootContext.IsSampled() {
		t.Errorf("root span context = %+v, want valid ids and the sampled flag", rootContext)
	}
	_, child := tracer.Start(rootCtx, checkSpan)
	if got := child.SpanContext(); got.TraceID() != rootContext.TraceID() || got.SpanID() == rootContext.SpanID() || !got.SpanID().IsValid() {
		t.Errorf("child span context = %+v, want the root's trace %v with a new span id", got, rootContext.TraceID())
	}
	_, other := tracer.Start(context.Background(), checkSpan)
	if other.SpanContext().TraceID() == rootContext.TraceID() {
		t.Error("two spans without a parent share a trace id")
	}

	// A client's unsampled trace stays unsampled, with its state.
	state, err := trace.ParseTraceState("vendor=value")
	if err != nil {
		t.Fatal(err)
	}
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3},
		SpanID:     trace.SpanID{4, 5, 6},
		TraceState: state,
		Remote:     true,
	})
	_, continued := tracer.Start(trace.ContextWithRemoteSpanContext(context.Background(), remote), checkSpan)
	got := continued.SpanContext()
	if got.TraceID() != remote.TraceID() || got.IsSampled() || got.TraceState().String() != "vendor=value" {
		t.Errorf("span of a remote unsampled parent = %+v, want trace %v, unsampled, state vendor=value", got, remote.TraceID())
	}
}

// TestShutdownSendsMetricsWhileSpansHang checks that a collector of spans
// that accepts connections but never responds does not keep the last
// metrics from another collector at shutdown, since both get the whole
// time.
func TestShutdownSendsMetricsWhileSpansHang(t *testing.T) {
	clearOTelEnv(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		var accepted []net.Conn // kept open, without a response, until the test ends
		for {
			conn, err := silent.Accept()
			if err != nil {
				for _, conn := range accepted {
					conn.Close()
				}
				return
			}
			accepted = append(accepted, conn)
		}
	}()
	metrics := otlptest.StartGRPC(t)
	p := newProviders(t, config.Telemetry{
		Traces:  config.TraceExport{Exporter: config.ExporterOTLP, Endpoint: silent.Addr().String(), Insecure: true},
		Metrics: config.MetricExport{Exporter: config.ExporterOTLP, Endpoint: metrics.Addr, Insecure: true},
	}, telemetry.Options{})

	record(t, p)
	stopCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.Shutdown(stopCtx); err == nil {
		t.Error("Shutdown() = nil, want the span collector's timeout")
	}
	if !slices.Contains(metrics.MetricNames(), checkMetric) {
		t.Errorf("metric names received = %q, want %q among them", metrics.MetricNames(), checkMetric)
	}
}
