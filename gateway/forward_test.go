package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// TestRequestHeadersReachPlugin checks that Qlik's -bin headers arrive byte
// for byte, custom headers keep their order, and the deadline travels.
func TestRequestHeadersReachPlugin(t *testing.T) {
	type seen struct {
		md       metadata.MD
		deadline time.Duration
	}
	seenCh := make(chan seen, 2)
	record := func(stream ssetest.Stream) error {
		md, _ := metadata.FromIncomingContext(stream.Context())
		deadline, _ := stream.Context().Deadline()
		seenCh <- seen{md: md, deadline: time.Until(deadline)}
		return nil
	}
	p := newPath(t, &ssetest.Connector{Execute: record, Script: record}, nil)

	// Header values with bytes 0x00 and 0xFF, which are not valid in a
	// protobuf string but must pass anyway: the gateway forwards, it does
	// not parse.
	common := string([]byte{0x0a, 0x03, 'a', 0x00, 0xff, 0x18, 0x05})
	function := string([]byte{0x08, 0x02, 0x12, 0x02, 0x00, 0xff})
	script, err := proto.Marshal(&ssepb.ScriptRequestHeader{Script: "q = args", ReturnType: ssepb.DataType_STRING})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ExecuteFunction", func(t *testing.T) {
		md := metadata.MD{}
		md.Set(ssepb.CommonRequestHeaderKey, common)
		md.Set(ssepb.FunctionRequestHeaderKey, function)
		md.Append("x-test", "first", "second")
		ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(testContext(t), md), 30*time.Second)
		defer cancel()
		if out := exchange(ctx, p.viaGateway); out.err != io.EOF {
			t.Fatalf("call: %v", out.err)
		}

		got := <-seenCh
		if v := got.md.Get(ssepb.CommonRequestHeaderKey); len(v) != 1 || v[0] != common {
			t.Errorf("common header = %q, want %q", v, common)
		}
		if v := got.md.Get(ssepb.FunctionRequestHeaderKey); len(v) != 1 || v[0] != function {
			t.Errorf("function header = %q, want %q", v, function)
		}
		if diff := cmp.Diff([]string{"first", "second"}, got.md.Get("x-test")); diff != "" {
			t.Errorf("x-test values (-want +got):\n%s", diff)
		}
		if got.deadline < 29*time.Second || got.deadline > 30*time.Second {
			t.Errorf("plugin's deadline = %v from now, want about 30s", got.deadline)
		}
	})

	t.Run("EvaluateScript", func(t *testing.T) {
		md := metadata.Pairs(ssepb.ScriptRequestHeaderKey, string(script))
		stream, err := p.viaGateway.EvaluateScript(metadata.NewOutgoingContext(testContext(t), md))
		if err != nil {
			t.Fatal(err)
		}
		stream.CloseSend()
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("call: %v", err)
		}
		got := <-seenCh
		if v := got.md.Get(ssepb.ScriptRequestHeaderKey); len(v) != 1 || v[0] != string(script) {
			t.Errorf("script header = %q, want %q", v, script)
		}
	})
}

// TestResponsePassesUnchanged checks that headers, trailers and status reach
// the client exactly as the plugin sent them, through the gateway as on a
// direct call, whatever the shape of the response.
func TestResponsePassesUnchanged(t *testing.T) {
	table, err := proto.Marshal(&ssepb.TableDescription{Name: "t", Fields: []*ssepb.FieldDescription{{Name: "x", DataType: ssepb.DataType_NUMERIC}}})
	if err != nil {
		t.Fatal(err)
	}
	detail := string([]byte{0x00, 0x01, 0xfe, 0xff})
	bundle := ssetest.NumericBundle(3, 1)

	tests := []struct {
		name string
		// plugin answers the call after reading every request.
		plugin      func(ssetest.Stream) error
		wantCode    codes.Code
		wantMessage string
		wantHeader  metadata.MD
		wantTrailer metadata.MD
		wantCount   int
	}{
		{
			name:       "zero messages, headers and OK",
			plugin:     func(s ssetest.Stream) error { return s.SendHeader(metadata.Pairs("x-h", "1")) },
			wantHeader: metadata.Pairs("x-h", "1"),
		},
		{
			name: "table description with zero rows",
			plugin: func(s ssetest.Stream) error {
				return s.SendHeader(metadata.Pairs(ssepb.TableDescriptionKey, string(table)))
			},
			wantHeader: metadata.Pairs(ssepb.TableDescriptionKey, string(table)),
		},
		{
			name: "qlik-cache in headers",
			plugin: func(s ssetest.Stream) error {
				if err := s.SendHeader(metadata.Pairs(ssepb.CacheKey, ssepb.CacheNoStore)); err != nil {
					return err
				}
				return s.Send(bundle)
			},
			wantHeader: metadata.Pairs(ssepb.CacheKey, ssepb.CacheNoStore),
			wantCount:  1,
		},
		{
			// C16 (b): the SSE docs allow the cache flag in trailers too.
			name: "qlik-cache in trailers after two bundles",
			plugin: func(s ssetest.Stream) error {
				s.SetTrailer(metadata.Pairs(ssepb.CacheKey, ssepb.CacheNoStore))
				if err := s.Send(bundle); err != nil {
					return err
				}
				return s.Send(bundle)
			},
			wantHeader:  metadata.MD{},
			wantTrailer: metadata.Pairs(ssepb.CacheKey, ssepb.CacheNoStore),
			wantCount:   2,
		},
		{
			// C16 (a).
			name: "error with trailer after two bundles",
			plugin: func(s ssetest.Stream) error {
				s.SetTrailer(metadata.Pairs("x-plugin-error", "e1"))
				if err := s.Send(bundle); err != nil {
					return err
				}
				if err := s.Send(bundle); err != nil {
					return err
				}
				return status.Error(codes.FailedPrecondition, "stale model")
			},
			wantCode:    codes.FailedPrecondition,
			wantMessage: "stale model",
			wantHeader:  metadata.MD{},
			wantTrailer: metadata.Pairs("x-plugin-error", "e1"),
			wantCount:   2,
		},
		{
			// C17 (a): the status is in the only header block.
			name:        "trailers-only error",
			plugin:      func(s ssetest.Stream) error { return status.Error(codes.Unimplemented, "unknown function 99") },
			wantCode:    codes.Unimplemented,
			wantMessage: "unknown function 99",
		},
		{
			// C17 (b).
			name: "trailers-only error with binary trailer",
			plugin: func(s ssetest.Stream) error {
				s.SetTrailer(metadata.Pairs("x-detail-bin", detail))
				return status.Error(codes.PermissionDenied, "no access")
			},
			wantCode:    codes.PermissionDenied,
			wantMessage: "no access",
			wantTrailer: metadata.Pairs("x-detail-bin", detail),
		},
		{
			// C17 rerun: explicit headers, then the same trailers.
			name: "headers then error with binary trailer",
			plugin: func(s ssetest.Stream) error {
				if err := s.SendHeader(metadata.MD{}); err != nil {
					return err
				}
				s.SetTrailer(metadata.Pairs("x-detail-bin", detail))
				return status.Error(codes.PermissionDenied, "no access")
			},
			wantCode:    codes.PermissionDenied,
			wantMessage: "no access",
			wantHeader:  metadata.MD{},
			wantTrailer: metadata.Pairs("x-detail-bin", detail),
		},
		{
			name: "plugin fails mid-stream",
			plugin: func(s ssetest.Stream) error {
				if err := s.Send(bundle); err != nil {
					return err
				}
				return status.Error(codes.Aborted, "model crashed at row 3")
			},
			wantCode:    codes.Aborted,
			wantMessage: "model crashed at row 3",
			wantHeader:  metadata.MD{},
			wantCount:   1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugin := func(s ssetest.Stream) error {
				for {
					if _, err := s.Recv(); err != nil {
						break
					}
				}
				return tt.plugin(s)
			}
			p := newPath(t, &ssetest.Connector{Execute: plugin}, nil)
			ctx := functionContext(t, testContext(t), 1)

			direct := exchange(ctx, p.direct, ssetest.Raw{})
			through := exchange(ctx, p.viaGateway, ssetest.Raw{})
			for _, out := range []struct {
				name string
				outcome
			}{{"direct", direct}, {"through the gateway", through}} {
				st := status.Convert(out.err)
				if out.err == io.EOF {
					st = status.New(codes.OK, "")
				}
				if st.Code() != tt.wantCode || st.Message() != tt.wantMessage {
					t.Errorf("%s: status = %v %q, want %v %q", out.name, st.Code(), st.Message(), tt.wantCode, tt.wantMessage)
				}
				if len(out.messages) != tt.wantCount {
					t.Errorf("%s: got %d messages, want %d", out.name, len(out.messages), tt.wantCount)
				}
				// A nil header means no header block at all (trailers-only).
				if (out.header == nil) != (tt.wantHeader == nil) {
					t.Errorf("%s: header block present = %v, want %v", out.name, out.header != nil, tt.wantHeader != nil)
				}
				if diff := cmp.Diff(tt.wantHeader, userMetadata(out.header), emptyIsNil); diff != "" {
					t.Errorf("%s: header (-want +got):\n%s", out.name, diff)
				}
				if diff := cmp.Diff(tt.wantTrailer, userMetadata(out.trailer), emptyIsNil); diff != "" {
					t.Errorf("%s: trailer (-want +got):\n%s", out.name, diff)
				}
			}
		})
	}
}

// emptyIsNil compares metadata by content only.
var emptyIsNil = cmp.Transformer("content", func(md metadata.MD) map[string][]string {
	if len(md) == 0 {
		return nil
	}
	return md
})

// TestBundleBoundariesKept sends bundles of 1, 1000, 0, 3 and 2000 rows and
// checks that the plugin reads exactly those five messages, byte for
// byte, and that its two answers arrive as two messages (C08).
func TestBundleBoundariesKept(t *testing.T) {
	var requests []ssetest.Raw
	for _, n := range []int{1, 1000, 0, 3, 2000} {
		b, err := proto.Marshal(ssetest.NumericBundle(n, 2))
		if err != nil {
			t.Fatal(err)
		}
		requests = append(requests, b)
	}
	if len(requests[2]) != 0 {
		t.Fatalf("a bundle of 0 rows should be a zero-length message, got %d bytes", len(requests[2]))
	}
	received := make(chan []ssetest.Raw, 1)
	plugin := func(s ssetest.Stream) error {
		var got []ssetest.Raw
		for {
			var message ssetest.Raw
			if err := s.RecvMsg(&message); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return err
			}
			got = append(got, message)
		}
		received <- got
		reply := ssetest.Raw{0x0a, 0x00}
		if err := s.SendMsg(&reply); err != nil {
			return err
		}
		return s.SendMsg(&reply)
	}
	p := newPath(t, &ssetest.Connector{Execute: plugin}, nil)

	out := exchange(functionContext(t, testContext(t), 0), p.viaGateway, requests...)
	if out.err != io.EOF {
		t.Fatalf("call: %v", out.err)
	}
	got := <-received
	if len(got) != len(requests) {
		t.Fatalf("plugin received %d messages, want %d", len(got), len(requests))
	}
	for i := range requests {
		if !bytes.Equal(got[i], requests[i]) {
			t.Errorf("message %d: plugin received %d bytes, want the %d bytes sent", i, len(got[i]), len(requests[i]))
		}
	}
	if len(out.messages) != 2 {
		t.Errorf("client received %d messages, want 2", len(out.messages))
	}
}

// TestEmptyRequestThenPluginError covers a call with headers but no rows:
// the plugin sees both headers and an immediate end of input, and its
// UNKNOWN error reaches the client without any prefix (C09).
func TestEmptyRequestThenPluginError(t *testing.T) {
	returned := make(chan time.Time, 1)
	plugin := func(s ssetest.Stream) error {
		md, _ := metadata.FromIncomingContext(s.Context())
		if len(md.Get(ssepb.FunctionRequestHeaderKey)) != 1 || len(md.Get(ssepb.CommonRequestHeaderKey)) != 1 {
			return status.Errorf(codes.InvalidArgument, "headers missing: %v", md)
		}
		if _, err := s.Recv(); err != io.EOF {
			return status.Errorf(codes.InvalidArgument, "want immediate end of stream, got %v", err)
		}
		returned <- time.Now()
		return status.Error(codes.Unknown, "no rows received")
	}
	p := newPath(t, &ssetest.Connector{Execute: plugin}, nil)

	out := exchange(functionContext(t, testContext(t), 0), p.viaGateway)
	ended := time.Now()
	st := status.Convert(out.err)
	if st.Code() != codes.Unknown || st.Message() != "no rows received" {
		t.Fatalf("status = %v %q, want Unknown %q", st.Code(), st.Message(), "no rows received")
	}
	if delay := ended.Sub(<-returned); delay > 100*time.Millisecond {
		t.Errorf("client got the status %v after the plugin returned, want within 100ms", delay)
	}
	record := p.gateway.Logs.WaitFor(t, "call", time.Second, nil)
	if record["code"] != "Unknown" {
		t.Errorf("log record code = %v, want Unknown", record["code"])
	}
}

// TestPayloadNeverParsed checks that unusual but valid values arrive byte
// for byte and that a frame that is not a valid BundledRows reaches the
// plugin unchanged, with the plugin's own decode error coming back (C12).
func TestPayloadNeverParsed(t *testing.T) {
	t.Run("unusual values", func(t *testing.T) {
		rows := &ssepb.BundledRows{Rows: []*ssepb.Row{
			{Duals: []*ssepb.Dual{{NumData: math.NaN()}, {NumData: math.Copysign(0, -1)}}},
			{Duals: []*ssepb.Dual{{NumData: 5e-324}, {NumData: 1.7976931348623157e308}}},
			{Duals: []*ssepb.Dual{{StrData: "emoji 🎉👍"}, {StrData: "nul \x00 inside"}}},
			{Duals: []*ssepb.Dual{{StrData: strings.Repeat("x", 64<<10)}}},
		}}
		want, err := proto.Marshal(rows)
		if err != nil {
			t.Fatal(err)
		}
		plugin := func(s ssetest.Stream) error {
			if _, err := s.Recv(); err != nil {
				return err
			}
			reply := ssetest.Raw(want)
			return s.SendMsg(&reply)
		}
		p := newPath(t, &ssetest.Connector{Execute: plugin}, nil)
		out := exchange(functionContext(t, testContext(t), 0), p.viaGateway, ssetest.Raw{})
		if out.err != io.EOF {
			t.Fatalf("call: %v", out.err)
		}
		if len(out.messages) != 1 || !bytes.Equal(out.messages[0], want) {
			t.Errorf("reply differs from what the plugin sent")
		}
	})

	t.Run("invalid frame", func(t *testing.T) {
		bad := ssetest.Raw{0x0a, 0x01, 0xff}
		reached := make(chan ssetest.Raw, 2)
		// This plugin decodes with protobuf, as a generated one would, and
		// reports the decode error as its own status.
		plugin := func(s ssetest.Stream) error {
			var raw ssetest.Raw
			if err := s.RecvMsg(&raw); err != nil {
				return err
			}
			reached <- raw
			if err := proto.Unmarshal(raw, &ssepb.BundledRows{}); err != nil {
				return status.Errorf(codes.InvalidArgument, "decoding bundle: %v", err)
			}
			return nil
		}
		p := newPath(t, &ssetest.Connector{Execute: plugin}, nil)
		ctx := functionContext(t, testContext(t), 0)
		direct := exchange(ctx, p.direct, bad)
		through := exchange(ctx, p.viaGateway, bad)
		for i := 0; i < 2; i++ {
			if got := <-reached; !bytes.Equal(got, bad) {
				t.Errorf("plugin received % x, want % x", got, bad)
			}
		}
		if status.Code(through.err) == codes.Internal {
			t.Errorf("gateway returned Internal for payload content: %v", through.err)
		}
		if diff := cmp.Diff(status.Convert(direct.err).Proto(), status.Convert(through.err).Proto(), protoCmp); diff != "" {
			t.Errorf("status differs from a direct call (-direct +gateway):\n%s", diff)
		}
	})
}

// protoCmp compares protobuf messages by content.
var protoCmp = cmp.Comparer(proto.Equal)

// TestResponseHeadersNotHeldBack checks that headers the plugin sent reach
// the client before any message, while the client still streams (C15). A
// handler that forwards headers only with the first message deadlocks.
func TestResponseHeadersNotHeldBack(t *testing.T) {
	headerSent := make(chan time.Time, 1)
	plugin := func(s ssetest.Stream) error {
		if err := s.SendHeader(metadata.Pairs("x-early", "yes")); err != nil {
			return err
		}
		headerSent <- time.Now()
		for i := 0; i < 2; i++ {
			if _, err := s.Recv(); err != nil {
				return err
			}
		}
		return s.Send(ssetest.NumericBundle(1, 1))
	}
	p := newPath(t, &ssetest.Connector{Execute: plugin}, nil)

	ctx, cancel := context.WithTimeout(functionContext(t, testContext(t), 0), 5*time.Second)
	defer cancel()
	stream, err := p.viaGateway.ExecuteFunction(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(ssetest.NumericBundle(1, 1)); err != nil {
		t.Fatal(err)
	}
	header, err := stream.Header()
	received := time.Now()
	if err != nil {
		t.Fatalf("Header() = %v; a 5 s wait means the gateway held the headers back", err)
	}
	if got := header.Get("x-early"); len(got) != 1 {
		t.Fatalf("header x-early = %q, want [yes]", got)
	}
	if delay := received.Sub(<-headerSent); delay > 200*time.Millisecond {
		t.Errorf("headers arrived %v after the plugin sent them, want within 200ms", delay)
	}
	if err := stream.Send(ssetest.NumericBundle(1, 1)); err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first message: %v", err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("end of call = %v, want OK", err)
	}
}
