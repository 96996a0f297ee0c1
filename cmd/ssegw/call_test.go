package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// callEndpoint is one way to reach a plugin: the address and connection
// flags that precede the call type.
type callEndpoint struct {
	name string
	args []string
}

// startCallEndpoints serves connector on loopback with a gateway in front
// of it, and returns the ways to reach it: directly, through the gateway's
// plaintext listener for the engine, through a shared listener with
// --engine, and through a mutual TLS listener with --tls-dir and
// --server-name.
func startCallEndpoints(t *testing.T, connector ssepb.ConnectorServer) []callEndpoint {
	t.Helper()
	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", connector)
	certs := ssetest.NewCerts(t)
	gateway := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{
			ssetest.Listen("Example", nil),
			ssetest.Listen("", nil),
			ssetest.Listen("Example", &config.ServerTLS{Dir: certs.GatewayDir}),
		},
		Engines: map[string]*config.Engine{"Example": ssetest.Engine(plugin.Addr)},
	})
	return []callEndpoint{
		{name: "plugin", args: []string{plugin.Addr}},
		{name: "gateway", args: []string{gateway.Addrs[0]}},
		{name: "gateway by engine", args: []string{gateway.Addrs[1], "--engine", "Example"}},
		{name: "gateway with TLS", args: []string{gateway.Addrs[2], "--tls-dir", certs.QlikDir, "--server-name", "r.gw.test"}},
	}
}

// callOutput is what one run of the call command printed and returned.
type callOutput struct {
	stdout, stderr string
	err            error
}

// durationLine matches the one line of the output that changes from run
// to run.
var durationLine = regexp.MustCompile(`(?m)^Duration: \S+$`)

// runCallCommand runs `ssegw call args...` in-process with stdin as its
// standard input. The duration in the output reads "Duration: D".
func runCallCommand(t *testing.T, stdin string, args ...string) callOutput {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	root := newRootCommand()
	root.SetArgs(append([]string{"call"}, args...))
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	err := root.ExecuteContext(ctx)
	if durations := durationLine.FindAllString(stdout.String(), -1); err == nil && len(durations) != 1 {
		t.Errorf("output has %d duration lines, want 1:\n%s", len(durations), stdout.String())
	}
	return callOutput{
		stdout: durationLine.ReplaceAllString(stdout.String(), "Duration: D"),
		stderr: stderr.String(),
		err:    err,
	}
}

// lines joins lines with a newline after each.
func lines(text ...string) string {
	return strings.Join(text, "\n") + "\n"
}

func TestCallCapabilities(t *testing.T) {
	want := lines(
		`Plugin: "p", version "1.0.0"`,
		`Scripts allowed: yes`,
		`Functions:`,
		`  ID  NAME         TYPE         RETURNS  PARAMETERS`,
		`  0   Echo         SCALAR       STRING   text:STRING`,
		`  1   SumOfRows    SCALAR       NUMERIC  a:NUMERIC, b:NUMERIC`,
		`  2   SumOfColumn  AGGREGATION  NUMERIC  column:NUMERIC`,
		`Response headers:`,
		`  x-example-plugin: p`,
		`Duration: D`,
	)
	for _, endpoint := range startCallEndpoints(t, example.NewServer("p")) {
		t.Run(endpoint.name, func(t *testing.T) {
			got := runCallCommand(t, "", append(endpoint.args, "capabilities")...)
			if got.err != nil {
				t.Fatalf("call capabilities error: %v; stderr:\n%s", got.err, got.stderr)
			}
			if diff := cmp.Diff(want, got.stdout); diff != "" {
				t.Errorf("call capabilities output (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCallFunction(t *testing.T) {
	sumOfRows := lines(
		`Function: SumOfRows (id 1, SCALAR, returns NUMERIC)`,
		`Parameters: a:NUMERIC, b:NUMERIC`,
		`Request: 3 rows in 1 bundle, app id "", user id ""`,
		`Response headers:`,
		`  x-example-plugin: p`,
		`Response: 3 rows in 1 bundle`,
		`  #  Field1`,
		`  1  3`,
		`  2  30`,
		`  3  0.75`,
		`Trailers: none`,
		`Duration: D`,
	)
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{
			name:  "CSV",
			stdin: "1,2\n10,20\n0.5,0.25\n",
			args:  []string{"function", "SumOfRows"},
			want:  sumOfRows,
		},
		{
			name:  "CSV with header",
			stdin: "a,b\n1,2\n10,20\n0.5,0.25\n",
			args:  []string{"function", "SumOfRows", "--header"},
			want:  sumOfRows,
		},
		{
			name:  "JSON",
			stdin: `[[1, 2], [10, "20"], [0.5, 0.25]]`,
			args:  []string{"function", "SumOfRows", "--input", "json"},
			want:  sumOfRows,
		},
		{
			name: "arg flags",
			args: []string{"function", "SumOfRows", "--arg", "1,10,0.5", "--arg", "2,20,0.25"},
			want: sumOfRows,
		},
		{
			name:  "strings with ids",
			stdin: `[["hello"], ["Qlik, again"], [""]]`,
			args:  []string{"function", "Echo", "--input", "json", "--app-id", "app-1", "--user-id", "UserDirectory=QLIK; UserId=admin"},
			want: lines(
				`Function: Echo (id 0, SCALAR, returns STRING)`,
				`Parameters: text:STRING`,
				`Request: 3 rows in 1 bundle, app id "app-1", user id "UserDirectory=QLIK; UserId=admin"`,
				`Response headers:`,
				`  x-example-plugin: p`,
				`Response: 3 rows in 1 bundle`,
				`  #  Field1`,
				`  1  hello`,
				`  2  Qlik, again`,
				`  3`,
				`Trailers: none`,
				`Duration: D`,
			),
		},
		{
			name: "aggregation in bundles",
			args: []string{"function", "SumOfColumn", "--arg", "1,2,3,4,5", "--bundle-size", "2"},
			want: lines(
				`Function: SumOfColumn (id 2, AGGREGATION, returns NUMERIC)`,
				`Parameters: column:NUMERIC`,
				`Request: 5 rows in 3 bundles, app id "", user id ""`,
				`Response headers:`,
				`  x-example-plugin: p`,
				`Response: 1 row in 1 bundle`,
				`  #  Field1`,
				`  1  15`,
				`Trailers: none`,
				`Duration: D`,
			),
		},
		{
			name:  "no rows",
			stdin: "",
			args:  []string{"function", "SumOfRows"},
			want: lines(
				`Function: SumOfRows (id 1, SCALAR, returns NUMERIC)`,
				`Parameters: a:NUMERIC, b:NUMERIC`,
				`Request: 0 rows in 0 bundles, app id "", user id ""`,
				`Response headers:`,
				`  x-example-plugin: p`,
				`Response: 0 rows in 0 bundles`,
				`Trailers: none`,
				`Duration: D`,
			),
		},
	}
	for _, endpoint := range startCallEndpoints(t, example.NewServer("p")) {
		for _, tt := range tests {
			t.Run(endpoint.name+"/"+tt.name, func(t *testing.T) {
				got := runCallCommand(t, tt.stdin, append(endpoint.args, tt.args...)...)
				if got.err != nil {
					t.Fatalf("call %q error: %v; stderr:\n%s", tt.args, got.err, got.stderr)
				}
				if diff := cmp.Diff(tt.want, got.stdout); diff != "" {
					t.Errorf("call %q output (-want +got):\n%s", tt.args, diff)
				}
				if got.stderr != "" {
					t.Errorf("call %q stderr = %q, want none", tt.args, got.stderr)
				}
			})
		}
	}
}

func TestCallScript(t *testing.T) {
	tests := []struct {
		name       string
		stdin      string
		args       []string
		want       string
		wantStderr string
	}{
		{
			name: "ScriptEval by default",
			args: []string{"script", "args[0]", "--arg", "1,2.5"},
			want: lines(
				`Script function: ScriptEval (SCALAR, returns NUMERIC)`,
				`Script: "args[0]"`,
				`Parameters: arg1:NUMERIC`,
				`Request: 2 rows in 1 bundle, app id "", user id ""`,
				`Response headers:`,
				`  x-example-plugin: p`,
				`Response: 2 rows in 1 bundle`,
				`  #  Field1`,
				`  1  1`,
				`  2  2.5`,
				`Trailers: none`,
				`Duration: D`,
			),
		},
		{
			name:  "ScriptEvalStr with header names",
			stdin: "word,other\nhello,x\nQlik,y\n",
			args:  []string{"script", "q['word']", "--function", "ScriptEvalStr", "--header"},
			want: lines(
				`Script function: ScriptEvalStr (SCALAR, returns STRING)`,
				`Script: "q['word']"`,
				`Parameters: word:STRING, other:STRING`,
				`Request: 2 rows in 1 bundle, app id "", user id ""`,
				`Response headers:`,
				`  x-example-plugin: p`,
				`Response: 2 rows in 1 bundle`,
				`  #  Field1`,
				`  1  hello`,
				`  2  Qlik`,
				`Trailers: none`,
				`Duration: D`,
			),
		},
		{
			name:  "ScriptAggrExStr with types and names",
			stdin: `[["a", 1], ["b", 2]]`,
			args:  []string{"script", "args[0]", "--function", "ScriptAggrExStr", "--types", "SN", "--names", "label,value", "--input", "json"},
			want: lines(
				`Script function: ScriptAggrExStr (AGGREGATION, returns STRING)`,
				`Script: "args[0]"`,
				`Parameters: label:STRING, value:NUMERIC`,
				`Request: 2 rows in 1 bundle, app id "", user id ""`,
				`Response headers:`,
				`  x-example-plugin: p`,
				`Response: 1 row in 1 bundle`,
				`  #  Field1`,
				`  1  a`,
				`Trailers: none`,
				`Duration: D`,
			),
		},
		{
			name: "ScriptEvalEx with duals as tensor",
			args: []string{"script", "args[0]", "--function", "ScriptEvalEx", "--types", "D", "--tensor", "--arg", "7,Jan"},
			want: lines(
				`Script function: ScriptEvalEx (TENSOR, returns NUMERIC)`,
				`Script: "args[0]"`,
				`Parameters: arg1:DUAL`,
				`Request: 2 rows in 1 bundle, app id "", user id ""`,
				`Response headers:`,
				`  x-example-plugin: p`,
				`Response: 2 rows in 1 bundle`,
				`  #  Field1`,
				`  1  7`,
				`  2  NaN`,
				`Trailers: none`,
				`Duration: D`,
			),
		},
		{
			name: "Ex types equal to the plain function's",
			args: []string{"script", "args[0]", "--function", "ScriptEvalEx", "--types", "NN", "--arg", "1", "--arg", "2"},
			want: lines(
				`Script function: ScriptEval (SCALAR, returns NUMERIC)`,
				`Script: "args[0]"`,
				`Parameters: arg1:NUMERIC, arg2:NUMERIC`,
				`Request: 1 row in 1 bundle, app id "", user id ""`,
				`Response headers:`,
				`  x-example-plugin: p`,
				`Response: 1 row in 1 bundle`,
				`  #  Field1`,
				`  1  1`,
				`Trailers: none`,
				`Duration: D`,
			),
			wantStderr: "Note: ScriptEvalEx with --types \"NN\" sends the same header as ScriptEval, so the endpoint sees a ScriptEval call.\n",
		},
	}
	for _, endpoint := range startCallEndpoints(t, example.NewServer("p")) {
		for _, tt := range tests {
			t.Run(endpoint.name+"/"+tt.name, func(t *testing.T) {
				got := runCallCommand(t, tt.stdin, append(endpoint.args, tt.args...)...)
				if got.err != nil {
					t.Fatalf("call %q error: %v; stderr:\n%s", tt.args, got.err, got.stderr)
				}
				if diff := cmp.Diff(tt.want, got.stdout); diff != "" {
					t.Errorf("call %q output (-want +got):\n%s", tt.args, diff)
				}
				if got.stderr != tt.wantStderr {
					t.Errorf("call %q stderr = %q, want %q", tt.args, got.stderr, tt.wantStderr)
				}
			})
		}
	}
}

// recordingPlugin is a plugin that records the request headers of its
// last call. It returns from ExecuteFunction and EvaluateScript a table
// description, qlik-cache: no-store, a two-column row per input row, and
// a trailer.
type recordingPlugin struct {
	mu     sync.Mutex
	header metadata.MD
}

// requestHeader returns the request headers of the last call.
func (p *recordingPlugin) requestHeader() metadata.MD {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.header
}

func (p *recordingPlugin) connector() *ssetest.Connector {
	return &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{
				PluginIdentifier: "recorder",
				Functions: []*ssepb.FunctionDefinition{{
					Name: "Describe", FunctionId: 7, FunctionType: ssepb.FunctionType_TENSOR, ReturnType: ssepb.DataType_DUAL,
					Params: []*ssepb.Parameter{{Name: "when", DataType: ssepb.DataType_DUAL}},
				}},
			}, nil
		},
		Execute: p.answer,
		Script:  p.answer,
	}
}

func (p *recordingPlugin) answer(stream ssetest.Stream) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	p.mu.Lock()
	p.header = md.Copy()
	p.mu.Unlock()

	header := metadata.Pairs(ssepb.CacheKey, ssepb.CacheNoStore, "x-plugin-note", "first")
	description := &ssepb.TableDescription{Name: "Described", NumberOfRows: 2, Fields: []*ssepb.FieldDescription{
		{Name: "Month", DataType: ssepb.DataType_DUAL, Tags: []string{"$date", "$month"}},
		{Name: "Label", DataType: ssepb.DataType_STRING},
	}}
	if err := ssepb.SetHeader(header, ssepb.TableDescriptionKey, description); err != nil {
		return err
	}
	if err := stream.SendHeader(header); err != nil {
		return err
	}
	for {
		bundle, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return err
		}
		for _, row := range bundle.GetRows() {
			in := row.GetDuals()[0]
			row.Duals = []*ssepb.Dual{in, {StrData: "tab\tinside"}}
		}
		if err := stream.Send(bundle); err != nil {
			return err
		}
	}
	stream.SetTrailer(metadata.Pairs("x-rows-seen", "done"))
	return nil
}

// TestCallShowsHeadersAndTrailers checks the decoded table description,
// qlik-cache, other headers and trailers, and that the request carried the
// function id, app id, user id and cardinality.
func TestCallShowsHeadersAndTrailers(t *testing.T) {
	plugin := &recordingPlugin{}
	want := lines(
		`Function: Describe (id 7, TENSOR, returns DUAL)`,
		`Parameters: when:DUAL`,
		`Request: 2 rows in 2 bundles, app id "sales.qvf", user id "admin"`,
		`Response headers:`,
		`  qlik-cache: no-store (Qlik does not cache the result)`,
		`  qlik-tabledescription-bin: table "Described", numberOfRows 2, 2 fields`,
		`    field 1: "Month" DUAL, tags $date, $month`,
		`    field 2: "Label" STRING`,
		`  x-plugin-note: first`,
		`Response: 2 rows in 2 bundles`,
		`  #  Month     Label`,
		`  1  Jan (1)   "tab\tinside"`,
		`  2  February  "tab\tinside"`,
		`Trailers:`,
		`  x-rows-seen: done`,
		`Duration: D`,
	)
	for _, endpoint := range startCallEndpoints(t, plugin.connector()) {
		t.Run(endpoint.name, func(t *testing.T) {
			args := append(endpoint.args, "function", "Describe", "--input", "json", "--bundle-size", "1", "--app-id", "sales.qvf", "--user-id", "admin")
			got := runCallCommand(t, `[[[1, "Jan"]], ["February"]]`, args...)
			if got.err != nil {
				t.Fatalf("call error: %v; stderr:\n%s", got.err, got.stderr)
			}
			if diff := cmp.Diff(want, got.stdout); diff != "" {
				t.Errorf("call output (-want +got):\n%s", diff)
			}

			md := plugin.requestHeader()
			function, err := ssepb.ReadFunctionRequestHeader(md)
			if err != nil {
				t.Fatalf("reading the function header: %v", err)
			}
			if function.GetFunctionId() != 7 {
				t.Errorf("function id = %d, want 7", function.GetFunctionId())
			}
			common, err := ssepb.ReadCommonRequestHeader(md)
			if err != nil {
				t.Fatalf("reading the common header: %v", err)
			}
			if common.GetAppId() != "sales.qvf" {
				t.Errorf("appId = %q, want sales.qvf", common.GetAppId())
			}
			if common.GetUserId() != "admin" {
				t.Errorf("userId = %q, want admin", common.GetUserId())
			}
			if common.GetCardinality() != 2 {
				t.Errorf("cardinality = %d, want 2", common.GetCardinality())
			}
		})
	}
}

// TestCallSendsScriptHeader checks the script header that the plugin
// receives for script functions with and without Ex.
func TestCallSendsScriptHeader(t *testing.T) {
	plugin := &recordingPlugin{}
	endpoints := startCallEndpoints(t, plugin.connector())
	tests := []struct {
		name string
		args []string
		want *ssepb.ScriptRequestHeader
	}{
		{
			name: "ScriptAggr",
			args: []string{"script", "sum(args[0])", "--function", "ScriptAggr", "--arg", "1,2", "--arg", "3,4"},
			want: &ssepb.ScriptRequestHeader{
				Script: "sum(args[0])", FunctionType: ssepb.FunctionType_AGGREGATION, ReturnType: ssepb.DataType_NUMERIC,
				Params: []*ssepb.Parameter{{Name: "arg1", DataType: ssepb.DataType_NUMERIC}, {Name: "arg2", DataType: ssepb.DataType_NUMERIC}},
			},
		},
		{
			name: "ScriptEvalExStr",
			args: []string{"script", "x", "--function", "scriptevalexstr", "--types", "nsd", "--arg", "1", "--arg", "a", "--arg", "2"},
			want: &ssepb.ScriptRequestHeader{
				Script: "x", FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_STRING,
				Params: []*ssepb.Parameter{
					{Name: "arg1", DataType: ssepb.DataType_NUMERIC},
					{Name: "arg2", DataType: ssepb.DataType_STRING},
					{Name: "arg3", DataType: ssepb.DataType_DUAL},
				},
			},
		},
	}
	for _, endpoint := range endpoints {
		for _, tt := range tests {
			t.Run(endpoint.name+"/"+tt.name, func(t *testing.T) {
				got := runCallCommand(t, "", append(endpoint.args, tt.args...)...)
				if got.err != nil {
					t.Fatalf("call %q error: %v; stderr:\n%s", tt.args, got.err, got.stderr)
				}
				header, err := ssepb.ReadScriptRequestHeader(plugin.requestHeader())
				if err != nil {
					t.Fatalf("reading the script header: %v", err)
				}
				if header.GetScript() != tt.want.GetScript() {
					t.Errorf("script = %q, want %q", header.GetScript(), tt.want.GetScript())
				}
				if header.GetFunctionType() != tt.want.GetFunctionType() {
					t.Errorf("functionType = %v, want %v", header.GetFunctionType(), tt.want.GetFunctionType())
				}
				if header.GetReturnType() != tt.want.GetReturnType() {
					t.Errorf("returnType = %v, want %v", header.GetReturnType(), tt.want.GetReturnType())
				}
				if diff := cmp.Diff(paramStrings(tt.want.GetParams()), paramStrings(header.GetParams())); diff != "" {
					t.Errorf("script header parameters (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// paramStrings returns each parameter as name:TYPE.
func paramStrings(params []*ssepb.Parameter) []string {
	var list []string
	for _, param := range params {
		list = append(list, param.GetName()+":"+param.GetDataType().String())
	}
	return list
}

func TestCallRejectsBadInput(t *testing.T) {
	endpoint := startCallEndpoints(t, example.NewServer("p"))[0]
	tests := []struct {
		name    string
		stdin   string
		args    []string
		wantErr string
	}{
		{
			name:    "unknown function name",
			args:    []string{"function", "SumOfRow", "--arg", "1"},
			wantErr: `function not found: "SumOfRow"; the endpoint offers Echo, SumOfColumn, SumOfRows`,
		},
		{
			name:    "bad number in CSV",
			stdin:   "1,2\n3,x\n",
			args:    []string{"function", "SumOfRows"},
			wantErr: `input for SumOfRows: line 2, column 2 (parameter b, NUMERIC): invalid value: "x" is not a number`,
		},
		{
			name:    "JSON null for the rows",
			stdin:   "null\n",
			args:    []string{"function", "SumOfRows", "--input", "json"},
			wantErr: "standard input: reading JSON: null is not an array of rows",
		},
		{
			name:    "number out of range",
			stdin:   "1e999,1\n",
			args:    []string{"function", "SumOfRows"},
			wantErr: `input for SumOfRows: line 1, column 1 (parameter a, NUMERIC): invalid value: "1e999" is out of range`,
		},
		{
			name:    "too few columns",
			args:    []string{"function", "SumOfRows", "--arg", "1,2"},
			wantErr: "input for SumOfRows: row 1 has 1 value, expected 2, one for each parameter (a:NUMERIC, b:NUMERIC)",
		},
		{
			name:    "wrong --types length",
			args:    []string{"script", "x", "--function", "ScriptEvalEx", "--types", "NSD", "--arg", "1", "--arg", "a"},
			wantErr: `--types "NSD" gives 3 parameter types, but the input has 2 columns, so give one letter per column`,
		},
		{
			name:    "unknown --function",
			args:    []string{"script", "x", "--function", "ScriptEvil"},
			wantErr: `--function: unknown script function "ScriptEvil": use one of ScriptEval, ScriptEvalStr, ScriptAggr, ScriptAggrStr, ScriptEvalEx, ScriptEvalExStr, ScriptAggrEx, ScriptAggrExStr`,
		},
		{
			name:    "invalid --types letter",
			args:    []string{"script", "x", "--function", "ScriptEvalEx", "--types", "NX"},
			wantErr: `--types: parameter types "NX": 'X' at position 2 is not a type; use N (numeric), S (string) or D (dual), one letter per parameter`,
		},
		{
			name:    "Ex function without --types",
			args:    []string{"script", "x", "--function", "ScriptAggrEx"},
			wantErr: "ScriptAggrEx needs --types, one letter per parameter: N numeric, S string, D dual, such as --types NS",
		},
		{
			name:    "--types without Ex",
			args:    []string{"script", "x", "--function", "ScriptEvalStr", "--types", "S"},
			wantErr: "--types applies only to the Ex script functions (ScriptEvalEx, ScriptEvalExStr, ScriptAggrEx, ScriptAggrExStr), not to ScriptEvalStr",
		},
		{
			name:    "--tensor with an aggregation",
			args:    []string{"script", "x", "--function", "ScriptAggr", "--tensor"},
			wantErr: "--tensor applies to the Eval script functions, and ScriptAggr is an aggregation",
		},
		{
			name:    "--names of the wrong length",
			args:    []string{"script", "x", "--names", "a,b", "--arg", "1"},
			wantErr: "--names gives 2 names for 1 parameter, so give one name per column",
		},
		{
			name:    "script flag with function",
			args:    []string{"function", "Echo", "--types", "S"},
			wantErr: "--types does not apply to a function call",
		},
		{
			name:    "row flag with capabilities",
			args:    []string{"capabilities", "--arg", "1"},
			wantErr: "--arg does not apply to a capabilities call",
		},
		{
			name:    "--arg with --input",
			args:    []string{"function", "Echo", "--arg", "a", "--input", "json"},
			wantErr: "--arg replaces standard input, so it cannot be combined with --input or --header",
		},
		{
			name:    "unknown --input",
			args:    []string{"function", "Echo", "--input", "xml"},
			wantErr: `invalid --input "xml": use csv or json`,
		},
		{
			name:    "bad --bundle-size",
			args:    []string{"function", "Echo", "--bundle-size", "0"},
			wantErr: "invalid --bundle-size 0: use 1 or more rows",
		},
		{
			name:    "malformed JSON",
			stdin:   `[[1], [2]`,
			args:    []string{"function", "SumOfColumn", "--input", "json"},
			wantErr: "standard input: reading JSON: expected an array of rows, each an array of values",
		},
		{
			name:    "CSV that is not UTF-8",
			stdin:   "Caf\xe9\n",
			args:    []string{"function", "Echo"},
			wantErr: "standard input: line 1, column 1: invalid value: not UTF-8 text",
		},
		{
			name:    "script that is not UTF-8",
			args:    []string{"script", "args[0] + '\xe9'"},
			wantErr: "the script is not UTF-8 text",
		},
		{
			name:    "unknown call type",
			args:    []string{"functions"},
			wantErr: `unknown call type "functions" after the address`,
		},
		{
			name:    "function without a name",
			args:    []string{"function"},
			wantErr: "call ADDR function needs one function name",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runCallCommand(t, tt.stdin, append(endpoint.args, tt.args...)...)
			if got.err == nil {
				t.Fatalf("call %q succeeded, want error %q; output:\n%s", tt.args, tt.wantErr, got.stdout)
			}
			if !strings.HasPrefix(got.err.Error(), tt.wantErr) {
				t.Errorf("call %q error = %q, want it to start with %q", tt.args, got.err, tt.wantErr)
			}
			if got.stdout != "" {
				t.Errorf("call %q printed %q, want nothing", tt.args, got.stdout)
			}
		})
	}
}

// TestCallReportsStatus checks that a status other than OK goes to stderr
// with exit status 1, after what the call returned before it.
func TestCallReportsStatus(t *testing.T) {
	connector := &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{
				{Name: "Fail", FunctionId: 3, ReturnType: ssepb.DataType_NUMERIC},
			}}, nil
		},
		Execute: func(stream ssetest.Stream) error {
			if err := stream.SendHeader(metadata.Pairs("x-before", "failing")); err != nil {
				return err
			}
			return status.Error(codes.InvalidArgument, "no rows expected")
		},
		Script: func(ssetest.Stream) error {
			return status.Error(codes.Unimplemented, "scripts are disabled")
		},
	}
	tests := []struct {
		name       string
		args       []string
		wantStdout string
		wantStderr string
	}{
		{
			name: "function",
			args: []string{"function", "Fail"},
			wantStdout: lines(
				`Function: Fail (id 3, SCALAR, returns NUMERIC)`,
				`Parameters: none`,
				`Request: 0 rows in 0 bundles, app id "", user id ""`,
				`Response headers:`,
				`  x-before: failing`,
				`Response: 0 rows in 0 bundles`,
				`Trailers: none`,
				`Duration: D`,
			),
			wantStderr: "call ended with status InvalidArgument: no rows expected\n",
		},
		{
			name:       "script",
			args:       []string{"script", "x"},
			wantStderr: "call ended with status Unimplemented: scripts are disabled\n",
		},
	}
	for _, endpoint := range startCallEndpoints(t, connector) {
		for _, tt := range tests {
			t.Run(endpoint.name+"/"+tt.name, func(t *testing.T) {
				got := runCallCommand(t, "", append(endpoint.args, tt.args...)...)
				var exit exitError
				if !errors.As(got.err, &exit) || exit.code != 1 {
					t.Fatalf("call %q error = %v, want exit status 1", tt.args, got.err)
				}
				if got.stderr != tt.wantStderr {
					t.Errorf("call %q stderr = %q, want %q", tt.args, got.stderr, tt.wantStderr)
				}
				if tt.wantStdout == "" {
					return
				}
				if diff := cmp.Diff(tt.wantStdout, got.stdout); diff != "" {
					t.Errorf("call %q output (-want +got):\n%s", tt.args, diff)
				}
			})
		}
	}
}

// TestCallFunctionLookupFails checks that a failed GetCapabilities,
// which a call by name makes first to find the function's id, is reported
// as a failed lookup, not as the status of the function call.
func TestCallFunctionLookupFails(t *testing.T) {
	executed := make(chan struct{}, 1)
	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return nil, status.Error(codes.Internal, "capabilities unavailable")
		},
		Execute: func(stream ssetest.Stream) error {
			executed <- struct{}{}
			return nil
		},
	})
	got := runCallCommand(t, "", plugin.Addr, "function", "Echo", "--arg", "a")
	var exit exitError
	if !errors.As(got.err, &exit) || exit.code != 1 {
		t.Fatalf("call function error = %v, want exit status 1", got.err)
	}
	want := "looking up function Echo through GetCapabilities failed, so the function was not called: status Internal: capabilities unavailable\n"
	if got.stderr != want {
		t.Errorf("call function stderr = %q, want %q", got.stderr, want)
	}
	if got.stdout != "" {
		t.Errorf("call function stdout = %q, want nothing", got.stdout)
	}
	select {
	case <-executed:
		t.Error("the plugin's ExecuteFunction was called, want no call after the failed lookup")
	default:
	}
}

// TestCallNamesTimeoutOnlyWhenItPassed checks that a call cut by the
// gateway's request_timeout is not blamed on --timeout, and that one cut by
// --timeout is.
func TestCallNamesTimeoutOnlyWhenItPassed(t *testing.T) {
	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{
				{Name: "Slow", FunctionId: 1, ReturnType: ssepb.DataType_NUMERIC},
			}}, nil
		},
		Execute: func(stream ssetest.Stream) error {
			<-stream.Context().Done()
			return stream.Context().Err()
		},
	})
	engine := ssetest.Engine(plugin.Addr)
	engine.RequestTimeout = 200 * time.Millisecond
	gateway := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("Slow", nil)},
		Engines:   map[string]*config.Engine{"Slow": engine},
	})
	const blame = "the call took longer than --timeout"
	tests := []struct {
		name, address, timeout string
		wantBlame              bool
	}{
		{"gateway's request_timeout", gateway.Addrs[0], "30s", false},
		{"client's --timeout", plugin.Addr, "200ms", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runCallCommand(t, "", tt.address, "function", "Slow", "--timeout", tt.timeout)
			if !strings.Contains(got.stderr, "call ended with status DeadlineExceeded") {
				t.Fatalf("stderr = %q, want DeadlineExceeded", got.stderr)
			}
			if strings.Contains(got.stderr, blame) != tt.wantBlame {
				t.Errorf("stderr = %q; mentions --timeout: %v, want %v", got.stderr, !tt.wantBlame, tt.wantBlame)
			}
		})
	}
}

// TestCallExplainsConnectionFailure checks that the errors of a refused
// connection, of a TLS client facing a plaintext plugin, and of a client
// certificate that a TLS plugin does not trust say what to check.
func TestCallExplainsConnectionFailure(t *testing.T) {
	closed := ssetest.FreeAddress(t)
	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("p"))
	certs := ssetest.NewCerts(t)
	tlsPlugin := startCertsPlugin(t, certs.ServerDir(t, tlsutil.LeafRequest{Hosts: []string{"127.0.0.1"}}))
	// A client folder that trusts the plugin but whose certificate another
	// CA signed.
	otherSet := ssetest.NewCerts(t)
	foreign := certs.ClientDir(t, otherSet.CA, tlsutil.LeafRequest{})
	tests := []struct {
		name     string
		args     []string
		wantHint string
	}{
		{
			name:     "refused",
			args:     []string{closed, "capabilities"},
			wantHint: "Nothing listens at " + closed + ": check the address, and that the plugin or gateway runs.",
		},
		{
			// No certificate advice, which cannot help.
			name:     "refused with TLS",
			args:     []string{closed, "--tls-dir", certs.QlikDir, "capabilities"},
			wantHint: "Nothing listens at " + closed + ": check the address, and that the plugin or gateway runs.",
		},
		{
			name:     "TLS to a plaintext plugin",
			args:     []string{plugin.Addr, "--tls-dir", certs.QlikDir, "function", "Echo", "--arg", "a"},
			wantHint: plugin.Addr + " does not speak TLS: call it without --tls-dir.",
		},
		{
			name:     "client certificate of another CA",
			args:     []string{tlsPlugin.Addr, "--tls-dir", foreign, "capabilities"},
			wantHint: "The endpoint most likely refused the client certificate in " + foreign + ": its CA is not one the endpoint trusts",
		},
		{
			name:     "endpoint of another CA",
			args:     []string{tlsPlugin.Addr, "--tls-dir", otherSet.QlikDir, "capabilities"},
			wantHint: "The endpoint's certificate is not signed by root_cert.pem in " + otherSet.QlikDir + ". If the endpoint's CA was replaced",
		},
		{
			name:     "name the certificate does not list",
			args:     []string{tlsPlugin.Addr, "--tls-dir", certs.QlikDir, "--server-name", "other.example", "capabilities"},
			wantHint: "The endpoint's certificate must list --server-name other.example.",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runCallCommand(t, "", tt.args...)
			if got.err == nil {
				t.Fatalf("call %q succeeded, want a connection error", tt.args)
			}
			message := got.err.Error()
			if !strings.HasPrefix(message, "connecting to "+tt.args[0]+": ") {
				t.Errorf("call %q error = %q, want it to start with %q", tt.args, message, "connecting to "+tt.args[0])
			}
			if !strings.Contains(message, "\n"+tt.wantHint) {
				t.Errorf("call %q error = %q, want the hint %q on a line of its own", tt.args, message, tt.wantHint)
			}
		})
	}
}

// TestCallTimeoutCoversInput checks that --timeout also limits the wait
// for standard input, which comes before the connection. The pipe closes
// after 5s, so that a command that still waits for it cannot hang the test.
func TestCallTimeoutCoversInput(t *testing.T) {
	stdin, writer := io.Pipe()
	defer time.AfterFunc(5*time.Second, func() { writer.Close() }).Stop()
	defer writer.Close() // ends the read left behind
	var stdout, stderr bytes.Buffer
	root := newRootCommand()
	root.SetArgs([]string{"call", ssetest.FreeAddress(t), "function", "Echo", "--timeout", "200ms"})
	root.SetIn(stdin)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	start := time.Now()
	err := root.Execute()
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("call with silent standard input took %v, want about --timeout 200ms", elapsed)
	}
	const want = "timed out reading standard input: it did not end within --timeout 200ms"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("call with silent standard input error = %v, want one containing %q", err, want)
	}
	if stderr.Len() != 0 {
		t.Errorf("call with standard input from a pipe printed %q to stderr, want nothing", stderr.String())
	}
}

// messageLimitConnector offers the function Big, with one STRING
// parameter, which returns a row of size bytes.
func messageLimitConnector(size int) *ssetest.Connector {
	return &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{{
				Name: "Big", FunctionId: 1, ReturnType: ssepb.DataType_STRING,
				Params: []*ssepb.Parameter{{Name: "s", DataType: ssepb.DataType_STRING}},
			}}}, nil
		},
		Execute: func(stream ssetest.Stream) error {
			for {
				if _, err := stream.Recv(); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					return err
				}
			}
			return stream.Send(ssetest.StringBundle(strings.Repeat("x", size)))
		},
	}
}

// TestCallNamesOwnMessageLimit checks that a response over
// --max-message-size is blamed on that flag, and that a request message
// rejected by the endpoint's own limit is not.
func TestCallNamesOwnMessageLimit(t *testing.T) {
	large := ssetest.ServePlugin(t, "127.0.0.1:0", messageLimitConnector(5000))
	strict := ssetest.ServePlugin(t, "127.0.0.1:0", messageLimitConnector(10), grpc.MaxRecvMsgSize(1000))
	long := strings.Repeat("y", 2000)
	tests := []struct {
		name       string
		args       []string
		wantStderr []string
		notStderr  []string
	}{
		{
			name:       "response over --max-message-size",
			args:       []string{large.Addr, "function", "Big", "--arg", "a", "--max-message-size", "1000"},
			wantStderr: []string{"larger than max", "the response had a message of 50", "more than this command's --max-message-size 1000; call again with --max-message-size 50"},
		},
		{
			name:       "request over the endpoint's limit, the same as --max-message-size",
			args:       []string{strict.Addr, "function", "Big", "--arg", long, "--max-message-size", "1000"},
			wantStderr: []string{"larger than max", "either the endpoint's, for a request message of that size, or this command's --max-message-size"},
			notStderr:  []string{"the response had"},
		},
		{
			name:       "request over the endpoint's limit",
			args:       []string{strict.Addr, "function", "Big", "--arg", long},
			wantStderr: []string{"larger than max"},
			notStderr:  []string{"--max-message-size"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runCallCommand(t, "", tt.args...)
			var exit exitError
			if !errors.As(got.err, &exit) || exit.code != 1 {
				t.Fatalf("call error = %v, want exit status 1; stderr:\n%s", got.err, got.stderr)
			}
			if !strings.Contains(got.stderr, "call ended with status ResourceExhausted") {
				t.Errorf("stderr = %q, want status ResourceExhausted", got.stderr)
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(got.stderr, want) {
					t.Errorf("stderr = %q, want it to contain %q", got.stderr, want)
				}
			}
			for _, unwanted := range tt.notStderr {
				if strings.Contains(got.stderr, unwanted) {
					t.Errorf("stderr = %q, want it without %q", got.stderr, unwanted)
				}
			}
		})
	}
}

// TestCallServerFolderHint checks that --tls-dir given the gateway's own
// folder, which contains a server certificate, or the whole set above it,
// gets an error naming the folder it expects.
func TestCallServerFolderHint(t *testing.T) {
	certs := ssetest.NewCerts(t)
	got := runCallCommand(t, "", ssetest.FreeAddress(t), "--tls-dir", certs.GatewayDir, "capabilities")
	want := "\n" + certs.GatewayDir + " is a server folder (it contains sse_server_cert.pem); --tls-dir expects a client folder (root_cert.pem, sse_client_cert.pem, sse_client_key.pem), such as qlik/ from ssegw certs init"
	if got.err == nil || !strings.Contains(got.err.Error(), want) {
		t.Errorf("call --tls-dir %s error = %v, want the hint %q", certs.GatewayDir, got.err, want)
	}

	top := filepath.Dir(certs.GatewayDir)
	got = runCallCommand(t, "", ssetest.FreeAddress(t), "--tls-dir", top, "capabilities")
	want = "\n" + top + " is a whole certificate set; --tls-dir expects its client folder, " + certs.QlikDir
	if got.err == nil || !strings.Contains(got.err.Error(), want) {
		t.Errorf("call --tls-dir %s error = %v, want the hint %q", top, got.err, want)
	}
}
