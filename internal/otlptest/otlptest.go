// Package otlptest runs OTLP receivers inside a test process, on
// 127.0.0.1, so that tests can check what the real OpenTelemetry exporters
// send. One receiver takes OTLP over gRPC and one OTLP over HTTP with
// protobuf bodies. Both store every span and count every request and
// connection, so a test can also show that nothing was sent.
package otlptest

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metricservice "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	traceservice "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Paths where an OTLP/HTTP collector accepts each signal, as the OTLP
// specification fixes them.
const (
	TracesPath  = "/v1/traces"
	MetricsPath = "/v1/metrics"
)

// Span is one received span with the resource of the process that sent
// it and the instrumentation scope that made it.
type Span struct {
	*tracepb.Span
	Resource          *resourcepb.Resource
	ResourceSchemaURL string
	Scope             *commonpb.InstrumentationScope
	ScopeSchemaURL    string
}

// TraceIDHex returns the span's trace id in the lowercase hex of W3C
// traceparent.
func (s Span) TraceIDHex() string { return hex.EncodeToString(s.TraceId) }

// SpanIDHex returns the span's id in lowercase hex.
func (s Span) SpanIDHex() string { return hex.EncodeToString(s.SpanId) }

// ParentSpanIDHex returns the parent span's id in lowercase hex, or "" for
// a root span.
func (s Span) ParentSpanIDHex() string { return hex.EncodeToString(s.ParentSpanId) }

// Attributes returns the span's attributes as Go values: string, bool,
// int64, float64 or []byte, and the protobuf value for arrays and maps.
func (s Span) Attributes() map[string]any {
	return attributeMap(s.GetAttributes())
}

// ResourceAttributes returns the attributes of the span's resource, as
// Attributes does.
func (s Span) ResourceAttributes() map[string]any {
	return attributeMap(s.Resource.GetAttributes())
}

func attributeMap(attributes []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(attributes))
	for _, kv := range attributes {
		m[kv.GetKey()] = Value(kv.GetValue())
	}
	return m
}

// Value converts an OTLP attribute value to the Go value Attributes uses.
func Value(v *commonpb.AnyValue) any {
	switch v := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return v.StringValue
	case *commonpb.AnyValue_BoolValue:
		return v.BoolValue
	case *commonpb.AnyValue_IntValue:
		return v.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return v.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return v.BytesValue
	case *commonpb.AnyValue_ArrayValue:
		return v.ArrayValue
	case *commonpb.AnyValue_KvlistValue:
		return v.KvlistValue
	}
	return nil
}

// Receiver stores what one OTLP endpoint receives. Its methods are safe
// for concurrent use.
type Receiver struct {
	// Addr is the receiver's host:port on 127.0.0.1.
	Addr string

	// connections counts accepted TCP connections.
	connections atomic.Int64

	mu sync.Mutex
	// The fields below are guarded by mu.
	spans          []Span
	traceRequests  int
	metricRequests int
	metrics        []*metricspb.ResourceMetrics
	paths          []string
	// changed is closed and replaced whenever something arrives, to wake
	// waiters.
	changed chan struct{}
}

func newReceiver() *Receiver {
	return &Receiver{changed: make(chan struct{})}
}

// URL returns the receiver's base URL, http://Addr.
func (r *Receiver) URL() string { return "http://" + r.Addr }

// Spans returns every span received so far, in arrival order.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// SpanCount returns how many spans arrived.
func (r *Receiver) SpanCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.spans)
}

// TraceRequests returns how many trace export requests arrived.
func (r *Receiver) TraceRequests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.traceRequests
}

// MetricRequests returns how many metric export requests arrived.
func (r *Receiver) MetricRequests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.metricRequests
}

// Metrics returns every metric received, in the order of arrival, with
// the points of each export request.
func (r *Receiver) Metrics() []*metricspb.Metric {
	r.mu.Lock()
	defer r.mu.Unlock()
	var metrics []*metricspb.Metric
	for _, rm := range r.metrics {
		for _, sm := range rm.GetScopeMetrics() {
			metrics = append(metrics, sm.GetMetrics()...)
		}
	}
	return metrics
}

// MetricNames returns the name of every metric received, once each.
func (r *Receiver) MetricNames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	var names []string
	for _, rm := range r.metrics {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				if !seen[m.GetName()] {
					seen[m.GetName()] = true
					names = append(names, m.GetName())
				}
			}
		}
	}
	return names
}

// Paths returns the URL path of every HTTP request, including the ones
// the receiver rejected with 404 Not Found. It is empty for the gRPC
// receiver.
func (r *Receiver) Paths() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.paths...)
}

// Connections returns how many TCP connections the receiver accepted.
func (r *Receiver) Connections() int {
	return int(r.connections.Load())
}

// WaitForSpans waits until at least n spans have arrived and returns every
// span received. It fails the test after timeout.
func (r *Receiver) WaitForSpans(t testing.TB, n int, timeout time.Duration) []Span {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		count, changed := len(r.spans), r.changed
		r.mu.Unlock()
		if count >= n {
			return r.Spans()
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("OTLP receiver got %d spans within %v, want at least %d", count, timeout, n)
			return nil
		}
	}
}

// addTraces stores the spans of one export request.
func (r *Receiver) addTraces(request *traceservice.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.traceRequests++
	for _, rs := range request.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, span := range ss.GetSpans() {
				r.spans = append(r.spans, Span{
					Span:              span,
					Resource:          rs.GetResource(),
					ResourceSchemaURL: rs.GetSchemaUrl(),
					Scope:             ss.GetScope(),
					ScopeSchemaURL:    ss.GetSchemaUrl(),
				})
			}
		}
	}
	r.notifyLocked()
}

// addMetrics stores the metrics of one export request.
func (r *Receiver) addMetrics(request *metricservice.ExportMetricsServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metricRequests++
	r.metrics = append(r.metrics, request.GetResourceMetrics()...)
	r.notifyLocked()
}

func (r *Receiver) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// StartGRPC serves OTLP over gRPC, traces and metrics, on a free port of
// 127.0.0.1 until the test ends.
func StartGRPC(t testing.TB) *Receiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("OTLP receiver: %v", err)
	}
	r := newReceiver()
	r.Addr = lis.Addr().String()
	server := grpc.NewServer()
	traceservice.RegisterTraceServiceServer(server, traceService{receiver: r})
	metricservice.RegisterMetricsServiceServer(server, metricsService{receiver: r})
	go server.Serve(&countingListener{Listener: lis, count: &r.connections})
	t.Cleanup(server.Stop)
	return r
}

type traceService struct {
	traceservice.UnimplementedTraceServiceServer
	receiver *Receiver
}

func (s traceService) Export(_ context.Context, request *traceservice.ExportTraceServiceRequest) (*traceservice.ExportTraceServiceResponse, error) {
	s.receiver.addTraces(request)
	return &traceservice.ExportTraceServiceResponse{}, nil
}

type metricsService struct {
	metricservice.UnimplementedMetricsServiceServer
	receiver *Receiver
}

func (s metricsService) Export(_ context.Context, request *metricservice.ExportMetricsServiceRequest) (*metricservice.ExportMetricsServiceResponse, error) {
	s.receiver.addMetrics(request)
	return &metricservice.ExportMetricsServiceResponse{}, nil
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	count *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err == nil {
		l.count.Add(1)
	}
	return conn, err
}

// StartHTTP serves OTLP over HTTP with protobuf bodies on a free port of
// 127.0.0.1 until the test ends. Like a collector, it accepts POST on
// TracesPath and MetricsPath only and responds 404 Not Found elsewhere.
func StartHTTP(t testing.TB) *Receiver {
	t.Helper()
	r := newReceiver()
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+TracesPath, func(w http.ResponseWriter, req *http.Request) {
		request := &traceservice.ExportTraceServiceRequest{}
		if !decodeBody(w, req, request) {
			return
		}
		r.addTraces(request)
		writeResponse(w, &traceservice.ExportTraceServiceResponse{})
	})
	mux.HandleFunc("POST "+MetricsPath, func(w http.ResponseWriter, req *http.Request) {
		request := &metricservice.ExportMetricsServiceRequest{}
		if !decodeBody(w, req, request) {
			return
		}
		r.addMetrics(request)
		writeResponse(w, &metricservice.ExportMetricsServiceResponse{})
	})
	server := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.paths = append(r.paths, req.URL.Path)
		r.mu.Unlock()
		mux.ServeHTTP(w, req)
	}))
	server.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			r.connections.Add(1)
		}
	}
	server.Start()
	t.Cleanup(server.Close)
	r.Addr = server.Listener.Addr().String()
	return r
}

// decodeBody reads a protobuf request body, gzip-compressed or not, into
// message. On failure it responds 400 Bad Request and returns false.
func decodeBody(w http.ResponseWriter, req *http.Request, message proto.Message) bool {
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, "invalid gzip body: "+err.Error(), http.StatusBadRequest)
			return false
		}
		defer gz.Close()
		body = gz
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, "reading the body failed: "+err.Error(), http.StatusBadRequest)
		return false
	}
	if err := proto.Unmarshal(data, message); err != nil {
		http.Error(w, "invalid protobuf body: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func writeResponse(w http.ResponseWriter, message proto.Message) {
	data, err := proto.Marshal(message)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(data)
}

var (
	_ traceservice.TraceServiceServer    = traceService{}
	_ metricservice.MetricsServiceServer = metricsService{}
)
