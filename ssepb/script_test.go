package ssepb_test

import (
	"testing"

	"github.com/ssegw/ssegw/ssepb"
)

// TestScriptFunctionName checks the script function named for each
// header Qlik sends with EvaluateScript: the eight script functions, and
// headers without parameters, with dual parameters and with mixed types.
func TestScriptFunctionName(t *testing.T) {
	const (
		str    = ssepb.DataType_STRING
		num    = ssepb.DataType_NUMERIC
		dual   = ssepb.DataType_DUAL
		scalar = ssepb.FunctionType_SCALAR
		aggr   = ssepb.FunctionType_AGGREGATION
	)
	tests := []struct {
		name         string
		functionType ssepb.FunctionType
		returnType   ssepb.DataType
		params       []ssepb.DataType
		want         string
	}{
		// The eight functions as Qlik calls them.
		{name: "ScriptEval", functionType: scalar, returnType: num, params: []ssepb.DataType{num, num}, want: "ScriptEval"},
		{name: "ScriptEvalStr", functionType: scalar, returnType: str, params: []ssepb.DataType{str, str}, want: "ScriptEvalStr"},
		{name: "ScriptAggr", functionType: aggr, returnType: num, params: []ssepb.DataType{num}, want: "ScriptAggr"},
		{name: "ScriptAggrStr", functionType: aggr, returnType: str, params: []ssepb.DataType{str}, want: "ScriptAggrStr"},
		{name: "ScriptEvalEx", functionType: scalar, returnType: num, params: []ssepb.DataType{str, num}, want: "ScriptEvalEx"},
		{name: "ScriptEvalExStr", functionType: scalar, returnType: str, params: []ssepb.DataType{num, str}, want: "ScriptEvalExStr"},
		{name: "ScriptAggrEx", functionType: aggr, returnType: num, params: []ssepb.DataType{num, str}, want: "ScriptAggrEx"},
		{name: "ScriptAggrExStr", functionType: aggr, returnType: str, params: []ssepb.DataType{str, num}, want: "ScriptAggrExStr"},

		// Without parameters, nothing reveals an Ex function.
		{name: "no params, numeric", functionType: scalar, returnType: num, want: "ScriptEval"},
		{name: "no params, string", functionType: scalar, returnType: str, want: "ScriptEvalStr"},
		{name: "no params, aggregation", functionType: aggr, returnType: num, want: "ScriptAggr"},
		{name: "no params, string aggregation", functionType: aggr, returnType: str, want: "ScriptAggrStr"},

		// A dual parameter only comes from an Ex function.
		{name: "dual param, numeric", functionType: scalar, returnType: num, params: []ssepb.DataType{dual}, want: "ScriptEvalEx"},
		{name: "dual param, string", functionType: scalar, returnType: str, params: []ssepb.DataType{dual}, want: "ScriptEvalExStr"},
		{name: "dual param, aggregation", functionType: aggr, returnType: num, params: []ssepb.DataType{num, dual}, want: "ScriptAggrEx"},
		{name: "dual params, string aggregation", functionType: aggr, returnType: str, params: []ssepb.DataType{dual, dual}, want: "ScriptAggrExStr"},

		// Mixed types: one parameter that differs is enough, wherever it is.
		{name: "mixed, last differs", functionType: scalar, returnType: num, params: []ssepb.DataType{num, num, str}, want: "ScriptEvalEx"},
		{name: "mixed, string return", functionType: scalar, returnType: str, params: []ssepb.DataType{str, str, num}, want: "ScriptEvalExStr"},
		{name: "mixed with dual", functionType: aggr, returnType: str, params: []ssepb.DataType{str, dual, num}, want: "ScriptAggrExStr"},

		// An Ex call whose arguments have the plain function's types sends
		// the same header, so it is named after the plain function.
		{name: "Ex with plain types", functionType: scalar, returnType: num, params: []ssepb.DataType{num, num, num}, want: "ScriptEval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := &ssepb.ScriptRequestHeader{Script: "q", FunctionType: tt.functionType, ReturnType: tt.returnType}
			for _, dataType := range tt.params {
				header.Params = append(header.Params, &ssepb.Parameter{DataType: dataType})
			}
			if got := ssepb.ScriptFunctionName(header); got != tt.want {
				t.Errorf("ScriptFunctionName(%v) = %q, want %q", header, got, tt.want)
			}
		})
	}
}
