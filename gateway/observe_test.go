package gateway_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// mismatchMessage is the message of the gateway's warning about a reply
// that does not fit its function.
const mismatchMessage = "plugin reply does not fit the function; Qlik pads or drops rows silently"

// shapeFunction is a function of the shape plugin: its definition, and the
// reply it sends for the rows it received.
type shapeFunction struct {
	definition *ssepb.FunctionDefinition
	// tableFields, when positive, is the number of fields the plugin names
	// in a qlik-tabledescription-bin header.
	tableFields int
	// reply returns the rows sent back for rows received.
	reply func(received int) *ssepb.BundledRows
}

// shapeFunctions are the functions of the shape plugin, by id. Some reply
// with a shape that Qlik does not expect from the function's type.
var shapeFunctions = []shapeFunction{
	{
		definition: &ssepb.FunctionDefinition{FunctionId: 0, Name: "ShortScalar", FunctionType: ssepb.FunctionType_SCALAR},
		reply:      func(received int) *ssepb.BundledRows { return ssetest.NumericBundle(received-1, 1) },
	},
	{
		definition: &ssepb.FunctionDefinition{FunctionId: 1, Name: "TwoRowAggregate", FunctionType: ssepb.FunctionType_AGGREGATION},
		reply:      func(int) *ssepb.BundledRows { return ssetest.NumericBundle(2, 1) },
	},
	{
		definition:  &ssepb.FunctionDefinition{FunctionId: 2, Name: "NarrowTable", FunctionType: ssepb.FunctionType_TENSOR},
		tableFields: 2,
		reply:       func(received int) *ssepb.BundledRows { return ssetest.NumericBundle(received, 3) },
	},
	{
		definition: &ssepb.FunctionDefinition{FunctionId: 3, Name: "GoodScalar", FunctionType: ssepb.FunctionType_SCALAR},
		reply:      func(received int) *ssepb.BundledRows { return ssetest.NumericBundle(received, 1) },
	},
	{
		definition: &ssepb.FunctionDefinition{FunctionId: 4, Name: "GoodAggregate", FunctionType: ssepb.FunctionType_AGGREGATION},
		reply:      func(int) *ssepb.BundledRows { return ssetest.NumericBundle(1, 1) },
	},
	{
		definition:  &ssepb.FunctionDefinition{FunctionId: 5, Name: "GoodTable", FunctionType: ssepb.FunctionType_TENSOR},
		tableFields: 3,
		reply:       func(received int) *ssepb.BundledRows { return ssetest.NumericBundle(received, 3) },
	},
}

// shapeConnector returns a plugin serving shapeFunctions. It reads every
// request before it replies, so each reply is the same on every call.
func shapeConnector() *ssetest.Connector {
	return &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			capabilities := &ssepb.Capabilities{PluginIdentifier: "shapes"}
			for _, function := range shapeFunctions {
				capabilities.Functions = append(capabilities.Functions, function.definition)
			}
			return capabilities, nil
		},
		Execute: func(s ssetest.Stream) error {
			md, _ := metadata.FromIncomingContext(s.Context())
			header, err := ssepb.ReadFunctionRequestHeader(md)
			if err != nil || header == nil || int(header.GetFunctionId()) >= len(shapeFunctions) {
				return status.Errorf(codes.InvalidArgument, "no function header, or an unknown id: %v", err)
			}
			function := shapeFunctions[header.GetFunctionId()]
			received := 0
			for {
				bundle, err := s.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
				received += len(bundle.GetRows())
			}
			if function.tableFields > 0 {
				table := &ssepb.TableDescription{Name: function.definition.GetName()}
				for i := range function.tableFields {
					table.Fields = append(table.Fields, &ssepb.FieldDescription{Name: "f" + strconv.Itoa(i), DataType: ssepb.DataType_NUMERIC})
				}
				md := metadata.MD{}
				if err := ssepb.SetHeader(md, ssepb.TableDescriptionKey, table); err != nil {
					return err
				}
				if err := s.SendHeader(md); err != nil {
					return err
				}
			}
			return s.Send(function.reply(received))
		},
	}
}

// TestResultMismatches checks the gateway's checks of a reply's shape: a
// scalar function that returns fewer rows than it received, an aggregation
// that returns two rows, and a table description with fewer fields than
// the rows have values. Each such call reaches the client exactly as the
// plugin sent it. The gateway logs one warning per function for calls
// within 10 seconds, and counts every call in
// ssegw_result_mismatches_total. Correct replies raise nothing.
func TestResultMismatches(t *testing.T) {
	p := newPath(t, shapeConnector(), nil)
	ctx := testContext(t)
	// The gateway learns the function types from this call's reply.
	if _, err := p.viaGateway.GetCapabilities(ctx, &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities: %v", err)
	}
	request := encodeBundle(t, ssetest.NumericBundle(3, 1))
	const callsPerFunction = 3

	tests := []struct {
		id int32
		// wantKind is the mismatch attribute of the metric, "rows" or
		// "columns". It is empty for a reply that fits.
		wantKind string
		// wantMismatch is the warning's description of the mismatch.
		wantMismatch string
	}{
		{id: 0, wantKind: "rows", wantMismatch: "returned 2 rows for 3"},
		{id: 1, wantKind: "rows", wantMismatch: "aggregation returned 2 rows, want 1"},
		{id: 2, wantKind: "columns", wantMismatch: "table description names 2 fields, rows have 3 values"},
		{id: 3},
		{id: 4},
		{id: 5},
	}
	wantCounts := map[string]float64{}
	for _, tt := range tests {
		name := shapeFunctions[tt.id].definition.GetName()
		if tt.wantKind != "" {
			wantCounts["R/"+name+"/"+tt.wantKind] = callsPerFunction
		}
		t.Run(name, func(t *testing.T) {
			direct := exchange(functionContext(t, ctx, tt.id), p.direct, request)
			if direct.err != io.EOF {
				t.Fatalf("direct call: %v", direct.err)
			}
			for i := range callsPerFunction {
				out := exchange(functionContext(t, ctx, tt.id), p.viaGateway, request)
				if out.err != io.EOF {
					t.Fatalf("call %d through the gateway: error = %v, want status OK", i, out.err)
				}
				if diff := cmp.Diff(direct.messages, out.messages); diff != "" {
					t.Errorf("call %d messages through the gateway (-direct +gateway):\n%s", i, diff)
				}
				if diff := cmp.Diff(userMetadata(direct.header), userMetadata(out.header)); diff != "" {
					t.Errorf("call %d headers through the gateway (-direct +gateway):\n%s", i, diff)
				}
				if diff := cmp.Diff(direct.trailer, out.trailer); diff != "" {
					t.Errorf("call %d trailers through the gateway (-direct +gateway):\n%s", i, diff)
				}
			}

			var warnings []map[string]any
			for _, record := range p.gateway.Logs.Records(mismatchMessage) {
				if record["function"] == name {
					warnings = append(warnings, record)
				}
			}
			if tt.wantMismatch == "" {
				if len(warnings) != 0 {
					t.Errorf("%q records for %s = %v, want none", mismatchMessage, name, warnings)
				}
				return
			}
			if len(warnings) != 1 {
				t.Fatalf("%q records for %s = %d, want 1 for %d calls: %v", mismatchMessage, name, len(warnings), callsPerFunction, warnings)
			}
			warning := warnings[0]
			if got := warning["level"]; got != "WARN" {
				t.Errorf("warning level = %v, want WARN", got)
			}
			if got := warning["engine"]; got != "R" {
				t.Errorf("warning engine = %v, want R", got)
			}
			if got := warning["mismatch"]; got != tt.wantMismatch {
				t.Errorf("warning mismatch = %v, want %q", got, tt.wantMismatch)
			}
		})
	}

	got := metricsSeries(t, metricsScrape(t, p.gateway), "ssegw_result_mismatches_total", labelEngine, labelFunction, labelMismatch)
	if diff := cmp.Diff(wantCounts, got); diff != "" {
		t.Errorf("ssegw_result_mismatches_total (-want +got):\n%s", diff)
	}
}

// echoOrFail returns a plugin with two functions: Double (id 0) returns
// the rows it receives, Broken (id 1) reads them and fails with
// FailedPrecondition.
func echoOrFail() *ssetest.Connector {
	return &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{
				{FunctionId: 0, Name: "Double", FunctionType: ssepb.FunctionType_SCALAR},
				{FunctionId: 1, Name: "Broken", FunctionType: ssepb.FunctionType_SCALAR},
			}}, nil
		},
		Execute: func(s ssetest.Stream) error {
			md, _ := metadata.FromIncomingContext(s.Context())
			header, err := ssepb.ReadFunctionRequestHeader(md)
			if err != nil || header == nil {
				return status.Errorf(codes.InvalidArgument, "no function header: %v", err)
			}
			for {
				bundle, err := s.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
				if header.GetFunctionId() == 0 {
					if err := s.Send(bundle); err != nil {
						return err
					}
				}
			}
			if header.GetFunctionId() != 0 {
				return status.Error(codes.FailedPrecondition, "model not loaded")
			}
			return nil
		},
	}
}

// addressDialer is a gRPC dialer that keeps the local address of its last
// connection, which the gateway logs as the call's peer.
type addressDialer struct {
	mu    sync.Mutex
	local string
}

func (d *addressDialer) dial(ctx context.Context, address string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.local = conn.LocalAddr().String()
	d.mu.Unlock()
	return conn, nil
}

func (d *addressDialer) address() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.local
}

// hashedID returns an id as the hash redaction mode shows it: the first 16
// hex digits of its SHA-256.
func hashedID(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:8])
}

// newCallRecord runs call and returns the one "call" log record that it
// added, failing the test unless there is exactly one.
func newCallRecord(t *testing.T, gw *ssetest.Gateway, call func()) map[string]any {
	t.Helper()
	before := len(gw.Logs.Records("call"))
	call()
	records := gw.Logs.Records("call")
	if added := len(records) - before; added != 1 {
		t.Fatalf("the call added %d %q log records, want 1; log:\n%s", added, "call", gw.Logs)
	}
	return records[len(records)-1]
}

// TestAccessLogRecord checks the access log's one record per call: at
// info level, with every key of a call and its values, the user id hashed
// by default, and an error key only for a failed call.
func TestAccessLogRecord(t *testing.T) {
	dialer := &addressDialer{}
	p := newPath(t, echoOrFail(), nil)
	client := ssetest.Dial(t, p.gateway.Addrs[0], grpc.WithContextDialer(dialer.dial))
	ctx := testContext(t)
	if _, err := client.GetCapabilities(ctx, &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities: %v", err)
	}
	request := encodeBundle(t, ssetest.NumericBundle(3, 2))
	keys := []string{
		"time", "level", "msg", "engine", "method", "function", "function_id", "app_id", "user_id",
		"peer", "backend", "duration", "code", "attempts", "bytes_in", "bytes_out", "rows_in", "rows_out", "trace_id",
	}

	tests := []struct {
		name         string
		id           int32
		wantFunction string
		wantCode     codes.Code
		wantRows     float64
		wantError    string // empty: no error key
	}{
		{name: "success", id: 0, wantFunction: "Double", wantCode: codes.OK, wantRows: 3},
		{name: "plugin error", id: 1, wantFunction: "Broken", wantCode: codes.FailedPrecondition, wantError: "model not loaded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out outcome
			record := newCallRecord(t, p.gateway, func() {
				out = exchange(qlikContext(t, ctx, "R", tt.id, "app-7", "jane@example.com"), client, request)
			})
			switch {
			case tt.wantCode == codes.OK && out.err != io.EOF:
				t.Fatalf("call error = %v, want none", out.err)
			case tt.wantCode != codes.OK && status.Code(out.err) != tt.wantCode:
				t.Fatalf("call error = %v, want code %v", out.err, tt.wantCode)
			}

			wantKeys := slices.Clone(keys)
			if tt.wantError != "" {
				wantKeys = append(wantKeys, "error")
			}
			slices.Sort(wantKeys)
			var gotKeys []string
			for key := range record {
				gotKeys = append(gotKeys, key)
			}
			slices.Sort(gotKeys)
			if diff := cmp.Diff(wantKeys, gotKeys); diff != "" {
				t.Errorf("record keys (-want +got):\n%s", diff)
			}

			traceID := p.gateway.RecentCalls()[0].TraceID
			want := map[string]any{
				"level":       "INFO",
				"engine":      "R",
				"method":      ssepb.Connector_ExecuteFunction_FullMethodName,
				"function":    tt.wantFunction,
				"function_id": float64(tt.id),
				"app_id":      "app-7",
				"user_id":     hashedID("jane@example.com"),
				"peer":        dialer.address(),
				"backend":     p.plugin.Addr,
				"code":        tt.wantCode.String(),
				"attempts":    float64(1),
				"bytes_in":    float64(len(request)),
				"bytes_out":   float64(replyBytes(out.messages)),
				"rows_in":     float64(3),
				"rows_out":    tt.wantRows,
				"trace_id":    traceID,
			}
			if tt.wantError != "" {
				want["error"] = tt.wantError
			}
			for key, value := range want {
				if got := record[key]; got != value {
					t.Errorf("record %s = %v (%T), want %v (%T)", key, got, got, value, value)
				}
			}
			if !traceIDPattern.MatchString(traceID) {
				t.Errorf("trace_id = %q, want 32 hex digits", traceID)
			}
			if duration, ok := record["duration"].(float64); !ok || duration <= 0 {
				t.Errorf("record duration = %v, want a positive number of nanoseconds", record["duration"])
			}
		})
	}
}

// TestAccessLogRedaction checks that the access log and the status page's
// record of a call show the app and user ids kept, hashed or dropped, as
// the redaction settings select.
func TestAccessLogRedaction(t *testing.T) {
	const app, user = "sales-app", "jane@example.com"
	tests := []struct {
		name      string
		redaction config.Redaction // empty modes take the defaults
		wantApp   string           // empty: no app_id key
		wantUser  string           // empty: no user_id key
	}{
		{name: "defaults", wantApp: app, wantUser: hashedID(user)},
		{name: "hash app, keep user", redaction: config.Redaction{AppID: config.RedactHash, UserID: config.RedactKeep}, wantApp: hashedID(app), wantUser: user},
		{name: "drop both", redaction: config.Redaction{AppID: config.RedactDrop, UserID: config.RedactDrop}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPath(t, echoOrFail(), func(cfg *config.Config) { cfg.Redaction = tt.redaction })
			ctx := testContext(t)
			record := newCallRecord(t, p.gateway, func() {
				if out := exchange(qlikContext(t, ctx, "R", 0, app, user), p.viaGateway, encodeBundle(t, ssetest.NumericBundle(1, 1))); out.err != io.EOF {
					t.Fatalf("call: %v", out.err)
				}
			})

			checks := []struct {
				key  string
				want string
			}{
				{key: "app_id", want: tt.wantApp},
				{key: "user_id", want: tt.wantUser},
			}
			for _, check := range checks {
				got, ok := record[check.key]
				switch {
				case check.want == "" && ok:
					t.Errorf("record %s = %v, want no such key", check.key, got)
				case check.want != "" && got != check.want:
					t.Errorf("record %s = %v, want %q", check.key, got, check.want)
				}
			}
			if got := p.gateway.RecentCalls()[0].App; got != tt.wantApp {
				t.Errorf("RecentCalls()[0].App = %q, want %q", got, tt.wantApp)
			}
		})
	}
}

// TestAccessLogEmptyUserNotHashed checks that a call without a user id,
// as from a Qlik reload task, is logged without one under the default
// hash redaction, rather than with the hash of nothing, which would look
// like a user.
func TestAccessLogEmptyUserNotHashed(t *testing.T) {
	p := newPath(t, echoOrFail(), nil)
	record := newCallRecord(t, p.gateway, func() {
		if out := exchange(qlikContext(t, testContext(t), "R", 0, "app", ""), p.viaGateway, encodeBundle(t, ssetest.NumericBundle(1, 1))); out.err != io.EOF {
			t.Fatalf("call: %v", out.err)
		}
	})
	if got := record["user_id"]; got != "" {
		t.Errorf("record user_id = %v, want empty", got)
	}
}

// TestAccessLogBoundsClientIDs checks that the ids a client sends reach
// the access log cut to 256 bytes, marked with their length, as in spans:
// a header allows 64 KiB for each.
func TestAccessLogBoundsClientIDs(t *testing.T) {
	p := newPath(t, echoOrFail(), func(cfg *config.Config) {
		cfg.Redaction = config.Redaction{AppID: config.RedactKeep, UserID: config.RedactKeep}
	})
	app, user := strings.Repeat("a", 20000), strings.Repeat("u", 21000)
	record := newCallRecord(t, p.gateway, func() {
		if out := exchange(qlikContext(t, testContext(t), "R", 0, app, user), p.viaGateway, encodeBundle(t, ssetest.NumericBundle(1, 1))); out.err != io.EOF {
			t.Fatalf("call: %v", out.err)
		}
	})
	for key, id := range map[string]string{"app_id": app, "user_id": user} {
		got, _ := record[key].(string)
		if !strings.HasPrefix(got, id[:256]+"…[") || !strings.Contains(got, fmt.Sprintf("[%d bytes, sha256 ", len(id))) || len(got) > 320 {
			t.Errorf("record %s = %.300q (%d bytes), want its first 256 bytes, its length and a hash", key, got, len(got))
		}
	}
}

// TestAccessLogLevel checks the level of a call's record: info with the
// access log on, debug with log.access_log false, so that it disappears at
// log level info.
func TestAccessLogLevel(t *testing.T) {
	off := false
	tests := []struct {
		name      string
		accessLog *bool  // nil keeps the default
		level     string // log.level; empty means debug in tests
		wantLevel string // empty: no record
	}{
		{name: "access log on", wantLevel: "INFO"},
		{name: "access log off", accessLog: &off, wantLevel: "DEBUG"},
		{name: "access log off at level info", accessLog: &off, level: "info"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPath(t, echoOrFail(), func(cfg *config.Config) {
				cfg.Log.AccessLog = tt.accessLog
				cfg.Log.Level = tt.level
			})
			out := exchange(qlikContext(t, testContext(t), "R", 0, "app", "user"), p.viaGateway, encodeBundle(t, ssetest.NumericBundle(1, 1)))
			if out.err != io.EOF {
				t.Fatalf("call: %v", out.err)
			}

			records := p.gateway.Logs.Records("call")
			if tt.wantLevel == "" {
				if len(records) != 0 {
					t.Errorf("%q records = %v, want none", "call", records)
				}
				return
			}
			if len(records) != 1 {
				t.Fatalf("%q records = %d, want 1; log:\n%s", "call", len(records), p.gateway.Logs)
			}
			if got := records[0]["level"]; got != tt.wantLevel {
				t.Errorf("record level = %v, want %s", got, tt.wantLevel)
			}
		})
	}
}

// TestStatusPageCallStorm checks the status page after 500 quick calls of
// one row from one app, as Qlik makes them when it calls a function row by
// row. The app table lists that app and function once, with a rate above
// 0, and the recent calls keep only the newest 100.
func TestStatusPageCallStorm(t *testing.T) {
	const (
		calls   = 500
		workers = 8
		app     = "storm-app"
	)
	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("example-1"))
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("Example", nil)},
		Engines:   map[string]*config.Engine{"Example": ssetest.Engine(plugin.Addr)},
	})
	client := ssetest.Dial(t, gw.Addrs[0])
	ctx := testContext(t)
	if _, err := client.GetCapabilities(ctx, &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities: %v", err)
	}

	// The calls, from a few workers at once.
	callCtx := qlikContext(t, ctx, "Example", example.FunctionSumOfRows, app, "user")
	request := encodeBundle(t, ssetest.NumericBundle(1, 2))
	next := make(chan int, calls)
	for i := range calls {
		next <- i
	}
	close(next)
	failures := make(chan error, calls)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if out := exchange(callCtx, client, request); out.err != io.EOF {
					failures <- errors.New("call " + strconv.Itoa(i) + ": " + out.err.Error())
				}
			}
		})
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}

	page := fetchStatusPage(t, gw)
	var matches [][]string
	for _, row := range pageTable(page, "app-rates") {
		if row[0] == "Example" && row[1] == "SumOfRows" && row[2] == app {
			matches = append(matches, row)
		}
	}
	if len(matches) != 1 {
		t.Fatalf("app-rates rows for %s calling Example.SumOfRows = %q, want one", app, matches)
	}
	if rate, err := strconv.ParseFloat(matches[0][3], 64); err != nil || rate <= 0 {
		t.Errorf("app-rates calls/s of %s = %q, want a number above 0", app, matches[0][3])
	}
	if recent := pageTable(page, "recent"); len(recent) != 100 {
		t.Errorf("recent calls = %d rows, want the newest 100", len(recent))
	}
}
