package gateway_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// wireWait bounds every wait for a captured request or a frame.
const wireWait = 10 * time.Second

// wireChangeableKeys are the request headers that gRPC sets on each hop by
// itself, so the gateway's request may carry other values than the
// client's. traceparent and tracestate are W3C trace context, which a
// tracing gateway adds by design.
var wireChangeableKeys = map[string]bool{
	"grpc-timeout":         true,
	"user-agent":           true,
	"te":                   true,
	"content-type":         true,
	"grpc-accept-encoding": true,
	"traceparent":          true,
	"tracestate":           true,
}

// TestForwardedRequestHeaders captures, frame by frame, the HTTP/2 request
// headers that the gateway sends to a plugin, and compares them with what
// the client sent to the same server directly. Elsewhere, proxies dropped
// client metadata or copied pseudo-headers as plain headers. (C13)
func TestForwardedRequestHeaders(t *testing.T) {
	common := string([]byte{0x0a, 0x03, 'a', 0x00, 0xff, 0x12, 0x01, 'u', 0x18, 0x05})
	function := string([]byte{0x08, 0x02, 0x12, 0x02, 0x00, 0xff})
	script, err := proto.Marshal(&ssepb.ScriptRequestHeader{Script: "q = args[0] * 2", ReturnType: ssepb.DataType_NUMERIC})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		method string
		call   func(ssepb.ConnectorClient, context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[ssepb.BundledRows, ssepb.BundledRows], error)
		binary map[string]string // the qlik-*-bin headers and their values
		// trailersOnly makes the backend respond with a single header block.
		trailersOnly bool
	}{
		{
			name:   "ExecuteFunction",
			method: "ExecuteFunction",
			call:   ssepb.ConnectorClient.ExecuteFunction,
			binary: map[string]string{ssepb.CommonRequestHeaderKey: common, ssepb.FunctionRequestHeaderKey: function},
		},
		{
			name:         "EvaluateScript with trailers-only response",
			method:       "EvaluateScript",
			call:         ssepb.ConnectorClient.EvaluateScript,
			binary:       map[string]string{ssepb.CommonRequestHeaderKey: common, ssepb.ScriptRequestHeaderKey: string(script)},
			trailersOnly: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backend := startWireBackend(t, tt.trailersOnly)
			gw := startWireGateway(t, backend.addr)

			md := metadata.MD{}
			for key, value := range tt.binary {
				md.Set(key, value)
			}
			md.Append("x-test", "first", "second")
			md.Set(routing.EngineHeader, "R")
			ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(testContext(t), md), 30*time.Second)
			defer cancel()
			wantMessages := 1
			if tt.trailersOnly {
				wantMessages = 0
			}

			// The client's own request, as the backend receives it directly.
			if n, err := wireExchange(ctx, tt.call, ssetest.Dial(t, backend.addr)); err != nil || n != wantMessages {
				t.Fatalf("direct call = %d messages, %v; want %d messages, OK", n, err, wantMessages)
			}
			sent := wireAwait(t, backend.requests, "direct request")

			// The same call through the gateway.
			if n, err := wireExchange(ctx, tt.call, ssetest.Dial(t, gw.Addrs[0])); err != nil || n != wantMessages {
				t.Fatalf("call through the gateway = %d messages, %v; want %d messages, OK", n, err, wantMessages)
			}
			forwarded := wireAwait(t, backend.requests, "forwarded request")

			// Pseudo-headers: the four of a request, each once, all before
			// the regular fields.
			wantPseudo := map[string]string{
				":method":    "POST",
				":scheme":    "http",
				":path":      "/qlik.sse.Connector/" + tt.method,
				":authority": backend.addr,
			}
			pseudoCount := map[string]int{}
			sawRegular := false
			for i, field := range forwarded {
				if !strings.HasPrefix(field.Name, ":") {
					sawRegular = true
					continue
				}
				pseudoCount[field.Name]++
				if sawRegular {
					t.Errorf("forwarded field %d = %q after regular fields, want every pseudo-header first", i, field.Name)
				}
				if want, ok := wantPseudo[field.Name]; !ok {
					t.Errorf("forwarded pseudo-header %q = %q, want none such in a request", field.Name, field.Value)
				} else if field.Value != want {
					t.Errorf("forwarded %s = %q, want %q", field.Name, field.Value, want)
				}
			}
			for name := range wantPseudo {
				if pseudoCount[name] != 1 {
					t.Errorf("forwarded %s occurs %d times, want once", name, pseudoCount[name])
				}
			}

			// The headers gRPC requires on every request.
			if got := wireValues(forwarded, "te"); !cmp.Equal(got, []string{"trailers"}) {
				t.Errorf("forwarded te = %q, want [trailers]", got)
			}
			if got := wireValues(forwarded, "content-type"); !cmp.Equal(got, []string{"application/grpc"}) {
				t.Errorf("forwarded content-type = %q, want [application/grpc]", got)
			}
			if got := wireValues(forwarded, "user-agent"); len(got) != 1 {
				t.Errorf("forwarded user-agent = %q, want exactly one", got)
			}
			if got := wireValues(forwarded, routing.EngineHeader); len(got) != 0 {
				t.Errorf("forwarded %s = %q, want it removed", routing.EngineHeader, got)
			}

			// Everything else exactly as the client sent it, the engine
			// header aside.
			wantRegular := wireRegularFields(sent)
			delete(wantRegular, routing.EngineHeader)
			if diff := cmp.Diff(wantRegular, wireRegularFields(forwarded)); diff != "" {
				t.Errorf("forwarded regular fields (-client +gateway):\n%s", diff)
			}
			for key, want := range tt.binary {
				got := wireValues(forwarded, key)
				if len(got) != 1 {
					t.Errorf("forwarded %s = %d values, want 1", key, len(got))
					continue
				}
				decoded, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(got[0], "="))
				if err != nil {
					t.Errorf("forwarded %s = %q, not base64: %v", key, got[0], err)
					continue
				}
				if string(decoded) != want {
					t.Errorf("forwarded %s = % x, want % x", key, decoded, want)
				}
			}

			// The client's 30 s deadline, less the time spent on the way.
			timeouts := wireValues(forwarded, "grpc-timeout")
			if len(timeouts) != 1 {
				t.Fatalf("forwarded grpc-timeout = %q, want one value", timeouts)
			}
			timeout, err := wireParseTimeout(timeouts[0])
			if err != nil {
				t.Fatal(err)
			}
			if timeout < 29*time.Second || timeout > 30*time.Second {
				t.Errorf("forwarded grpc-timeout = %v, want between 29s and 30s", timeout)
			}
		})
	}
}

// startWireGateway starts a gateway whose plaintext listener sends every
// call to engine R at address.
func startWireGateway(t *testing.T, address string) *ssetest.Gateway {
	t.Helper()
	return ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(address)},
	})
}

// wireExchange makes one call with a one-row bundle, half-closes and reads
// the whole response. It returns the number of messages received and the
// call's error, nil for OK.
func wireExchange(ctx context.Context, call func(ssepb.ConnectorClient, context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[ssepb.BundledRows, ssepb.BundledRows], error), client ssepb.ConnectorClient) (int, error) {
	stream, err := call(client, ctx)
	if err != nil {
		return 0, err
	}
	if err := stream.Send(ssetest.NumericBundle(1, 1)); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	if err := stream.CloseSend(); err != nil {
		return 0, err
	}
	for n := 0; ; n++ {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			return n, nil
		} else if err != nil {
			return n, err
		}
	}
}

// wireAwait returns the next value from ch, or fails the test after
// wireWait.
func wireAwait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wireWait):
		t.Fatalf("no %s within %v", what, wireWait)
		panic("unreachable")
	}
}

// wireValues returns the values of every field named name, in order.
func wireValues(fields []hpack.HeaderField, name string) []string {
	var values []string
	for _, field := range fields {
		if field.Name == name {
			values = append(values, field.Value)
		}
	}
	return values
}

// wireRegularFields returns the non-pseudo fields that gRPC does not set
// by itself, by name, with their values in order.
func wireRegularFields(fields []hpack.HeaderField) map[string][]string {
	out := map[string][]string{}
	for _, field := range fields {
		if strings.HasPrefix(field.Name, ":") || wireChangeableKeys[field.Name] {
			continue
		}
		out[field.Name] = append(out[field.Name], field.Value)
	}
	return out
}

// wireHeaderListSize returns the size of a header list as HTTP/2's
// SETTINGS_MAX_HEADER_LIST_SIZE counts it: name and value lengths plus 32
// bytes per field.
func wireHeaderListSize(fields []hpack.HeaderField) int {
	size := 0
	for _, field := range fields {
		size += int(field.Size())
	}
	return size
}

// wireParseTimeout decodes a grpc-timeout value such as 29999871u.
func wireParseTimeout(value string) (time.Duration, error) {
	units := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}
	if len(value) < 2 || units[value[len(value)-1]] == 0 {
		return 0, fmt.Errorf("grpc-timeout %q: want digits and one of the units H M S m u n", value)
	}
	n, err := strconv.ParseInt(value[:len(value)-1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("grpc-timeout %q: %w", value, err)
	}
	return time.Duration(n) * units[value[len(value)-1]], nil
}

// wireBackend is a gRPC server built from HTTP/2 frames, on a loopback
// listener with prior-knowledge h2c. It records the header block of each
// request and responds with status OK: in response headers, one
// BundledRows message and trailers, or in one trailers-only header block.
type wireBackend struct {
	addr string
	// requests receives the decoded header fields of each request, in wire
	// order, once the request stream has ended.
	requests chan []hpack.HeaderField

	response wireResponse
	listener net.Listener
	wg       sync.WaitGroup
	// accepted counts the connections the backend accepted.
	accepted atomic.Int32

	mu     sync.Mutex // guards the following
	conns  map[net.Conn]bool
	closed bool
}

// wireResponse is what a wireBackend sends beyond a plain OK response.
type wireResponse struct {
	// trailersOnly makes the backend respond with a single header block.
	trailersOnly bool
	// header and trailer are added to the response headers and trailers.
	// A trailers-only response carries both in its one block. Neither is
	// checked against gRPC's rules.
	header, trailer []hpack.HeaderField
}

// startWireBackend serves until the test ends.
func startWireBackend(t *testing.T, trailersOnly bool) *wireBackend {
	t.Helper()
	return startWireBackendWith(t, wireResponse{trailersOnly: trailersOnly})
}

// startWireBackendWith is startWireBackend with extra response fields.
func startWireBackendWith(t *testing.T, response wireResponse) *wireBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &wireBackend{
		addr:     lis.Addr().String(),
		requests: make(chan []hpack.HeaderField, 16),
		response: response,
		listener: lis,
		conns:    map[net.Conn]bool{},
	}
	b.wg.Go(func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			if !b.track(conn) {
				conn.Close()
				return
			}
			b.accepted.Add(1)
			b.wg.Go(func() { b.serve(conn) })
		}
	})
	t.Cleanup(b.close)
	return b
}

// track adds conn to the open connections, unless the backend is closed.
func (b *wireBackend) track(conn net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.conns[conn] = true
	return true
}

// close stops the listener and every connection, and waits for their
// goroutines.
func (b *wireBackend) close() {
	b.mu.Lock()
	b.closed = true
	b.listener.Close()
	for conn := range b.conns {
		conn.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// serve runs one connection until the peer or close ends it.
func (b *wireBackend) serve(conn net.Conn) {
	defer conn.Close()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(conn, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	c := newWireConn(conn)
	if err := c.framer.WriteSettings(); err != nil {
		return
	}

	// Streams whose request has not ended yet, with their header fields.
	open := map[uint32][]hpack.HeaderField{}
	for {
		event, err := c.next()
		if err != nil {
			return
		}
		switch event.frame {
		case http2.FrameHeaders:
			open[event.streamID] = event.fields
		case http2.FrameRSTStream:
			delete(open, event.streamID)
			continue
		case http2.FrameGoAway:
			return
		}
		fields, ok := open[event.streamID]
		if !ok || !event.endStream {
			continue
		}
		delete(open, event.streamID)
		// The gateway's own health probes answer like any call, but are not
		// the forwarded requests the test looks at.
		if len(wireValues(fields, routing.ProbeHeader)) == 0 {
			select {
			case b.requests <- fields:
			default: // the test reads only the requests it expects
			}
		}
		if err := b.respond(c, event.streamID); err != nil {
			return
		}
	}
}

// respond sends a response with status OK on the stream.
func (b *wireBackend) respond(c *wireConn, streamID uint32) error {
	headers := []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}}
	headers = append(headers, b.response.header...)
	trailers := append([]hpack.HeaderField{{Name: "grpc-status", Value: "0"}}, b.response.trailer...)
	if b.response.trailersOnly {
		return c.writeHeaders(streamID, append(headers, trailers...), true)
	}
	reply, err := proto.Marshal(ssetest.NumericBundle(1, 1))
	if err != nil {
		return err
	}
	if err := c.writeHeaders(streamID, headers, false); err != nil {
		return err
	}
	if err := c.writeMessage(streamID, reply, false); err != nil {
		return err
	}
	return c.writeHeaders(streamID, trailers, true)
}

// wireConn is one end of an HTTP/2 connection, driven frame by frame. It is
// not safe for concurrent use.
type wireConn struct {
	conn    net.Conn
	framer  *http2.Framer
	decoder *hpack.Decoder
	encoder *hpack.Encoder
	block   bytes.Buffer // the encoder's output
}

func newWireConn(conn net.Conn) *wireConn {
	c := &wireConn{conn: conn, framer: http2.NewFramer(conn, conn), decoder: hpack.NewDecoder(4096, nil)}
	c.encoder = hpack.NewEncoder(&c.block)
	return c
}

// wireEvent is what the peer sent: a whole header block, a DATA frame, a
// RST_STREAM or a GOAWAY.
type wireEvent struct {
	frame     http2.FrameType
	streamID  uint32
	fields    []hpack.HeaderField // header block
	data      []byte              // DATA payload, or GOAWAY debug data
	endStream bool
	errCode   http2.ErrCode // RST_STREAM and GOAWAY
}

// next returns the peer's next event. It acknowledges SETTINGS and PING
// itself, and returns flow-control credit for each DATA frame, as an
// HTTP/2 endpoint must for the peer to keep going.
func (c *wireConn) next() (wireEvent, error) {
	for {
		frame, err := c.framer.ReadFrame()
		if err != nil {
			return wireEvent{}, err
		}
		switch f := frame.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := c.framer.WriteSettingsAck(); err != nil {
					return wireEvent{}, err
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := c.framer.WritePing(true, f.Data); err != nil {
					return wireEvent{}, err
				}
			}
		case *http2.WindowUpdateFrame:
			// This end sends little, so the peer's windows do not run out.
		case *http2.HeadersFrame:
			return c.readHeaderBlock(f)
		case *http2.DataFrame:
			if err := c.returnCredit(f); err != nil {
				return wireEvent{}, err
			}
			data := append([]byte(nil), f.Data()...)
			return wireEvent{frame: http2.FrameData, streamID: f.StreamID, data: data, endStream: f.StreamEnded()}, nil
		case *http2.RSTStreamFrame:
			return wireEvent{frame: http2.FrameRSTStream, streamID: f.StreamID, errCode: f.ErrCode}, nil
		case *http2.GoAwayFrame:
			debug := append([]byte(nil), f.DebugData()...)
			return wireEvent{frame: http2.FrameGoAway, data: debug, errCode: f.ErrCode}, nil
		}
	}
}

// readHeaderBlock reads the CONTINUATION frames that complete first and
// decodes the block.
func (c *wireConn) readHeaderBlock(first *http2.HeadersFrame) (wireEvent, error) {
	block := append([]byte(nil), first.HeaderBlockFragment()...)
	ended := first.HeadersEnded()
	for !ended {
		frame, err := c.framer.ReadFrame()
		if err != nil {
			return wireEvent{}, err
		}
		continuation, ok := frame.(*http2.ContinuationFrame)
		if !ok {
			return wireEvent{}, fmt.Errorf("got %v frame inside a header block, want CONTINUATION", frame.Header().Type)
		}
		block = append(block, continuation.HeaderBlockFragment()...)
		ended = continuation.HeadersEnded()
	}
	fields, err := c.decoder.DecodeFull(block)
	if err != nil {
		return wireEvent{}, fmt.Errorf("decoding header block of stream %d: %w", first.StreamID, err)
	}
	return wireEvent{frame: http2.FrameHeaders, streamID: first.StreamID, fields: fields, endStream: first.StreamEnded()}, nil
}

// returnCredit gives back the flow-control window that a DATA frame used.
func (c *wireConn) returnCredit(f *http2.DataFrame) error {
	n := f.Header().Length
	if n == 0 {
		return nil
	}
	if err := c.framer.WriteWindowUpdate(0, n); err != nil {
		return err
	}
	if f.StreamEnded() {
		return nil
	}
	return c.framer.WriteWindowUpdate(f.StreamID, n)
}

// wireMaxFrameSize is HTTP/2's default SETTINGS_MAX_FRAME_SIZE, which
// grpc-go keeps (as of v1.85).
const wireMaxFrameSize = 16384

// writeHeaders sends fields as one header block, split into HEADERS and
// CONTINUATION frames of at most wireMaxFrameSize.
func (c *wireConn) writeHeaders(streamID uint32, fields []hpack.HeaderField, endStream bool) error {
	c.block.Reset()
	for _, field := range fields {
		if err := c.encoder.WriteField(field); err != nil {
			return err
		}
	}
	block := c.block.Bytes()
	first := block[:min(len(block), wireMaxFrameSize)]
	rest := block[len(first):]
	err := c.framer.WriteHeaders(http2.HeadersFrameParam{
		StreamID:      streamID,
		BlockFragment: first,
		EndStream:     endStream,
		EndHeaders:    len(rest) == 0,
	})
	if err != nil {
		return err
	}
	for len(rest) > 0 {
		chunk := rest[:min(len(rest), wireMaxFrameSize)]
		rest = rest[len(chunk):]
		if err := c.framer.WriteContinuation(streamID, len(rest) == 0, chunk); err != nil {
			return err
		}
	}
	return nil
}

// writeMessage sends one gRPC message, uncompressed, in one DATA frame.
func (c *wireConn) writeMessage(streamID uint32, message []byte, endStream bool) error {
	data := make([]byte, 5+len(message))
	binary.BigEndian.PutUint32(data[1:5], uint32(len(message)))
	copy(data[5:], message)
	return c.framer.WriteData(streamID, endStream, data)
}
