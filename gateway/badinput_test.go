package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// badWait bounds each wait of the bad-input tests.
const badWait = 10 * time.Second

// Limits of the gateway under bad input.
const (
	badMaxHeaderListSize   = 8 << 10
	badMaxMessageSize      = 64 << 10
	badMaxStreams          = 4
	badFirstMessageTimeout = 500 * time.Millisecond
	badMaxConnections      = 3
)

// Log messages of the gateway, and what the bad-input tests send.
const (
	badNotGRPCMessage   = "connection refused: not gRPC"
	badRefusedHandshake = "TLS handshake refused"

	// badHeldFunction is the function id whose calls badPlugin holds
	// until they are released.
	badHeldFunction = 7

	// badSecretScript is the script of every normal EvaluateScript call,
	// which the log must never contain.
	badSecretScript = "secret_model <- train(bad_input_marker)"

	badNormalCallBundleRows = 3
)

// badPlugin is the plugin behind the gateway under bad input. It echoes
// ExecuteFunction and EvaluateScript, except that it holds calls of
// badHeldFunction after their first message until release is closed, and
// records how many such calls it held at once at most.
type badPlugin struct {
	*ssetest.Plugin
	executes atomic.Int64

	mu       sync.Mutex // guards the following
	release  chan struct{}
	held     int
	maxHeld  int
	heldSeen chan int // receives the count of held calls each time one more is held
}

// startBadPlugin serves a badPlugin on loopback.
func startBadPlugin(t *testing.T) *badPlugin {
	t.Helper()
	p := &badPlugin{release: make(chan struct{}), heldSeen: make(chan int, 64)}
	close(p.release)
	p.Plugin = ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{AllowScript: true, PluginIdentifier: "bad-input-plugin"}, nil
		},
		Execute: func(s ssetest.Stream) error {
			p.executes.Add(1)
			md, _ := metadata.FromIncomingContext(s.Context())
			if header, err := ssepb.ReadFunctionRequestHeader(md); err == nil && header.GetFunctionId() == badHeldFunction {
				return p.hold(s)
			}
			return ssetest.Echo(s)
		},
		Script: ssetest.Echo,
	})
	return p
}

// hold holds a call of badHeldFunction until release is closed, then
// echoes its first message and ends it.
func (p *badPlugin) hold(s ssetest.Stream) error {
	first, err := s.Recv()
	if err != nil {
		return err
	}
	p.mu.Lock()
	release := p.release
	p.held++
	p.maxHeld = max(p.maxHeld, p.held)
	select {
	case p.heldSeen <- p.held:
	default: // a test that waits for the count drains the channel
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.held--
		p.mu.Unlock()
	}()
	select {
	case <-release:
	case <-s.Context().Done():
		return s.Context().Err()
	}
	return s.Send(first)
}

// holdCalls makes the plugin hold calls of badHeldFunction from now on,
// and returns the function that releases them.
func (p *badPlugin) holdCalls() (release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.release = make(chan struct{})
	p.maxHeld = 0
	return sync.OnceFunc(func() { close(p.release) })
}

func (p *badPlugin) maxHeldCalls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxHeld
}

// badEnv is the gateway under bad input, with its plugin and
// certificates.
type badEnv struct {
	gw        *ssetest.Gateway
	plugin    *badPlugin
	certs     *ssetest.Certs
	plaintext string // the plaintext listener's address
	secure    string // the mutual TLS listener's address
}

// startBadEnv starts a gateway with a plaintext and a mutual TLS listener
// for engine R, with small limits.
func startBadEnv(t *testing.T, tune func(*config.Config)) *badEnv {
	t.Helper()
	certs := ssetest.NewCerts(t)
	plugin := startBadPlugin(t)
	firstMessage := badFirstMessageTimeout
	cfg := &config.Config{
		Listeners: []config.Listener{
			ssetest.Listen("R", nil),
			ssetest.Listen("R", &config.ServerTLS{Dir: certs.GatewayDir}),
		},
		Engines: map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
		Limits: config.Limits{
			MaxHeaderListSize:    badMaxHeaderListSize,
			MaxMessageSize:       badMaxMessageSize,
			MaxConcurrentStreams: badMaxStreams,
			FirstMessageTimeout:  &firstMessage,
		},
	}
	if tune != nil {
		tune(cfg)
	}
	gw := ssetest.StartGateway(t, cfg)
	return &badEnv{gw: gw, plugin: plugin, certs: certs, plaintext: gw.Addrs[0], secure: gw.Addrs[1]}
}

// badDial returns a client of address on a connection of its own, with
// mutual TLS as the Qlik folder's client when secure, and closes the
// connection when the test ends.
func (e *badEnv) badDial(t *testing.T, address string, secure bool, opts ...grpc.DialOption) ssepb.ConnectorClient {
	t.Helper()
	if secure {
		return ssetest.DialTLS(t, address, e.certs.QlikDir, "localhost", opts...)
	}
	return ssetest.Dial(t, address, opts...)
}

// checkNormalCalls checks that new connections to both listeners still
// serve GetCapabilities, ExecuteFunction and EvaluateScript.
func (e *badEnv) checkNormalCalls(t *testing.T) {
	t.Helper()
	for _, listener := range []struct {
		name    string
		address string
		secure  bool
	}{{"plaintext", e.plaintext, false}, {"mutual TLS", e.secure, true}} {
		client := e.badDial(t, listener.address, listener.secure)
		ctx, cancel := context.WithTimeout(testContext(t), badWait)
		capabilities, err := client.GetCapabilities(ctx, &ssepb.Empty{})
		cancel()
		if err != nil {
			t.Errorf("%s listener: GetCapabilities() on a new connection error = %v, want nil", listener.name, err)
			continue
		}
		if got := capabilities.GetPluginIdentifier(); got != "bad-input-plugin" {
			t.Errorf("%s listener: GetCapabilities().PluginIdentifier = %q, want bad-input-plugin", listener.name, got)
		}
		received, err := secStream(testContext(t), client.ExecuteFunction, secFunctionMetadata(t, badNormalCallBundleRows), ssetest.NumericBundle(badNormalCallBundleRows, 1))
		if err != nil {
			t.Errorf("%s listener: ExecuteFunction() error = %v, want nil", listener.name, err)
		} else if len(received) != 1 {
			t.Errorf("%s listener: ExecuteFunction() = %d bundles, want 1", listener.name, len(received))
		}
		received, err = secStream(testContext(t), client.EvaluateScript, secScriptMetadata(t, badSecretScript, "app", "user"), ssetest.NumericBundle(2, 1))
		if err != nil {
			t.Errorf("%s listener: EvaluateScript() error = %v, want nil", listener.name, err)
		} else if len(received) != 1 {
			t.Errorf("%s listener: EvaluateScript() = %d bundles, want 1", listener.name, len(received))
		}
	}
}

// badRecords returns the records with message msg whose reason is
// reason.
func badRecords(gw *ssetest.Gateway, msg, reason string) []map[string]any {
	var out []map[string]any
	for _, record := range gw.Logs.Records(msg) {
		if record["reason"] == reason {
			out = append(out, record)
		}
	}
	return out
}

// badCheckOneRecord waits for one record with message msg and reason
// from peer, and checks that there is exactly one.
func badCheckOneRecord(t *testing.T, gw *ssetest.Gateway, msg, reason, peer string) {
	t.Helper()
	gw.Logs.WaitFor(t, msg, badWait, func(r map[string]any) bool { return r["reason"] == reason })
	records := badRecords(gw, msg, reason)
	if len(records) != 1 {
		t.Fatalf("got %d %q records with reason %q, want 1: %v", len(records), msg, reason, records)
	}
	if got := records[0]["peer"]; got != peer {
		t.Errorf("%q record peer = %v, want %s", msg, got, peer)
	}
	if got := records[0]["level"]; got != "WARN" {
		t.Errorf("%q record level = %v, want WARN", msg, got)
	}
}

// badReadUntilClosed reads from conn until the gateway closes it, and
// returns what it read. It fails the test when the connection is still
// open after badWait.
func badReadUntilClosed(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(badWait)); err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(conn)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("connection still open %v after the bad input, want it closed", badWait)
	}
	return data
}

// badCall sends md and then requests on a new ExecuteFunction stream of
// client and returns the call's status.
func badCall(t *testing.T, client ssepb.ConnectorClient, md metadata.MD, requests ...ssetest.Raw) error {
	t.Helper()
	ctx := metadata.NewOutgoingContext(testContext(t), md)
	return exchange(ctx, client, requests...).err
}

// badRawFrame is what the gateway sent in one HTTP/2 frame, as far as
// the tests look at it.
type badRawFrame struct {
	typ      http2.FrameType
	flags    http2.Flags
	streamID uint32
	errCode  http2.ErrCode // RST_STREAM and GOAWAY
	fields   []hpack.HeaderField
}

// badRawConn is an HTTP/2 client connection that writes the bytes and
// frames of a test and collects the gateway's frames until the connection
// ends.
type badRawConn struct {
	conn   net.Conn
	framer *http2.Framer

	writeMu sync.Mutex // serializes writes on framer

	mu     sync.Mutex // guards frames, arrived and readErr
	frames []badRawFrame
	// arrived is closed, and replaced, by each frame that the reading
	// goroutine adds, which wakes waitFor.
	arrived chan struct{}
	// readErr is why reading ended; set before done is closed.
	readErr error
	done    chan struct{}
}

// badDialRaw connects to a plaintext listener and, when preface is set,
// sends the client preface and an empty SETTINGS frame. It closes the
// connection when the test ends.
func badDialRaw(t *testing.T, address string, preface bool) *badRawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", address, badWait)
	if err != nil {
		t.Fatal(err)
	}
	c := &badRawConn{conn: conn, framer: http2.NewFramer(conn, conn), arrived: make(chan struct{}), done: make(chan struct{})}
	c.framer.AllowIllegalWrites = true
	c.framer.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	// The preface goes out before the reading loop starts, since that
	// loop acknowledges the gateway's SETTINGS, which may come first.
	if preface {
		if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
			t.Fatalf("writing the HTTP/2 preface: %v", err)
		}
		if err := c.framer.WriteSettings(); err != nil {
			t.Fatalf("writing SETTINGS: %v", err)
		}
	}
	go c.readLoop()
	t.Cleanup(func() {
		conn.Close()
		<-c.done
	})
	return c
}

func (c *badRawConn) readLoop() {
	defer close(c.done)
	for {
		f, err := c.framer.ReadFrame()
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			return
		}
		frame := badRawFrame{typ: f.Header().Type, flags: f.Header().Flags, streamID: f.Header().StreamID}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.writeMu.Lock()
				_ = c.framer.WriteSettingsAck()
				c.writeMu.Unlock()
			}
		case *http2.RSTStreamFrame:
			frame.errCode = f.ErrCode
		case *http2.GoAwayFrame:
			frame.errCode = f.ErrCode
		case *http2.MetaHeadersFrame:
			frame.fields = append([]hpack.HeaderField(nil), f.Fields...)
		}
		c.mu.Lock()
		c.frames = append(c.frames, frame)
		close(c.arrived)
		c.arrived = make(chan struct{})
		c.mu.Unlock()
	}
}

// write runs fn, which writes on the framer or the connection, alone.
func (c *badRawConn) write(t *testing.T, fn func() error) {
	t.Helper()
	c.writeMu.Lock()
	err := fn()
	c.writeMu.Unlock()
	if err != nil {
		c.mu.Lock()
		frames, readErr := cloneFrames(c.frames), c.readErr
		c.mu.Unlock()
		t.Fatalf("writing to the gateway: %v; frames received: %+v; reading: %v", err, frames, readErr)
	}
}

// waitFor waits until match accepts a frame received, and returns it. It
// fails the test when reading ends first, or after badWait.
func (c *badRawConn) waitFor(t *testing.T, what string, match func(badRawFrame) bool) badRawFrame {
	t.Helper()
	timeout := time.NewTimer(badWait)
	defer timeout.Stop()
	for {
		c.mu.Lock()
		for _, frame := range c.frames {
			if match(frame) {
				c.mu.Unlock()
				return frame
			}
		}
		frames, readErr, arrived := cloneFrames(c.frames), c.readErr, c.arrived
		c.mu.Unlock()
		if readErr != nil {
			t.Fatalf("no %s from the gateway before reading ended with %v; frames: %+v", what, readErr, frames)
		}
		select {
		case <-arrived:
		case <-c.done: // readErr is set now, and the next pass reports it
		case <-timeout.C:
			t.Fatalf("no %s from the gateway within %v; frames: %+v", what, badWait, frames)
		}
	}
}

// waitClosed waits until the gateway closes the connection, and returns
// the frames it sent.
func (c *badRawConn) waitClosed(t *testing.T) []badRawFrame {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(badWait):
		t.Fatalf("connection still open %v after the bad input, want it closed", badWait)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return cloneFrames(c.frames)
}

// cloneFrames returns a copy of frames that the reading goroutine does not
// change.
func cloneFrames(frames []badRawFrame) []badRawFrame {
	return append([]badRawFrame(nil), frames...)
}

// badGRPCRequest returns the header fields of an ExecuteFunction call of
// function id, as grpc-go sends them.
func badGRPCRequest(t *testing.T, authority string, id int32) []hpack.HeaderField {
	t.Helper()
	header, err := proto.Marshal(&ssepb.FunctionRequestHeader{FunctionId: id})
	if err != nil {
		t.Fatal(err)
	}
	return []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: ssepb.Connector_ExecuteFunction_FullMethodName},
		{Name: ":authority", Value: authority},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
		{Name: ssepb.FunctionRequestHeaderKey, Value: base64.RawStdEncoding.EncodeToString(header)},
	}
}

// encodeFields encodes header fields as one HPACK block.
func encodeFields(t *testing.T, fields []hpack.HeaderField) []byte {
	t.Helper()
	var block bytes.Buffer
	encoder := hpack.NewEncoder(&block)
	for _, field := range fields {
		if err := encoder.WriteField(field); err != nil {
			t.Fatal(err)
		}
	}
	return block.Bytes()
}

// fieldValue returns the value of the named field, or "".
func fieldValue(fields []hpack.HeaderField, name string) string {
	for _, field := range fields {
		if field.Name == name {
			return field.Value
		}
	}
	return ""
}

// badCase is one kind of bad input and the checks of how the gateway
// handled it.
type badCase struct {
	name string
	run  func(t *testing.T, e *badEnv)
}

// badHeaderCases send calls whose headers the gateway must refuse.
func badHeaderCases() []badCase {
	functionMD := func(t *testing.T) metadata.MD { return secFunctionMetadata(t, 1) }
	refused := func(t *testing.T, e *badEnv, md metadata.MD, want codes.Code, parts ...string) {
		t.Helper()
		before := e.plugin.executes.Load()
		err := badCall(t, e.badDial(t, e.plaintext, false), md, ssetest.Raw{})
		secCheckStatus(t, "ExecuteFunction()", err, want, parts...)
		if got := e.plugin.executes.Load(); got != before {
			t.Errorf("plugin ExecuteFunction calls = %d, want still %d", got, before)
		}
	}
	return []badCase{
		{
			name: "qlik-*-bin header that is not protobuf",
			run: func(t *testing.T, e *badEnv) {
				md := functionMD(t)
				md.Set(ssepb.CommonRequestHeaderKey, string([]byte{0xff, 0xff, 0xff, 0xff}))
				refused(t, e, md, codes.InvalidArgument, "malformed", ssepb.CommonRequestHeaderKey)
			},
		},
		{
			name: "script header that is not protobuf",
			run: func(t *testing.T, e *badEnv) {
				script, err := proto.Marshal(&ssepb.ScriptRequestHeader{Script: badSecretScript})
				if err != nil {
					t.Fatal(err)
				}
				md := secScriptMetadata(t, "x", "app", "user")
				md.Set(ssepb.ScriptRequestHeaderKey, string(append(script, 0x0a, 0x80)))
				client := e.badDial(t, e.plaintext, false)
				_, err = secStream(testContext(t), client.EvaluateScript, md, ssetest.NumericBundle(1, 1))
				secCheckStatus(t, "EvaluateScript()", err, codes.InvalidArgument, "malformed", ssepb.ScriptRequestHeaderKey)
			},
		},
		{
			name: "same header twice",
			run: func(t *testing.T, e *badEnv) {
				md := functionMD(t)
				md.Append(ssepb.FunctionRequestHeaderKey, md.Get(ssepb.FunctionRequestHeaderKey)[0])
				refused(t, e, md, codes.InvalidArgument, ssepb.FunctionRequestHeaderKey, "2 times")
			},
		},
		{
			name: "too many qlik-* headers",
			run: func(t *testing.T, e *badEnv) {
				md := functionMD(t)
				for i := range 7 {
					md.Append("qlik-extra", fmt.Sprint(i))
				}
				refused(t, e, md, codes.InvalidArgument, "9 qlik-* headers")
			},
		},
		{
			name: "header list over the limit",
			run: func(t *testing.T, e *badEnv) {
				md := functionMD(t)
				md.Set("x-padding", strings.Repeat("p", badMaxHeaderListSize+4000))
				refused(t, e, md, codes.ResourceExhausted, "in x-padding, are over limits.max_header_list_size")
				// Recorded under the engine the call was for, not "none".
				record := e.gw.Logs.WaitFor(t, "call", badWait, func(r map[string]any) bool { return r["code"] == codes.ResourceExhausted.String() })
				if record["engine"] != "R" {
					t.Errorf("record of the refused call names engine %v, want R", record["engine"])
				}
			},
		},
		{
			name: "message over the limit",
			run: func(t *testing.T, e *badEnv) {
				err := badCall(t, e.badDial(t, e.plaintext, false), functionMD(t), make(ssetest.Raw, badMaxMessageSize+1))
				secCheckStatus(t, "ExecuteFunction()", err, codes.ResourceExhausted)
			},
		},
		{
			name: "client that sends nothing",
			run: func(t *testing.T, e *badEnv) {
				ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(testContext(t), functionMD(t)), badWait)
				defer cancel()
				start := time.Now()
				stream, err := e.badDial(t, e.plaintext, false).ExecuteFunction(ctx)
				if err != nil {
					t.Fatal(err)
				}
				_, err = stream.Recv()
				elapsed := time.Since(start)
				secCheckStatus(t, "ExecuteFunction() without a message", err, codes.DeadlineExceeded, "limits.first_message_timeout")
				if elapsed < badFirstMessageTimeout-100*time.Millisecond || elapsed > badFirstMessageTimeout+2*time.Second {
					t.Errorf("ExecuteFunction() without a message ended after %v, want about %v", elapsed, badFirstMessageTimeout)
				}
			},
		},
	}
}

// badConnectionCases send what is not gRPC, or not TLS, to the listeners.
func badConnectionCases() []badCase {
	return []badCase{
		{
			name: "HTTP/1.1 request on the plaintext port",
			run: func(t *testing.T, e *badEnv) {
				conn, err := net.DialTimeout("tcp", e.plaintext, badWait)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if _, err := io.WriteString(conn, "GET /qlik.sse.Connector/GetCapabilities HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				if reply := badReadUntilClosed(t, conn); bytes.HasPrefix(reply, []byte("HTTP/1.1 2")) {
					t.Errorf("reply to HTTP/1.1 = %q, want no success", reply)
				}
				badCheckOneRecord(t, e.gw, badNotGRPCMessage, "an HTTP/1 request", conn.LocalAddr().String())
			},
		},
		{
			name: "TLS ClientHello on the plaintext port",
			run: func(t *testing.T, e *badEnv) {
				cfg, err := tlsutil.ClientFilesInDir(e.certs.QlikDir, "", "", "").ClientConfig("localhost")
				if err != nil {
					t.Fatal(err)
				}
				raw, err := net.DialTimeout("tcp", e.plaintext, badWait)
				if err != nil {
					t.Fatal(err)
				}
				conn := tls.Client(raw, cfg)
				defer conn.Close()
				if err := conn.SetDeadline(time.Now().Add(badWait)); err != nil {
					t.Fatal(err)
				}
				err = conn.Handshake()
				var netErr net.Error
				if err == nil || (errors.As(err, &netErr) && netErr.Timeout()) {
					t.Errorf("TLS handshake on the plaintext port = %v, want it to fail at once", err)
				}
				badCheckOneRecord(t, e.gw, badNotGRPCMessage, "a TLS handshake on a plaintext listener", raw.LocalAddr().String())
			},
		},
		{
			name: "bytes that are not the HTTP/2 preface",
			run: func(t *testing.T, e *badEnv) {
				c := badDialRaw(t, e.plaintext, false)
				c.write(t, func() error { _, err := c.conn.Write(bytes.Repeat([]byte{0x00, 0xfe}, 32)); return err })
				c.waitClosed(t)
				badCheckOneRecord(t, e.gw, badNotGRPCMessage, "not the HTTP/2 preface", c.conn.LocalAddr().String())
			},
		},
		{
			name: "plaintext on the TLS port",
			run: func(t *testing.T, e *badEnv) {
				conn, err := net.DialTimeout("tcp", e.secure, badWait)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				badReadUntilClosed(t, conn)
				badCheckOneRecord(t, e.gw, badRefusedHandshake, string(tlsutil.FailureNotTLS), conn.LocalAddr().String())
				if got := e.gw.HandshakeFailures()[tlsutil.FailureNotTLS]; got != 1 {
					t.Errorf("HandshakeFailures()[%q] = %d, want 1", tlsutil.FailureNotTLS, got)
				}
			},
		},
		{
			name: "expired client certificate on the TLS port",
			run: func(t *testing.T, e *badEnv) {
				expired := e.certs.ClientDir(t, nil, tlsutil.LeafRequest{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
				dialer := &ssetest.SingleDialer{}
				client := ssetest.DialTLS(t, e.secure, expired, "localhost", grpc.WithContextDialer(dialer.Dial))
				ctx, cancel := context.WithTimeout(testContext(t), badWait)
				defer cancel()
				if _, err := client.GetCapabilities(ctx, &ssepb.Empty{}); err == nil {
					t.Fatal("GetCapabilities() with an expired certificate succeeded, want it refused")
				}
				badCheckOneRecord(t, e.gw, badRefusedHandshake, string(tlsutil.FailureExpired), dialer.Address())
				if got := e.gw.HandshakeFailures()[tlsutil.FailureExpired]; got != 1 {
					t.Errorf("HandshakeFailures()[%q] = %d, want 1", tlsutil.FailureExpired, got)
				}
			},
		},
	}
}

// badFrameCases send HTTP/2 frames that break the protocol after a valid
// preface. Each of these is a connection error in HTTP/2 (RFC 9113), so
// the gateway must end the connection.
func badFrameCases() []badCase {
	closedBy := func(name string, send func(t *testing.T, c *badRawConn)) badCase {
		return badCase{name: name, run: func(t *testing.T, e *badEnv) {
			c := badDialRaw(t, e.plaintext, true)
			c.waitFor(t, "SETTINGS", func(f badRawFrame) bool { return f.typ == http2.FrameSettings })
			send(t, c)
			frames := c.waitClosed(t)
			for _, f := range frames {
				if f.typ == http2.FrameGoAway && f.errCode == http2.ErrCodeNo {
					t.Errorf("GOAWAY error code = %v, want an error", f.errCode)
				}
			}
		}}
	}
	return []badCase{
		closedBy("frame over the maximum frame size", func(t *testing.T, c *badRawConn) {
			c.write(t, func() error {
				// A DATA frame header announcing 16 MiB, then a little of it.
				_, err := c.conn.Write(append([]byte{0xff, 0xff, 0xff, byte(http2.FrameData), 0, 0, 0, 0, 1}, make([]byte, 64)...))
				return err
			})
		}),
		closedBy("HEADERS with an invalid HPACK block", func(t *testing.T, c *badRawConn) {
			c.write(t, func() error {
				return c.framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff, 0xff}, EndHeaders: true})
			})
		}),
		closedBy("DATA on stream 0", func(t *testing.T, c *badRawConn) {
			c.write(t, func() error { return c.framer.WriteData(0, false, []byte("garbage")) })
		}),
		closedBy("WINDOW_UPDATE of 0 on the connection", func(t *testing.T, c *badRawConn) {
			c.write(t, func() error { return c.framer.WriteWindowUpdate(0, 0) })
		}),
		closedBy("CONTINUATION without HEADERS", func(t *testing.T, c *badRawConn) {
			c.write(t, func() error { return c.framer.WriteContinuation(1, true, []byte{0x82}) })
		}),
		closedBy("HEADERS on an even stream", func(t *testing.T, c *badRawConn) {
			c.write(t, func() error {
				return c.framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: encodeFields(t, badGRPCRequest(t, "localhost", 0)), EndHeaders: true})
			})
		}),
		{
			name: "frame of an unknown type",
			run: func(t *testing.T, e *badEnv) {
				// HTTP/2 peers ignore frames of unknown types, so the
				// connection must still acknowledge a PING.
				c := badDialRaw(t, e.plaintext, true)
				c.waitFor(t, "SETTINGS", func(f badRawFrame) bool { return f.typ == http2.FrameSettings })
				c.write(t, func() error { return c.framer.WriteRawFrame(0xfa, 0, 0, []byte("unknown frame payload")) })
				c.write(t, func() error { return c.framer.WritePing(false, [8]byte{'b', 'a', 'd', 'i', 'n', 'p', 'u', 't'}) })
				c.waitFor(t, "PING ack", func(f badRawFrame) bool { return f.typ == http2.FramePing && f.flags.Has(http2.FlagPingAck) })
			},
		},
	}
}

// badStreamCases open more streams on one connection than the gateway
// allows.
func badStreamCases() []badCase {
	return []badCase{
		{
			name: "more streams than max_concurrent_streams from gRPC",
			run: func(t *testing.T, e *badEnv) {
				// grpc-go keeps the streams over the limit waiting until
				// one ends, as HTTP/2 requires of clients.
				release := e.plugin.holdCalls()
				defer release()
				client := e.badDial(t, e.plaintext, false)
				md, err := ssepb.FunctionCallMetadata(badHeldFunction, &ssepb.CommonRequestHeader{Cardinality: 1})
				if err != nil {
					t.Fatal(err)
				}
				const calls = badMaxStreams + 3
				results := make(chan error, calls)
				ctx := testContext(t)
				for range calls {
					go func() {
						received, err := secStream(ctx, client.ExecuteFunction, md, ssetest.NumericBundle(1, 1))
						if err == nil && len(received) != 1 {
							err = fmt.Errorf("%d bundles, want 1", len(received))
						}
						results <- err
					}()
				}
				deadline := time.After(badWait)
				for held := 0; held < badMaxStreams; {
					select {
					case held = <-e.plugin.heldSeen:
					case <-deadline:
						t.Fatalf("plugin holds %d calls after %v, want %d", held, badWait, badMaxStreams)
					}
				}
				release()
				for range calls {
					select {
					case err := <-results:
						if err != nil {
							t.Errorf("ExecuteFunction() error = %v, want nil", err)
						}
					case <-time.After(badWait):
						t.Fatalf("calls still open %v after their release", badWait)
					}
				}
				if got := e.plugin.maxHeldCalls(); got != badMaxStreams {
					t.Errorf("calls open at the plugin at once = %d, want %d, the limit of one connection", got, badMaxStreams)
				}
				for len(e.plugin.heldSeen) > 0 {
					<-e.plugin.heldSeen
				}
			},
		},
		{
			name: "more streams than max_concurrent_streams from a raw client",
			run: func(t *testing.T, e *badEnv) {
				// A client that ignores SETTINGS_MAX_CONCURRENT_STREAMS
				// gets the stream over the limit refused with
				// RST_STREAM REFUSED_STREAM, while the others, held by
				// the plugin, are served once released.
				release := e.plugin.holdCalls()
				defer release()
				c := badDialRaw(t, e.plaintext, true)
				c.waitFor(t, "SETTINGS", func(f badRawFrame) bool { return f.typ == http2.FrameSettings })
				block := encodeFields(t, badGRPCRequest(t, e.plaintext, badHeldFunction))
				message, err := proto.Marshal(ssetest.NumericBundle(1, 1))
				if err != nil {
					t.Fatal(err)
				}
				// A gRPC message: no compression, its length, the bytes.
				frame := append([]byte{0, 0, 0, 0, byte(len(message))}, message...)
				var streams []uint32
				for i := range badMaxStreams + 1 {
					streams = append(streams, uint32(2*i+1))
				}
				c.write(t, func() error {
					for _, id := range streams {
						if err := c.framer.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true}); err != nil {
							return err
						}
						if err := c.framer.WriteData(id, true, frame); err != nil {
							return err
						}
					}
					return nil
				})
				over := streams[len(streams)-1]
				refused := c.waitFor(t, fmt.Sprintf("RST_STREAM for stream %d", over), func(f badRawFrame) bool {
					return f.typ == http2.FrameRSTStream && f.streamID == over
				})
				if refused.errCode != http2.ErrCodeRefusedStream {
					t.Errorf("RST_STREAM of stream %d error code = %v, want %v", over, refused.errCode, http2.ErrCodeRefusedStream)
				}

				// The plugin holds the others; released, they end OK.
				deadline := time.After(badWait)
				for held := 0; held < badMaxStreams; {
					select {
					case held = <-e.plugin.heldSeen:
					case <-deadline:
						t.Fatalf("plugin holds %d calls after %v, want %d", held, badWait, badMaxStreams)
					}
				}
				release()
				for _, id := range streams[:len(streams)-1] {
					trailers := c.waitFor(t, fmt.Sprintf("trailers of stream %d", id), func(f badRawFrame) bool {
						return f.typ == http2.FrameHeaders && f.streamID == id && f.flags.Has(http2.FlagHeadersEndStream)
					})
					if got := fieldValue(trailers.fields, "grpc-status"); got != "0" {
						t.Errorf("stream %d grpc-status = %q (%q), want 0", id, got, fieldValue(trailers.fields, "grpc-message"))
					}
				}
				if got := e.plugin.maxHeldCalls(); got != badMaxStreams {
					t.Errorf("calls open at the plugin at once = %d, want %d", got, badMaxStreams)
				}
				for len(e.plugin.heldSeen) > 0 {
					<-e.plugin.heldSeen
				}
			},
		},
	}
}

// TestBadInput sends, one after another, bad headers, oversized headers
// and messages, silent calls, traffic that is not gRPC or not TLS, broken
// HTTP/2 frames and too many streams to one running gateway. Each is
// rejected as gRPC and HTTP/2 specify, and logged where a Qlik admin needs
// to know. After each, new connections still serve normal calls. The log
// never contains key material or script text.
func TestBadInput(t *testing.T) {
	e := startBadEnv(t, nil)
	e.checkNormalCalls(t)

	var cases []badCase
	for _, group := range [][]badCase{badHeaderCases(), badConnectionCases(), badFrameCases(), badStreamCases()} {
		cases = append(cases, group...)
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, e)
			e.checkNormalCalls(t)
		})
	}
	secCheckLogClean(t, e.gw, badSecretScript, "bad_input_marker")
}

// TestBadInputSilentConnectionsEvicted checks that connections that send
// nothing, or only the 24 bytes of the HTTP/2 preface, cannot keep Qlik
// out of a listener at limits.max_connections: a new connection takes the
// place of one that has not sent the preface and its first frame within a
// second, on plaintext and mutual TLS listeners alike, and the gateway
// logs the eviction, not a refused handshake. Such connections held their
// places until the handshake timeout, so a client reopening them kept
// Qlik out without a certificate.
func TestBadInputSilentConnectionsEvicted(t *testing.T) {
	for _, listener := range []struct {
		name   string
		secure bool
		send   string
	}{
		{"plaintext", false, ""},
		{"plaintext, preface only", false, http2.ClientPreface},
		{"mutual TLS", true, ""},
	} {
		t.Run(listener.name, func(t *testing.T) {
			// A gateway each, whose warnings no other case has used up.
			e := startBadEnv(t, func(cfg *config.Config) { cfg.Limits.MaxConnections = badMaxConnections })
			address := e.plaintext
			if listener.secure {
				address = e.secure
			}
			silent := map[string]net.Conn{}
			for range badMaxConnections {
				conn, err := net.DialTimeout("tcp", address, badWait)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				if _, err := io.WriteString(conn, listener.send); err != nil {
					t.Fatal(err)
				}
				silent[conn.LocalAddr().String()] = conn
			}

			// Qlik's connection is refused until a silent one has had its
			// second, and gRPC's client connects again after a backoff.
			client := e.badDial(t, address, listener.secure)
			ctx, cancel := context.WithTimeout(testContext(t), 10*time.Second)
			defer cancel()
			if _, err := client.GetCapabilities(ctx, &ssepb.Empty{}, grpc.WaitForReady(true)); err != nil {
				t.Fatalf("GetCapabilities() beside %d silent connections = %v, want OK", badMaxConnections, err)
			}
			const evictedMessage = "connection closed to make room for a new one: it had not sent the HTTP/2 preface and its first frame within 1s, and the listener has limits.max_connections open"
			record := e.gw.Logs.WaitFor(t, evictedMessage, badWait, func(r map[string]any) bool {
				return silent[fmt.Sprint(r["peer"])] != nil
			})
			peer := fmt.Sprint(record["peer"])
			// The gateway closes it: reads end, after its SETTINGS if any.
			evicted := silent[peer]
			evicted.SetReadDeadline(time.Now().Add(badWait))
			if _, err := io.Copy(io.Discard, evicted); err != nil {
				t.Errorf("evicted connection: %v, want it closed by the gateway", err)
			}

			// The gateway would log a refused handshake as the handshake's
			// read fails, at once; a call later it has not.
			if _, err := client.GetCapabilities(ctx, &ssepb.Empty{}); err != nil {
				t.Fatalf("second GetCapabilities() = %v, want OK", err)
			}
			for _, r := range e.gw.Logs.Records(badRefusedHandshake) {
				if r["peer"] == peer {
					t.Errorf("evicted connection logged as a refused handshake: %v", r)
				}
			}
		})
	}
}

// TestBadInputMaxConnections checks that a listener at
// limits.max_connections closes one more connection at once and logs it,
// and serves new connections again once others have closed.
func TestBadInputMaxConnections(t *testing.T) {
	e := startBadEnv(t, func(cfg *config.Config) { cfg.Limits.MaxConnections = badMaxConnections })

	// Fill the plaintext listener: each connection gets the gateway's
	// SETTINGS, so it was accepted.
	var held []*badRawConn
	for range badMaxConnections {
		c := badDialRaw(t, e.plaintext, true)
		c.waitFor(t, "SETTINGS", func(f badRawFrame) bool { return f.typ == http2.FrameSettings })
		held = append(held, c)
	}

	// One more is closed without a frame, before it sends anything.
	extra := badDialRaw(t, e.plaintext, false)
	if frames := extra.waitClosed(t); len(frames) != 0 {
		t.Errorf("connection over max_connections got frames %+v, want it closed at once", frames)
	}
	record := e.gw.Logs.WaitFor(t, "connection closed: the listener has limits.max_connections open, and none has been silent for 1s", badWait, nil)
	if got := record["peer"]; got != extra.conn.LocalAddr().String() {
		t.Errorf("record peer = %v, want %s", got, extra.conn.LocalAddr())
	}
	if got := record["max_connections"]; got != float64(badMaxConnections) {
		t.Errorf("record max_connections = %v, want %d", got, badMaxConnections)
	}
	for _, c := range held {
		c.write(t, func() error { return c.framer.WritePing(false, [8]byte{}) })
		c.waitFor(t, "PING ack on a held connection", func(f badRawFrame) bool { return f.typ == http2.FramePing && f.flags.Has(http2.FlagPingAck) })
	}

	// Close the held connections; the gateway notices each close on its
	// own, so new connections may be turned away for a moment.
	for _, c := range held {
		c.conn.Close()
	}
	// The gateway logs no record when it frees a connection's place, so
	// only a new call shows it.
	deadline := time.Now().Add(badWait)
	for {
		client := ssetest.Dial(t, e.plaintext)
		ctx, cancel := context.WithTimeout(testContext(t), badWait)
		_, err := client.GetCapabilities(ctx, &ssepb.Empty{})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetCapabilities() on a new connection = %v %v after the others closed, want OK", err, badWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.checkNormalCalls(t)
	secCheckLogClean(t, e.gw, badSecretScript)
}
