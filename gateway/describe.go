package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// Method kinds: the SSE methods by their short name, and "other" for any
// method the gateway forwards without knowing it. Metrics use these, never
// the raw method, whose values a client could make up.
const (
	methodGetCapabilities = "GetCapabilities"
	methodExecuteFunction = "ExecuteFunction"
	methodEvaluateScript  = "EvaluateScript"
	methodOther           = "other"
)

// methodKind returns the short name of an SSE method, or methodOther.
func methodKind(fullMethod string) string {
	switch fullMethod {
	case ssepb.Connector_GetCapabilities_FullMethodName:
		return methodGetCapabilities
	case ssepb.Connector_ExecuteFunction_FullMethodName:
		return methodExecuteFunction
	case ssepb.Connector_EvaluateScript_FullMethodName:
		return methodEvaluateScript
	}
	return methodOther
}

// callInfo is what the gateway learns about a call from Qlik's headers and
// the engine's capabilities, decoded once per call.
type callInfo struct {
	// kind is one of the method kinds above.
	kind string

	// function is the Qlik function name: from the capabilities for
	// ExecuteFunction, the script function for EvaluateScript,
	// GetCapabilities for that method. "" when unknown.
	function     string
	functionID   int32
	hasID        bool
	functionType ssepb.FunctionType
	hasType      bool

	appID, userID string
	cardinality   int64
	hasCommon     bool

	scriptLength int
	scriptSHA256 string
	scriptText   string

	// malformed names a qlik-*-bin header that could not be decoded, and
	// malformedDetail says why; such a call is refused.
	malformed       string
	malformedDetail string
}

// describeCall decodes Qlik's headers of a call to engine (nil before
// routing).
func describeCall(fullMethod string, md metadata.MD, engine *routing.Engine) callInfo {
	info := callInfo{kind: methodKind(fullMethod)}

	if common, err := ssepb.ReadCommonRequestHeader(md); err != nil {
		info.malformed, info.malformedDetail = ssepb.CommonRequestHeaderKey, err.Error()
	} else if common != nil {
		info.appID, info.userID, info.cardinality, info.hasCommon = common.GetAppId(), common.GetUserId(), common.GetCardinality(), true
	}

	switch info.kind {
	case methodGetCapabilities:
		info.function = methodGetCapabilities
	case methodExecuteFunction:
		header, err := ssepb.ReadFunctionRequestHeader(md)
		if err != nil {
			info.malformed, info.malformedDetail = ssepb.FunctionRequestHeaderKey, err.Error()
			break
		}
		if header == nil {
			break
		}
		info.functionID, info.hasID = header.GetFunctionId(), true
		if engine == nil {
			break
		}
		if definition := engine.Capabilities().Function(info.functionID); definition != nil {
			info.function = definition.GetName()
			info.functionType, info.hasType = definition.GetFunctionType(), true
		}
	case methodEvaluateScript:
		header, err := ssepb.ReadScriptRequestHeader(md)
		if err != nil {
			info.malformed, info.malformedDetail = ssepb.ScriptRequestHeaderKey, err.Error()
			break
		}
		if header == nil {
			break
		}
		info.function = ssepb.ScriptFunctionName(header)
		info.functionType, info.hasType = header.GetFunctionType(), true
		sum := sha256.Sum256([]byte(header.GetScript()))
		info.scriptLength, info.scriptSHA256 = len(header.GetScript()), hex.EncodeToString(sum[:])
		info.scriptText = header.GetScript()
	}
	return info
}

// spanName returns the name of a call's server span: <Engine>.<Function>,
// or the gRPC method (service/method, as OpenTelemetry names RPC spans)
// when the engine or the function is unknown. A method outside the SSE
// service is named "other", as in metrics: the path is the client's, and
// tracing backends build metrics from span names.
func (info *callInfo) spanName(engine, fullMethod string) string {
	method := strings.TrimPrefix(fullMethod, "/")
	switch {
	case info.kind == methodOther && engine == "":
		return methodOther
	case info.kind == methodOther:
		return engine + "." + methodOther
	case engine == "":
		return method
	case info.function != "":
		return engine + "." + info.function
	case info.hasID:
		return fmt.Sprintf("%s.%s", engine, methodExecuteFunction)
	}
	return engine + "." + method[strings.LastIndexByte(method, '/')+1:]
}

// metricFunction returns the function attribute of a call's metrics: a
// name from the capabilities or a script function name, or "unknown". Its
// values are bounded by the plugins' capabilities.
func (info *callInfo) metricFunction() string {
	if info.function == "" {
		return "unknown"
	}
	return info.function
}

// redact returns id as the redaction mode allows, and whether to record it
// at all.
func redact(id, mode string) (string, bool) {
	switch mode {
	case config.RedactDrop:
		return "", false
	case config.RedactHash:
		if id == "" {
			return "", true // the hash of nothing would look like an id
		}
		sum := sha256.Sum256([]byte(id))
		return hex.EncodeToString(sum[:8]), true
	}
	return id, true
}
