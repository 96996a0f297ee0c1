package example_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/sseclient"
	"github.com/ssegw/ssegw/ssepb"
)

// startExample serves the example plugin on loopback and returns a client.
func startExample(t *testing.T) *sseclient.Client {
	t.Helper()
	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("test-plugin"))
	client, err := sseclient.Dial(plugin.Addr, sseclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func numbers(rows ...[]float64) *ssepb.BundledRows {
	bundle := &ssepb.BundledRows{}
	for _, values := range rows {
		row := &ssepb.Row{}
		for _, v := range values {
			row.Duals = append(row.Duals, &ssepb.Dual{NumData: v})
		}
		bundle.Rows = append(bundle.Rows, row)
	}
	return bundle
}

func firstColumn(result *sseclient.Result) []float64 {
	var values []float64
	for _, row := range result.Rows() {
		values = append(values, row.GetDuals()[0].GetNumData())
	}
	return values
}

// TestCapabilities checks the function list and the instance header.
func TestCapabilities(t *testing.T) {
	client := startExample(t)
	capabilities, header, err := client.Capabilities(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(example.NewServer("test-plugin").Capabilities(), capabilities, protocmp.Transform()); diff != "" {
		t.Errorf("capabilities (-want +got):\n%s", diff)
	}
	if got := header.Get(example.InstanceHeader); len(got) != 1 || got[0] != "test-plugin" {
		t.Errorf("header %s = %q, want [test-plugin]", example.InstanceHeader, got)
	}
}

// TestFunctions calls each function with rows in several bundles.
func TestFunctions(t *testing.T) {
	client := startExample(t)
	common := &ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: 4}
	bundles := []*ssepb.BundledRows{numbers([]float64{1, 2}, []float64{3, 4}), numbers([]float64{5, 6}, []float64{-7, 0.5})}

	tests := []struct {
		name     string
		function int32
		want     []float64
		wantMsgs int
	}{
		{"Echo", example.FunctionEcho, []float64{1, 3, 5, -7}, 2},
		{"SumOfRows", example.FunctionSumOfRows, []float64{3, 7, 11, -6.5}, 2},
		{"SumOfColumn", example.FunctionSumOfColumn, []float64{2}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			result, err := client.ExecuteFunction(testContext(t), tt.function, common, bundles)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, firstColumn(result)); diff != "" {
				t.Errorf("first column (-want +got):\n%s", diff)
			}
			if len(result.Bundles) != tt.wantMsgs {
				t.Errorf("got %d bundles, want %d", len(result.Bundles), tt.wantMsgs)
			}
			if got := result.Header.Get(example.InstanceHeader); len(got) != 1 {
				t.Errorf("header %s = %q, want one value", example.InstanceHeader, got)
			}
		})
	}
}

// TestEvaluateScript checks that a scalar script call returns each row's
// first parameter, and an aggregation only the first row's, over several
// bundles.
func TestEvaluateScript(t *testing.T) {
	client := startExample(t)
	bundles := []*ssepb.BundledRows{
		{Rows: []*ssepb.Row{
			{Duals: []*ssepb.Dual{{StrData: "x"}, {StrData: "ignored"}}},
			{Duals: []*ssepb.Dual{{StrData: "y"}, {StrData: "ignored"}}},
		}},
		{Rows: []*ssepb.Row{{Duals: []*ssepb.Dual{{StrData: "z"}, {StrData: "ignored"}}}}},
	}
	for _, tt := range []struct {
		functionType ssepb.FunctionType
		want         []string
	}{
		{ssepb.FunctionType_SCALAR, []string{"x", "y", "z"}},
		{ssepb.FunctionType_AGGREGATION, []string{"x"}},
	} {
		t.Run(tt.functionType.String(), func(t *testing.T) {
			script := &ssepb.ScriptRequestHeader{
				Script: "args[0]", FunctionType: tt.functionType, ReturnType: ssepb.DataType_STRING,
				Params: []*ssepb.Parameter{{Name: "a", DataType: ssepb.DataType_STRING}, {Name: "b", DataType: ssepb.DataType_STRING}},
			}
			result, err := client.EvaluateScript(testContext(t), script, &ssepb.CommonRequestHeader{}, bundles)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, row := range result.Rows() {
				if len(row.GetDuals()) != 1 {
					t.Errorf("row has %d values, want 1", len(row.GetDuals()))
				}
				got = append(got, row.GetDuals()[0].GetStrData())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEvaluateScriptNumberAsString checks that a number returned as a
// string result is given its text, which is all Qlik reads of it.
func TestEvaluateScriptNumberAsString(t *testing.T) {
	client := startExample(t)
	script := &ssepb.ScriptRequestHeader{
		Script: "args[0]", FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_STRING,
		Params: []*ssepb.Parameter{{Name: "n", DataType: ssepb.DataType_NUMERIC}},
	}
	bundle := &ssepb.BundledRows{Rows: []*ssepb.Row{{Duals: []*ssepb.Dual{{NumData: 2.5}}}}}
	result, err := client.EvaluateScript(testContext(t), script, &ssepb.CommonRequestHeader{}, []*ssepb.BundledRows{bundle})
	if err != nil {
		t.Fatal(err)
	}
	rows := result.Rows()
	if len(rows) != 1 || len(rows[0].GetDuals()) != 1 {
		t.Fatalf("rows = %v, want one row of one value", rows)
	}
	if got := rows[0].GetDuals()[0].GetStrData(); got != "2.5" {
		t.Errorf("text = %q, want %q", got, "2.5")
	}
}

// TestBadCalls checks the statuses of calls the plugin cannot serve.
func TestBadCalls(t *testing.T) {
	client := startExample(t)
	t.Run("unknown function", func(t *testing.T) {
		_, err := client.ExecuteFunction(testContext(t), 99, &ssepb.CommonRequestHeader{}, nil)
		if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() != "unknown function id 99" {
			t.Errorf("status = %v %q, want Unimplemented %q", st.Code(), st.Message(), "unknown function id 99")
		}
	})

	t.Run("function left out of the offer", func(t *testing.T) {
		plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServerWith("echo-only", example.Options{Functions: []string{"Echo"}}))
		client, err := sseclient.Dial(plugin.Addr, sseclient.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		_, err = client.ExecuteFunction(testContext(t), example.FunctionSumOfRows, &ssepb.CommonRequestHeader{}, nil)
		if code := status.Code(err); code != codes.Unimplemented {
			t.Errorf("SumOfRows on a plugin offering only Echo: %v, want Unimplemented", err)
		}
	})

	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("raw"))
	raw := ssetest.Dial(t, plugin.Addr)
	for _, method := range []string{"ExecuteFunction", "EvaluateScript"} {
		t.Run(method+" without its header", func(t *testing.T) {
			ctx := metadata.NewOutgoingContext(testContext(t), metadata.MD{})
			open := raw.ExecuteFunction
			if method == "EvaluateScript" {
				open = raw.EvaluateScript
			}
			stream, err := open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			stream.CloseSend()
			_, err = stream.Recv()
			if code := status.Code(err); code != codes.InvalidArgument {
				t.Errorf("status = %v, want InvalidArgument", err)
			}
		})
	}
}

// TestParseFunctions checks the --functions list: spaces and empty names
// are dropped, and an unknown name is an error that lists the known ones.
func TestParseFunctions(t *testing.T) {
	names, err := example.ParseFunctions("Echo, SumOfRows,")
	if err != nil {
		t.Fatalf("ParseFunctions() = %v", err)
	}
	if diff := cmp.Diff([]string{"Echo", "SumOfRows"}, names); diff != "" {
		t.Errorf("ParseFunctions() (-want +got):\n%s", diff)
	}
	if names, err := example.ParseFunctions(""); err != nil || names != nil {
		t.Errorf("ParseFunctions(\"\") = %q, %v, want none", names, err)
	}
	_, err = example.ParseFunctions("Echo,Nope")
	if err == nil || err.Error() != `unknown function "Nope": the example plugin has Echo, SumOfRows, SumOfColumn` {
		t.Errorf("ParseFunctions(\"Echo,Nope\") error = %v, want one naming Nope and the known functions", err)
	}
}
