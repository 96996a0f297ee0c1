package gateway_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// Label names of the gateway's metrics in the Prometheus format.
const (
	labelEngine    = "qlik_sse_engine"
	labelFunction  = "qlik_sse_function_name"
	labelMethod    = "rpc_method"
	labelCode      = "rpc_grpc_status_code"
	labelDirection = "direction"
	labelReplica   = "qlik_sse_replica"
	labelReason    = "reason"
	labelMismatch  = "qlik_sse_mismatch"
)

// qlikContext returns ctx carrying the headers of an ExecuteFunction call
// of function id from app and user, as Qlik sends them, and an
// x-sse-engine header naming engine.
func qlikContext(t *testing.T, ctx context.Context, engine string, id int32, app, user string) context.Context {
	t.Helper()
	md, err := ssepb.FunctionCallMetadata(id, &ssepb.CommonRequestHeader{AppId: app, UserId: user, Cardinality: 1})
	if err != nil {
		t.Fatal(err)
	}
	md.Set(routing.EngineHeader, engine)
	return metadata.NewOutgoingContext(ctx, md)
}

// engineContext returns ctx with an x-sse-engine header naming engine, for
// GetCapabilities.
func engineContext(ctx context.Context, engine string) context.Context {
	return metadata.NewOutgoingContext(ctx, metadata.Pairs(routing.EngineHeader, engine))
}

// encodeBundle returns the wire encoding of bundle.
func encodeBundle(t *testing.T, bundle *ssepb.BundledRows) ssetest.Raw {
	t.Helper()
	b, err := proto.Marshal(bundle)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// countReplyRows decodes the messages of a reply and returns how many rows
// they hold.
func countReplyRows(t *testing.T, messages []ssetest.Raw) int {
	t.Helper()
	rows := 0
	for _, message := range messages {
		bundle := &ssepb.BundledRows{}
		if err := proto.Unmarshal(message, bundle); err != nil {
			t.Fatalf("decoding a reply message: %v", err)
		}
		rows += len(bundle.GetRows())
	}
	return rows
}

// replyBytes returns the size of a reply's messages.
func replyBytes(messages []ssetest.Raw) int {
	n := 0
	for _, message := range messages {
		n += len(message)
	}
	return n
}

// failingConnector returns a plugin with one function, Fail (id 0), that
// reads every request and then fails with FailedPrecondition, as a plugin
// reporting an error of its own does.
func failingConnector() *ssetest.Connector {
	return &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{
				PluginIdentifier: "failing",
				Functions: []*ssepb.FunctionDefinition{{
					FunctionId: 0, Name: "Fail",
					FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_NUMERIC,
					Params: []*ssepb.Parameter{{Name: "x", DataType: ssepb.DataType_NUMERIC}},
				}},
			}, nil
		},
		Execute: func(s ssetest.Stream) error {
			for {
				if _, err := s.Recv(); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					return err
				}
			}
			return status.Error(codes.FailedPrecondition, "model not loaded")
		},
	}
}

// adminClient fetches admin pages without keeping connections open, so
// that no connection outlives its gateway.
var adminClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// adminGet fetches path from gw's admin listener and returns the status
// code, the headers and the body.
func adminGet(t *testing.T, gw *ssetest.Gateway, path string) (int, http.Header, string) {
	t.Helper()
	addr := gw.AdminAddr()
	if addr == nil {
		t.Fatal("AdminAddr() = nil, want the admin listener's address")
	}
	resp, err := adminClient.Get("http://" + addr.String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

// metricsScrape fetches gw's /metrics and parses the Prometheus text.
func metricsScrape(t *testing.T, gw *ssetest.Gateway) map[string]*dto.MetricFamily {
	t.Helper()
	code, _, body := adminGet(t, gw, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics status = %d, want 200; body:\n%s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v; body:\n%s", err, body)
	}
	return families
}

// metricsSeries returns the series of the metric family name, keyed by the
// values of labels joined with "/". A counter or gauge gives its value, a
// histogram its sample count. A series without one of the labels, or two
// series with the same key, fail the test, so the map lists every series.
func metricsSeries(t *testing.T, families map[string]*dto.MetricFamily, name string, labels ...string) map[string]float64 {
	t.Helper()
	series := map[string]float64{}
	family, ok := families[name]
	if !ok {
		return series
	}
	for _, metric := range family.GetMetric() {
		values := map[string]string{}
		for _, pair := range metric.GetLabel() {
			values[pair.GetName()] = pair.GetValue()
		}
		var key []string
		for _, label := range labels {
			value, ok := values[label]
			if !ok {
				t.Fatalf("series of %s with labels %v has no label %s", name, values, label)
			}
			key = append(key, value)
		}
		k := strings.Join(key, "/")
		if _, dup := series[k]; dup {
			t.Fatalf("%s has two series for %s=%s; labels of one: %v", name, strings.Join(labels, ","), k, values)
		}
		switch family.GetType() {
		case dto.MetricType_COUNTER:
			series[k] = metric.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			series[k] = metric.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			series[k] = float64(metric.GetHistogram().GetSampleCount())
		default:
			t.Fatalf("%s is a %v, want a counter, gauge or histogram", name, family.GetType())
		}
	}
	return series
}

// metricsWaitFor scrapes gw until the series of name, keyed as
// metricsSeries keys them, equal want, or fails the test after timeout.
func metricsWaitFor(t *testing.T, gw *ssetest.Gateway, timeout time.Duration, want map[string]float64, name string, labels ...string) {
	t.Helper()
	// A metric changes without an event, so only scraping shows it.
	deadline := time.Now().Add(timeout)
	for {
		got := metricsSeries(t, metricsScrape(t, gw), name, labels...)
		diff := cmp.Diff(want, got)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after %v (-want +got):\n%s", name, timeout, diff)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsCountTraffic sends known traffic through a gateway and checks
// the exact counts that /metrics reports for it. They are calls,
// durations, rows, bytes and attempts per engine and function, calls in
// flight and waiting, replica health before and after a replica stops,
// and a rejected TLS handshake.
func TestMetricsCountTraffic(t *testing.T) {
	examplePlugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("example-1"))
	failingPlugin := ssetest.StartPlugin(t, failingConnector())
	exampleEngine := ssetest.Engine(examplePlugin.Addr)
	exampleEngine.ProbeInterval = 100 * time.Millisecond // to see the replica stop soon
	certs := ssetest.NewCerts(t)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{
			// No default engine: calls name theirs in x-sse-engine.
			ssetest.Listen("", nil),
			ssetest.Listen("Example", &config.ServerTLS{Dir: certs.GatewayDir}),
		},
		Engines: map[string]*config.Engine{
			"Example": exampleEngine,
			"Failing": ssetest.Engine(failingPlugin.Addr),
		},
	})
	client := ssetest.Dial(t, gw.Addrs[0])
	ctx := testContext(t)

	// The capabilities of both engines, which also name their functions
	// in the metrics of later calls.
	exampleCapabilities, err := client.GetCapabilities(engineContext(ctx, "Example"), &ssepb.Empty{})
	if err != nil {
		t.Fatalf("GetCapabilities(Example): %v", err)
	}
	failingCapabilities, err := client.GetCapabilities(engineContext(ctx, "Failing"), &ssepb.Empty{})
	if err != nil {
		t.Fatalf("GetCapabilities(Failing): %v", err)
	}

	// Five calls of SumOfRows with 10 rows each.
	sumRequest := encodeBundle(t, ssetest.NumericBundle(10, 2))
	sumBytesOut := 0
	for i := range 5 {
		out := exchange(qlikContext(t, ctx, "Example", example.FunctionSumOfRows, "app", "user"), client, sumRequest)
		if out.err != io.EOF {
			t.Fatalf("SumOfRows call %d: %v", i, out.err)
		}
		if rows := countReplyRows(t, out.messages); rows != 10 {
			t.Fatalf("SumOfRows call %d returned %d rows, want 10", i, rows)
		}
		sumBytesOut += replyBytes(out.messages)
	}

	// Two calls that the plugin fails, with 3 rows each.
	failRequest := encodeBundle(t, ssetest.NumericBundle(3, 1))
	for i := range 2 {
		out := exchange(qlikContext(t, ctx, "Failing", 0, "app", "user"), client, failRequest)
		if status.Code(out.err) != codes.FailedPrecondition {
			t.Fatalf("Fail call %d: error = %v, want FailedPrecondition", i, out.err)
		}
	}

	// One call that no engine takes.
	if _, err := client.GetCapabilities(ctx, &ssepb.Empty{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("GetCapabilities without an engine: error = %v, want Unimplemented", err)
	}

	// One plaintext client on the mutual TLS listener.
	sendPlaintextToTLS(t, gw.Addrs[1])

	families := metricsScrape(t, gw)
	wantCalls := map[string]float64{
		"Example/GetCapabilities/GetCapabilities/0": 1,
		"Example/SumOfRows/ExecuteFunction/0":       5,
		"Failing/GetCapabilities/GetCapabilities/0": 1,
		"Failing/Fail/ExecuteFunction/9":            2,
		"none/unknown/GetCapabilities/12":           1,
	}
	checks := []struct {
		name   string
		labels []string
		want   map[string]float64
	}{
		{name: "ssegw_calls_total", labels: []string{labelEngine, labelFunction, labelMethod, labelCode}, want: wantCalls},
		{name: "ssegw_call_duration_seconds", labels: []string{labelEngine, labelFunction, labelMethod, labelCode}, want: wantCalls},
		{
			name:   "ssegw_rows_total",
			labels: []string{labelEngine, labelFunction, labelDirection},
			want: map[string]float64{
				"Example/GetCapabilities/in": 0, "Example/GetCapabilities/out": 0,
				"Example/SumOfRows/in": 50, "Example/SumOfRows/out": 50,
				"Failing/GetCapabilities/in": 0, "Failing/GetCapabilities/out": 0,
				"Failing/Fail/in": 6, "Failing/Fail/out": 0,
			},
		},
		{
			name:   "ssegw_bytes_total",
			labels: []string{labelEngine, labelFunction, labelDirection},
			want: map[string]float64{
				"Example/GetCapabilities/in": 0, "Example/GetCapabilities/out": float64(proto.Size(exampleCapabilities)),
				"Example/SumOfRows/in": float64(5 * len(sumRequest)), "Example/SumOfRows/out": float64(sumBytesOut),
				"Failing/GetCapabilities/in": 0, "Failing/GetCapabilities/out": float64(proto.Size(failingCapabilities)),
				"Failing/Fail/in": float64(2 * len(failRequest)), "Failing/Fail/out": 0,
			},
		},
		{
			name:   "ssegw_call_attempts_total",
			labels: []string{labelEngine, labelFunction},
			want: map[string]float64{
				"Example/GetCapabilities": 1, "Example/SumOfRows": 5,
				"Failing/GetCapabilities": 1, "Failing/Fail": 2,
			},
		},
		{
			name:   "ssegw_calls_in_flight",
			labels: []string{labelMethod},
			want:   map[string]float64{"GetCapabilities": 0, "ExecuteFunction": 0},
		},
		{
			name:   "ssegw_calls_waiting",
			labels: []string{labelEngine},
			want:   map[string]float64{"Example": 0, "Failing": 0},
		},
		{name: "ssegw_tls_handshake_failures_total", labels: []string{labelReason}, want: handshakeSeries(tlsutil.FailureNotTLS)},
	}
	for _, check := range checks {
		if diff := cmp.Diff(check.want, metricsSeries(t, families, check.name, check.labels...)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", check.name, diff)
		}
	}

	// Both replicas answer their probes; then the example plugin stops.
	metricsWaitFor(t, gw, 10*time.Second, map[string]float64{
		"Example/" + examplePlugin.Addr: 1,
		"Failing/" + failingPlugin.Addr: 1,
	}, "ssegw_replica_healthy", labelEngine, labelReplica)
	metricsWaitFor(t, gw, 10*time.Second, map[string]float64{
		"Example/" + examplePlugin.Addr: 0,
		"Failing/" + failingPlugin.Addr: 0,
	}, "ssegw_replica_busy", labelEngine, labelReplica)
	examplePlugin.Server.Stop()
	metricsWaitFor(t, gw, 10*time.Second, map[string]float64{
		"Example/" + examplePlugin.Addr: 0,
		"Failing/" + failingPlugin.Addr: 1,
	}, "ssegw_replica_healthy", labelEngine, labelReplica)
}

// handshakeSeries returns the series of ssegw_tls_handshake_failures_total
// after one failed handshake for reason. Every reason has a series.
func handshakeSeries(reason tlsutil.HandshakeFailure) map[string]float64 {
	series := map[string]float64{}
	for _, r := range tlsutil.HandshakeFailures {
		series[string(r)] = 0
	}
	series[string(reason)] = 1
	return series
}

// sendPlaintextToTLS sends the HTTP/2 preface in plaintext to a mutual TLS
// listener at address and waits until the gateway closes the connection.
// The gateway counts the failed handshake before it closes the connection.
func sendPlaintextToTLS(t *testing.T, address string) {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		t.Fatalf("writing the HTTP/2 preface: %v", err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, conn)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("the TLS listener kept a plaintext connection open for 10s")
	}
}

// TestMetricsInFlight checks that ssegw_calls_in_flight counts a call
// while the plugin holds it, and returns to 0 when it ends.
func TestMetricsInFlight(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var startedOnce, releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	hold := func(s ssetest.Stream) error {
		startedOnce.Do(func() { close(started) })
		select {
		case <-release:
		case <-s.Context().Done():
		}
		return nil
	}
	p := newPath(t, &ssetest.Connector{Execute: hold}, nil)
	ctx := testContext(t)

	callCtx := functionContext(t, ctx, 0)
	done := make(chan outcome, 1)
	go func() { done <- exchange(callCtx, p.viaGateway) }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin did not receive the call within 10s")
	}

	inFlight := metricsSeries(t, metricsScrape(t, p.gateway), "ssegw_calls_in_flight", labelMethod)
	if got := inFlight["ExecuteFunction"]; got != 1 {
		t.Errorf("ssegw_calls_in_flight{rpc_method=ExecuteFunction} during the call = %v, want 1", got)
	}

	releaseAll()
	select {
	case out := <-done:
		if out.err != io.EOF {
			t.Fatalf("call: %v", out.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not end within 10s of its release")
	}
	inFlight = metricsSeries(t, metricsScrape(t, p.gateway), "ssegw_calls_in_flight", labelMethod)
	if got := inFlight["ExecuteFunction"]; got != 0 {
		t.Errorf("ssegw_calls_in_flight{rpc_method=ExecuteFunction} after the call = %v, want 0", got)
	}
}
