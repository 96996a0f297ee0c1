package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// HandshakeFailure names why a TLS server handshake failed, in words fit
// for a log line and a metric label.
type HandshakeFailure string

// The reasons HandshakeFailureReason tells apart. The set is fixed, so a
// metric labelled by reason has a bounded number of series.
const (
	FailureMissingClientCert HandshakeFailure = "missing client certificate"
	FailureUnknownAuthority  HandshakeFailure = "unknown authority"
	FailureExpired           HandshakeFailure = "expired or not yet valid"
	FailureWrongKeyUsage     HandshakeFailure = "wrong extended key usage"
	FailureServerRejected    HandshakeFailure = "client rejected the server certificate"
	FailureNotTLS            HandshakeFailure = "not TLS"
	FailureTimeout           HandshakeFailure = "timed out"
	FailureClosed            HandshakeFailure = "closed by peer"
	FailureOther             HandshakeFailure = "other"
)

// HandshakeFailures lists every reason, for metrics that start at zero.
var HandshakeFailures = []HandshakeFailure{
	FailureMissingClientCert, FailureUnknownAuthority, FailureExpired, FailureWrongKeyUsage,
	FailureServerRejected, FailureNotTLS, FailureTimeout, FailureClosed, FailureOther,
}

// HandshakeFailureReason classifies an error returned by a TLS server
// handshake that requires client certificates.
func HandshakeFailureReason(err error) HandshakeFailure {
	var (
		unknownAuthority x509.UnknownAuthorityError
		invalid          x509.CertificateInvalidError
		recordHeader     tls.RecordHeaderError
		alert            tls.AlertError
		opErr            *net.OpError
		netErr           net.Error
	)
	switch {
	case errors.As(err, &unknownAuthority):
		return FailureUnknownAuthority
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return FailureExpired
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return FailureWrongKeyUsage
	case errors.As(err, &alert), errors.As(err, &opErr) && opErr.Op == "remote error":
		// The client sent an alert: it did not accept the gateway's
		// certificate, or offered nothing the gateway accepts. Over TCP,
		// crypto/tls reports a received alert as a *net.OpError with Op
		// "remote error" (as of Go 1.26); tls.AlertError is for QUIC.
		return FailureServerRejected
	case errors.As(err, &recordHeader):
		return FailureNotTLS
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return FailureTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET):
		// Unexpected EOF: the client closed within a record.
		return FailureClosed
	// crypto/tls has no error type for a missing client certificate (as of
	// Go 1.26), only this message.
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		return FailureMissingClientCert
	}
	return FailureOther
}

// DialFailure names why a TLS client could not connect.
type DialFailure int

// The reasons DialFailureReason tells apart.
const (
	DialOther DialFailure = iota
	// DialNotTLS: the server does not speak TLS.
	DialNotTLS
	// DialClientExpired: the server rejected the client certificate as
	// expired, in a TLS alert.
	DialClientExpired
	// DialClientRejected: the server rejected the client certificate in a
	// TLS alert, for its CA or its usage.
	DialClientRejected
	// DialClosed: the connection closed or was reset during the
	// handshake. With TLS 1.3 a server checks the client certificate after
	// the client's side of the handshake, so a rejection may show only so.
	DialClosed
	// DialServerUnknownAuthority: the client's CA did not sign the
	// server's certificate.
	DialServerUnknownAuthority
	// DialServerName: the server's certificate does not list the name
	// dialed.
	DialServerName
	// DialServerExpired: the server's certificate, or its chain, has
	// expired or is not valid yet by the client's clock.
	DialServerExpired
)

// DialFailureReason classifies the error of a failed TLS dial from its
// text. gRPC reports a failed connection as a status whose message only
// quotes crypto/tls and crypto/x509 (grpc-go v1.85, Go 1.26), so their
// error types are lost on the way.
func DialFailureReason(err error) DialFailure {
	text := err.Error()
	contains := func(parts ...string) bool {
		for _, part := range parts {
			if strings.Contains(text, part) {
				return true
			}
		}
		return false
	}
	switch {
	case contains("first record does not look like a TLS handshake"):
		return DialNotTLS
	case contains("remote error: tls: expired certificate"):
		return DialClientExpired
	case contains("remote error: tls: unknown certificate authority", "remote error: tls: bad certificate"):
		return DialClientRejected
	case contains("broken pipe", "connection reset"):
		return DialClosed
	case contains("certificate signed by unknown authority"):
		return DialServerUnknownAuthority
	case contains("certificate has expired or is not yet valid"):
		return DialServerExpired
	case contains("certificate is valid for", "not valid for any names", "IP SANs"):
		// crypto/x509's three wordings of a name the certificate lacks.
		return DialServerName
	}
	return DialOther
}
