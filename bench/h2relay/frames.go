package h2relay

import "golang.org/x/net/http2"

// The append functions encode one complete frame each, at the end of b,
// so that frames go straight into a connection's output buffer without a
// copy or an allocation of their own. x/net/http2's Framer writes to an
// io.Writer instead, one frame per call.

const frameHeaderLen = 9

func appendFrameHeader(b []byte, length int, frameType http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b,
		byte(length>>16), byte(length>>8), byte(length),
		byte(frameType), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

func appendData(b []byte, id uint32, data []byte, end bool) []byte {
	var flags http2.Flags
	if end {
		flags = http2.FlagDataEndStream
	}
	b = appendFrameHeader(b, len(data), http2.FrameData, flags, id)
	return append(b, data...)
}

func appendSettings(b []byte, settings ...http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, s := range settings {
		b = append(b, byte(s.ID>>8), byte(s.ID), byte(s.Val>>24), byte(s.Val>>16), byte(s.Val>>8), byte(s.Val))
	}
	return b
}

func appendSettingsAck(b []byte) []byte {
	return appendFrameHeader(b, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
}

func appendWindowUpdate(b []byte, id uint32, increment uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return append(b, byte(increment>>24)&0x7f, byte(increment>>16), byte(increment>>8), byte(increment))
}

func appendRSTStream(b []byte, id uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, id)
	return append(b, byte(code>>24), byte(code>>16), byte(code>>8), byte(code))
}

func appendPingAck(b []byte, data [8]byte) []byte {
	b = appendFrameHeader(b, 8, http2.FramePing, http2.FlagPingAck, 0)
	return append(b, data[:]...)
}

func appendGoAway(b []byte, lastStreamID uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 8, http2.FrameGoAway, 0, 0)
	return append(b,
		byte(lastStreamID>>24)&0x7f, byte(lastStreamID>>16), byte(lastStreamID>>8), byte(lastStreamID),
		byte(code>>24), byte(code>>16), byte(code>>8), byte(code))
}

// appendHeaderBlock appends an encoded header block as one HEADERS frame
// and as many CONTINUATION frames as maxFrame requires.
func appendHeaderBlock(b []byte, id uint32, block []byte, end bool, maxFrame int) []byte {
	frameType := http2.FrameHeaders
	for {
		n := min(len(block), maxFrame)
		chunk := block[:n]
		block = block[n:]

		var flags http2.Flags
		if len(block) == 0 {
			flags |= http2.FlagHeadersEndHeaders // the same bit as CONTINUATION's END_HEADERS
		}
		if frameType == http2.FrameHeaders && end {
			flags |= http2.FlagHeadersEndStream
		}
		b = appendFrameHeader(b, n, frameType, flags, id)
		b = append(b, chunk...)
		if len(block) == 0 {
			return b
		}
		frameType = http2.FrameContinuation
	}
}
