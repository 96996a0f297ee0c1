package gateway

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"sync"

	"google.golang.org/grpc/credentials"

	"github.com/ssegw/ssegw/tlsutil"
)

// handshakeLogger wraps a listener's TLS credentials to log and count every
// refused handshake. gRPC only reports them to its own logger, where a Qlik
// admin would never see why the engine cannot connect.
type handshakeLogger struct {
	credentials.TransportCredentials
	gateway  *Gateway
	listener string
}

func (h *handshakeLogger) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	// gRPC's TLS credentials close the connection of a failed handshake
	// themselves. Deferring that close until the failure is counted means
	// a client never sees the close before /metrics shows the failure.
	counted, _ := conn.(*countedConn)
	deferred := &closeDeferredConn{Conn: conn, deferring: true}
	defer deferred.release()
	secured, info, err := h.TransportCredentials.ServerHandshake(deferred)
	if err == nil {
		// With TLS 1.3 a client refuses the gateway's certificate only
		// after the handshake; the first read then finds its alert.
		return &watchedConn{Conn: secured, counted: counted, gateway: h.gateway, listener: h.listener, secured: true}, info, nil
	}
	if counted.wasEvicted() {
		return nil, nil, err // closeSilent closed it, and logged why
	}
	reason := tlsutil.HandshakeFailureReason(err)
	if (reason == tlsutil.FailureClosed || reason == tlsutil.FailureTimeout) && !deferred.sent {
		// Closed, or silent until the handshake's timeout, before a
		// ClientHello, as a TCP health check or a port scan is: no
		// handshake began, so none was refused.
		return nil, nil, err
	}
	h.gateway.handshakeFailures[slices.Index(tlsutil.HandshakeFailures, reason)].Add(1)

	// One line per client address and reason and interval: a Qlik engine
	// retrying with a bad certificate would otherwise fill the log.
	peer := conn.RemoteAddr().String()
	host, _, _ := net.SplitHostPort(peer)
	if h.gateway.warnings.allow("handshake:" + host + ":" + string(reason)) {
		attributes := []slog.Attr{
			slog.String("listener", h.listener),
			slog.String("peer", peer),
			slog.String("reason", string(reason)),
			slog.String("error", err.Error()),
		}
		if reason == tlsutil.FailureClosed {
			// gRPC's C core, Qlik's, closes the connection without an
			// alert when it does not trust the gateway's certificate,
			// so the most common mistake looks like a dropped connection.
			attributes = append(attributes, slog.String("hint", closedHint))
		}
		h.gateway.logger.LogAttrs(context.Background(), slog.LevelWarn, "TLS handshake refused", attributes...)
	}
	return nil, nil, err
}

// closedHint is the hint of a handshake that the client closed.
const closedHint = "a client that does not trust the gateway's certificate may close the connection without saying why: check that its root_cert.pem is the CA that signed the listener's certificate (ssegw certs check on both folders)"

// closeDeferredConn is a connection whose Close, while deferring is set,
// takes effect only at release.
type closeDeferredConn struct {
	net.Conn
	// sent is set once the client has sent a byte. Only the handshake's
	// goroutine writes it: a client's first bytes are its ClientHello.
	sent      bool
	mu        sync.Mutex
	deferring bool
	closed    bool // Close was called while deferring
}

func (c *closeDeferredConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.sent {
		c.sent = true
	}
	return n, err
}

func (c *closeDeferredConn) Close() error {
	c.mu.Lock()
	if c.deferring {
		c.closed = true
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// release stops deferring, and closes the connection if Close was called.
func (c *closeDeferredConn) release() {
	c.mu.Lock()
	c.deferring = false
	closed := c.closed
	c.mu.Unlock()
	if closed {
		c.Conn.Close()
	}
}

func (h *handshakeLogger) Clone() credentials.TransportCredentials {
	return &handshakeLogger{TransportCredentials: h.TransportCredentials.Clone(), gateway: h.gateway, listener: h.listener}
}

var _ credentials.TransportCredentials = (*handshakeLogger)(nil)
