package gateway

import (
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// rowShape is what countRows learns from one BundledRows message.
type rowShape struct {
	rows int
	// columns is the number of values in the message's first row, or -1
	// when the message has no row.
	columns int
}

// countRows counts the rows of a BundledRows message, and the values of its
// first row, from the wire without decoding any value: each row is one
// length-delimited field 1, which it skips over. It reads the message in
// place, across gRPC's buffers. ok is false when the top level or the
// first row is not valid protobuf; the other rows are skipped unread. The
// gateway forwards the message either way.
func countRows(data mem.BufferSlice) (shape rowShape, ok bool) {
	r := wireReader{buffers: data}
	shape.columns = -1
	for !r.done() {
		if shape.columns >= 0 {
			rows, ok := r.skipRows()
			shape.rows += rows
			if !ok {
				return shape, false
			}
			if r.done() {
				break
			}
		}
		field, wireType, ok := r.tag()
		if !ok {
			return shape, false
		}
		if wireType != 2 {
			if !r.skipField(field, wireType) {
				return shape, false
			}
			continue
		}
		length, ok := r.varint()
		if !ok {
			return shape, false
		}
		if field == 1 {
			shape.rows++
			if shape.columns < 0 {
				columns, ok := r.countField1(length)
				if !ok {
					return shape, false
				}
				shape.columns = columns
				continue
			}
		}
		if !r.skip(length) {
			return shape, false
		}
	}
	return shape, true
}

// rowTag is the tag of a BundledRows row: field 1, length-delimited.
const rowTag = 1<<3 | 2

// skipRows skips rows from the reader's position for as long as each row's
// tag and length lie whole in the current buffer, and returns how many it
// skipped; the general walk reads whatever comes next. It is the loop that
// large bundles spend their time in, kept tight: a general walk of every
// row cost a quarter of the gateway's work on them. ok is false when a
// row runs past the message's end.
func (r *wireReader) skipRows() (rows int, ok bool) {
	chunk := r.chunk
	for len(chunk) > 1 && chunk[0] == rowTag {
		// Most rows are shorter than 128 bytes, so their length is one
		// byte. Decoding it here, without a call, takes a sixth off the
		// loop's time (BenchmarkCountRows).
		length, n := uint64(chunk[1]), 1
		if length >= 0x80 {
			if length, n = protowire.ConsumeVarint(chunk[1:]); n < 0 {
				break // the length runs into the next buffer, or is invalid
			}
		}
		rows++
		if rest := uint64(len(chunk) - 1 - n); length > rest {
			// The row goes on in the next buffers.
			r.chunk = nil
			if !r.skip(length - rest) {
				return rows, false
			}
			chunk = r.chunk
			continue
		}
		chunk = chunk[1+n+int(length):]
	}
	r.chunk = chunk
	return rows, true
}

// wireReader walks the protobuf encoding in a BufferSlice.
type wireReader struct {
	buffers mem.BufferSlice
	index   int    // current buffer
	chunk   []byte // unread part of the current buffer
}

func (r *wireReader) done() bool {
	r.fill()
	return len(r.chunk) == 0
}

// fill moves to the next non-empty buffer when the current one is read.
func (r *wireReader) fill() {
	for len(r.chunk) == 0 && r.index < len(r.buffers) {
		r.chunk = r.buffers[r.index].ReadOnlyData()
		r.index++
	}
}

func (r *wireReader) readByte() (byte, bool) {
	r.fill()
	if len(r.chunk) == 0 {
		return 0, false
	}
	b := r.chunk[0]
	r.chunk = r.chunk[1:]
	return b, true
}

func (r *wireReader) varint() (uint64, bool) {
	// Fast path: the whole varint in the current buffer, as nearly always.
	if value, n := protowire.ConsumeVarint(r.chunk); n > 0 {
		r.chunk = r.chunk[n:]
		return value, true
	}
	// Slow path: the varint spans buffers, or the bytes are invalid.
	var value uint64
	for shift := uint(0); shift < 64; shift += 7 {
		b, ok := r.readByte()
		if !ok {
			return 0, false
		}
		value |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return value, true
		}
	}
	return 0, false
}

func (r *wireReader) tag() (field uint64, wireType uint64, ok bool) {
	tag, ok := r.varint()
	if !ok || tag>>3 == 0 {
		return 0, 0, false
	}
	return tag >> 3, tag & 7, true
}

func (r *wireReader) skip(n uint64) bool {
	for n > 0 {
		r.fill()
		if len(r.chunk) == 0 {
			return false
		}
		step := min(n, uint64(len(r.chunk)))
		r.chunk = r.chunk[step:]
		n -= step
	}
	return true
}

// skipField skips the value of a field of a wire type other than 2. The
// SSE protocol has no groups, but protobuf parsers accept them as unknown
// fields, and so does this reader.
func (r *wireReader) skipField(field, wireType uint64) bool {
	switch wireType {
	case 0:
		_, ok := r.varint()
		return ok
	case 1:
		return r.skip(8)
	case 5:
		return r.skip(4)
	case 3:
		return r.skipGroup(field, 1)
	}
	return false // an end of group without its start, or wire types 6 and 7
}

// skipGroup skips the fields of a group up to its end-group tag. depth
// counts the groups it is in: past protowire.DefaultRecursionLimit, the
// limit proto.Unmarshal applies too, the message is invalid, so that a
// message of nested groups cannot exhaust the stack.
func (r *wireReader) skipGroup(field uint64, depth int) bool {
	if depth > protowire.DefaultRecursionLimit {
		return false
	}
	for {
		inner, wireType, ok := r.tag()
		if !ok {
			return false
		}
		switch wireType {
		case 4:
			return inner == field
		case 2:
			n, ok := r.varint()
			if !ok || !r.skip(n) {
				return false
			}
		case 3:
			if !r.skipGroup(inner, depth+1) {
				return false
			}
		default:
			if !r.skipField(inner, wireType) {
				return false
			}
		}
	}
}

// countField1 reads an embedded message of length bytes and counts its
// occurrences of field 1, the values of a Row.
func (r *wireReader) countField1(length uint64) (int, bool) {
	count := 0
	for length > 0 {
		before := r.remaining()
		field, wireType, ok := r.tag()
		if !ok {
			return 0, false
		}
		if wireType == 2 {
			n, ok := r.varint()
			if !ok || !r.skip(n) {
				return 0, false
			}
		} else if !r.skipField(field, wireType) {
			return 0, false
		}
		if field == 1 && wireType == 2 {
			count++ // a Dual: field 1, an embedded message
		}
		used := uint64(before - r.remaining())
		if used > length {
			return 0, false
		}
		length -= used
	}
	return count, true
}

// remaining returns how many bytes are left to read.
func (r *wireReader) remaining() int {
	n := len(r.chunk)
	for _, buffer := range r.buffers[r.index:] {
		n += buffer.Len()
	}
	return n
}
