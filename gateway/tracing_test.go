package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/otlpcount"
	"github.com/ssegw/ssegw/internal/otlptest"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// Function ids in tracingPlugin's capabilities.
const (
	tracingSumID      = 1 // Sum, an aggregation
	tracingForecastID = 2 // Forecast, a scalar function
)

// Request headers that steer tracingPlugin.
const (
	// tracingFailHeader carries a gRPC code number, and the plugin fails
	// the call with that code.
	tracingFailHeader = "x-test-fail"
	// tracingCallHeader names the call, so that the plugin can store the
	// traceparent it arrived with.
	tracingCallHeader = "x-test-call"
)

// tracingCapabilities returns the capabilities of tracingPlugin.
func tracingCapabilities() *ssepb.Capabilities {
	return &ssepb.Capabilities{
		AllowScript:      true,
		PluginIdentifier: "tracing-test",
		PluginVersion:    "1.0.0",
		Functions: []*ssepb.FunctionDefinition{
			{
				Name: "Sum", FunctionId: tracingSumID, FunctionType: ssepb.FunctionType_AGGREGATION, ReturnType: ssepb.DataType_NUMERIC,
				Params: []*ssepb.Parameter{{Name: "x", DataType: ssepb.DataType_NUMERIC}},
			},
			{
				Name: "Forecast", FunctionId: tracingForecastID, FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_NUMERIC,
				Params: []*ssepb.Parameter{{Name: "x", DataType: ssepb.DataType_NUMERIC}, {Name: "y", DataType: ssepb.DataType_NUMERIC}},
			},
		},
	}
}

// tracingReplyBundles returns what tracingPlugin sends for rows result rows:
// bundles of at most five rows with one numeric column.
func tracingReplyBundles(rows int) []*ssepb.BundledRows {
	var bundles []*ssepb.BundledRows
	for rows > 0 {
		n := min(rows, 5)
		bundles = append(bundles, ssetest.NumericBundle(n, 1))
		rows -= n
	}
	return bundles
}

// tracingPlugin is a plugin with the functions Sum and Forecast and with
// scripts allowed. It reads every request, then sends tracingReplyBundles
// with one row for an aggregation, else one row per row received. A call
// with tracingFailHeader fails with that code. GetCapabilities and
// ExecuteFunction fail at once, before reading anything, and
// EvaluateScript fails after reading every request and sending one
// bundle. Probes always get the capabilities.
type tracingPlugin struct {
	// traceparents maps a call's tracingCallHeader value to the traceparent
	// header it arrived with.
	traceparents sync.Map
}

func (p *tracingPlugin) connector() *ssetest.Connector {
	return &ssetest.Connector{
		Capabilities: func(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			if !ssetest.IsProbe(ctx) {
				p.note(md)
				if code, ok := tracingFailCode(md); ok {
					return nil, status.Error(code, tracingPluginMessage(code))
				}
			}
			return tracingCapabilities(), nil
		},
		Execute: func(stream ssetest.Stream) error {
			md, _ := metadata.FromIncomingContext(stream.Context())
			p.note(md)
			if code, ok := tracingFailCode(md); ok {
				return status.Error(code, tracingPluginMessage(code))
			}
			header, _ := ssepb.ReadFunctionRequestHeader(md)
			return tracingAnswer(stream, header.GetFunctionId() == tracingSumID)
		},
		Script: func(stream ssetest.Stream) error {
			md, _ := metadata.FromIncomingContext(stream.Context())
			p.note(md)
			header, _ := ssepb.ReadScriptRequestHeader(md)
			code, fail := tracingFailCode(md)
			if !fail {
				return tracingAnswer(stream, header.GetFunctionType() == ssepb.FunctionType_AGGREGATION)
			}
			if _, err := tracingReadRows(stream); err != nil {
				return err
			}
			if err := stream.Send(tracingReplyBundles(1)[0]); err != nil {
				return err
			}
			return status.Error(code, tracingPluginMessage(code))
		},
	}
}

// note stores the traceparent of a call that has a tracingCallHeader.
func (p *tracingPlugin) note(md metadata.MD) {
	if names := md.Get(tracingCallHeader); len(names) > 0 {
		p.traceparents.Store(names[0], tracingFirst(md.Get("traceparent")))
	}
}

// traceparent returns the traceparent header the call named name arrived
// with.
func (p *tracingPlugin) traceparent(name string) (string, bool) {
	value, ok := p.traceparents.Load(name)
	if !ok {
		return "", false
	}
	return value.(string), true
}

func tracingFirst(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return values[0]
}

// tracingFailCode returns the code in a call's tracingFailHeader.
func tracingFailCode(md metadata.MD) (codes.Code, bool) {
	value := tracingFirst(md.Get(tracingFailHeader))
	if value == "" {
		return codes.OK, false
	}
	n, err := strconv.Atoi(value)
	if err != nil {
		return codes.Internal, true
	}
	return codes.Code(n), true
}

// tracingPluginMessage is the status message of a call that tracingPlugin fails
// with code.
func tracingPluginMessage(code codes.Code) string {
	return "test plugin fails with " + code.String()
}

// tracingReadRows reads a stream's requests to the end and returns how many rows
// they held.
func tracingReadRows(stream ssetest.Stream) (int, error) {
	rows := 0
	for {
		bundle, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			return rows, err
		}
		rows += len(bundle.GetRows())
	}
}

// tracingAnswer reads every request and sends tracingReplyBundles: one row for an
// aggregation, else as many rows as it read.
func tracingAnswer(stream ssetest.Stream, aggregation bool) error {
	rows, err := tracingReadRows(stream)
	if err != nil {
		return err
	}
	if aggregation {
		rows = 1
	}
	for _, bundle := range tracingReplyBundles(rows) {
		if err := stream.Send(bundle); err != nil {
			return err
		}
	}
	return nil
}

// localAddrLog records the local address of every connection a client
// dials, which is the peer address the gateway records for the client.
type localAddrLog struct {
	mu    sync.Mutex
	addrs []string
}

func (l *localAddrLog) dialer(ctx context.Context, address string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.addrs = append(l.addrs, conn.LocalAddr().String())
	l.mu.Unlock()
	return conn, nil
}

func (l *localAddrLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.addrs)
}

// tracedPath is a test plugin behind a gateway whose configuration sends
// spans with the real OTLP exporter to an in-process receiver.
type tracedPath struct {
	plugin   *ssetest.Plugin
	gateway  *ssetest.Gateway
	receiver *otlptest.Receiver
	// client calls through the gateway on one connection, whose local
	// address clientAddrs records.
	client      ssepb.ConnectorClient
	clientAddrs *localAddrLog
}

// newTracedPath starts connector as engine R behind a gateway listener
// whose default engine is R, with traces sent over OTLP to a new receiver
// and no metrics exporter. tune, if not nil, changes the configuration
// first.
func newTracedPath(t testing.TB, connector *ssetest.Connector, tune func(*config.Config)) *tracedPath {
	t.Helper()
	// The receiver starts first so that it stops last, after the
	// gateway's shutdown has flushed the spans to it.
	receiver := otlptest.StartGRPC(t)
	plugin := ssetest.StartPlugin(t, connector)
	cfg := &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
		Telemetry: config.Telemetry{
			Traces:  config.TraceExport{Exporter: config.ExporterOTLP, Endpoint: receiver.Addr, Insecure: true},
			Metrics: config.MetricExport{Exporter: config.ExporterNone},
		},
	}
	if tune != nil {
		tune(cfg)
	}
	gw := ssetest.StartGateway(t, cfg)
	addrs := &localAddrLog{}
	return &tracedPath{
		plugin:      plugin,
		gateway:     gw,
		receiver:    receiver,
		client:      ssetest.Dial(t, gw.Addrs[0], grpc.WithContextDialer(addrs.dialer)),
		clientAddrs: addrs,
	}
}

// flush shuts the gateway down, which flushes its spans to the receiver.
func (p *tracedPath) flush(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p.gateway.Shutdown(ctx)
}

// tracingLearnCapabilities makes the gateway connect to the plugin and
// learn its capabilities. It first makes an ExecuteFunction call without
// headers, which waits until the gateway's connection to the plugin is
// ready: until then the gateway responds to GetCapabilities with what its
// probe stored, without reaching the plugin. The GetCapabilities call
// that follows passes through, and the gateway stores the capabilities
// from the response, so later ExecuteFunction spans carry the names.
func tracingLearnCapabilities(t testing.TB, client ssepb.ConnectorClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r := callSSEStream(ctx, func(ctx context.Context) (sseStream, error) { return client.ExecuteFunction(ctx) }, nil); r.err != nil {
		t.Fatalf("ExecuteFunction without headers = %v, want success", r.err)
	}
	if _, err := client.GetCapabilities(ctx, &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities through the gateway = %v, want success", err)
	}
}

// newTraceparent returns a W3C traceparent header of a new sampled trace,
// with its trace id and parent span id in hex.
func newTraceparent() (header, traceID, spanID string) {
	var trace [16]byte
	var span [8]byte
	rand.Read(trace[:])
	rand.Read(span[:])
	traceID, spanID = hex.EncodeToString(trace[:]), hex.EncodeToString(span[:])
	return "00-" + traceID + "-" + spanID + "-01", traceID, spanID
}

// sseStream is the client side of ExecuteFunction and EvaluateScript.
type sseStream = grpc.BidiStreamingClient[ssepb.BundledRows, ssepb.BundledRows]

// sseStreamResult is what callSSEStream received.
type sseStreamResult struct {
	messages, rows int
	err            error // nil when the call ended with OK
}

// callSSEStream opens a stream with open, sends requests while it reads the
// response, half-closes, and returns once the call has ended.
func callSSEStream(ctx context.Context, open func(context.Context) (sseStream, error), requests []*ssepb.BundledRows) sseStreamResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := open(ctx)
	if err != nil {
		return sseStreamResult{err: err}
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for _, request := range requests {
			if err := stream.Send(request); err != nil {
				return // the status comes from Recv
			}
		}
		stream.CloseSend()
	}()
	var result sseStreamResult
	for {
		bundle, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				result.err = err
			}
			break
		}
		result.messages++
		result.rows += len(bundle.GetRows())
	}
	cancel() // unblocks a send still waiting after the call ended
	<-sent
	return result
}

// spanCounters returns the span attributes that count a call's messages,
// bytes and rows, for requests in and responses out.
func spanCounters(in, out []*ssepb.BundledRows) map[string]any {
	m := map[string]any{
		"qlik.sse.messages.in":  int64(len(in)),
		"qlik.sse.messages.out": int64(len(out)),
	}
	var bytesIn, bytesOut, rowsIn, rowsOut int64
	for _, bundle := range in {
		bytesIn += int64(proto.Size(bundle))
		rowsIn += int64(len(bundle.GetRows()))
	}
	for _, bundle := range out {
		bytesOut += int64(proto.Size(bundle))
		rowsOut += int64(len(bundle.GetRows()))
	}
	m["qlik.sse.bytes.in"], m["qlik.sse.bytes.out"] = bytesIn, bytesOut
	m["qlik.sse.rows.in"], m["qlik.sse.rows.out"] = rowsIn, rowsOut
	return m
}

// mergeAttributes returns the union of maps, where a later map's value
// wins.
func mergeAttributes(maps ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, m := range maps {
		for key, value := range m {
			out[key] = value
		}
	}
	return out
}

// redactionHash returns an id as redaction hash records it: the first 16 hex
// digits of its SHA-256.
func redactionHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])[:16]
}

// tracingHostPort splits address into host and numeric port.
func tracingHostPort(t testing.TB, address string) (string, int64) {
	t.Helper()
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(port, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return host, n
}

// checkSpanAttributes checks that got contains exactly the attributes of
// want, besides the keys in ignore.
func checkSpanAttributes(t *testing.T, what string, got, want map[string]any, ignore ...string) {
	t.Helper()
	for key, wantValue := range want {
		gotValue, ok := got[key]
		if !ok {
			t.Errorf("%s: attribute %s missing, want %v", what, key, wantValue)
			continue
		}
		if gotValue != wantValue {
			t.Errorf("%s: attribute %s = %v (%T), want %v (%T)", what, key, gotValue, gotValue, wantValue, wantValue)
		}
	}
	for key, value := range got {
		if _, ok := want[key]; !ok && !slices.Contains(ignore, key) {
			t.Errorf("%s: attribute %s = %v, want none", what, key, value)
		}
	}
}

// spanKinds returns the server spans and the client spans among spans.
func spanKinds(spans []otlptest.Span) (servers, clients []otlptest.Span) {
	for _, span := range spans {
		switch span.GetKind() {
		case tracepb.Span_SPAN_KIND_SERVER:
			servers = append(servers, span)
		case tracepb.Span_SPAN_KIND_CLIENT:
			clients = append(clients, span)
		}
	}
	return servers, clients
}

// spansByTrace groups spans by trace id.
func spansByTrace(spans []otlptest.Span) map[string][]otlptest.Span {
	traces := map[string][]otlptest.Span{}
	for _, span := range spans {
		traces[span.TraceIDHex()] = append(traces[span.TraceIDHex()], span)
	}
	return traces
}

// spanCall is one call of TestServerSpans and what its spans must show.
type spanCall struct {
	name   string
	method string // rpc.method
	// md holds the call's request headers besides traceparent and
	// tracingCallHeader.
	md metadata.MD
	// requests are streamed on ExecuteFunction and EvaluateScript.
	requests []*ssepb.BundledRows
	code     codes.Code
	wantName string
	// wantAttributes are the server span's attributes besides the ones
	// every call has.
	wantAttributes map[string]any
	// wantError is whether the server span's status is Error, as
	// OpenTelemetry's RPC conventions mark server errors.
	wantError bool
}

// TestServerSpans checks the spans that a gateway exports over OTLP for
// successful and failed calls of each SSE method. It checks the server
// span's name, kind, attributes and status, which carry the plugin's own
// code, and that the span continues the client's trace. It also checks
// the client span of the attempt, a child of the server span, and the
// traceparent that reaches the plugin (C17).
func TestServerSpans(t *testing.T) {
	plugin := &tracingPlugin{}
	p := newTracedPath(t, plugin.connector(), nil)
	gatewayHost, gatewayPort := tracingHostPort(t, p.gateway.Addrs[0])
	pluginHost, pluginPort := tracingHostPort(t, p.plugin.Addr)

	common := &ssepb.CommonRequestHeader{AppId: "app-7", UserId: "user-7", Cardinality: 10}
	functionMD := func(id int32) metadata.MD {
		md, err := ssepb.FunctionCallMetadata(id, common)
		if err != nil {
			t.Fatal(err)
		}
		return md
	}
	scriptMD := func(header *ssepb.ScriptRequestHeader) metadata.MD {
		md, err := ssepb.ScriptCallMetadata(header, common)
		if err != nil {
			t.Fatal(err)
		}
		return md
	}
	withFailure := func(md metadata.MD, code codes.Code) metadata.MD {
		md = md.Copy()
		md.Set(tracingFailHeader, strconv.Itoa(int(code)))
		return md
	}
	commonAttributes := map[string]any{
		"qlik.sse.app.id":      "app-7",
		"qlik.sse.user.id":     redactionHash("user-7"),
		"qlik.sse.cardinality": int64(10),
	}
	aggrStr := &ssepb.ScriptRequestHeader{
		Script: "paste(args[[1]], collapse = ',')", FunctionType: ssepb.FunctionType_AGGREGATION, ReturnType: ssepb.DataType_STRING,
		Params: []*ssepb.Parameter{{Name: "s", DataType: ssepb.DataType_STRING}},
	}
	evalEx := &ssepb.ScriptRequestHeader{
		Script: "args[[2]] * 2", FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_NUMERIC,
		Params: []*ssepb.Parameter{{Name: "s", DataType: ssepb.DataType_STRING}, {Name: "x", DataType: ssepb.DataType_NUMERIC}},
	}
	scriptAttributes := func(header *ssepb.ScriptRequestHeader) map[string]any {
		sum := sha256.Sum256([]byte(header.GetScript()))
		return map[string]any{
			"qlik.sse.script.length": int64(len(header.GetScript())),
			"qlik.sse.script.sha256": hex.EncodeToString(sum[:]),
		}
	}
	forecastIn := []*ssepb.BundledRows{ssetest.NumericBundle(1, 2), ssetest.NumericBundle(2, 2), ssetest.NumericBundle(3, 2), ssetest.NumericBundle(4, 2)}
	stringsIn := []*ssepb.BundledRows{ssetest.StringBundle("a", "b", "c"), ssetest.StringBundle("d")}
	mixedIn := []*ssepb.BundledRows{
		{Rows: []*ssepb.Row{{Duals: []*ssepb.Dual{{StrData: "p"}, {NumData: 1}}}}},
		{Rows: []*ssepb.Row{{Duals: []*ssepb.Dual{{StrData: "q"}, {NumData: 2}}}, {Duals: []*ssepb.Dual{{StrData: "r"}, {NumData: 3}}}}},
	}
	capabilitiesSize := int64(proto.Size(tracingCapabilities()))

	calls := []spanCall{
		{
			name:     "GetCapabilities",
			method:   "GetCapabilities",
			code:     codes.OK,
			wantName: "R.GetCapabilities",
			wantAttributes: map[string]any{
				"qlik.sse.function.name": "GetCapabilities",
				"qlik.sse.messages.in":   int64(1), "qlik.sse.bytes.in": int64(0), "qlik.sse.rows.in": int64(0),
				"qlik.sse.messages.out": int64(1), "qlik.sse.bytes.out": capabilitiesSize, "qlik.sse.rows.out": int64(0),
			},
		},
		{
			name:     "GetCapabilities failing",
			method:   "GetCapabilities",
			md:       withFailure(metadata.MD{}, codes.PermissionDenied),
			code:     codes.PermissionDenied,
			wantName: "R.GetCapabilities",
			wantAttributes: map[string]any{
				"qlik.sse.function.name": "GetCapabilities",
				"qlik.sse.messages.in":   int64(1), "qlik.sse.bytes.in": int64(0), "qlik.sse.rows.in": int64(0),
				"qlik.sse.messages.out": int64(0), "qlik.sse.bytes.out": int64(0), "qlik.sse.rows.out": int64(0),
			},
		},
		{
			name:     "ExecuteFunction",
			method:   "ExecuteFunction",
			md:       functionMD(tracingForecastID),
			requests: forecastIn,
			code:     codes.OK,
			wantName: "R.Forecast",
			wantAttributes: mergeAttributes(commonAttributes, spanCounters(forecastIn, tracingReplyBundles(10)), map[string]any{
				"qlik.sse.function.id":   int64(tracingForecastID),
				"qlik.sse.function.name": "Forecast",
				"qlik.sse.function.type": "SCALAR",
			}),
		},
		{
			name:     "ExecuteFunction failing before reading",
			method:   "ExecuteFunction",
			md:       withFailure(functionMD(tracingSumID), codes.FailedPrecondition),
			code:     codes.FailedPrecondition,
			wantName: "R.Sum",
			wantAttributes: mergeAttributes(commonAttributes, spanCounters(nil, nil), map[string]any{
				"qlik.sse.function.id":   int64(tracingSumID),
				"qlik.sse.function.name": "Sum",
				"qlik.sse.function.type": "AGGREGATION",
			}),
		},
		{
			name:     "ExecuteFunction of an unknown function",
			method:   "ExecuteFunction",
			md:       withFailure(functionMD(99), codes.Unimplemented),
			code:     codes.Unimplemented,
			wantName: "R.ExecuteFunction",
			wantAttributes: mergeAttributes(commonAttributes, spanCounters(nil, nil), map[string]any{
				"qlik.sse.function.id": int64(99),
			}),
			wantError: true,
		},
		{
			name:     "EvaluateScript",
			method:   "EvaluateScript",
			md:       scriptMD(aggrStr),
			requests: stringsIn,
			code:     codes.OK,
			wantName: "R.ScriptAggrStr",
			wantAttributes: mergeAttributes(commonAttributes, spanCounters(stringsIn, tracingReplyBundles(1)), scriptAttributes(aggrStr), map[string]any{
				"qlik.sse.function.name": "ScriptAggrStr",
				"qlik.sse.function.type": "AGGREGATION",
			}),
		},
		{
			name:     "EvaluateScript failing after one bundle",
			method:   "EvaluateScript",
			md:       withFailure(scriptMD(evalEx), codes.DataLoss),
			requests: mixedIn,
			code:     codes.DataLoss,
			wantName: "R.ScriptEvalEx",
			wantAttributes: mergeAttributes(commonAttributes, spanCounters(mixedIn, tracingReplyBundles(1)), scriptAttributes(evalEx), map[string]any{
				"qlik.sse.function.name": "ScriptEvalEx",
				"qlik.sse.function.type": "SCALAR",
			}),
			wantError: true,
		},
	}

	// Make every call with a trace of its own, then flush the spans.
	tracingLearnCapabilities(t, p.client)
	traceIDs := map[string]string{}  // by call name
	parentIDs := map[string]string{} // the client's span id, by call name
	for _, c := range calls {
		traceparent, traceID, spanID := newTraceparent()
		traceIDs[c.name], parentIDs[c.name] = traceID, spanID
		md := metadata.Join(c.md, metadata.Pairs("traceparent", traceparent, tracingCallHeader, c.name))
		ctx := metadata.NewOutgoingContext(testContext(t), md)
		var err error
		switch c.method {
		case "GetCapabilities":
			_, err = p.client.GetCapabilities(ctx, &ssepb.Empty{})
		case "ExecuteFunction":
			err = callSSEStream(ctx, func(ctx context.Context) (sseStream, error) { return p.client.ExecuteFunction(ctx) }, c.requests).err
		case "EvaluateScript":
			err = callSSEStream(ctx, func(ctx context.Context) (sseStream, error) { return p.client.EvaluateScript(ctx) }, c.requests).err
		}
		if got := status.Code(err); got != c.code {
			t.Fatalf("%s: call ended with %v, want code %v", c.name, err, c.code)
		}
	}
	clientAddrs := p.clientAddrs.all()
	if len(clientAddrs) != 1 {
		t.Fatalf("client connections = %q, want one", clientAddrs)
	}
	clientHost, clientPort := tracingHostPort(t, clientAddrs[0])
	p.flush(t)
	traces := spansByTrace(p.receiver.Spans())

	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			servers, clients := spanKinds(traces[traceIDs[c.name]])
			if len(servers) != 1 || len(clients) != 1 {
				t.Fatalf("trace %s: %d server spans and %d client spans, want 1 and 1", traceIDs[c.name], len(servers), len(clients))
			}
			server, client := servers[0], clients[0]

			// The server span continues the client's trace.
			if got := server.GetName(); got != c.wantName {
				t.Errorf("server span name = %q, want %q", got, c.wantName)
			}
			if got := server.ParentSpanIDHex(); got != parentIDs[c.name] {
				t.Errorf("server span parent = %q, want the client's span %q", got, parentIDs[c.name])
			}
			want := mergeAttributes(map[string]any{
				"rpc.system":               "grpc",
				"rpc.service":              "qlik.sse.Connector",
				"rpc.method":               c.method,
				"rpc.grpc.status_code":     int64(c.code),
				"server.address":           gatewayHost,
				"server.port":              gatewayPort,
				"client.address":           clientHost,
				"client.port":              clientPort,
				"qlik.sse.engine":          "R",
				"qlik.sse.backend.address": p.plugin.Addr,
				"qlik.sse.attempts":        int64(1),
			}, c.wantAttributes)
			attributes := server.Attributes()
			checkSpanAttributes(t, "server span", attributes, want, "qlik.sse.replica_wait")
			if wait, ok := attributes["qlik.sse.replica_wait"].(float64); !ok || wait < 0 || wait > 10 {
				t.Errorf("server span: attribute qlik.sse.replica_wait = %v (%T), want seconds from 0 to 10", attributes["qlik.sse.replica_wait"], attributes["qlik.sse.replica_wait"])
			}
			wantStatus, wantMessage := tracepb.Status_STATUS_CODE_UNSET, ""
			if c.wantError {
				wantStatus, wantMessage = tracepb.Status_STATUS_CODE_ERROR, tracingPluginMessage(c.code)
			}
			if got := server.GetStatus().GetCode(); got != wantStatus {
				t.Errorf("server span status = %v, want %v", got, wantStatus)
			}
			if got := server.GetStatus().GetMessage(); got != wantMessage {
				t.Errorf("server span status message = %q, want %q", got, wantMessage)
			}

			// The client span is the attempt on the plugin, inside the server span.
			if got := client.ParentSpanIDHex(); got != server.SpanIDHex() {
				t.Errorf("client span parent = %q, want the server span %q", got, server.SpanIDHex())
			}
			if got := client.GetName(); got != c.wantName {
				t.Errorf("client span name = %q, want %q", got, c.wantName)
			}
			checkSpanAttributes(t, "client span", client.Attributes(), map[string]any{
				"rpc.system":               "grpc",
				"rpc.service":              "qlik.sse.Connector",
				"rpc.method":               c.method,
				"rpc.grpc.status_code":     int64(c.code),
				"server.address":           pluginHost,
				"server.port":              pluginPort,
				"qlik.sse.engine":          "R",
				"qlik.sse.attempt":         int64(1),
				"qlik.sse.backend.address": p.plugin.Addr,
			})
			wantClientStatus := tracepb.Status_STATUS_CODE_UNSET
			if c.code != codes.OK {
				wantClientStatus = tracepb.Status_STATUS_CODE_ERROR
			}
			if got := client.GetStatus().GetCode(); got != wantClientStatus {
				t.Errorf("client span status = %v, want %v", got, wantClientStatus)
			}
			if client.GetStartTimeUnixNano() < server.GetStartTimeUnixNano() || client.GetEndTimeUnixNano() > server.GetEndTimeUnixNano() {
				t.Errorf("client span from %d to %d, want it within the server span from %d to %d",
					client.GetStartTimeUnixNano(), client.GetEndTimeUnixNano(), server.GetStartTimeUnixNano(), server.GetEndTimeUnixNano())
			}

			// The plugin joins the gateway's trace under the client span.
			traceparent, ok := plugin.traceparent(c.name)
			if !ok {
				t.Fatalf("plugin did not see the call")
			}
			if want := "00-" + server.TraceIDHex() + "-" + client.SpanIDHex() + "-01"; traceparent != want {
				t.Errorf("plugin's traceparent = %q, want %q", traceparent, want)
			}
		})
	}
}

// TestSpanRedaction checks how the app id, the user id and the script
// text appear in server spans under each redaction setting. The script's
// length and SHA-256 are always recorded.
func TestSpanRedaction(t *testing.T) {
	const (
		appID  = "sales.qvf"
		userID = "UserDirectory=CORP; UserId=jdoe"
		script = "sum(args[[1]])"
	)
	tests := []struct {
		name      string
		redaction config.Redaction
		// wantApp and wantUser are nil when the attribute must be absent.
		wantApp, wantUser any
		wantScriptText    bool
	}{
		{name: "default", wantApp: appID, wantUser: redactionHash(userID)},
		{
			name:      "keep",
			redaction: config.Redaction{AppID: config.RedactKeep, UserID: config.RedactKeep, ScriptText: true},
			wantApp:   appID, wantUser: userID, wantScriptText: true,
		},
		{name: "hash", redaction: config.Redaction{AppID: config.RedactHash, UserID: config.RedactHash}, wantApp: redactionHash(appID), wantUser: redactionHash(userID)},
		{name: "drop", redaction: config.Redaction{AppID: config.RedactDrop, UserID: config.RedactDrop}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugin := &tracingPlugin{}
			p := newTracedPath(t, plugin.connector(), func(cfg *config.Config) { cfg.Redaction = tt.redaction })
			common := &ssepb.CommonRequestHeader{AppId: appID, UserId: userID, Cardinality: 1}
			functionMD, err := ssepb.FunctionCallMetadata(tracingForecastID, common)
			if err != nil {
				t.Fatal(err)
			}
			scriptMD, err := ssepb.ScriptCallMetadata(&ssepb.ScriptRequestHeader{Script: script, ReturnType: ssepb.DataType_NUMERIC}, common)
			if err != nil {
				t.Fatal(err)
			}
			requests := []*ssepb.BundledRows{ssetest.NumericBundle(2, 1)}
			ctx := testContext(t)
			if r := callSSEStream(metadata.NewOutgoingContext(ctx, functionMD), func(ctx context.Context) (sseStream, error) { return p.client.ExecuteFunction(ctx) }, requests); r.err != nil {
				t.Fatalf("ExecuteFunction: %v", r.err)
			}
			if r := callSSEStream(metadata.NewOutgoingContext(ctx, scriptMD), func(ctx context.Context) (sseStream, error) { return p.client.EvaluateScript(ctx) }, requests); r.err != nil {
				t.Fatalf("EvaluateScript: %v", r.err)
			}
			p.flush(t)

			servers, _ := spanKinds(p.receiver.Spans())
			if len(servers) != 2 {
				t.Fatalf("server spans = %d, want 2", len(servers))
			}
			for _, server := range servers {
				attributes := server.Attributes()
				method := attributes["rpc.method"]
				if got, ok := attributes["qlik.sse.app.id"]; tt.wantApp == nil && ok {
					t.Errorf("%v span: app id = %v, want none", method, got)
				} else if tt.wantApp != nil && got != tt.wantApp {
					t.Errorf("%v span: app id = %v, want %v", method, got, tt.wantApp)
				}
				if got, ok := attributes["qlik.sse.user.id"]; tt.wantUser == nil && ok {
					t.Errorf("%v span: user id = %v, want none", method, got)
				} else if tt.wantUser != nil && got != tt.wantUser {
					t.Errorf("%v span: user id = %v, want %v", method, got, tt.wantUser)
				}

				text, hasText := attributes["qlik.sse.script.text"]
				length, hasLength := attributes["qlik.sse.script.length"]
				sha, hasSHA := attributes["qlik.sse.script.sha256"]
				if method != "EvaluateScript" {
					if hasText || hasLength || hasSHA {
						t.Errorf("%v span has script attributes: text %v, length %v, sha256 %v; want none", method, text, length, sha)
					}
					continue
				}
				if tt.wantScriptText && text != script {
					t.Errorf("script text = %v, want %q", text, script)
				}
				if !tt.wantScriptText && hasText {
					t.Errorf("script text = %v, want none", text)
				}
				if length != int64(len(script)) {
					t.Errorf("script length = %v, want %d", length, len(script))
				}
				sum := sha256.Sum256([]byte(script))
				if sha != hex.EncodeToString(sum[:]) {
					t.Errorf("script sha256 = %v, want %x", sha, sum)
				}
			}
		})
	}
}

// TestSpanNamesWithoutMetrics checks span names with tracing on and
// metrics export off: <Engine>.<Function> for the three SSE methods, with
// the function name from the cached capabilities, and the gRPC method for
// calls that no engine accepts, with the status they got (C34).
func TestSpanNamesWithoutMetrics(t *testing.T) {
	plugin := &tracingPlugin{}
	p := newTracedPath(t, plugin.connector(), func(cfg *config.Config) {
		// A second listener without a default engine, where a call
		// without a matching host or engine header reaches no engine.
		cfg.Listeners = append(cfg.Listeners, ssetest.Listen("", nil))
	})
	unrouted := ssetest.Dial(t, p.gateway.Addrs[1])
	ctx := testContext(t)

	tracingLearnCapabilities(t, p.client)
	md, err := ssepb.FunctionCallMetadata(tracingForecastID, &ssepb.CommonRequestHeader{AppId: "a", UserId: "u", Cardinality: 1})
	if err != nil {
		t.Fatal(err)
	}
	requests := []*ssepb.BundledRows{ssetest.NumericBundle(1, 2)}
	if r := callSSEStream(metadata.NewOutgoingContext(ctx, md), func(ctx context.Context) (sseStream, error) { return p.client.ExecuteFunction(ctx) }, requests); r.err != nil {
		t.Fatalf("ExecuteFunction: %v", r.err)
	}
	md, err = ssepb.ScriptCallMetadata(&ssepb.ScriptRequestHeader{Script: "args[[1]]", ReturnType: ssepb.DataType_NUMERIC,
		Params: []*ssepb.Parameter{{DataType: ssepb.DataType_NUMERIC}}}, &ssepb.CommonRequestHeader{})
	if err != nil {
		t.Fatal(err)
	}
	if r := callSSEStream(metadata.NewOutgoingContext(ctx, md), func(ctx context.Context) (sseStream, error) { return p.client.EvaluateScript(ctx) }, requests); r.err != nil {
		t.Fatalf("EvaluateScript: %v", r.err)
	}
	if _, err := unrouted.GetCapabilities(ctx, &ssepb.Empty{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("GetCapabilities on a listener without engine = %v, want code Unimplemented", err)
	}
	if _, err := unrouted.GetCapabilities(metadata.AppendToOutgoingContext(ctx, routing.EngineHeader, "Nope"), &ssepb.Empty{}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetCapabilities for engine Nope = %v, want code NotFound", err)
	}
	p.flush(t)

	servers, clients := spanKinds(p.receiver.Spans())
	type serverSpan struct {
		name   string
		code   int64
		status tracepb.Status_StatusCode
		engine any
	}
	var got []serverSpan
	for _, server := range servers {
		attributes := server.Attributes()
		code, _ := attributes["rpc.grpc.status_code"].(int64)
		got = append(got, serverSpan{server.GetName(), code, server.GetStatus().GetCode(), attributes["qlik.sse.engine"]})
		if server.GetName() == "" {
			t.Errorf("server span with attributes %v has an empty name", attributes)
		}
		for key, want := range map[string]any{"rpc.system": "grpc", "rpc.service": "qlik.sse.Connector"} {
			if attributes[key] != want {
				t.Errorf("span %q: attribute %s = %v, want %v", server.GetName(), key, attributes[key], want)
			}
		}
		if method := attributes["rpc.method"]; method == nil || method == "" {
			t.Errorf("span %q: attribute rpc.method = %v, want the method", server.GetName(), method)
		}
		if server.GetName() == "R.Forecast" {
			if id := attributes["qlik.sse.function.id"]; id != int64(tracingForecastID) {
				t.Errorf("span R.Forecast: attribute qlik.sse.function.id = %v, want %d", id, tracingForecastID)
			}
			if name := attributes["qlik.sse.function.name"]; name != "Forecast" {
				t.Errorf("span R.Forecast: attribute qlik.sse.function.name = %v, want Forecast", name)
			}
		}
	}
	slices.SortFunc(got, func(a, b serverSpan) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		return int(a.code - b.code)
	})
	want := []serverSpan{
		{"R.ExecuteFunction", int64(codes.OK), tracepb.Status_STATUS_CODE_UNSET, "R"}, // tracingLearnCapabilities
		{"R.Forecast", int64(codes.OK), tracepb.Status_STATUS_CODE_UNSET, "R"},
		{"R.GetCapabilities", int64(codes.OK), tracepb.Status_STATUS_CODE_UNSET, "R"},
		{"R.ScriptEval", int64(codes.OK), tracepb.Status_STATUS_CODE_UNSET, "R"},
		{"qlik.sse.Connector/GetCapabilities", int64(codes.NotFound), tracepb.Status_STATUS_CODE_UNSET, nil},
		{"qlik.sse.Connector/GetCapabilities", int64(codes.Unimplemented), tracepb.Status_STATUS_CODE_ERROR, nil},
	}
	if len(got) != len(want) {
		t.Fatalf("server spans = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("server span %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	// Only the calls that reached the plugin have a client span.
	var clientNames []string
	for _, client := range clients {
		clientNames = append(clientNames, client.GetName())
	}
	slices.Sort(clientNames)
	if want := []string{"R.ExecuteFunction", "R.Forecast", "R.GetCapabilities", "R.ScriptEval"}; !slices.Equal(clientNames, want) {
		t.Errorf("client span names = %q, want %q", clientNames, want)
	}
}

// echoConnector returns a plugin with tracingPlugin's capabilities whose
// ExecuteFunction sends back each bundle as soon as it reads it. A call
// with tracingFailHeader fails with that code before reading anything.
func echoConnector() *ssetest.Connector {
	return &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return tracingCapabilities(), nil
		},
		Execute: func(stream ssetest.Stream) error {
			md, _ := metadata.FromIncomingContext(stream.Context())
			if code, ok := tracingFailCode(md); ok {
				return status.Error(code, tracingPluginMessage(code))
			}
			return ssetest.Echo(stream)
		},
	}
}

// tracingGoroutineDump returns the stacks of every goroutine, for a failure
// message.
func tracingGoroutineDump() string {
	var buf bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&buf, 1)
	return buf.String()
}

// TestSpansEndWhenCallsStop checks that every server span and client span
// ends, with its final status, when clients cancel ExecuteFunction
// streams after the first response bundle and when the plugin fails
// streams before reading anything, and that the gateway's goroutines
// return to their baseline. It runs 1,000 calls of each kind, over 16
// concurrent streams on one connection (C32).
func TestSpansEndWhenCallsStop(t *testing.T) {
	const (
		callsEach   = 1000
		concurrency = 16
	)
	// Keep every span: the SDK's default queue of 2,048 spans drops the
	// rest when calls end faster than the exporter sends them.
	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", strconv.Itoa(4*callsEach+100))
	p := newTracedPath(t, echoConnector(), func(cfg *config.Config) { cfg.Log.Level = "warn" })
	tracingLearnCapabilities(t, p.client)
	functionMD, err := ssepb.FunctionCallMetadata(tracingForecastID, &ssepb.CommonRequestHeader{AppId: "a", UserId: "u", Cardinality: 1})
	if err != nil {
		t.Fatal(err)
	}
	bundle := ssetest.NumericBundle(2, 2)

	// Warm up both kinds of call, so that the baseline counts the
	// goroutines that the connections keep anyway.
	ctx := testContext(t)
	if r := callSSEStream(metadata.NewOutgoingContext(ctx, functionMD), func(ctx context.Context) (sseStream, error) { return p.client.ExecuteFunction(ctx) }, []*ssepb.BundledRows{bundle}); r.err != nil {
		t.Fatalf("warm-up call: %v", r.err)
	}
	baseline := runtime.NumGoroutine()

	// cancelAfterFirst opens a stream, sends a bundle, and cancels once
	// the echo arrives. It returns what went wrong as an error.
	cancelAfterFirst := func(traceparent string) error {
		callCtx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, metadata.Join(functionMD, metadata.Pairs("traceparent", traceparent))))
		defer cancel()
		stream, err := p.client.ExecuteFunction(callCtx)
		if err != nil {
			return err
		}
		if err := stream.Send(bundle); err != nil {
			return fmt.Errorf("sending: %w", err)
		}
		if _, err := stream.Recv(); err != nil {
			return fmt.Errorf("receiving the first bundle: %w", err)
		}
		cancel()
		if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
			return fmt.Errorf("receiving after cancel = %v, want code Canceled", err)
		}
		return nil
	}
	failing := metadata.Join(functionMD, metadata.Pairs(tracingFailHeader, strconv.Itoa(int(codes.FailedPrecondition))))
	pluginFails := func(traceparent string) error {
		callCtx := metadata.NewOutgoingContext(ctx, metadata.Join(failing, metadata.Pairs("traceparent", traceparent)))
		r := callSSEStream(callCtx, func(ctx context.Context) (sseStream, error) { return p.client.ExecuteFunction(ctx) }, nil)
		if status.Code(r.err) != codes.FailedPrecondition {
			return fmt.Errorf("call ended with %v, want code FailedPrecondition", r.err)
		}
		return nil
	}

	// Run the calls. wantCode maps each call's trace id to its final code.
	type job struct {
		traceparent string
		cancel      bool
	}
	wantCode := map[string]codes.Code{}
	jobs := make(chan job, 2*callsEach)
	for i := range 2 * callsEach {
		traceparent, traceID, _ := newTraceparent()
		cancel := i%2 == 0
		wantCode[traceID] = codes.FailedPrecondition
		if cancel {
			wantCode[traceID] = codes.Canceled
		}
		jobs <- job{traceparent, cancel}
	}
	close(jobs)
	var (
		failures  atomic.Int64
		firstFail atomic.Pointer[error]
		wg        sync.WaitGroup
	)
	for range concurrency {
		wg.Go(func() {
			for j := range jobs {
				var err error
				if j.cancel {
					err = cancelAfterFirst(j.traceparent)
				} else {
					err = pluginFails(j.traceparent)
				}
				if err != nil {
					failures.Add(1)
					firstFail.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d calls did not end as planned; first: %v", n, 2*callsEach, *firstFail.Load())
	}

	// The goroutines of the calls end within 2 s.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > baseline+10 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines = %d 2s after the calls, want at most %d (baseline %d + 10); stacks:\n%s",
				runtime.NumGoroutine(), baseline+10, baseline, tracingGoroutineDump())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Every call ended both of its spans, with its final code.
	p.flush(t)
	traces := spansByTrace(p.receiver.Spans())
	var (
		incomplete, wrongServer, wrongClient int
		example                              string
	)
	for traceID, code := range wantCode {
		servers, clients := spanKinds(traces[traceID])
		if len(servers) != 1 || len(clients) != 1 {
			incomplete++
			example = fmt.Sprintf("trace %s has %d server and %d client spans, want 1 and 1", traceID, len(servers), len(clients))
			continue
		}
		if got := servers[0].Attributes()["rpc.grpc.status_code"]; got != int64(code) || servers[0].GetStatus().GetCode() != tracepb.Status_STATUS_CODE_UNSET {
			wrongServer++
			example = fmt.Sprintf("trace %s: server span code %v, status %v; want %d (%v), status unset", traceID, got, servers[0].GetStatus().GetCode(), code, code)
		}
		if got := clients[0].Attributes()["rpc.grpc.status_code"]; got != int64(code) || clients[0].GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR {
			wrongClient++
			example = fmt.Sprintf("trace %s: client span code %v, status %v; want %d (%v), status error", traceID, got, clients[0].GetStatus().GetCode(), code, code)
		}
	}
	if got, want := len(traces), len(wantCode)+3; got != want {
		t.Errorf("traces exported = %d, want %d (the calls, the warm-up and the two of tracingLearnCapabilities)", got, want)
	}
	if incomplete > 0 {
		t.Errorf("%d of %d calls lack a span; e.g. %s", incomplete, len(wantCode), example)
	}
	if wrongServer > 0 {
		t.Errorf("%d of %d server spans have the wrong final status; e.g. %s", wrongServer, len(wantCode), example)
	}
	if wrongClient > 0 {
		t.Errorf("%d of %d client spans have the wrong final status; e.g. %s", wrongClient, len(wantCode), example)
	}
}

// TestLongStreamSpanCarriesCounters checks that the server span of one
// ExecuteFunction call with many bundles each way contains no event per
// message, at most 128 events, and counts the messages and rows instead.
// It sends 100,000 bundles each way (C33).
func TestLongStreamSpanCarriesCounters(t *testing.T) {
	const bundles = 100000
	p := newTracedPath(t, echoConnector(), nil)
	tracingLearnCapabilities(t, p.client)
	md, err := ssepb.FunctionCallMetadata(tracingForecastID, &ssepb.CommonRequestHeader{AppId: "a", UserId: "u", Cardinality: bundles})
	if err != nil {
		t.Fatal(err)
	}
	bundle := ssetest.NumericBundle(1, 2)
	requests := make([]*ssepb.BundledRows, bundles)
	for i := range requests {
		requests[i] = bundle
	}
	traceparent, traceID, _ := newTraceparent()
	ctx := metadata.NewOutgoingContext(testContext(t), metadata.Join(md, metadata.Pairs("traceparent", traceparent)))
	r := callSSEStream(ctx, func(ctx context.Context) (sseStream, error) { return p.client.ExecuteFunction(ctx) }, requests)
	if r.err != nil {
		t.Fatalf("call: %v", r.err)
	}
	if r.messages != bundles {
		t.Fatalf("client received %d bundles, want %d", r.messages, bundles)
	}
	p.flush(t)

	servers, clients := spanKinds(spansByTrace(p.receiver.Spans())[traceID])
	if len(servers) != 1 || len(clients) != 1 {
		t.Fatalf("trace has %d server and %d client spans, want 1 and 1", len(servers), len(clients))
	}
	server := servers[0]
	if got := len(server.GetEvents()); got > 128 {
		t.Errorf("server span events = %d, want at most 128", got)
	}
	if got := server.GetDroppedEventsCount(); got != 0 {
		t.Errorf("server span dropped events = %d, want 0: the span was given an event per message", got)
	}
	if got := len(clients[0].GetEvents()) + int(clients[0].GetDroppedEventsCount()); got > 128 {
		t.Errorf("client span events, dropped included = %d, want at most 128", got)
	}
	attributes := server.Attributes()
	size := int64(proto.Size(bundle))
	for key, want := range map[string]int64{
		"qlik.sse.messages.in":  bundles,
		"qlik.sse.messages.out": bundles,
		"qlik.sse.rows.in":      bundles,
		"qlik.sse.rows.out":     bundles,
		"qlik.sse.bytes.in":     bundles * size,
		"qlik.sse.bytes.out":    bundles * size,
	} {
		if got := attributes[key]; got != want {
			t.Errorf("server span: attribute %s = %v, want %d", key, got, want)
		}
	}
}

// TestExportFailureLogged checks that a collector refusing spans shows up
// as a warning in the gateway's own log, in its format, and in a counter
// on /metrics, and that the start-up log names where spans go.
func TestExportFailureLogged(t *testing.T) {
	var rejected atomic.Int64
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		rejected.Add(1)
		http.Error(w, "no spans accepted", http.StatusBadRequest)
	}))
	defer collector.Close()
	// Export each batch after 10 ms rather than 5 s, so that the failure
	// happens while the gateway, and its /metrics, are up.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
	p := newTracedPath(t, echoConnector(), func(cfg *config.Config) {
		cfg.Telemetry.Traces = config.TraceExport{Exporter: config.ExporterOTLPHTTP, Endpoint: collector.URL, Insecure: true}
	})
	started := p.gateway.Logs.WaitFor(t, "telemetry", 5*time.Second, nil)
	if want := "OTLP/HTTP to " + collector.URL + " (plaintext)"; started["traces"] != want {
		t.Errorf("start-up record traces = %v, want %q", started["traces"], want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.client.GetCapabilities(ctx, &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities: %v", err)
	}
	record := p.gateway.Logs.WaitFor(t, "telemetry failed, so some spans or metrics are missing", 10*time.Second, nil)
	if rejected.Load() == 0 {
		t.Error("the collector got no export request")
	}
	if record["level"] != "WARN" {
		t.Errorf("record level = %v, want WARN", record["level"])
	}
	if message, _ := record["error"].(string); !strings.Contains(message, "400") {
		t.Errorf("record error = %q, want the collector's status 400 in it", message)
	}
	family := tracingScrape(t, p.gateway)["ssegw_telemetry_errors_total"]
	if family == nil || len(family.GetMetric()) != 1 || family.GetMetric()[0].GetCounter().GetValue() < 1 {
		t.Errorf("ssegw_telemetry_errors_total = %v, want at least 1", family)
	}
}

// BenchmarkTracingOverhead compares small ExecuteFunction calls through a
// gateway that records and exports every span (sampler_ratio 1, OTLP to
// an in-process receiver) with one that samples none (sampler_ratio 0),
// and with one that has no exporter, which builds no spans at all.
// Allocations include those of the client and the plugin, which are the
// same in every case.
func BenchmarkTracingOverhead(b *testing.B) {
	for _, bench := range []struct {
		name     string
		ratio    float64
		exporter string
	}{
		{"sampler_ratio=1", 1, config.ExporterOTLP},
		{"sampler_ratio=0", 0, config.ExporterOTLP},
		{"sampler_ratio=1,exporter=none", 1, config.ExporterNone},
	} {
		b.Run(bench.name, func(b *testing.B) {
			// Spans go to a receiver that counts them without decoding, as
			// a collector on another host would cost this process nothing.
			counter, err := otlpcount.Start()
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(counter.Stop)
			ratio := bench.ratio
			p := newTracedPath(b, echoConnector(), func(cfg *config.Config) {
				cfg.Telemetry.Traces.SamplerRatio = &ratio
				cfg.Telemetry.Traces.Exporter = bench.exporter
				cfg.Telemetry.Traces.Endpoint = counter.Addr
				cfg.Log.Level = "warn"
			})
			md, err := ssepb.FunctionCallMetadata(tracingForecastID, &ssepb.CommonRequestHeader{AppId: "a", UserId: "u", Cardinality: 1})
			if err != nil {
				b.Fatal(err)
			}
			ctx := metadata.NewOutgoingContext(context.Background(), md)
			requests := []*ssepb.BundledRows{ssetest.NumericBundle(1, 1)}
			open := func(ctx context.Context) (sseStream, error) { return p.client.ExecuteFunction(ctx) }
			b.ReportAllocs()
			for b.Loop() {
				if r := callSSEStream(ctx, open, requests); r.err != nil {
					b.Fatalf("call: %v", r.err)
				}
			}
		})
	}
}

// TestDroppedSpansWarned checks that spans dropped with the export queue
// full get a warning with their count, although a failed export warns
// just before. Both once shared one limit of a warning per 10 s, so the
// dropped spans went unlogged for as long as the collector failed. It
// then checks that the warnings account for every dropped span: those of
// a second burst, which the limit holds back, are logged at shutdown.
func TestDroppedSpansWarned(t *testing.T) {
	const calls = 5 // per burst; each ends two spans
	var (
		mu       sync.Mutex
		gate     = make(chan struct{}) // the collector's requests wait until it closes
		requests atomic.Int64          // one span each, with a batch size of 1
	)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		mu.Lock()
		wait := gate
		mu.Unlock()
		<-wait
		http.Error(w, "no spans accepted", http.StatusBadRequest)
	}))
	defer collector.Close()
	open := func() {
		mu.Lock()
		defer mu.Unlock()
		select {
		case <-gate:
		default:
			close(gate)
		}
	}
	defer open()
	t.Setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1")
	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "2")
	p := newTracedPath(t, echoConnector(), func(cfg *config.Config) {
		cfg.Telemetry.Traces = config.TraceExport{Exporter: config.ExporterOTLPHTTP, Endpoint: collector.URL, Insecure: true}
	})
	const telemetryWarning = "telemetry failed, so some spans or metrics are missing"

	// In each burst the first span starts an export that waits, two more
	// fill the queue, and the rest are dropped.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	burst := func() {
		for range calls {
			if _, err := p.client.GetCapabilities(ctx, &ssepb.Empty{}); err != nil {
				t.Fatalf("GetCapabilities: %v", err)
			}
		}
	}
	burst()
	open()

	droppedWarning := func(record map[string]any) bool {
		message, _ := record["error"].(string)
		return strings.Contains(message, "spans dropped")
	}
	p.gateway.Logs.WaitFor(t, telemetryWarning, 10*time.Second, func(record map[string]any) bool {
		message, _ := record["error"].(string)
		return strings.Contains(message, "400")
	})
	record := p.gateway.Logs.WaitFor(t, telemetryWarning, 10*time.Second, droppedWarning)
	if message := record["error"].(string); !strings.Contains(message, "export queue of 2 spans was full") {
		t.Errorf("record error = %q, want it to name the queue of 2 spans", message)
	}

	// A second burst within the warning limit, then a stop.
	mu.Lock()
	gate = make(chan struct{})
	mu.Unlock()
	burst()
	open()
	p.flush(t)

	warned := 0
	for _, record := range p.gateway.Logs.Records(telemetryWarning) {
		if !droppedWarning(record) {
			continue
		}
		var spans int
		if _, err := fmt.Sscanf(record["error"].(string), "%d spans dropped", &spans); err != nil {
			t.Fatalf("reading the count of %q: %v", record["error"], err)
		}
		warned += spans
	}
	if dropped := 2*2*calls - int(requests.Load()); warned != dropped {
		t.Errorf("warnings count %d dropped spans; %d spans were made and the collector got %d, so %d were dropped",
			warned, 2*2*calls, requests.Load(), dropped)
	}
}

// tracingScrape reads the gateway's Prometheus output from its admin
// listener.
func tracingScrape(t *testing.T, gw *ssetest.Gateway) map[string]*dto.MetricFamily {
	t.Helper()
	response, err := http.Get("http://" + gw.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatalf("scraping metrics: %v", err)
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %s, want 200 OK", response.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(response.Body)
	if err != nil {
		t.Fatalf("parsing the Prometheus output: %v", err)
	}
	return families
}

// tracingSeriesLabels returns the label values of one series as name=value
// pairs, sorted.
func tracingSeriesLabels(metric *dto.Metric) []string {
	var pairs []string
	for _, label := range metric.GetLabel() {
		pairs = append(pairs, label.GetName()+"="+label.GetValue())
	}
	slices.Sort(pairs)
	return pairs
}

// TestMetricSeriesBounded checks that what clients send cannot make new
// metric series. 5,000 calls, each on a new connection from a new source
// port, carry 200 different user and app ids and script texts, and one in
// five goes to one of 50 random method paths that the gateway does not
// know. The number of series of every ssegw_* metric stays within engines
// × functions × status codes plus an "other" method bucket. No label value
// contains a peer port, an id, script text or a raw method path, no span
// contains script text, and the unknown methods share one span name.
func TestMetricSeriesBounded(t *testing.T) {
	const (
		calls       = 5000
		ids         = 200
		paths       = 50
		concurrency = 8
	)
	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", strconv.Itoa(2*calls+100))
	p := newTracedPath(t, (&tracingPlugin{}).connector(), func(cfg *config.Config) { cfg.Log.Level = "warn" })
	tracingLearnCapabilities(t, p.client)

	// Values that must never become label values. Each has a random part,
	// so that no other label can contain it by chance.
	token := func() string {
		var b [6]byte
		rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}
	var users, apps, methods, scripts []string
	for i := range ids {
		users = append(users, fmt.Sprintf("user-%d-%s", i, token()))
		apps = append(apps, fmt.Sprintf("app-%d-%s", i, token()))
	}
	for i := range paths {
		service := "svc" + token() + ".Unknown"
		if i%2 == 0 {
			service = "qlik.sse.Connector" // a known service with an unknown method
		}
		methods = append(methods, "/"+service+"/Method"+token())
	}
	forbidden := map[string]string{} // value → what it is
	for i := range ids {
		forbidden[users[i]], forbidden[redactionHash(users[i])] = "a user id", "a hashed user id"
		forbidden[apps[i]], forbidden[redactionHash(apps[i])] = "an app id", "a hashed app id"
		script := fmt.Sprintf("secret_%s <- args[[1]] * %d", token(), i)
		scripts = append(scripts, script)
		forbidden[script] = "script text"
	}
	for _, method := range methods {
		forbidden[strings.TrimPrefix(method, "/")] = "a raw method path"
		forbidden[method[strings.LastIndexByte(method, '/')+1:]] = "a raw method name"
	}

	// call makes call i on a new connection, whose source address addrs
	// records. One call in five goes to each of GetCapabilities, Sum,
	// Forecast, a script and an unknown method.
	addrs := &localAddrLog{}
	call := func(i int) error {
		conn, err := grpc.NewClient("passthrough:///"+p.gateway.Addrs[0],
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(ssetest.Codec{})),
			grpc.WithContextDialer(addrs.dialer))
		if err != nil {
			return err
		}
		defer conn.Close()
		client := ssepb.NewConnectorClient(conn)
		common := &ssepb.CommonRequestHeader{AppId: apps[i%ids], UserId: users[i%ids], Cardinality: 1}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		requests := []*ssepb.BundledRows{ssetest.NumericBundle(2, 2)}
		switch i % 5 {
		case 0:
			_, err = client.GetCapabilities(ctx, &ssepb.Empty{})
			return err
		case 1, 2:
			md, err := ssepb.FunctionCallMetadata(int32(tracingSumID+i%5-1), common)
			if err != nil {
				return err
			}
			return callSSEStream(metadata.NewOutgoingContext(ctx, md), func(ctx context.Context) (sseStream, error) { return client.ExecuteFunction(ctx) }, requests).err
		case 3:
			md, err := ssepb.ScriptCallMetadata(&ssepb.ScriptRequestHeader{Script: scripts[i/5%len(scripts)], ReturnType: ssepb.DataType_NUMERIC}, common)
			if err != nil {
				return err
			}
			return callSSEStream(metadata.NewOutgoingContext(ctx, md), func(ctx context.Context) (sseStream, error) { return client.EvaluateScript(ctx) }, requests).err
		}
		md, err := ssepb.FunctionCallMetadata(tracingForecastID, common)
		if err != nil {
			return err
		}
		err = conn.Invoke(metadata.NewOutgoingContext(ctx, md), methods[i/5%paths], &ssetest.Raw{}, &ssetest.Raw{})
		if status.Code(err) == codes.Unimplemented {
			return nil
		}
		return fmt.Errorf("unknown method %s ended with %v, want code Unimplemented", methods[i/5%paths], err)
	}

	// Make the calls.
	var (
		failures  atomic.Int64
		firstFail atomic.Pointer[error]
		next      atomic.Int64
		wg        sync.WaitGroup
	)
	for range concurrency {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < calls; i = int(next.Add(1)) - 1 {
				if err := call(i); err != nil {
					failures.Add(1)
					firstFail.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d calls failed; first: %v", n, calls, *firstFail.Load())
	}
	ports := map[string]bool{}
	for _, addr := range addrs.all() {
		_, port, _ := net.SplitHostPort(addr)
		ports[port] = true
	}
	if len(ports) < calls/2 {
		t.Errorf("client source ports = %d, want about one per call (%d)", len(ports), calls)
	}

	// Check every series of the Prometheus output: the label values of
	// the gateway's own labels come from bounded sets, and no label value
	// contains what a client sent.
	families := tracingScrape(t, p.gateway)
	functions := []string{"Sum", "Forecast", "GetCapabilities", "ScriptEval", "ScriptEvalStr", "ScriptAggr", "ScriptAggrStr",
		"ScriptEvalEx", "ScriptEvalExStr", "ScriptAggrEx", "ScriptAggrExStr", "unknown"}
	engines := []string{"R", "none"}
	var statusCodes []string
	for code := range 17 {
		statusCodes = append(statusCodes, strconv.Itoa(code))
	}
	domains := map[string][]string{
		"qlik_sse_engine":        engines,
		"qlik_sse_function_name": functions,
		"rpc_method":             {"GetCapabilities", "ExecuteFunction", "EvaluateScript", "other"},
		"rpc_grpc_status_code":   statusCodes,
		"direction":              {"in", "out"},
		"qlik_sse_replica":       {p.plugin.Addr},
	}
	bound := len(engines)*len(functions)*len(statusCodes) + 1
	for name, family := range families {
		if strings.HasPrefix(name, "ssegw_") && len(family.GetMetric()) > bound {
			t.Errorf("%s has %d series, want at most %d (engines × functions × codes + 1)", name, len(family.GetMetric()), bound)
		}
		found := map[string]int{} // what leaked → series
		for _, metric := range family.GetMetric() {
			for _, label := range metric.GetLabel() {
				value := label.GetValue()
				if domain, ok := domains[label.GetName()]; ok && !slices.Contains(domain, value) {
					found[fmt.Sprintf("label %s=%q outside %q", label.GetName(), value, domain)]++
				}
				for leaked, what := range forbidden {
					if strings.Contains(value, leaked) {
						found[fmt.Sprintf("%s in label %s=%q", what, label.GetName(), value)]++
					}
				}
				_, port, err := net.SplitHostPort(value)
				if err != nil {
					port = value
				}
				if ports[port] {
					found[fmt.Sprintf("a client port in label %s=%q", label.GetName(), value)]++
				}
			}
		}
		for leak, n := range found {
			t.Errorf("%s: %s (%d series)", name, leak, n)
		}
	}

	// The calls collapse into a few series of ssegw_calls_total.
	callsFamily := families["ssegw_calls_total"]
	if callsFamily == nil {
		t.Fatalf("no ssegw_calls_total in the Prometheus output; metrics: %v", slices.Sorted(maps.Keys(families)))
	}
	var series []string
	for _, metric := range callsFamily.GetMetric() {
		series = append(series, strings.Join(tracingSeriesLabels(metric), ","))
	}
	slices.Sort(series)
	wantSeries := []string{
		"qlik_sse_engine=R,qlik_sse_function_name=Forecast,rpc_grpc_status_code=0,rpc_method=ExecuteFunction",
		"qlik_sse_engine=R,qlik_sse_function_name=GetCapabilities,rpc_grpc_status_code=0,rpc_method=GetCapabilities",
		"qlik_sse_engine=R,qlik_sse_function_name=ScriptEval,rpc_grpc_status_code=0,rpc_method=EvaluateScript",
		"qlik_sse_engine=R,qlik_sse_function_name=Sum,rpc_grpc_status_code=0,rpc_method=ExecuteFunction",
		"qlik_sse_engine=R,qlik_sse_function_name=unknown,rpc_grpc_status_code=0,rpc_method=ExecuteFunction", // tracingLearnCapabilities
		"qlik_sse_engine=R,qlik_sse_function_name=unknown,rpc_grpc_status_code=12,rpc_method=other",
	}
	if diff := cmp.Diff(wantSeries, series); diff != "" {
		t.Errorf("ssegw_calls_total series (-want +got):\n%s", diff)
	}

	// Spans may carry the client's address, but never script text. Their
	// names are bounded too, as backends build metrics from them: the
	// unknown methods share one.
	p.flush(t)
	spans := p.receiver.Spans()
	if got, want := len(spans), 2*(calls+2); got != want { // with the two of tracingLearnCapabilities
		t.Errorf("spans = %d, want %d", got, want)
	}
	names := map[string]bool{}
	for _, span := range spans {
		names[span.GetName()] = true
	}
	wantNames := []string{"R.Forecast", "R.GetCapabilities", "R.ScriptEval", "R.Sum", "R.ExecuteFunction", "R.other"}
	if got := slices.Sorted(maps.Keys(names)); !cmp.Equal(got, slices.Sorted(slices.Values(wantNames))) {
		t.Errorf("span names = %q, want %q", got, wantNames)
	}
	for _, span := range spans {
		for key, value := range span.Attributes() {
			text, ok := value.(string)
			if !ok {
				continue
			}
			for _, script := range scripts {
				if strings.Contains(text, script) {
					t.Errorf("span %q: attribute %s holds script text %q", span.GetName(), key, text)
				}
			}
		}
	}
}

// TestMismatchSeriesBounded checks that replies of the wrong size do not
// make new series of ssegw_result_mismatches. A plugin that returns one
// row too many for 1 to 20 rows makes 20 different mismatches. They must
// fall into at most the three kinds the gateway checks for the engine and
// function: rows of a scalar function, rows of an aggregation, and
// columns against the table description. The label once carried the row
// counts themselves, which made one series per count.
func TestMismatchSeriesBounded(t *testing.T) {
	const calls = 20
	connector := &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return tracingCapabilities(), nil
		},
		Execute: func(stream ssetest.Stream) error {
			rows, err := tracingReadRows(stream)
			if err != nil {
				return err
			}
			return stream.Send(ssetest.NumericBundle(rows+1, 1))
		},
	}
	p := newTracedPath(t, connector, nil)
	tracingLearnCapabilities(t, p.client)
	md, err := ssepb.FunctionCallMetadata(tracingForecastID, &ssepb.CommonRequestHeader{AppId: "a", UserId: "u", Cardinality: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.NewOutgoingContext(testContext(t), md)
	for rows := 1; rows <= calls; rows++ {
		r := callSSEStream(ctx, func(ctx context.Context) (sseStream, error) { return p.client.ExecuteFunction(ctx) }, []*ssepb.BundledRows{ssetest.NumericBundle(rows, 1)})
		if r.err != nil {
			t.Fatalf("call with %d rows: %v", rows, r.err)
		}
	}

	family := tracingScrape(t, p.gateway)["ssegw_result_mismatches_total"]
	if family == nil {
		t.Fatal("no ssegw_result_mismatches_total in the Prometheus output")
	}
	var series []string
	for _, metric := range family.GetMetric() {
		series = append(series, strings.Join(tracingSeriesLabels(metric), ","))
	}
	if len(series) > 3 {
		t.Errorf("ssegw_result_mismatches_total has %d series for one engine and function, want at most 3:\n%s", len(series), strings.Join(series, "\n"))
	}
}

// TestReplaySpans checks the spans of a call that the gateway replays
// after the plugin's first attempt fails with Unavailable before sending
// a header or a message. Each attempt gets a numbered client span, a
// child of the server span with its own status, and sends the plugin a
// traceparent that names that client span.
func TestReplaySpans(t *testing.T) {
	var (
		failed       atomic.Bool
		mu           sync.Mutex
		traceparents []string // by attempt, in arrival order
	)
	connector := &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return tracingCapabilities(), nil
		},
		Execute: func(stream ssetest.Stream) error {
			// Only the test's call, which has a function header, fails
			// once; tracingLearnCapabilities makes one without.
			md, _ := metadata.FromIncomingContext(stream.Context())
			if header, _ := ssepb.ReadFunctionRequestHeader(md); header == nil {
				return tracingAnswer(stream, false)
			}
			mu.Lock()
			traceparents = append(traceparents, tracingFirst(md.Get("traceparent")))
			mu.Unlock()
			if failed.CompareAndSwap(false, true) {
				return status.Error(codes.Unavailable, tracingPluginMessage(codes.Unavailable))
			}
			return tracingAnswer(stream, false)
		},
	}
	p := newTracedPath(t, connector, nil)
	tracingLearnCapabilities(t, p.client)
	md, err := ssepb.FunctionCallMetadata(tracingForecastID, &ssepb.CommonRequestHeader{AppId: "a", UserId: "u", Cardinality: 3})
	if err != nil {
		t.Fatal(err)
	}
	traceparent, traceID, _ := newTraceparent()
	ctx := metadata.NewOutgoingContext(testContext(t), metadata.Join(md, metadata.Pairs("traceparent", traceparent)))
	requests := []*ssepb.BundledRows{ssetest.NumericBundle(3, 2)}
	r := callSSEStream(ctx, func(ctx context.Context) (sseStream, error) { return p.client.ExecuteFunction(ctx) }, requests)
	if r.err != nil {
		t.Fatalf("call: %v", r.err)
	}
	if r.rows != 3 {
		t.Errorf("client received %d rows, want 3", r.rows)
	}
	p.flush(t)

	servers, clients := spanKinds(spansByTrace(p.receiver.Spans())[traceID])
	if len(servers) != 1 || len(clients) != 2 {
		t.Fatalf("trace has %d server and %d client spans, want 1 and 2", len(servers), len(clients))
	}
	server := servers[0]
	attributes := server.Attributes()
	if got := attributes["qlik.sse.attempts"]; got != int64(2) {
		t.Errorf("server span: attribute qlik.sse.attempts = %v, want 2", got)
	}
	if got := attributes["rpc.grpc.status_code"]; got != int64(codes.OK) {
		t.Errorf("server span: attribute rpc.grpc.status_code = %v, want 0", got)
	}
	if got := server.GetStatus().GetCode(); got != tracepb.Status_STATUS_CODE_UNSET {
		t.Errorf("server span status = %v, want unset", got)
	}
	attemptNumber := func(span otlptest.Span) int64 {
		n, _ := span.Attributes()["qlik.sse.attempt"].(int64)
		return n
	}
	slices.SortFunc(clients, func(a, b otlptest.Span) int { return int(attemptNumber(a) - attemptNumber(b)) })
	mu.Lock()
	seen := slices.Clone(traceparents)
	mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("plugin saw %d attempts, want 2", len(seen))
	}
	for i, want := range []struct {
		code   codes.Code
		status tracepb.Status_StatusCode
	}{
		{codes.Unavailable, tracepb.Status_STATUS_CODE_ERROR},
		{codes.OK, tracepb.Status_STATUS_CODE_UNSET},
	} {
		client := clients[i]
		attributes := client.Attributes()
		if got := attributes["qlik.sse.attempt"]; got != int64(i+1) {
			t.Errorf("client span %d: attribute qlik.sse.attempt = %v, want %d", i, got, i+1)
		}
		if got := attributes["rpc.grpc.status_code"]; got != int64(want.code) {
			t.Errorf("attempt %d: attribute rpc.grpc.status_code = %v, want %d", i+1, got, want.code)
		}
		if got := client.GetStatus().GetCode(); got != want.status {
			t.Errorf("attempt %d: status = %v, want %v", i+1, got, want.status)
		}
		if got := client.ParentSpanIDHex(); got != server.SpanIDHex() {
			t.Errorf("attempt %d: parent = %q, want the server span %q", i+1, got, server.SpanIDHex())
		}
		if want := "00-" + traceID + "-" + client.SpanIDHex() + "-01"; seen[i] != want {
			t.Errorf("attempt %d: plugin's traceparent = %q, want %q", i+1, seen[i], want)
		}
	}
}

// TestExemplarsOnDurationOnly checks which metrics link a traced call to
// its trace: the duration histogram does, the counters do not.
func TestExemplarsOnDurationOnly(t *testing.T) {
	plugin := &tracingPlugin{}
	p := newTracedPath(t, plugin.connector(), func(cfg *config.Config) {
		cfg.Telemetry.Metrics = config.MetricExport{Exporter: config.ExporterOTLP, Endpoint: cfg.Telemetry.Traces.Endpoint, Insecure: true}
	})
	traceparent, traceID, _ := newTraceparent()
	ctx := metadata.NewOutgoingContext(testContext(t), metadata.Pairs("traceparent", traceparent))
	if _, err := p.client.GetCapabilities(ctx, &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities through the gateway = %v, want success", err)
	}
	p.flush(t)

	exemplars := map[string][]string{} // metric name: exemplar trace ids
	for _, m := range p.receiver.Metrics() {
		for _, point := range m.GetHistogram().GetDataPoints() {
			for _, e := range point.GetExemplars() {
				exemplars[m.GetName()] = append(exemplars[m.GetName()], hex.EncodeToString(e.GetTraceId()))
			}
		}
		for _, point := range m.GetSum().GetDataPoints() {
			for _, e := range point.GetExemplars() {
				exemplars[m.GetName()] = append(exemplars[m.GetName()], hex.EncodeToString(e.GetTraceId()))
			}
		}
	}
	if got := exemplars["ssegw.call.duration"]; !slices.Contains(got, traceID) {
		t.Errorf("ssegw.call.duration exemplar trace ids = %q, want the call's %s among them", got, traceID)
	}
	delete(exemplars, "ssegw.call.duration")
	if len(exemplars) != 0 {
		t.Errorf("other metrics with exemplars: %v, want none", exemplars)
	}
}

// TestSpansOfClientTextExported checks that every call's server span
// reaches the receiver, with its text made valid and bounded. The client
// sends an app id and a method path that are not UTF-8, which collectors
// reject, and 100 app ids of 45 KiB, which would make one export request
// larger than a collector takes.
func TestSpansOfClientTextExported(t *testing.T) {
	t.Parallel()
	plugin := &tracingPlugin{}
	p := newTracedPath(t, plugin.connector(), nil)
	ctx := testContext(t)
	requests := []*ssepb.BundledRows{ssetest.NumericBundle(2, 1)}
	call := func(app string) {
		t.Helper()
		md, err := ssepb.FunctionCallMetadata(tracingForecastID, &ssepb.CommonRequestHeader{Cardinality: 1})
		if err != nil {
			t.Fatal(err)
		}
		// Written by hand, because protobuf's encoder rejects a string
		// field that is not UTF-8, but a client need not use it.
		header := protowire.AppendTag(nil, 1, protowire.BytesType)
		md.Set(ssepb.CommonRequestHeaderKey, string(protowire.AppendString(header, app)))
		open := func(ctx context.Context) (sseStream, error) { return p.client.ExecuteFunction(ctx) }
		if result := callSSEStream(metadata.NewOutgoingContext(ctx, md), open, requests); result.err != nil {
			t.Fatalf("call with an app id of %d bytes: %v", len(app), result.err)
		}
	}
	call("sales.qvf")
	call("app\xff\xfe")
	long := strings.Repeat("a", 45<<10)
	for range 100 {
		call(long)
	}
	conn, err := grpc.NewClient(p.gateway.Addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(ssetest.Codec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Invoke(ctx, "/qlik.sse.Connector/Bad\xff", &ssetest.Raw{}, &ssetest.Raw{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("call of an unknown method = %v, want Unimplemented", err)
	}
	p.flush(t)

	servers, _ := spanKinds(p.receiver.Spans())
	if len(servers) != 103 {
		t.Fatalf("receiver got %d server spans, want 103: one per call", len(servers))
	}
	apps := map[string]int{}
	methods := map[string]bool{}
	for _, span := range servers {
		if span.Name == "R.other" {
			methods[fmt.Sprint(span.Attributes()["rpc.method"])] = true
		}
		if app, ok := span.Attributes()["qlik.sse.app.id"].(string); ok {
			apps[app]++
		}
	}
	if apps["sales.qvf"] != 1 || apps["app\uFFFD"] != 1 {
		t.Errorf("app ids on spans = %v, want sales.qvf and app\uFFFD once each", slices.Collect(maps.Keys(apps)))
	}
	for app, n := range apps {
		if strings.HasPrefix(app, "aaa") && (n != 100 || len(app) > 300 || !strings.Contains(app, "[46080 bytes, sha256 ")) {
			t.Errorf("long app id on %d spans as %.80q… (%d bytes), want on 100 spans, cut with its length and hash", n, app, len(app))
		}
	}
	if !methods["Bad\uFFFD"] {
		t.Errorf("rpc.method of spans R.other = %v, want the unknown method's name made valid UTF-8", slices.Collect(maps.Keys(methods)))
	}
}
