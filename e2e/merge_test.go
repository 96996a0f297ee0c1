package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// Response headers in which a plugin of TestPythonClientMergedEngine
// reports what it received.
const (
	mergedPluginHeader  = "x-merged-plugin"      // the plugin's name
	mergedIDHeader      = "x-merged-function-id" // the function id of the call
	mergedVersionHeader = "x-merged-version"     // the version field of the function header
	mergedScriptHeader  = "x-merged-script"      // the script text of EvaluateScript
)

// startMergedPlugin serves, in the test process, a plugin named name with
// functions. It serves ExecuteFunction only for the ids of its own
// functions. It replies to every call with headers that report what it
// received, and with the rows it received.
func startMergedPlugin(t *testing.T, name string, allowScript bool, functions ...*ssepb.FunctionDefinition) *ssetest.Plugin {
	t.Helper()
	capabilities := &ssepb.Capabilities{AllowScript: allowScript, PluginIdentifier: name, PluginVersion: "1.0.0", Functions: functions}
	return ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return capabilities, nil
		},
		Execute: func(stream ssetest.Stream) error {
			md, _ := metadata.FromIncomingContext(stream.Context())
			header, err := ssepb.ReadFunctionRequestHeader(md)
			if err != nil || header == nil {
				return status.Errorf(codes.InvalidArgument, "plugin %s: no valid function header (%v)", name, err)
			}
			if !slices.ContainsFunc(functions, func(f *ssepb.FunctionDefinition) bool { return f.GetFunctionId() == header.GetFunctionId() }) {
				return status.Errorf(codes.Unimplemented, "plugin %s has no function id %d", name, header.GetFunctionId())
			}
			reply := metadata.Pairs(mergedPluginHeader, name, mergedIDHeader, strconv.Itoa(int(header.GetFunctionId())), mergedVersionHeader, header.GetVersion())
			if err := stream.SendHeader(reply); err != nil {
				return err
			}
			return ssetest.Echo(stream)
		},
		Script: func(stream ssetest.Stream) error {
			md, _ := metadata.FromIncomingContext(stream.Context())
			header, err := ssepb.ReadScriptRequestHeader(md)
			if err != nil || header == nil {
				return status.Errorf(codes.InvalidArgument, "plugin %s: no valid script header (%v)", name, err)
			}
			if err := stream.SendHeader(metadata.Pairs(mergedPluginHeader, name, mergedScriptHeader, header.GetScript())); err != nil {
				return err
			}
			return ssetest.Echo(stream)
		},
	})
}

// mergedFunction returns a scalar numeric function definition with one
// numeric parameter.
func mergedFunction(id int32, name string) *ssepb.FunctionDefinition {
	return &ssepb.FunctionDefinition{
		FunctionId: id, Name: name,
		FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_NUMERIC,
		Params: []*ssepb.Parameter{{Name: "x", DataType: ssepb.DataType_NUMERIC}},
	}
}

// TestPythonClientMergedEngine checks a merged engine through an `ssegw
// serve` process, called over mutual TLS by the gRPC C-core client that
// takes Qlik's place. Engines A and B each have a plugin with a function
// named Forecast under different ids, and engine M merges them. M's
// capabilities must list both, B's renamed B_Forecast with ids from 1000.
// Each merged id must reach the right plugin with that plugin's own id. An
// unknown id must end with Unimplemented, and scripts must go to B, M's
// merge_scripts member.
func TestPythonClientMergedEngine(t *testing.T) {
	python := findPython(t)
	certs := ssetest.NewCerts(t)
	pluginA := startMergedPlugin(t, "A", false, mergedFunction(3, "Forecast"), mergedFunction(7, "Smooth"))
	pluginB := startMergedPlugin(t, "B", true, mergedFunction(5, "Forecast"), mergedFunction(0, "Trend"))
	gw := startGatewayProcess(t, map[string]any{
		"listeners": []map[string]any{
			{"address": "127.0.0.1:0", "engine": "M", "tls": map[string]any{"dir": certs.GatewayDir}},
		},
		"engines": map[string]any{
			"A": map[string]any{"backends": []map[string]any{{"address": pluginA.Addr}}},
			"B": map[string]any{"backends": []map[string]any{{"address": pluginB.Addr}}},
			"M": map[string]any{"merge": []string{"A", "B"}, "merge_scripts": "B"},
		},
	})

	// A GetCapabilities call forwarded to a member's plugin records the
	// member's capabilities before the response reaches the client, so once
	// both calls returned, M lists both members' functions.
	client := ssetest.DialTLS(t, gw.Addrs[0], certs.QlikDir, "localhost")
	for _, member := range []string{"A", "B"} {
		ctx := metadata.AppendToOutgoingContext(testContext(t, 30*time.Second), routing.EngineHeader, member)
		if _, err := client.GetCapabilities(ctx, &ssepb.Empty{}); err != nil {
			t.Fatalf("GetCapabilities of member %s: %v", member, err)
		}
	}

	// The calls, each with one bundle whose rows tell the calls apart.
	common := protoJSON(t, &ssepb.CommonRequestHeader{AppId: "e2e-merged", UserId: "e2e-user", Cardinality: 2})
	const version = "e2e-version-1"
	functionCall := func(id int32) qlikCall {
		bundle := &ssepb.BundledRows{Rows: []*ssepb.Row{
			{Duals: []*ssepb.Dual{{NumData: float64(id)}}},
			{Duals: []*ssepb.Dual{{NumData: float64(id) + 0.5}}},
		}}
		return qlikCall{
			Method:         "ExecuteFunction",
			FunctionHeader: protoJSON(t, &ssepb.FunctionRequestHeader{FunctionId: id, Version: version}),
			CommonHeader:   common,
			Bundles:        []json.RawMessage{protoJSON(t, bundle)},
		}
	}
	const script = "args[0] + 1"
	scriptCall := qlikCall{
		Method: "EvaluateScript",
		ScriptHeader: protoJSON(t, &ssepb.ScriptRequestHeader{
			Script: script, FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_NUMERIC,
			Params: []*ssepb.Parameter{{Name: "x", DataType: ssepb.DataType_NUMERIC}},
		}),
		CommonHeader: common,
		Bundles:      []json.RawMessage{protoJSON(t, ssetest.NumericBundle(3, 1))},
	}
	routes := []struct {
		mergedID   int32
		wantPlugin string
		wantID     int32
	}{
		{mergedID: 3, wantPlugin: "A", wantID: 3},
		{mergedID: 7, wantPlugin: "A", wantID: 7},
		{mergedID: 1000, wantPlugin: "B", wantID: 0},
		{mergedID: 1005, wantPlugin: "B", wantID: 5},
	}
	calls := []qlikCall{{Method: "GetCapabilities"}}
	for _, route := range routes {
		calls = append(calls, functionCall(route.mergedID))
	}
	calls = append(calls, functionCall(2000), scriptCall)
	py := qlikClient{python: python, descriptors: writeDescriptorSet(t), certDir: certs.QlikDir, address: gw.Addrs[0]}
	results := py.run(t, calls...)

	// Capabilities: both members' functions, B's by ids from 1000 and its
	// Forecast renamed, and scripts from B.
	capabilities := results[0].capabilities(t)
	if results[0].Code != "OK" {
		t.Errorf("GetCapabilities status = %s %q, want OK", results[0].Code, results[0].Details)
	}
	var functions []string
	for _, function := range capabilities.GetFunctions() {
		functions = append(functions, function.GetName()+"="+strconv.Itoa(int(function.GetFunctionId())))
	}
	if want := []string{"Forecast=3", "Smooth=7", "Trend=1000", "B_Forecast=1005"}; !slices.Equal(functions, want) {
		t.Errorf("GetCapabilities functions = %v, want %v", functions, want)
	}
	if !capabilities.GetAllowScript() {
		t.Errorf("GetCapabilities allowScript = false, want true, from merge_scripts member B")
	}

	// Each merged id reaches its plugin with the plugin's own id.
	for i, route := range routes {
		result := results[1+i]
		if result.Code != "OK" {
			t.Errorf("ExecuteFunction(id %d) status = %s %q, want OK", route.mergedID, result.Code, result.Details)
			continue
		}
		header := result.header(t)
		if got := header.Get(mergedPluginHeader); !slices.Equal(got, []string{route.wantPlugin}) {
			t.Errorf("ExecuteFunction(id %d) served by plugin %q, want [%s]", route.mergedID, got, route.wantPlugin)
		}
		if got, want := header.Get(mergedIDHeader), []string{strconv.Itoa(int(route.wantID))}; !slices.Equal(got, want) {
			t.Errorf("ExecuteFunction(id %d) plugin received function id %q, want %q", route.mergedID, got, want)
		}
		if got := header.Get(mergedVersionHeader); !slices.Equal(got, []string{version}) {
			t.Errorf("ExecuteFunction(id %d) plugin received version %q, want [%s]", route.mergedID, got, version)
		}
		rows := result.rows(t)
		if len(rows) != 2 {
			t.Errorf("ExecuteFunction(id %d) rows = %d, want 2", route.mergedID, len(rows))
			continue
		}
		if got, want := rows[1].GetDuals()[0].GetNumData(), float64(route.mergedID)+0.5; got != want {
			t.Errorf("ExecuteFunction(id %d) row 1 = %v, want %v echoed", route.mergedID, got, want)
		}
	}

	// An id that M does not list.
	unknown := results[1+len(routes)]
	if unknown.Code != "UNIMPLEMENTED" {
		t.Errorf("ExecuteFunction(id 2000) status = %s %q, want UNIMPLEMENTED", unknown.Code, unknown.Details)
	}
	for _, want := range []string{"engine M has no function id 2000", "B_Forecast (1005)", "Forecast (3)"} {
		if !strings.Contains(unknown.Details, want) {
			t.Errorf("ExecuteFunction(id 2000) details = %q, want it to contain %q", unknown.Details, want)
		}
	}
	if got := unknown.header(t).Get(mergedPluginHeader); len(got) != 0 {
		t.Errorf("ExecuteFunction(id 2000) served by plugin %q, want none", got)
	}

	// Scripts go to B.
	scripted := results[2+len(routes)]
	if scripted.Code != "OK" {
		t.Errorf("EvaluateScript status = %s %q, want OK", scripted.Code, scripted.Details)
	}
	header := scripted.header(t)
	if got := header.Get(mergedPluginHeader); !slices.Equal(got, []string{"B"}) {
		t.Errorf("EvaluateScript served by plugin %q, want [B]", got)
	}
	if got := header.Get(mergedScriptHeader); !slices.Equal(got, []string{script}) {
		t.Errorf("EvaluateScript plugin received script %q, want [%s]", got, script)
	}
	if got := len(scripted.rows(t)); got != 3 {
		t.Errorf("EvaluateScript rows = %d, want 3", got)
	}
}
