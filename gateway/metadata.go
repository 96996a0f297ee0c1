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
// side: everything but pseudo-headers, hop headers and pairs that gRPC
// cannot send (see grpcSendable), with values, -bin ones included, byte for
// byte. In the plugin's trailers, grpc-status-details-bin is kept as sent:
// the gateway returns the plugin's code and message without details, so
// gRPC writes no second copy. unsent lists the keys left out because gRPC
// cannot send them, and is nil in the common case.
func forwardedMetadata(in metadata.MD) (out metadata.MD, unsent []string) {
	out = make(metadata.MD, len(in))
	for key, values := range in {
		if !forwarded(key) {
			continue
		}
		if !grpcSendable(key, values) {
			unsent = append(unsent, key)
			continue
		}
		out[key] = values
	}
	return out, unsent
}

// forwardedInPlace is forwardedMetadata for headers the caller owns, such
// as the copies that a plugin's stream returns from Header and Trailer: it
// removes what is not passed on from md itself, which spares a map on
// every call.
func forwardedInPlace(md metadata.MD) (metadata.MD, []string) {
	var unsent []string
	for key, values := range hopFiltered(md) {
		if !grpcSendable(key, values) {
			unsent = append(unsent, key)
			delete(md, key)
		}
	}
	return md, unsent
}

// hopFiltered removes pseudo-headers and hop headers from md, which the
// caller owns, and returns it.
func hopFiltered(md metadata.MD) metadata.MD {
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

// BUG(ssegw): A request or response header that HTTP/2 allows but gRPC
// cannot send is left out of the forwarded call, and a rate-limited
// warning names its key. Such are a key with '!', and a value with a tab
// or UTF-8 under a key that does not end in -bin. Trailers pass as sent.

// grpcSendable reports whether gRPC sends key with values. HTTP/2 allows
// more than gRPC does, so a raw HTTP/2 client or plugin can send a pair
// that the gateway received but cannot pass on. As of grpc-go v1.85
// (ValidatePair in google.golang.org/grpc/internal/metadata), a key may
// contain only 0-9, a-z, '-', '_' and '.', and each value of a key without
// the -bin suffix only printable ASCII (0x20 to 0x7E). So "x-a!b",
// "x-info: café" and a value with a tab all fail. grpc-go then fails a
// client's stream or a server's SendHeader. A server's trailers it sends
// all the same (see call.setTrailer).
//
// Such a header is left out rather than carried. A -bin key takes any
// bytes, but moving a value to one would rename its key, and the other side
// would see a header its sender never set. grpc-go's package-level
// grpc.SendHeader skips the check as of v1.85, but where ServerStream
// fails on a header, that is a gap the next version may close, and the
// gateway does not build on it.
func grpcSendable(key string, values []string) bool {
	if key == "" {
		return false
	}
	for i := 0; i < len(key); i++ {
		b := key[i]
		if !('a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '-' || b == '_' || b == '.') {
			return false
		}
	}
	if strings.HasSuffix(key, "-bin") {
		// grpc-go sends these values in base64, so any bytes pass.
		return true
	}
	for _, value := range values {
		for i := 0; i < len(value); i++ {
			if value[i] < 0x20 || value[i] > 0x7e {
				return false
			}
		}
	}
	return true
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

// hpackFieldOverhead is the size HTTP/2 adds to each field's name and
// value when it counts a header list (RFC 7541, section 4.1).
const hpackFieldOverhead = 32

// headerListSize returns the size of md as HTTP/2 counts a header list:
// each field's name and value plus hpackFieldOverhead, with -bin values in
// base64 as they travel.
func headerListSize(md metadata.MD) int {
	size := 0
	for key, values := range md {
		for _, value := range values {
			n := len(value)
			if strings.HasSuffix(key, "-bin") {
				n = base64.RawStdEncoding.EncodedLen(n)
			}
			size += len(key) + n + hpackFieldOverhead
		}
	}
	return size
}

// largestHeader returns the key of md whose values take the most of its
// header list size, as headerListSize counts it, and their size: the one to
// name when the list is over a limit, such as Qlik's script header.
func largestHeader(md metadata.MD) (key string, size int) {
	for k, values := range md {
		// Ties go to the first key in sorted order, so that the same
		// headers always name the same key.
		if n := headerListSize(metadata.MD{k: values}); n > size || n == size && k < key {
			key, size = k, n
		}
	}
	return key, size
}

// firstValue returns the first value of key in md, or "".
func firstValue(md metadata.MD, key string) string {
	if values := md[key]; len(values) > 0 {
		return values[0]
	}
	return ""
}
