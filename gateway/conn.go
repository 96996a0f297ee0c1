package gateway

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/ssegw/ssegw/tlsutil"
)

// guardedListener bounds a listener's open connections: one more is closed
// at once, with a rate-limited warning, rather than left to queue.
type guardedListener struct {
	net.Listener
	gateway *Gateway
	address string
	max     int64
	// full is the warning logged when a connection is closed for max; it
	// names the setting, where there is one.
	full string
	// evict, when set, closes an idle connection to make room for a new
	// one, and reports whether it did.
	evict func() bool
	open  atomic.Int64
	// plaintext listeners check the HTTP/2 preface on the raw connection;
	// TLS listeners do it after the handshake, in handshakeLogger.
	plaintext bool

	// silent tracks the connections that have not sent the HTTP/2
	// preface and its first frame yet, with when they opened, on a
	// listener that evicts them (see closeSilent); nil on others.
	silentMu sync.Mutex
	silent   map[*countedConn]time.Time
}

func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.max > 0 && l.open.Add(1) > l.max && !(l.evict != nil && l.evictFor()) {
			l.open.Add(-1)
			conn.Close()
			if l.gateway.warnings.allow("connections:" + l.Addr().String()) {
				l.gateway.logger.Warn(l.full,
					"listener", l.address, "peer", conn.RemoteAddr().String(), "max_connections", l.max)
			}
			continue
		}
		counted := &countedConn{Conn: conn, listener: l}
		if l.silent != nil {
			l.silentMu.Lock()
			l.silent[counted] = time.Now()
			l.silentMu.Unlock()
		}
		if l.plaintext {
			return &watchedConn{Conn: counted, counted: counted, gateway: l.gateway, listener: l.address}, nil
		}
		return counted, nil
	}
}

// evictFor closes an idle connection for a new one that found the
// listener full, whose place is counted already, and reports whether the
// new one may stay.
func (l *guardedListener) evictFor() bool {
	if !l.evict() {
		return false
	}
	return l.open.Load() <= l.max
}

// closeSilent closes the oldest connection that has not sent the HTTP/2
// preface and its first frame within silentGrace, if there is one, and
// reports whether it did.
// Connections that send nothing, or trickle a TLS handshake, would
// otherwise hold their places until handshakeTimeout or gRPC's wait for
// the preface: a client reopening them faster than that could keep Qlik
// out without a certificate. Qlik sends the preface within milliseconds
// of connecting.
func (l *guardedListener) closeSilent() bool {
	l.silentMu.Lock()
	victim := oldestSilent(l.silent)
	delete(l.silent, victim)
	l.silentMu.Unlock()
	if victim == nil {
		return false
	}
	victim.evicted.Store(true)
	victim.Close()
	if l.gateway.warnings.allow("evicted:" + l.Addr().String()) {
		l.gateway.logger.Warn(silentEvictedMessage,
			"listener", l.address, "peer", victim.RemoteAddr().String(), "max_connections", l.max)
	}
	return true
}

// oldestSilent returns the connection of opened, which maps connections to
// when they opened, that opened first, if that was more than silentGrace
// ago, or the zero value.
func oldestSilent[C comparable](opened map[C]time.Time) C {
	var victim C
	oldest := time.Now().Add(-silentGrace)
	for conn, at := range opened {
		if at.Before(oldest) {
			victim, oldest = conn, at
		}
	}
	return victim
}

// silentEvictedMessage is the warning of closeSilent.
var silentEvictedMessage = fmt.Sprintf("connection closed to make room for a new one: it had not sent the HTTP/2 preface and its first frame within %v, and the listener has limits.max_connections open", silentGrace)

// countedConn gives its listener's count back when closed.
type countedConn struct {
	net.Conn
	listener *guardedListener
	once     sync.Once
	// evicted is set when closeSilent closed the connection, so that its
	// failed handshake is not reported as the client's doing.
	evicted atomic.Bool
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		if c.listener.max > 0 {
			c.listener.open.Add(-1)
		}
		c.spoke()
	})
	return c.Conn.Close()
}

// wasEvicted reports whether closeSilent closed the connection.
func (c *countedConn) wasEvicted() bool {
	return c != nil && c.evicted.Load()
}

// spoke takes the connection off its listener's silent ones: it sent the
// HTTP/2 preface and its first frame, or closed.
func (c *countedConn) spoke() {
	if c == nil || c.listener.silent == nil {
		return
	}
	c.listener.silentMu.Lock()
	delete(c.listener.silent, c)
	c.listener.silentMu.Unlock()
}

// watchedConn reads what a client sends first, to log why a connection
// that gRPC drops without a word was not gRPC: an HTTP/1.1 request, a TLS
// client on a plaintext port, or, after a TLS handshake, a client that
// refused the gateway's certificate. gRPC only tells its own logger (as of
// grpc-go v1.85).
type watchedConn struct {
	net.Conn
	counted  *countedConn // the accepted connection beneath, or nil
	gateway  *Gateway
	listener string

	secured bool // a TLS connection, after its handshake

	// Used by gRPC's reading goroutine only.
	seen    []byte // the first bytes, up to the length of the preface
	decided bool
	// first tracks the frame after the preface, which ends the
	// connection's silence; see firstFrame.
	first firstFrame
}

var http2Preface = []byte(http2.ClientPreface)

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.decided {
		if !c.first.done && c.first.take(p[:n]) {
			c.counted.spoke()
		}
		return n, err
	}
	taken := min(n, len(http2Preface)-len(c.seen))
	c.seen = append(c.seen, p[:taken]...)
	switch {
	case !bytes.HasPrefix(http2Preface, c.seen):
		c.decided = true
		c.refused(notHTTP2Reason(c.seen))
	case len(c.seen) == len(http2Preface):
		c.decided = true
		c.seen = nil
		if c.first.take(p[taken:n]) {
			c.counted.spoke()
		}
	case err != nil:
		c.decided = true
		switch reason := tlsutil.HandshakeFailureReason(err); {
		case reason == tlsutil.FailureServerRejected:
			c.gateway.handshakeFailures[slices.Index(tlsutil.HandshakeFailures, reason)].Add(1)
			c.refused(string(reason) + ": " + err.Error())
		case reason == tlsutil.FailureClosed && c.secured && len(c.seen) == 0 && !c.counted.wasEvicted():
			// gRPC's C core, which Qlik uses, checks the gateway's host
			// name only after the handshake, and closes without an alert
			// when the certificate does not name it. Not counted as a
			// failed handshake: a tool that checks the certificate does
			// the same.
			peer := c.RemoteAddr().String()
			if c.gateway.warnings.allow("closed:" + peerHost(peer)) {
				c.gateway.logger.Warn("client closed the connection after the TLS handshake, before any call: it probably does not accept the gateway's certificate for the name it dials; compare that name with the certificate's subjectAltNames",
					"listener", c.listener, "peer", peer, "error", err.Error())
			}
		}
	}
	return n, err
}

// firstFrame follows the first frame after the HTTP/2 preface, the
// client's SETTINGS, through the bytes read. A connection has spoken once
// that frame is whole: the preface alone, 24 bytes, would let a client
// hold a place at limits.max_connections as cheaply as by sending nothing.
type firstFrame struct {
	header [9]byte
	filled int // bytes of header read
	left   int // bytes of the payload still to read, once the header is whole
	done   bool
}

// take follows the frame through b, the next bytes read, and reports
// whether the frame became whole in them.
func (f *firstFrame) take(b []byte) bool {
	if f.filled < len(f.header) {
		k := copy(f.header[f.filled:], b)
		f.filled += k
		b = b[k:]
		if f.filled < len(f.header) {
			return false
		}
		f.left = int(f.header[0])<<16 | int(f.header[1])<<8 | int(f.header[2])
	}
	f.left -= min(f.left, len(b))
	f.done = f.left == 0
	return f.done
}

func (c *watchedConn) refused(reason string) {
	peer := c.RemoteAddr().String()
	if !c.gateway.warnings.allow("refused:" + peerHost(peer) + ":" + reason) {
		return
	}
	c.gateway.logger.Warn("connection refused: not gRPC", "listener", c.listener, "peer", peer, "reason", reason)
}

// notHTTP2Reason names what a client sent instead of the HTTP/2 preface.
func notHTTP2Reason(first []byte) string {
	switch {
	case len(first) > 0 && first[0] == 0x16:
		return "a TLS handshake on a plaintext listener"
	case bytes.HasPrefix(first, []byte("GET ")), bytes.HasPrefix(first, []byte("POST ")),
		bytes.HasPrefix(first, []byte("PUT ")), bytes.HasPrefix(first, []byte("HEAD ")),
		bytes.HasPrefix(first, []byte("OPTIONS ")):
		return "an HTTP/1 request"
	}
	return "not the HTTP/2 preface"
}
