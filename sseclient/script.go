package sseclient

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ssegw/ssegw/ssepb"
)

// ErrUnknownScriptFunction is returned, wrapped, by ParseScriptFunction
// for a name that is not one of Qlik's eight script functions.
var ErrUnknownScriptFunction = errors.New("unknown script function")

// ScriptFunctionNames are the script functions that Qlik offers for an
// endpoint whose capabilities allow scripts. Each sends an EvaluateScript
// call.
var ScriptFunctionNames = []string{
	"ScriptEval", "ScriptEvalStr", "ScriptAggr", "ScriptAggrStr",
	"ScriptEvalEx", "ScriptEvalExStr", "ScriptAggrEx", "ScriptAggrExStr",
}

// ScriptFunction describes the EvaluateScript call of one script function.
type ScriptFunction struct {
	// Name is one of ScriptFunctionNames.
	Name string

	// FunctionType is AGGREGATION for the Aggr functions, else SCALAR. The
	// Eval functions arrive as SCALAR or TENSOR, so a caller may set
	// TENSOR.
	FunctionType ssepb.FunctionType

	// ReturnType is STRING for the Str functions, else NUMERIC.
	ReturnType ssepb.DataType

	// Ex reports whether the caller gives each parameter's type, as the
	// first argument of the Ex functions does in Qlik. Without Ex every
	// parameter has the type PlainType returns.
	Ex bool
}

// ParseScriptFunction returns the script function called name, ignoring
// case.
func ParseScriptFunction(name string) (ScriptFunction, error) {
	for _, known := range ScriptFunctionNames {
		if !strings.EqualFold(name, known) {
			continue
		}
		function := ScriptFunction{Name: known, FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_NUMERIC}
		if strings.HasPrefix(known, "ScriptAggr") {
			function.FunctionType = ssepb.FunctionType_AGGREGATION
		}
		if strings.HasSuffix(known, "Str") {
			function.ReturnType = ssepb.DataType_STRING
		}
		function.Ex = strings.Contains(known, "Ex")
		return function, nil
	}
	return ScriptFunction{}, fmt.Errorf("%w %q: use one of %s", ErrUnknownScriptFunction, name, strings.Join(ScriptFunctionNames, ", "))
}

// PlainType returns the type of every parameter of the function without
// Ex: STRING for the Str functions, NUMERIC for the others.
func (f ScriptFunction) PlainType() ssepb.DataType {
	return f.ReturnType
}

// ParseParameterTypes reads parameter types written as the first argument
// of Qlik's Ex script functions: one letter per parameter, N for NUMERIC,
// S for STRING and D for DUAL, in either case. "NS" is a number followed by
// a string.
func ParseParameterTypes(letters string) ([]ssepb.DataType, error) {
	types := make([]ssepb.DataType, 0, len(letters))
	for i, letter := range letters {
		switch letter {
		case 'N', 'n':
			types = append(types, ssepb.DataType_NUMERIC)
		case 'S', 's':
			types = append(types, ssepb.DataType_STRING)
		case 'D', 'd':
			types = append(types, ssepb.DataType_DUAL)
		default:
			return nil, fmt.Errorf("parameter types %q: %q at position %d is not a type; use N (numeric), S (string) or D (dual), one letter per parameter", letters, letter, i+1)
		}
	}
	return types, nil
}

// Header returns the script request header of a call with the given script
// and parameter types. Parameter i is named names[i], or "arg" followed by
// i+1 where names has no such entry.
func (f ScriptFunction) Header(script string, types []ssepb.DataType, names []string) *ssepb.ScriptRequestHeader {
	header := &ssepb.ScriptRequestHeader{Script: script, FunctionType: f.FunctionType, ReturnType: f.ReturnType}
	for i, dataType := range types {
		name := "arg" + strconv.Itoa(i+1)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		header.Params = append(header.Params, &ssepb.Parameter{Name: name, DataType: dataType})
	}
	return header
}
