package h2relay

import (
	"slices"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one half of a relayed call: the stream on the client
// connection or the one on the backend connection. peer is the other half.
// conn and peer are immutable after creation, and id is set once: a backend
// stream has ID 0 while it waits to open. The other fields are guarded by
// conn.mu.
type stream struct {
	conn *conn
	peer *stream
	id   uint32

	removed    bool
	sendClosed bool // the relay sent END_STREAM or RST_STREAM on this stream
	recvClosed bool // the peer sent END_STREAM or RST_STREAM, or the relay reset the stream

	// Send side: what goes out on conn for this stream.
	sendWindow     int64
	pending        []byte // DATA payload that waits for window, from pendingOffset on
	pendingOffset  int
	endQueued      bool                // END_STREAM follows pending, in trailers or an empty DATA frame
	trailers       []hpack.HeaderField // a header block that ends the stream, after pending
	requestHeaders []hpack.HeaderField // of a backend stream that waits to open
	connBlocked    bool                // in conn.blocked
	// resetAfterEnd is set when the other half ended after a complete
	// response: once END_STREAM is out, the stream is reset with NO_ERROR
	// if the peer is still sending, as grpc-go servers do.
	resetAfterEnd bool

	// Receive side: what the peer sends on conn for this stream.
	recvWindow int64
	unacked    int64
}

func (st *stream) pendingLen() int { return len(st.pending) - st.pendingOffset }

// queue appends data to pending. It moves the unsent bytes to the front
// first when that keeps the buffer from growing.
func (st *stream) queue(data []byte) {
	if st.pendingOffset > 0 && (st.pendingOffset >= len(st.pending)/2 || len(st.pending)+len(data) > cap(st.pending)) {
		n := copy(st.pending, st.pending[st.pendingOffset:])
		st.pending = st.pending[:n]
		st.pendingOffset = 0
	}
	st.pending = append(st.pending, data...)
}

// onData relays a DATA frame.
func (c *conn) onData(w *worker, f *http2.DataFrame) error {
	data := f.Data()
	length := int64(f.Length) // with padding, which counts for flow control
	end := f.StreamEnded()

	// Charge the receive windows.
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return nil
	}
	c.recvWindow -= length
	if c.recvWindow < 0 {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	st := c.streams[f.StreamID]
	if st == nil {
		// The stream has ended: only the connection's window counts.
		c.creditLocked(nil, length)
		w.unlock(c)
		return nil
	}
	st.recvWindow -= length
	if st.recvClosed || st.recvWindow < c.minStreamRecvWindowLocked() {
		code := http2.ErrCodeFlowControl
		if st.recvClosed {
			code = http2.ErrCodeStreamClosed
		}
		c.creditLocked(nil, length)
		c.resetLocked(w, st, code)
		w.resetPeer(st, http2.ErrCodeCancel)
		w.unlock(c)
		w.apply()
		return nil
	}
	if end {
		st.recvClosed = true
		c.removeIfClosedLocked(w, st)
	}
	w.unlock(c)

	// Relay, and return at once the window of what left or was dropped,
	// and of the padding.
	released := w.sendData(st.peer, data, end)
	w.credit(st, released+length-int64(len(data)))
	w.apply()
	return nil
}

// sendData writes data on dst as far as the windows allow and queues the
// rest. It returns how many bytes were written or dropped, whose window
// the caller returns to the sender. flushLocked and removeLocked return the
// window of queued bytes.
func (w *worker) sendData(dst *stream, data []byte, end bool) int64 {
	c := dst.conn
	c.mu.Lock()
	if dst.removed || c.dead || dst.sendClosed || dst.endQueued {
		c.mu.Unlock()
		return int64(len(data)) // the stream has ended: drop the data
	}

	written := 0
	if dst.id != 0 && dst.pendingLen() == 0 {
		var ended bool
		written, ended = c.writeDataLocked(dst, data, end)
		if ended {
			c.endSentLocked(w, dst)
			w.unlock(c)
			return int64(written)
		}
	}
	if written < len(data) || end {
		dst.queue(data[written:])
		dst.endQueued = end
		// Register for the connection window if that is what blocks.
		c.flushLocked(w, dst)
	}
	w.unlock(c)
	return int64(written)
}

// writeDataLocked writes DATA frames of data on st as far as the stream's
// and the connection's send windows allow, and returns how many bytes it
// wrote. With end, the frame that completes data carries END_STREAM, and
// ended reports that it was written. The caller then calls endSentLocked.
func (c *conn) writeDataLocked(st *stream, data []byte, end bool) (written int, ended bool) {
	for written < len(data) {
		n := int(min(int64(len(data)-written), int64(c.peerMaxFrame), st.sendWindow, c.sendWindow))
		if n <= 0 {
			return written, false
		}
		last := end && written+n == len(data)
		c.wbuf = appendData(c.wbuf, st.id, data[written:written+n], last)
		written += n
		st.sendWindow -= int64(n)
		c.sendWindow -= int64(n)
	}
	if end && len(data) == 0 {
		c.wbuf = appendData(c.wbuf, st.id, nil, true)
	}
	return written, end
}

// onHeaders relays a header block: a new call from a client, response
// headers, or trailers.
func (c *conn) onHeaders(w *worker, f *http2.MetaHeadersFrame) {
	id := f.StreamID
	end := f.StreamEnded()

	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	st := c.streams[id]
	if st == nil {
		// A new call, unless the stream has ended or is not the client's.
		if !c.client || id%2 == 0 || id <= c.lastPeerStreamID {
			c.mu.Unlock()
			return
		}
		c.lastPeerStreamID = id
		if f.Truncated {
			c.wbuf = appendRSTStream(c.wbuf, id, http2.ErrCodeRefusedStream)
			w.unlock(c)
			return
		}
		c.mu.Unlock()
		c.newStream(w, id, f.Fields, end)
		return
	}
	if st.recvClosed || f.Truncated {
		c.resetLocked(w, st, http2.ErrCodeProtocol)
		w.resetPeer(st, http2.ErrCodeCancel)
		w.unlock(c)
		w.apply()
		return
	}
	if end {
		st.recvClosed = true
		c.removeIfClosedLocked(w, st)
	}
	w.unlock(c)

	w.sendHeaders(st.peer, f.Fields, end)
	w.apply()
}

// newStream relays a client's new call, on a new stream of a backend
// connection.
func (c *conn) newStream(w *worker, id uint32, fields []hpack.HeaderField, end bool) {
	backend := c.relay.pickBackend()

	// Register the client's half, or refuse the call.
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	if backend == nil {
		c.wbuf = appendRSTStream(c.wbuf, id, http2.ErrCodeRefusedStream)
		w.unlock(c)
		return
	}
	clientHalf := &stream{conn: c, id: id, sendWindow: c.peerInitWindow, recvWindow: c.relay.streamWindow, recvClosed: end}
	backendHalf := &stream{conn: backend, peer: clientHalf, recvWindow: c.relay.streamWindow, requestHeaders: fields, endQueued: end}
	clientHalf.peer = backendHalf
	c.streams[id] = clientHalf
	c.relay.noteStreamsChanged()
	w.unlock(c)

	// Open the backend half, or queue it until the backend allows another
	// stream.
	//
	// NOTE: request data of a queued stream holds the client connection's
	// window until the stream opens, so enough queued calls can stall the
	// calls that run on the same client connection.
	backend.mu.Lock()
	switch {
	case backendHalf.removed:
		// The client connection failed meanwhile.
	case backend.dead || backend.draining:
		w.resetPeer(backendHalf, http2.ErrCodeRefusedStream)
	case backend.settingsReceived && len(backend.waiting) == 0 && backend.active < backend.peerMaxStreams:
		backend.openLocked(w, backendHalf)
	default:
		backend.waiting = append(backend.waiting, backendHalf)
		c.relay.noteStreamsChanged()
	}
	backend.updateLoadLocked()
	w.unlock(backend)
	w.apply()
}

// sendHeaders writes a header block on dst, or queues it behind dst's
// queued data, because trailers must not overtake DATA.
func (w *worker) sendHeaders(dst *stream, fields []hpack.HeaderField, end bool) {
	c := dst.conn
	c.mu.Lock()
	switch {
	case dst.removed || c.dead || dst.sendClosed || dst.endQueued:
		// The stream has ended.
	case dst.id != 0 && dst.pendingLen() == 0:
		c.writeHeadersLocked(dst.id, fields, end)
		if end {
			c.endSentLocked(w, dst)
		}
	case end:
		dst.trailers = fields
		dst.endQueued = true
	default:
		// Only trailers may follow DATA, and trailers end the stream
		// (RFC 9113, section 8.1), so the sender broke the protocol.
		c.resetLocked(w, dst, http2.ErrCodeCancel)
		w.resetPeer(dst, http2.ErrCodeProtocol)
	}
	w.unlock(c)
}

// flushLocked sends st's queued data, then its trailers or END_STREAM, as
// far as the windows allow. A stream that waits for the connection's
// window joins c.blocked.
func (c *conn) flushLocked(w *worker, st *stream) {
	if st.id == 0 || st.removed || st.sendClosed || c.dead {
		return
	}
	if st.pendingLen() == 0 && !st.endQueued {
		return
	}

	written, ended := c.writeDataLocked(st, st.pending[st.pendingOffset:], st.endQueued && st.trailers == nil)
	st.pendingOffset += written
	if written > 0 {
		w.credit(st.peer, int64(written))
	}
	if ended {
		c.endSentLocked(w, st)
		return
	}
	if st.pendingLen() > 0 {
		if st.sendWindow > 0 && !st.connBlocked {
			st.connBlocked = true
			c.blocked = append(c.blocked, st)
		}
		return
	}

	st.pending, st.pendingOffset = st.pending[:0], 0
	if st.trailers != nil {
		c.writeHeadersLocked(st.id, st.trailers, true)
		st.trailers = nil
		c.endSentLocked(w, st)
	}
}

// endSentLocked records that END_STREAM went out on st.
func (c *conn) endSentLocked(w *worker, st *stream) {
	st.sendClosed = true
	st.endQueued = false
	if st.resetAfterEnd && !st.recvClosed {
		c.wbuf = appendRSTStream(c.wbuf, st.id, http2.ErrCodeNo)
		st.recvClosed = true
	}
	c.removeIfClosedLocked(w, st)
}

func (c *conn) removeIfClosedLocked(w *worker, st *stream) {
	if st.sendClosed && st.recvClosed {
		c.removeLocked(w, st)
	}
}

// removeLocked removes st from c. It drops st's queued data and returns
// its window to the sender.
func (c *conn) removeLocked(w *worker, st *stream) {
	if st.removed {
		return
	}
	st.removed = true
	if n := st.pendingLen(); n > 0 {
		w.credit(st.peer, int64(n))
	}
	st.pending, st.pendingOffset, st.trailers, st.requestHeaders = nil, 0, nil, nil

	if st.id == 0 {
		if i := slices.Index(c.waiting, st); i >= 0 {
			c.waiting = slices.Delete(c.waiting, i, i+1)
		}
	} else {
		delete(c.streams, st.id)
		if !c.client {
			c.active--
			c.openWaitingLocked(w)
			c.finishDrainLocked()
		}
	}
	if !c.client {
		c.updateLoadLocked()
	}
	c.relay.noteStreamsChanged()
}

// closeLocked removes st without a frame of its own, because the peer or
// the connection ended it, and resets its other half with code.
func (c *conn) closeLocked(w *worker, st *stream, code http2.ErrCode) {
	st.sendClosed, st.recvClosed = true, true
	c.removeLocked(w, st)
	w.resetPeer(st, code)
}

// resetLocked sends RST_STREAM on st and removes it.
func (c *conn) resetLocked(w *worker, st *stream, code http2.ErrCode) {
	if st.removed {
		return
	}
	if st.id != 0 && !c.dead {
		c.wbuf = appendRSTStream(c.wbuf, st.id, code)
	}
	st.sendClosed, st.recvClosed = true, true
	c.removeLocked(w, st)
}

// peerResetLocked ends st because its other half ended with code. A
// response that the relay holds complete still reaches the client, and
// so does a complete request the backend, if the client ended its half
// with NO_ERROR. Otherwise st is reset with the same code.
func (c *conn) peerResetLocked(w *worker, st *stream, code http2.ErrCode) {
	if st.removed || c.dead {
		return
	}
	complete := st.endQueued || st.sendClosed
	if !complete || (code != http2.ErrCodeNo && !c.client) {
		c.resetLocked(w, st, code)
		return
	}
	if !st.sendClosed {
		st.resetAfterEnd = true
		return
	}
	if !st.recvClosed {
		c.wbuf = appendRSTStream(c.wbuf, st.id, http2.ErrCodeNo)
		st.recvClosed = true
	}
	c.removeLocked(w, st)
}

// openLocked opens st, which waited, on backend connection c.
func (c *conn) openLocked(w *worker, st *stream) {
	st.id = c.nextID
	c.nextID += 2
	c.streams[st.id] = st
	c.active++
	st.sendWindow = c.peerInitWindow

	end := st.endQueued && st.pendingLen() == 0 && st.trailers == nil
	c.writeHeadersLocked(st.id, st.requestHeaders, end)
	st.requestHeaders = nil
	if end {
		c.endSentLocked(w, st)
	} else {
		c.flushLocked(w, st)
	}

	// Past the last stream ID, the connection drains and a new one takes
	// the next streams.
	if c.nextID > maxStreamID {
		c.draining = true
		c.unusable.Store(true)
	}
}

// openWaitingLocked opens waiting streams while the backend allows more.
func (c *conn) openWaitingLocked(w *worker) {
	for len(c.waiting) > 0 && c.settingsReceived && !c.dead && !c.draining && c.active < c.peerMaxStreams {
		st := c.waiting[0]
		c.waiting[0] = nil
		c.waiting = c.waiting[1:]
		c.openLocked(w, st)
	}
	if c.draining {
		c.refuseWaitingLocked(w)
	}
	c.updateLoadLocked()
}

// refuseWaitingLocked gives up the streams that wait on a draining
// connection. Their clients get REFUSED_STREAM, which means that the
// backend has not processed the call, so that they may retry it.
func (c *conn) refuseWaitingLocked(w *worker) {
	waiting := c.waiting
	c.waiting = nil
	for _, st := range waiting {
		c.closeLocked(w, st, http2.ErrCodeRefusedStream)
	}
}

// finishDrainLocked closes a draining backend connection that has no
// streams left.
func (c *conn) finishDrainLocked() {
	if c.draining && c.active == 0 && len(c.waiting) == 0 {
		c.goAwayLocked(http2.ErrCodeNo)
	}
}
