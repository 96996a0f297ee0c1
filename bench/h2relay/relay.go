// Package h2relay is an HTTP/2 relay for gRPC over cleartext HTTP/2, which
// the benchmark runs as a reference target. It shows what a Go process
// costs that ends each client stream and relays its frames on a stream of
// a shared backend connection with its own HTTP/2 code, without grpc-go's
// transport and streams. It does not interpret gRPC. It decodes each
// header block and encodes it again for the other connection, and copies
// DATA payloads through under HTTP/2 flow control.
//
// It has none of the gateway's features: no routing, TLS, telemetry,
// keepalive or graceful shutdown.
//
// Known shortcomings:
//
//   - The relay returns flow-control window to a sender as soon as the
//     relayed bytes are in the destination connection's output buffer,
//     not once the socket has taken them. A connection's output buffer can
//     therefore hold up to its peer's connection window on top of what the
//     relay's own receive windows bound.
//   - Streams that wait for a connection's send window are served in the
//     order in which they started to wait, each as far as the window
//     allows, with no priorities and no fair sharing.
//   - When the backend connection fails or resets a stream, the client
//     gets RST_STREAM with a bare HTTP/2 error code (INTERNAL_ERROR,
//     REFUSED_STREAM, CANCEL), not a gRPC status that names the cause.
//     grpc-go (as of v1.85) reports these codes as Internal, Unavailable
//     or Canceled with a generic message. It also retries a
//     refused call once by itself. When the relay refuses that retry too
//     while grpc-go replays the buffered request message, grpc-go may
//     report the refused call as a clean end of stream (io.EOF), as if it
//     had succeeded, with no response.
//   - There is no TLS, no keepalive and no idle or handshake timeout: a
//     client that connects and sends nothing keeps its connection until it
//     leaves or the relay closes.
//   - Frames that RFC 9113 makes connection errors are ignored: a client's
//     HEADERS with an even or non-increasing stream ID, DATA,
//     WINDOW_UPDATE or RST_STREAM on an idle stream, and a first frame
//     other than SETTINGS. So are WINDOW_UPDATE and SETTINGS frames that
//     take a send window above 2^31-1, which RFC 9113 makes an error of
//     the connection or of the stream.
//   - The relay sends clients no SETTINGS_MAX_CONCURRENT_STREAMS, so the
//     number of calls that wait for a backend stream has no limit.
//   - SETTINGS and PING acknowledgements and RST_STREAM frames queue
//     without limit for a peer that keeps sending the frames that call
//     for them but does not read.
package h2relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Defaults of Options.
const (
	defaultConnections  = 2
	defaultStreamWindow = 1 << 20
	defaultConnWindow   = 16 << 20
)

const (
	// dialTimeout bounds the TCP connect to the backend.
	dialTimeout = 5 * time.Second

	// redialDelay is how long pickBackend skips a backend connection slot
	// whose dial failed, instead of dialing again. While every slot is
	// skipped, new calls get REFUSED_STREAM at once instead of each
	// waiting for a dial that is likely to fail too.
	redialDelay = time.Second

	// maxAcceptDelay caps the pause after a failed Accept.
	maxAcceptDelay = time.Second
)

// errRelayClosed ends the connections when Close is called.
var errRelayClosed = errors.New("relay closed")

// Options tune a Relay; zero values take the defaults.
type Options struct {
	// Connections is the number of backend connections that all client
	// streams share. 0 or less means the default, 2.
	Connections int

	// StreamWindow is the receive window per stream in bytes, on client
	// and backend connections alike. It bounds how much of one stream the
	// relay queues while the destination's window is closed. 0 or less
	// means the default, 1 MiB.
	StreamWindow int32

	// ConnWindow is the receive window per connection in bytes. 0 or less
	// means the default, 16 MiB. Values below HTTP/2's initial 65,535 bytes
	// count as 65,535, because an HTTP/2 connection window cannot shrink
	// below its initial size.
	ConnWindow int32

	// Logger receives failed backend dials and Accept errors (Warn) and
	// the end of each connection (Debug). nil discards them.
	Logger *slog.Logger
}

// Relay accepts HTTP/2 clients and relays each of their streams on a
// stream of one of its backend connections. Its methods are safe for
// concurrent use.
type Relay struct {
	// Immutable after New, except that tests may set the last two before
	// Serve.
	backend        string
	streamWindow   int64
	connWindow     int64
	logger         *slog.Logger
	dialContext    context.Context // ended by Close, so that it also stops dials
	cancelDials    context.CancelFunc
	redialDelay    time.Duration
	streamsChanged func() // called with a connection's lock held; nil outside tests

	// goroutines counts the goroutines of every connection, so that Close
	// can wait for them.
	goroutines sync.WaitGroup

	mu       sync.Mutex // guards the following, and conn.dialFailed
	closed   bool
	conns    map[*conn]struct{} // every connection whose reader runs
	backends []*conn            // slots that pickBackend fills; nil until first used
}

// New returns a Relay to the gRPC server at backend (host:port), which
// must accept cleartext HTTP/2 with prior knowledge. It dials nothing
// until Serve.
func New(backend string, opts Options) *Relay {
	connections := opts.Connections
	if connections <= 0 {
		connections = defaultConnections
	}
	streamWindow := int64(opts.StreamWindow)
	if streamWindow <= 0 {
		streamWindow = defaultStreamWindow
	}
	connWindow := int64(opts.ConnWindow)
	if connWindow <= 0 {
		connWindow = defaultConnWindow
	}
	connWindow = max(connWindow, initialWindow)
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}

	ctx, cancel := context.WithCancel(context.Background())
	return &Relay{
		backend:      backend,
		streamWindow: streamWindow,
		connWindow:   connWindow,
		logger:       logger,
		dialContext:  ctx,
		cancelDials:  cancel,
		redialDelay:  redialDelay,
		conns:        make(map[*conn]struct{}),
		backends:     make([]*conn, connections),
	}
}

// Serve accepts cleartext HTTP/2 (prior knowledge) clients on lis until lis
// is closed, and returns then, with nil. It retries other Accept errors,
// such as running out of file descriptors, after a pause that doubles up
// to a second. Connections accepted after Close are closed at once.
func (r *Relay) Serve(lis net.Listener) error {
	// Dial the backend now, so that the first calls need not wait for it.
	r.pickBackend()

	var delay time.Duration
	for {
		nc, err := lis.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			delay = min(max(2*delay, 5*time.Millisecond), maxAcceptDelay)
			r.logger.Warn("accepting a client connection failed; retrying", "error", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0

		if !r.startClient(nc) {
			nc.Close()
		}
	}
}

// Close ends every connection of the relay, which resets the streams on
// them, and waits until their goroutines have returned. It does not close
// the listener that Serve uses.
func (r *Relay) Close() {
	r.mu.Lock()
	r.closed = true
	conns := make([]*conn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()

	r.cancelDials()
	w := &worker{immediate: true}
	for _, c := range conns {
		c.fail(w, errRelayClosed)
	}
	w.apply()
	r.goroutines.Wait()
}

// startClient starts the reader and writer of a new client connection,
// unless the relay is closed.
func (r *Relay) startClient(nc net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	c := newConn(r, true)
	c.attach(nc)
	r.conns[c] = struct{}{}
	// Adding to goroutines under mu while not closed orders every Add that
	// may start from zero before the Wait in Close.
	r.goroutines.Go(c.writeLoop)
	r.goroutines.Go(c.serveClient)
	return true
}

// pickBackend returns the least loaded usable backend connection, or nil
// if the relay is closed or every slot's last dial failed within
// redialDelay. It replaces failed and draining connections with new ones,
// which take streams at once: they wait in the connection until its
// handshake is done.
func (r *Relay) pickBackend() *conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}

	var best *conn
	var bestLoad int64
	for i, c := range r.backends {
		if c == nil || c.unusable.Load() {
			if c != nil && !c.dialFailed.IsZero() && time.Since(c.dialFailed) < r.redialDelay {
				continue
			}
			c = newConn(r, false)
			r.backends[i] = c
			r.conns[c] = struct{}{}
			r.goroutines.Go(c.dialAndServe)
		}
		if load := c.load.Load(); best == nil || load < bestLoad {
			best, bestLoad = c, load
		}
	}
	return best
}

// forget removes c from the connections that Close ends, once its reader
// has returned.
func (r *Relay) forget(c *conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

// noteStreamsChanged calls the test hook streamsChanged, if set, after a
// stream was added or removed.
func (r *Relay) noteStreamsChanged() {
	if r.streamsChanged != nil {
		r.streamsChanged()
	}
}
