package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// pythonInstallHint is the instruction for getting a Python that runs
// qlik_client.py.
const pythonInstallHint = "apt-get install python3-grpcio python3-protobuf, or set QLIK_TEST_PYTHON to a Python with the grpcio and protobuf packages"

// findPython returns a Python interpreter that can import grpc and
// protobuf. It tries QLIK_TEST_PYTHON when set, else /usr/bin/python3,
// else python3 on PATH. Without one the test is skipped, unless the CI
// variable is set, because CI must run these tests.
func findPython(t *testing.T) string {
	t.Helper()
	if python := os.Getenv("QLIK_TEST_PYTHON"); python != "" {
		if err := checkPython(python); err != nil {
			t.Fatalf("QLIK_TEST_PYTHON=%s cannot run the Qlik stand-in: %v", python, err)
		}
		return python
	}

	candidates := []string{"/usr/bin/python3"}
	if onPath, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, onPath)
	}
	var problems []string
	for _, python := range candidates {
		err := checkPython(python)
		if err == nil {
			return python
		}
		problems = append(problems, fmt.Sprintf("%s: %v", python, err))
	}
	message := fmt.Sprintf("no Python with grpcio and protobuf found (%s); %s", strings.Join(problems, "; "), pythonInstallHint)
	if os.Getenv("CI") != "" {
		t.Fatal(message)
	}
	t.Skip(message)
	return ""
}

// checkPython reports why python cannot import grpc and protobuf, or nil.
func checkPython(python string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", "import grpc, google.protobuf").CombinedOutput()
	if err != nil && len(out) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return err
}

// writeDescriptorSet writes the qlik.sse file descriptor as a
// FileDescriptorSet, from which qlik_client.py builds its message classes.
func writeDescriptorSet(t *testing.T) string {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{
		File: []*descriptorpb.FileDescriptorProto{protodesc.ToFileDescriptorProto(ssepb.File_sse_proto)},
	}
	data, err := proto.Marshal(set)
	if err != nil {
		t.Fatalf("encoding the descriptor set: %v", err)
	}
	path := filepath.Join(t.TempDir(), "sse.pb")
	ssetest.WriteFile(t, path, data)
	return path
}

// qlikCall is one call for qlik_client.py, in the JSON form that the
// script reads. Messages are in protobuf's JSON form.
type qlikCall struct {
	Method         string            `json:"method"`
	FunctionHeader json.RawMessage   `json:"functionHeader,omitempty"`
	ScriptHeader   json.RawMessage   `json:"scriptHeader,omitempty"`
	CommonHeader   json.RawMessage   `json:"commonHeader,omitempty"`
	Bundles        []json.RawMessage `json:"bundles,omitempty"`
}

// qlikResult is what qlik_client.py reports about one call.
type qlikResult struct {
	Method       string              `json:"method"`
	Code         string              `json:"code"`
	Details      string              `json:"details"`
	Header       map[string][]string `json:"header"`
	Trailer      map[string][]string `json:"trailer"`
	Capabilities json.RawMessage     `json:"capabilities"`
	Bundles      []json.RawMessage   `json:"bundles"`
}

// qlikClient runs qlik_client.py against one gateway listener.
type qlikClient struct {
	python      string
	descriptors string
	certDir     string
	address     string // host:port on 127.0.0.1
	serverName  string // empty to check the certificate against the address
}

// run makes calls in order on one channel and returns the results. It
// fails the test when the script fails or reports another number of calls.
func (c qlikClient) run(t *testing.T, calls ...qlikCall) []qlikResult {
	t.Helper()
	script, err := filepath.Abs("qlik_client.py")
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(map[string]any{"calls": calls})
	if err != nil {
		t.Fatalf("encoding the calls: %v", err)
	}
	callsFile := filepath.Join(t.TempDir(), "calls.json")
	ssetest.WriteFile(t, callsFile, data)

	// The ipv4: scheme makes gRPC use the address as it is, with no name
	// resolution at all.
	args := []string{script, "ipv4:" + c.address, "--cert-dir", c.certDir, "--descriptors", c.descriptors, "--calls", callsFile}
	if c.serverName != "" {
		args = append(args, "--server-name", c.serverName)
	}
	p := ssetest.StartProcess(t, c.python, nil, args...)
	if err := p.Wait(t, 2*time.Minute); err != nil {
		t.Fatalf("qlik_client.py: %v\nstderr:\n%s", err, p.Stderr())
	}

	var report struct {
		Calls []qlikResult `json:"calls"`
	}
	if err := json.Unmarshal([]byte(p.Stdout()), &report); err != nil {
		t.Fatalf("reading qlik_client.py's report: %v\nstdout:\n%s\nstderr:\n%s", err, p.Stdout(), p.Stderr())
	}
	if len(report.Calls) != len(calls) {
		t.Fatalf("qlik_client.py reported %d calls, want %d", len(report.Calls), len(calls))
	}
	return report.Calls
}

// header returns the response headers, with -bin values decoded.
func (r qlikResult) header(t *testing.T) metadata.MD {
	t.Helper()
	return decodeMetadata(t, r.Header)
}

// rows decodes the response bundles and returns their rows in order.
func (r qlikResult) rows(t *testing.T) []*ssepb.Row {
	t.Helper()
	var rows []*ssepb.Row
	for i, data := range r.Bundles {
		bundle := &ssepb.BundledRows{}
		if err := protojson.Unmarshal(data, bundle); err != nil {
			t.Fatalf("%s: response bundle %d: %v", r.Method, i, err)
		}
		rows = append(rows, bundle.GetRows()...)
	}
	return rows
}

// capabilities decodes a GetCapabilities response.
func (r qlikResult) capabilities(t *testing.T) *ssepb.Capabilities {
	t.Helper()
	capabilities := &ssepb.Capabilities{}
	if err := protojson.Unmarshal(r.Capabilities, capabilities); err != nil {
		t.Fatalf("GetCapabilities response %s: %v", r.Capabilities, err)
	}
	return capabilities
}

// decodeMetadata turns the script's metadata into metadata.MD, decoding
// the base64 values of -bin keys.
func decodeMetadata(t *testing.T, grouped map[string][]string) metadata.MD {
	t.Helper()
	md := metadata.MD{}
	for key, values := range grouped {
		for _, value := range values {
			if strings.HasSuffix(key, "-bin") {
				decoded, err := base64.StdEncoding.DecodeString(value)
				if err != nil {
					t.Fatalf("metadata %s: value %q is not base64: %v", key, value, err)
				}
				value = string(decoded)
			}
			md.Append(key, value)
		}
	}
	return md
}

// protoJSON returns m in protobuf's JSON form.
func protoJSON(t *testing.T, m proto.Message) json.RawMessage {
	t.Helper()
	data, err := protojson.Marshal(m)
	if err != nil {
		t.Fatalf("encoding %T: %v", m, err)
	}
	return data
}

// Shape of the calls that TestPythonClientThroughGateway makes.
const (
	sumRows       = 3000
	sumBundleRows = 500
	scriptRows    = 1200
	scriptBundle  = 400
)

// sumOfRowsCall returns an ExecuteFunction call of the example plugin's
// SumOfRows over sumRows rows of two numeric columns, in bundles of
// sumBundleRows rows, and the sum expected for each row.
func sumOfRowsCall(t *testing.T) (qlikCall, []float64) {
	t.Helper()
	call := qlikCall{
		Method:         "ExecuteFunction",
		FunctionHeader: protoJSON(t, &ssepb.FunctionRequestHeader{FunctionId: example.FunctionSumOfRows}),
		CommonHeader:   protoJSON(t, &ssepb.CommonRequestHeader{AppId: "e2e-app", UserId: "e2e-user", Cardinality: sumRows}),
	}
	want := make([]float64, 0, sumRows)
	for start := 0; start < sumRows; start += sumBundleRows {
		bundle := &ssepb.BundledRows{}
		for i := start; i < start+sumBundleRows; i++ {
			// Multiples of 0.5 and small integers keep each sum exact.
			a, b := 1.5*float64(i), float64(i%7-3)
			bundle.Rows = append(bundle.Rows, &ssepb.Row{Duals: []*ssepb.Dual{{NumData: a}, {NumData: b}}})
			want = append(want, a+b)
		}
		call.Bundles = append(call.Bundles, protoJSON(t, bundle))
	}
	return call, want
}

// scriptCall returns an EvaluateScript call over scriptRows rows of a
// string and a number, in bundles of scriptBundle rows, and the strings
// expected back. The example plugin returns each row's first parameter.
func scriptCall(t *testing.T) (qlikCall, []string) {
	t.Helper()
	header := &ssepb.ScriptRequestHeader{
		Script:       "args[0]",
		FunctionType: ssepb.FunctionType_SCALAR,
		ReturnType:   ssepb.DataType_STRING,
		Params: []*ssepb.Parameter{
			{Name: "text", DataType: ssepb.DataType_STRING},
			{Name: "n", DataType: ssepb.DataType_NUMERIC},
		},
	}
	call := qlikCall{
		Method:       "EvaluateScript",
		ScriptHeader: protoJSON(t, header),
		CommonHeader: protoJSON(t, &ssepb.CommonRequestHeader{AppId: "e2e-app", UserId: "e2e-user", Cardinality: scriptRows}),
	}
	want := make([]string, 0, scriptRows)
	for start := 0; start < scriptRows; start += scriptBundle {
		bundle := &ssepb.BundledRows{}
		for i := start; i < start+scriptBundle; i++ {
			text := fmt.Sprintf("Zeile-%d-ä€", i) // non-ASCII, to check UTF-8 both ways
			bundle.Rows = append(bundle.Rows, &ssepb.Row{Duals: []*ssepb.Dual{{StrData: text}, {NumData: float64(i)}}})
			want = append(want, text)
		}
		call.Bundles = append(call.Bundles, protoJSON(t, bundle))
	}
	return call, want
}

// TestPythonClientThroughGateway checks that a gRPC C-core client with
// Qlik's certificate folder can call an `ssegw serve` process over mutual
// TLS. Each call must reach the plugin of the requested engine, by port
// and by host name on a shared port, and return every capability and row
// with status OK.
func TestPythonClientThroughGateway(t *testing.T) {
	python := findPython(t)
	certs := ssetest.NewCerts(t)
	_, pluginR := ssetest.StartExamplePlugin(t, "--name", "plugin-r")
	_, pluginPy := ssetest.StartExamplePlugin(t, "--name", "plugin-py")

	// One mutual TLS port per engine, and a shared one with no default
	// engine, where the host name chooses.
	serverTLS := map[string]any{"dir": certs.GatewayDir}
	gw := startGatewayProcess(t, map[string]any{
		"listeners": []map[string]any{
			{"address": "127.0.0.1:0", "engine": "R", "tls": serverTLS},
			{"address": "127.0.0.1:0", "engine": "Py", "tls": serverTLS},
			{"address": "127.0.0.1:0", "tls": serverTLS},
		},
		"engines": map[string]any{
			"R":  map[string]any{"hosts": []string{"r.gw.test"}, "backends": []map[string]any{{"address": pluginR}}},
			"Py": map[string]any{"hosts": []string{"py.gw.test"}, "backends": []map[string]any{{"address": pluginPy}}},
		},
	})
	descriptors := writeDescriptorSet(t)
	sumCall, wantSums := sumOfRowsCall(t)
	evalCall, wantTexts := scriptCall(t)

	routes := []struct {
		name       string
		address    string
		serverName string
		plugin     string
	}{
		{"R by port", gw.Addrs[0], "", "plugin-r"},
		{"Py by port", gw.Addrs[1], "", "plugin-py"},
		{"R by host name", gw.Addrs[2], "r.gw.test", "plugin-r"},
		{"Py by host name", gw.Addrs[2], "py.gw.test", "plugin-py"},
	}
	for _, route := range routes {
		t.Run(route.name, func(t *testing.T) {
			t.Parallel()
			client := qlikClient{python: python, descriptors: descriptors, certDir: certs.QlikDir, address: route.address, serverName: route.serverName}
			results := client.run(t, qlikCall{Method: "GetCapabilities"}, sumCall, evalCall)
			for _, result := range results {
				if want := "OK"; result.Code != want {
					t.Errorf("%s status = %s %q, want %s", result.Method, result.Code, result.Details, want)
				}
				if got := result.header(t).Get(example.InstanceHeader); len(got) != 1 || got[0] != route.plugin {
					t.Errorf("%s header %s = %q, want [%s]", result.Method, example.InstanceHeader, got, route.plugin)
				}
			}

			// Capabilities: the engine's own plugin, with its functions.
			capabilities := results[0].capabilities(t)
			if got := capabilities.GetPluginIdentifier(); got != route.plugin {
				t.Errorf("GetCapabilities pluginIdentifier = %q, want %q", got, route.plugin)
			}
			if !capabilities.GetAllowScript() {
				t.Errorf("GetCapabilities allowScript = false, want true")
			}
			functions := map[string]int32{}
			for _, function := range capabilities.GetFunctions() {
				functions[function.GetName()] = function.GetFunctionId()
			}
			if id, ok := functions["SumOfRows"]; !ok || id != example.FunctionSumOfRows {
				t.Errorf("GetCapabilities function SumOfRows id = %d (listed %v), want %d", id, ok, example.FunctionSumOfRows)
			}

			// SumOfRows: one sum per row, one response bundle per request
			// bundle, since the gateway forwards message by message.
			if got, want := len(results[1].Bundles), sumRows/sumBundleRows; got != want {
				t.Errorf("SumOfRows response bundles = %d, want %d", got, want)
			}
			sums := results[1].rows(t)
			if len(sums) != len(wantSums) {
				t.Errorf("SumOfRows rows = %d, want %d", len(sums), len(wantSums))
			}
			mismatches := 0
			for i := 0; i < len(sums) && i < len(wantSums) && mismatches < 5; i++ {
				duals := sums[i].GetDuals()
				if len(duals) != 1 || duals[0].GetNumData() != wantSums[i] {
					t.Errorf("SumOfRows row %d = %v, want [numData:%v]", i, duals, wantSums[i])
					mismatches++
				}
			}

			// EvaluateScript: each row's first parameter.
			texts := results[2].rows(t)
			if len(texts) != len(wantTexts) {
				t.Errorf("EvaluateScript rows = %d, want %d", len(texts), len(wantTexts))
			}
			mismatches = 0
			for i := 0; i < len(texts) && i < len(wantTexts) && mismatches < 5; i++ {
				duals := texts[i].GetDuals()
				if len(duals) != 1 || duals[0].GetStrData() != wantTexts[i] {
					t.Errorf("EvaluateScript row %d = %v, want [strData:%q]", i, duals, wantTexts[i])
					mismatches++
				}
			}
		})
	}

	// Without a host name, the shared port has nothing to route by.
	t.Run("shared port without host name", func(t *testing.T) {
		t.Parallel()
		client := qlikClient{python: python, descriptors: descriptors, certDir: certs.QlikDir, address: gw.Addrs[2]}
		result := client.run(t, qlikCall{Method: "GetCapabilities"})[0]
		if want := "UNIMPLEMENTED"; result.Code != want {
			t.Errorf("GetCapabilities status = %s %q, want %s", result.Code, result.Details, want)
		}
		if !strings.Contains(result.Details, "Py, R") {
			t.Errorf("GetCapabilities details = %q, want the configured engines \"Py, R\" listed", result.Details)
		}
	})
}
