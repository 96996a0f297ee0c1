package gateway_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// limitsCCoreHeaderListSize is 16 KiB, the hard limit on received metadata
// reported for gRPC's C core, which Qlik engines and Python plugins use.
const limitsCCoreHeaderListSize = 16384

// TestReplyAroundQlikLimit sends replies around gRPC's default 4 MiB
// receive limit, which Qlik keeps, to a client with that limit, directly
// and through the gateway. Elsewhere, a plugin that put all rows into one
// bundle got RESOURCE_EXHAUSTED from Qlik. The gateway must pass each
// bundle as it is, fail the same way as a direct call, and stop the
// plugin's call when the client drops it. (C01)
func TestReplyAroundQlikLimit(t *testing.T) {
	manySizes := make([]int, 200)
	for i := range manySizes {
		manySizes[i] = 40_000
	}
	tests := []struct {
		name     string
		sizes    []int // of the plugin's reply messages
		wantCode codes.Code
	}{
		{name: "one bundle just under 4 MiB", sizes: []int{4_194_000}, wantCode: codes.OK},
		{name: "one bundle one byte over 4 MiB", sizes: []int{4_194_305}, wantCode: codes.ResourceExhausted},
		{name: "200 bundles of 40 KB", sizes: manySizes, wantCode: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			replies := make([]ssetest.Raw, len(tt.sizes))
			for i, size := range tt.sizes {
				replies[i] = limitsBundle(t, size, i)
			}

			// The plugin sends every reply, then returns OK, unless the call
			// is expected to fail: then it waits for its call to end and
			// records when that happened.
			ended := make(chan time.Time, 2)
			release := make(chan struct{})
			plugin := func(s ssetest.Stream) error {
				for {
					if _, err := s.Recv(); err != nil {
						break
					}
				}
				for i := range replies {
					if err := s.SendMsg(&replies[i]); err != nil {
						break
					}
				}
				if tt.wantCode == codes.OK {
					return nil
				}
				select {
				case <-s.Context().Done():
					ended <- time.Now()
				case <-release:
				}
				return s.Context().Err()
			}
			p := newPath(t, &ssetest.Connector{Execute: plugin}, nil)
			t.Cleanup(func() { close(release) })

			wantMessages := len(replies)
			if tt.wantCode != codes.OK {
				wantMessages = 0
			}
			for _, route := range []struct {
				name   string
				client ssepb.ConnectorClient
			}{{"direct", p.direct}, {"through the gateway", p.viaGateway}} {
				out := exchange(functionContext(t, testContext(t), 1), route.client)
				failed := time.Now()
				code := status.Code(out.err)
				if errors.Is(out.err, io.EOF) {
					code = codes.OK
				}
				if code != tt.wantCode {
					t.Errorf("%s: status = %v (%v), want %v", route.name, code, out.err, tt.wantCode)
				}
				if len(out.messages) != wantMessages {
					t.Errorf("%s: got %d messages, want %d", route.name, len(out.messages), wantMessages)
				}
				for i := range min(len(out.messages), len(replies)) {
					if !bytes.Equal(out.messages[i], replies[i]) {
						t.Errorf("%s: message %d differs from what the plugin sent (%d bytes, want %d)", route.name, i, len(out.messages[i]), len(replies[i]))
					}
				}
				if tt.wantCode == codes.OK {
					continue
				}
				endedAt := wireAwait(t, ended, route.name+": end of the plugin's call")
				if delay := endedAt.Sub(failed); delay > time.Second {
					t.Errorf("%s: plugin's call ended %v after the client failed, want within 1s", route.name, delay)
				}
			}
		})
	}
}

// TestMessageSizeLimit sends a request and a reply of exactly
// limits.max_message_size through the gateway, and of one byte more, with
// the default limit and with a configured smaller one. The client and the
// plugin accept up to 64 MiB, so a rejection can only be the gateway's. A
// reply over the limit gets a message that names the setting to raise; a
// request over it is refused by gRPC itself (as of grpc-go v1.85), whose
// message gives the limit in bytes. At 16 KiB, a reply over the limit
// fits in the stream's window, so the plugin's status follows it at once.
// The failure is still the gateway's limit, not the plugin's status.
func TestMessageSizeLimit(t *testing.T) {
	for _, configured := range []config.ByteSize{0, 1 << 20, 16 << 10} {
		limit := configured
		name := fmt.Sprintf("configured %v", configured)
		if configured == 0 {
			limit = config.DefaultMaxMessageSize
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			n := int(limit)
			tests := []struct {
				name     string
				request  int // size of the client's one message
				reply    int // size of the plugin's one message
				wantCode codes.Code
			}{
				{name: "request and reply at the limit", request: n, reply: n, wantCode: codes.OK},
				{name: "request one byte over", request: n + 1, reply: 100, wantCode: codes.ResourceExhausted},
				{name: "reply one byte over", request: 100, reply: n + 1, wantCode: codes.ResourceExhausted},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					request := limitsBundle(t, tt.request, 1)
					reply := limitsBundle(t, tt.reply, 2)
					received := make(chan []ssetest.Raw, 1)
					plugin := func(s ssetest.Stream) error {
						var messages []ssetest.Raw
						var err error
						for {
							var message ssetest.Raw
							if err = s.RecvMsg(&message); err != nil {
								break
							}
							messages = append(messages, message)
						}
						received <- messages
						if !errors.Is(err, io.EOF) {
							return err
						}
						return s.SendMsg(&reply)
					}
					p := newPath(t, &ssetest.Connector{Execute: plugin}, func(cfg *config.Config) {
						cfg.Limits.MaxMessageSize = configured
					})
					client := ssetest.Dial(t, p.gateway.Addrs[0], grpc.WithDefaultCallOptions(
						grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))

					out := exchange(functionContext(t, testContext(t), 1), client, request)
					st := status.Convert(out.err)
					if errors.Is(out.err, io.EOF) {
						st = status.New(codes.OK, "")
					}
					if st.Code() != tt.wantCode {
						t.Errorf("status = %v %q, want %v", st.Code(), st.Message(), tt.wantCode)
					}
					switch {
					case tt.request > n:
						if !strings.Contains(st.Message(), strconv.Itoa(n)) {
							t.Errorf("status message = %q, want it to give the limit %d", st.Message(), n)
						}
					case tt.reply > n:
						if !strings.Contains(st.Message(), "limits.max_message_size") {
							t.Errorf("status message = %q, want it to name limits.max_message_size", st.Message())
						}
						if !strings.Contains(st.Message(), limit.String()) {
							t.Errorf("status message = %q, want it to give the limit %v", st.Message(), limit)
						}
					}

					got := wireAwait(t, received, "plugin's requests")
					wantRequests := 1
					if tt.request > n {
						wantRequests = 0
					}
					if len(got) != wantRequests {
						t.Fatalf("plugin received %d messages, want %d", len(got), wantRequests)
					}
					if wantRequests == 1 && !bytes.Equal(got[0], request) {
						t.Errorf("plugin received %d bytes that differ from the %d bytes sent", len(got[0]), len(request))
					}
					if tt.wantCode != codes.OK {
						return
					}
					if len(out.messages) != 1 {
						t.Fatalf("client received %d messages, want 1", len(out.messages))
					}
					if !bytes.Equal(out.messages[0], reply) {
						t.Errorf("client received %d bytes that differ from the %d bytes the plugin sent", len(out.messages[0]), len(reply))
					}
				})
			}
		})
	}
}

// TestScriptHeaderUnderPluginLimit sends EvaluateScript with a 10 KB
// script, about 14 KB of request metadata, to a plugin that accepts 16 KiB
// of headers like gRPC's C core. Elsewhere, a proxy's additions pushed such
// calls over the plugin's limit. The gateway may add at most 512 bytes,
// counted as HTTP/2 counts a header list. (C28)
func TestScriptHeaderUnderPluginLimit(t *testing.T) {
	md := limitsScriptMetadata(t, 10_000)

	t.Run("plugin accepts the call", func(t *testing.T) {
		scripts := make(chan []string, 1)
		plugin := func(s ssetest.Stream) error {
			incoming, _ := metadata.FromIncomingContext(s.Context())
			scripts <- incoming.Get(ssepb.ScriptRequestHeaderKey)
			for {
				if _, err := s.Recv(); err != nil {
					break
				}
			}
			return s.Send(ssetest.NumericBundle(1, 1))
		}
		p := limitsPath(t, &ssetest.Connector{Script: plugin}, grpc.MaxHeaderListSize(limitsCCoreHeaderListSize))

		ctx := metadata.NewOutgoingContext(testContext(t), md)
		if n, err := wireExchange(ctx, ssepb.ConnectorClient.EvaluateScript, p.viaGateway); err != nil || n != 1 {
			t.Fatalf("EvaluateScript = %d messages, %v; want 1 message, OK", n, err)
		}
		got := wireAwait(t, scripts, "plugin's script header")
		if want := md.Get(ssepb.ScriptRequestHeaderKey); len(got) != 1 || got[0] != want[0] {
			t.Errorf("plugin's script header = %d values (first of %d bytes), want the %d bytes sent", len(got), len(strings.Join(got, "")), len(want[0]))
		}
	})

	t.Run("gateway adds at most 512 bytes", func(t *testing.T) {
		backend := startWireBackend(t, false)
		gw := ssetest.StartGateway(t, &config.Config{
			Listeners: []config.Listener{ssetest.Listen("R", nil)},
			Engines:   map[string]*config.Engine{"R": ssetest.Engine(backend.addr)},
		})
		ctx := metadata.NewOutgoingContext(testContext(t), md)

		if _, err := wireExchange(ctx, ssepb.ConnectorClient.EvaluateScript, ssetest.Dial(t, backend.addr)); err != nil {
			t.Fatalf("direct call: %v", err)
		}
		sent := wireHeaderListSize(wireAwait(t, backend.requests, "direct request"))
		if _, err := wireExchange(ctx, ssepb.ConnectorClient.EvaluateScript, ssetest.Dial(t, gw.Addrs[0])); err != nil {
			t.Fatalf("call through the gateway: %v", err)
		}
		forwarded := wireHeaderListSize(wireAwait(t, backend.requests, "forwarded request"))

		if sent < 13_000 || sent > limitsCCoreHeaderListSize {
			t.Errorf("client's header list = %d bytes, want about 14 KB to test the 16 KiB limit", sent)
		}
		if added := forwarded - sent; added > 512 {
			t.Errorf("gateway's header list = %d bytes, %d more than the client's, want at most 512 more", forwarded, added)
		}
	})
}

// TestLongErrorMessageUnchanged has the plugin fail EvaluateScript with
// INVALID_ARGUMENT and a 12 KB message, and reads it with a client that
// accepts 16 KiB of headers like gRPC's C core. Elsewhere, a proxy
// prefixed such messages, and the C core rejected the grown trailers. The
// message must arrive as the plugin wrote it. (C28)
func TestLongErrorMessageUnchanged(t *testing.T) {
	message := limitsText("the script has an error near token x: ", 12_000)
	plugin := func(s ssetest.Stream) error {
		for {
			if _, err := s.Recv(); err != nil {
				break
			}
		}
		return status.Error(codes.InvalidArgument, message)
	}
	p := limitsPath(t, &ssetest.Connector{Script: plugin}, grpc.MaxHeaderListSize(limitsCCoreHeaderListSize))
	ctx := metadata.NewOutgoingContext(testContext(t), limitsScriptMetadata(t, 10_000))

	for _, route := range []struct {
		name    string
		address string
	}{{"direct", p.plugin.Addr}, {"through the gateway", p.gateway.Addrs[0]}} {
		client := ssetest.Dial(t, route.address, grpc.WithMaxHeaderListSize(limitsCCoreHeaderListSize))
		_, err := wireExchange(ctx, ssepb.ConnectorClient.EvaluateScript, client)
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument {
			t.Errorf("%s: status = %v %.80q, want InvalidArgument", route.name, st.Code(), st.Message())
		}
		if st.Message() != message {
			t.Errorf("%s: message = %.80q (%d bytes), want the plugin's %.80q (%d bytes)", route.name, st.Message(), len(st.Message()), message, len(message))
		}
	}
}

// TestPluginAnswerOverHeaderLimit has the plugin answer with headers or
// trailers over the 64 KiB that the gateway accepts from plugins by
// default: an 80 KB status message, as a long traceback makes, a 100 KB
// header value, and trailers of 70 KB after an OK call. The client must
// get RESOURCE_EXHAUSTED naming the limit, and the call must not run
// again: the plugin has read it and may have acted on it. A call open on
// the same connection to the plugin must go on. One value longer than
// what gRPC accepts of a whole header block closed that connection, and
// failed every call on it, as a plugin on gRPC's C core sends it anyway.
func TestPluginAnswerOverHeaderLimit(t *testing.T) {
	tests := []struct {
		name   string
		answer func(s ssetest.Stream) error
		want   []string
	}{
		{
			name: "status message",
			answer: func(ssetest.Stream) error {
				return status.Error(codes.InvalidArgument, limitsText("the script has an error near token x: ", 80_000))
			},
			want: []string{"ended the call with InvalidArgument and trailers of", "limits.max_header_list_size (64KiB)", "the script has an error near token x: "},
		},
		{
			name: "response header",
			answer: func(s ssetest.Stream) error {
				return s.SendHeader(metadata.Pairs("x-long", strings.Repeat("h", 100_000)))
			},
			want: []string{"sent response headers of", "limits.max_header_list_size (64KiB)"},
		},
		{
			name: "trailers of an OK call",
			answer: func(s ssetest.Stream) error {
				s.SetTrailer(metadata.Pairs("x-long", strings.Repeat("t", 70_000)))
				return s.Send(ssetest.NumericBundle(1, 1))
			},
			want: []string{"ended the call with OK and trailers of", "limits.max_header_list_size (64KiB)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var runs atomic.Int32
			release := make(chan struct{})
			plugin := func(s ssetest.Stream) error {
				for {
					if _, err := s.Recv(); err != nil {
						break
					}
				}
				if md, _ := metadata.FromIncomingContext(s.Context()); len(md.Get("x-hold")) > 0 {
					if err := s.SendHeader(nil); err != nil {
						return err
					}
					<-release
					return s.Send(ssetest.NumericBundle(1, 1))
				}
				runs.Add(1)
				return tt.answer(s)
			}
			p := limitsPath(t, &ssetest.Connector{Execute: plugin})

			// A call held open on the plugin's connection while the other
			// answers over the limit.
			heldCtx := metadata.AppendToOutgoingContext(functionContext(t, testContext(t), 1), "x-hold", "1")
			held, err := p.viaGateway.ExecuteFunction(heldCtx)
			if err != nil {
				t.Fatal(err)
			}
			if err := held.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := held.Header(); err != nil {
				t.Fatalf("held call's headers: %v", err)
			}

			_, err = wireExchange(functionContext(t, testContext(t), 1), ssepb.ConnectorClient.ExecuteFunction, p.viaGateway)
			st := status.Convert(err)
			if st.Code() != codes.ResourceExhausted {
				t.Errorf("status = %v %.200q, want ResourceExhausted", st.Code(), st.Message())
			}
			for _, want := range tt.want {
				if !strings.Contains(st.Message(), want) {
					t.Errorf("message = %.300q, want it to contain %q", st.Message(), want)
				}
			}
			if len(st.Message()) > 1000 {
				t.Errorf("message of %d bytes, want the plugin's message cut short", len(st.Message()))
			}
			if got := runs.Load(); got != 1 {
				t.Errorf("the plugin ran the call %d times, want once", got)
			}

			close(release)
			if _, err := held.Recv(); err != nil {
				t.Errorf("call open on the same connection: %v, want its answer", err)
			}
			if _, err := held.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("call open on the same connection ended with %v, want OK", err)
			}
		})
	}
}

// TestRawPluginLongTrailer has a plugin that ignores the gateway's
// advertised header limit, as gRPC's C core does, end a call with one
// trailer value of 100 KB. The gateway must fail that call with
// RESOURCE_EXHAUSTED and keep its connection to the plugin: a value
// longer than what gRPC accepts of a whole header block ended that
// connection with COMPRESSION_ERROR, and every call open on it failed.
func TestRawPluginLongTrailer(t *testing.T) {
	backend := startWireBackendWith(t, wireResponse{trailer: []hpack.HeaderField{{Name: "x-long", Value: strings.Repeat("v", 100_000)}}})
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(backend.addr)},
	})
	client := ssetest.Dial(t, gw.Addrs[0])
	for i := range 3 {
		_, err := wireExchange(functionContext(t, testContext(t), 1), ssepb.ConnectorClient.ExecuteFunction, client)
		if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "limits.max_header_list_size") {
			t.Errorf("call %d: status = %v %.200q, want ResourceExhausted naming limits.max_header_list_size", i, st.Code(), st.Message())
		}
	}
	// One connection for calls and one for probes, as at the start.
	if got := backend.accepted.Load(); got > 2 {
		t.Errorf("the plugin accepted %d connections, want at most 2: the gateway's pool connection was lost", got)
	}
}

// TestRequestHeaderLimit sends request metadata around
// limits.max_header_list_size, 64 KiB by default. Elsewhere, metadata
// over a limit broke the connection or came back as an unclear error. A
// call over the limit must fail with RESOURCE_EXHAUSTED naming the
// setting, and the next call on the same connection must succeed. (C28)
func TestRequestHeaderLimit(t *testing.T) {
	// The plugin sends the metadata of each call it receives to seen, and
	// replies with one bundle.
	newScriptPlugin := func() (*ssetest.Connector, chan metadata.MD) {
		seen := make(chan metadata.MD, 8)
		plugin := func(s ssetest.Stream) error {
			incoming, _ := metadata.FromIncomingContext(s.Context())
			select {
			case seen <- incoming:
			default:
			}
			for {
				if _, err := s.Recv(); err != nil {
					break
				}
			}
			return s.Send(ssetest.NumericBundle(1, 1))
		}
		return &ssetest.Connector{Script: plugin}, seen
	}
	small := limitsScriptMetadata(t, 100)

	t.Run("40 KB passes", func(t *testing.T) {
		connector, seen := newScriptPlugin()
		p := limitsPath(t, connector, grpc.MaxHeaderListSize(1<<20))
		md := limitsScriptMetadata(t, 30_000) // 40 KB in base64 on the wire

		ctx := metadata.NewOutgoingContext(testContext(t), md)
		if n, err := wireExchange(ctx, ssepb.ConnectorClient.EvaluateScript, p.viaGateway); err != nil || n != 1 {
			t.Fatalf("EvaluateScript = %d messages, %v; want 1 message, OK", n, err)
		}
		got := wireAwait(t, seen, "plugin's metadata").Get(ssepb.ScriptRequestHeaderKey)
		if want := md.Get(ssepb.ScriptRequestHeaderKey); len(got) != 1 || got[0] != want[0] {
			t.Errorf("plugin's script header = %d values (first of %d bytes), want the %d bytes sent", len(got), len(strings.Join(got, "")), len(want[0]))
		}
	})

	// A raw client sends a header block over the gateway's advertised
	// SETTINGS_MAX_HEADER_LIST_SIZE anyway. As of grpc-go v1.85 with
	// golang.org/x/net v0.63, the server resets the stream with
	// RST_STREAM FRAME_SIZE_ERROR when the block goes over the limit in
	// its last frame. It closes the whole connection, without GOAWAY, when
	// a single value is longer than the limit or a CONTINUATION frame
	// follows the excess.
	overLimit := []struct {
		name   string
		fields []hpack.HeaderField
	}{
		{
			name:   "one script header over the limit",
			fields: limitsWireFields(limitsScriptMetadata(t, 60_000)),
		},
		{
			// Over four times the default limit: a ceiling that low
			// closed the connection, and the other calls on it failed.
			name:   "one script header of 300 KB",
			fields: limitsWireFields(limitsScriptMetadata(t, 230_000)),
		},
		{
			name: "headers over the limit in total",
			fields: append(limitsWireFields(small),
				hpack.HeaderField{Name: "x-pad-1", Value: strings.Repeat("a", 16_000)},
				hpack.HeaderField{Name: "x-pad-2", Value: strings.Repeat("b", 16_000)},
				hpack.HeaderField{Name: "x-pad-3", Value: strings.Repeat("c", 16_000)},
				hpack.HeaderField{Name: "x-pad-4", Value: strings.Repeat("d", 16_000)},
				hpack.HeaderField{Name: "x-pad-5", Value: strings.Repeat("e", 2_000)}),
		},
	}
	for _, tt := range overLimit {
		t.Run(tt.name+" from a raw client", func(t *testing.T) {
			connector, seen := newScriptPlugin()
			p := limitsPath(t, connector, grpc.MaxHeaderListSize(1<<20))
			if size := wireHeaderListSize(tt.fields); size <= int(config.DefaultMaxHeaderListSize) {
				t.Fatalf("test header list = %d bytes, want over %d", size, config.DefaultMaxHeaderListSize)
			}

			c := limitsDialRaw(t, p.gateway.Addrs[0])
			over, err := limitsRawCall(c, 1, p.gateway.Addrs[0], tt.fields)
			if err != nil {
				t.Errorf("oversized call: %v; want a RESOURCE_EXHAUSTED status", err)
			} else {
				if over.status != "8" {
					t.Errorf("oversized call: %v, want grpc-status 8 (RESOURCE_EXHAUSTED)", over)
				}
				if !strings.Contains(over.message, "limits.max_header_list_size") {
					t.Errorf("oversized call: message = %q, want it to name limits.max_header_list_size", over.message)
				}
			}

			next, err := limitsRawCall(c, 3, p.gateway.Addrs[0], limitsWireFields(small))
			if err != nil {
				t.Errorf("next call on the same connection: %v, want OK", err)
			} else if next.status != "0" {
				t.Errorf("next call on the same connection: %v, want grpc-status 0", next)
			}
			limitsCheckSmallCalls(t, seen)
		})
	}

	// A grpc-go client checks the gateway's advertised limit itself and
	// fails the call with Internal before sending it (as of v1.85).
	t.Run("one script header over the limit from a grpc-go client", func(t *testing.T) {
		connector, seen := newScriptPlugin()
		p := limitsPath(t, connector, grpc.MaxHeaderListSize(1<<20))

		ctx := metadata.NewOutgoingContext(testContext(t), limitsScriptMetadata(t, 60_000))
		if _, err := wireExchange(ctx, ssepb.ConnectorClient.EvaluateScript, p.viaGateway); status.Code(err) == codes.OK {
			t.Errorf("oversized call = OK, want an error")
		}
		ctx = metadata.NewOutgoingContext(testContext(t), small)
		if n, err := wireExchange(ctx, ssepb.ConnectorClient.EvaluateScript, p.viaGateway); err != nil || n != 1 {
			t.Errorf("next call on the same connection = %d messages, %v; want 1 message, OK", n, err)
		}
		limitsCheckSmallCalls(t, seen)
	})

	// Metadata within the gateway's limit but over the plugin's is a size
	// problem too, not an unavailable plugin.
	t.Run("over the plugin's limit", func(t *testing.T) {
		connector, seen := newScriptPlugin()
		p := limitsPath(t, connector, grpc.MaxHeaderListSize(limitsCCoreHeaderListSize))

		ctx := metadata.NewOutgoingContext(testContext(t), limitsScriptMetadata(t, 20_000))
		_, err := wireExchange(ctx, ssepb.ConnectorClient.EvaluateScript, p.viaGateway)
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted {
			t.Errorf("oversized call = %v %q, want ResourceExhausted", st.Code(), st.Message())
		}
		if !strings.Contains(st.Message(), fmt.Sprint(limitsCCoreHeaderListSize)) {
			t.Errorf("oversized call: message = %q, want it to give the plugin's limit %d", st.Message(), limitsCCoreHeaderListSize)
		}
		ctx = metadata.NewOutgoingContext(testContext(t), small)
		if n, err := wireExchange(ctx, ssepb.ConnectorClient.EvaluateScript, p.viaGateway); err != nil || n != 1 {
			t.Errorf("next call on the same connection = %d messages, %v; want 1 message, OK", n, err)
		}
		limitsCheckSmallCalls(t, seen)
	})
}

// limitsCheckSmallCalls fails the test if seen contains a call with more
// than 10 KB of metadata, because the tests expect such calls to stop
// before the plugin.
func limitsCheckSmallCalls(t *testing.T, seen <-chan metadata.MD) {
	t.Helper()
	for {
		select {
		case md := <-seen:
			size := 0
			for key, values := range md {
				for _, value := range values {
					size += len(key) + len(value)
				}
			}
			if size > 10_000 {
				t.Errorf("plugin received a call with %d bytes of metadata, want it stopped before the plugin", size)
			}
		default:
			return
		}
	}
}

// limitsPath is newPath for a plugin started with options.
func limitsPath(t *testing.T, connector *ssetest.Connector, options ...grpc.ServerOption) *path {
	t.Helper()
	plugin := ssetest.StartPlugin(t, connector, options...)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
	})
	return &path{
		plugin:     plugin,
		gateway:    gw,
		viaGateway: ssetest.Dial(t, gw.Addrs[0]),
		direct:     ssetest.Dial(t, plugin.Addr),
	}
}

// limitsBundle returns a valid BundledRows encoding of exactly size bytes:
// one row with one long string, and a short row that makes up the rest.
// seed varies the text, so that bundles of one size differ.
func limitsBundle(t *testing.T, size, seed int) ssetest.Raw {
	t.Helper()
	// entry is the size of a row with one string of n bytes, as a field of
	// BundledRows: tag and length around the Row, around the Dual, around
	// the string.
	entry := func(n int) int {
		dual := 1 + protowire.SizeBytes(n)
		row := 1 + protowire.SizeBytes(dual)
		return 1 + protowire.SizeBytes(row)
	}
	// A short row of 1 to 120 bytes of text takes 7 to 126 bytes, so any
	// remainder of 7 or more can be made up exactly. (An empty string
	// would not be encoded at all.)
	const minTail = 7
	if size < 2*minTail {
		t.Fatalf("limitsBundle(%d): want at least %d bytes", size, 2*minTail)
	}
	long := size - minTail
	for entry(long) > size-minTail {
		long--
	}
	tail := size - entry(long) - (minTail - 1)

	text := make([]byte, long)
	for i := range text {
		text[i] = byte('a' + (i+seed)%26)
	}
	bundle := &ssepb.BundledRows{Rows: []*ssepb.Row{
		{Duals: []*ssepb.Dual{{StrData: string(text)}}},
		{Duals: []*ssepb.Dual{{StrData: strings.Repeat("z", tail)}}},
	}}
	b, err := proto.Marshal(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != size {
		t.Fatalf("limitsBundle(%d) = %d bytes, want %d", size, len(b), size)
	}
	return b
}

// limitsText returns prefix followed by filler, n bytes in all, in
// printable ASCII that grpc-message carries without escaping.
func limitsText(prefix string, n int) string {
	filler := strings.Repeat("x = x + 1; ", n/11+1)
	return (prefix + filler)[:n]
}

// limitsScriptMetadata returns Qlik's metadata of an EvaluateScript call
// whose script is n bytes long.
func limitsScriptMetadata(t *testing.T, n int) metadata.MD {
	t.Helper()
	header := &ssepb.ScriptRequestHeader{
		Script:       limitsText("q = args[0]; ", n),
		FunctionType: ssepb.FunctionType_SCALAR,
		ReturnType:   ssepb.DataType_NUMERIC,
		Params:       []*ssepb.Parameter{{DataType: ssepb.DataType_NUMERIC, Name: "x"}},
	}
	md, err := ssepb.ScriptCallMetadata(header, &ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: 1})
	if err != nil {
		t.Fatal(err)
	}
	return md
}

// limitsWireFields returns the regular header fields of a gRPC request
// carrying md, with -bin values in unpadded base64 as gRPC clients write
// them.
func limitsWireFields(md metadata.MD) []hpack.HeaderField {
	fields := []hpack.HeaderField{
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	}
	for key, values := range md {
		for _, value := range values {
			if strings.HasSuffix(key, "-bin") {
				value = base64.RawStdEncoding.EncodeToString([]byte(value))
			}
			fields = append(fields, hpack.HeaderField{Name: key, Value: value})
		}
	}
	return fields
}

// limitsDialRaw opens an HTTP/2 connection to address without gRPC, and
// closes it when the test ends. Each read and write on it fails after
// wireWait.
func limitsDialRaw(t *testing.T, address string) *wireConn {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(wireWait)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c := newWireConn(conn)
	if err := c.framer.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// limitsRawOutcome is how a call on a raw connection ended.
type limitsRawOutcome struct {
	status  string // grpc-status; "" when the stream was reset, "none" when the trailers lack it
	message string // grpc-message
	reset   http2.ErrCode
}

func (o limitsRawOutcome) String() string {
	if o.status == "" {
		return fmt.Sprintf("RST_STREAM %v", o.reset)
	}
	return fmt.Sprintf("grpc-status %s %q", o.status, o.message)
}

// limitsRawCall sends an EvaluateScript request with the regular fields
// and no messages as stream id on c, and reads until the stream ends. The
// error reports a GOAWAY or a closed connection.
func limitsRawCall(c *wireConn, id uint32, authority string, regular []hpack.HeaderField) (limitsRawOutcome, error) {
	fields := append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/qlik.sse.Connector/EvaluateScript"},
		{Name: ":authority", Value: authority},
	}, regular...)
	if err := c.writeHeaders(id, fields, true); err != nil {
		return limitsRawOutcome{}, fmt.Errorf("sending headers: %w", err)
	}
	for {
		event, err := c.next()
		if err != nil {
			return limitsRawOutcome{}, fmt.Errorf("reading the response: %w", err)
		}
		switch {
		case event.frame == http2.FrameGoAway:
			return limitsRawOutcome{}, fmt.Errorf("connection ended with GOAWAY %v %q", event.errCode, event.data)
		case event.streamID != id:
		case event.frame == http2.FrameRSTStream:
			return limitsRawOutcome{reset: event.errCode}, nil
		case event.frame == http2.FrameHeaders && event.endStream:
			status := wireValues(event.fields, "grpc-status")
			message := wireValues(event.fields, "grpc-message")
			out := limitsRawOutcome{status: strings.Join(status, ","), message: strings.Join(message, ",")}
			if out.status == "" {
				out.status = "none"
			}
			return out, nil
		}
	}
}
