package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/routing"
)

// BUG(ssegw): The plugin's status reaches the client as grpc-go reads and
// writes it (v1.85), which differs from the plugin's own in three cases.
// A status with grpc-status-details-bin is taken from those details: the
// client gets the details' message in place of grpc-message, and Internal
// when the details' code differs from grpc-status. A message with status
// OK is dropped, since grpc-go reports OK as the end of the stream without
// it. And trailers, the status message included, may be over the header
// limit the client announces: 8 or 16 KiB by default in gRPC's C core, by
// version, so in Qlik. grpc-go's server then resets the stream with
// INTERNAL_ERROR instead of sending them, where a direct call would end
// with the client's own RESOURCE_EXHAUSTED. The gateway's log and metrics
// record the plugin's status, since grpc-go does not tell the handler.
// Qlik shows only the code and message, and SSE plugins rarely send
// details or long messages, but a proxy that copied the trailer block as
// sent would pass them unchanged.

// errWaitExpired is the cause of an attempt whose wait for a ready
// replica outlasted reconnect_buffer.
var errWaitExpired = errors.New("no replica became ready within reconnect_buffer")

// errEngineReplaced is the cause of a first attempt that was waiting for a
// replica when a reload replaced the engine. The call then moves to the
// new engine.
var errEngineReplaced = errors.New("the engine was replaced by a configuration reload")

// errReplayOutgrown is the cause of a replay that waited for its stream
// while the request outgrew replay_buffer.
var errReplayOutgrown = errors.New("the request outgrew replay_buffer")

// errStoppedWaiting is the cause of an attempt that was waiting for a
// replica when the gateway began to stop.
var errStoppedWaiting = errors.New("the gateway is stopping")

// errTooManyWaiting is returned for a call that finds max_waiting calls
// already waiting for a replica.
var errTooManyWaiting = errors.New("too many calls wait for a replica")

// errRequestFailed is the cause of a call stopped because receiving from
// the client failed; the call's requestFailure says how.
var errRequestFailed = errors.New("receiving the request failed")

// stoppedError is the cause of a call that Shutdown ended before it was
// over. Its reason is why the gateway did not wait longer.
type stoppedError struct{ reason error }

func (e *stoppedError) Error() string {
	return "the gateway stopped before the call ended: " + e.why()
}

// why describes the reason, also when it is a bare context error.
func (e *stoppedError) why() string {
	switch {
	case errors.Is(e.reason, context.DeadlineExceeded):
		return "its drain time passed"
	case e.reason != nil && !errors.Is(e.reason, context.Canceled):
		return e.reason.Error()
	}
	return "it was told to stop at once"
}

// grpcStatus is the status of a call that Shutdown ended.
func (e *stoppedError) grpcStatus() *status.Status {
	return status.New(codes.Unavailable, e.Error())
}

// drainedError is the cause of a call on an engine that a reload replaced
// or removed, when the engine's drain_timeout passed before the call
// ended.
type drainedError struct {
	engine       string
	removed      bool
	drainTimeout time.Duration
}

func (e *drainedError) Error() string {
	change := "replaced"
	if e.removed {
		change = "removed"
	}
	return fmt.Sprintf("engine %s was %s by a configuration reload, and drain_timeout (%v) passed before the call ended", e.engine, change, e.drainTimeout)
}

// cutStatus returns the status of a call that a stop or a reload's drain
// ended with cause, or nil when cause is neither.
func cutStatus(cause error) *status.Status {
	var stopped *stoppedError
	var drained *drainedError
	switch {
	case errors.As(cause, &stopped):
		return stopped.grpcStatus()
	case errors.As(cause, &drained):
		return status.New(codes.Unavailable, drained.Error())
	}
	return nil
}

// requestTimeoutError is the cause of a call cut by its engine's
// request_timeout.
type requestTimeoutError struct {
	engine  string
	timeout time.Duration
}

func (e *requestTimeoutError) Error() string {
	return fmt.Sprintf("engine %s: request_timeout of %v exceeded", e.engine, e.timeout)
}

// requestTimedOut returns the status of a call that its plugin ended with
// DeadlineExceeded because the engine's request_timeout passed, or nil.
// When the deadline the gateway gave it passes, a plugin on gRPC's C core,
// as one in Python is, sends that status with the message "Deadline
// Exceeded", where grpc-go resets the stream. Passed on as it is, it would
// not tell Qlik's admin which limit ended the call. The plugin counts the
// deadline from its arrival, yet with grpcio 1.51 its status came up to
// 0.2 ms before the gateway's own deadline, so a status within
// maxDeadlineSlack of that deadline counts as it. A plugin that gives up
// sooner for a reason of its own keeps its status.
func requestTimedOut(ctx context.Context, received *status.Status) *status.Status {
	if received.Code() != codes.DeadlineExceeded {
		return nil
	}
	if deadline, ok := ctx.Deadline(); !ok || time.Until(deadline) > maxDeadlineSlack {
		return nil
	}
	<-ctx.Done()
	var timeout *requestTimeoutError
	if errors.As(context.Cause(ctx), &timeout) {
		return status.New(codes.DeadlineExceeded, timeout.Error())
	}
	return nil
}

// routeStatus maps a routing failure to the status Qlik receives. An
// engine named explicitly but not configured is NotFound; a call that
// nothing routes is Unimplemented, which is also what a plugin answers for a
// service it does not have.
func routeStatus(err error) *status.Status {
	if errors.Is(err, routing.ErrUnknownEngine) {
		return status.New(codes.NotFound, err.Error())
	}
	return status.New(codes.Unimplemented, err.Error())
}

// backendStatus returns the status that ends the client's call after the
// backend stream failed with err. The plugin's own status passes
// untouched. Every other failure is the gateway's own, and gets a code and
// a message that say what happened in the gateway's terms, among them:
//
//   - Canceled when the client cancelled or disconnected;
//   - Unavailable when the gateway, stopping, ended the calls still in
//     flight, or when no plugin could be reached or the connection to it
//     broke, naming the engine;
//   - DeadlineExceeded when the client's deadline or the engine's
//     request_timeout passed;
//   - ResourceExhausted when a message was over limits.max_message_size.
//
// The bool is true for the gateway's own failures, which are logged as
// warnings.
func (c *call) backendStatus(a *attempt, ctx context.Context, err error) (*status.Status, bool) {
	received := status.Convert(err)
	if a.statusReceived.Load() && !overReceiveLimit(received) {
		if st := requestTimedOut(ctx, received); st != nil {
			return st, true
		}
		// Without details: grpc-status-details-bin travels in the trailers
		// exactly as the plugin sent it.
		return status.New(received.Code(), received.Message()), false
	}

	// The client's side ended the call. The request pump ends promptly
	// once the client's context is done, and has then recorded why.
	cause := context.Cause(ctx)
	if deadline, ok := ctx.Deadline(); ok && cause == nil && !time.Now().Before(deadline) {
		// The plugin got the same deadline, rounded up, and gRPC resets
		// its stream when it passes: that reset can arrive before the
		// gateway's own timer fires. Wait for the timer, so that the
		// call ends with DeadlineExceeded and is not replayed.
		<-ctx.Done()
		cause = context.Cause(ctx)
	}
	switch {
	case errors.Is(cause, errRequestFailed):
		// Recorded before the call was stopped. The request pump may still
		// wait for a message from a silent client: ending the handler
		// ends that wait.
		if st := c.requestFailure.Load(); st != nil {
			return st, true
		}
	case errors.Is(cause, context.Canceled):
		<-c.requestsDone
		if st := c.requestFailure.Load(); st != nil {
			return st, true
		}
	}
	var timeout *requestTimeoutError
	if st := cutStatus(cause); st != nil {
		return st, true
	}
	switch {
	case errors.Is(err, errTooManyWaiting):
		return status.Newf(codes.ResourceExhausted, "engine %s: max_waiting (%d) calls already wait for a ready replica",
			c.engine.Name, c.engine.Config.MaxWaiting), true
	case errors.Is(err, errStoppedWaiting), a.stopping && a.peer.Addr == nil && status.Code(err) == codes.Unavailable:
		waitedFor := "a ready replica"
		if limit := c.engine.Config.MaxInFlight; limit > 0 {
			waitedFor = fmt.Sprintf("a ready replica with fewer than max_in_flight (%d) calls", limit)
		}
		state := "the call was still waiting for"
		if a.stopping {
			state = "the call's next attempt found no"
		}
		return c.replicasStatus(codes.Unavailable, "the gateway is stopping, and "+state+" "+waitedFor), true
	case errors.Is(err, errWaitExpired) || errors.Is(context.Cause(a.ctx), errWaitExpired):
		return c.replicasStatus(codes.Unavailable, fmt.Sprintf("no replica ready after waiting %v (reconnect_buffer)", c.engine.Config.ReconnectWait())), true
	case a.bufferSpent && a.peer.Addr == nil && status.Code(err) == codes.Unavailable && received.Message() != routing.ErrEveryReplicaFull.Error():
		// The attempt went without waiting, since the call's earlier
		// waits had spent reconnect_buffer.
		return c.replicasStatus(codes.Unavailable, fmt.Sprintf("no replica ready, and the call had spent its reconnect_buffer (%v) waiting before", c.engine.Config.ReconnectWait())), true
	case errors.As(cause, &timeout):
		return status.New(codes.DeadlineExceeded, timeout.Error()), true
	case errors.Is(cause, context.DeadlineExceeded):
		return c.deadlineStatus(a)
	case errors.Is(cause, context.Canceled):
		if st := c.canceledStatus(); st.Code() != codes.DeadlineExceeded {
			return st, false
		}
		return c.deadlineStatus(a)
	}

	// gRPC checks the request headers against the plugin's advertised
	// limit before sending, and fails with Internal and this text (as of
	// grpc-go v1.85); it is the request's size, not the plugin's health.
	if strings.Contains(received.Message(), "header list size to send violates") {
		return status.Newf(codes.ResourceExhausted, "engine %s: the request headers are over the plugin's limit: %s",
			c.engine.Name, received.Message()), true
	}
	if reset, ok := streamReset(received); ok && reset != http2.ErrCodeRefusedStream && a.peer.Addr != nil {
		// The plugin read the call and ended its stream itself: it
		// cancelled the call, or its gRPC could not send the answer. It
		// may have run the function, so the call is not replayed, and it
		// keeps the code gRPC gives the reset. REFUSED_STREAM says that
		// the plugin did not start the call, which a replay may retry.
		message := fmt.Sprintf("engine %s: plugin %s reset the call's stream with %v", c.engine.Name, a.peer.Addr, reset)
		if reset == http2.ErrCodeInternal {
			message += fmt.Sprintf("; gRPC servers do so when the response headers or trailers are over the %d bytes the gateway accepts from plugins before its own check of limits.max_header_list_size", c.gateway.cfg.Limits.HeaderListCeiling())
		}
		return status.New(received.Code(), message), reset != http2.ErrCodeCancel
	}
	if received.Message() == "peer header list size exceeded limit" && a.peer.Addr != nil {
		// gRPC's own text for a header block over HeaderListCeiling (as of
		// grpc-go v1.85). The plugin has read the call, so it is not
		// replayed.
		return status.Newf(codes.ResourceExhausted, "engine %s: plugin %s sent a header block over %d bytes, which gRPC refuses; the gateway accepts limits.max_header_list_size (%v)",
			c.engine.Name, a.peer.Addr, c.gateway.cfg.Limits.HeaderListCeiling(), c.gateway.cfg.Limits.MaxHeaderListSize), true
	}
	if received.Code() == codes.ResourceExhausted {
		return status.Newf(codes.ResourceExhausted, "engine %s: the plugin sent a message over limits.max_message_size (%v): %s",
			c.engine.Name, c.gateway.cfg.Limits.MaxMessageSize, received.Message()), true
	}
	if a.peer.Addr != nil {
		return status.New(codes.Unavailable, withCertificateHint(fmt.Sprintf("engine %s: plugin %s: %s", c.engine.Name, a.peer.Addr, received.Message()))), true
	}
	// No replica took the call, and the replicas' states give the reason.
	// gRPC's balancer reports this case as "no children to pick from"
	// (grpc-go v1.85), which adds nothing for an admin, while its other
	// texts carry a cause.
	switch message := received.Message(); message {
	case "no children to pick from":
		return c.replicasStatus(codes.Unavailable, "no plugin reachable"), true
	case routing.ErrEveryReplicaFull.Error():
		waiting := "reconnect_buffer is 0s"
		if a.bufferSpent {
			waiting = fmt.Sprintf("the call had spent its reconnect_buffer (%v) waiting before", c.engine.Config.ReconnectWait())
		}
		return c.replicasStatus(codes.Unavailable, fmt.Sprintf("every ready replica has max_in_flight (%d) calls open, and %s", c.engine.Config.MaxInFlight, waiting)), true
	default:
		return c.replicasStatus(codes.Unavailable, "no plugin reachable: "+message), true
	}
}

// resetText starts the message of a call that the plugin's RST_STREAM
// ended, followed by the HTTP/2 error code's name (grpc-go v1.85).
const resetText = "stream terminated by RST_STREAM with error code: "

// streamReset returns the HTTP/2 error code of a status that reports a
// stream reset by the plugin, and false for any other status.
func streamReset(st *status.Status) (http2.ErrCode, bool) {
	name, ok := strings.CutPrefix(st.Message(), resetText)
	if !ok {
		return 0, false
	}
	for code := http2.ErrCodeNo; code <= http2.ErrCodeHTTP11Required; code++ {
		if code.String() == name {
			return code, true
		}
	}
	return 0, false
}

// withCertificateHint adds what to do to a message that reports a plugin
// certificate without the IP address the gateway dials among its IP
// subjectAltNames. Go's verifier matches an IP address only against those,
// and certificates made by Qlik's usual script list IP addresses as DNS
// names.
func withCertificateHint(message string) string {
	if !strings.Contains(message, "doesn't contain any IP SANs") {
		return message
	}
	return message + "; the plugin's certificate has no IP address as an IP subjectAltName (certificates made by Qlik's usual script list them as DNS names): set tls.server_name of the backend to a DNS name of the certificate"
}

// overReceiveLimit reports whether st is gRPC's own refusal of a message
// over limits.max_message_size (grpc-go v1.85 words it so). A reply that
// fits in the stream's window arrives with the plugin's status right
// behind it, yet the failure is the gateway's limit, not the plugin's
// status.
func overReceiveLimit(st *status.Status) bool {
	return st.Code() == codes.ResourceExhausted && strings.HasPrefix(st.Message(), "grpc: received message ") && strings.Contains(st.Message(), " larger than max (")
}

// replicasStatus returns a status of code for a call that no replica of
// its engine took, with what happened and the replicas' states, which say
// why none was ready.
func (c *call) replicasStatus(code codes.Code, what string) *status.Status {
	return status.New(code, withCertificateHint(fmt.Sprintf("engine %s: %s; replicas: %s", c.engine.Name, what, replicaSummary(c.engine))))
}

// replicaSummary describes an engine's replicas for an error message, such
// as "127.0.0.1:50055 failing (connection refused)".
func replicaSummary(engine *routing.Engine) string {
	// One read: DNS discovery may swap the list in between.
	replicas := engine.Replicas()
	parts := make([]string, len(replicas))
	for i, replica := range replicas {
		status := replica.Status()
		parts[i] = status.Address + " " + string(status.State)
		if status.LastError != "" {
			parts[i] += " (" + status.LastError + ")"
		}
	}
	return strings.Join(parts, "; ")
}

// clientSendStatus returns the status for a call whose response could not
// be sent to the client.
func (c *call) clientSendStatus(err error) *status.Status {
	if c.ctx.Err() != nil {
		return c.canceledStatus()
	}
	return status.Convert(err)
}

// deadlineStatus returns the status of an attempt that the client's
// deadline ended. When no replica took it, the replicas' states say why
// none was ready, which is the gateway's failure to report.
func (c *call) deadlineStatus(a *attempt) (*status.Status, bool) {
	if a.peer.Addr == nil {
		return c.replicasStatus(codes.DeadlineExceeded, "the call's deadline passed while it waited for a ready replica"), true
	}
	return status.New(codes.DeadlineExceeded, deadlinePassed), false
}

// canceledStatus returns the status of a call whose context the client's
// side ended: the client, unless the gateway was stopping and ended the
// calls still in flight.
func (c *call) canceledStatus() *status.Status {
	var stopped *stoppedError
	if errors.As(context.Cause(c.gateway.cutCtx), &stopped) {
		return stopped.grpcStatus()
	}
	// A client resets its stream when its deadline passes, and gRPC
	// reports that as Canceled. The reset arrives at about the moment the
	// gateway's copy of the deadline, counted from the headers' arrival,
	// fires, so either may come first. A reset in the last tenth of the
	// call's time (at most the last 100 ms) counts as the deadline
	// passing. An earlier one is the client's own cancel.
	//
	// NOTE: the headers' arrival lags the client's clock by their transit
	// and the gateway's scheduling. On a loaded machine that lag can pass
	// the tenth of a short call, and such a call, of 200 ms say, is then
	// recorded as Canceled (seen once in 20 calls under a CI run).
	if deadline, ok := c.ctx.Deadline(); ok {
		slack := min(deadline.Sub(c.start)/10, maxDeadlineSlack)
		if time.Until(deadline) < slack {
			return status.New(codes.DeadlineExceeded, deadlinePassed)
		}
	}
	return status.New(codes.Canceled, "the client cancelled the call")
}

// maxDeadlineSlack bounds how long before the client's deadline a cancel
// from its side counts as the deadline passing: more than the difference
// in transit time of the client's headers and of its reset.
const maxDeadlineSlack = 100 * time.Millisecond

// deadlinePassed is the message of a call that the client's deadline
// ended.
const deadlinePassed = "the call's deadline passed before the plugin answered"
