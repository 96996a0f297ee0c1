package sseclient

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ssegw/ssegw/ssepb"
)

func TestParseScriptFunctionNamesRoundTrip(t *testing.T) {
	tests := []struct {
		name         string
		functionType ssepb.FunctionType
		returnType   ssepb.DataType
		ex           bool
		types        []ssepb.DataType // for the header; Ex types differ from the plain type
	}{
		{"ScriptEval", ssepb.FunctionType_SCALAR, numeric, false, []ssepb.DataType{numeric, numeric}},
		{"ScriptEvalStr", ssepb.FunctionType_SCALAR, text, false, []ssepb.DataType{text}},
		{"ScriptAggr", ssepb.FunctionType_AGGREGATION, numeric, false, []ssepb.DataType{numeric}},
		{"ScriptAggrStr", ssepb.FunctionType_AGGREGATION, text, false, []ssepb.DataType{text}},
		{"ScriptEvalEx", ssepb.FunctionType_SCALAR, numeric, true, []ssepb.DataType{numeric, text}},
		{"ScriptEvalExStr", ssepb.FunctionType_SCALAR, text, true, []ssepb.DataType{dual}},
		{"ScriptAggrEx", ssepb.FunctionType_AGGREGATION, numeric, true, []ssepb.DataType{dual, numeric}},
		{"ScriptAggrExStr", ssepb.FunctionType_AGGREGATION, text, true, []ssepb.DataType{text, numeric}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			function, err := ParseScriptFunction(tt.name)
			if err != nil {
				t.Fatalf("ParseScriptFunction(%q) error: %v", tt.name, err)
			}
			want := ScriptFunction{Name: tt.name, FunctionType: tt.functionType, ReturnType: tt.returnType, Ex: tt.ex}
			if function != want {
				t.Errorf("ParseScriptFunction(%q) = %+v, want %+v", tt.name, function, want)
			}
			header := function.Header("script", tt.types, nil)
			if got := ssepb.ScriptFunctionName(header); got != tt.name {
				t.Errorf("ScriptFunctionName(header of %s) = %s, want %s", tt.name, got, tt.name)
			}
		})
	}
}

func TestParseScriptFunctionIgnoresCase(t *testing.T) {
	function, err := ParseScriptFunction("scriptaggrexstr")
	if err != nil {
		t.Fatalf("ParseScriptFunction error: %v", err)
	}
	if function.Name != "ScriptAggrExStr" {
		t.Errorf("Name = %q, want ScriptAggrExStr", function.Name)
	}
}

func TestParseScriptFunctionRejectsUnknown(t *testing.T) {
	for _, name := range []string{"", "ScriptEvalXStr", "Script", "ScriptEvalStrEx"} {
		_, err := ParseScriptFunction(name)
		if !errors.Is(err, ErrUnknownScriptFunction) {
			t.Errorf("ParseScriptFunction(%q) error = %v, want ErrUnknownScriptFunction", name, err)
		}
	}
}

func TestParseParameterTypes(t *testing.T) {
	tests := []struct {
		letters string
		want    []ssepb.DataType
		wantErr string
	}{
		{letters: "NS", want: []ssepb.DataType{numeric, text}},
		{letters: "dns", want: []ssepb.DataType{dual, numeric, text}},
		{letters: "", want: []ssepb.DataType{}},
		{letters: "NX", wantErr: `parameter types "NX": 'X' at position 2 is not a type; use N (numeric), S (string) or D (dual), one letter per parameter`},
		{letters: "N,S", wantErr: `parameter types "N,S": ',' at position 2 is not a type`},
	}
	for _, tt := range tests {
		t.Run(tt.letters, func(t *testing.T) {
			got, err := ParseParameterTypes(tt.letters)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Errorf("ParseParameterTypes(%q) error = %v, want one starting %q", tt.letters, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseParameterTypes(%q) error: %v", tt.letters, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseParameterTypes(%q) (-want +got):\n%s", tt.letters, diff)
			}
		})
	}
}

func TestScriptHeaderNamesParameters(t *testing.T) {
	function, err := ParseScriptFunction("ScriptEvalEx")
	if err != nil {
		t.Fatal(err)
	}
	header := function.Header("q['x']", []ssepb.DataType{numeric, text, dual}, []string{"x", ""})
	if header.GetScript() != "q['x']" {
		t.Errorf("Script = %q, want %q", header.GetScript(), "q['x']")
	}
	if got, want := FormatParameters(header.GetParams()), "x:NUMERIC, arg2:STRING, arg3:DUAL"; got != want {
		t.Errorf("parameters = %s, want %s", got, want)
	}
}
