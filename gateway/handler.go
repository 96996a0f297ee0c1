package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

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
	engine   *routing.Engine
	ctx      context.Context // the client's call
	method   string
	start    time.Time
	incoming metadata.MD

	// backendPeer is filled in by gRPC when the backend stream ends.
	backendPeer peer.Peer

	// Set by backendEvents on a gRPC transport goroutine.
	statusReceived atomic.Bool

	// requestFailure is how the client's side of the call failed, if it did
	// other than by the client cancelling. requestsDone is closed when the
	// request pump ends, after it set requestFailure.
	requestFailure atomic.Pointer[status.Status]
	requestsDone   chan struct{}

	// Counted by the pumps; the request pump may outlive the handler.
	messagesIn, bytesIn   atomic.Int64
	messagesOut, bytesOut int64 // response pump only, which the handler runs
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

	// Refuse headers over the gateway's limit here, with a status: gRPC
	// only enforces a higher ceiling (see serverOptions), because over its
	// own limit it resets the stream or closes the connection without one.
	if size := headerListSize(md); size > int(g.cfg.Limits.MaxHeaderListSize) {
		st := status.Newf(codes.ResourceExhausted, "request headers of %d bytes are over limits.max_header_list_size (%v)", size, g.cfg.Limits.MaxHeaderListSize)
		g.logRejectedCall(ctx, l, method, st)
		return st.Err()
	}

	// Choose the engine.
	engine, err := g.routes().Match(routing.Request{
		EngineHeader:  firstValue(md, routing.EngineHeader),
		Authority:     firstValue(md, ":authority"),
		ServerName:    tlsServerName(ctx),
		DefaultEngine: l.config.Engine,
	})
	if err != nil {
		st := routeStatus(err)
		g.logRejectedCall(ctx, l, method, st)
		return st.Err()
	}
	c := &call{gateway: g, engine: engine, ctx: ctx, method: method, start: start, incoming: md, requestsDone: make(chan struct{})}

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
	backendCtx = metadata.NewOutgoingContext(backendCtx, forwardedMetadata(md))
	backendCtx = context.WithValue(backendCtx, callKey{}, c)
	callOptions := []grpc.CallOption{grpc.ForceCodecV2(frameCodec{}), grpc.Peer(&c.backendPeer)}
	if subtype := contentSubtype(md); subtype != "" {
		callOptions = append(callOptions, grpc.CallContentSubtype(subtype))
	}
	cs, err := engine.Pool.Conn().NewStream(backendCtx, &forwardedStreamDesc, method, callOptions...)
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
		if err := ss.SendMsg(f); err != nil {
			f.release()
			return clientSendStatus(ss.Context(), err), false
		}
	}
}

// finish logs the call's one record and returns its status as an error.
// Gateway-side failures are warnings; everything else is debug detail.
func (c *call) finish(st *status.Status, gatewayFailure bool) error {
	level := slog.LevelDebug
	if gatewayFailure {
		level = slog.LevelWarn
	}
	logger := c.gateway.logger
	ctx := context.Background()
	if !logger.Enabled(ctx, level) {
		return st.Err()
	}
	if gatewayFailure && !c.gateway.warnings.allow("call:"+c.engine.Name+":"+st.Code().String()) {
		return st.Err()
	}
	attrs := []slog.Attr{
		slog.String("engine", c.engine.Name),
		slog.String("method", c.method),
		slog.String("peer", peerAddress(c.ctx)),
		slog.String("backend", c.backendAddress()),
		slog.Duration("duration", time.Since(c.start)),
		slog.String("code", st.Code().String()),
		slog.Int64("messages_in", c.messagesIn.Load()),
		slog.Int64("bytes_in", c.bytesIn.Load()),
		slog.Int64("messages_out", c.messagesOut),
		slog.Int64("bytes_out", c.bytesOut),
	}
	if header, err := ssepb.ReadFunctionRequestHeader(c.incoming); err == nil && header != nil {
		attrs = append(attrs, slog.Int("function_id", int(header.GetFunctionId())))
	}
	if st.Code() != 0 {
		attrs = append(attrs, slog.String("error", st.Message()))
	}
	logger.LogAttrs(ctx, level, "call", attrs...)
	return st.Err()
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
