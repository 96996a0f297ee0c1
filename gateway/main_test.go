package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/metadata"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// TestMain fails the package when a test leaves goroutines behind: a
// forwarded call that does not end cleanly leaks its pumps. It removes
// the plugin binaries that tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	ssetest.RemoveBinaries()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left after the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// path is a test plugin behind a plaintext gateway, with a client for each.
type path struct {
	plugin  *ssetest.Plugin
	gateway *ssetest.Gateway
	// viaGateway calls through the gateway; direct calls the plugin.
	viaGateway ssepb.ConnectorClient
	direct     ssepb.ConnectorClient
}

// newPath starts connector as engine R behind a gateway listener whose
// default engine is R. tune, if not nil, changes the configuration first.
func newPath(t *testing.T, connector *ssetest.Connector, tune func(*config.Config)) *path {
	t.Helper()
	plugin := ssetest.StartPlugin(t, connector)
	cfg := &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
	}
	if tune != nil {
		tune(cfg)
	}
	gw := ssetest.StartGateway(t, cfg)
	return &path{
		plugin:     plugin,
		gateway:    gw,
		viaGateway: ssetest.Dial(t, gw.Addrs[0]),
		direct:     ssetest.Dial(t, plugin.Addr),
	}
}

// testContext returns a context that ends with the test, or after a
// minute, so that no call of a broken build hangs the suite.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// functionContext returns ctx carrying the headers of an ExecuteFunction
// call of function id, as Qlik sends them.
func functionContext(t *testing.T, ctx context.Context, id int32) context.Context {
	t.Helper()
	md, err := ssepb.FunctionCallMetadata(id, &ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: 1})
	if err != nil {
		t.Fatal(err)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// outcome is everything a client sees of a finished streaming call.
type outcome struct {
	header   metadata.MD
	trailer  metadata.MD
	messages []ssetest.Raw
	err      error
}

// exchange sends requests on a new ExecuteFunction stream and half-closes,
// while it reads the whole response as raw messages, as Qlik does.
func exchange(ctx context.Context, client ssepb.ConnectorClient, requests ...ssetest.Raw) outcome {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.ExecuteFunction(ctx)
	if err != nil {
		return outcome{err: err}
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for _, request := range requests {
			if err := stream.SendMsg(&request); err != nil {
				return // the status comes from RecvMsg
			}
		}
		stream.CloseSend()
	}()
	var out outcome
	for {
		var message ssetest.Raw
		if err := stream.RecvMsg(&message); err != nil {
			out.err = err
			break
		}
		out.messages = append(out.messages, message)
	}
	cancel() // unblocks a send still waiting after the call ended
	<-sent
	out.header, _ = stream.Header()
	out.trailer = stream.Trailer()
	return out
}

// userMetadata returns md without the keys that gRPC itself sets on every
// response, which differ between a plugin and the gateway by design.
func userMetadata(md metadata.MD) metadata.MD {
	out := metadata.MD{}
	for key, values := range md {
		if key == "content-type" {
			continue
		}
		out[key] = values
	}
	return out
}

// logMark returns the number of records in gw's log so far. Take it before
// the action whose record a test awaits, and pass it to waitForRecordAfter,
// because Logs.WaitFor would also accept a like record from earlier.
func logMark(gw *ssetest.Gateway) int {
	return strings.Count(gw.Logs.String(), "\n")
}

// waitForRecordAfter waits until match accepts a record, after the first
// mark records of gw's log, whose message is one of messages, and returns
// it. It fails the test after timeout, naming what it waited for.
func waitForRecordAfter(t *testing.T, gw *ssetest.Gateway, mark int, timeout time.Duration, what string, match func(record map[string]any) bool, messages ...string) map[string]any {
	t.Helper()
	var found map[string]any
	seen := 0
	// WaitForLine passes each line once, in order, so counting them skips
	// exactly the first mark records.
	gw.Logs.WaitForLine(t, what, timeout, func(line string) bool {
		seen++
		if seen <= mark {
			return false
		}
		var record map[string]any
		if json.Unmarshal([]byte(line), &record) != nil {
			return false
		}
		if message, _ := record["msg"].(string); !slices.Contains(messages, message) {
			return false
		}
		if match == nil || match(record) {
			found = record
			return true
		}
		return false
	})
	return found
}
