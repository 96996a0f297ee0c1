package ssepb

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// unmarshalLenient decodes b into m as proto.Unmarshal does, except that a
// string field may hold bytes that are not valid UTF-8. Go's protobuf
// rejects such bytes in proto3 strings (as of google.golang.org/protobuf
// v1.36), while the gateway must pass Qlik's app and user ids through
// whatever they hold; only a wire format that cannot be read is an error.
func unmarshalLenient(b []byte, m protoreflect.Message) error {
	fields := m.Descriptor().Fields()
	for len(b) > 0 {
		number, wireType, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		field := fields.ByNumber(number)
		if field != nil {
			size, err := decodeField(b, wireType, field, m)
			if err == nil {
				b = b[size:]
				continue
			}
			if !errors.Is(err, errWireType) {
				return fmt.Errorf("field %s: %w", field.Name(), err)
			}
		}
		{
			// An unknown field, or a known one with another wire type
			// than its own: kept as unknown, as proto.Unmarshal does.
			size := protowire.ConsumeFieldValue(number, wireType, b)
			if size < 0 {
				return protowire.ParseError(size)
			}
			m.SetUnknown(append(m.GetUnknown(), protowire.AppendTag(nil, number, wireType)...))
			m.SetUnknown(append(m.GetUnknown(), b[:size]...))
			b = b[size:]
		}
	}
	return nil
}

// decodeField decodes one value of field from b into m and returns the
// bytes it used.
func decodeField(b []byte, wireType protowire.Type, field protoreflect.FieldDescriptor, m protoreflect.Message) (int, error) {
	var value protoreflect.Value
	var size int
	switch field.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		if wireType != protowire.BytesType {
			return 0, errWireType
		}
		raw, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		size = n
		switch field.Kind() {
		case protoreflect.StringKind:
			value = protoreflect.ValueOfString(string(raw))
		case protoreflect.BytesKind:
			value = protoreflect.ValueOfBytes(append([]byte(nil), raw...))
		default:
			var element protoreflect.Message
			if field.IsList() {
				element = m.Mutable(field).List().NewElement().Message()
			} else {
				element = m.Mutable(field).Message()
			}
			if err := unmarshalLenient(raw, element); err != nil {
				return 0, err
			}
			if !field.IsList() {
				return size, nil
			}
			value = protoreflect.ValueOfMessage(element)
		}
	case protoreflect.DoubleKind:
		if wireType != protowire.Fixed64Type {
			return 0, errWireType
		}
		bits, n := protowire.ConsumeFixed64(b)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		value, size = protoreflect.ValueOfFloat64(math.Float64frombits(bits)), n
	case protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Int64Kind:
		if wireType != protowire.VarintType {
			return 0, errWireType
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		size = n
		switch field.Kind() {
		case protoreflect.BoolKind:
			value = protoreflect.ValueOfBool(v != 0)
		case protoreflect.EnumKind:
			value = protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(v)))
		case protoreflect.Int32Kind:
			value = protoreflect.ValueOfInt32(int32(v))
		default:
			value = protoreflect.ValueOfInt64(int64(v))
		}
	default:
		return 0, fmt.Errorf("kind %v is not used by the SSE protocol", field.Kind())
	}
	if field.IsList() {
		m.Mutable(field).List().Append(value)
	} else {
		m.Set(field, value)
	}
	return size, nil
}

var errWireType = errors.New("wrong wire type")

// decodeHeader is unmarshalLenient for a generated message.
func decodeHeader(b []byte, msg proto.Message) error {
	return unmarshalLenient(b, msg.ProtoReflect())
}
