package h2relay

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HTTP/2 values (RFC 9113) that x/net/http2 does not export, and the
// relay's own settings.
const (
	initialWindow       = 65535 // every window's size before SETTINGS and WINDOW_UPDATE
	initialMaxFrameSize = 16384
	maxStreamID         = 1<<31 - 1
	hpackTableSize      = 4096 // the default dynamic table size, which the relay keeps

	// maxFrameSize is the largest frame that the relay accepts. Peers that
	// honour it can send a large message in fewer frames.
	maxFrameSize = 1 << 20

	readBufferSize = 64 << 10

	// closeWriteTimeout bounds the write of a final GOAWAY to a peer that
	// does not read.
	closeWriteTimeout = time.Second
)

// conn is one HTTP/2 connection of the relay: to a client, where the relay
// is the server, or to the backend, where it is the client. It has two
// goroutines. The reader is the only one to read the socket, and it also
// does the relaying work for the frames it reads, on any connection. The
// writer writes out what any goroutine appended to wbuf, so that frames
// queued while a write is in progress leave together in the next one.
//
// A goroutine holds at most one connection's mu at a time. Work on
// another connection waits in a worker until the lock is released.
type conn struct {
	// Immutable after newConn.
	relay  *Relay
	client bool // the connection is from a client, and the relay is its server

	// Set by attach before the reader and writer use them. fr and br are
	// the reader's own.
	nc net.Conn
	br *bufio.Reader
	fr *http2.Framer

	// Read by pickBackend without mu.
	unusable atomic.Bool  // the connection takes no new streams
	load     atomic.Int64 // open and waiting streams of a backend connection

	// Guarded by relay.mu. The time comes from time.Now, so its monotonic
	// reading keeps redialDelay correct when the wall clock is set back.
	dialFailed time.Time // when the backend dial failed; zero if it has not

	mu         sync.Mutex // guards the following, and every field of the connection's streams
	wake       sync.Cond  // the writer waits on it for output, with L set to &mu
	wbuf       []byte     // encoded frames for the writer
	writerIdle bool       // the writer waits on wake
	closeAfter bool       // close the connection once wbuf is written
	dead       bool
	failErr    error // the first error that failed the connection

	streams map[uint32]*stream // open streams by ID

	// The peer's settings and the relay's send windows.
	peerMaxFrame   int
	peerInitWindow int64
	peerMaxStreams int64
	sendWindow     int64     // connection-level send window
	blocked        []*stream // streams with queued data that wait for sendWindow
	blockedSpare   []*stream // the other of two backing arrays for blocked

	// The relay's receive windows.
	recvWindow    int64 // bytes the peer may still send on the connection
	unacked       int64 // bytes relayed whose window the peer has not got back yet
	settingsAcked bool  // the peer acknowledged the relay's SETTINGS

	// hbuf and hpackEncoder encode header blocks in the order in which they
	// are appended to wbuf, as HPACK's dynamic table requires.
	hbuf         bytes.Buffer
	hpackEncoder *hpack.Encoder

	// Client connections only.
	lastPeerStreamID uint32

	// Backend connections only.
	settingsReceived bool // the backend's first SETTINGS arrived
	nextID           uint32
	active           int64     // open streams, counted against peerMaxStreams
	waiting          []*stream // streams waiting to open, in arrival order
	draining         bool      // GOAWAY arrived or stream IDs run out: no new streams
}

// newConn returns a connection with the relay's preface and settings
// queued for its writer.
func newConn(r *Relay, client bool) *conn {
	c := &conn{
		relay:          r,
		client:         client,
		streams:        make(map[uint32]*stream),
		peerMaxFrame:   initialMaxFrameSize,
		peerInitWindow: initialWindow,
		peerMaxStreams: maxStreamID,
		sendWindow:     initialWindow,
		recvWindow:     r.connWindow,
		nextID:         1,
	}
	c.wake.L = &c.mu
	c.hpackEncoder = hpack.NewEncoder(&c.hbuf)

	if !client {
		c.wbuf = append(c.wbuf, http2.ClientPreface...)
	}
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: uint32(r.streamWindow)},
		{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
	}
	if !client {
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	c.wbuf = appendSettings(c.wbuf, settings...)
	// The connection window can only grow by WINDOW_UPDATE, not by SETTINGS.
	if increment := r.connWindow - initialWindow; increment > 0 {
		c.wbuf = appendWindowUpdate(c.wbuf, 0, uint32(increment))
	}
	return c
}

// attach sets up reading from nc.
func (c *conn) attach(nc net.Conn) {
	c.nc = nc
	c.br = bufio.NewReaderSize(nc, readBufferSize)
	c.fr = http2.NewFramer(io.Discard, c.br)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(maxFrameSize)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(hpackTableSize, nil)
}

// serveClient reads a client connection until it ends.
func (c *conn) serveClient() {
	defer c.relay.forget(c)

	// NOTE: nothing bounds this read, so a client that connects and sends
	// nothing holds the connection until it leaves or the relay closes.
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.br, preface); err != nil || string(preface) != http2.ClientPreface {
		c.relay.logger.Debug("client connection without HTTP/2 preface", "error", err)
		c.failNow(errors.New("no HTTP/2 client preface"))
		return
	}

	c.readLoop()
}

// dialAndServe connects a backend connection, then reads it until it ends.
func (c *conn) dialAndServe() {
	defer c.relay.forget(c)

	// Dial. A failed dial fails the connection, which refuses the streams
	// that already wait on it.
	dialer := net.Dialer{Timeout: dialTimeout}
	nc, err := dialer.DialContext(c.relay.dialContext, "tcp", c.relay.backend)
	if err != nil {
		if c.relay.dialContext.Err() == nil { // not ended by Close
			c.relay.logger.Warn("dialing the backend failed", "backend", c.relay.backend, "error", err)
		}
		c.relay.mu.Lock()
		c.dialFailed = time.Now()
		c.relay.mu.Unlock()
		c.failNow(err)
		return
	}

	// Attach, unless Close failed the connection during the dial.
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		nc.Close()
		return
	}
	c.attach(nc)
	c.mu.Unlock()

	c.relay.goroutines.Go(c.writeLoop)
	c.readLoop()
}

// writeLoop writes what accumulates in wbuf until the connection fails. It
// swaps two buffers, so that other goroutines keep appending while a write
// is in progress.
func (c *conn) writeLoop() {
	var buf []byte
	c.mu.Lock()
	for {
		for len(c.wbuf) == 0 && !c.dead && !c.closeAfter {
			c.writerIdle = true
			c.wake.Wait()
		}
		c.writerIdle = false
		if c.dead {
			c.mu.Unlock()
			return
		}
		if len(c.wbuf) == 0 {
			// closeAfter is set, and everything before it is written.
			c.mu.Unlock()
			c.failNow(errors.New("connection closed after GOAWAY"))
			return
		}
		buf, c.wbuf = c.wbuf, buf[:0]
		c.mu.Unlock()

		if _, err := c.nc.Write(buf); err != nil {
			c.failNow(err)
			return
		}
		if cap(buf) > 4<<20 {
			buf = nil // do not keep a burst's buffer for good
		}
		c.mu.Lock()
	}
}

// frameBuffered reports whether ReadFrame can return the next frame
// without blocking, because all of it is in the read buffer.
func (c *conn) frameBuffered() bool {
	n := c.br.Buffered()
	if n < frameHeaderLen {
		return false
	}
	header, _ := c.br.Peek(frameHeaderLen)

	// With ReadMetaHeaders set, ReadFrame returns a HEADERS frame without
	// END_HEADERS only together with its CONTINUATION frames, so reading
	// it may block for them even when the frame itself is buffered.
	frameType, flags := http2.FrameType(header[3]), http2.Flags(header[4])
	if frameType == http2.FrameHeaders && !flags.Has(http2.FlagHeadersEndHeaders) {
		return false
	}

	length := int(header[0])<<16 | int(header[1])<<8 | int(header[2])
	return n >= frameHeaderLen+length
}

// readLoop reads and handles frames until the connection fails.
func (c *conn) readLoop() {
	w := &worker{}
	for {
		// Wake the writers only when the next read may block, so that a
		// burst of small frames leaves in one write per connection.
		if !c.frameBuffered() {
			w.flushDirty()
		}

		f, err := c.fr.ReadFrame()
		if err == nil {
			err = c.handleFrame(w, f)
		}
		var streamErr http2.StreamError
		if errors.As(err, &streamErr) {
			c.onStreamError(w, streamErr)
			continue
		}
		if err != nil {
			c.endAfterReadError(w, err)
			return
		}
	}
}

// handleFrame relays a frame or acts on it. It returns a connection error
// when the peer broke the protocol.
func (c *conn) handleFrame(w *worker, f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.onData(w, f)
	case *http2.MetaHeadersFrame:
		c.onHeaders(w, f)
	case *http2.SettingsFrame:
		return c.onSettings(w, f)
	case *http2.WindowUpdateFrame:
		c.onWindowUpdate(w, f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.mu.Lock()
			if !c.dead {
				c.wbuf = appendPingAck(c.wbuf, f.Data)
			}
			w.unlock(c)
		}
	case *http2.RSTStreamFrame:
		c.onRSTStream(w, f)
	case *http2.GoAwayFrame:
		c.onGoAway(w, f)
	case *http2.PushPromiseFrame:
		// The relay disabled push on its backend connections, and clients
		// cannot push.
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	// PRIORITY and unknown frame types need nothing.
	return nil
}

// endAfterReadError fails the connection after the reader stopped with
// err. A protocol error first goes to the peer in a GOAWAY, and the reader
// then discards input until the writer has sent it and closed the
// connection.
func (c *conn) endAfterReadError(w *worker, err error) {
	code, protocolErr := http2.ErrCode(0), false
	var connErr http2.ConnectionError
	if errors.As(err, &connErr) {
		code, protocolErr = http2.ErrCode(connErr), true
	} else if errors.Is(err, http2.ErrFrameTooLarge) {
		code, protocolErr = http2.ErrCodeFrameSize, true
	}
	if protocolErr {
		c.mu.Lock()
		c.goAwayLocked(code)
		c.mu.Unlock()
		w.flushDirty()
		io.Copy(io.Discard, c.br) // ends when the writer or Close closes nc
	}

	w.flushDirty()
	c.fail(w, err)
	w.apply()
	w.flushDirty()

	// Log the first cause: a failed write or Close may have failed the
	// connection before the reader saw it closed.
	c.mu.Lock()
	cause := c.failErr
	c.mu.Unlock()
	if c.client {
		c.relay.logger.Debug("client connection ended", "error", cause)
	} else {
		c.relay.logger.Debug("backend connection ended", "backend", c.relay.backend, "error", cause)
	}
}

// goAwayLocked queues GOAWAY and has the writer close the connection once
// it is written, or after closeWriteTimeout if the peer does not read. The
// streams end when the connection fails then.
func (c *conn) goAwayLocked(code http2.ErrCode) {
	if c.dead || c.closeAfter {
		return
	}
	c.wbuf = appendGoAway(c.wbuf, c.lastPeerStreamID, code)
	c.closeAfter = true
	if c.nc != nil {
		c.nc.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
	}
	c.wake.Signal()
}

// fail ends the connection at once. It closes the socket, removes every
// stream and resets the other half of each.
func (c *conn) fail(w *worker, err error) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	c.failErr = err
	c.unusable.Store(true)

	waiting := c.waiting
	c.waiting = nil
	for _, st := range waiting {
		c.dropLocked(w, st)
	}
	for _, st := range c.streams {
		c.dropLocked(w, st)
	}
	c.blocked = nil
	c.wbuf = nil
	c.wake.Broadcast()
	nc := c.nc
	c.mu.Unlock()

	if nc != nil {
		nc.Close()
	}
}

// failNow fails the connection from a goroutine other than its reader, so
// that the writers of the connections it resets streams on wake at once.
func (c *conn) failNow(err error) {
	w := &worker{immediate: true}
	c.fail(w, err)
	w.apply()
}

// dropLocked removes st from a failed connection and resets its other
// half.
//
// NOTE: the client of a stream whose backend connection failed gets a bare
// RST_STREAM code, INTERNAL_ERROR or REFUSED_STREAM, and no gRPC status.
func (c *conn) dropLocked(w *worker, st *stream) {
	code := http2.ErrCodeCancel // the client left: cancel its backend stream
	if !c.client {
		code = http2.ErrCodeInternal
		if st.id == 0 {
			code = http2.ErrCodeRefusedStream // it never reached the backend
		}
	}
	c.closeLocked(w, st, code)
}

func (c *conn) onSettings(w *worker, f *http2.SettingsFrame) error {
	if f.IsAck() {
		c.mu.Lock()
		c.settingsAcked = true
		c.mu.Unlock()
		return nil
	}
	if err := f.ForeachSetting(http2.Setting.Valid); err != nil {
		return err
	}

	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return nil
	}
	windowGrew := false
	f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = int(s.Val)
		case http2.SettingInitialWindowSize:
			// The change applies to the send window of every open stream.
			delta := int64(s.Val) - c.peerInitWindow
			c.peerInitWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
			}
			windowGrew = windowGrew || delta > 0
		case http2.SettingHeaderTableSize:
			c.hpackEncoder.SetMaxDynamicTableSizeLimit(min(s.Val, hpackTableSize))
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams = int64(s.Val)
		}
		return nil
	})
	c.wbuf = appendSettingsAck(c.wbuf)
	if windowGrew {
		for _, st := range c.streams {
			c.flushLocked(w, st)
		}
	}
	if !c.client {
		c.settingsReceived = true
		c.openWaitingLocked(w)
	}
	w.unlock(c)
	w.apply()
	return nil
}

func (c *conn) onWindowUpdate(w *worker, f *http2.WindowUpdateFrame) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}

	if f.StreamID != 0 {
		if st := c.streams[f.StreamID]; st != nil {
			st.sendWindow += int64(f.Increment)
			c.flushLocked(w, st)
		}
		w.unlock(c)
		w.apply()
		return
	}

	// NOTE: blocked streams get the connection window first come, first
	// served: the first may take all of it, and the rest wait for the
	// next WINDOW_UPDATE.
	c.sendWindow += int64(f.Increment)
	if c.sendWindow > 0 && len(c.blocked) > 0 {
		// Streams that block again are appended to the spare array while
		// this one is walked.
		blocked := c.blocked
		c.blocked = c.blockedSpare[:0]
		for i, st := range blocked {
			blocked[i] = nil
			st.connBlocked = false
			c.flushLocked(w, st)
		}
		c.blockedSpare = blocked[:0]
	}
	w.unlock(c)
	w.apply()
}

func (c *conn) onRSTStream(w *worker, f *http2.RSTStreamFrame) {
	c.mu.Lock()
	st := c.streams[f.StreamID]
	if st == nil || c.dead {
		c.mu.Unlock()
		return
	}
	c.closeLocked(w, st, f.ErrCode)
	w.unlock(c)
	w.apply()
}

// onGoAway stops a backend connection from taking new streams. The streams
// that the backend will not process are refused, so that clients may
// retry them. The connection closes once the rest have ended.
func (c *conn) onGoAway(w *worker, f *http2.GoAwayFrame) {
	c.mu.Lock()
	if c.client || c.dead {
		// A client that goes away closes the connection itself.
		c.mu.Unlock()
		return
	}
	c.draining = true
	c.unusable.Store(true)
	for id, st := range c.streams {
		if id > f.LastStreamID {
			c.closeLocked(w, st, http2.ErrCodeRefusedStream)
		}
	}
	c.refuseWaitingLocked(w)
	c.finishDrainLocked()
	w.unlock(c)
	w.apply()
}

// onStreamError resets a stream whose frame the framer rejected.
func (c *conn) onStreamError(w *worker, streamErr http2.StreamError) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	if st := c.streams[streamErr.StreamID]; st != nil {
		c.resetLocked(w, st, streamErr.Code)
		w.resetPeer(st, http2.ErrCodeCancel)
	} else {
		if c.client && streamErr.StreamID > c.lastPeerStreamID {
			c.lastPeerStreamID = streamErr.StreamID
		}
		c.wbuf = appendRSTStream(c.wbuf, streamErr.StreamID, streamErr.Code)
	}
	w.unlock(c)
	w.apply()
}

// minStreamRecvWindowLocked returns how far below zero a stream's receive
// window may go. Until the peer acknowledges the relay's SETTINGS, it may
// send on a stream under the initial window of 65,535 bytes, which is more
// than a smaller StreamWindow.
func (c *conn) minStreamRecvWindowLocked() int64 {
	if c.settingsAcked {
		return 0
	}
	return min(0, c.relay.streamWindow-initialWindow)
}

// creditLocked returns n relayed bytes of window to the peer: to the
// connection always, and to st while the peer can still send on it.
// WINDOW_UPDATE frames go out once a quarter of a window is owed.
//
// NOTE: the bytes count as relayed once they are in the destination's
// wbuf, not once they are written to its socket.
func (c *conn) creditLocked(st *stream, n int64) {
	if n <= 0 || c.dead {
		return
	}
	c.unacked += n
	if c.unacked >= c.relay.connWindow/4 {
		c.wbuf = appendWindowUpdate(c.wbuf, 0, uint32(c.unacked))
		c.recvWindow += c.unacked
		c.unacked = 0
	}
	if st != nil && !st.removed && !st.recvClosed {
		st.unacked += n
		if st.unacked >= c.relay.streamWindow/4 {
			c.wbuf = appendWindowUpdate(c.wbuf, st.id, uint32(st.unacked))
			st.recvWindow += st.unacked
			st.unacked = 0
		}
	}
}

// writeHeadersLocked encodes a header block for the stream id.
func (c *conn) writeHeadersLocked(id uint32, fields []hpack.HeaderField, end bool) {
	c.hbuf.Reset()
	for _, field := range fields {
		// WriteField fails only when its writer does, and the Write of a
		// bytes.Buffer always returns a nil error.
		c.hpackEncoder.WriteField(field)
	}
	c.wbuf = appendHeaderBlock(c.wbuf, id, c.hbuf.Bytes(), end, c.peerMaxFrame)
}

// updateLoadLocked publishes the backend connection's load to pickBackend.
func (c *conn) updateLoadLocked() {
	c.load.Store(c.active + int64(len(c.waiting)))
}
