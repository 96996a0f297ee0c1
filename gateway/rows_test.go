package gateway

import (
	"bytes"
	"context"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/ssepb"
)

// rowsBundle returns a bundle whose row i contains columns[i] numeric
// values.
func rowsBundle(columns ...int) *ssepb.BundledRows {
	bundle := &ssepb.BundledRows{}
	for i, n := range columns {
		row := &ssepb.Row{}
		for j := range n {
			row.Duals = append(row.Duals, &ssepb.Dual{NumData: float64(i*100 + j)})
		}
		bundle.Rows = append(bundle.Rows, row)
	}
	return bundle
}

// rowsEncode returns the wire encoding of message.
func rowsEncode(t testing.TB, message proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(message)
	if err != nil {
		t.Fatalf("proto.Marshal(%v): %v", message, err)
	}
	return b
}

// rowsOneBuffer returns data as a BufferSlice of one buffer, as gRPC
// delivers a small message.
func rowsOneBuffer(data []byte) mem.BufferSlice {
	return mem.BufferSlice{mem.SliceBuffer(data)}
}

// rowsSplit returns data as a BufferSlice cut at the given offsets, which
// must be ascending. An offset repeated yields an empty buffer.
func rowsSplit(data []byte, offsets ...int) mem.BufferSlice {
	var buffers mem.BufferSlice
	start := 0
	for _, offset := range offsets {
		buffers = append(buffers, mem.SliceBuffer(data[start:offset]))
		start = offset
	}
	return append(buffers, mem.SliceBuffer(data[start:]))
}

// rowsWithUnknownFields returns a bundle of two rows, of two and one
// values, with fields that the SSE messages do not define in the bundle,
// in the first row and in a value. They have the varint, fixed64,
// length-delimited and fixed32 wire types.
func rowsWithUnknownFields() []byte {
	var dual []byte
	dual = protowire.AppendTag(dual, 1, protowire.Fixed64Type)
	dual = protowire.AppendFixed64(dual, math.Float64bits(2.5))
	dual = protowire.AppendTag(dual, 9, protowire.BytesType)
	dual = protowire.AppendString(dual, "unknown in a value")

	var first []byte
	first = protowire.AppendTag(first, 7, protowire.VarintType)
	first = protowire.AppendVarint(first, 300)
	first = protowire.AppendTag(first, 1, protowire.BytesType)
	first = protowire.AppendBytes(first, dual)
	first = protowire.AppendTag(first, 8, protowire.BytesType)
	first = protowire.AppendString(first, "unknown in a row")
	first = protowire.AppendTag(first, 1, protowire.BytesType)
	first = protowire.AppendBytes(first, nil)
	first = protowire.AppendTag(first, 6, protowire.Fixed32Type)
	first = protowire.AppendFixed32(first, 7)

	var second []byte
	second = protowire.AppendTag(second, 1, protowire.BytesType)
	second = protowire.AppendBytes(second, dual)

	var bundle []byte
	bundle = protowire.AppendTag(bundle, 2, protowire.VarintType)
	bundle = protowire.AppendVarint(bundle, 1<<40)
	bundle = protowire.AppendTag(bundle, 1, protowire.BytesType)
	bundle = protowire.AppendBytes(bundle, first)
	bundle = protowire.AppendTag(bundle, 3, protowire.Fixed64Type)
	bundle = protowire.AppendFixed64(bundle, 1)
	bundle = protowire.AppendTag(bundle, 4, protowire.BytesType)
	bundle = protowire.AppendBytes(bundle, []byte{0x0a, 0x00, 0x0a, 0x00})
	bundle = protowire.AppendTag(bundle, 5, protowire.Fixed32Type)
	bundle = protowire.AppendFixed32(bundle, 1)
	bundle = protowire.AppendTag(bundle, 1, protowire.BytesType)
	bundle = protowire.AppendBytes(bundle, second)
	// A field number above 15 takes a tag of two bytes.
	bundle = protowire.AppendTag(bundle, 1000, protowire.VarintType)
	bundle = protowire.AppendVarint(bundle, 1)
	return bundle
}

// rowsCase is an encoding of BundledRows with the shape countRows must
// find in it.
type rowsCase struct {
	name        string
	data        []byte
	wantRows    int
	wantColumns int
}

// rowsValidCases returns valid encodings of BundledRows of every shape.
func rowsValidCases(t testing.TB) []rowsCase {
	t.Helper()
	long := strings.Repeat("long text over 127 bytes, so that its length takes two bytes; ", 4)
	return []rowsCase{
		{name: "no bytes", data: nil, wantRows: 0, wantColumns: -1},
		{name: "one row", data: rowsEncode(t, rowsBundle(2)), wantRows: 1, wantColumns: 2},
		{name: "many rows", data: rowsEncode(t, rowsBundle(slices.Repeat([]int{3}, 1000)...)), wantRows: 1000, wantColumns: 3},
		{name: "empty rows", data: rowsEncode(t, rowsBundle(0, 0, 0)), wantRows: 3, wantColumns: 0},
		{name: "first row empty", data: rowsEncode(t, rowsBundle(0, 4)), wantRows: 2, wantColumns: 0},
		{name: "first row decides columns", data: rowsEncode(t, rowsBundle(2, 5, 1)), wantRows: 3, wantColumns: 2},
		{name: "many columns", data: rowsEncode(t, rowsBundle(200)), wantRows: 1, wantColumns: 200},
		{
			name:     "empty values",
			data:     rowsEncode(t, &ssepb.BundledRows{Rows: []*ssepb.Row{{Duals: []*ssepb.Dual{{}, {}, {}}}}}),
			wantRows: 1, wantColumns: 3,
		},
		{
			name: "strings",
			data: rowsEncode(t, &ssepb.BundledRows{Rows: []*ssepb.Row{
				{Duals: []*ssepb.Dual{{StrData: "a"}, {StrData: "Zürich, 東京"}}},
				{Duals: []*ssepb.Dual{{StrData: long}, {StrData: ""}}},
				{Duals: []*ssepb.Dual{{StrData: long + long + long}}},
			}}),
			wantRows: 3, wantColumns: 2,
		},
		{
			name: "NaN, infinities and both parts of a dual",
			data: rowsEncode(t, &ssepb.BundledRows{Rows: []*ssepb.Row{
				{Duals: []*ssepb.Dual{{NumData: math.NaN()}, {NumData: math.Inf(1)}, {NumData: math.Inf(-1)}, {NumData: math.Copysign(0, -1)}}},
				{Duals: []*ssepb.Dual{{NumData: 1.5, StrData: "1.5"}}},
			}}),
			wantRows: 2, wantColumns: 4,
		},
		{name: "unknown fields skipped", data: rowsWithUnknownFields(), wantRows: 2, wantColumns: 2},
	}
}

// TestCountRows checks the row count and the first row's column count
// that countRows reads from encodings of BundledRows.
func TestCountRows(t *testing.T) {
	for _, tt := range rowsValidCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			shape, ok := countRows(rowsOneBuffer(tt.data))
			if !ok {
				t.Fatalf("countRows(% x) ok = false, want true", rowsPrefix(tt.data))
			}
			if shape.rows != tt.wantRows {
				t.Errorf("countRows(% x) rows = %d, want %d", rowsPrefix(tt.data), shape.rows, tt.wantRows)
			}
			if shape.columns != tt.wantColumns {
				t.Errorf("countRows(% x) columns = %d, want %d", rowsPrefix(tt.data), shape.columns, tt.wantColumns)
			}
		})
	}
}

// rowsPrefix returns the start of data, to keep failure messages short.
func rowsPrefix(data []byte) []byte {
	return data[:min(len(data), 24)]
}

// TestCountRowsAcrossBuffers checks that countRows finds the same shape
// whatever the byte boundaries between gRPC's buffers: cut once at every
// offset, cut twice at every pair of offsets, one byte per buffer, and with
// empty buffers in between.
func TestCountRowsAcrossBuffers(t *testing.T) {
	messages := []rowsCase{
		{name: "numbers", data: rowsEncode(t, rowsBundle(2, 1, 3)), wantRows: 3, wantColumns: 2},
		{name: "unknown fields", data: rowsWithUnknownFields(), wantRows: 2, wantColumns: 2},
		{
			name: "text with two-byte lengths",
			data: rowsEncode(t, &ssepb.BundledRows{Rows: []*ssepb.Row{
				{Duals: []*ssepb.Dual{{StrData: strings.Repeat("x", 150)}, {NumData: math.NaN()}}},
				{Duals: []*ssepb.Dual{{StrData: "y"}}},
			}}),
			wantRows: 2, wantColumns: 2,
		},
	}
	for _, m := range messages {
		t.Run(m.name, func(t *testing.T) {
			check := func(buffers mem.BufferSlice, description string) {
				t.Helper()
				shape, ok := countRows(buffers)
				if !ok {
					t.Errorf("countRows(%s) ok = false, want true", description)
					return
				}
				if shape.rows != m.wantRows {
					t.Errorf("countRows(%s) rows = %d, want %d", description, shape.rows, m.wantRows)
				}
				if shape.columns != m.wantColumns {
					t.Errorf("countRows(%s) columns = %d, want %d", description, shape.columns, m.wantColumns)
				}
			}

			// Cut once.
			for i := 0; i <= len(m.data); i++ {
				check(rowsSplit(m.data, i), "cut at "+strconv.Itoa(i))
			}

			// Cut twice, including empty middle buffers when i == j.
			for i := 0; i <= len(m.data); i++ {
				for j := i; j <= len(m.data); j++ {
					check(rowsSplit(m.data, i, j), "cut at "+strconv.Itoa(i)+" and "+strconv.Itoa(j))
				}
			}

			// One byte per buffer, then the same with an empty buffer
			// after every byte.
			var single, spaced mem.BufferSlice
			for i := range m.data {
				single = append(single, mem.SliceBuffer(m.data[i:i+1]))
				spaced = append(spaced, mem.SliceBuffer(m.data[i:i+1]), mem.SliceBuffer(nil))
			}
			check(single, "one byte per buffer")
			check(append(mem.BufferSlice{mem.SliceBuffer(nil)}, spaced...), "empty buffers around every byte")
		})
	}
}

// TestCountRowsInvalid checks that countRows reports bytes that are not a
// valid BundledRows encoding with ok false, in one buffer and cut after
// every byte.
func TestCountRowsInvalid(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{name: "row with a truncated tag", data: []byte{0x0a, 0x01, 0xff}},
		{name: "tag without its length", data: []byte{0x0a}},
		{name: "row longer than the message", data: []byte{0x0a, 0x05, 0x0a, 0x00}},
		{name: "truncated tag", data: []byte{0xff}},
		{name: "field number 0", data: []byte{0x00, 0x01}},
		{name: "group never ended", data: []byte{0x43, 0x08, 0x01}},
		{name: "end group without a start", data: []byte{0x44}},
		{name: "wire type 6", data: []byte{0x0e}},
		{name: "wire type 7", data: []byte{0x0f}},
		{name: "truncated fixed64", data: []byte{0x11, 0x01, 0x02, 0x03}},
		{name: "truncated fixed32", data: []byte{0x15, 0x01}},
		{name: "truncated varint", data: []byte{0x10, 0x80}},
		{name: "varint of 11 bytes", data: []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{name: "value overruns its row", data: []byte{0x0a, 0x02, 0x0a, 0x05, 0, 0, 0, 0, 0}},
		{name: "value with a truncated length", data: []byte{0x0a, 0x02, 0x0a, 0x80}},
		{name: "value tag field number 0", data: []byte{0x0a, 0x02, 0x00, 0x00}},
		{name: "valid row then garbage", data: append(rowsEncode(t, rowsBundle(1)), 0x0a, 0x03, 0x01)},
		{name: "valid rows then a truncated tag", data: append(rowsEncode(t, rowsBundle(2, 2)), 0x80)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if shape, ok := countRows(rowsOneBuffer(tt.data)); ok {
				t.Errorf("countRows(% x) = %+v, true, want ok false", tt.data, shape)
			}
			for i := range tt.data {
				if shape, ok := countRows(rowsSplit(tt.data, i)); ok {
					t.Errorf("countRows(% x cut at %d) = %+v, true, want ok false", tt.data, i, shape)
				}
			}
		})
	}
}

// TestCountRowsMatchesUnmarshal checks that countRows finds the rows and
// values that proto.Unmarshal decodes from valid encodings that SSE
// messages do not use. A field 1 of a row is a value only when it is
// length-delimited, because proto.Unmarshal keeps a field 1 of another
// wire type as an unknown field. An unknown group is a valid field to
// skip.
func TestCountRowsMatchesUnmarshal(t *testing.T) {
	row := func(content ...byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), content)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{name: "value as a varint", data: row(0x08, 0x01)},
		{name: "value as a fixed64", data: row(0x09, 0, 0, 0, 0, 0, 0, 0, 0)},
		{name: "value as a fixed32", data: row(0x0d, 0, 0, 0, 0)},
		{name: "varint value before a value", data: row(0x08, 0x01, 0x0a, 0x00)},
		{name: "empty group in the bundle", data: []byte{0x43, 0x44}},
		{name: "group with fields in the bundle", data: append([]byte{0x43, 0x08, 0x01, 0x12, 0x01, 'x', 0x44}, row(0x0a, 0x00)...)},
		{name: "group in a row", data: row(0x0a, 0x00, 0x1b, 0x1c, 0x0a, 0x00)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundle := &ssepb.BundledRows{}
			if err := proto.Unmarshal(tt.data, bundle); err != nil {
				t.Fatalf("proto.Unmarshal(% x): %v", tt.data, err)
			}
			wantColumns := -1
			if len(bundle.GetRows()) > 0 {
				wantColumns = len(bundle.GetRows()[0].GetDuals())
			}

			shape, ok := countRows(rowsOneBuffer(tt.data))
			if !ok {
				t.Fatalf("countRows(% x) ok = false, want true", tt.data)
			}
			if shape.rows != len(bundle.GetRows()) {
				t.Errorf("countRows(% x) rows = %d, want %d", tt.data, shape.rows, len(bundle.GetRows()))
			}
			if shape.columns != wantColumns {
				t.Errorf("countRows(% x) columns = %d, want %d", tt.data, shape.columns, wantColumns)
			}
		})
	}
}

// deepGroupsChild is the environment variable under which
// TestCountRowsDeepGroups runs its check in a child process.
const deepGroupsChild = "SSEGW_TEST_DEEP_GROUPS_CHILD"

// TestCountRowsDeepGroups checks that countRows survives a message of 8
// MiB of nested group starts, under the default limits.max_message_size of
// 16 MiB, and reports it invalid as proto.Unmarshal does. Skipping each
// group by recursion overflows Go's maximum goroutine stack of 1 GB on
// 64-bit systems there. That is a fatal error that stops the whole
// gateway, so the check runs in a child process.
func TestCountRowsDeepGroups(t *testing.T) {
	data := bytes.Repeat([]byte{0x0b}, 8<<20)
	if os.Getenv(deepGroupsChild) == "1" {
		if shape, ok := countRows(rowsOneBuffer(data)); ok {
			t.Errorf("countRows(8 MiB of 0x0b) = %+v, true, want ok false", shape)
		}
		return
	}
	if err := proto.Unmarshal(data, &ssepb.BundledRows{}); err == nil {
		t.Fatal("proto.Unmarshal(8 MiB of 0x0b) succeeded, want an error")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCountRowsDeepGroups$", "-test.count=1")
	cmd.Env = append(os.Environ(), deepGroupsChild+"=1")
	output, err := cmd.CombinedOutput()
	if err != nil {
		lines := strings.SplitN(string(output), "\n", 6)
		t.Errorf("countRows(8 MiB of 0x0b) in a child process: %v; output starts:\n%s", err, strings.Join(lines[:min(len(lines), 5)], "\n"))
	}
}

// TestCountRowsAllocations checks that counting rows allocates nothing,
// since it runs on every message in both directions.
func TestCountRowsAllocations(t *testing.T) {
	data := rowsSplit(rowsEncode(t, rowsBundle(slices.Repeat([]int{2}, 50)...)), 7, 300)
	allocations := testing.AllocsPerRun(100, func() {
		if _, ok := countRows(data); !ok {
			t.Fatal("countRows ok = false, want true")
		}
	})
	if allocations != 0 {
		t.Errorf("countRows allocations per run = %v, want 0", allocations)
	}
}

// FuzzCountRows checks that countRows never panics, finds the same shape
// however the message is cut into buffers, and agrees with proto.Unmarshal
// on every input that proto.Unmarshal accepts as a BundledRows.
func FuzzCountRows(f *testing.F) {
	for _, tt := range rowsValidCases(f) {
		f.Add(tt.data)
	}
	f.Add([]byte{0x0a, 0x01, 0xff})

	f.Fuzz(func(t *testing.T, data []byte) {
		shape, ok := countRows(rowsOneBuffer(data))

		// The same bytes cut in thirds, and one byte per buffer.
		third := len(data) / 3
		cuts := []mem.BufferSlice{rowsSplit(data, third, 2*third)}
		if len(data) <= 4096 {
			var single mem.BufferSlice
			for i := range data {
				single = append(single, mem.SliceBuffer(data[i:i+1]))
			}
			cuts = append(cuts, single)
		}
		for i, cut := range cuts {
			cutShape, cutOK := countRows(cut)
			if cutOK != ok || cutShape != shape {
				t.Errorf("countRows(% x in %d buffers, cut %d) = %+v, %v, want %+v, %v as in one buffer",
					rowsPrefix(data), len(cut), i, cutShape, cutOK, shape, ok)
			}
		}

		// proto.Unmarshal also checks every value and the UTF-8 of every
		// string, which countRows skips, so only its successes are compared.
		bundle := &ssepb.BundledRows{}
		if proto.Unmarshal(data, bundle) != nil {
			return
		}
		wantColumns := -1
		if len(bundle.GetRows()) > 0 {
			wantColumns = len(bundle.GetRows()[0].GetDuals())
		}
		if !ok {
			t.Fatalf("countRows(% x) ok = false, want true: proto.Unmarshal decodes it", data)
		}
		if shape.rows != len(bundle.GetRows()) {
			t.Errorf("countRows(% x) rows = %d, want %d as proto.Unmarshal", data, shape.rows, len(bundle.GetRows()))
		}
		if shape.columns != wantColumns {
			t.Errorf("countRows(% x) columns = %d, want %d as proto.Unmarshal", data, shape.columns, wantColumns)
		}
	})
}

// BenchmarkCountRows measures countRows on a bundle of 2,000 rows of three
// numeric values, in one buffer and in buffers of 16 KiB, the default
// HTTP/2 frame size.
func BenchmarkCountRows(b *testing.B) {
	data := rowsEncode(b, rowsBundle(slices.Repeat([]int{3}, 2000)...))
	var chunked mem.BufferSlice
	for start := 0; start < len(data); start += 16 << 10 {
		chunked = append(chunked, mem.SliceBuffer(data[start:min(start+16<<10, len(data))]))
	}
	benchmarks := []struct {
		name    string
		buffers mem.BufferSlice
	}{
		{name: "one buffer", buffers: rowsOneBuffer(data)},
		{name: "16KiB buffers", buffers: chunked},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				shape, ok := countRows(bm.buffers)
				if !ok || shape.rows != 2000 {
					b.Fatalf("countRows = %+v, %v, want 2000 rows, true", shape, ok)
				}
			}
		})
	}
}
