package gateway_test

import (
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/metadata"

	"github.com/ssegw/ssegw/internal/ssetest"
)

// unsentWarning is the gateway's warning about headers it left out because
// gRPC cannot send them.
const unsentWarning = "left out headers that gRPC cannot send and went on with the call: gRPC allows only 0-9, a-z, '-', '_' and '.' in a key, and only printable ASCII in the values of a key that does not end in -bin, so the sender should send other bytes under a key ending in -bin"

// unsendableFields are header fields that HTTP/2 allows but gRPC cannot
// send (as of grpc-go v1.85), each with a value that no log may show.
var unsendableFields = []struct {
	name  string
	field hpack.HeaderField
}{
	{"non-ASCII value", hpack.HeaderField{Name: "x-info", Value: "café au lait"}},
	{"tab in value", hpack.HeaderField{Name: "x-info", Value: "before\tafter"}},
	{"illegal key", hpack.HeaderField{Name: "x-a!b", Value: "secret-value"}},
}

// binaryValue is a -bin value with bytes that are not printable ASCII,
// which gRPC sends as they are, in base64.
const binaryValue = "caf\xc3\xa9\x00\xff"

// TestUnsendableResponseHeaders has a raw HTTP/2 plugin send, next to
// ordinary ones, a response header that HTTP/2 allows and gRPC cannot
// send. Before the fix, the gateway's SendHeader failed, and the client
// got Internal "header key ... non-printable ASCII" instead of the
// plugin's response, which a direct grpc-go client receives. Now the call
// succeeds without that field, and a warning names its key but not its
// value.
func TestUnsendableResponseHeaders(t *testing.T) {
	keptHeader := []hpack.HeaderField{
		{Name: "x-kept", Value: "kept"},
		{Name: "x-kept-bin", Value: base64.RawStdEncoding.EncodeToString([]byte(binaryValue))},
	}
	keptTrailer := []hpack.HeaderField{{Name: "x-kept-trailer", Value: "kept"}}
	wantKept := metadata.MD{"x-kept": {"kept"}, "x-kept-bin": {binaryValue}}
	wantKeptTrailer := metadata.MD{"x-kept-trailer": {"kept"}}

	for _, unsendable := range unsendableFields {
		field := unsendable.field
		tests := []struct {
			name      string
			response  wireResponse
			direction string
			// wantHeader and wantTrailer are what the client gets through
			// the gateway; the direct client also gets field.
			wantHeader, wantTrailer metadata.MD
			wantMessages            int
		}{
			{
				name:         "header with " + unsendable.name,
				response:     wireResponse{header: append(slices.Clone(keptHeader), field), trailer: keptTrailer},
				direction:    "response header",
				wantHeader:   wantKept,
				wantTrailer:  wantKeptTrailer,
				wantMessages: 1,
			},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				backend := startWireBackendWith(t, tt.response)
				gw := startWireGateway(t, backend.addr)
				ctx := testContext(t)
				request := ssetest.Raw{}

				// A grpc-go client receives the field from the plugin
				// directly, so only the gateway could lose it.
				direct := exchange(ctx, ssetest.Dial(t, backend.addr), request)
				if direct.err != io.EOF {
					t.Fatalf("direct call ended with %v, want OK", direct.err)
				}
				if got := append(direct.header.Get(field.Name), direct.trailer.Get(field.Name)...); !slices.Equal(got, []string{field.Value}) {
					t.Fatalf("direct call: %s = %q, want [%q]", field.Name, got, field.Value)
				}

				// Through the gateway, the call succeeds without the field.
				mark := logMark(gw)
				out := exchange(ctx, ssetest.Dial(t, gw.Addrs[0]), request)
				if out.err != io.EOF {
					t.Fatalf("call through the gateway ended with %v, want OK", out.err)
				}
				if len(out.messages) != tt.wantMessages {
					t.Errorf("call through the gateway: %d messages, want %d", len(out.messages), tt.wantMessages)
				}
				checkMetadata(t, "header", userMetadata(out.header), tt.wantHeader)
				checkMetadata(t, "trailer", userMetadata(out.trailer), tt.wantTrailer)

				// The admin learns which key the call went without.
				record := waitForRecordAfter(t, gw, mark, wireWait, "a warning about "+field.Name, nil, unsentWarning)
				checkUnsentRecord(t, record, field, tt.direction)
				if record["backend"] != backend.addr {
					t.Errorf("warning: backend = %v, want the plugin's %s", record["backend"], backend.addr)
				}

				// A second call within the limiter's interval adds no
				// warning. Its warning would come before its status.
				again := exchange(ctx, ssetest.Dial(t, gw.Addrs[0]), request)
				if again.err != io.EOF {
					t.Fatalf("second call through the gateway ended with %v, want OK", again.err)
				}
				if n := len(gw.Logs.Records(unsentWarning)); n != 1 {
					t.Errorf("after two calls: %d warnings, want 1", n)
				}
			})
		}
	}
}

// TestUnsendableTrailersForwarded has a raw HTTP/2 plugin send a trailer
// that gRPC would not let a client or a SendHeader send, in trailers after
// a response and in a trailers-only response, which gRPC reads as trailers
// with the plugin's headers. gRPC's server sends trailers all the same, so
// the client gets the field as a direct client does, and no warning.
func TestUnsendableTrailersForwarded(t *testing.T) {
	keptTrailer := []hpack.HeaderField{{Name: "x-kept-trailer", Value: "kept"}}
	for _, unsendable := range unsendableFields {
		field := unsendable.field
		for _, tt := range []struct {
			name     string
			response wireResponse
		}{
			{"trailer with " + unsendable.name, wireResponse{trailer: append(slices.Clone(keptTrailer), field)}},
			{"trailers-only response with " + unsendable.name, wireResponse{trailersOnly: true, header: []hpack.HeaderField{field}, trailer: keptTrailer}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				backend := startWireBackendWith(t, tt.response)
				gw := startWireGateway(t, backend.addr)
				ctx := testContext(t)
				for _, route := range []struct{ name, address string }{{"direct", backend.addr}, {"through the gateway", gw.Addrs[0]}} {
					out := exchange(ctx, ssetest.Dial(t, route.address), ssetest.Raw{})
					if out.err != io.EOF {
						t.Fatalf("%s: call ended with %v, want OK", route.name, out.err)
					}
					if got := out.trailer.Get(field.Name); !slices.Equal(got, []string{field.Value}) {
						t.Errorf("%s: trailer %s = %q, want [%q]", route.name, field.Name, got, field.Value)
					}
					if got := out.trailer.Get("x-kept-trailer"); !slices.Equal(got, []string{"kept"}) {
						t.Errorf("%s: trailer x-kept-trailer = %q, want [kept]", route.name, got)
					}
				}
				if n := len(gw.Logs.Records(unsentWarning)); n != 0 {
					t.Errorf("%d warnings about headers left out, want none", n)
				}
			})
		}
	}
}

// TestUnsendableRequestHeaders has a raw HTTP/2 client send, next to
// ordinary ones, a request header that HTTP/2 allows and gRPC cannot send.
// Before the fix, grpc-go failed to open the plugin's stream, and the client
// got Unavailable "engine R: no plugin reachable: header key ...", with a
// warning that made its own header look like a plugin outage. Now the
// plugin gets the call without that header, and a warning names its key
// but not its value.
func TestUnsendableRequestHeaders(t *testing.T) {
	for _, tt := range unsendableFields {
		t.Run(tt.name, func(t *testing.T) {
			backend := startWireBackend(t, false)
			gw := startWireGateway(t, backend.addr)
			fields := []hpack.HeaderField{
				{Name: "content-type", Value: "application/grpc"},
				{Name: "te", Value: "trailers"},
				{Name: "x-kept", Value: "kept"},
				{Name: "x-kept-bin", Value: base64.RawStdEncoding.EncodeToString([]byte(binaryValue))},
				tt.field,
			}

			mark := logMark(gw)
			c := limitsDialRaw(t, gw.Addrs[0])
			out, err := limitsRawCall(c, 1, gw.Addrs[0], fields)
			if err != nil {
				t.Fatal(err)
			}
			if out.status != "0" {
				t.Fatalf("call through the gateway: %v, want grpc-status 0", out)
			}

			// The plugin got every other header as sent.
			forwarded := wireAwait(t, backend.requests, "forwarded request")
			if got := wireValues(forwarded, tt.field.Name); len(got) != 0 {
				t.Errorf("forwarded %s = %q, want it left out", tt.field.Name, got)
			}
			if got := wireValues(forwarded, "x-kept"); !slices.Equal(got, []string{"kept"}) {
				t.Errorf("forwarded x-kept = %q, want [kept]", got)
			}
			if got := wireValues(forwarded, "x-kept-bin"); len(got) != 1 {
				t.Errorf("forwarded x-kept-bin = %q, want one value", got)
			} else if decoded, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(got[0], "=")); err != nil || string(decoded) != binaryValue {
				t.Errorf("forwarded x-kept-bin = %q (%v), want %q in base64", decoded, err, binaryValue)
			}

			// The admin learns which key the call went without.
			record := waitForRecordAfter(t, gw, mark, wireWait, "a warning about "+tt.field.Name, nil, unsentWarning)
			checkUnsentRecord(t, record, tt.field, "request header")
			if peer, _ := record["peer"].(string); peer != c.conn.LocalAddr().String() {
				t.Errorf("warning: peer = %q, want the client's %q", peer, c.conn.LocalAddr())
			}
		})
	}
}

// checkMetadata compares the header or trailer block a client got with
// want.
func checkMetadata(t *testing.T, block string, got, want metadata.MD) {
	t.Helper()
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("%s through the gateway (-want +got):\n%s", block, diff)
	}
}

// checkUnsentRecord checks that a warning names engine R, direction and
// field's key, and that none of its fields contains field's value.
func checkUnsentRecord(t *testing.T, record map[string]any, field hpack.HeaderField, direction string) {
	t.Helper()
	if record["level"] != "WARN" {
		t.Errorf("warning: level = %v, want WARN", record["level"])
	}
	if record["engine"] != "R" {
		t.Errorf("warning: engine = %v, want R", record["engine"])
	}
	if record["direction"] != direction {
		t.Errorf("warning: direction = %v, want %q", record["direction"], direction)
	}
	if keys, _ := record["keys"].([]any); len(keys) != 1 || keys[0] != field.Name {
		t.Errorf("warning: keys = %v, want [%s]", record["keys"], field.Name)
	}
	for name, value := range record {
		if strings.Contains(fmt.Sprint(value), field.Value) {
			t.Errorf("warning: %s = %v, which shows the header's value %q", name, value, field.Value)
		}
	}
}
