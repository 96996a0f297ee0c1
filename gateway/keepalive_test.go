package gateway_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// pingsToGoAway is the number of pings, sent at intervals shorter than the
// server's minimum while the server sends nothing, after which a grpc-go
// server (as of v1.85) sends GOAWAY "too_many_pings". The first ping has no
// predecessor and is never early, and each early ping after it is a strike;
// the third strike earns GOAWAY.
const pingsToGoAway = 4

// frameCounts tallies the HTTP/2 frames seen in one direction of a
// connection, by type. PING frames with the ACK flag count as ping acks,
// not as pings.
type frameCounts struct {
	mu       sync.Mutex
	byType   map[http2.FrameType]int
	pingAcks int
}

func (c *frameCounts) add(typ http2.FrameType, flags http2.Flags) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if typ == http2.FramePing && flags.Has(http2.FlagPingAck) {
		c.pingAcks++
		return
	}
	if c.byType == nil {
		c.byType = map[http2.FrameType]int{}
	}
	c.byType[typ]++
}

// count returns how many frames of typ were seen.
func (c *frameCounts) count(typ http2.FrameType) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byType[typ]
}

// acks returns how many PING acks were seen.
func (c *frameCounts) acks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pingAcks
}

// frameScanner is an io.Writer that splits the bytes of one direction of
// an HTTP/2 connection into frames and adds each to every tally in counts.
// It reads only the 9-byte frame headers and skips each payload.
type frameScanner struct {
	prefaceLeft int // bytes of the client connection preface still to skip
	header      [9]byte
	headerLen   int // bytes of header collected so far
	payloadLeft int // bytes of the current payload still to skip
	counts      []*frameCounts
}

func (s *frameScanner) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		switch {
		case s.prefaceLeft > 0:
			k := min(s.prefaceLeft, len(p))
			s.prefaceLeft -= k
			p = p[k:]
		case s.payloadLeft > 0:
			k := min(s.payloadLeft, len(p))
			s.payloadLeft -= k
			p = p[k:]
		default:
			k := copy(s.header[s.headerLen:], p)
			s.headerLen += k
			p = p[k:]
			if s.headerLen == len(s.header) {
				s.payloadLeft = int(s.header[0])<<16 | int(s.header[1])<<8 | int(s.header[2])
				for _, counts := range s.counts {
					counts.add(http2.FrameType(s.header[3]), http2.Flags(s.header[4]))
				}
				s.headerLen = 0
			}
		}
	}
	return n, nil
}

// tappedConn holds the frame counts of one forwarded connection: ToServer
// counts what the connecting side sends, ToClient what the target sends
// back.
type tappedConn struct {
	ToServer, ToClient frameCounts
}

// frameTap is a loopback TCP forwarder that counts the HTTP/2 frames
// passing through it in each direction, per connection and in total.
type frameTap struct {
	Addr   string
	target string
	lis    net.Listener

	// ToServer and ToClient count over all connections.
	ToServer, ToClient frameCounts

	wg     sync.WaitGroup
	mu     sync.Mutex    // guards the following
	conns  []net.Conn    // both ends of every forwarded connection
	tapped []*tappedConn // one per accepted connection
}

// startFrameTap forwards connections on a new loopback port to target
// until the test ends.
func startFrameTap(t *testing.T, target string) *frameTap {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tap := &frameTap{Addr: lis.Addr().String(), target: target, lis: lis}
	tap.wg.Go(tap.acceptLoop)
	t.Cleanup(func() {
		lis.Close()
		tap.mu.Lock()
		for _, conn := range tap.conns {
			conn.Close()
		}
		tap.mu.Unlock()
		tap.wg.Wait()
	})
	return tap
}

func (tap *frameTap) acceptLoop() {
	for {
		client, err := tap.lis.Accept()
		if err != nil {
			return // the listener was closed
		}
		tapped := &tappedConn{}
		tap.mu.Lock()
		tap.tapped = append(tap.tapped, tapped)
		tap.mu.Unlock()
		server, err := net.Dial("tcp", tap.target)
		if err != nil {
			client.Close()
			continue
		}
		tap.mu.Lock()
		tap.conns = append(tap.conns, client, server)
		tap.mu.Unlock()
		toServer := &frameScanner{prefaceLeft: len(http2.ClientPreface), counts: []*frameCounts{&tap.ToServer, &tapped.ToServer}}
		toClient := &frameScanner{counts: []*frameCounts{&tap.ToClient, &tapped.ToClient}}
		tap.wg.Go(func() { tap.pipe(server, client, toServer) })
		tap.wg.Go(func() { tap.pipe(client, server, toClient) })
	}
}

// connections returns the counts of each connection accepted so far.
func (tap *frameTap) connections() []*tappedConn {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return slices.Clone(tap.tapped)
}

// pipe copies src to dst through scanner until either side closes, then
// closes both, so that the opposite pipe ends too.
func (tap *frameTap) pipe(dst, src net.Conn, scanner *frameScanner) {
	io.Copy(io.MultiWriter(dst, scanner), src)
	dst.Close()
	src.Close()
}

// waitForFrames polls cond, a condition on frame counts, every 10 ms until
// it holds, or fails the test after timeout, naming what it waited for.
func waitForFrames(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	// The frame scanners count frames without signalling, so poll them.
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIdleClientPingingEvery10s checks that a client pinging every 10 s on
// an idle connection is never sent GOAWAY, and that its next call succeeds
// on the same connection. It takes about 40 s, because grpc-go clients ping
// at most every 10 s and a gateway that rejected this interval would show
// it only at the fourth ping, its third strike. Elsewhere, servers sent
// such clients GOAWAY "too_many_pings" (C26).
func TestIdleClientPingingEvery10s(t *testing.T) {
	t.Parallel()
	capabilities := func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
		return &ssepb.Capabilities{PluginIdentifier: "idle"}, nil
	}
	p := newPath(t, &ssetest.Connector{Capabilities: capabilities}, nil)
	tap := startFrameTap(t, p.gateway.Addrs[0])

	conn, err := grpc.NewClient("passthrough:///"+tap.Addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                10 * time.Second,
			Timeout:             20 * time.Second,
			PermitWithoutStream: true,
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := ssepb.NewConnectorClient(conn)

	// Connect, then watch the connection leave READY, which a GOAWAY or a
	// closed connection causes.
	ctx := testContext(t)
	conn.Connect()
	for state := conn.GetState(); state != connectivity.Ready; state = conn.GetState() {
		if !conn.WaitForStateChange(ctx, state) {
			t.Fatalf("client connection state = %v, want READY", conn.GetState())
		}
	}
	watchCtx, stopWatching := context.WithCancel(ctx)
	left := make(chan connectivity.State, 1)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		if conn.WaitForStateChange(watchCtx, connectivity.Ready) {
			left <- conn.GetState()
		}
	}()
	defer func() {
		stopWatching()
		<-watchDone
	}()

	// Stay idle until the client has pinged four times and the gateway has
	// acknowledged each ping. A GOAWAY would follow the fourth ack at once.
	waitForFrames(t, 50*time.Second, "four client pings acknowledged", func() bool {
		return tap.ToServer.count(http2.FramePing) >= pingsToGoAway && tap.ToClient.acks() >= pingsToGoAway
	})

	callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := client.GetCapabilities(callCtx, &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities after idling = %v, want OK", err)
	}
	if got := tap.ToClient.count(http2.FrameGoAway); got != 0 {
		t.Errorf("gateway sent %d GOAWAY frames, want 0", got)
	}
	if got := len(tap.connections()); got != 1 {
		t.Errorf("client opened %d connections, want 1", got)
	}
	select {
	case state := <-left:
		t.Errorf("client connection changed from READY to %v, want it to stay READY", state)
	default:
	}
}

// rawFrame is a copy of a frame read by rawHTTP2Client, with the fields
// the keepalive tests look at.
type rawFrame struct {
	typ      http2.FrameType
	flags    http2.Flags
	streamID uint32
	ping     [8]byte             // PING
	code     http2.ErrCode       // GOAWAY and RST_STREAM
	debug    string              // GOAWAY
	fields   []hpack.HeaderField // HEADERS, decoded
	data     []byte              // DATA
}

// rawHTTP2Client is a hand-driven HTTP/2 client connection, for sending
// frames that gRPC's client does not send on demand, such as a ping every
// second. It acknowledges the server's SETTINGS and PINGs itself and
// passes every frame it reads to Frames, which is closed when the
// connection ends.
type rawHTTP2Client struct {
	conn   net.Conn
	Frames chan rawFrame

	writeMu sync.Mutex
	framer  *http2.Framer // writes only under writeMu; reads only in readLoop
	headers bytes.Buffer  // writeMu guards, with encoder
	encoder *hpack.Encoder

	closing  chan struct{} // closed when the test ends, to stop readLoop
	readDone chan struct{}
	readErr  error // set before readDone is closed
}

// dialRawHTTP2 connects to a plaintext gRPC listener, exchanges the
// connection preface and SETTINGS, and closes the connection when the test
// ends.
func dialRawHTTP2(t *testing.T, address string) *rawHTTP2Client {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	c := &rawHTTP2Client{
		conn:     conn,
		Frames:   make(chan rawFrame, 1024),
		framer:   http2.NewFramer(conn, conn),
		closing:  make(chan struct{}),
		readDone: make(chan struct{}),
	}
	c.encoder = hpack.NewEncoder(&c.headers)
	c.framer.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	t.Cleanup(func() {
		close(c.closing)
		conn.Close()
		<-c.readDone
	})

	c.writeMu.Lock()
	_, err = io.WriteString(conn, http2.ClientPreface)
	if err == nil {
		err = c.framer.WriteSettings()
	}
	c.writeMu.Unlock()
	if err != nil {
		t.Fatalf("writing the HTTP/2 preface: %v", err)
	}
	go c.readLoop()

	// The server's own SETTINGS come first.
	frame := c.next(t, 5*time.Second)
	if frame.typ != http2.FrameSettings {
		t.Fatalf("first frame from the gateway is %v, want SETTINGS", frame.typ)
	}
	return c
}

func (c *rawHTTP2Client) readLoop() {
	defer close(c.readDone)
	defer close(c.Frames)
	for {
		f, err := c.framer.ReadFrame()
		if err != nil {
			c.readErr = err
			return
		}
		frame := rawFrame{typ: f.Header().Type, flags: f.Header().Flags, streamID: f.Header().StreamID}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.write(func() error { return c.framer.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			frame.ping = f.Data
			if !f.IsAck() {
				c.write(func() error { return c.framer.WritePing(true, f.Data) })
			}
		case *http2.GoAwayFrame:
			frame.code = f.ErrCode
			frame.debug = string(f.DebugData())
		case *http2.RSTStreamFrame:
			frame.code = f.ErrCode
		case *http2.MetaHeadersFrame:
			frame.fields = append([]hpack.HeaderField(nil), f.Fields...)
		case *http2.DataFrame:
			frame.data = bytes.Clone(f.Data())
		}
		select {
		case c.Frames <- frame:
		case <-c.closing:
			return
		}
	}
}

// write runs one framer write under writeMu. Its error shows up as the
// connection's end in readLoop.
func (c *rawHTTP2Client) write(fn func() error) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return fn()
}

// next returns the next frame, or fails the test when none comes within
// timeout or the connection ended.
func (c *rawHTTP2Client) next(t *testing.T, timeout time.Duration) rawFrame {
	t.Helper()
	select {
	case frame, ok := <-c.Frames:
		if !ok {
			<-c.readDone
			t.Fatalf("the gateway closed the connection: %v", c.readErr)
		}
		return frame
	case <-time.After(timeout):
		t.Fatalf("no frame from the gateway within %v", timeout)
	}
	return rawFrame{}
}

// ping sends a PING whose payload is the number n.
func (c *rawHTTP2Client) ping(t *testing.T, n uint64) {
	t.Helper()
	if err := c.write(func() error { return c.framer.WritePing(false, numberedPing(n)) }); err != nil {
		t.Fatalf("sending ping %d: %v", n, err)
	}
}

func numberedPing(n uint64) [8]byte {
	var data [8]byte
	binary.BigEndian.PutUint64(data[:], n)
	return data
}

// startCall opens stream streamID as an ExecuteFunction call of function
// id 0, sends request as its only message and half-closes, all built by
// hand as a Qlik engine would put them on the wire.
func (c *rawHTTP2Client) startCall(t *testing.T, streamID uint32, authority string, request []byte) {
	t.Helper()
	functionHeader, err := proto.Marshal(&ssepb.FunctionRequestHeader{FunctionId: 0})
	if err != nil {
		t.Fatal(err)
	}
	commonHeader, err := proto.Marshal(&ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: 1})
	if err != nil {
		t.Fatal(err)
	}
	fields := []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/qlik.sse.Connector/ExecuteFunction"},
		{Name: ":authority", Value: authority},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
		// gRPC sends binary header values in unpadded base64.
		{Name: ssepb.FunctionRequestHeaderKey, Value: base64.RawStdEncoding.EncodeToString(functionHeader)},
		{Name: ssepb.CommonRequestHeaderKey, Value: base64.RawStdEncoding.EncodeToString(commonHeader)},
	}
	// Each gRPC message has a 5-byte prefix: a compression flag, then the
	// length, big-endian.
	message := make([]byte, 5+len(request))
	binary.BigEndian.PutUint32(message[1:5], uint32(len(request)))
	copy(message[5:], request)

	err = c.write(func() error {
		c.headers.Reset()
		for _, field := range fields {
			if err := c.encoder.WriteField(field); err != nil {
				return err
			}
		}
		if err := c.framer.WriteHeaders(http2.HeadersFrameParam{StreamID: streamID, BlockFragment: c.headers.Bytes(), EndHeaders: true}); err != nil {
			return err
		}
		return c.framer.WriteData(streamID, true, message)
	})
	if err != nil {
		t.Fatalf("sending the call: %v", err)
	}
}

// hpackValue returns the value of name among fields, or "".
func hpackValue(fields []hpack.HeaderField, name string) string {
	for _, field := range fields {
		if field.Name == name {
			return field.Value
		}
	}
	return ""
}

// TestFrequentPingsEarnGoAway checks that a client pinging every second on
// a connection without calls is sent GOAWAY ENHANCE_YOUR_CALM
// "too_many_pings" right after its fourth ping and not before, and is then
// disconnected. This is grpc-go's threshold, applied with the gateway's
// default minimum ping interval of 5 s (C26).
func TestFrequentPingsEarnGoAway(t *testing.T) {
	p := newPath(t, &ssetest.Connector{}, nil)
	raw := dialRawHTTP2(t, p.gateway.Addrs[0])

	// Ping every second until GOAWAY, and note which ping the last ack
	// before it acknowledged.
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	const maxPings = 2 * pingsToGoAway
	sent := uint64(1)
	raw.ping(t, sent)
	var lastAck [8]byte
	var goAway *rawFrame
	timeout := time.After(maxPings*time.Second + 5*time.Second)
	for goAway == nil {
		select {
		case <-ticker.C:
			if sent < maxPings {
				sent++
				raw.ping(t, sent)
			}
		case frame, ok := <-raw.Frames:
			if !ok {
				<-raw.readDone
				t.Fatalf("connection ended without GOAWAY after %d pings: %v", sent, raw.readErr)
			}
			switch {
			case frame.typ == http2.FramePing && frame.flags.Has(http2.FlagPingAck):
				lastAck = frame.ping
			case frame.typ == http2.FrameGoAway:
				goAway = &frame
			}
		case <-timeout:
			t.Fatalf("no GOAWAY after %d pings, one a second", sent)
		}
	}

	if sent != pingsToGoAway {
		t.Errorf("pings sent before GOAWAY = %d, want %d", sent, pingsToGoAway)
	}
	if want := numberedPing(pingsToGoAway); lastAck != want {
		t.Errorf("last ping acknowledged before GOAWAY = %d, want %d", binary.BigEndian.Uint64(lastAck[:]), pingsToGoAway)
	}
	if goAway.code != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY code = %v, want ENHANCE_YOUR_CALM", goAway.code)
	}
	if goAway.debug != "too_many_pings" {
		t.Errorf("GOAWAY debug data = %q, want %q", goAway.debug, "too_many_pings")
	}

	// The gateway then closes the connection.
	closed := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-raw.Frames:
		case <-closed:
			t.Fatal("connection still open 5s after GOAWAY")
		}
	}
}

// TestFrequentPingsDuringCall checks that pings every second do not earn
// GOAWAY while the gateway streams a call's responses at least every
// 500 ms, and that the call completes OK. grpc-go forgives a ping that
// follows headers or data from the server, so only a silent connection
// collects strikes. A gateway that buffered responses would have its
// client disconnected (C26).
func TestFrequentPingsDuringCall(t *testing.T) {
	const answers = 15
	stream := func(s ssetest.Stream) error {
		for {
			if _, err := s.Recv(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return err
			}
		}
		ticker := time.NewTicker(400 * time.Millisecond)
		defer ticker.Stop()
		for i := range answers {
			if i > 0 {
				<-ticker.C
			}
			if err := s.Send(ssetest.NumericBundle(1, 1)); err != nil {
				return err
			}
		}
		return nil
	}
	p := newPath(t, &ssetest.Connector{Execute: stream}, nil)
	raw := dialRawHTTP2(t, p.gateway.Addrs[0])
	request, err := proto.Marshal(ssetest.NumericBundle(2, 1))
	if err != nil {
		t.Fatal(err)
	}
	raw.startCall(t, 1, p.gateway.Addrs[0], request)

	// Ping every second until the call ends, collecting its frames.
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	sent := uint64(1)
	raw.ping(t, sent)
	var (
		headerBlocks [][]hpack.HeaderField
		body         []byte
		goAways      int
		ended        bool
	)
	timeout := time.After(15 * time.Second)
	for !ended {
		select {
		case <-ticker.C:
			sent++
			raw.ping(t, sent)
		case frame, ok := <-raw.Frames:
			if !ok {
				<-raw.readDone
				t.Fatalf("connection ended during the call after %d pings and %d GOAWAY frames: %v", sent, goAways, raw.readErr)
			}
			switch {
			case frame.typ == http2.FrameGoAway:
				goAways++
			case frame.typ == http2.FrameRSTStream:
				t.Fatalf("gateway reset the call with %v", frame.code)
			case frame.streamID != 1:
			case frame.typ == http2.FrameHeaders:
				headerBlocks = append(headerBlocks, frame.fields)
			case frame.typ == http2.FrameData:
				body = append(body, frame.data...)
			}
			ended = frame.typ == http2.FrameHeaders && frame.streamID == 1 && frame.flags.Has(http2.FlagHeadersEndStream)
		case <-timeout:
			t.Fatalf("call still open after 15s and %d pings", sent)
		}
	}

	if goAways != 0 {
		t.Errorf("gateway sent %d GOAWAY frames, want 0", goAways)
	}
	if sent <= pingsToGoAway {
		t.Errorf("pings sent during the call = %d, want more than %d, enough for GOAWAY on a silent connection", sent, pingsToGoAway)
	}
	if len(headerBlocks) != 2 {
		t.Fatalf("got %d header blocks, want 2 (headers and trailers)", len(headerBlocks))
	}
	if got := hpackValue(headerBlocks[0], ":status"); got != "200" {
		t.Errorf(":status = %q, want 200", got)
	}
	if got := hpackValue(headerBlocks[1], "grpc-status"); got != "0" {
		t.Errorf("grpc-status = %q (%s), want 0", got, hpackValue(headerBlocks[1], "grpc-message"))
	}
	messages := 0
	for len(body) >= 5 {
		length := int(binary.BigEndian.Uint32(body[1:5]))
		if len(body) < 5+length {
			break
		}
		body = body[5+length:]
		messages++
	}
	if messages != answers {
		t.Errorf("got %d messages, want %d", messages, answers)
	}
	if len(body) != 0 {
		t.Errorf("%d bytes left over after the last whole message, want 0", len(body))
	}
}

// TestIdleBackendNotPinged checks that the gateway sends no PING on a
// connection to a plugin without calls, even with backend_ping_interval at
// its 10 s minimum. A plugin with grpc-go's default enforcement policy,
// which forbids pings without calls, therefore never sends GOAWAY. It takes
// 12 s, so that a gateway pinging idle connections would ping once (C26).
func TestIdleBackendNotPinged(t *testing.T) {
	t.Parallel()
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{})
	tap := startFrameTap(t, plugin.Addr)
	ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(tap.Addr)},
		Keepalive: config.Keepalive{BackendPingInterval: 10 * time.Second},
	})

	// The gateway connects to its plugins when it starts, before any call.
	waitForFrames(t, 5*time.Second, "the gateway's SETTINGS to the plugin", func() bool {
		return tap.ToServer.count(http2.FrameSettings) > 0
	})
	window := time.NewTimer(12 * time.Second)
	defer window.Stop()
	<-window.C

	// A connection on which the gateway opened no stream is idle. Others
	// carried calls, during which pings are allowed.
	idle := 0
	for i, conn := range tap.connections() {
		if conn.ToServer.count(http2.FrameHeaders) > 0 {
			continue
		}
		idle++
		if got := conn.ToServer.count(http2.FramePing); got != 0 {
			t.Errorf("gateway sent %d PING frames on idle connection %d in 12s, want 0", got, i)
		}
	}
	if idle == 0 {
		t.Errorf("gateway kept no idle connection to the plugin, want its call connection idle")
	}
	if got := tap.ToClient.count(http2.FrameGoAway); got != 0 {
		t.Errorf("plugin sent %d GOAWAY frames, want 0", got)
	}
}
