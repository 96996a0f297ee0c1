package gateway

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// frame is one gRPC message passing through the gateway, kept as the bytes
// gRPC received. The gateway never decodes the BundledRows inside.
type frame struct {
	data mem.BufferSlice
}

// len returns the message's size in bytes.
func (f *frame) len() int {
	return f.data.Len()
}

// release returns the frame's buffers to gRPC's pool, for a frame that
// gRPC has not taken over: one whose send failed, or a received one that
// is dropped.
func (f *frame) release() {
	f.data.Free()
	f.data = nil
}

// frameCodec passes frames between a server stream and a client stream
// without copying them. Unmarshal keeps a reference to the buffers gRPC
// read from one connection, and Marshal hands those same buffers to the
// other connection, which frees them once written.
//
// It replaces the codec of github.com/mwitkow/grpc-proxy, which works
// through gRPC's deprecated Codec interface: there every message is copied
// into one contiguous []byte when received.
type frameCodec struct{}

func (frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("gateway codec: cannot encode %T, only frames", v)
	}
	data := f.data
	f.data = nil // ownership passes to gRPC
	return data, nil
}

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("gateway codec: cannot decode into %T, only frames", v)
	}
	data.Ref() // gRPC frees data when Unmarshal returns
	f.data = data
	return nil
}

// Name returns "", because gRPC puts a forced codec's name into the
// content-type it sends (as of grpc-go v1.85): "" keeps the plain
// application/grpc that Qlik sends, and the handler passes on a subtype
// the client sent, such as +proto.
func (frameCodec) Name() string {
	return ""
}

var _ encoding.CodecV2 = frameCodec{}
