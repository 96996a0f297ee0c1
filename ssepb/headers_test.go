package ssepb_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ssegw/ssegw/ssepb"
)

// reader is one of the Read*Header functions, as a common type.
type reader func(metadata.MD) (proto.Message, error)

func commonReader(md metadata.MD) (proto.Message, error) {
	return nilIfNone(ssepb.ReadCommonRequestHeader(md))
}

func functionReader(md metadata.MD) (proto.Message, error) {
	return nilIfNone(ssepb.ReadFunctionRequestHeader(md))
}

func scriptReader(md metadata.MD) (proto.Message, error) {
	return nilIfNone(ssepb.ReadScriptRequestHeader(md))
}

func tableReader(md metadata.MD) (proto.Message, error) {
	return nilIfNone(ssepb.ReadTableDescription(md))
}

// nilIfNone turns a nil message pointer into a nil interface, so that the
// tests can compare it with nil.
func nilIfNone[M interface {
	proto.Message
	comparable
}](msg M, err error) (proto.Message, error) {
	var none M
	if msg == none {
		return nil, err
	}
	return msg, err
}

// headerKinds lists every qlik-*-bin header with its reader and a sample
// message to encode.
var headerKinds = []struct {
	key    string
	read   reader
	sample proto.Message
}{
	{
		key:    ssepb.CommonRequestHeaderKey,
		read:   commonReader,
		sample: &ssepb.CommonRequestHeader{AppId: "app-1", UserId: `UserDirectory=QLIK; UserId=ann`, Cardinality: 42},
	},
	{
		key:    ssepb.FunctionRequestHeaderKey,
		read:   functionReader,
		sample: &ssepb.FunctionRequestHeader{FunctionId: 7, Version: "1.0"},
	},
	{
		key:  ssepb.ScriptRequestHeaderKey,
		read: scriptReader,
		sample: &ssepb.ScriptRequestHeader{
			Script:       "args[0] + args[1]",
			FunctionType: ssepb.FunctionType_TENSOR,
			ReturnType:   ssepb.DataType_NUMERIC,
			Params:       []*ssepb.Parameter{{DataType: ssepb.DataType_NUMERIC, Name: "a"}, {DataType: ssepb.DataType_DUAL, Name: "b"}},
		},
	},
	{
		key:  ssepb.TableDescriptionKey,
		read: tableReader,
		sample: &ssepb.TableDescription{
			Name:         "result",
			NumberOfRows: 3,
			Fields:       []*ssepb.FieldDescription{{Name: "x", DataType: ssepb.DataType_STRING, Tags: []string{"$key"}}},
		},
	},
}

// TestReadHeader checks each Read*Header function on an absent header, a
// round trip through SetHeader, a header sent twice and undecodable bytes.
func TestReadHeader(t *testing.T) {
	for _, kind := range headerKinds {
		t.Run(kind.key, func(t *testing.T) {
			t.Run("absent", func(t *testing.T) {
				md := metadata.Pairs("x-other", "1")
				got, err := kind.read(md)
				if got != nil || err != nil {
					t.Errorf("read(%v) = %v, %v, want nil, nil", md, got, err)
				}
			})

			t.Run("round trip", func(t *testing.T) {
				md := metadata.MD{}
				if err := ssepb.SetHeader(md, kind.key, kind.sample); err != nil {
					t.Fatalf("SetHeader(%s) error: %v", kind.key, err)
				}
				got, err := kind.read(md)
				if err != nil {
					t.Fatalf("read(%v) error: %v", md, err)
				}
				if diff := cmp.Diff(kind.sample, got, protocmp.Transform()); diff != "" {
					t.Errorf("read(SetHeader(%v)) mismatch (-want +got):\n%s", kind.sample, diff)
				}
			})

			t.Run("set replaces", func(t *testing.T) {
				md := metadata.Pairs(kind.key, "stale")
				if err := ssepb.SetHeader(md, kind.key, kind.sample); err != nil {
					t.Fatalf("SetHeader(%s) error: %v", kind.key, err)
				}
				if n := len(md.Get(kind.key)); n != 1 {
					t.Errorf("SetHeader(%s) on an existing header left %d values, want 1", kind.key, n)
				}
			})

			t.Run("sent twice", func(t *testing.T) {
				encoded, err := proto.Marshal(kind.sample)
				if err != nil {
					t.Fatal(err)
				}
				md := metadata.MD{}
				md.Append(kind.key, string(encoded), string(encoded))
				got, err := kind.read(md)
				if !errors.Is(err, ssepb.ErrMalformedHeader) {
					t.Errorf("read(two values) error = %v, want ErrMalformedHeader", err)
				}
				if got != nil {
					t.Errorf("read(two values) = %v, want nil", got)
				}
			})

			t.Run("garbage", func(t *testing.T) {
				// A length-delimited field 1 that claims 5 bytes and has 2.
				md := metadata.Pairs(kind.key, "\x0a\x05ab")
				got, err := kind.read(md)
				if !errors.Is(err, ssepb.ErrMalformedHeader) {
					t.Errorf("read(truncated) error = %v, want ErrMalformedHeader", err)
				}
				if got != nil {
					t.Errorf("read(truncated) = %v, want nil", got)
				}
			})
		})
	}
}

// TestReadHeaderInvalidUTF8 checks that a string field that is not UTF-8
// is passed through as its bytes: the gateway forwards Qlik's ids, it does
// not judge them, although proto3 wants UTF-8.
func TestReadHeaderInvalidUTF8(t *testing.T) {
	// Field 1 (appId), length 2, bytes 0xff 0xfe; field 3 (cardinality) 5.
	md := metadata.Pairs(ssepb.CommonRequestHeaderKey, "\x0a\x02\xff\xfe\x18\x05")
	got, err := ssepb.ReadCommonRequestHeader(md)
	if err != nil {
		t.Fatalf("ReadCommonRequestHeader(appId 0xfffe) error = %v, want nil", err)
	}
	if got.GetAppId() != "\xff\xfe" {
		t.Errorf("appId = %q, want %q", got.GetAppId(), "\xff\xfe")
	}
	if got.GetCardinality() != 5 {
		t.Errorf("cardinality = %d, want 5", got.GetCardinality())
	}
}

// TestReadHeaderWrongWireType checks that a known field sent with another
// wire type than its own is skipped, as Go's protobuf skips it, and that
// bytes that are not protobuf make the header malformed.
func TestReadHeaderWrongWireType(t *testing.T) {
	// Field 3 (cardinality, a varint) sent as a length-delimited value.
	md := metadata.Pairs(ssepb.CommonRequestHeaderKey, "\x1a\x01\x05")
	got, err := ssepb.ReadCommonRequestHeader(md)
	if err != nil {
		t.Fatalf("ReadCommonRequestHeader(cardinality as bytes) error = %v, want nil", err)
	}
	if got.GetCardinality() != 0 {
		t.Errorf("cardinality = %d, want 0 (the field is skipped)", got.GetCardinality())
	}

	// A length that runs past the end.
	md = metadata.Pairs(ssepb.CommonRequestHeaderKey, "\x0a\x05ab")
	if _, err := ssepb.ReadCommonRequestHeader(md); !errors.Is(err, ssepb.ErrMalformedHeader) {
		t.Errorf("ReadCommonRequestHeader(truncated) error = %v, want ErrMalformedHeader", err)
	}
}

// TestFunctionCallMetadata checks that the headers built for an
// ExecuteFunction call decode back to the function id and common header.
func TestFunctionCallMetadata(t *testing.T) {
	common := &ssepb.CommonRequestHeader{AppId: "app-1", UserId: "ann", Cardinality: 10}
	md, err := ssepb.FunctionCallMetadata(3, common)
	if err != nil {
		t.Fatalf("FunctionCallMetadata() error: %v", err)
	}

	function, err := ssepb.ReadFunctionRequestHeader(md)
	if err != nil {
		t.Fatalf("ReadFunctionRequestHeader() error: %v", err)
	}
	if got := function.GetFunctionId(); got != 3 {
		t.Errorf("function header FunctionId = %d, want 3", got)
	}
	gotCommon, err := ssepb.ReadCommonRequestHeader(md)
	if err != nil {
		t.Fatalf("ReadCommonRequestHeader() error: %v", err)
	}
	if diff := cmp.Diff(common, gotCommon, protocmp.Transform()); diff != "" {
		t.Errorf("common header mismatch (-want +got):\n%s", diff)
	}
	if script, err := ssepb.ReadScriptRequestHeader(md); script != nil || err != nil {
		t.Errorf("ReadScriptRequestHeader() = %v, %v, want nil, nil", script, err)
	}
}

// TestScriptCallMetadata checks that the headers built for an
// EvaluateScript call decode back to the script and common header.
func TestScriptCallMetadata(t *testing.T) {
	script := &ssepb.ScriptRequestHeader{
		Script:     "sum(args[0])",
		ReturnType: ssepb.DataType_NUMERIC,
		Params:     []*ssepb.Parameter{{DataType: ssepb.DataType_NUMERIC, Name: "x"}},
	}
	common := &ssepb.CommonRequestHeader{AppId: "app-1", UserId: "ann", Cardinality: 10}
	md, err := ssepb.ScriptCallMetadata(script, common)
	if err != nil {
		t.Fatalf("ScriptCallMetadata() error: %v", err)
	}

	gotScript, err := ssepb.ReadScriptRequestHeader(md)
	if err != nil {
		t.Fatalf("ReadScriptRequestHeader() error: %v", err)
	}
	if diff := cmp.Diff(script, gotScript, protocmp.Transform()); diff != "" {
		t.Errorf("script header mismatch (-want +got):\n%s", diff)
	}
	gotCommon, err := ssepb.ReadCommonRequestHeader(md)
	if err != nil {
		t.Fatalf("ReadCommonRequestHeader() error: %v", err)
	}
	if diff := cmp.Diff(common, gotCommon, protocmp.Transform()); diff != "" {
		t.Errorf("common header mismatch (-want +got):\n%s", diff)
	}
	if function, err := ssepb.ReadFunctionRequestHeader(md); function != nil || err != nil {
		t.Errorf("ReadFunctionRequestHeader() = %v, %v, want nil, nil", function, err)
	}
}

// TestCallMetadataInvalidUTF8 checks that a string that is not UTF-8,
// which protobuf cannot encode, makes building call metadata fail.
func TestCallMetadataInvalidUTF8(t *testing.T) {
	common := &ssepb.CommonRequestHeader{AppId: "app\xff"}

	if md, err := ssepb.FunctionCallMetadata(1, common); err == nil {
		t.Errorf("FunctionCallMetadata(appId %q) = %v, want an error", common.AppId, md)
	}
	if md, err := ssepb.ScriptCallMetadata(&ssepb.ScriptRequestHeader{}, common); err == nil {
		t.Errorf("ScriptCallMetadata(appId %q) = %v, want an error", common.AppId, md)
	}
	script := &ssepb.ScriptRequestHeader{Script: "\xc3("}
	if md, err := ssepb.ScriptCallMetadata(script, &ssepb.CommonRequestHeader{}); err == nil {
		t.Errorf("ScriptCallMetadata(script %q) = %v, want an error", script.Script, md)
	}
}

// TestSetFunctionID checks that SetFunctionID changes the function id and
// keeps the other bytes of the header as they came: a version that is not
// valid UTF-8 and a field this package does not know.
func TestSetFunctionID(t *testing.T) {
	// Field 1 (functionId) 1000, field 2 (version) "v\xff", field 9 (not
	// in sse.proto) the varint 7.
	const sent = "\x08\xe8\x07\x12\x02v\xff\x48\x07"
	for _, id := range []int32{0, 5, -1} {
		md := metadata.Pairs(ssepb.FunctionRequestHeaderKey, sent)
		ssepb.SetFunctionID(md, id)
		raw := md.Get(ssepb.FunctionRequestHeaderKey)
		if len(raw) != 1 || !strings.HasPrefix(raw[0], sent) {
			t.Fatalf("SetFunctionID(%d) header = %q, want it to begin with the header sent, %q", id, raw, sent)
		}
		header, err := ssepb.ReadFunctionRequestHeader(md)
		if err != nil {
			t.Fatalf("SetFunctionID(%d): reading the header: %v", id, err)
		}
		if header.GetFunctionId() != id || header.GetVersion() != "v\xff" {
			t.Errorf("SetFunctionID(%d) header = id %d, version %q; want id %d, version %q", id, header.GetFunctionId(), header.GetVersion(), id, "v\xff")
		}
	}
}
