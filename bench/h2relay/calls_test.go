package h2relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// windowTests are the relay settings under which the call tests run. The
// tiny windows make the relay queue data and wait for window on every
// connection. grpc-go ignores windows below 64 KiB, so its side gets that.
var windowTests = []struct {
	name       string
	opts       Options
	grpcWindow int32 // of the test's gRPC clients and plugin; 0 keeps grpc-go's defaults
}{
	{name: "default windows"},
	{
		name:       "tiny windows",
		opts:       Options{Connections: 1, StreamWindow: 16 << 10, ConnWindow: 64 << 10},
		grpcWindow: 64 << 10,
	},
}

// grpcWindowOptions returns the client and server options that set
// grpc-go's windows to window, or none if window is 0.
func grpcWindowOptions(window int32) ([]grpc.DialOption, []grpc.ServerOption) {
	if window == 0 {
		return nil, nil
	}
	return []grpc.DialOption{grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window)},
		[]grpc.ServerOption{grpc.InitialWindowSize(window), grpc.InitialConnWindowSize(window)}
}

// outcome is everything a client sees of a call.
type outcome struct {
	Header   metadata.MD
	Trailer  metadata.MD
	Messages []ssetest.Raw
	Code     codes.Code
	Message  string
}

// smallCall is one kind of call in TestSmallCalls.
type smallCall struct {
	name     string
	wantCode codes.Code
	run      func(t *testing.T, ctx context.Context, client ssepb.ConnectorClient, seed int) outcome
}

var smallCalls = []smallCall{
	{name: "GetCapabilities", wantCode: codes.OK, run: capabilitiesCall},
	{name: "echo", wantCode: codes.OK, run: echoCall},
	{name: "rejected", wantCode: codes.InvalidArgument, run: rejectedCall},
	{name: "cancelled", wantCode: codes.Canceled, run: func(t *testing.T, ctx context.Context, client ssepb.ConnectorClient, seed int) outcome {
		return cancelledCall(t, ctx, client, seed, false)
	}},
	{name: "cancelled with data in flight", wantCode: codes.Canceled, run: func(t *testing.T, ctx context.Context, client ssepb.ConnectorClient, seed int) outcome {
		return cancelledCall(t, ctx, client, seed, true)
	}},
}

// TestSmallCalls makes many concurrent small calls of every kind through
// the relay and directly to the plugin, and checks that each call's
// outcome through the relay equals the direct one.
func TestSmallCalls(t *testing.T) {
	workers, callsPerWorker := 32, 24
	if ssetest.RaceEnabled {
		workers, callsPerWorker = 16, 10
	}
	for _, tc := range windowTests {
		t.Run(tc.name, func(t *testing.T) {
			dialOptions, serverOptions := grpcWindowOptions(tc.grpcWindow)
			plugin := ssetest.StartPlugin(t, newConnector(nil), serverOptions...)
			relay := startRelay(t, plugin.Addr, tc.opts, nil)
			direct := ssetest.Dial(t, plugin.Addr)
			// Two client connections, so that two readers relay onto the
			// same backend connections.
			viaRelay := []ssepb.ConnectorClient{
				ssetest.Dial(t, relay.addr, dialOptions...),
				ssetest.Dial(t, relay.addr, dialOptions...),
			}
			ctx := testContext(t)

			var wg sync.WaitGroup
			for worker := range workers {
				wg.Go(func() {
					for i := range callsPerWorker {
						seed := worker*callsPerWorker + i
						kind := smallCalls[seed%len(smallCalls)]
						want := kind.run(t, ctx, direct, seed)
						got := kind.run(t, ctx, viaRelay[worker%2], seed)
						if want.Code != kind.wantCode {
							t.Errorf("%s call %d directly: code %v (%s), want %v", kind.name, seed, want.Code, want.Message, kind.wantCode)
							return
						}
						if diff := cmp.Diff(want, got); diff != "" {
							t.Errorf("%s call %d through the relay differs from the direct call (-direct +relay):\n%s", kind.name, seed, diff)
							return
						}
					}
				})
			}
			wg.Wait()
			relay.waitIdle(t)
		})
	}
}

func capabilitiesCall(t *testing.T, ctx context.Context, client ssepb.ConnectorClient, _ int) outcome {
	var out outcome
	capabilities, err := client.GetCapabilities(ctx, &ssepb.Empty{}, grpc.Header(&out.Header), grpc.Trailer(&out.Trailer))
	if err == nil {
		message, err := proto.MarshalOptions{Deterministic: true}.Marshal(capabilities)
		if err != nil {
			t.Errorf("encoding the capabilities: %v", err)
		}
		out.Messages = append(out.Messages, message)
	}
	out.Code, out.Message = status.Code(err), status.Convert(err).Message()
	return out
}

// echoMessages returns how many bundles echoCall sends for seed.
func echoMessages(seed int) int { return 1 + seed%3 }

// echoCall sends echoMessages(seed) bundles, each after the echo of the
// one before, then half-closes and reads to the end. The outcome's
// Messages are the echoes that arrived. A call that ends without an error
// before every bundle is echoed gets a failure outcome that names both
// counts: grpc-go (as of v1.85) may end a call that the relay refused
// with a plain io.EOF.
func echoCall(t *testing.T, ctx context.Context, client ssepb.ConnectorClient, seed int) outcome {
	app := "app-" + strconv.Itoa(seed)
	stream, err := client.ExecuteFunction(functionContext(t, ctx, functionEcho, app))
	if err != nil {
		return outcome{Code: status.Code(err), Message: err.Error()}
	}

	var out outcome
	messages := echoMessages(seed)
	recvEnded := false // RecvMsg returned an error, which ends the call
	for i := range messages {
		if err = stream.Send(ssetest.StringBundle(text(seed*10+i, 10+i*50), "x")); err != nil {
			break
		}
		var message ssetest.Raw
		if err = stream.RecvMsg(&message); err != nil {
			recvEnded = true
			break
		}
		out.Messages = append(out.Messages, message)
	}

	// Half-close and read to the end. Send returns io.EOF once the call
	// has ended, and RecvMsg then returns how it ended.
	if err == nil {
		err = stream.CloseSend()
	}
	if errors.Is(err, io.EOF) && !recvEnded {
		err = nil
	}
	for err == nil {
		var extra ssetest.Raw
		if err = stream.RecvMsg(&extra); err == nil {
			out.Messages = append(out.Messages, extra)
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
		if len(out.Messages) < messages {
			err = fmt.Errorf("echo call ended without an error after %d echoes, want %d, one per message", len(out.Messages), messages)
		}
	}

	out.Header, _ = stream.Header()
	out.Trailer = stream.Trailer()
	out.Code, out.Message = status.Code(err), status.Convert(err).Message()
	return out
}

// rejectedCall sends one bundle and does not half-close, so that the
// plugin ends the call with its status and trailers while the client may
// still send.
func rejectedCall(t *testing.T, ctx context.Context, client ssepb.ConnectorClient, seed int) outcome {
	app := "app-" + strconv.Itoa(seed)
	stream, err := client.ExecuteFunction(functionContext(t, ctx, functionReject, app))
	if err != nil {
		return outcome{Code: status.Code(err), Message: err.Error()}
	}
	var out outcome
	err = stream.Send(ssetest.StringBundle(text(seed, 100)))
	if errors.Is(err, io.EOF) {
		err = nil // the call has ended, and RecvMsg returns its status
	}
	for err == nil {
		var message ssetest.Raw
		if err = stream.RecvMsg(&message); err == nil {
			out.Messages = append(out.Messages, message)
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	out.Header, _ = stream.Header()
	out.Trailer = stream.Trailer()
	out.Code, out.Message = status.Code(err), status.Convert(err).Message()
	return out
}

// cancelledCall cancels a call after its first echo. With inFlight, it
// sends another bundle first.
func cancelledCall(t *testing.T, ctx context.Context, client ssepb.ConnectorClient, seed int, inFlight bool) outcome {
	app := "app-" + strconv.Itoa(seed)
	callCtx, cancel := context.WithCancel(functionContext(t, ctx, functionEcho, app))
	defer cancel()
	stream, err := client.ExecuteFunction(callCtx)
	if err != nil {
		return outcome{Code: status.Code(err), Message: err.Error()}
	}
	var out outcome
	bundle := ssetest.StringBundle(text(seed, 3000))
	if err = stream.Send(bundle); err == nil {
		var message ssetest.Raw
		if err = stream.RecvMsg(&message); err == nil {
			out.Messages = append(out.Messages, message)
		}
	}
	if err == nil {
		if inFlight {
			stream.Send(bundle) // its echo may or may not arrive before the cancel
		}
		out.Header, _ = stream.Header()
		cancel()
	}
	for err == nil {
		var extra ssetest.Raw
		err = stream.RecvMsg(&extra)
	}
	out.Code, out.Message = status.Code(err), status.Convert(err).Message()
	return out
}

// TestLargeCalls makes concurrent full-duplex calls that each send
// hundreds of messages of about 100 kB while they read the echoes, and
// checks every echo.
func TestLargeCalls(t *testing.T) {
	calls, messages := 4, 200
	if ssetest.RaceEnabled {
		calls, messages = 2, 100
	}
	const size = 100_000
	for _, tc := range windowTests {
		t.Run(tc.name, func(t *testing.T) {
			dialOptions, serverOptions := grpcWindowOptions(tc.grpcWindow)
			plugin := ssetest.StartPlugin(t, newConnector(nil), serverOptions...)
			relay := startRelay(t, plugin.Addr, tc.opts, nil)
			client := ssetest.Dial(t, relay.addr, dialOptions...)
			ctx := testContext(t)

			var wg sync.WaitGroup
			for call := range calls {
				wg.Go(func() {
					if err := largeEcho(t, ctx, client, call, messages, size); err != nil {
						t.Errorf("large call %d: %v", call, err)
					}
				})
			}
			wg.Wait()
			relay.waitIdle(t)
		})
	}
}

// largeMessage returns message i of a large call. The sizes vary, so that
// messages split into frames differently, and every tenth is tiny. It
// runs in a sender goroutine, so it reports a failure with Errorf.
func largeMessage(t *testing.T, seed, i, size int) ssetest.Raw {
	n := size - (i*7919)%(size/2)
	if i%10 == 9 {
		n = 5
	}
	message, err := proto.Marshal(ssetest.StringBundle(text(seed*100_000+i, n)))
	if err != nil {
		t.Errorf("encoding message %d: %v", i, err)
	}
	return message
}

// largeEcho sends count messages of up to size bytes on one call while it
// reads and checks their echoes.
func largeEcho(t *testing.T, ctx context.Context, client ssepb.ConnectorClient, seed, count, size int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.ExecuteFunction(functionContext(t, ctx, functionEcho, "large-"+strconv.Itoa(seed)))
	if err != nil {
		return err
	}

	// Send from another goroutine, which hands each message to the reader
	// for the check.
	sent := make(chan ssetest.Raw, count)
	sendErr := make(chan error, 1)
	go func() {
		for i := range count {
			message := largeMessage(t, seed, i, size)
			sent <- message
			if err := stream.SendMsg(&message); err != nil {
				sendErr <- fmt.Errorf("sending message %d: %w", i, err)
				return
			}
		}
		sendErr <- stream.CloseSend()
	}()
	// The cancel, deferred earlier, runs after this wait and ends a send
	// that still waits.
	defer func() {
		cancel()
		<-sendErr
	}()

	for i := range count {
		var got ssetest.Raw
		if err := stream.RecvMsg(&got); err != nil {
			return fmt.Errorf("receiving message %d: %w", i, err)
		}
		if want := <-sent; !bytes.Equal(got, want) {
			return fmt.Errorf("echo of message %d has %d bytes that differ from the %d bytes sent", i, len(got), len(want))
		}
	}
	var extra ssetest.Raw
	if err := stream.RecvMsg(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("after the last echo: got %v, want io.EOF", err)
	}
	if got, want := stream.Trailer().Get(countTrailer), []string{strconv.Itoa(count)}; !cmp.Equal(got, want) {
		return fmt.Errorf("trailer %s = %q, want %q", countTrailer, got, want)
	}
	return nil
}

// TestCloseEndsCalls checks that Close ends a call in progress and every
// connection, and that the relay refuses clients after it.
func TestCloseEndsCalls(t *testing.T) {
	plugin := ssetest.StartHoldingPlugin(t, "held", true)
	relay := startRelay(t, plugin.Addr, Options{}, nil)
	client := ssetest.Dial(t, relay.addr)
	ctx := testContext(t)

	stream, err := client.ExecuteFunction(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(ssetest.StringBundle("x")); err != nil {
		t.Fatal(err)
	}
	plugin.WaitHeld(t, 1)

	closeWithin(t, relay.Relay)
	_, err = stream.Recv()
	if code := status.Code(err); code != codes.Unavailable {
		t.Errorf("held call after Close: %v, want code Unavailable", err)
	}
	if client, backend, waiting := relay.streamCounts(); client+backend+waiting != 0 {
		t.Errorf("after Close the relay holds %d client, %d backend and %d waiting streams, want none", client, backend, waiting)
	}

	// Serve still accepts, but closes each new connection at once.
	_, err = ssetest.Dial(t, relay.addr).GetCapabilities(ctx, &ssepb.Empty{})
	if code := status.Code(err); code != codes.Unavailable {
		t.Errorf("GetCapabilities after Close: %v, want code Unavailable", err)
	}
}
