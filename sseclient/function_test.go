package sseclient

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

func TestFindFunction(t *testing.T) {
	capabilities := &ssepb.Capabilities{Functions: []*ssepb.FunctionDefinition{
		{Name: "SumOfRows", FunctionId: 1},
		{Name: "Echo", FunctionId: 0},
	}}
	tests := []struct {
		name    string
		lookup  string
		wantID  int32
		wantErr string
	}{
		{name: "found", lookup: "SumOfRows", wantID: 1},
		{name: "unknown", lookup: "Nope", wantErr: `function not found: "Nope"; the endpoint offers Echo, SumOfRows`},
		{name: "other case", lookup: "echo", wantErr: `function not found: "echo"; did you mean "Echo"? The endpoint offers Echo, SumOfRows`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			function, err := FindFunction(capabilities, tt.lookup)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("FindFunction(%q) error = %v, want %q", tt.lookup, err, tt.wantErr)
				}
				if !errors.Is(err, ErrFunctionNotFound) {
					t.Errorf("FindFunction(%q) error = %v, want ErrFunctionNotFound", tt.lookup, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("FindFunction(%q) error: %v", tt.lookup, err)
			}
			if function.GetFunctionId() != tt.wantID {
				t.Errorf("FindFunction(%q) id = %d, want %d", tt.lookup, function.GetFunctionId(), tt.wantID)
			}
		})
	}
}

func TestFindFunctionWithoutFunctions(t *testing.T) {
	_, err := FindFunction(&ssepb.Capabilities{}, "Echo")
	want := `function not found: "Echo"; the endpoint's capabilities list no functions`
	if err == nil || err.Error() != want {
		t.Errorf("FindFunction error = %v, want %q", err, want)
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dialClosedPort returns a client for a port that was free a moment ago,
// and so refuses connections, and the port's address.
func dialClosedPort(t *testing.T) (*Client, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := lis.Addr().String()
	lis.Close()
	client, err := Dial(address, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client, address
}

func TestConnectionErrorOnRefusedDial(t *testing.T) {
	client, address := dialClosedPort(t)
	_, _, err := client.Capabilities(testContext(t))
	var connectionErr *ConnectionError
	if !errors.As(err, &connectionErr) {
		t.Fatalf("Capabilities error = %v, want a ConnectionError", err)
	}
	if connectionErr.Address != address {
		t.Errorf("ConnectionError.Address = %s, want %s", connectionErr.Address, address)
	}
	if connectionErr.TLS {
		t.Error("ConnectionError.TLS = true, want false for a plaintext client")
	}
	if code := status.Code(err); code != codes.Unavailable {
		t.Errorf("status.Code = %v, want Unavailable", code)
	}
	_, err = client.ExecuteFunction(testContext(t), 0, &ssepb.CommonRequestHeader{}, nil)
	if !errors.As(err, &connectionErr) {
		t.Errorf("ExecuteFunction error = %v, want a ConnectionError", err)
	}
}

// TestConnectionErrorOnGoaway checks that a connection the endpoint closed
// with GOAWAY, as a stopping server does, is distinguished from a failed
// dial.
// gRPC reports it only in its message, which is what the test feeds in.
func TestConnectionErrorOnGoaway(t *testing.T) {
	client, address := dialClosedPort(t)

	goaway := status.Error(codes.Unavailable, `closing transport due to: connection error: desc = "error reading from server: EOF", received prior goaway: code: NO_ERROR, debug data: "graceful_stop"`)
	var connectionErr *ConnectionError
	if !errors.As(client.connectionError(goaway, new(atomic.Bool)), &connectionErr) {
		t.Fatal("GOAWAY error is no ConnectionError")
	}
	if !connectionErr.Closed {
		t.Error("ConnectionError.Closed = false after GOAWAY, want true")
	}
	if want := address + " closed the connection: "; !strings.HasPrefix(connectionErr.Error(), want) {
		t.Errorf("Error() = %q, want it to start with %q", connectionErr.Error(), want)
	}
	refused := status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp: connection refused\"")
	if errors.As(client.connectionError(refused, new(atomic.Bool)), &connectionErr) && connectionErr.Closed {
		t.Error("ConnectionError.Closed = true after a refused dial, want false")
	}
}

func TestUnavailableStatusIsNoConnectionError(t *testing.T) {
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return nil, status.Error(codes.Unavailable, "model still loading")
		},
	})
	client, err := Dial(plugin.Addr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	_, _, err = client.Capabilities(testContext(t))
	var connectionErr *ConnectionError
	if errors.As(err, &connectionErr) {
		t.Errorf("Capabilities error = %v, a ConnectionError; want the plugin's status alone", err)
	}
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Errorf("status code = %v, want Unavailable", st.Code())
	}
	if st.Message() != "model still loading" {
		t.Errorf("status message = %q, want %q", st.Message(), "model still loading")
	}
}

// TestStatusBeforeCloseIsNoConnectionError checks that a status the
// endpoint sent stays the endpoint's status when the endpoint then closes
// the connection, as a stopping gateway does with the calls it ends. By
// the time the client looks, the connection is gone either way.
func TestStatusBeforeCloseIsNoConnectionError(t *testing.T) {
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return nil, status.Error(codes.Unavailable, "the gateway stopped before the call ended")
		},
	})
	client, err := Dial(plugin.Addr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, answered := watchStatus(testContext(t))
	_, callErr := client.connector.GetCapabilities(ctx, &ssepb.Empty{})
	if status.Code(callErr) != codes.Unavailable {
		t.Fatalf("GetCapabilities = %v, want Unavailable", callErr)
	}
	if !answered.Load() {
		t.Fatal("the call's status came from the plugin, but statusWatch did not see it")
	}

	plugin.Server.Stop()
	for state := client.conn.GetState(); state == connectivity.Ready; state = client.conn.GetState() {
		if !client.conn.WaitForStateChange(ctx, state) {
			t.Fatal("the connection stayed ready after the plugin stopped")
		}
	}
	var connectionErr *ConnectionError
	if errors.As(client.connectionError(callErr, answered), &connectionErr) {
		t.Errorf("error = %v, a ConnectionError; want the plugin's status alone", connectionErr)
	}
	if !errors.As(client.connectionError(callErr, new(atomic.Bool)), &connectionErr) {
		t.Error("the same error without a status from the plugin is no ConnectionError, want one")
	}
}
