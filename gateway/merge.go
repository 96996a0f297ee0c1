package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// mergeOutcome is the state in which resolveMerged leaves a call to a
// merged engine.
type mergeOutcome int

const (
	mergeForward  mergeOutcome = iota // the call goes on to the member in c.engine
	mergeAnswered                     // the call ended here, with a status
	mergeMoved                        // a reload replaced the engines the call waited for: match it again
)

// resolveMerged turns a call to a merged engine into a call to one of its
// members: ExecuteFunction goes to the member that owns the function, with
// the member's own function id in its header; EvaluateScript goes to the
// merge_scripts member. GetCapabilities is answered here, from the
// members' capabilities. A call that ends here ends with st, and
// gatewayFailure is true when st reports a failure of the gateway or its
// plugins rather than a fault of the client.
func (c *call) resolveMerged(ss grpc.ServerStream, merged *routing.Engine) (st *status.Status, gatewayFailure bool, outcome mergeOutcome) {
	c.merged = merged
	switch c.info.kind {
	case methodGetCapabilities:
		// Only the members whose functions the client may see are waited
		// for, and warned about.
		if st, gatewayFailure, moved := c.awaitMembers(ss.Context(), merged, c.unknownVisibleMembers(merged)); moved {
			return nil, false, mergeMoved
		} else if st != nil {
			return st, gatewayFailure, mergeAnswered
		}
		capabilities, functions := merged.MergedCapabilities()
		c.warnMergeGaps(merged)
		st, gatewayFailure := c.answerWithCapabilities(ss, merged.Config, c.allowedFunctions(merged, capabilities.Message, functions))
		return st, gatewayFailure, mergeAnswered

	case methodExecuteFunction:
		header, err := ssepb.ReadFunctionRequestHeader(c.incoming)
		if err != nil || header == nil {
			return status.Newf(codes.InvalidArgument, "engine %s: a function call needs a valid %s header", merged.Name, ssepb.FunctionRequestHeaderKey), false, mergeAnswered
		}
		id := header.GetFunctionId()
		capabilities, functions := merged.MergedCapabilities()
		function, ok := functions[id]
		owner := merged.MemberOf(id)
		if !ok && owner != nil && owner.Capabilities() == nil {
			// The function may be that member's, which has not responded
			// yet. A client that the member would reject learns no more.
			if !c.clientAllowed(owner.Config) {
				c.rejected = true // its ids stay off the status page
				return c.admit(owner), false, mergeAnswered
			}
			if st, gatewayFailure, moved := c.awaitMembers(ss.Context(), merged, []*routing.Engine{owner}); moved {
				return nil, false, mergeMoved
			} else if st != nil {
				return st, gatewayFailure, mergeAnswered
			}
			capabilities, functions = merged.MergedCapabilities()
			function, ok = functions[id]
		}
		if !ok {
			// An id in the range of a member whose capabilities are still
			// unknown is likely that member's: its plugin's outage is what
			// an admin needs to see. Otherwise the client called an id
			// never listed.
			if owner != nil && owner.Capabilities() == nil {
				return status.Newf(codes.Unavailable, "engine %s: function id %d is one of member %s's, whose functions are not known: its plugin has not answered GetCapabilities; replicas: %s",
					merged.Name, id, owner.Name, replicaSummary(owner)), true, mergeAnswered
			}
			return status.Newf(codes.Unimplemented, "engine %s has no function id %d; it has %s",
				merged.Name, id, functionList(c.allowedFunctions(merged, capabilities.Message, functions))), false, mergeAnswered
		}

		// The member gets its own function id; everything else is Qlik's.
		incoming := c.incoming.Copy()
		ssepb.SetFunctionID(incoming, function.MemberID)
		c.incoming, c.engine, c.mergedName, c.mergedID = incoming, function.Member, function.Name, id

	case methodEvaluateScript:
		member := merged.ScriptMember()
		if member == nil {
			return status.Newf(codes.Unimplemented, "engine %s offers no scripts: merge_scripts names none of its members", merged.Name), false, mergeAnswered
		}
		c.engine = member

	default:
		return status.Newf(codes.Unimplemented, "engine %s merges other engines and serves only the SSE methods, not %s", merged.Name, c.method), false, mergeAnswered
	}
	return nil, false, mergeForward
}

// allowedFunctions returns the merged capabilities that the call's client
// may call: without the functions of members whose allow_clients leave
// the client out, and without scripts when the merge_scripts member's do.
// Such functions would only end with PermissionDenied. The others keep
// the names and ids of the whole list, which every client then shares.
func (c *call) allowedFunctions(merged *routing.Engine, message *ssepb.Capabilities, functions map[int32]routing.MergedFunction) *ssepb.Capabilities {
	allowed := func(member *routing.Engine) bool { return c.clientAllowed(member.Config) }
	scripts := message.GetAllowScript() && allowed(merged.ScriptMember())
	refused := func(function *ssepb.FunctionDefinition) bool {
		return !allowed(functions[function.GetFunctionId()].Member)
	}
	if scripts == message.GetAllowScript() && !slices.ContainsFunc(message.GetFunctions(), refused) {
		return message
	}
	visible := proto.CloneOf(message)
	visible.AllowScript = scripts
	visible.Functions = slices.DeleteFunc(visible.Functions, refused)
	return visible
}

// warnMergeGaps warns, at most once per warning interval and engine,
// about what a merged engine's list of functions leaves out: the functions
// of members whose plugins have not responded, and functions whose ids do
// not fit a member's range. A Qlik engine learns the list only when it
// starts, so one that gets an incomplete list lacks those functions until
// it restarts.
func (c *call) warnMergeGaps(merged *routing.Engine) {
	g := c.gateway
	if unknown := c.unknownVisibleMembers(merged); len(unknown) > 0 && g.warnings.allow("merge unknown members:"+merged.Name) {
		g.logger.Warn("merged engine sent its functions without those of members whose plugins have not responded; Qlik engines that got this list need a restart once the members are back",
			"engine", merged.Name, "members", engineNames(unknown), "peer", peerAddress(c.ctx))
	}
	if left := merged.LeftOutFunctions(); len(left) > 0 && g.warnings.allow("merge ids out of range:"+merged.Name) {
		g.logger.Warn("merged engine leaves out member functions whose ids are not between 0 and 999",
			"engine", merged.Name, "functions", left)
	}
}

// unknownVisibleMembers returns the members of merged whose capabilities
// are unknown and whose allow_clients let the call's client in.
func (c *call) unknownVisibleMembers(merged *routing.Engine) []*routing.Engine {
	return slices.DeleteFunc(merged.UnknownMembers(), func(member *routing.Engine) bool { return !c.clientAllowed(member.Config) })
}

// awaitMembers waits until members, of the merged engine, have their
// capabilities, as AwaitMembers does. The call counts as one of the merged
// engine's waiting calls, so that beyond its max_waiting it fails at once
// with ResourceExhausted, as calls waiting for a replica do. It returns
// nil once the wait is over, or the status that ends the call and whether
// that is the gateway's failure. It returns moved when a reload replaced
// the merged engine or a member during the wait, and an engine of the new
// table takes the call. The call has read nothing from the client yet, so
// it can be matched again.
func (c *call) awaitMembers(ctx context.Context, merged *routing.Engine, members []*routing.Engine) (st *status.Status, gatewayFailure, moved bool) {
	unknown := func(member *routing.Engine) bool { return member.Capabilities() == nil }
	if !slices.ContainsFunc(members, unknown) {
		return nil, false, false
	}
	if !c.beginWait(merged) {
		return status.Newf(codes.ResourceExhausted, "engine %s: max_waiting (%d) calls already wait for the capabilities of its members",
			merged.Name, merged.Config.MaxWaiting), true, false
	}
	defer c.endWait(merged)

	wait, cancel := context.WithCancel(ctx)
	defer cancel()
	// A stop, or the drain of a merged engine that a reload removed, ends
	// the wait with its reason. So does the start of a stop: the call has
	// reached no plugin yet, and would hold the stop for drain_timeout.
	defer context.AfterFunc(merged.Cut(), cancel)()
	defer context.AfterFunc(c.gateway.stoppingCtx, cancel)()
	var replaced atomic.Bool
	onReplaced := func() {
		if c.movable() {
			replaced.Store(true)
			cancel()
		}
	}
	for _, engine := range append([]*routing.Engine{merged}, merged.Members()...) {
		stop := engine.AfterReplaced(onReplaced)
		defer stop()
	}

	began := time.Now()
	routing.AwaitMembers(wait, c.wait, members)
	c.wait += time.Since(began)
	if replaced.Load() {
		return nil, false, true
	}
	if st := cutStatus(context.Cause(merged.Cut())); st != nil {
		return st, true, false
	}
	switch {
	case ctx.Err() == nil && c.gateway.stoppingCtx.Err() != nil && slices.ContainsFunc(members, unknown):
		// Not when the capabilities came as the stop began: the call can
		// go on.
		return status.Newf(codes.Unavailable, "engine %s: the gateway is stopping, and the call was still waiting for the capabilities of its members", merged.Name), true, false
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return status.Newf(codes.DeadlineExceeded, "the call's deadline passed while engine %s waited for the capabilities of its members", merged.Name), false, false
	case ctx.Err() != nil:
		return c.canceledStatus(), false, false
	}
	return nil, false, false
}

// functionList names a capabilities' functions with their ids, for a
// message.
func functionList(capabilities *ssepb.Capabilities) string {
	var parts []string
	for _, function := range capabilities.GetFunctions() {
		parts = append(parts, fmt.Sprintf("%s (%d)", function.GetName(), function.GetFunctionId()))
	}
	if len(parts) == 0 {
		return "no functions known yet"
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
