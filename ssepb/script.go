package ssepb

// ScriptFunctionName returns the name of the Qlik script function that
// sends an EvaluateScript call with this header: ScriptEval, ScriptEvalStr,
// ScriptAggr, ScriptAggrStr, or one of those with Ex before Str.
//
// Qlik derives the header from the function: Aggr functions are
// aggregations, Str functions return strings, and the plain functions pass
// every parameter as a number (Str functions: as a string). The Ex
// functions take each parameter's type from their first argument, so a
// parameter of any other type, or a dual, reveals them. An Ex call whose
// parameter types happen to be those of the plain function sends the same
// header as the plain function, and is named after it.
func ScriptFunctionName(h *ScriptRequestHeader) string {
	name := "ScriptEval"
	if h.GetFunctionType() == FunctionType_AGGREGATION {
		name = "ScriptAggr"
	}
	plain := DataType_NUMERIC
	if h.GetReturnType() == DataType_STRING {
		plain = DataType_STRING
	}
	for _, param := range h.GetParams() {
		if param.GetDataType() != plain {
			name += "Ex"
			break
		}
	}
	if plain == DataType_STRING {
		name += "Str"
	}
	return name
}
