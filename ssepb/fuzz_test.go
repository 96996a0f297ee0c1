package ssepb_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ssegw/ssegw/ssepb"
)

// FuzzReadHeaders feeds arbitrary bytes to the header decoders: they must
// never panic, and where Go's protobuf decodes the bytes too, both agree.
func FuzzReadHeaders(f *testing.F) {
	for _, header := range []proto.Message{
		&ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: 1000},
		&ssepb.FunctionRequestHeader{FunctionId: 3, Version: "1"},
		&ssepb.ScriptRequestHeader{Script: "args[0] * 2", FunctionType: ssepb.FunctionType_AGGREGATION,
			Params: []*ssepb.Parameter{{Name: "a", DataType: ssepb.DataType_DUAL}}},
		&ssepb.TableDescription{Name: "t", Fields: []*ssepb.FieldDescription{{Name: "x", Tags: []string{"$numeric"}}}},
	} {
		b, err := proto.Marshal(header)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x02, 0xff, 0xfe})
	f.Add([]byte{0x0a, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		checks := []struct {
			key    string
			read   func(metadata.MD) (proto.Message, error)
			target func() proto.Message
		}{
			{ssepb.CommonRequestHeaderKey, func(md metadata.MD) (proto.Message, error) { return ssepb.ReadCommonRequestHeader(md) },
				func() proto.Message { return &ssepb.CommonRequestHeader{} }},
			{ssepb.FunctionRequestHeaderKey, func(md metadata.MD) (proto.Message, error) { return ssepb.ReadFunctionRequestHeader(md) },
				func() proto.Message { return &ssepb.FunctionRequestHeader{} }},
			{ssepb.ScriptRequestHeaderKey, func(md metadata.MD) (proto.Message, error) { return ssepb.ReadScriptRequestHeader(md) },
				func() proto.Message { return &ssepb.ScriptRequestHeader{} }},
			{ssepb.TableDescriptionKey, func(md metadata.MD) (proto.Message, error) { return ssepb.ReadTableDescription(md) },
				func() proto.Message { return &ssepb.TableDescription{} }},
		}
		for _, check := range checks {
			got, err := check.read(metadata.Pairs(check.key, string(b)))
			want := check.target()
			if proto.Unmarshal(b, want) != nil {
				continue // invalid for Go's protobuf too, or invalid UTF-8
			}
			if err != nil {
				t.Fatalf("%s: decoding % x failed (%v) where proto.Unmarshal succeeds", check.key, b, err)
			}
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Fatalf("%s: decoding % x differs from proto.Unmarshal (-want +got):\n%s", check.key, b, diff)
			}
		}
	})
}
