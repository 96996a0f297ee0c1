package ssetest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
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
// another reads it or waits for a line in it, such as a log or a
// command's output. The zero value is ready to use.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	// written is closed by the next Write, which wakes every goroutine
	// waiting for more output. It is nil while none waits.
	written chan struct{}
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.written != nil {
		close(b.written)
		b.written = nil
	}
	return n, err
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitForLine waits until match accepts a line written to b, and returns
// that line without its line ending. match is called with each complete
// line once, in order, starting with the lines written before the call.
// After timeout it fails the test with what, the awaited line's
// description, and the content so far.
func (b *SyncBuffer) WaitForLine(t testing.TB, what string, timeout time.Duration, match func(line string) bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	line, err := b.waitForLine(ctx, nil, match)
	if err != nil {
		t.Fatalf("no line %s within %v; output so far:\n%s", what, timeout, b.String())
	}
	return line
}

// errOutputEnded is waitForLine's error when no line matched before the
// writer stopped for good.
var errOutputEnded = errors.New("output ended")

// waitForLine passes each complete line written to b to match, in order
// and once each, until match returns true, and returns that line. It
// wakes on each Write instead of polling. It returns ctx's error when ctx
// ends first. A closed stop means that nothing more will be written:
// waitForLine then passes the rest, a last line without a newline
// included, and returns errOutputEnded if none matched.
func (b *SyncBuffer) waitForLine(ctx context.Context, stop <-chan struct{}, match func(line string) bool) (string, error) {
	offset, stopped := 0, false
	for {
		text, written := b.since(offset)
		for {
			end := strings.IndexByte(text, '\n')
			if end < 0 {
				break
			}
			line := strings.TrimSuffix(text[:end], "\r")
			text, offset = text[end+1:], offset+end+1
			if match(line) {
				return line, nil
			}
		}
		if stopped {
			if text != "" && match(text) {
				return text, nil
			}
			return "", errOutputEnded
		}
		select {
		case <-written:
		case <-stop:
			stopped = true // the output is complete, so read it once more
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// since returns what was written after the first offset bytes, and a
// channel that the next Write closes.
func (b *SyncBuffer) since(offset int) (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.written == nil {
		b.written = make(chan struct{})
	}
	return string(b.buf.Bytes()[offset:]), b.written
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
