package gateway

import (
	"context"
	"errors"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestGRPCSendableAgreesWithGRPC checks grpcSendable against grpc-go itself,
// for every byte in a key and in the values of a plain and a -bin key. A
// pair it accepts must not fail in grpc-go, and a pair it rejects must,
// or the gateway would drop a header that gRPC can send. grpc-go checks
// outgoing metadata when a client stream opens, before it picks a
// connection, and fails with Internal.
func TestGRPCSendableAgreesWithGRPC(t *testing.T) {
	conn, err := grpc.NewClient("passthrough:///sendable.test",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			return nil, errors.New("the test dials nothing")
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Cancelled, so that a stream that passes the check ends at once.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	grpcSends := func(key string, values ...string) bool {
		md := metadata.MD{key: values}
		_, err := conn.NewStream(metadata.NewOutgoingContext(cancelled, md), &forwardedStreamDesc, "/qlik.sse.Connector/ExecuteFunction")
		if err == nil {
			t.Fatalf("NewStream with a cancelled context = no error, want one")
		}
		return status.Code(err) != codes.Internal
	}

	type pair struct {
		key    string
		values []string
	}
	pairs := []pair{
		{"", []string{"v"}},
		{"x-ok", nil},
		{"x-ok", []string{"fine", "café"}},
		{"x-ok-bin", []string{"café\x00\xff"}},
	}
	for b := range 256 {
		c := string([]byte{byte(b)})
		pairs = append(pairs,
			pair{"x-" + c, []string{"v"}},
			pair{"x-value", []string{"a" + c + "b"}},
			pair{"x-value-bin", []string{"a" + c + "b"}},
		)
	}
	for _, p := range pairs {
		if got, want := grpcSendable(p.key, p.values), grpcSends(p.key, p.values...); got != want {
			t.Errorf("grpcSendable(%q, %q) = %v, want %v as grpc-go decides", p.key, p.values, got, want)
		}
	}
}

// metadataSink keeps the copies that allocation tests make on the heap.
var metadataSink metadata.MD

// TestForwardedMetadataAllocations checks that leaving out what gRPC cannot
// send costs no allocation when every header can be sent, as Qlik's do.
func TestForwardedMetadataAllocations(t *testing.T) {
	qlikHeaders := func() metadata.MD {
		return metadata.MD{
			":authority":                     {"gateway:50051"},
			"content-type":                   {"application/grpc"},
			"user-agent":                     {"grpc-c++/1.62.0"},
			"te":                             {"trailers"},
			"qlik-functionrequestheader-bin": {"\x08\x02\x12\x00"},
			"qlik-commonrequestheader-bin":   {"\x0a\x03app\x12\x04user\x18\x0a"},
			"x-note":                         {"plain ASCII"},
		}
	}

	// The copy that forwardedMetadata makes, without any check. Both
	// copies escape, as the gateway's do.
	in := qlikHeaders()
	plainCopy := testing.AllocsPerRun(100, func() {
		out := make(metadata.MD, len(in))
		for key, values := range in {
			if forwarded(key) {
				out[key] = values
			}
		}
		metadataSink = out
	})
	if got := testing.AllocsPerRun(100, func() { metadataSink, _ = forwardedMetadata(in) }); got != plainCopy {
		t.Errorf("forwardedMetadata allocations = %v, want %v as for a plain copy", got, plainCopy)
	}

	// forwardedInPlace deletes the hop headers on its first run, which
	// AllocsPerRun does not count, so the counted runs pass on every key.
	md := qlikHeaders()
	if got := testing.AllocsPerRun(100, func() { forwardedInPlace(md) }); got != 0 {
		t.Errorf("forwardedInPlace allocations = %v, want 0", got)
	}
}
