package h2relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// TestBackendStreamLimit checks that the relay opens no more streams on a
// backend connection than the backend's SETTINGS_MAX_CONCURRENT_STREAMS
// of 3 allows, and that it queues the other calls, with their request
// data, instead of refusing them.
func TestBackendStreamLimit(t *testing.T) {
	const (
		limit = 3
		calls = 32
	)
	held := make(chan struct{}, calls)
	release := make(chan struct{})
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{
		Execute: func(s ssetest.Stream) error {
			// Hold the call until the test has seen the others queue.
			held <- struct{}{}
			select {
			case <-release:
			case <-s.Context().Done():
				return s.Context().Err()
			}
			return echoRaw(s)
		},
	}, grpc.MaxConcurrentStreams(limit))
	relay := startRelay(t, plugin.Addr, Options{Connections: 1}, nil)
	client := ssetest.Dial(t, relay.addr)
	ctx := testContext(t)

	// Start every call and send its request, most of them before the
	// backend stream exists.
	var sent, done sync.WaitGroup
	for call := range calls {
		sent.Add(1)
		done.Go(func() {
			if err := limitedCall(ctx, client, call, sent.Done); err != nil {
				t.Errorf("call %d: %v", call, err)
			}
		})
	}
	sent.Wait()

	// The backend holds limit calls, and the relay queues the rest. The
	// limit is checked through the relay's stream counts, because a count
	// in the plugin's handler could never exceed it: grpc-go's server (as
	// of v1.85) resets streams above MaxConcurrentStreams with
	// REFUSED_STREAM before any handler runs.
	for i := range limit {
		select {
		case <-held:
		case <-time.After(waitTimeout):
			t.Fatalf("the plugin holds %d calls after %v, want %d", i, waitTimeout, limit)
		}
	}
	relay.waitStreams(t, calls, limit, calls-limit)

	close(release)
	done.Wait()
	relay.waitIdle(t)
}

// echoRaw sends every message of a call back unchanged.
func echoRaw(s ssetest.Stream) error {
	for {
		var message ssetest.Raw
		if err := s.RecvMsg(&message); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if err := s.SendMsg(&message); err != nil {
			return err
		}
	}
}

// limitedCall sends 3 messages of about 40 kB and half-closes, then calls
// sent and checks the echoes.
func limitedCall(ctx context.Context, client ssepb.ConnectorClient, call int, sent func()) error {
	stream, err := client.ExecuteFunction(ctx)
	if err != nil {
		sent()
		return err
	}
	var messages []ssetest.Raw
	for i := range 3 {
		message := ssetest.Raw(bytes.Repeat([]byte{byte(call), byte(i)}, 20_000+call))
		messages = append(messages, message)
		if err := stream.SendMsg(&message); err != nil {
			sent()
			return fmt.Errorf("sending message %d: %w", i, err)
		}
	}
	err = stream.CloseSend()
	sent()
	if err != nil {
		return err
	}

	for i, want := range messages {
		var got ssetest.Raw
		if err := stream.RecvMsg(&got); err != nil {
			return fmt.Errorf("receiving message %d: %w", i, err)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("echo of message %d has %d bytes that differ from the %d bytes sent", i, len(got), len(want))
		}
	}
	var extra ssetest.Raw
	if err := stream.RecvMsg(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("after the last echo: got %v, want io.EOF", err)
	}
	return nil
}

// TestBackendRestart checks that new calls fail at once while the backend
// is gone, and work again once a plugin listens at the same address. A
// backend that stops at once also fails the call in progress; one that
// stops gracefully sends GOAWAY first.
func TestBackendRestart(t *testing.T) {
	tests := []struct {
		name string
		stop func(*grpc.Server)
		// holdCall has a call in progress when the backend stops, which
		// GracefulStop would wait for.
		holdCall bool
	}{
		{name: "Stop", stop: (*grpc.Server).Stop, holdCall: true},
		{name: "GracefulStop", stop: (*grpc.Server).GracefulStop},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			held := make(chan struct{}, 1)
			connector := newConnector(held)
			plugin := ssetest.StartPlugin(t, connector)
			// Without the delay between dials, the first call after the
			// restart dials at once, so the test need not wait for the
			// delay to pass.
			relay := startRelay(t, plugin.Addr, Options{}, func(r *Relay) { r.redialDelay = 0 })
			client := ssetest.Dial(t, relay.addr)
			ctx := testContext(t)

			if out := echoCall(t, ctx, client, 1); out.Code != codes.OK {
				t.Fatalf("call before the stop: code %v (%s), want OK", out.Code, out.Message)
			}

			// Stop the backend, with a call in progress if the test holds one.
			var stream grpc.BidiStreamingClient[ssepb.BundledRows, ssepb.BundledRows]
			if tc.holdCall {
				var err error
				stream, err = client.ExecuteFunction(functionContext(t, ctx, functionHold, "held"))
				if err != nil {
					t.Fatal(err)
				}
				select {
				case <-held:
				case <-time.After(waitTimeout):
					t.Fatalf("the plugin holds no call after %v", waitTimeout)
				}
			}
			stopped := make(chan struct{})
			go func() {
				tc.stop(plugin.Server)
				close(stopped)
			}()
			select {
			case <-stopped:
			case <-time.After(waitTimeout):
				t.Fatalf("%s did not return within %v", tc.name, waitTimeout)
			}

			// The call in progress fails with the relay's bare RST_STREAM
			// code.
			if tc.holdCall {
				if _, err := stream.Recv(); status.Code(err) != codes.Internal {
					t.Errorf("call in progress when the backend stopped: %v, want code Internal", err)
				}
			}

			// New calls are refused while nothing listens. The client's code
			// varies: grpc-go reports REFUSED_STREAM as Unavailable, but it
			// may end a call whose transparent retry the relay refused too
			// without an error, which echoCall turns into a failure.
			out := echoCall(t, ctx, client, 2)
			if out.Code == codes.OK {
				t.Errorf("call while the backend is gone: code OK, want a failure")
			}
			if len(out.Messages) != 0 {
				t.Errorf("call while the backend is gone: %d echoes, want none", len(out.Messages))
			}
			relay.waitIdle(t)

			// Calls work again once a plugin listens at the same address.
			ssetest.StartPluginAt(t, plugin.Addr, connector)
			out = echoCall(t, ctx, client, 3)
			if out.Code != codes.OK {
				t.Errorf("call after the restart: code %v (%s), want OK", out.Code, out.Message)
			}
			if got, want := len(out.Messages), echoMessages(3); got != want {
				t.Errorf("call after the restart: %d echoes, want %d", got, want)
			}
			relay.waitIdle(t)
		})
	}
}

// TestCancelWhileWaiting checks that a call cancelled while it waits for a
// backend stream leaves the relay's queue, and that calls run after it.
func TestCancelWhileWaiting(t *testing.T) {
	held := make(chan struct{}, 1)
	plugin := ssetest.StartPlugin(t, newConnector(held), grpc.MaxConcurrentStreams(1))
	relay := startRelay(t, plugin.Addr, Options{Connections: 1}, nil)
	client := ssetest.Dial(t, relay.addr)
	ctx := testContext(t)

	// Take the backend's only stream.
	holdCtx, endHold := context.WithCancel(ctx)
	defer endHold()
	if _, err := client.ExecuteFunction(functionContext(t, holdCtx, functionHold, "holder")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(waitTimeout):
		t.Fatalf("the plugin holds no call after %v", waitTimeout)
	}

	// Queue a call with request data in the relay, then cancel it.
	waitCtx, cancelWaiting := context.WithCancel(ctx)
	defer cancelWaiting()
	waiting, err := client.ExecuteFunction(functionContext(t, waitCtx, functionEcho, "waiting"))
	if err != nil {
		t.Fatal(err)
	}
	if err := waiting.Send(ssetest.StringBundle(text(1, 50_000))); err != nil {
		t.Fatal(err)
	}
	relay.waitStreams(t, 2, 1, 1)
	cancelWaiting()
	relay.waitStreams(t, 1, 1, 0)
	if _, err := waiting.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("cancelled call: %v, want code Canceled", err)
	}

	// Free the backend stream; the next call gets it.
	endHold()
	relay.waitIdle(t)
	if out := echoCall(t, ctx, client, 1); out.Code != codes.OK {
		t.Errorf("call after the cancel: code %v (%s), want OK", out.Code, out.Message)
	}
	relay.waitIdle(t)
}

// TestResponseQueuedWhenBackendEnds checks that a client gets the whole
// response and status of a call that the backend has already ended while
// the relay still queues part of the response for the client. grpc-go
// servers end such a call with RST_STREAM(NO_ERROR) when the client has
// not half-closed.
func TestResponseQueuedWhenBackendEnds(t *testing.T) {
	plugin := ssetest.StartPlugin(t, newConnector(nil))
	relay := startRelay(t, plugin.Addr, Options{}, nil)
	// The smallest windows that grpc-go allows, so that the relay must
	// queue most of a 300 kB response while the client does not read.
	const window = 64 << 10
	client := ssetest.Dial(t, relay.addr, grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
	ctx := testContext(t)

	stream, err := client.ExecuteFunction(functionContext(t, ctx, functionReject, "queued"))
	if err != nil {
		t.Fatal(err)
	}
	request := ssetest.Raw(text(2, 300_000))
	if err := stream.SendMsg(&request); err != nil {
		t.Fatal(err)
	}
	// The backend half is gone, and the client half still has data to
	// send.
	relay.waitStreams(t, 1, 0, 0)

	var echo ssetest.Raw
	if err := stream.RecvMsg(&echo); err != nil {
		t.Fatalf("receiving the echo: %v", err)
	}
	if !bytes.Equal(echo, request) {
		t.Errorf("echo has %d bytes that differ from the %d bytes sent", len(echo), len(request))
	}
	err = stream.RecvMsg(&echo)
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("after the echo: %v, want the plugin's InvalidArgument", err)
	}
	if got := stream.Trailer().Get(rejectTrailer); !slices.Equal(got, []string{"queued"}) {
		t.Errorf("trailer %s = %q, want [queued]", rejectTrailer, got)
	}
	relay.waitIdle(t)
}
