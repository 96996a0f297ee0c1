package gateway

import (
	"encoding/base64"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/ssegw/ssegw/routing"
)

// hopHeaders are headers that describe one HTTP/2 connection rather than
// the call, so the gateway sets its own on each side instead of copying
// them. gRPC skips most of them itself (as of grpc-go v1.85), but relying on
// that would leave a pseudo-header copied as a plain header one gRPC
// upgrade away.
var hopHeaders = map[string]bool{
	"content-type":         true,
	"user-agent":           true,
	"te":                   true,
	"host":                 true,
	"connection":           true,
	"keep-alive":           true,
	"proxy-connection":     true,
	"transfer-encoding":    true,
	"upgrade":              true,
	"grpc-timeout":         true, // carried by the backend call's deadline
	"grpc-encoding":        true, // each side compresses on its own terms
	"grpc-accept-encoding": true,
	"grpc-status":          true, // carried by the returned status
	"grpc-message":         true,
	routing.EngineHeader:   true, // the gateway's own
}

// forwardedMetadata returns the headers or trailers to pass on to the other
// side: everything but pseudo-headers and hop headers, with values, -bin
// ones included, byte for byte. In the plugin's trailers,
// grpc-status-details-bin is kept as sent: the gateway returns the plugin's
// code and message without details, so gRPC writes no second copy.
func forwardedMetadata(in metadata.MD) metadata.MD {
	out := make(metadata.MD, len(in))
	for key, values := range in {
		if !forwarded(key) {
			continue
		}
		out[key] = values
	}
	return out
}

// forwardedInPlace is forwardedMetadata for headers the caller owns, such
// as the copies that a plugin's stream returns from Header and Trailer: it
// removes what is not passed on from md itself, which spares a map on
// every call.
func forwardedInPlace(md metadata.MD) metadata.MD {
	for key := range md {
		if !forwarded(key) {
			delete(md, key)
		}
	}
	return md
}

func forwarded(key string) bool {
	return !strings.HasPrefix(key, ":") && !hopHeaders[key]
}

// contentSubtype returns the part after "+" of the client's content-type,
// such as "proto" for application/grpc+proto, or "" for application/grpc.
func contentSubtype(md metadata.MD) string {
	_, subtype, _ := strings.Cut(firstValue(md, "content-type"), "+")
	if i := strings.IndexByte(subtype, ';'); i >= 0 {
		subtype = subtype[:i]
	}
	return strings.TrimSpace(subtype)
}

// headerListSize returns the size of md as HTTP/2 counts a header list:
// each field's name and value plus 32 bytes, with -bin values in base64
// as they travel.
func headerListSize(md metadata.MD) int {
	size := 0
	for key, values := range md {
		for _, value := range values {
			n := len(value)
			if strings.HasSuffix(key, "-bin") {
				n = base64.RawStdEncoding.EncodedLen(n)
			}
			size += len(key) + n + 32
		}
	}
	return size
}

// firstValue returns the first value of key in md, or "".
func firstValue(md metadata.MD, key string) string {
	if values := md[key]; len(values) > 0 {
		return values[0]
	}
	return ""
}
