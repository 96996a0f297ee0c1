package example_test

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/sseclient"
)

// TestStop checks both ends of a plugin's stop: without calls it is
// graceful, and a call that never ends is ended after the timeout instead
// of holding the plugin up.
func TestStop(t *testing.T) {
	t.Run("no calls", func(t *testing.T) {
		// A client that made a call and keeps its connection open.
		plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("stop"))
		client, err := sseclient.Dial(plugin.Addr, sseclient.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		if _, _, err := client.Capabilities(testContext(t)); err != nil {
			t.Fatal(err)
		}
		if !example.Stop(plugin.Server, time.Minute) {
			t.Error("Stop ended calls; want a graceful stop with none in flight")
		}
	})

	t.Run("call never ends", func(t *testing.T) {
		entered := make(chan struct{})
		plugin := ssetest.StartPlugin(t, &ssetest.Connector{Execute: func(s ssetest.Stream) error {
			close(entered)
			<-s.Context().Done()
			return s.Context().Err()
		}})
		stream, err := ssetest.Dial(t, plugin.Addr).ExecuteFunction(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		<-entered
		if example.Stop(plugin.Server, 100*time.Millisecond) {
			t.Error("Stop reported a graceful stop; want the call still in flight ended")
		}
		if _, err := stream.Recv(); err == nil {
			t.Error("the call got a message after the stop; want it ended")
		}
	})
}

// TestServeStopsWithContext checks that Serve returns once its context
// ends, and says it is stopping.
func TestServeStopsWithContext(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var log bytes.Buffer
	if err := example.Serve(ctx, server, lis, &log); err != nil {
		t.Errorf("Serve = %v, want nil after its context ended", err)
	}
	if want := "stopping; waiting for calls in flight, for up to 5s\n"; log.String() != want {
		t.Errorf("Serve wrote %q, want %q", log.String(), want)
	}
}
