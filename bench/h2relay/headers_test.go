package h2relay

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// TestLargeMetadata checks that a call with about 100 kB of request
// metadata goes through, and that the plugin's response header of the
// same size comes back. Both header blocks exceed grpc-go's maximum frame
// size of 16 KiB, so the relay must split them into HEADERS and
// CONTINUATION frames.
func TestLargeMetadata(t *testing.T) {
	const (
		largeHeader = "x-large"
		size        = 100_000
		// maxHeaderList is the header list size that the test's client and
		// plugin accept. grpc-go's default (16 MiB as of v1.85) allows the
		// large header too, and the options keep the test independent of it.
		maxHeaderList = 1 << 20
	)
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			if err := grpc.SetHeader(ctx, metadata.MD{largeHeader: md.Get(largeHeader)}); err != nil {
				return nil, err
			}
			return &ssepb.Capabilities{PluginIdentifier: pluginName}, nil
		},
	}, grpc.MaxHeaderListSize(maxHeaderList))
	relay := startRelay(t, plugin.Addr, Options{}, nil)
	client := ssetest.Dial(t, relay.addr, grpc.WithMaxHeaderListSize(maxHeaderList))
	ctx := testContext(t)

	value := text(1, size)
	var header metadata.MD
	_, err := client.GetCapabilities(metadata.AppendToOutgoingContext(ctx, largeHeader, value), &ssepb.Empty{}, grpc.Header(&header))
	if err != nil {
		t.Fatalf("GetCapabilities with a %d-byte header: %v", size, err)
	}
	got := header.Get(largeHeader)
	if len(got) != 1 {
		t.Fatalf("response header %s has %d values, want 1", largeHeader, len(got))
	}
	if got[0] != value {
		t.Errorf("response header %s has %d bytes that differ from the %d bytes sent", largeHeader, len(got[0]), size)
	}
	relay.waitIdle(t)
}

// TestHeadersAwaitingContinuation checks that the relay forwards what it
// has relayed before it reads a HEADERS frame whose CONTINUATION has not
// arrived yet. A reader that counted such a frame as buffered would leave
// an earlier call's request unsent while it blocked for the CONTINUATION,
// and that call would get no response.
func TestHeadersAwaitingContinuation(t *testing.T) {
	plugin := ssetest.StartPlugin(t, newConnector(nil))
	relay := startRelay(t, plugin.Addr, Options{Connections: 1}, nil)

	nc, err := net.Dial("tcp", relay.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The deadline bounds every read of the test, including the wait for
	// a response that the relay never forwards.
	if err := nc.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	client := newRawClient(t, nc)

	// A first call has the backend connection up and its writer idle.
	client.out.WriteString(http2.ClientPreface)
	client.framer.WriteSettings()
	client.writeCall(1)
	client.flush()
	client.waitOK(1)

	// A complete call, and in the same write the start of another call's
	// header block.
	client.writeCall(3)
	block := client.requestBlock()
	client.framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block[:len(block)/2]})
	client.flush()
	client.waitOK(3)

	// The rest of the header block completes the other call.
	client.framer.WriteContinuation(5, true, block[len(block)/2:])
	client.framer.WriteData(5, true, emptyGRPCMessage)
	client.flush()
	client.waitOK(5)
	relay.waitIdle(t)
}

// emptyGRPCMessage is the gRPC framing of an empty, uncompressed message.
var emptyGRPCMessage = []byte{0, 0, 0, 0, 0}

// rawClient makes GetCapabilities calls with x/net/http2's Framer, so that
// a test controls how the frames are split and written.
type rawClient struct {
	t       *testing.T
	nc      net.Conn
	out     bytes.Buffer // frames for the next flush
	framer  *http2.Framer
	block   bytes.Buffer // the header block that encoder writes
	encoder *hpack.Encoder
}

func newRawClient(t *testing.T, nc net.Conn) *rawClient {
	c := &rawClient{t: t, nc: nc}
	c.framer = http2.NewFramer(&c.out, nc)
	c.framer.ReadMetaHeaders = hpack.NewDecoder(hpackTableSize, nil)
	c.encoder = hpack.NewEncoder(&c.block)
	return c
}

// requestBlock returns the header block of a GetCapabilities request. The
// blocks must be sent in the order in which they are encoded, because the
// encoder's dynamic table changes with each.
func (c *rawClient) requestBlock() []byte {
	c.block.Reset()
	for _, field := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: ssepb.Connector_GetCapabilities_FullMethodName},
		{Name: ":authority", Value: c.nc.RemoteAddr().String()},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	} {
		c.encoder.WriteField(field)
	}
	return bytes.Clone(c.block.Bytes())
}

// writeCall adds a whole GetCapabilities request on stream id to the next
// flush.
func (c *rawClient) writeCall(id uint32) {
	c.framer.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.requestBlock(), EndHeaders: true})
	c.framer.WriteData(id, true, emptyGRPCMessage)
}

// flush writes the frames added since the last flush in one write.
func (c *rawClient) flush() {
	c.t.Helper()
	if _, err := c.nc.Write(c.out.Bytes()); err != nil {
		c.t.Fatalf("writing frames: %v", err)
	}
	c.out.Reset()
}

// waitOK reads frames until the trailers of stream id arrive, and fails
// the test unless they carry grpc-status 0. It acknowledges the relay's
// SETTINGS on the way.
func (c *rawClient) waitOK(id uint32) {
	c.t.Helper()
	for {
		f, err := c.framer.ReadFrame()
		if err != nil {
			c.t.Fatalf("waiting for the response on stream %d: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.framer.WriteSettingsAck()
				c.flush()
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				c.t.Fatalf("stream %d reset with %v, want a response", id, f.ErrCode)
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != id || !f.StreamEnded() {
				continue
			}
			var code []string
			for _, field := range f.RegularFields() {
				if field.Name == "grpc-status" {
					code = append(code, field.Value)
				}
			}
			if len(code) != 1 || code[0] != "0" {
				c.t.Fatalf("stream %d ended with grpc-status %q, want [0]", id, code)
			}
			return
		}
	}
}
