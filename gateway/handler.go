package gateway

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// forwardedStreamDesc describes every forwarded call as a bidirectional
// stream. The frames of unary and server-streaming methods fit it too, so
// the gateway needs no knowledge of the service it forwards.
var forwardedStreamDesc = grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// call is one call on its way through the gateway.
type call struct {
	// Set before the pumps start, then only read.
	gateway  *Gateway
	engine   *routing.Engine // nil for a call that no engine accepted
	ctx      context.Context // the client's call
	method   string
	start    time.Time
	incoming metadata.MD
	info     callInfo

	// Observation, used by the handler's goroutine only.
	span         trace.Span
	spanName     string
	spanCtx      context.Context
	attemptSpans []trace.Span
	attempts     int
	wait         time.Duration // spent opening the backend stream

	// backendPeer is filled in by gRPC when the backend stream ends.
	backendPeer peer.Peer

	// Set by backendEvents on a gRPC transport goroutine.
	statusReceived atomic.Bool

	// requestFailure is the status that ended the client's side of the
	// call, unless the client cancelled. requestsDone is closed when the
	// request pump ends, after it set requestFailure.
	requestFailure atomic.Pointer[status.Status]
	requestsDone   chan struct{}

	// Counted by the request pump, which may outlive the handler.
	messagesIn, bytesIn, rowsIn atomic.Int64
	rowsUncounted               atomic.Bool // a message was not valid protobuf

	// Counted by the response pump, which the handler runs.
	messagesOut, bytesOut, rowsOut int64
	firstColumns                   int // values in the first response row; -1 before one
	tableFields                    int // fields of qlik-tabledescription-bin; -1 without one
}

// callKey is the context key under which backend streams carry their call.
type callKey struct{}

// handleStream forwards one call of any method to a plugin. It is the
// listener's gRPC handler for every method, since the gateway registers no
// services.
func (l *listener) handleStream(_ any, ss grpc.ServerStream) error {
	start := time.Now()
	ctx := ss.Context()
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ctx)
	g := l.gateway
	c := &call{
		gateway: g, ctx: ctx, method: method, start: start, incoming: md,
		info: callInfo{kind: methodKind(method)}, firstColumns: -1, tableFields: -1,
		requestsDone: make(chan struct{}),
	}
	c.startSpan(l)

	// Refuse headers over the gateway's limit here, with a status: gRPC
	// only enforces a higher ceiling (see serverOptions), because over its
	// own limit it resets the stream or closes the connection without one.
	if size := headerListSize(md); size > int(g.cfg.Limits.MaxHeaderListSize) {
		close(c.requestsDone)
		return c.finish(status.Newf(codes.ResourceExhausted, "request headers of %d bytes are over limits.max_header_list_size (%v)",
			size, g.cfg.Limits.MaxHeaderListSize), true)
	}

	// Choose the engine.
	engine, err := g.routes().Match(routing.Request{
		EngineHeader:  firstValue(md, routing.EngineHeader),
		Authority:     firstValue(md, ":authority"),
		ServerName:    tlsServerName(ctx),
		DefaultEngine: l.config.Engine,
	})
	if err != nil {
		close(c.requestsDone)
		return c.finish(routeStatus(err), true)
	}
	c.engine = engine
	c.describe()

	// Open the plugin's stream with Qlik's headers, under the tighter of
	// the client's deadline and the engine's request_timeout. Cancelling
	// the client's call cancels this context, and with it the plugin's call.
	backendCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if timeout := engine.Config.RequestTimeout; timeout > 0 {
		var cancelTimeout context.CancelFunc
		backendCtx, cancelTimeout = context.WithTimeoutCause(backendCtx, timeout, &requestTimeoutError{engine: engine.Name, timeout: timeout})
		defer cancelTimeout()
	}
	outgoing := forwardedMetadata(md)
	c.startAttempt(outgoing)
	backendCtx = metadata.NewOutgoingContext(backendCtx, outgoing)
	backendCtx = context.WithValue(backendCtx, callKey{}, c)
	callOptions := []grpc.CallOption{grpc.ForceCodecV2(frameCodec{}), grpc.Peer(&c.backendPeer)}
	if subtype := contentSubtype(md); subtype != "" {
		callOptions = append(callOptions, grpc.CallContentSubtype(subtype))
	}
	waitStart := time.Now()
	g.observer.metrics.waiting.Add(ctx, 1, metric.WithAttributes(attrEngine.String(engine.Name)))
	cs, err := engine.Pool.Conn().NewStream(backendCtx, &forwardedStreamDesc, method, callOptions...)
	g.observer.metrics.waiting.Add(ctx, -1, metric.WithAttributes(attrEngine.String(engine.Name)))
	c.wait = time.Since(waitStart)
	if err != nil {
		close(c.requestsDone)
		return c.finish(c.backendStatus(backendCtx, err))
	}

	// Pump requests in the background and responses here. The handler
	// returns when the response side ends: a client still sending after the
	// plugin's final status has nothing left to send to.
	go c.forwardRequests(ss, cs, cancel)
	return c.finish(c.forwardResponses(ss, cs, backendCtx))
}

// forwardRequests copies the client's messages to the plugin, then passes
// on the client's half-close. A client that fails or goes away stops the
// backend call with cancel, whose cause tells backendStatus why.
func (c *call) forwardRequests(ss grpc.ServerStream, cs grpc.ClientStream, cancel context.CancelCauseFunc) {
	defer close(c.requestsDone)
	f := &frame{}
	for {
		if err := ss.RecvMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				// The plugin sees end-of-input only now, after the last message.
				_ = cs.CloseSend() // its error, if any, surfaces from RecvMsg
				return
			}
			// gRPC has already sent the client this status, such as
			// ResourceExhausted for a message over the limit: a failed
			// server RecvMsg writes its own status (as of grpc-go v1.85)
			// and cancels the call's context. The call is recorded with it.
			st := status.Convert(err)
			if code := st.Code(); code == codes.Canceled || code == codes.DeadlineExceeded {
				cancel(nil)
				return
			}
			c.requestFailure.Store(st)
			cancel(errRequestFailed)
			return
		}
		c.messagesIn.Add(1)
		c.bytesIn.Add(int64(f.len()))
		if shape, ok := countRows(f.data); ok {
			c.rowsIn.Add(int64(shape.rows))
		} else {
			c.rowsUncounted.Store(true)
		}
		if err := cs.SendMsg(f); err != nil {
			// The backend stream ended; its status reaches the client
			// through the response pump.
			f.release()
			return
		}
	}
}

// forwardResponses copies the plugin's response headers, messages and
// trailers to the client, and returns the status to end the call with.
// Headers go out as soon as the plugin sends them, not with the first
// message: a client may wait for them before it sends more.
func (c *call) forwardResponses(ss grpc.ServerStream, cs grpc.ClientStream, backendCtx context.Context) (*status.Status, bool) {
	// A nil header means the plugin sent none: it answered trailers-only,
	// or the call failed. Then the client gets no header block either.
	if header, _ := cs.Header(); header != nil {
		c.noteTableDescription(header)
		if err := ss.SendHeader(forwardedMetadata(header)); err != nil {
			return clientSendStatus(ss.Context(), err), false
		}
	}

	f := &frame{}
	for {
		err := cs.RecvMsg(f)
		if err != nil {
			ss.SetTrailer(forwardedMetadata(cs.Trailer()))
			if errors.Is(err, io.EOF) {
				return nil, false
			}
			return c.backendStatus(backendCtx, err)
		}
		c.messagesOut++
		c.bytesOut += int64(f.len())
		c.noteResponse(f)
		if err := ss.SendMsg(f); err != nil {
			f.release()
			return clientSendStatus(ss.Context(), err), false
		}
	}
}

// finish records the call and returns its status as an error.
func (c *call) finish(st *status.Status, gatewayFailure bool) error {
	c.end(st, gatewayFailure)
	return st.Err()
}

// noteTableDescription remembers the field count of the plugin's
// qlik-tabledescription-bin header, to check the rows against it.
func (c *call) noteTableDescription(header metadata.MD) {
	if len(header.Get(ssepb.TableDescriptionKey)) == 0 {
		return
	}
	if table, err := ssepb.ReadTableDescription(header); err == nil {
		c.tableFields = len(table.GetFields())
	}
}

// noteResponse counts a response message's rows, and learns the engine's
// functions from a GetCapabilities answer passing through. It runs before
// the message is sent on, which hands its buffers over to gRPC.
func (c *call) noteResponse(f *frame) {
	if shape, ok := countRows(f.data); ok && c.info.kind != methodGetCapabilities {
		c.rowsOut += int64(shape.rows)
		if c.firstColumns < 0 {
			c.firstColumns = shape.columns
		}
	} else if !ok {
		c.rowsUncounted.Store(true)
	}
	if c.info.kind == methodGetCapabilities {
		capabilities := &ssepb.Capabilities{}
		if proto.Unmarshal(f.data.Materialize(), capabilities) == nil {
			c.engine.SetCapabilities(routing.NewCapabilities(capabilities, time.Now()))
		}
	}
}

// rowsCounted reports whether every message was valid protobuf, so that
// the row counts are exact.
func (c *call) rowsCounted() bool {
	return !c.rowsUncounted.Load()
}

// backendAddress returns the address of the plugin replica that served the
// call, or "none" before one was picked.
func (c *call) backendAddress() string {
	if c.backendPeer.Addr == nil {
		return "none"
	}
	return c.backendPeer.Addr.String()
}

// peerAddress returns the client's address, for logs.
func peerAddress(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "unknown"
}

// tlsServerName returns the server name the client asked for in its TLS
// handshake, or "" on a plaintext connection.
func tlsServerName(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		return info.State.ServerName
	}
	return ""
}
