package gateway

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
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
	gateway *Gateway
	engine  *routing.Engine // nil for a call that no engine accepted
	merged  *routing.Engine // the merged engine Qlik called, if any
	// mergedName and mergedID are the function's name and id in the
	// merged engine, as Qlik calls it; mergedName is "" for other calls.
	mergedName string
	mergedID   int32
	ctx        context.Context // the client's call
	method     string
	start      time.Time
	listener   *listener   // the listener the call came in on
	incoming   metadata.MD // the headers for the plugin: received's, or a merged engine's rewrite
	received   metadata.MD // the client's headers as they came
	info       callInfo
	policy     config.Policy

	// Observation, used by the handler's goroutine only.
	span     trace.Span
	spanName string
	spanCtx  context.Context
	// spanAttributes gathers the server span's attributes as the call
	// learns them, for one SetAttributes when it ends: each SetAttributes
	// grows the span's own list, and small calls felt those copies.
	spanAttributes []attribute.KeyValue
	// startAttributes counts the attributes startSpan gathered, which
	// stay when a call moves to another engine.
	startAttributes int
	attempts        []*attempt
	// moved counts the attempts that ended as the call moved to the
	// engine a reload put in place, which attempts no longer holds.
	moved int
	// wait is the time spent waiting for replicas, over all attempts, or
	// for the capabilities of a merged engine's members.
	wait     time.Duration
	rejected bool // admission rejected the call, so its app id is not recorded
	audited  bool // the script call has its audit record

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

	// mu guards the request side, which the request pump and a new attempt
	// share.
	mu         sync.Mutex
	current    *attempt          // the attempt that gets the client's messages
	opening    *attempt          // a replay that waits for its stream; see openAttempt
	replayLog  []mem.BufferSlice // the client's messages, kept for a replay
	replayed   int64             // bytes in replayLog
	replayOff  bool              // no replay: disabled, outgrown, or the plugin answered
	halfClosed bool              // the client has sent its last message
}

// attempt is one try of a call on a plugin replica.
type attempt struct {
	number int
	ctx    context.Context
	cancel context.CancelCauseFunc
	stream grpc.ClientStream
	span   trace.Span
	peer   peer.Peer // filled in by gRPC when the stream ends

	// sendMu orders the sends on stream: the replay of kept messages
	// first, then the request pump's.
	sendMu sync.Mutex

	// statusReceived is set by backendEvents, on a gRPC transport
	// goroutine, when the plugin's own status arrived.
	statusReceived atomic.Bool

	// answered is set once the plugin sent a header or a message, after
	// which the call is not replayed. Handler goroutine only.
	answered bool

	// bufferSpent is set when the call's earlier waits had spent its
	// reconnect_buffer, so that the attempt went without waiting.
	bufferSpent bool
	// stopping is set when the gateway's stop had begun before the
	// attempt, so that it went without waiting.
	stopping bool
}

// attemptKey is the context key under which backend streams carry their
// attempt.
type attemptKey struct{}

// handleStream forwards one call of any method to a plugin. It is the
// listener's gRPC handler for every method, since the gateway registers no
// services.
func (l *listener) handleStream(_ any, ss grpc.ServerStream) error {
	growStack(nil)
	start := time.Now()
	ctx := ss.Context()
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ctx)
	g := l.gateway
	c := &call{
		gateway: g, listener: l, ctx: ctx, method: method, start: start, incoming: md, received: md,
		info: callInfo{kind: methodKind(method)}, firstColumns: -1, tableFields: -1,
		requestsDone: make(chan struct{}),
	}
	defer c.releaseReplayLog()
	c.startSpan(l)

	// Refuse headers over the gateway's limit here, with a status: gRPC
	// only enforces a higher ceiling (see serverOptions), because over its
	// own limit it resets the stream or closes the connection without one.
	if size := headerListSize(md); size > int(g.cfg.Limits.MaxHeaderListSize) {
		close(c.requestsDone)
		// The engine the call would reach names it in the record and the
		// metrics; the call is not counted on it, since it ends here.
		if engine, err := c.match(g.routing.Load()); err == nil {
			c.engine = engine
		}
		key, largest := largestHeader(md)
		return c.finish(status.Newf(codes.ResourceExhausted, "request headers of %d bytes, %d of them in %s, are over limits.max_header_list_size (%v)",
			size, largest, boundedText(key, maxLoggedKeyBytes), g.cfg.Limits.MaxHeaderListSize), true)
	}

	// Serve the call on the engine it matches. A call that waited for a
	// replica of an engine that a reload replaced, before any of its
	// messages was read, is matched again and served by the new engine.
	for {
		engine, untrack, st := c.route()
		if st != nil {
			c.engine, c.merged = nil, nil // after a move, no engine took the call
			close(c.requestsDone)
			return c.finish(st, true)
		}
		st, gatewayFailure, moved := c.serve(ss, engine)
		untrack()
		if !moved {
			return c.finish(st, gatewayFailure)
		}
		g.logger.Debug("moving a waiting call to the engine that replaced its own", "engine", engine.Name, "method", method)
	}
}

// route finds the engine that takes the call and counts the call on it
// until untrack. It returns the status that ends the call when no engine
// does.
func (c *call) route() (engine *routing.Engine, untrack func(), st *status.Status) {
	for {
		engine, err := c.match(c.gateway.routing.Load())
		if err != nil {
			return nil, nil, routeStatus(err)
		}
		if untrack, ok := engine.Track(); ok {
			return engine, untrack, nil
		}
		// A reload replaced the engine after the match. The new table is
		// already stored, so match again.
	}
}

// movable reports whether an engine of the current routing table takes
// the call, so that a call waiting on an engine that a reload replaced can
// move there. A call that none takes, as when the reload removed its
// engine, stays: its engine's calls finish on it, up to drain_timeout.
func (c *call) movable() bool {
	_, err := c.match(c.gateway.routing.Load())
	return err == nil
}

// match finds the engine of routes that takes the call on its listener,
// from the client's own headers.
func (c *call) match(routes *routes) (*routing.Engine, error) {
	return routes.table.Match(routing.Request{
		EngineHeader:  firstValue(c.received, routing.EngineHeader),
		Authority:     firstValue(c.received, ":authority"),
		ServerName:    tlsServerName(c.ctx),
		DefaultEngine: routes.defaults[c.listener.index],
	})
}

// serve applies the engine's rules and policy to the call and forwards it.
// It returns the status that ends the call, or moved when the engine was
// replaced while the call waited for a replica, before it read any of the
// client's messages: the call is then to be matched again.
func (c *call) serve(ss grpc.ServerStream, engine *routing.Engine) (st *status.Status, gatewayFailure, moved bool) {
	c.engine, c.merged, c.mergedName, c.incoming = engine, nil, "", c.received
	if c.span.IsRecording() {
		// A moved call describes itself again for its new engine.
		c.spanAttributes = c.spanAttributes[:c.startAttributes]
	}

	// A merged engine answers its capabilities itself and hands every
	// other call to the member whose function it calls.
	if engine.Merged() {
		c.info = describeCall(c.method, c.incoming, nil)
		if st := c.admit(engine); st != nil {
			c.rejected = true
			c.describeMergedItself()
			close(c.requestsDone)
			return st, true, false
		}
		st, gatewayFailure, outcome := c.resolveMerged(ss, engine)
		switch outcome {
		case mergeAnswered:
			c.describeMergedItself()
			close(c.requestsDone)
			return st, gatewayFailure, false
		case mergeMoved:
			return nil, false, true
		}
		engine = c.engine
		done, ok := engine.Track()
		if !ok {
			// A reload replaced the member since the merged engine named
			// it: match the call again, with the client's own headers.
			return nil, false, true
		}
		defer done()
	}

	c.describe()
	if st := c.admit(engine); st != nil {
		c.rejected = true
		close(c.requestsDone)
		return st, true, false
	}
	c.warnIfStale()
	c.policy = engine.Config.PolicyFor(c.info.function)
	c.replayOff = !c.policy.Replay

	// Qlik learns an engine's functions only when it starts: answer from
	// the engine's capabilities while no replica is up, so that a Qlik
	// engine starting during an outage still gets them.
	if c.info.kind == methodGetCapabilities && engine.Down() {
		if capabilities := engine.Capabilities(); capabilities != nil {
			close(c.requestsDone)
			st, gatewayFailure := c.answerWithCapabilities(ss, engine.Config, capabilities.Message)
			return st, gatewayFailure, false
		}
	}

	// The plugin's call runs under the tighter of the client's deadline and
	// the function's request_timeout, counted from the call's arrival.
	// Cancelling the client's call cancels this context, and with it the
	// plugin's call.
	backendCtx, cancel := context.WithCancelCause(c.ctx)
	defer cancel(nil)
	// The engine's Cut ends when a stop or a reload's drain_timeout ends
	// the calls still in flight. A call through a merged engine ends with
	// the merged engine's drain too: a reload that changes only the merged
	// engine replaces it, while its members go on.
	defer context.AfterFunc(engine.Cut(), func() { cancel(context.Cause(engine.Cut())) })()
	if merged := c.merged; merged != nil {
		defer context.AfterFunc(merged.Cut(), func() { cancel(context.Cause(merged.Cut())) })()
	}
	if timeout := c.policy.RequestTimeout; timeout > 0 {
		var cancelTimeout context.CancelFunc
		backendCtx, cancelTimeout = context.WithDeadlineCause(backendCtx, c.start.Add(timeout), &requestTimeoutError{engine: engine.Name, timeout: timeout})
		defer cancelTimeout()
	}

	// Try the call, replaying it on another replica when one fails before
	// answering anything. The request pump starts with the first attempt
	// and hands the client's messages to whichever attempt is current.
	for {
		a, st, gatewayFailure := c.openAttempt(backendCtx)
		if a == nil {
			return st, gatewayFailure, st == nil
		}
		if len(c.attempts) == 1 {
			go c.forwardRequests(ss, cancel)
		}
		st, gatewayFailure, retry := c.forwardResponses(ss, a, backendCtx)
		// gRPC copies the trailer at each read, so it is read once.
		trailer := a.stream.Trailer()
		trailersFit := true
		if over := c.trailersOverLimit(a, st, trailer); over != nil {
			st, gatewayFailure, retry, trailersFit = over, true, false, false
		}
		c.endAttempt(a, st)
		if !retry || !c.mayReplay() {
			if trailersFit {
				c.setTrailer(ss, a, trailer)
			}
			return st, gatewayFailure, false
		}
		c.gateway.logger.Debug("replaying call", "engine", engine.Name, "method", c.method,
			"backend", a.backendAddress(), "attempt", a.number, "error", st.Message())
	}
}

// openAttempt opens the plugin's stream for a new attempt, waiting for a
// ready replica up to the engine's reconnect_buffer, and hands it the
// client's messages kept so far. It returns nil and the status to end the
// call with when no stream could be opened, and nil without a status when
// the call is to move to the engine a reload put in place.
func (c *call) openAttempt(backendCtx context.Context) (*attempt, *status.Status, bool) {
	a := &attempt{number: len(c.attempts) + 1}
	c.attempts = append(c.attempts, a)
	a.ctx, a.cancel = context.WithCancelCause(backendCtx)
	outgoing, unsent := forwardedMetadata(c.incoming)
	if len(unsent) > 0 {
		c.warnUnsent(unsentRequestHeader, unsent, "")
	}
	c.startAttemptSpan(a, outgoing)
	a.ctx = metadata.NewOutgoingContext(a.ctx, outgoing)
	a.ctx = context.WithValue(a.ctx, attemptKey{}, a)

	// A replay can no longer be sent once the request has outgrown
	// replay_buffer: it ends then, rather than wait for a replica and
	// open a call on it only to abandon it.
	if a.number > 1 {
		c.mu.Lock()
		outgrown := c.replayOff
		if !outgrown {
			c.opening = a
		}
		c.mu.Unlock()
		if outgrown {
			return nil, c.endOutgrown(a), true
		}
	}
	stream, err := c.openStream(a)
	if a.number > 1 {
		c.mu.Lock()
		c.opening = nil
		c.mu.Unlock()
	}
	if err != nil && errors.Is(context.Cause(a.ctx), errReplayOutgrown) {
		return nil, c.endOutgrown(a), true
	}
	if err != nil {
		if errors.Is(err, errEngineReplaced) {
			// Nothing of the call reached a plugin, so it can move.
			c.endAttempt(a, status.Newf(codes.Unavailable, "engine %s was replaced by a configuration reload while the call waited for a replica; the call moved to the new engine", c.engine.Name))
			c.moved += len(c.attempts)
			c.attempts = c.attempts[:0]
			return nil, nil, false
		}
		if a.number == 1 {
			close(c.requestsDone) // the request pump never started
		}
		st, gatewayFailure := c.backendStatus(a, backendCtx, err)
		c.endAttempt(a, st)
		return nil, st, gatewayFailure
	}
	a.stream = stream

	// Make the attempt current, and replay what the client sent before in
	// the background: the plugin may answer each message before it reads
	// the next, so the handler must read the answers meanwhile. The
	// request pump's next send waits on sendMu until the replay is done.
	c.mu.Lock()
	if a.number > 1 && c.replayOff {
		// The request outgrew replay_buffer as this attempt's stream
		// opened. A plugin sent only the rest would process those rows
		// alone.
		c.mu.Unlock()
		a.abandon()
		return nil, c.endOutgrown(a), true
	}
	replay := make([]mem.BufferSlice, len(c.replayLog))
	for i, data := range c.replayLog {
		data.Ref() // the replay's own reference, passed on to gRPC
		replay[i] = data
	}
	halfClosed := c.halfClosed
	a.sendMu.Lock()
	c.current = a
	c.mu.Unlock()
	if len(replay) == 0 && !halfClosed {
		// A first attempt, as nearly every call: nothing to replay.
		a.sendMu.Unlock()
		return a, nil, false
	}
	go func() {
		defer a.sendMu.Unlock()
		for i, data := range replay {
			f := &frame{data: data}
			if stream.SendMsg(f) != nil {
				// The attempt ended: its status comes from its responses.
				// gRPC frees the message it took even when the send
				// fails, so only one it did not take is freed here.
				f.release()
				for _, unsent := range replay[i+1:] {
					unsent.Free()
				}
				return
			}
		}
		if halfClosed {
			_ = stream.CloseSend()
		}
	}()
	return a, nil, false
}

// openStream opens the backend stream of an attempt. While no replica is
// ready (or each is at max_in_flight), the call waits, bounded by what is
// left of reconnect_buffer, the call's deadline and max_waiting.
//
// A first attempt that waits when a reload replaces the engine (or the
// merged engine's member) ends with errEngineReplaced, so that the call
// moves to the new engine: nothing of it reached a plugin yet.
//
// NOTE: a replay keeps waiting on the old engine's replicas when a reload
// replaces it, and fails once what is left of reconnect_buffer, or the old
// engine's drain_timeout, runs out if none comes back: its kept messages
// were sized by the old engine's replay_buffer.
func (c *call) openStream(a *attempt) (grpc.ClientStream, error) {
	engine := c.engine
	wait := engine.Config.ReconnectWait()
	if wait > 0 {
		// reconnect_buffer bounds all of a call's waits together, those of
		// its replays and of the engines a reload moved it to included: an
		// admin reads it as how long Qlik may be held. Once it is spent,
		// an attempt goes as with a reconnect_buffer of 0s.
		wait = max(wait-c.wait, 0)
		a.bufferSpent = wait == 0
	}
	if wait > 0 && c.gateway.stoppingCtx.Err() != nil {
		// An attempt that starts once the stop has begun, such as a
		// replay, takes a ready replica if there is one, but does not wait
		// for one: the stop ends waits, and would race this one's pick.
		wait, a.stopping = 0, true
	}
	// A call counts among the waiting ones (max_waiting and the metric),
	// and can move to the engine a reload puts in place, only when it may
	// wait: not when it fails fast, nor when a replica is ready and takes
	// any number of calls. That spares most calls both.
	//
	// NOTE: the check comes before the pick, so a call that finds the last
	// ready replica gone just after it waits uncounted and unmovable,
	// within reconnect_buffer, and a stop does not end its wait. With
	// max_in_flight, every call is counted while its stream opens, since
	// only the pick decides whether it waits.
	mayWait := wait > 0 && !engine.PicksAtOnce()
	if mayWait {
		if !c.beginWait(engine) {
			return nil, errTooManyWaiting
		}
		defer c.endWait(engine)
	}

	options := []grpc.CallOption{grpc.ForceCodecV2(frameCodec{}), grpc.Peer(&a.peer)}
	if subtype := contentSubtype(c.incoming); subtype != "" {
		options = append(options, grpc.CallContentSubtype(subtype))
	}
	if wait > 0 {
		options = append(options, grpc.WaitForReady(true))
	}

	// The wait may not outlast reconnect_buffer, nor the engine, nor the
	// gateway. Whichever comes first, the stream opening, the timer, the
	// reload or the stop, decides: one that comes after the stream opened
	// does nothing.
	const waiting, opened, expired, replaced, stopping = 0, 1, 2, 3, 4
	var outcome atomic.Int32
	var timer *time.Timer
	if wait > 0 {
		timer = time.AfterFunc(wait, func() {
			if outcome.CompareAndSwap(waiting, expired) {
				a.cancel(errWaitExpired)
			}
		})
		if mayWait && a.number == 1 {
			onReplaced := func() {
				if c.movable() && outcome.CompareAndSwap(waiting, replaced) {
					a.cancel(errEngineReplaced)
				}
			}
			defer engine.AfterReplaced(onReplaced)()
			if c.merged != nil {
				// A reload may replace the merged engine alone, whose drain
				// would end the call.
				defer c.merged.AfterReplaced(onReplaced)()
			}
		}
		if mayWait {
			// Like the move above, only for a call that may wait: the
			// watch costs three allocations, which most calls are spared.
			defer context.AfterFunc(c.gateway.stoppingCtx, func() {
				if outcome.CompareAndSwap(waiting, stopping) {
					a.cancel(errStoppedWaiting)
				}
			})()
		}
	}
	began := time.Now()
	stream, err := engine.Pool.Conn().NewStream(a.ctx, &forwardedStreamDesc, c.method, options...)
	c.wait += time.Since(began)
	if timer != nil {
		timer.Stop()
	}
	if !outcome.CompareAndSwap(waiting, opened) {
		if stream != nil {
			// Opened as the wait ended: its end has cancelled it already.
			awaitFinished(stream)
		}
		switch outcome.Load() {
		case replaced:
			return nil, errEngineReplaced
		case stopping:
			return nil, errStoppedWaiting
		}
		return nil, errWaitExpired
	}
	return stream, err
}

// beginWait counts the call among engine's waiting calls, in max_waiting
// and in the metrics, until endWait. It returns false, and counts nothing,
// when max_waiting calls already wait.
func (c *call) beginWait(engine *routing.Engine) bool {
	if !engine.BeginWait() {
		return false
	}
	c.gateway.observer.metrics.waitingChanged(engine.Name, 1)
	return true
}

// endWait ends what beginWait counted.
func (c *call) endWait(engine *routing.Engine) {
	engine.EndWait()
	c.gateway.observer.metrics.waitingChanged(engine.Name, -1)
}

// abandon ends an attempt whose responses will not be read, and returns once
// gRPC has finished its stream.
func (a *attempt) abandon() {
	a.cancel(nil)
	awaitFinished(a.stream)
}

// awaitFinished waits until gRPC has finished a plugin's stream whose context
// has ended, and frees the messages still queued. gRPC writes the stream's
// peer and trailer while it finishes the stream on its own goroutine, and a
// failed RecvMsg returns only after that, so both are safe to read then.
func awaitFinished(stream grpc.ClientStream) {
	f := &frame{}
	for stream.RecvMsg(f) == nil {
		f.release()
	}
}

// mayReplay reports whether the call can be sent again: replay is on, the
// kept messages are complete, and attempts are left.
func (c *call) mayReplay() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.replayOff && len(c.attempts) < c.policy.MaxAttempts && c.ctx.Err() == nil
}

// forwardRequests copies the client's messages to the current attempt,
// keeping them for a replay until the plugin answers, then passes on the
// client's half-close. A client that fails or goes away stops the backend
// call with cancel, whose cause tells backendStatus why.
func (c *call) forwardRequests(ss grpc.ServerStream, cancel context.CancelCauseFunc) {
	defer close(c.requestsDone)

	// A client that opens a call and sends nothing holds a stream and a
	// goroutine: end the call after first_message_timeout.
	var firstMessage *time.Timer
	if wait := c.gateway.cfg.Limits.FirstMessageWait(); wait > 0 {
		firstMessage = time.AfterFunc(wait, func() {
			c.requestFailure.Store(status.Newf(codes.DeadlineExceeded,
				"no request message or end of input within limits.first_message_timeout (%v)", wait))
			cancel(errRequestFailed)
		})
	}
	f := &frame{}
	for {
		err := ss.RecvMsg(f)
		if firstMessage != nil {
			firstMessage.Stop()
			firstMessage = nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// The plugin sees end-of-input only now, after the last message.
				c.mu.Lock()
				c.halfClosed = true
				current := c.current
				c.mu.Unlock()
				current.sendMu.Lock()
				_ = current.stream.CloseSend() // its error, if any, surfaces from RecvMsg
				current.sendMu.Unlock()
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

		c.mu.Lock()
		c.keepForReplayLocked(f.data)
		current := c.current
		c.mu.Unlock()
		current.sendMu.Lock()
		err = current.stream.SendMsg(f)
		current.sendMu.Unlock()
		if err != nil {
			// The attempt ended: its status reaches the handler through
			// the responses, and a replay sends this message again.
			f.release()
		}
	}
}

// keepForReplayLocked keeps a reference to a request message for a replay,
// unless replay is off or the message would outgrow replay_buffer. c.mu
// must be held.
//
// NOTE: the budget counts message bytes. Each kept message also holds
// gRPC's buffer objects and a pooled buffer larger than a tiny message, so
// a request of one-row bundles near replay_buffer held five to eight times
// as much memory in a heap profile.
func (c *call) keepForReplayLocked(data mem.BufferSlice) {
	if c.replayOff {
		return
	}
	size := int64(data.Len())
	if c.replayed+size > int64(c.engine.Config.ReplayBuffer) {
		c.dropReplayLogLocked()
		return
	}
	data.Ref()
	c.replayLog = append(c.replayLog, data)
	c.replayed += size
}

// endOutgrown ends a replay whose request outgrew replay_buffer before it
// could be sent, and returns the status that ends the call.
func (c *call) endOutgrown(a *attempt) *status.Status {
	st := status.Newf(codes.Unavailable, "engine %s: attempt %d failed, and the call cannot be sent again: its request outgrew replay_buffer (%v) before it could be",
		c.engine.Name, a.number-1, c.engine.Config.ReplayBuffer)
	c.endAttempt(a, st)
	return st
}

// dropReplayLogLocked turns replay off for the rest of the call and frees
// the kept messages, and ends the wait of a replay that can no longer be
// sent. c.mu must be held.
func (c *call) dropReplayLogLocked() {
	if c.opening != nil {
		c.opening.cancel(errReplayOutgrown)
	}
	c.replayOff = true
	for _, data := range c.replayLog {
		data.Free()
	}
	c.replayLog, c.replayed = nil, 0
}

func (c *call) releaseReplayLog() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropReplayLogLocked()
}

// answered marks an attempt that the plugin answered: from then on the
// call is not replayed, since the client has seen part of the answer.
func (c *call) answered(a *attempt) {
	if a.answered {
		return
	}
	a.answered = true
	c.mu.Lock()
	c.dropReplayLogLocked()
	c.mu.Unlock()
}

// forwardResponses copies the plugin's response headers and messages to
// the client, and returns the status to end the attempt with, whether the
// gateway failed it, and whether it may be replayed: it failed before the
// plugin answered anything, on the connection or with Unavailable.
// Headers go out as soon as the plugin sends them, not with the first
// message: a client may wait for them before it sends more.
func (c *call) forwardResponses(ss grpc.ServerStream, a *attempt, backendCtx context.Context) (st *status.Status, gatewayFailure, retry bool) {
	// A nil header means the plugin sent none: it answered trailers-only,
	// or the attempt failed. Then the client gets no header block either.
	if header, _ := a.stream.Header(); header != nil {
		c.answered(a)
		if size, limit := headerListSize(header), c.gateway.cfg.Limits.MaxHeaderListSize; size > int(limit) {
			a.abandon()
			return status.Newf(codes.ResourceExhausted, "engine %s: plugin %s sent response headers of %d bytes, over limits.max_header_list_size (%v)",
				c.engine.Name, a.backendAddress(), size, limit), true, false
		}
		c.noteTableDescription(header)
		header, unsent := forwardedInPlace(header)
		if len(unsent) > 0 {
			c.warnUnsent(unsentResponseHeader, unsent, streamPeer(a.stream))
		}
		if err := ss.SendHeader(header); err != nil {
			a.abandon()
			return c.clientSendStatus(err), false, false
		}
	}

	f := &frame{}
	for {
		err := a.stream.RecvMsg(f)
		if errors.Is(err, io.EOF) {
			return nil, false, false
		}
		if err != nil {
			st, gatewayFailure := c.backendStatus(a, backendCtx, err)
			retry := !a.answered && st.Code() == codes.Unavailable && backendCtx.Err() == nil
			return st, gatewayFailure, retry
		}
		c.answered(a)
		c.messagesOut++
		c.noteResponse(f) // may rewrite GetCapabilities' response
		c.bytesOut += int64(f.len())
		if err := ss.SendMsg(f); err != nil {
			f.release()
			a.abandon()
			return c.clientSendStatus(err), false, false
		}
	}
}

// trailersOverLimit returns the status that ends a call whose plugin
// ended it with a trailer block, its status message included, over
// limits.max_header_list_size, or nil. Such trailers are not forwarded:
// Qlik's gRPC would refuse them too, as it refuses a long traceback in a
// status message. st is nil for OK. The size counts the message without
// the percent-encoding that its non-ASCII bytes get on the wire.
func (c *call) trailersOverLimit(a *attempt, st *status.Status, trailer metadata.MD) *status.Status {
	if st != nil && !a.statusReceived.Load() {
		return nil // the gateway's own status, with no trailers of the plugin
	}
	size := headerListSize(trailer) + len("grpc-status") + 1 + hpackFieldOverhead
	if message := st.Message(); message != "" {
		size += len("grpc-message") + len(message) + hpackFieldOverhead
	}
	limit := c.gateway.cfg.Limits.MaxHeaderListSize
	if size <= int(limit) {
		return nil
	}
	return status.Newf(codes.ResourceExhausted, "engine %s: plugin %s ended the call with %v and trailers of %d bytes, over limits.max_header_list_size (%v); its message began: %s",
		c.engine.Name, a.backendAddress(), st.Code(), size, limit, boundedText(st.Message(), maxQuotedMessage))
}

// maxQuotedMessage bounds the part of a plugin's status message that the
// status of trailers over the limit quotes.
const maxQuotedMessage = 200

// finish records the call and returns its status as an error.
func (c *call) finish(st *status.Status, gatewayFailure bool) error {
	c.end(st, gatewayFailure)
	return st.Err()
}

// answerWithCapabilities answers GetCapabilities itself, with capabilities
// the gateway knows: those learnt from the engine's replicas while none is
// up, so that a Qlik engine starting during an outage still gets them, or
// those of a merged engine.
func (c *call) answerWithCapabilities(ss grpc.ServerStream, engine *config.Engine, message *ssepb.Capabilities) (*status.Status, bool) {
	if engine.Scripts == config.ScriptsDeny && message.GetAllowScript() {
		message = proto.CloneOf(message)
		message.AllowScript = false
	}
	encoded, err := proto.Marshal(message)
	if err != nil {
		return status.Newf(codes.Internal, "engine %s: encoding capabilities: %v", c.engine.Name, err), true
	}
	if c.span.IsRecording() {
		c.spanAttributes = append(c.spanAttributes, attrFromCache.Bool(true))
	}
	f := &frame{data: mem.BufferSlice{mem.SliceBuffer(encoded)}}
	c.messagesOut, c.bytesOut = 1, int64(len(encoded))
	if err := ss.SendMsg(f); err != nil {
		return c.clientSendStatus(err), false
	}
	return status.New(codes.OK, ""), false
}

// warnIfStale warns, rate-limited, when a Qlik engine calls a function id
// that the plugin's capabilities do not list: that Qlik engine learnt an
// older function list and needs a restart. The call is forwarded anyway.
func (c *call) warnIfStale() {
	if !c.info.hasID || c.info.function != "" || c.engine.Capabilities() == nil {
		return
	}
	peer := peerAddress(c.ctx)
	if !c.gateway.warnings.allow("stale:" + c.engine.Name + ":" + peerHost(peer)) {
		return
	}
	c.gateway.logger.Warn("a Qlik engine calls a function id the plugin does not list; restart that Qlik engine so that it loads the current functions",
		"engine", c.engine.Name, "function_id", c.info.functionID, "peer", peer, "client", clientIdentity(c.ctx))
}

// setTrailer passes the plugin's trailers on to the client. gRPC's
// ServerStream.SetTrailer checks them as it checks headers, but sends them
// all the same and only logs an error for each one it rejects, outside the
// gateway's log and without a limit (grpc-go v1.85). The package-level
// grpc.SetTrailer sends them without that check, so trailers reach the
// client as the plugin sent them, as a direct call gets them. Should gRPC
// reject them there too, those it cannot send are left out with a
// warning, as response headers are.
func (c *call) setTrailer(ss grpc.ServerStream, a *attempt, trailer metadata.MD) {
	trailer = hopFiltered(trailer)
	if grpc.SetTrailer(ss.Context(), trailer) == nil || ss.Context().Err() != nil {
		return // sent, or the client's side has ended and nothing goes out
	}
	trailer, unsent := forwardedInPlace(trailer)
	if len(unsent) > 0 {
		c.warnUnsent(unsentResponseTrailer, unsent, a.backendAddress())
	}
	ss.SetTrailer(trailer)
}

// Directions of a header that gRPC cannot send, as warnUnsent names them.
const (
	unsentRequestHeader   = "request header"
	unsentResponseHeader  = "response header"
	unsentResponseTrailer = "response trailer"
)

// unsentWarning is the message of warnUnsent's records. It states grpc-go
// v1.85's rule, which grpcSendable applies.
const unsentWarning = "left out headers that gRPC cannot send and went on with the call: gRPC allows only 0-9, a-z, '-', '_' and '.' in a key, and only printable ASCII in the values of a key that does not end in -bin, so the sender should send other bytes under a key ending in -bin"

// maxLoggedKeyBytes bounds a header key in a warning and in the rate
// limiter's keys: a raw client may send keys of many kilobytes.
const maxLoggedKeyBytes = 256

// warnUnsent warns that the call went on without the headers or trailers
// named by keys, which gRPC cannot send (see grpcSendable). One record
// lists the keys of one header block, and the limiter lets each key of an
// engine and direction through once per interval. The record names the
// keys, never their values, which may hold personal data. backend is the
// plugin replica for a response, and "" for a request.
func (c *call) warnUnsent(direction string, keys []string, backend string) {
	var allowed []string
	for _, key := range keys {
		key = boundedText(key, maxLoggedKeyBytes)
		if c.gateway.unsentWarnings.allow(c.engine.Name + ":" + direction + ":" + key) {
			allowed = append(allowed, key)
		}
	}
	if len(allowed) == 0 {
		return
	}
	slices.Sort(allowed)
	attributes := []any{"engine", c.engine.Name, "method", boundedText(c.method, maxMethodBytes), "direction", direction, "keys", allowed}
	if backend != "" {
		attributes = append(attributes, "backend", backend)
	} else {
		attributes = append(attributes, "peer", peerAddress(c.ctx))
	}
	c.gateway.logger.Warn(unsentWarning, attributes...)
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
// functions from a GetCapabilities answer passing through when the probes
// have not yet. It runs before the message is sent on, which hands its
// buffers over to gRPC.
func (c *call) noteResponse(f *frame) {
	if c.info.kind == methodGetCapabilities {
		if c.engine.Config.Scripts == config.ScriptsDeny {
			withoutScripts(f)
		}
		if c.engine.Capabilities() == nil {
			capabilities := &ssepb.Capabilities{}
			if proto.Unmarshal(f.data.Materialize(), capabilities) == nil {
				c.engine.SetCapabilities(routing.NewCapabilities(capabilities, time.Now()))
			}
		}
		return
	}
	shape, ok := countRows(f.data)
	if !ok {
		c.rowsUncounted.Store(true)
		return
	}
	c.rowsOut += int64(shape.rows)
	if c.firstColumns < 0 {
		c.firstColumns = shape.columns
	}
}

// rowsCounted reports whether every message was valid protobuf, so that
// the row counts are exact.
func (c *call) rowsCounted() bool {
	return !c.rowsUncounted.Load()
}

// backendAddress returns the address of the plugin replica of the call's
// last attempt, or "none" before one was picked.
func (c *call) backendAddress() string {
	if len(c.attempts) == 0 {
		return "none"
	}
	return c.attempts[len(c.attempts)-1].backendAddress()
}

// backendAddress returns the replica that served the attempt, or "none".
func (a *attempt) backendAddress() string {
	if a.peer.Addr == nil {
		return "none"
	}
	return a.peer.Addr.String()
}

// streamPeer returns the plugin replica of a backend stream that has
// received its headers, or "none". Unlike attempt.peer, which gRPC fills in
// when the stream ends, it can be read while the stream runs.
func streamPeer(stream grpc.ClientStream) string {
	if p, ok := peer.FromContext(stream.Context()); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "none"
}

// peerAddress returns the client's address, for logs.
func peerAddress(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "unknown"
}

// peerHost returns the host part of a peer address.
func peerHost(address string) string {
	if host, _, ok := splitHostPort(address); ok {
		return host
	}
	return address
}

// clientIdentity names the client by its certificate's common name, for
// logs; "plaintext" without TLS.
func clientIdentity(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "unknown"
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "plaintext"
	}
	if certificates := info.State.PeerCertificates; len(certificates) > 0 {
		return "CN=" + certificates[0].Subject.CommonName
	}
	return "TLS without certificate"
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
