// Package ssetest provides the parts of ssegw's tests: a scriptable SSE
// plugin on a real listener, Qlik-like clients, certificate sets, and a
// gateway started in-process or as a process.
package ssetest

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Raw is a message as bytes on the wire, for sending hand-built frames and
// for checking that a message arrives byte-identical.
type Raw []byte

// Codec encodes *Raw as its bytes and every other message as protobuf. Test
// clients and plugins use it, so one stream can mix typed and raw messages.
type Codec struct{}

func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if raw, ok := v.(*Raw); ok {
		return mem.BufferSlice{mem.SliceBuffer(*raw)}, nil
	}
	message, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("test codec: cannot encode %T", v)
	}
	b, err := proto.Marshal(message)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if raw, ok := v.(*Raw); ok {
		*raw = data.Materialize()
		return nil
	}
	message, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("test codec: cannot decode into %T", v)
	}
	return proto.Unmarshal(data.Materialize(), message)
}

// Name returns "", so that test clients send the plain application/grpc
// content-type that Qlik sends.
func (Codec) Name() string {
	return ""
}

var _ encoding.CodecV2 = Codec{}
