package ssetest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
)

// FreeAddress returns a loopback address where nothing listens: it binds
// a free port and closes it again, so that connections to it are refused
// until a test listens there.
func FreeAddress(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	return address
}

// SyncBuffer is a bytes.Buffer that one goroutine may write while
// another reads it, such as a log or a command's output.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// SingleDialer is a gRPC dialer that opens one connection and fails every
// later attempt, so that a client whose handshake fails makes exactly one
// attempt instead of retrying in the background. Use its Dial with
// grpc.WithContextDialer.
type SingleDialer struct {
	mu        sync.Mutex
	localAddr string // of the one connection; empty before it is made
}

func (d *SingleDialer) Dial(ctx context.Context, address string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.localAddr != "" {
		return nil, errors.New("test client dials only once")
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	d.localAddr = conn.LocalAddr().String()
	return conn, nil
}

// Address returns the client's end of the one connection, which the
// gateway logs as the peer address.
func (d *SingleDialer) Address() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.localAddr
}
