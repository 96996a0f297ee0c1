package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/otlptest"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// Response headers in which a merge test plugin reports what it received.
const (
	mergePluginHeader  = "x-merge-plugin"       // the plugin's name
	mergeIDHeader      = "x-merge-function-id"  // the function id of the call
	mergeVersionHeader = "x-merge-version"      // the version field of the function header
	mergeCommonHeader  = "x-merge-common-bin"   // the common request header, as received
	mergeFuncHeader    = "x-merge-function-bin" // the function request header, as received
	mergeScriptHeader  = "x-merge-script"       // the script text of EvaluateScript
	mergeAppID         = "merged-app"           // the app id the test clients send
	mergeVersion       = "qlik-version-12.1.99" // the version the test clients send
)

// mergePlugin is a test plugin behind one member of a merged engine. It
// serves only the function ids of its own capabilities. It replies to each
// call with headers that report what it received, and echoes the rows.
type mergePlugin struct {
	*ssetest.Plugin
	name     string
	executed atomic.Int64 // ExecuteFunction calls
	scripts  atomic.Int64 // EvaluateScript calls
}

// startMergePlugin starts a mergePlugin named name with capabilities.
func startMergePlugin(t *testing.T, name string, capabilities *ssepb.Capabilities) *mergePlugin {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveMergePlugin(t, lis, name, capabilities)
}

// serveMergePlugin is startMergePlugin on a listener of the test's.
func serveMergePlugin(t *testing.T, lis net.Listener, name string, capabilities *ssepb.Capabilities) *mergePlugin {
	t.Helper()
	p := &mergePlugin{name: name}
	capabilities.PluginIdentifier = name
	p.Plugin = ssetest.ServePluginOn(t, lis, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return capabilities, nil
		},
		Execute: func(stream ssetest.Stream) error {
			p.executed.Add(1)
			md, _ := metadata.FromIncomingContext(stream.Context())
			header, err := ssepb.ReadFunctionRequestHeader(md)
			if err != nil || header == nil {
				return status.Errorf(codes.InvalidArgument, "plugin %s: no valid function header (%v)", name, err)
			}
			if !slices.ContainsFunc(capabilities.GetFunctions(), func(f *ssepb.FunctionDefinition) bool {
				return f.GetFunctionId() == header.GetFunctionId()
			}) {
				return status.Errorf(codes.Unimplemented, "plugin %s has no function id %d", name, header.GetFunctionId())
			}
			reply := metadata.Pairs(
				mergePluginHeader, name,
				mergeIDHeader, strconv.Itoa(int(header.GetFunctionId())),
			)
			if version := header.GetVersion(); utf8.ValidString(version) {
				// gRPC refuses to send a text header that is not
				// printable ASCII; mergeFuncHeader has the version too.
				reply.Set(mergeVersionHeader, version)
			}
			reply.Set(mergeCommonHeader, md.Get(ssepb.CommonRequestHeaderKey)...)
			reply.Set(mergeFuncHeader, md.Get(ssepb.FunctionRequestHeaderKey)...)
			if err := stream.SendHeader(reply); err != nil {
				return err
			}
			return ssetest.Echo(stream)
		},
		Script: func(stream ssetest.Stream) error {
			p.scripts.Add(1)
			md, _ := metadata.FromIncomingContext(stream.Context())
			header, err := ssepb.ReadScriptRequestHeader(md)
			if err != nil || header == nil {
				return status.Errorf(codes.InvalidArgument, "plugin %s: no valid script header (%v)", name, err)
			}
			if err := stream.SendHeader(metadata.Pairs(mergePluginHeader, name, mergeScriptHeader, header.GetScript())); err != nil {
				return err
			}
			return ssetest.Echo(stream)
		},
	})
	return p
}

// mergeFunction returns a scalar numeric function definition whose one
// parameter is named after the function and the plugin, so that a
// definition shows where it came from.
func mergeFunction(plugin string, id int32, name string) *ssepb.FunctionDefinition {
	return &ssepb.FunctionDefinition{
		FunctionId: id, Name: name,
		FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_NUMERIC,
		Params: []*ssepb.Parameter{{Name: strings.ToLower(plugin + "_" + name), DataType: ssepb.DataType_NUMERIC}},
	}
}

// mergedSetup is engine M merging engines A and B, each with one plugin,
// behind a plaintext gateway listener whose default engine is M.
type mergedSetup struct {
	a, b    *mergePlugin
	gateway *ssetest.Gateway
	client  ssepb.ConnectorClient
}

// startMergedSetup starts plugins A and B, whose capabilities both have a
// function named Forecast under different ids, and a gateway with engine M
// merging A and B. mergeScripts is M's merge_scripts. It returns once A
// and B know their capabilities, so that M lists both members' functions.
func startMergedSetup(t *testing.T, mergeScripts string) *mergedSetup {
	t.Helper()
	return startMergedSetupWith(t, func(engines map[string]*config.Engine) { engines["M"].MergeScripts = mergeScripts })
}

// startMergedSetupWith is startMergedSetup with the engines A, B and M
// changed by tune before the gateway starts.
func startMergedSetupWith(t *testing.T, tune func(engines map[string]*config.Engine)) *mergedSetup {
	t.Helper()
	a := startMergePlugin(t, "A", &ssepb.Capabilities{
		AllowScript: false,
		Functions:   []*ssepb.FunctionDefinition{mergeFunction("A", 3, "Forecast"), mergeFunction("A", 7, "Smooth")},
	})
	b := startMergePlugin(t, "B", &ssepb.Capabilities{
		AllowScript: true,
		Functions:   []*ssepb.FunctionDefinition{mergeFunction("B", 5, "Forecast"), mergeFunction("B", 0, "Trend")},
	})
	engines := map[string]*config.Engine{
		"A": ssetest.Engine(a.Addr),
		"B": ssetest.Engine(b.Addr),
		"M": {Merge: []string{"A", "B"}},
	}
	tune(engines)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("M", nil)},
		Engines:   engines,
	})
	client := ssetest.Dial(t, gw.Addrs[0])

	// A GetCapabilities call forwarded to a member's plugin records the
	// member's capabilities before the response reaches the client, unless
	// the probes already did.
	for _, member := range []string{"A", "B"} {
		ctx := metadata.AppendToOutgoingContext(testContext(t), routing.EngineHeader, member)
		if _, err := client.GetCapabilities(ctx, &ssepb.Empty{}); err != nil {
			t.Fatalf("GetCapabilities of member %s: %v", member, err)
		}
	}
	return &mergedSetup{a: a, b: b, gateway: gw, client: client}
}

// mergeCallResult is what a client sees of a finished streaming call.
type mergeCallResult struct {
	header metadata.MD
	rows   []*ssepb.Row
	err    error // nil for OK
}

// callMerged makes a streaming call of method ("ExecuteFunction" or
// "EvaluateScript") with md, sends bundle and half-closes, and reads the
// whole response.
func callMerged(ctx context.Context, client ssepb.ConnectorClient, method string, md metadata.MD, bundle *ssepb.BundledRows) mergeCallResult {
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, md))
	defer cancel()
	var stream ssepb.Connector_ExecuteFunctionClient
	var err error
	if method == "EvaluateScript" {
		stream, err = client.EvaluateScript(ctx)
	} else {
		stream, err = client.ExecuteFunction(ctx)
	}
	if err != nil {
		return mergeCallResult{err: err}
	}

	// A failed send means that the call already ended, and Recv reports
	// how.
	if stream.Send(bundle) == nil {
		stream.CloseSend()
	}

	var result mergeCallResult
	for {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			result.err = err
			break
		}
		result.rows = append(result.rows, response.GetRows()...)
	}
	result.header, _ = stream.Header()
	return result
}

// functionHeaders returns the request headers of an ExecuteFunction call
// of function id, with mergeVersion in the function header and
// mergeAppID in the common header.
func functionHeaders(t *testing.T, id int32) metadata.MD {
	t.Helper()
	md := metadata.MD{}
	if err := ssepb.SetHeader(md, ssepb.FunctionRequestHeaderKey, &ssepb.FunctionRequestHeader{FunctionId: id, Version: mergeVersion}); err != nil {
		t.Fatal(err)
	}
	if err := ssepb.SetHeader(md, ssepb.CommonRequestHeaderKey, &ssepb.CommonRequestHeader{AppId: mergeAppID, UserId: "user", Cardinality: 2}); err != nil {
		t.Fatal(err)
	}
	return md
}

// idAndName is a function of a capabilities list, by id and name.
type idAndName struct {
	ID   int32
	Name string
}

// functionsOf returns the ids and names of capabilities' functions, in
// order.
func functionsOf(capabilities *ssepb.Capabilities) []idAndName {
	var out []idAndName
	for _, function := range capabilities.GetFunctions() {
		out = append(out, idAndName{function.GetFunctionId(), function.GetName()})
	}
	return out
}

// TestMergedEngineCapabilities checks GetCapabilities of a merged engine:
// both members' functions, the second member's by ids from 1000 and its
// Forecast renamed B_Forecast with its own definition otherwise, and
// scripts offered exactly when merge_scripts names a member whose plugin
// offers them and whose scripts policy is not deny.
func TestMergedEngineCapabilities(t *testing.T) {
	want := []idAndName{{3, "Forecast"}, {7, "Smooth"}, {1000, "Trend"}, {1005, "B_Forecast"}}
	tests := []struct {
		name            string
		mergeScripts    string
		scriptsB        string // B's scripts policy; empty for the default
		wantAllowScript bool
	}{
		{name: "scripts from B", mergeScripts: "B", wantAllowScript: true},
		{name: "scripts from A, which has none", mergeScripts: "A", wantAllowScript: false},
		{name: "no merge_scripts", wantAllowScript: false},
		// B's plugin offers scripts, but B rejects every one.
		{name: "scripts from B, which denies them", mergeScripts: "B", scriptsB: config.ScriptsDeny, wantAllowScript: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setup := startMergedSetupWith(t, func(engines map[string]*config.Engine) {
				engines["M"].MergeScripts = tt.mergeScripts
				engines["B"].Scripts = tt.scriptsB
			})
			capabilities, err := setup.client.GetCapabilities(testContext(t), &ssepb.Empty{})
			if err != nil {
				t.Fatalf("GetCapabilities through M: %v", err)
			}
			if diff := cmp.Diff(want, functionsOf(capabilities)); diff != "" {
				t.Errorf("GetCapabilities through M functions (-want +got):\n%s", diff)
			}
			if got := capabilities.GetAllowScript(); got != tt.wantAllowScript {
				t.Errorf("GetCapabilities through M allowScript = %v, want %v", got, tt.wantAllowScript)
			}

			wantRenamed := mergeFunction("B", 5, "Forecast")
			wantRenamed.FunctionId, wantRenamed.Name = 1005, "B_Forecast"
			for _, function := range capabilities.GetFunctions() {
				if function.GetFunctionId() == 1005 && !proto.Equal(function, wantRenamed) {
					t.Errorf("GetCapabilities through M function 1005 = %v, want %v", function, wantRenamed)
				}
			}
			if got := setup.a.executed.Load() + setup.b.executed.Load(); got != 0 {
				t.Errorf("ExecuteFunction calls reaching the plugins = %d, want 0", got)
			}
		})
	}
}

// TestMergedEngineExecuteFunction checks that a call of a merged function
// id reaches the member's plugin with the plugin's own function id, and
// with the rest of Qlik's headers as sent, and that the other plugin gets
// no call.
func TestMergedEngineExecuteFunction(t *testing.T) {
	setup := startMergedSetup(t, "B")
	plugins := map[string]*mergePlugin{"A": setup.a, "B": setup.b}
	common := functionHeaders(t, 0).Get(ssepb.CommonRequestHeaderKey)
	tests := []struct {
		mergedID   int32
		wantPlugin string
		wantID     int32
	}{
		{mergedID: 3, wantPlugin: "A", wantID: 3},
		{mergedID: 7, wantPlugin: "A", wantID: 7},
		{mergedID: 1000, wantPlugin: "B", wantID: 0},
		{mergedID: 1005, wantPlugin: "B", wantID: 5},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(int(tt.mergedID)), func(t *testing.T) {
			executedBefore := map[string]int64{"A": setup.a.executed.Load(), "B": setup.b.executed.Load()}
			bundle := ssetest.NumericBundle(2, 1)
			result := callMerged(testContext(t), setup.client, "ExecuteFunction", functionHeaders(t, tt.mergedID), bundle)
			if result.err != nil {
				t.Fatalf("ExecuteFunction(id %d) through M: %v", tt.mergedID, result.err)
			}
			if got := result.header.Get(mergePluginHeader); !slices.Equal(got, []string{tt.wantPlugin}) {
				t.Errorf("ExecuteFunction(id %d) served by plugin %q, want [%s]", tt.mergedID, got, tt.wantPlugin)
			}
			if got, want := result.header.Get(mergeIDHeader), []string{strconv.Itoa(int(tt.wantID))}; !slices.Equal(got, want) {
				t.Errorf("ExecuteFunction(id %d) plugin received function id %q, want %q", tt.mergedID, got, want)
			}
			if got := result.header.Get(mergeVersionHeader); !slices.Equal(got, []string{mergeVersion}) {
				t.Errorf("ExecuteFunction(id %d) plugin received version %q, want [%s]", tt.mergedID, got, mergeVersion)
			}
			if got := result.header.Get(mergeCommonHeader); !slices.Equal(got, common) {
				t.Errorf("ExecuteFunction(id %d) plugin received common header %q, want %q", tt.mergedID, got, common)
			}
			if diff := cmp.Diff(bundle.GetRows(), result.rows, cmp.Comparer(proto.Equal)); diff != "" {
				t.Errorf("ExecuteFunction(id %d) rows (-want +got):\n%s", tt.mergedID, diff)
			}
			for name, plugin := range plugins {
				want := executedBefore[name]
				if name == tt.wantPlugin {
					want++
				}
				if got := plugin.executed.Load(); got != want {
					t.Errorf("ExecuteFunction(id %d) calls of plugin %s = %d, want %d", tt.mergedID, name, got, want)
				}
			}
		})
	}

	// The access record names the member and its function as the plugin
	// receives them, and the merged engine and function as Qlik calls them.
	found := false
	for _, record := range setup.gateway.Logs.Records("call") {
		if record["merged_engine"] == "M" && record["merged_function"] == "B_Forecast" {
			found = true
			if record["engine"] != "B" || record["function"] != "Forecast" || record["function_id"] != float64(5) {
				t.Errorf("access record of B_Forecast = engine %v, function %v, id %v; want B, Forecast, 5", record["engine"], record["function"], record["function_id"])
			}
		}
	}
	if !found {
		t.Errorf("no access record with merged_engine M and merged_function B_Forecast:\n%s", setup.gateway.Logs)
	}
}

// TestMergedEngineKeepsFunctionHeader checks that a member's plugin gets
// Qlik's function header as sent, with only the function id changed: a
// version that is not valid UTF-8 and a field that sse.proto does not know
// pass. The merged engine once encoded the header again, which refused
// such a version with InvalidArgument, where a plain engine forwards it.
func TestMergedEngineKeepsFunctionHeader(t *testing.T) {
	setup := startMergedSetup(t, "B")
	// Field 1 (functionId) 1005, field 2 (version) "v\xff", field 9 the
	// varint 7.
	const sent = "\x08\xed\x07\x12\x02v\xff\x48\x07"
	md := functionHeaders(t, 0)
	md.Set(ssepb.FunctionRequestHeaderKey, sent)
	result := callMerged(testContext(t), setup.client, "ExecuteFunction", md, ssetest.NumericBundle(2, 1))
	if result.err != nil {
		t.Fatalf("ExecuteFunction(id 1005, version not UTF-8) through M: %v", result.err)
	}
	if got := result.header.Get(mergePluginHeader); !slices.Equal(got, []string{"B"}) {
		t.Errorf("served by plugin %q, want [B]", got)
	}
	received := result.header.Get(mergeFuncHeader)
	if len(received) != 1 || !strings.HasPrefix(received[0], sent) {
		t.Fatalf("plugin received function header %q, want the one sent, %q, with the member's id added", received, sent)
	}
	header, err := ssepb.ReadFunctionRequestHeader(metadata.Pairs(ssepb.FunctionRequestHeaderKey, received[0]))
	if err != nil {
		t.Fatal(err)
	}
	if header.GetFunctionId() != 5 || header.GetVersion() != "v\xff" {
		t.Errorf("plugin read function id %d and version %q, want 5 and %q", header.GetFunctionId(), header.GetVersion(), "v\xff")
	}
}

// TestMergedEngineUnknownFunction checks that a call of a function id the
// merged engine does not list ends with Unimplemented from the gateway,
// naming the functions it does list, and reaches no plugin. A call without
// a function header ends with InvalidArgument.
func TestMergedEngineUnknownFunction(t *testing.T) {
	setup := startMergedSetup(t, "B")
	tests := []struct {
		name     string
		md       metadata.MD
		wantCode codes.Code
		wantText []string
	}{
		{
			name:     "id of a function B lacks",
			md:       functionHeaders(t, 1003),
			wantCode: codes.Unimplemented,
			wantText: []string{"engine M has no function id 1003", "Forecast (3)", "Smooth (7)", "Trend (1000)", "B_Forecast (1005)"},
		},
		{
			name:     "id of a function A lacks",
			md:       functionHeaders(t, 5),
			wantCode: codes.Unimplemented,
			wantText: []string{"engine M has no function id 5", "B_Forecast (1005)"},
		},
		{
			name:     "id past the last member",
			md:       functionHeaders(t, 2000),
			wantCode: codes.Unimplemented,
			wantText: []string{"engine M has no function id 2000", "B_Forecast (1005)"},
		},
		{
			name:     "negative id",
			md:       functionHeaders(t, -1),
			wantCode: codes.Unimplemented,
			wantText: []string{"engine M has no function id -1"},
		},
		{
			name:     "no function header",
			md:       metadata.MD{},
			wantCode: codes.InvalidArgument,
			wantText: []string{"engine M", ssepb.FunctionRequestHeaderKey},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			result := callMerged(testContext(t), setup.client, "ExecuteFunction", tt.md, ssetest.NumericBundle(1, 1))
			st := status.Convert(result.err)
			if st.Code() != tt.wantCode {
				t.Errorf("ExecuteFunction through M status = %v %q, want %v", st.Code(), st.Message(), tt.wantCode)
			}
			for _, text := range tt.wantText {
				if !strings.Contains(st.Message(), text) {
					t.Errorf("ExecuteFunction through M message = %q, want it to contain %q", st.Message(), text)
				}
			}
			if got := setup.a.executed.Load() + setup.b.executed.Load(); got != 0 {
				t.Errorf("ExecuteFunction calls reaching the plugins = %d, want 0", got)
			}
		})
	}
}

// TestMergedEngineEvaluateScript checks that EvaluateScript through a
// merged engine reaches the merge_scripts member's plugin with the script
// as sent. Without merge_scripts the call must end with Unimplemented and
// reach no plugin.
func TestMergedEngineEvaluateScript(t *testing.T) {
	const script = "return args[0] * 2"
	md, err := ssepb.ScriptCallMetadata(&ssepb.ScriptRequestHeader{
		Script: script, FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_NUMERIC,
		Params: []*ssepb.Parameter{{Name: "x", DataType: ssepb.DataType_NUMERIC}},
	}, &ssepb.CommonRequestHeader{AppId: mergeAppID, UserId: "user", Cardinality: 3})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("to merge_scripts", func(t *testing.T) {
		setup := startMergedSetup(t, "B")
		bundle := ssetest.NumericBundle(3, 1)
		result := callMerged(testContext(t), setup.client, "EvaluateScript", md, bundle)
		if result.err != nil {
			t.Fatalf("EvaluateScript through M: %v", result.err)
		}
		if got := result.header.Get(mergePluginHeader); !slices.Equal(got, []string{"B"}) {
			t.Errorf("EvaluateScript served by plugin %q, want [B]", got)
		}
		if got := result.header.Get(mergeScriptHeader); !slices.Equal(got, []string{script}) {
			t.Errorf("EvaluateScript plugin received script %q, want [%s]", got, script)
		}
		if diff := cmp.Diff(bundle.GetRows(), result.rows, cmp.Comparer(proto.Equal)); diff != "" {
			t.Errorf("EvaluateScript rows (-want +got):\n%s", diff)
		}
		if got := setup.a.scripts.Load(); got != 0 {
			t.Errorf("EvaluateScript calls of plugin A = %d, want 0", got)
		}
		if got := setup.b.scripts.Load(); got != 1 {
			t.Errorf("EvaluateScript calls of plugin B = %d, want 1", got)
		}
	})

	t.Run("without merge_scripts", func(t *testing.T) {
		setup := startMergedSetup(t, "")
		result := callMerged(testContext(t), setup.client, "EvaluateScript", md, ssetest.NumericBundle(3, 1))
		st := status.Convert(result.err)
		if st.Code() != codes.Unimplemented {
			t.Errorf("EvaluateScript through M status = %v %q, want %v", st.Code(), st.Message(), codes.Unimplemented)
		}
		if want := "engine M offers no scripts"; !strings.Contains(st.Message(), want) {
			t.Errorf("EvaluateScript through M message = %q, want it to contain %q", st.Message(), want)
		}
		if got := setup.a.scripts.Load() + setup.b.scripts.Load(); got != 0 {
			t.Errorf("EvaluateScript calls reaching the plugins = %d, want 0", got)
		}
	})
}

// TestMergedEngineWaitsForMembers starts the gateway while member B's
// plugin does not answer yet. QlikView asks for capabilities only when it
// starts, so the merged list must not leave B's functions out because B's
// first probe has not succeeded: the call waits for B, up to B's
// reconnect_buffer, and without B after that.
func TestMergedEngineWaitsForMembers(t *testing.T) {
	capabilitiesA := &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{mergeFunction("A", 3, "Forecast")}}
	capabilitiesB := &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{mergeFunction("B", 5, "Forecast")}}
	tests := []struct {
		name            string
		reconnectBuffer time.Duration
		serveB          bool
		want            []idAndName
	}{
		{name: "B starts while the call waits", reconnectBuffer: time.Minute, serveB: true,
			want: []idAndName{{3, "Forecast"}, {1005, "B_Forecast"}}},
		{name: "B stays silent past its reconnect_buffer", reconnectBuffer: 200 * time.Millisecond,
			want: []idAndName{{3, "Forecast"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := startMergePlugin(t, "A", capabilitiesA)
			// B's connections wait in the listen queue until it serves.
			lisB, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { lisB.Close() })
			engineB := ssetest.Engine(lisB.Addr().String())
			engineB.ReconnectBuffer = &tt.reconnectBuffer
			gw := ssetest.StartGateway(t, &config.Config{
				Listeners: []config.Listener{ssetest.Listen("M", nil)},
				Engines: map[string]*config.Engine{
					"A": ssetest.Engine(a.Addr),
					"B": engineB,
					"M": {Merge: []string{"A", "B"}},
				},
			})
			client := ssetest.Dial(t, gw.Addrs[0])

			type answer struct {
				capabilities *ssepb.Capabilities
				err          error
			}
			done := make(chan answer, 1)
			go func() {
				capabilities, err := client.GetCapabilities(testContext(t), &ssepb.Empty{})
				done <- answer{capabilities, err}
			}()
			if tt.serveB {
				metricsWaitFor(t, gw, 10*time.Second, map[string]float64{"GetCapabilities": 1}, "ssegw_calls_in_flight", labelMethod)
				serveMergePlugin(t, lisB, "B", capabilitiesB)
			}
			got := <-done
			if got.err != nil {
				t.Fatalf("GetCapabilities through M: %v", got.err)
			}
			if diff := cmp.Diff(tt.want, functionsOf(got.capabilities)); diff != "" {
				t.Errorf("GetCapabilities through M functions (-want +got):\n%s", diff)
			}
			if tt.serveB {
				return
			}

			// The list without B warns, and a call of an id in B's range
			// names B's outage, not a missing function.
			const warning = "merged engine sent its functions without those of members whose plugins have not responded; Qlik engines that got this list need a restart once the members are back"
			record := gw.Logs.WaitFor(t, warning, 5*time.Second, nil)
			if members := asList(record["members"]); !slices.Equal(members, []any{"B"}) {
				t.Errorf("warning members = %v, want [B]", record["members"])
			}
			result := callMerged(testContext(t), client, "ExecuteFunction", functionHeaders(t, 1005), ssetest.NumericBundle(1, 1))
			st := status.Convert(result.err)
			if want := "function id 1005 is one of member B's, whose functions are not known"; st.Code() != codes.Unavailable || !strings.Contains(st.Message(), want) {
				t.Errorf("ExecuteFunction(id 1005) through M = %v %q, want Unavailable containing %q", st.Code(), st.Message(), want)
			}
		})
	}
}

// TestMergedEngineLeavesOutIDsOutOfRange checks that functions whose ids do
// not fit a member's range of 1,000 ids are left out of the merged list
// with a warning that names them: a merged id cannot tell them apart from
// the next member's.
func TestMergedEngineLeavesOutIDsOutOfRange(t *testing.T) {
	a := startMergePlugin(t, "A", &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{
		mergeFunction("A", 3, "Forecast"), mergeFunction("A", 1500, "Big"), mergeFunction("A", -2, "Negative"),
	}})
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("M", nil)},
		Engines: map[string]*config.Engine{
			"A": ssetest.Engine(a.Addr),
			"M": {Merge: []string{"A"}},
		},
	})
	client := ssetest.Dial(t, gw.Addrs[0])
	capabilities, err := client.GetCapabilities(testContext(t), &ssepb.Empty{})
	if err != nil {
		t.Fatalf("GetCapabilities through M: %v", err)
	}
	if diff := cmp.Diff([]idAndName{{3, "Forecast"}}, functionsOf(capabilities)); diff != "" {
		t.Errorf("GetCapabilities through M functions (-want +got):\n%s", diff)
	}
	record := gw.Logs.WaitFor(t, "merged engine leaves out member functions whose ids are not between 0 and 999", 5*time.Second, nil)
	if got, want := record["functions"], []any{"A: Big (1500)", "A: Negative (-2)"}; !slices.Equal(asList(got), want) {
		t.Errorf("warning functions = %v, want %v", got, want)
	}
}

// mergeSpansTo returns telemetry that sends the spans to receiver and
// exports no metrics.
func mergeSpansTo(receiver *otlptest.Receiver) config.Telemetry {
	return config.Telemetry{
		Traces:  config.TraceExport{Exporter: config.ExporterOTLP, Endpoint: receiver.Addr, Insecure: true},
		Metrics: config.MetricExport{Exporter: config.ExporterNone},
	}
}

// TestMergedEngineOwnCallSpans checks the server spans of calls that a
// merged engine ends itself: GetCapabilities, which it serves, and a
// function id that no member has. Each is named after the merged engine
// and carries it, as any engine's call.
func TestMergedEngineOwnCallSpans(t *testing.T) {
	receiver := otlptest.StartGRPC(t)
	a := startMergePlugin(t, "A", &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{mergeFunction("A", 3, "Forecast")}})
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("M", nil)},
		Engines: map[string]*config.Engine{
			"A": ssetest.Engine(a.Addr),
			"M": {Merge: []string{"A"}},
		},
		Telemetry: mergeSpansTo(receiver),
	})
	client := ssetest.Dial(t, gw.Addrs[0])
	if _, err := client.GetCapabilities(testContext(t), &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities through M: %v", err)
	}
	stream, err := client.ExecuteFunction(functionContext(t, testContext(t), 99))
	if err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	if _, err := stream.Recv(); status.Code(err) != codes.Unimplemented {
		t.Fatalf("function 99 through M: %v, want Unimplemented", err)
	}
	if err := gw.Shutdown(testContext(t)); err != nil { // flushes the spans
		t.Fatal(err)
	}

	want := map[string]bool{"M.GetCapabilities": false, "M.ExecuteFunction": false}
	for _, span := range receiver.Spans() {
		if span.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
			continue
		}
		if _, ok := want[span.GetName()]; !ok {
			t.Errorf("server span %q, want one of %v", span.GetName(), want)
			continue
		}
		want[span.GetName()] = true
		if engine := span.Attributes()["qlik.sse.engine"]; engine != "M" {
			t.Errorf("span %s: qlik.sse.engine = %v, want M", span.GetName(), engine)
		}
	}
	for name, seen := range want {
		if !seen {
			t.Errorf("no server span %s", name)
		}
	}
}

// TestMergedEngineFunctionSpan checks the server span of a call of a
// member's function through a merged engine: its function id and name are
// those Qlik called, as its engine and name are the merged engine's, and
// the member and the member's own id and name are beside them. The span
// carried the member's id and name, so two members' functions with one id
// looked alike.
func TestMergedEngineFunctionSpan(t *testing.T) {
	receiver := otlptest.StartGRPC(t)
	a := startMergePlugin(t, "A", &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{mergeFunction("A", 5, "Forecast")}})
	b := startMergePlugin(t, "B", &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{mergeFunction("B", 5, "Forecast")}})
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("M", nil)},
		Engines: map[string]*config.Engine{
			"A": ssetest.Engine(a.Addr),
			"B": ssetest.Engine(b.Addr),
			"M": {Merge: []string{"A", "B"}},
		},
		Telemetry: mergeSpansTo(receiver),
	})
	client := ssetest.Dial(t, gw.Addrs[0])
	if _, err := client.GetCapabilities(testContext(t), &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities through M: %v", err)
	}
	if _, err := wireExchange(functionContext(t, testContext(t), 1005), ssepb.ConnectorClient.ExecuteFunction, client); err != nil {
		t.Fatalf("B_Forecast (1005) through M: %v", err)
	}
	if err := gw.Shutdown(testContext(t)); err != nil { // flushes the spans
		t.Fatal(err)
	}

	want := map[string]any{
		"qlik.sse.engine":                     "M",
		"qlik.sse.function.id":                int64(1005),
		"qlik.sse.function.name":              "B_Forecast",
		"qlik.sse.merge.member":               "B",
		"qlik.sse.merge.member.function.id":   int64(5),
		"qlik.sse.merge.member.function.name": "Forecast",
	}
	found := false
	for _, span := range receiver.Spans() {
		if span.GetKind() != tracepb.Span_SPAN_KIND_SERVER || span.GetName() != "M.B_Forecast" {
			continue
		}
		found = true
		attributes := span.Attributes()
		for key, value := range want {
			if attributes[key] != value {
				t.Errorf("span M.B_Forecast: %s = %v, want %v", key, attributes[key], value)
			}
		}
	}
	if !found {
		t.Error("no server span M.B_Forecast")
	}
}

// TestMergedEngineStopEndsWait checks that a stop ends at once a
// GetCapabilities call that waits for a member's capabilities, with
// Unavailable saying so: it has reached no plugin, and held the stop for
// the whole drain time.
func TestMergedEngineStopEndsWait(t *testing.T) {
	a := startMergePlugin(t, "A", &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{mergeFunction("A", 3, "Forecast")}})
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("M", nil)},
		Engines: map[string]*config.Engine{
			"A": ssetest.Engine(a.Addr),
			"B": ssetest.ReconnectBuffer(ssetest.Engine(ssetest.FreeAddress(t)), time.Minute), // no plugin
			"M": {Merge: []string{"A", "B"}},
		},
	})
	client := ssetest.Dial(t, gw.Addrs[0])
	checkStopEndsWait(t, gw, "M", func() error {
		_, err := client.GetCapabilities(testContext(t), &ssepb.Empty{})
		return err
	})
}

// TestMergedEngineMaxWaiting checks that calls waiting for the
// capabilities of a merged engine's members count against its max_waiting
// (2 here), beyond which a call fails at once with ResourceExhausted
// naming the limit. A waiting call that the client cancels ends Canceled,
// logged at INFO rather than as the gateway's failure, and frees its place.
func TestMergedEngineMaxWaiting(t *testing.T) {
	const maxWaiting = 2
	a := startMergePlugin(t, "A", &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{mergeFunction("A", 3, "Forecast")}})
	engineB := ssetest.ReconnectBuffer(ssetest.Engine(ssetest.FreeAddress(t)), 30*time.Second) // no plugin: B never learns its capabilities
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("M", nil)},
		Engines: map[string]*config.Engine{
			"A": ssetest.Engine(a.Addr),
			"B": engineB,
			"M": {Merge: []string{"A", "B"}, MaxWaiting: maxWaiting},
		},
	})
	client := ssetest.Dial(t, gw.Addrs[0])
	unknownID := functionHeaders(t, 1999) // in B's range of ids
	const waitingMetric, engineLabel = "ssegw_calls_waiting", `qlik_sse_engine="M"`

	// Fill the waiting places.
	waitCtx, cancelWaiting := context.WithCancel(testContext(t))
	defer cancelWaiting()
	waiting := make(chan error, maxWaiting)
	for range maxWaiting {
		go func() {
			waiting <- callMerged(waitCtx, client, "ExecuteFunction", unknownID, ssetest.NumericBundle(1, 1)).err
		}()
	}
	resilWait(t, 10*time.Second, "2 calls waiting for the members of M", func() bool {
		return resilMetric(t, gw, waitingMetric, engineLabel) == maxWaiting
	})

	// Calls beyond the limit fail at once. The deadline ends the test's
	// wait early should they wait too.
	for i := range 2 {
		ctx, cancel := context.WithTimeout(testContext(t), 5*time.Second)
		start := time.Now()
		result := callMerged(ctx, client, "ExecuteFunction", unknownID, ssetest.NumericBundle(1, 1))
		took := time.Since(start)
		cancel()
		checkRejectedOverMaxWaiting(t, i, result.err, took, maxWaiting)
	}
	for _, record := range gw.Logs.Records("call") {
		if record["code"] == codes.ResourceExhausted.String() && record["level"] != "WARN" {
			t.Errorf("call record of an extra call has level %v, want WARN", record["level"])
		}
	}

	// Cancelled waiting calls free their places.
	cancelWaiting()
	checkWaitingCallsCanceled(t, gw, waiting, maxWaiting, engineLabel)
	cancelled := func() []map[string]any {
		var records []map[string]any
		for _, record := range gw.Logs.Records("call") {
			if record["engine"] == "M" && record["code"] == codes.Canceled.String() {
				records = append(records, record)
			}
		}
		return records
	}
	resilWait(t, 10*time.Second, "call records of the cancelled calls", func() bool { return len(cancelled()) == maxWaiting })
	for _, record := range cancelled() {
		if record["level"] != "INFO" {
			t.Errorf("call record of a cancelled waiting call has level %v, want INFO", record["level"])
		}
	}
}

// TestMergedEngineClientErrorsNotWarned checks that calls that a merged
// engine rejects for the client's own mistake, while every member has its
// capabilities, are logged at INFO, not as the gateway's failure at WARN.
func TestMergedEngineClientErrorsNotWarned(t *testing.T) {
	setup := startMergedSetup(t, "B")
	tests := []struct {
		name     string
		md       metadata.MD
		wantCode codes.Code
	}{
		{name: "function id no member lists", md: functionHeaders(t, 1003), wantCode: codes.Unimplemented},
		{name: "no function header", md: metadata.MD{}, wantCode: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			record := newCallRecord(t, setup.gateway, func() {
				result := callMerged(testContext(t), setup.client, "ExecuteFunction", tt.md, ssetest.NumericBundle(1, 1))
				if code := status.Code(result.err); code != tt.wantCode {
					t.Fatalf("ExecuteFunction through M = %v, want %v", result.err, tt.wantCode)
				}
			})
			if record["code"] != tt.wantCode.String() {
				t.Errorf("call record code = %v, want %v", record["code"], tt.wantCode)
			}
			if record["level"] != "INFO" {
				t.Errorf("call record level = %v, want INFO", record["level"])
			}
		})
	}
}

// TestMergedEngineAuditsScriptOnce checks that a script call through a
// merged engine writes one audit record, also when both the merged engine
// and its merge_scripts member audit scripts. The record then names the
// member, and has the script text when either engine's audit_text is set.
func TestMergedEngineAuditsScriptOnce(t *testing.T) {
	const script = "return args[0] * 2"
	tests := []struct {
		name       string
		scriptsM   string
		auditTextM bool
		scriptsB   string
		wantEngine string
		wantText   bool
	}{
		{name: "both audit", scriptsM: config.ScriptsAudit, scriptsB: config.ScriptsAudit, wantEngine: "B"},
		{name: "both audit, M with audit_text", scriptsM: config.ScriptsAudit, auditTextM: true, scriptsB: config.ScriptsAudit, wantEngine: "B", wantText: true},
		{name: "only M audits", scriptsM: config.ScriptsAudit, scriptsB: config.ScriptsAllow, wantEngine: "M"},
		{name: "only B audits", scriptsM: config.ScriptsAllow, scriptsB: config.ScriptsAudit, wantEngine: "B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setup := startMergedSetupWith(t, func(engines map[string]*config.Engine) {
				engines["M"].MergeScripts = "B"
				engines["M"].Scripts = tt.scriptsM
				engines["M"].AuditText = tt.auditTextM
				engines["B"].Scripts = tt.scriptsB
			})
			md := secScriptMetadata(t, script, mergeAppID, "user")
			if result := callMerged(testContext(t), setup.client, "EvaluateScript", md, ssetest.NumericBundle(2, 1)); result.err != nil {
				t.Fatalf("EvaluateScript through M: %v", result.err)
			}

			records := setup.gateway.Logs.Records("script call")
			if len(records) != 1 {
				t.Fatalf("%q records = %d, want 1: %v", "script call", len(records), records)
			}
			if got := records[0]["engine"]; got != tt.wantEngine {
				t.Errorf("audit record engine = %v, want %s", got, tt.wantEngine)
			}
			text, hasText := records[0]["script"]
			switch {
			case tt.wantText && text != script:
				t.Errorf("audit record script = %v, want %q", text, script)
			case !tt.wantText && hasText:
				t.Errorf("audit record script = %v, want no script key", text)
			}
		})
	}
}

// TestMergedCallMovesAcrossReload checks that a call to a merged engine
// that waits for its member's replica (full at max_in_flight 1) moves to
// the member that a reload puts in place, with another plugin. There it
// gets the member's own function id. The call that filled the replica
// ends OK on the old member.
func TestMergedCallMovesAcrossReload(t *testing.T) {
	functions := []*ssepb.FunctionDefinition{mergeFunction("A", 3, "Forecast"), mergeFunction("A", 7, "Smooth")}
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	holding := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{PluginIdentifier: "A", Functions: functions}, nil
		},
		Execute: func(stream ssetest.Stream) error {
			if err := stream.SendHeader(metadata.Pairs(mergePluginHeader, "A")); err != nil {
				return err
			}
			arrived <- struct{}{}
			<-release
			return ssetest.Echo(stream)
		},
	})
	defer close(release)
	replacement := startMergePlugin(t, "A2", &ssepb.Capabilities{Functions: functions})
	engines := func(a string) map[string]*config.Engine {
		engine := ssetest.ReconnectBuffer(ssetest.Engine(a), time.Minute)
		engine.MaxInFlight = 1
		return map[string]*config.Engine{"A": engine, "M": {Merge: []string{"A"}}}
	}
	cfg := &config.Config{Listeners: []config.Listener{ssetest.Listen("M", nil)}, Engines: engines(holding.Addr)}
	gw := ssetest.StartGateway(t, cfg)
	client := ssetest.Dial(t, gw.Addrs[0])
	waitForFunctions(t, gw, "A", "Smooth", 10*time.Second)

	// Fill A's one place, then make a call that waits for it.
	ctx, cancel := context.WithTimeout(testContext(t), 20*time.Second)
	defer cancel()
	filling, waiting := make(chan mergeCallResult, 1), make(chan mergeCallResult, 1)
	go func() {
		filling <- callMerged(ctx, client, "ExecuteFunction", functionHeaders(t, 3), ssetest.NumericBundle(2, 1))
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the first call did not reach A's plugin within 10s")
	}
	go func() {
		waiting <- callMerged(ctx, client, "ExecuteFunction", functionHeaders(t, 7), ssetest.NumericBundle(2, 1))
	}()
	resilWait(t, 10*time.Second, "a call waiting for member A", func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="A"`) == 1
	})

	reloaded := &config.Config{Listeners: cfg.Listeners, Engines: engines(replacement.Addr), Admin: gw.Config().Admin}
	reloaded.ApplyDefaults()
	reloadApply(t, gw, reloaded)

	result := <-waiting
	if result.err != nil {
		t.Fatalf("call waiting across the reload = %v, want OK from the new member", result.err)
	}
	if got := result.header.Get(mergePluginHeader); !slices.Equal(got, []string{"A2"}) {
		t.Errorf("call waiting across the reload served by plugin %q, want [A2]", got)
	}
	if got := result.header.Get(mergeIDHeader); !slices.Equal(got, []string{"7"}) {
		t.Errorf("plugin received function id %q, want [7]", got)
	}
	release <- struct{}{}
	if result := <-filling; result.err != nil || !slices.Equal(result.header.Get(mergePluginHeader), []string{"A"}) {
		t.Errorf("call open on A across the reload = %v from plugin %q, want OK from A", result.err, result.header.Get(mergePluginHeader))
	}
}

// asList returns a log record's list value, or nil when it is not a list.
func asList(value any) []any {
	list, _ := value.([]any)
	return list
}

// TestMergedWaitMovesAcrossReload checks that a GetCapabilities call that
// waits for a member's capabilities moves when a reload replaces the
// merged engine or the member, and is answered from the new engines. It
// once waited out the member's reconnect_buffer and was answered from the
// engines the reload had replaced.
func TestMergedWaitMovesAcrossReload(t *testing.T) {
	a := startMergePlugin(t, "A", &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{mergeFunction("A", 3, "Forecast")}})
	b := startMergePlugin(t, "B", &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{mergeFunction("B", 5, "Trend")}})
	tests := []struct {
		name   string
		reload func(silent string) map[string]*config.Engine
		want   []idAndName
		plugin string
	}{
		{
			name: "merged engine replaced",
			reload: func(silent string) map[string]*config.Engine {
				return map[string]*config.Engine{
					"A": ssetest.Engine(a.Addr), "B": ssetest.ReconnectBuffer(ssetest.Engine(silent), time.Minute),
					"M": {Merge: []string{"A"}},
				}
			},
			want:   []idAndName{{3, "Forecast"}},
			plugin: "ssegw merge of A",
		},
		{
			name: "member replaced",
			reload: func(string) map[string]*config.Engine {
				return map[string]*config.Engine{
					"A": ssetest.Engine(a.Addr), "B": ssetest.ReconnectBuffer(ssetest.Engine(b.Addr), time.Minute),
					"M": {Merge: []string{"A", "B"}},
				}
			},
			want:   []idAndName{{3, "Forecast"}, {1005, "Trend"}},
			plugin: "ssegw merge of A, B",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// B's first address accepts connections that nothing serves.
			silent, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { silent.Close() })
			cfg := &config.Config{
				Listeners: []config.Listener{ssetest.Listen("M", nil)},
				Engines: map[string]*config.Engine{
					"A": ssetest.Engine(a.Addr), "B": ssetest.ReconnectBuffer(ssetest.Engine(silent.Addr().String()), time.Minute),
					"M": {Merge: []string{"A", "B"}},
				},
			}
			gw := ssetest.StartGateway(t, cfg)
			client := ssetest.Dial(t, gw.Addrs[0])

			ctx, cancel := context.WithTimeout(testContext(t), 30*time.Second)
			defer cancel()
			type answer struct {
				capabilities *ssepb.Capabilities
				err          error
			}
			done := make(chan answer, 1)
			go func() {
				capabilities, err := client.GetCapabilities(ctx, &ssepb.Empty{})
				done <- answer{capabilities, err}
			}()
			resilWait(t, 10*time.Second, "a call waiting for member B", func() bool {
				return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="M"`) == 1
			})

			reloaded := &config.Config{Listeners: cfg.Listeners, Engines: tt.reload(silent.Addr().String()), Admin: gw.Config().Admin}
			reloaded.ApplyDefaults()
			reloadApply(t, gw, reloaded)

			got := <-done
			if got.err != nil {
				t.Fatalf("GetCapabilities waiting across the reload = %v, want the new engines' functions", got.err)
			}
			if diff := cmp.Diff(tt.want, functionsOf(got.capabilities)); diff != "" {
				t.Errorf("functions after the reload (-want +got):\n%s", diff)
			}
			if got.capabilities.GetPluginIdentifier() != tt.plugin {
				t.Errorf("plugin identifier = %q, want %q", got.capabilities.GetPluginIdentifier(), tt.plugin)
			}
		})
	}
}

// TestMergedEngineHidesRefusedMembers checks that a merged engine's
// GetCapabilities leaves out the functions, and the scripts, of a member
// whose allow_clients leave the client out. The client could only get
// PermissionDenied for them. The functions it sees keep the ids and names
// of the whole list.
func TestMergedEngineHidesRefusedMembers(t *testing.T) {
	a := startMergePlugin(t, "A", &ssepb.Capabilities{
		Functions: []*ssepb.FunctionDefinition{mergeFunction("A", 3, "Forecast"), mergeFunction("A", 7, "Smooth")},
	})
	b := startMergePlugin(t, "B", &ssepb.Capabilities{
		AllowScript: true,
		Functions:   []*ssepb.FunctionDefinition{mergeFunction("B", 5, "Forecast"), mergeFunction("B", 0, "Trend")},
	})
	tests := []struct {
		name         string
		allowClients []string
		want         []idAndName
		wantScripts  bool
	}{
		{name: "B allows every client", want: []idAndName{{3, "Forecast"}, {7, "Smooth"}, {1000, "Trend"}, {1005, "B_Forecast"}}, wantScripts: true},
		{name: "B allows another client", allowClients: []string{"someone-else"}, want: []idAndName{{3, "Forecast"}, {7, "Smooth"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engineB := ssetest.Engine(b.Addr)
			engineB.AllowClients = tt.allowClients
			gw := ssetest.StartGateway(t, &config.Config{
				Listeners: []config.Listener{ssetest.Listen("M", nil)},
				Engines: map[string]*config.Engine{
					"A": ssetest.Engine(a.Addr), "B": engineB,
					"M": {Merge: []string{"A", "B"}, MergeScripts: "B"},
				},
			})
			waitForFunctions(t, gw, "A", "Smooth", 10*time.Second)
			waitForFunctions(t, gw, "B", "Trend", 10*time.Second)

			// A plaintext client presents no certificate.
			capabilities, err := ssetest.Dial(t, gw.Addrs[0]).GetCapabilities(testContext(t), &ssepb.Empty{})
			if err != nil {
				t.Fatalf("GetCapabilities through M: %v", err)
			}
			if diff := cmp.Diff(tt.want, functionsOf(capabilities)); diff != "" {
				t.Errorf("functions (-want +got):\n%s", diff)
			}
			if capabilities.GetAllowScript() != tt.wantScripts {
				t.Errorf("allowScript = %v, want %v", capabilities.GetAllowScript(), tt.wantScripts)
			}

			// The functions that an unknown id's message lists are those
			// the client sees.
			st := status.Convert(callMerged(testContext(t), ssetest.Dial(t, gw.Addrs[0]), "ExecuteFunction", functionHeaders(t, 5000), ssetest.NumericBundle(1, 1)).err)
			if st.Code() != codes.Unimplemented {
				t.Fatalf("call of id 5000 = %v %q, want Unimplemented", st.Code(), st.Message())
			}
			for _, function := range tt.want {
				if listed := fmt.Sprintf("%s (%d)", function.Name, function.ID); !strings.Contains(st.Message(), listed) {
					t.Errorf("Unimplemented message = %q, want it to list %s", st.Message(), listed)
				}
			}
			if len(tt.want) < 4 && strings.Contains(st.Message(), "Trend") {
				t.Errorf("Unimplemented message = %q, want none of B's functions, which the client may not call", st.Message())
			}
		})
	}
}

// TestMergedEngineDrain checks that a reload that replaces or removes a
// merged engine ends the calls through it at drain_timeout, with a status
// that names the reload, as for any engine: a call forwarded to a member
// that the reload kept, and a call waiting for a member's capabilities.
// Both once went on past drain_timeout while the log said they had ended.
func TestMergedEngineDrain(t *testing.T) {
	const drain = time.Second
	held := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	holding := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{PluginIdentifier: "A", Functions: []*ssepb.FunctionDefinition{mergeFunction("A", 3, "Forecast")}}, nil
		},
		Execute: func(stream ssetest.Stream) error {
			held <- struct{}{}
			select {
			case <-release:
			case <-stream.Context().Done():
			}
			return nil
		},
	})
	dead := ssetest.FreeAddress(t)
	configWith := func(merged map[string]*config.Engine) *config.Config {
		engines := map[string]*config.Engine{
			"A": ssetest.Engine(holding.Addr),
			"B": ssetest.ReconnectBuffer(ssetest.Engine(dead), time.Minute),
		}
		maps.Copy(engines, merged)
		cfg := &config.Config{
			Listeners:    []config.Listener{ssetest.Listen("A", nil)},
			Engines:      engines,
			DrainTimeout: drain,
			Admin:        config.Admin{Address: "127.0.0.1:0"},
		}
		cfg.ApplyDefaults()
		return cfg
	}
	gw := ssetest.StartGateway(t, configWith(map[string]*config.Engine{
		"M": {Merge: []string{"A"}},
		"W": {Merge: []string{"A", "B"}},
	}))
	client := ssetest.Dial(t, gw.Addrs[0])
	waitForFunctions(t, gw, "A", "Forecast", 10*time.Second)

	// A call forwarded through M to A, and one waiting on W for B.
	forwarded := make(chan mergeCallResult, 1)
	go func() {
		md := functionHeaders(t, 3)
		md.Set(routing.EngineHeader, "M")
		forwarded <- callMerged(testContext(t), client, "ExecuteFunction", md, ssetest.NumericBundle(1, 1))
	}()
	<-held
	waiting := make(chan error, 1)
	go func() {
		_, err := client.GetCapabilities(metadata.AppendToOutgoingContext(testContext(t), routing.EngineHeader, "W"), &ssepb.Empty{})
		waiting <- err
	}()
	resilWait(t, 10*time.Second, "a call waiting on W", func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="W"`) == 1
	})

	// M changes and W goes; A stays as it was.
	reloadApply(t, gw, configWith(map[string]*config.Engine{"M": {Merge: []string{"A"}, Hosts: []string{"m.example"}}}))

	want := "engine M was replaced by a configuration reload, and drain_timeout (1s) passed before the call ended"
	if st := status.Convert((<-forwarded).err); st.Code() != codes.Unavailable || st.Message() != want {
		t.Errorf("call through M across the reload = %v %q, want Unavailable %q", st.Code(), st.Message(), want)
	}
	want = "engine W was removed by a configuration reload, and drain_timeout (1s) passed before the call ended"
	if st := status.Convert(<-waiting); st.Code() != codes.Unavailable || st.Message() != want {
		t.Errorf("call waiting on W across the reload = %v %q, want Unavailable %q", st.Code(), st.Message(), want)
	}
}

// TestMergedWaitSharesReconnectBuffer checks that a call waiting for a
// member's capabilities, which a reload moves to the new merged engine,
// waits there only for what is left of the member's reconnect_buffer. The
// wait once started again at each reload.
func TestMergedWaitSharesReconnectBuffer(t *testing.T) {
	const buffer = 2 * time.Second
	a := startMergePlugin(t, "A", &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{mergeFunction("A", 3, "Forecast")}})
	dead := ssetest.FreeAddress(t)
	configWith := func(hosts ...string) *config.Config {
		cfg := &config.Config{
			Listeners: []config.Listener{ssetest.Listen("M", nil)},
			Engines: map[string]*config.Engine{
				"A": ssetest.Engine(a.Addr),
				"B": ssetest.ReconnectBuffer(ssetest.Engine(dead), buffer),
				"M": {Merge: []string{"A", "B"}, Hosts: hosts},
			},
			Admin: config.Admin{Address: "127.0.0.1:0"},
		}
		cfg.ApplyDefaults()
		return cfg
	}
	gw := ssetest.StartGateway(t, configWith())
	client := ssetest.Dial(t, gw.Addrs[0])
	waitForFunctions(t, gw, "A", "Forecast", 10*time.Second)

	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := client.GetCapabilities(testContext(t), &ssepb.Empty{})
		done <- err
	}()
	resilWait(t, 10*time.Second, "a call waiting on M", func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="M"`) == 1
	})
	// The scenario, not a synchronisation: half of the buffer passes
	// before the reload.
	time.Sleep(buffer / 2)
	reloadApply(t, gw, configWith("m.example"))

	if err := <-done; err != nil {
		t.Fatalf("GetCapabilities through M = %v, want A's functions once B's buffer is spent", err)
	}
	// A wait started again would end one and a half buffers after the
	// call; the margin allows for timers on a slow machine.
	if elapsed, limit := time.Since(start), buffer+buffer/4; elapsed > limit {
		t.Errorf("GetCapabilities through M took %v, want at most %v: B's reconnect_buffer (%v) bounds the call's waits on both engines", elapsed, limit, buffer)
	}
}

// TestMergedCallMovesWhenOnlyMergedReplaced checks that a call through a
// merged engine that waits for a replica of a member moves when a reload
// replaces only the merged engine, and goes on once the member has room.
// It once stayed on the old merged engine and ended at its drain_timeout,
// as the call already open through it does.
func TestMergedCallMovesWhenOnlyMergedReplaced(t *testing.T) {
	const drain = 500 * time.Millisecond
	functions := []*ssepb.FunctionDefinition{mergeFunction("A", 3, "Forecast")}
	arrived, release := make(chan struct{}, 2), make(chan struct{})
	holding := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{PluginIdentifier: "A", Functions: functions}, nil
		},
		Execute: func(stream ssetest.Stream) error {
			arrived <- struct{}{}
			<-release
			return ssetest.Echo(stream)
		},
	})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	defer releaseAll()
	configWith := func(hosts ...string) *config.Config {
		engine := ssetest.ReconnectBuffer(ssetest.Engine(holding.Addr), time.Minute)
		engine.MaxInFlight = 1
		cfg := &config.Config{
			Listeners:    []config.Listener{ssetest.Listen("M", nil)},
			Engines:      map[string]*config.Engine{"A": engine, "M": {Merge: []string{"A"}, Hosts: hosts}},
			DrainTimeout: drain,
			Admin:        config.Admin{Address: "127.0.0.1:0"},
		}
		cfg.ApplyDefaults()
		return cfg
	}
	gw := ssetest.StartGateway(t, configWith())
	client := ssetest.Dial(t, gw.Addrs[0])
	waitForFunctions(t, gw, "A", "Forecast", 10*time.Second)

	// Fill A's one place, then make a call that waits for it.
	filling, waiting := make(chan mergeCallResult, 1), make(chan mergeCallResult, 1)
	go func() {
		filling <- callMerged(testContext(t), client, "ExecuteFunction", functionHeaders(t, 3), ssetest.NumericBundle(2, 1))
	}()
	<-arrived
	go func() {
		waiting <- callMerged(testContext(t), client, "ExecuteFunction", functionHeaders(t, 3), ssetest.NumericBundle(2, 1))
	}()
	resilWait(t, 10*time.Second, "a call waiting for member A", func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="A"`) == 1
	})

	reloadApply(t, gw, configWith("m.example"))
	// The scenario, not a synchronisation: the old M's drain_timeout
	// passes while the call still waits.
	time.Sleep(3 * drain)
	releaseAll()

	if result := <-waiting; result.err != nil {
		t.Errorf("call waiting across a reload of M alone = %v, want OK once A has room", result.err)
	}
	// The call that was open through the old M ended with its drain, as
	// the calls of any replaced engine do.
	want := "engine M was replaced by a configuration reload, and drain_timeout (500ms) passed before the call ended"
	if st := status.Convert((<-filling).err); st.Code() != codes.Unavailable || st.Message() != want {
		t.Errorf("call open through M across the reload = %v %q, want Unavailable %q", st.Code(), st.Message(), want)
	}
}

// TestMergedCallWaitsOnlyForItsMember checks which members a call through
// a merged engine waits for while their functions are unknown: a function
// call waits only for the member whose range holds its id, a call of an id
// that no member's range holds, or of a member that refuses the client,
// ends at once, and GetCapabilities waits only for members the client may
// see. Each call once waited for every unknown member, up to the longest
// reconnect_buffer.
func TestMergedCallWaitsOnlyForItsMember(t *testing.T) {
	lisA, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lisA.Close() })
	engineB := ssetest.ReconnectBuffer(ssetest.Engine(ssetest.FreeAddress(t)), time.Minute) // B never answers
	engineB.AllowClients = []string{"someone-else"}                                         // and refuses plaintext clients
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("M", nil)},
		Engines: map[string]*config.Engine{
			"A": ssetest.ReconnectBuffer(ssetest.Engine(lisA.Addr().String()), time.Minute),
			"B": engineB,
			"M": {Merge: []string{"A", "B"}},
		},
	})
	client := ssetest.Dial(t, gw.Addrs[0])
	shortCall := func(id int32) *status.Status {
		ctx, cancel := context.WithTimeout(testContext(t), 5*time.Second)
		defer cancel()
		return status.Convert(callMerged(ctx, client, "ExecuteFunction", functionHeaders(t, id), ssetest.NumericBundle(1, 1)).err)
	}

	if st := shortCall(5000); st.Code() != codes.Unimplemented {
		t.Errorf("call of id 5000, in no member's range = %v %q, want Unimplemented at once", st.Code(), st.Message())
	}
	if st := shortCall(1003); st.Code() != codes.PermissionDenied {
		t.Errorf("call of id 1003, of B that refuses the client = %v %q, want PermissionDenied at once", st.Code(), st.Message())
	}
	// A rejected client's app id stays off the status page.
	if recent := gw.RecentCalls(); len(recent) == 0 || recent[0].Code != codes.PermissionDenied || recent[0].App != "" {
		t.Errorf("newest recent call = %+v, want the rejected one, with no app id", recent)
	}

	// A call of A's function waits for A alone.
	waiting := make(chan mergeCallResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(testContext(t), 20*time.Second)
		defer cancel()
		waiting <- callMerged(ctx, client, "ExecuteFunction", functionHeaders(t, 3), ssetest.NumericBundle(1, 1))
	}()
	resilWait(t, 10*time.Second, "a call waiting for A", func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="M"`) == 1
	})
	serveMergePlugin(t, lisA, "A", &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{mergeFunction("A", 3, "Forecast")}})
	if result := <-waiting; result.err != nil {
		t.Errorf("call of A's function = %v, want OK once A answers, without waiting for B", result.err)
	}

	// The client sees none of B's functions, so its list waits for A alone
	// and lacks nothing it could call.
	ctx, cancel := context.WithTimeout(testContext(t), 5*time.Second)
	defer cancel()
	capabilities, err := client.GetCapabilities(ctx, &ssepb.Empty{})
	if err != nil {
		t.Fatalf("GetCapabilities through M = %v, want A's functions at once", err)
	}
	if diff := cmp.Diff([]idAndName{{3, "Forecast"}}, functionsOf(capabilities)); diff != "" {
		t.Errorf("functions (-want +got):\n%s", diff)
	}
	if records := gw.Logs.Records("merged engine sent its functions without those of members whose plugins have not responded; Qlik engines that got this list need a restart once the members are back"); len(records) > 0 {
		t.Errorf("got a warning about missing members, want none for a member the client may not see: %v", records)
	}
}
