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
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET):
		return FailureClosed
	// crypto/tls has no error type for a missing client certificate (as of
	// Go 1.26), only this message.
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		return FailureMissingClientCert
	}
	return FailureOther
}
