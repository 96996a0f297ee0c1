package gateway

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/ssepb"
)

// instrumentationName names the gateway's tracer and meter.
const instrumentationName = "github.com/ssegw/ssegw/gateway"

// observer records every call: a server span, a client span per attempt
// on a plugin, metrics, the access log and the status page's activity.
type observer struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	metrics    *metrics
	activity   *activity
	redaction  config.Redaction
	accessLog  bool
}

// metadataCarrier lets OpenTelemetry read and write trace context in gRPC
// metadata.
type metadataCarrier metadata.MD

func (c metadataCarrier) Get(key string) string {
	if values := metadata.MD(c).Get(key); len(values) > 0 {
		return values[0]
	}
	return ""
}

func (c metadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for key := range c {
		keys = append(keys, key)
	}
	return keys
}

// startSpan begins the call's server span, continuing the client's trace
// when its headers carry one. The span is named after the method until the
// call's engine and function are known.
//
// NOTE: tracing every call still costs small calls 5 to 18 % of their
// throughput on 2 cores (docs/PERFORMANCE.md): building the spans'
// attributes here, encoding them, and the collector's share of the CPU
// when it runs on the same machine.
func (c *call) startSpan(l *listener) {
	o := c.gateway.observer
	parent := o.propagator.Extract(c.ctx, metadataCarrier(c.incoming))
	c.spanName = c.info.spanName("", c.method)
	c.spanCtx, c.span = o.tracer.Start(parent, c.spanName, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(c.start))
	o.metrics.inFlight.add(o.metrics, setKey{method: c.info.kind}, 1)
	if !c.span.IsRecording() {
		return // spans go nowhere: spare building their attributes
	}
	service, method := splitMethod(c.method)
	attributes := getAttributeList()
	attributes = append(attributes, semconv.RPCSystemGRPC, semconv.RPCService(boundedText(service, maxMethodBytes)), semconv.RPCMethod(boundedText(method, maxMethodBytes)))
	if host, port, ok := addrHostPort(l.lis.Addr()); ok {
		attributes = append(attributes, semconv.ServerAddress(host), semconv.ServerPort(port))
	}
	if p, ok := peer.FromContext(c.ctx); ok {
		if host, port, ok := addrHostPort(p.Addr); ok {
			attributes = append(attributes, semconv.ClientAddress(host), semconv.ClientPort(port))
		}
	}
	c.spanAttributes = attributes
	c.startAttributes = len(attributes)
}

// Bounds of the text from clients and plugins that spans carry, so that
// one span cannot grow an export request past a collector's limit (gRPC's
// default is 4 MiB) and lose the spans of every call in it. A script's
// length and SHA-256 are recorded whole besides its text.
const (
	maxMethodBytes     = 256
	maxStatusBytes     = 4 << 10
	maxScriptTextBytes = 32 << 10
)

// attributeLists keeps the lists in which spans' attributes are gathered.
// The SDK copies a span's attributes when they are set, so a list can
// serve call after call. At 64 bytes an attribute, a fresh list of 32 was
// the largest single allocation of a traced call.
var attributeLists = sync.Pool{New: func() any {
	list := make([]attribute.KeyValue, 0, serverSpanAttributes)
	return &list
}}

// serverSpanAttributes is the most attributes a server span gets, so that
// a list never grows.
const serverSpanAttributes = 32

func getAttributeList() []attribute.KeyValue {
	return (*attributeLists.Get().(*[]attribute.KeyValue))[:0]
}

func putAttributeList(list []attribute.KeyValue) {
	clear(list) // drops the strings the attributes point to
	list = list[:0]
	attributeLists.Put(&list)
}

// describe decodes Qlik's headers once the engine is known, names the
// span after the engine and function, and adds the SSE attributes.
func (c *call) describe() {
	c.info = describeCall(c.method, c.incoming, c.engine)
	c.spanName = boundedText(c.info.spanName(c.engine.Name, c.method), 2*maxMethodBytes)
	if c.merged != nil {
		// Named as Qlik calls it: the merged engine and its function name.
		name := c.mergedName
		if name == "" {
			name = c.info.function
		}
		c.spanName = c.merged.Name + "." + name
	}
	if !c.span.IsRecording() {
		return
	}
	c.span.SetName(c.spanName)

	attributes := c.spanAttributes
	if c.merged != nil {
		attributes = append(attributes, attrEngine.String(c.merged.Name), attrMember.String(c.engine.Name))
	} else {
		attributes = append(attributes, attrEngine.String(c.engine.Name))
	}

	redaction := c.gateway.observer.redaction
	switch {
	case c.merged != nil && c.mergedName != "":
		// The function as Qlik calls it, beside qlik.sse.engine and the
		// span's name, and as the member's plugin names it.
		attributes = append(attributes,
			attrFunctionID.Int(int(c.mergedID)), attrFunctionName.String(c.mergedName),
			attrMemberFunctionID.Int(int(c.info.functionID)), attrMemberFunctionName.String(c.info.function))
	default:
		if c.info.hasID {
			attributes = append(attributes, attrFunctionID.Int(int(c.info.functionID)))
		}
		if c.info.function != "" {
			attributes = append(attributes, attrFunctionName.String(c.info.function))
		}
	}
	if c.info.hasType {
		attributes = append(attributes, attrFunctionType.String(c.info.functionType.String()))
	}
	if c.info.hasCommon {
		if app, ok := redact(c.info.appID, redaction.AppID); ok {
			attributes = append(attributes, attrAppID.String(boundedText(app, maxAppIDBytes)))
		}
		if user, ok := redact(c.info.userID, redaction.UserID); ok {
			attributes = append(attributes, attrUserID.String(boundedText(user, maxAppIDBytes)))
		}
		attributes = append(attributes, attrCardinality.Int64(c.info.cardinality))
	}
	if c.info.kind == methodEvaluateScript && c.info.scriptSHA256 != "" {
		attributes = append(attributes, attrScriptLength.Int(c.info.scriptLength), attrScriptSHA256.String(c.info.scriptSHA256))
		if redaction.ScriptText {
			attributes = append(attributes, attrScriptText.String(boundedText(c.info.scriptText, maxScriptTextBytes)))
		}
	}
	c.spanAttributes = attributes
}

// describeMergedItself describes a call that a merged engine ends itself,
// by serving GetCapabilities or rejecting the call. Its span is named
// after the merged engine and carries it, as for any engine's call.
func (c *call) describeMergedItself() {
	c.merged = nil
	c.describe()
}

// startAttemptSpan begins the client span of one attempt on a plugin and
// puts its trace context into the outgoing headers, replacing the
// client's, so that a plugin with its own tracing joins the gateway's
// trace.
func (c *call) startAttemptSpan(a *attempt, outgoing metadata.MD) {
	o := c.gateway.observer
	spanCtx, span := o.tracer.Start(c.spanCtx, c.spanName, attemptSpanOptions...)
	a.span = span
	o.metrics.attempts.add(o.metrics, setKey{engine: c.engine.Name, function: c.info.metricFunction()}, 1)
	delete(outgoing, "traceparent")
	delete(outgoing, "tracestate")
	o.propagator.Inject(spanCtx, metadataCarrier(outgoing))
}

// attemptSpanOptions is made once: a list built at each call, with the
// option in an interface, would cost two allocations per attempt.
var attemptSpanOptions = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

// endAttempt ends an attempt's stream context and its client span with
// the attempt's own status. Ending the context unblocks a request pump
// still sending to a failed attempt. The span's attributes are set here,
// all at once, because the SDK grows a span's list on every call.
func (c *call) endAttempt(a *attempt, st *status.Status) {
	a.cancel(nil)
	if !a.span.IsRecording() {
		a.span.End()
		return
	}
	service, method := splitMethod(c.method)
	code := st.Code()
	attributes := getAttributeList()
	attributes = append(attributes, semconv.RPCSystemGRPC, semconv.RPCService(service), semconv.RPCMethod(method),
		attrEngine.String(c.engine.Name), attrAttempt.Int(a.number), attribute.Int(string(attrStatusCode), int(code)))
	if host, port, ok := addrHostPort(a.peer.Addr); ok {
		attributes = append(attributes, semconv.ServerAddress(host), semconv.ServerPort(port), attrBackend.String(a.peer.Addr.String()))
	}
	a.span.SetAttributes(attributes...)
	putAttributeList(attributes)
	if code != codes.OK {
		a.span.SetStatus(otelcodes.Error, boundedText(st.Message(), maxStatusBytes))
	}
	a.span.End()
}

// end records the finished call everywhere: spans, metrics, the status
// page, and the log.
func (c *call) end(st *status.Status, gatewayFailure bool) {
	o := c.gateway.observer
	now := time.Now()
	duration := now.Sub(c.start)
	rowsIn, rowsOut := c.rowsIn.Load(), c.rowsOut
	engine, functionName := "", c.info.metricFunction()
	if c.engine != nil {
		engine = c.engine.Name
	}

	// Spans.
	code := st.Code()
	if c.span.IsRecording() {
		results := append(c.spanAttributes,
			attribute.Int(string(attrStatusCode), int(code)),
			attrMessagesIn.Int64(c.messagesIn.Load()),
			attrMessagesOut.Int64(c.messagesOut),
			attrBytesIn.Int64(c.bytesIn.Load()),
			attrBytesOut.Int64(c.bytesOut),
			attrRowsIn.Int64(rowsIn),
			attrRowsOut.Int64(rowsOut),
			attrAttempts.Int(c.moved+len(c.attempts)),
			attrWait.Float64(c.wait.Seconds()),
		)
		if backend := c.backendAddress(); backend != "none" {
			results = append(results, attrBackend.String(backend))
		}
		c.span.SetAttributes(results...)
		putAttributeList(results)
		c.spanAttributes = nil
	}
	for _, found := range c.mismatches(st) {
		c.span.AddEvent("qlik.sse.result_mismatch", trace.WithAttributes(attrMismatch.String(found.kind), attrMismatchDetail.String(found.detail)))
		o.metrics.mismatches.Add(c.spanCtx, 1, metric.WithAttributes(attrEngine.String(engine), attrFunctionName.String(functionName), attrMismatch.String(found.kind)))
		if c.gateway.warnings.allow("mismatch:" + engine + ":" + functionName + ":" + found.kind) {
			c.gateway.logger.Warn("plugin reply does not fit the function; Qlik pads or drops rows silently",
				"engine", engine, "function", functionName, "mismatch", found.detail, "rows_in", rowsIn, "rows_out", rowsOut)
		}
	}
	if serverError(code) {
		c.span.SetStatus(otelcodes.Error, boundedText(st.Message(), maxStatusBytes))
	}
	c.span.End(trace.WithTimestamp(now))

	// Metrics.
	m := o.metrics
	callKey := setKey{engine: engineOrNone(engine), function: functionName, method: c.info.kind, code: code, hasCode: true}
	m.calls.add(m, callKey, 1)
	m.duration.Record(c.spanCtx, duration.Seconds(), m.attributes(callKey))
	m.inFlight.add(m, setKey{method: c.info.kind}, -1)
	if engine != "" {
		in := setKey{engine: engine, function: functionName, direction: "in"}
		out := setKey{engine: engine, function: functionName, direction: "out"}
		m.rows.add(m, in, rowsIn)
		m.rows.add(m, out, rowsOut)
		m.bytes.add(m, in, c.bytesIn.Load())
		m.bytes.add(m, out, c.bytesOut)
	}

	// The status page. It leaves out the app id of a rejected call, so
	// that clients without access cannot push the real apps out of the
	// apps kept per function.
	app := ""
	if !c.rejected {
		app, _ = redact(c.info.appID, o.redaction.AppID)
	}
	traceID := ""
	if sc := c.span.SpanContext(); sc.HasTraceID() {
		traceID = sc.TraceID().String()
	}
	o.activity.record(CallRecord{
		Time: now, Engine: engine, Function: functionName, App: app, Duration: duration,
		RowsIn: rowsIn, RowsOut: rowsOut, Code: code, TraceID: traceID,
	})

	c.log(st, gatewayFailure, duration, traceID)
}

// log writes the call's one record: at info level when the access log is
// on, as a warning when the gateway failed the call, else at debug level.
// Warnings without the access log are rate-limited, since a plugin that
// stays down would fail every call the same way.
func (c *call) log(st *status.Status, gatewayFailure bool, duration time.Duration, traceID string) {
	g := c.gateway
	level := slog.LevelDebug
	if g.observer.accessLog {
		level = slog.LevelInfo
	}
	if gatewayFailure {
		level = slog.LevelWarn
	}
	ctx := context.Background()
	if !g.logger.Enabled(ctx, level) {
		return
	}
	engine := engineOrNone("")
	if c.engine != nil {
		engine = c.engine.Name
	}
	if gatewayFailure && !g.observer.accessLog && !g.warnings.allow("call:"+engine+":"+st.Code().String()) {
		return
	}
	// Text from the client is bounded as in spans, so that one call's
	// headers cannot write records of hundreds of kilobytes.
	attributes := []slog.Attr{
		slog.String("engine", engine),
		slog.String("method", boundedText(c.method, maxMethodBytes)),
		slog.String("function", c.info.function),
	}
	if c.info.hasID {
		attributes = append(attributes, slog.Int("function_id", int(c.info.functionID)))
	}
	if c.merged != nil {
		// engine and function are the member's, as the plugin receives
		// them. Qlik calls the function by these names.
		attributes = append(attributes, slog.String("merged_engine", c.merged.Name))
		if c.mergedName != "" {
			attributes = append(attributes, slog.String("merged_function", c.mergedName))
		}
	}
	attributes = c.appendIDs(attributes)
	attributes = append(attributes,
		slog.String("peer", peerAddress(c.ctx)),
		slog.String("backend", c.backendAddress()),
		slog.Duration("duration", duration),
		slog.String("code", st.Code().String()),
		slog.Int("attempts", c.moved+len(c.attempts)),
		slog.Int64("bytes_in", c.bytesIn.Load()),
		slog.Int64("bytes_out", c.bytesOut),
		slog.Int64("rows_in", c.rowsIn.Load()),
		slog.Int64("rows_out", c.rowsOut),
		slog.String("trace_id", traceID),
	)
	if st.Code() != codes.OK {
		attributes = append(attributes, slog.String("error", boundedText(st.Message(), maxStatusBytes)))
	}
	g.logger.LogAttrs(ctx, level, "call", attributes...)
}

// appendIDs adds the call's app and user ids to a log record, as far as
// redaction keeps them, bounded as in spans.
func (c *call) appendIDs(attributes []slog.Attr) []slog.Attr {
	if !c.info.hasCommon {
		return attributes
	}
	redaction := c.gateway.observer.redaction
	if app, ok := redact(c.info.appID, redaction.AppID); ok {
		attributes = append(attributes, slog.String("app_id", boundedText(app, maxAppIDBytes)))
	}
	if user, ok := redact(c.info.userID, redaction.UserID); ok {
		attributes = append(attributes, slog.String("user_id", boundedText(user, maxAppIDBytes)))
	}
	return attributes
}

// mismatch is one way a successful reply does not fit its function. Kind
// is a metric attribute, so it has few values; detail is for the span and
// the log.
type mismatch struct {
	kind   string // "rows" or "columns"
	detail string
}

// mismatches returns how a successful reply does not fit its function:
// Qlik pads or drops rows that do not fit, without an error.
func (c *call) mismatches(st *status.Status) []mismatch {
	if st.Code() != codes.OK || !c.rowsCounted() || !c.info.hasType {
		return nil
	}
	var found []mismatch
	rowsIn, rowsOut := c.rowsIn.Load(), c.rowsOut
	switch c.info.functionType {
	case ssepb.FunctionType_AGGREGATION:
		if rowsOut != 1 {
			found = append(found, mismatch{"rows", "aggregation returned " + strconv.FormatInt(rowsOut, 10) + " rows, want 1"})
		}
	default:
		if rowsOut != rowsIn {
			found = append(found, mismatch{"rows", "returned " + strconv.FormatInt(rowsOut, 10) + " rows for " + strconv.FormatInt(rowsIn, 10)})
		}
	}
	if c.tableFields >= 0 && c.firstColumns >= 0 && c.tableFields != c.firstColumns {
		found = append(found, mismatch{"columns", "table description names " + strconv.Itoa(c.tableFields) + " fields, rows have " + strconv.Itoa(c.firstColumns) + " values"})
	}
	return found
}

// serverError reports whether a status marks a server span as failed, as
// OpenTelemetry's RPC conventions list them: the other codes are the
// client's doing.
func serverError(code codes.Code) bool {
	switch code {
	case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}

func engineOrNone(engine string) string {
	if engine == "" {
		return "none"
	}
	return engine
}

// splitMethod splits "/qlik.sse.Connector/GetCapabilities" into service and
// method.
func splitMethod(fullMethod string) (service, method string) {
	fullMethod = strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(fullMethod, '/'); i >= 0 {
		return fullMethod[:i], fullMethod[i+1:]
	}
	return "", fullMethod
}

// addrHostPort is splitHostPort for a net.Addr. A TCP address, which
// every gRPC peer and listener has here, gives its parts without the
// formatting and parsing of a string, which showed in traced calls'
// profiles.
func addrHostPort(addr net.Addr) (string, int, bool) {
	switch addr := addr.(type) {
	case nil:
		return "", 0, false
	case *net.TCPAddr:
		host := addr.IP.String()
		if addr.Zone != "" {
			host += "%" + addr.Zone
		}
		return host, addr.Port, true
	}
	return splitHostPort(addr.String())
}

func splitHostPort(address string) (string, int, bool) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, false
	}
	n, err := strconv.Atoi(port)
	return host, n, err == nil
}
