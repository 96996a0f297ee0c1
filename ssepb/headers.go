package ssepb

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Metadata keys of the headers that Qlik and SSE plugins exchange. The -bin
// keys carry serialized messages of this package.
const (
	CommonRequestHeaderKey   = "qlik-commonrequestheader-bin"
	FunctionRequestHeaderKey = "qlik-functionrequestheader-bin"
	ScriptRequestHeaderKey   = "qlik-scriptrequestheader-bin"
	TableDescriptionKey      = "qlik-tabledescription-bin"

	// CacheKey with the value CacheNoStore, in a plugin's response headers or
	// trailers, tells Qlik not to cache the result.
	CacheKey     = "qlik-cache"
	CacheNoStore = "no-store"
)

// ErrMalformedHeader is returned, wrapped, when a qlik-*-bin header is
// present but cannot be decoded.
var ErrMalformedHeader = errors.New("malformed header")

// ReadCommonRequestHeader decodes the qlik-commonrequestheader-bin header.
// It returns nil and no error when md has no such header.
func ReadCommonRequestHeader(md metadata.MD) (*CommonRequestHeader, error) {
	return readHeader(md, CommonRequestHeaderKey, &CommonRequestHeader{})
}

// ReadFunctionRequestHeader decodes the qlik-functionrequestheader-bin header.
// It returns nil and no error when md has no such header.
func ReadFunctionRequestHeader(md metadata.MD) (*FunctionRequestHeader, error) {
	return readHeader(md, FunctionRequestHeaderKey, &FunctionRequestHeader{})
}

// ReadScriptRequestHeader decodes the qlik-scriptrequestheader-bin header.
// It returns nil and no error when md has no such header.
func ReadScriptRequestHeader(md metadata.MD) (*ScriptRequestHeader, error) {
	return readHeader(md, ScriptRequestHeaderKey, &ScriptRequestHeader{})
}

// ReadTableDescription decodes a plugin's qlik-tabledescription-bin response
// header. It returns nil and no error when md has no such header.
func ReadTableDescription(md metadata.MD) (*TableDescription, error) {
	return readHeader(md, TableDescriptionKey, &TableDescription{})
}

func readHeader[M proto.Message](md metadata.MD, key string, msg M) (M, error) {
	var none M
	values := md.Get(key)
	switch len(values) {
	case 0:
		return none, nil
	case 1:
	default:
		// Two values would leave it open which one the plugin reads.
		return none, fmt.Errorf("%w: %s sent %d times, expected once", ErrMalformedHeader, key, len(values))
	}
	// Strings that are not valid UTF-8 pass: Qlik's ids are passed on,
	// not judged. A value that is not protobuf at all is malformed.
	if err := decodeHeader([]byte(values[0]), msg); err != nil {
		return none, fmt.Errorf("%w: %s: %w", ErrMalformedHeader, key, err)
	}
	return msg, nil
}

// SetHeader serializes msg into md under key, replacing any earlier value.
// Clients use it to build the qlik-*-bin headers of a call, plugins to send
// a qlik-tabledescription-bin header.
func SetHeader(md metadata.MD, key string, msg proto.Message) error {
	b, err := proto.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	md.Set(key, string(b))
	return nil
}

// functionIDField is FunctionRequestHeader's functionId in sse.proto.
const functionIDField protowire.Number = 1

// SetFunctionID sets the function id in md's qlik-functionrequestheader-bin
// header, and keeps the rest of the header's bytes as they came. It appends
// the id as a second value of its field, which protobuf's parsers take
// over the first. Encoding the decoded header again would fail on a
// version that is not valid UTF-8, and drop what this package's message
// does not know, where a merged engine must pass on the rest of Qlik's
// header as sent.
func SetFunctionID(md metadata.MD, id int32) {
	var b []byte
	if values := md.Get(FunctionRequestHeaderKey); len(values) > 0 {
		b = []byte(values[0])
	}
	b = protowire.AppendTag(b, functionIDField, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(int64(id)))
	md.Set(FunctionRequestHeaderKey, string(b))
}

// FunctionCallMetadata returns the request metadata that Qlik sends with an
// ExecuteFunction call of the given function id. It fails only when a string
// field of common is not valid UTF-8, which protobuf cannot encode.
func FunctionCallMetadata(functionID int32, common *CommonRequestHeader) (metadata.MD, error) {
	md := metadata.MD{}
	if err := SetHeader(md, FunctionRequestHeaderKey, &FunctionRequestHeader{FunctionId: functionID}); err != nil {
		return nil, err
	}
	if err := SetHeader(md, CommonRequestHeaderKey, common); err != nil {
		return nil, err
	}
	return md, nil
}

// ScriptCallMetadata returns the request metadata that Qlik sends with an
// EvaluateScript call. It fails only when a string field is not valid UTF-8.
func ScriptCallMetadata(script *ScriptRequestHeader, common *CommonRequestHeader) (metadata.MD, error) {
	md := metadata.MD{}
	if err := SetHeader(md, ScriptRequestHeaderKey, script); err != nil {
		return nil, err
	}
	if err := SetHeader(md, CommonRequestHeaderKey, common); err != nil {
		return nil, err
	}
	return md, nil
}
