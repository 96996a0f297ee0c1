package gateway

import (
	"testing"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestStreamReset checks which statuses count as a stream reset by the
// plugin, in grpc-go's wording, and the HTTP/2 error code read from them.
func TestStreamReset(t *testing.T) {
	for _, tt := range []struct {
		message string
		want    http2.ErrCode
		reset   bool
	}{
		{"stream terminated by RST_STREAM with error code: CANCEL", http2.ErrCodeCancel, true},
		{"stream terminated by RST_STREAM with error code: REFUSED_STREAM", http2.ErrCodeRefusedStream, true},
		{"stream terminated by RST_STREAM with error code: INTERNAL_ERROR", http2.ErrCodeInternal, true},
		{"stream terminated by RST_STREAM with error code: HTTP_1_1_REQUIRED", http2.ErrCodeHTTP11Required, true},
		{"stream terminated by RST_STREAM with error code: unknown error code 0x42", 0, false},
		{"error reading from server: EOF", 0, false},
		{"the plugin wrote stream terminated by RST_STREAM with error code: CANCEL", 0, false},
	} {
		got, reset := streamReset(status.New(codes.Internal, tt.message))
		if got != tt.want || reset != tt.reset {
			t.Errorf("streamReset(%q) = %v, %t, want %v, %t", tt.message, got, reset, tt.want, tt.reset)
		}
	}
}
