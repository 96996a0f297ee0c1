package ssetest

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// Dial returns a plaintext client for address that uses Codec, closed when
// the test ends. opts come last.
func Dial(t testing.TB, address string, opts ...grpc.DialOption) ssepb.ConnectorClient {
	t.Helper()
	_, client := DialConn(t, address, opts...)
	return client
}

// DialTLS returns a mutual TLS client with the certificates of a
// Qlik-style client folder. A non-empty serverName is verified and sent as
// the TLS server name and :authority.
func DialTLS(t testing.TB, address, clientDir, serverName string, opts ...grpc.DialOption) ssepb.ConnectorClient {
	t.Helper()
	tlsConfig, err := tlsutil.ClientFilesInDir(clientDir, "", "", "").ClientConfig(serverName)
	if err != nil {
		t.Fatalf("client TLS: %v", err)
	}
	options := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig))}
	if serverName != "" {
		options = append(options, grpc.WithAuthority(serverName))
	}
	_, client := dialConn(t, address, append(options, opts...)...)
	return client
}

// DialConn is Dial that also returns the connection, for a test that
// watches its state.
func DialConn(t testing.TB, address string, opts ...grpc.DialOption) (*grpc.ClientConn, ssepb.ConnectorClient) {
	t.Helper()
	return dialConn(t, address, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
}

func dialConn(t testing.TB, address string, opts ...grpc.DialOption) (*grpc.ClientConn, ssepb.ConnectorClient) {
	t.Helper()
	options := append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec{}))}, opts...)
	conn, err := grpc.NewClient("passthrough:///"+address, options...)
	if err != nil {
		t.Fatalf("dialing %s: %v", address, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, ssepb.NewConnectorClient(conn)
}

// RecordStates records every state of conn from now on, until the
// returned function is called; that function returns the states seen.
func RecordStates(conn *grpc.ClientConn) (stop func() []connectivity.State) {
	ctx, cancel := context.WithCancel(context.Background())
	var states []connectivity.State
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			state := conn.GetState()
			states = append(states, state)
			if !conn.WaitForStateChange(ctx, state) {
				return
			}
		}
	}()
	return func() []connectivity.State {
		cancel()
		<-done
		return states
	}
}
