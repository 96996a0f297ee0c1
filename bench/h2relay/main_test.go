package h2relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// TestMain fails the package when a test leaves goroutines behind, such as
// a connection's reader or writer that Close did not end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait of the tests that is not a call, which
// has the test's context.
const waitTimeout = 10 * time.Second

// Function IDs of the test plugin's ExecuteFunction.
const (
	functionEcho   = 0 // sends every message back unchanged
	functionReject = 1 // echoes the first message, then ends with InvalidArgument
	functionHold   = 2 // reports the call on held, then waits until it ends
)

// Metadata keys that the test plugin sets, so that a client can tell its
// own call's headers and trailers from another call's.
const (
	appHeader     = "x-app"    // response header: the call's app ID
	countTrailer  = "x-count"  // trailer of functionEcho: messages echoed
	rejectTrailer = "x-reject" // trailer of functionReject: the call's app ID
	pluginHeader  = "x-plugin" // response header of GetCapabilities
	pluginName    = "relay-test"
)

// newConnector returns the test plugin's connector. A functionHold call
// sends a value on held, which must have room for it.
func newConnector(held chan<- struct{}) *ssetest.Connector {
	return &ssetest.Connector{
		Capabilities: func(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
			if err := grpc.SetHeader(ctx, metadata.Pairs(pluginHeader, pluginName)); err != nil {
				return nil, err
			}
			return &ssepb.Capabilities{
				PluginIdentifier: pluginName,
				PluginVersion:    "1.0.0",
				Functions: []*ssepb.FunctionDefinition{
					{Name: "Echo", FunctionId: functionEcho, ReturnType: ssepb.DataType_STRING},
					{Name: "Reject", FunctionId: functionReject, ReturnType: ssepb.DataType_STRING},
					{Name: "Hold", FunctionId: functionHold, ReturnType: ssepb.DataType_STRING},
				},
			}, nil
		},
		Execute: func(s ssetest.Stream) error {
			md, _ := metadata.FromIncomingContext(s.Context())
			function, err := ssepb.ReadFunctionRequestHeader(md)
			if err != nil {
				return status.Errorf(codes.InvalidArgument, "reading the function header: %v", err)
			}
			common, err := ssepb.ReadCommonRequestHeader(md)
			if err != nil {
				return status.Errorf(codes.InvalidArgument, "reading the common header: %v", err)
			}
			if err := s.SendHeader(metadata.Pairs(appHeader, common.AppId)); err != nil {
				return err
			}

			switch function.FunctionId {
			case functionEcho:
				for count := 0; ; count++ {
					var message ssetest.Raw
					err := s.RecvMsg(&message)
					if errors.Is(err, io.EOF) {
						s.SetTrailer(metadata.Pairs(countTrailer, strconv.Itoa(count)))
						return nil
					}
					if err != nil {
						return err
					}
					if err := s.SendMsg(&message); err != nil {
						return err
					}
				}
			case functionReject:
				var message ssetest.Raw
				if err := s.RecvMsg(&message); err != nil {
					return err
				}
				if err := s.SendMsg(&message); err != nil {
					return err
				}
				s.SetTrailer(metadata.Pairs(rejectTrailer, common.AppId))
				return status.Error(codes.InvalidArgument, "the test function rejects every call")
			case functionHold:
				held <- struct{}{}
				<-s.Context().Done()
				return s.Context().Err()
			}
			return status.Errorf(codes.NotFound, "no function %d", function.FunctionId)
		},
	}
}

// functionContext returns ctx with the request headers of an
// ExecuteFunction call of function id from app, as Qlik sends them. It
// may run in any goroutine of the test, so it reports a failure with
// Errorf.
func functionContext(t *testing.T, ctx context.Context, id int32, app string) context.Context {
	t.Helper()
	md, err := ssepb.FunctionCallMetadata(id, &ssepb.CommonRequestHeader{AppId: app, UserId: "user", Cardinality: 1})
	if err != nil {
		t.Errorf("encoding the request headers: %v", err)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// testContext returns a context that ends with the test or after a minute,
// so that a stalled call fails the test instead of hanging it.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testRelay is a Relay that serves on a loopback port until the test ends.
type testRelay struct {
	*Relay
	addr string
	// changed receives a value after the relay's streams change. Values
	// coalesce, so a waiter checks the counts after each one.
	changed chan struct{}
}

// startRelay serves a Relay to backend on 127.0.0.1 until the test ends,
// logging to the test's output. tune, if not nil, changes the relay
// before it serves.
func startRelay(t *testing.T, backend string, opts Options, tune func(*Relay)) *testRelay {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	r := New(backend, opts)
	changed := make(chan struct{}, 1)
	r.streamsChanged = func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if tune != nil {
		tune(r)
	}

	served := make(chan error, 1)
	go func() { served <- r.Serve(lis) }()
	t.Cleanup(func() {
		lis.Close()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve after its listener closed = %v, want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Serve did not return within %v of its listener closing", waitTimeout)
		}
		closeWithin(t, r)
	})
	return &testRelay{Relay: r, addr: lis.Addr().String(), changed: changed}
}

// closeWithin closes r and fails the test if Close takes longer than
// waitTimeout.
func closeWithin(t *testing.T, r *Relay) {
	t.Helper()
	closed := make(chan struct{})
	go func() {
		r.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(waitTimeout):
		t.Fatalf("Close did not return within %v", waitTimeout)
	}
}

// streamCounts returns the streams that r holds: open on client
// connections, open on backend connections, and waiting to open on a
// backend connection.
func (r *Relay) streamCounts() (client, backend, waiting int) {
	r.mu.Lock()
	conns := make([]*conn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()

	for _, c := range conns {
		c.mu.Lock()
		if c.client {
			client += len(c.streams)
		} else {
			backend += len(c.streams)
			waiting += len(c.waiting)
		}
		c.mu.Unlock()
	}
	return client, backend, waiting
}

// waitStreams waits until the relay holds the given numbers of streams,
// as streamCounts returns them, and fails the test after waitTimeout.
func (tr *testRelay) waitStreams(t *testing.T, client, backend, waiting int) {
	t.Helper()
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for {
		gotClient, gotBackend, gotWaiting := tr.streamCounts()
		if gotClient == client && gotBackend == backend && gotWaiting == waiting {
			return
		}
		select {
		case <-tr.changed:
		case <-timeout.C:
			t.Fatalf("relay holds %d client, %d backend and %d waiting streams after %v, want %d, %d and %d",
				gotClient, gotBackend, gotWaiting, waitTimeout, client, backend, waiting)
		}
	}
}

// waitIdle waits until the relay holds no stream.
func (tr *testRelay) waitIdle(t *testing.T) {
	t.Helper()
	tr.waitStreams(t, 0, 0, 0)
}

// text returns n letters that depend on seed, so that each message of a
// test differs from the others.
func text(seed, n int) string {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		// xorshift32
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = 'a' + byte(x%26)
	}
	return string(b)
}
