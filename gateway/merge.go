package gateway

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// resolveMerged turns a call to a merged engine into a call to one of its
// members: ExecuteFunction goes to the member that owns the function, with
// the member's own function id in its header; EvaluateScript goes to the
// merge_scripts member. GetCapabilities is answered here, from the
// members' capabilities. answered is true when the call ends here, with
// st.
func (c *call) resolveMerged(ss grpc.ServerStream, merged *routing.Engine) (st *status.Status, answered bool) {
	c.merged = merged
	switch c.info.kind {
	case methodGetCapabilities:
		merged.AwaitMembers(ss.Context())
		capabilities, _ := merged.MergedCapabilities()
		st, _ := c.answerWithCapabilities(ss, merged.Config, capabilities.Message)
		return st, true

	case methodExecuteFunction:
		header, err := ssepb.ReadFunctionRequestHeader(c.incoming)
		if err != nil || header == nil {
			return status.Newf(codes.InvalidArgument, "engine %s: a function call needs a valid %s header", merged.Name, ssepb.FunctionRequestHeaderKey), true
		}
		capabilities, functions := merged.MergedCapabilities()
		function, ok := functions[header.GetFunctionId()]
		if !ok {
			// The function may be a member's that has not answered yet.
			merged.AwaitMembers(ss.Context())
			capabilities, functions = merged.MergedCapabilities()
			function, ok = functions[header.GetFunctionId()]
		}
		if !ok {
			return status.Newf(codes.Unimplemented, "engine %s has no function id %d; it has %s",
				merged.Name, header.GetFunctionId(), functionList(capabilities)), true
		}

		// The member gets its own function id; everything else is Qlik's.
		incoming := c.incoming.Copy()
		header.FunctionId = function.MemberID
		if err := ssepb.SetHeader(incoming, ssepb.FunctionRequestHeaderKey, header); err != nil {
			return status.Newf(codes.InvalidArgument, "engine %s: %v", merged.Name, err), true
		}
		c.incoming, c.engine, c.mergedName = incoming, function.Member, function.Name

	case methodEvaluateScript:
		member := merged.ScriptMember()
		if member == nil {
			return status.Newf(codes.Unimplemented, "engine %s offers no scripts: merge_scripts names none of its members", merged.Name), true
		}
		c.engine = member

	default:
		return status.Newf(codes.Unimplemented, "engine %s merges other engines and serves only the SSE methods, not %s", merged.Name, c.method), true
	}
	return nil, false
}

// functionList names a capabilities' functions with their ids, for a
// message.
func functionList(capabilities *routing.Capabilities) string {
	var parts []string
	for _, function := range capabilities.Message.GetFunctions() {
		parts = append(parts, fmt.Sprintf("%s (%d)", function.GetName(), function.GetFunctionId()))
	}
	if len(parts) == 0 {
		return "no functions known yet"
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
