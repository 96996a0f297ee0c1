package tlsutil_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/ssegw/ssegw/tlsutil"
)

// handshakeTimeout bounds every connection of a test handshake, so that a
// side that waits for the other cannot hang the test.
const handshakeTimeout = 10 * time.Second

// serverHandshake runs a TLS server handshake with serverConfig on one end
// of a loopback TCP connection while client drives the other end, and
// returns the server's error. Both ends close only after both are done,
// so that the server reads everything the client sent before a reset.
func serverHandshake(t *testing.T, serverConfig *tls.Config, serverTimeout time.Duration, client func(net.Conn)) error {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	clientConn, err := net.Dial("tcp", listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer clientConn.Close()
	serverConn, err := listener.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer serverConn.Close()
	if err := clientConn.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		t.Fatal(err)
	}
	if err := serverConn.SetDeadline(time.Now().Add(serverTimeout)); err != nil {
		t.Fatal(err)
	}

	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		client(clientConn)
	}()
	err = tls.Server(serverConn, serverConfig).Handshake()
	<-clientDone
	return err
}

// tlsClient returns a client that runs a TLS handshake with cfg and
// stores its error in *clientErr, if clientErr is not nil.
func tlsClient(cfg *tls.Config, clientErr *error) func(net.Conn) {
	return func(conn net.Conn) {
		err := tls.Client(conn, cfg).Handshake()
		if clientErr != nil {
			*clientErr = err
		}
	}
}

// presenting returns a client configuration that trusts roots, checks the
// name localhost and presents the pair in certPEM and keyPEM whatever the
// server requests. With only Certificates set, a Go client (as of Go 1.26)
// sends no certificate when the server lists other CAs as acceptable.
func presenting(t *testing.T, roots *x509.CertPool, certPEM, keyPEM []byte) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if certPEM == nil {
		return cfg
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &pair, nil
	}
	return cfg
}

// issueClient issues a client certificate from ca, changed by tune.
func issueClient(t *testing.T, ca *tlsutil.Authority, tune func(*tlsutil.LeafRequest)) (certPEM, keyPEM []byte) {
	t.Helper()
	req := tlsutil.LeafRequest{CommonName: "sse_client", Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if tune != nil {
		tune(&req)
	}
	certPEM, keyPEM, err := ca.Issue(req)
	if err != nil {
		t.Fatalf("Issue() error: %v", err)
	}
	return certPEM, keyPEM
}

// TestHandshakeFailureReason checks that each way a real handshake with
// the gateway's server configuration fails is classified by its cause,
// with TLS 1.2 and TLS 1.3 clients.
func TestHandshakeFailureReason(t *testing.T) {
	f := newFixture(t)
	serverConfig, err := tlsutil.ServerFilesInDir(f.GatewayDir, "", "", "").ServerConfig()
	if err != nil {
		t.Fatalf("ServerConfig() error: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(f.ca.Cert)
	otherCA, err := tlsutil.NewRootCA("sse_root", time.Hour, "")
	if err != nil {
		t.Fatalf("NewRootCA() error: %v", err)
	}
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(otherCA.Cert)
	validCert := readFile(t, filepath.Join(f.QlikDir, tlsutil.ClientCertFile))
	validKey := readFile(t, filepath.Join(f.QlikDir, tlsutil.ClientKeyFile))
	strangerCert, strangerKey := issueClient(t, otherCA, nil)
	expiredCert, expiredKey := issueClient(t, f.ca, func(req *tlsutil.LeafRequest) {
		req.NotBefore = time.Now().Add(-48 * time.Hour)
		req.NotAfter = time.Now().Add(-24 * time.Hour)
	})
	futureCert, futureKey := issueClient(t, f.ca, func(req *tlsutil.LeafRequest) {
		req.NotBefore = time.Now().Add(24 * time.Hour)
	})
	serverOnlyCert, serverOnlyKey := issueClient(t, f.ca, func(req *tlsutil.LeafRequest) {
		req.Usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
	wrongName := presenting(t, roots, validCert, validKey)
	wrongName.ServerName = "plugin.example"

	tlsCases := []struct {
		name   string
		client *tls.Config
		want   tlsutil.HandshakeFailure
	}{
		{
			name:   "no client certificate",
			client: presenting(t, roots, nil, nil),
			want:   tlsutil.FailureMissingClientCert,
		},
		{
			name:   "client certificate from another CA",
			client: presenting(t, roots, strangerCert, strangerKey),
			want:   tlsutil.FailureUnknownAuthority,
		},
		{
			name:   "expired client certificate",
			client: presenting(t, roots, expiredCert, expiredKey),
			want:   tlsutil.FailureExpired,
		},
		{
			name:   "client certificate not yet valid",
			client: presenting(t, roots, futureCert, futureKey),
			want:   tlsutil.FailureExpired,
		},
		{
			name:   "client certificate for servers only",
			client: presenting(t, roots, serverOnlyCert, serverOnlyKey),
			want:   tlsutil.FailureWrongKeyUsage,
		},
		{
			name:   "client rejects the server certificate",
			client: presenting(t, otherRoots, validCert, validKey),
			want:   tlsutil.FailureServerRejected,
		},
		{
			name:   "client expects another server name",
			client: wrongName,
			want:   tlsutil.FailureServerRejected,
		},
	}
	for _, tt := range tlsCases {
		for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			t.Run(fmt.Sprintf("%s/%s", tt.name, tls.VersionName(version)), func(t *testing.T) {
				client := tt.client.Clone()
				client.MaxVersion = version
				err := serverHandshake(t, serverConfig, handshakeTimeout, tlsClient(client, nil))
				if err == nil {
					t.Fatal("server handshake succeeded, want an error")
				}
				if got := tlsutil.HandshakeFailureReason(err); got != tt.want {
					t.Errorf("HandshakeFailureReason(%v) = %q, want %q", err, got, tt.want)
				}
			})
		}
	}

	rawCases := []struct {
		name          string
		serverTimeout time.Duration
		client        func(net.Conn)
		want          tlsutil.HandshakeFailure
	}{
		{
			name:          "plaintext HTTP/2",
			serverTimeout: handshakeTimeout,
			client: func(conn net.Conn) {
				conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
			},
			want: tlsutil.FailureNotTLS,
		},
		{
			name:          "client closes at once",
			serverTimeout: handshakeTimeout,
			client:        func(conn net.Conn) { conn.Close() },
			want:          tlsutil.FailureClosed,
		},
		{
			name:          "client sends nothing",
			serverTimeout: 100 * time.Millisecond,
			client:        func(net.Conn) {},
			want:          tlsutil.FailureTimeout,
		},
	}
	for _, tt := range rawCases {
		t.Run(tt.name, func(t *testing.T) {
			err := serverHandshake(t, serverConfig, tt.serverTimeout, tt.client)
			if err == nil {
				t.Fatal("server handshake succeeded, want an error")
			}
			if got := tlsutil.HandshakeFailureReason(err); got != tt.want {
				t.Errorf("HandshakeFailureReason(%v) = %q, want %q", err, got, tt.want)
			}
		})
	}
}

// TestHandshakeFailureReasonOther checks that an error with no known cause
// is classified as other.
func TestHandshakeFailureReasonOther(t *testing.T) {
	err := errors.New("tls: unsupported elliptic curve")
	if got := tlsutil.HandshakeFailureReason(err); got != tlsutil.FailureOther {
		t.Errorf("HandshakeFailureReason(%v) = %q, want %q", err, got, tlsutil.FailureOther)
	}
}

// TestHandshakeFailuresComplete checks that the list of reasons holds
// each reason once, since metrics start a series for each entry.
func TestHandshakeFailuresComplete(t *testing.T) {
	want := []tlsutil.HandshakeFailure{
		tlsutil.FailureMissingClientCert, tlsutil.FailureUnknownAuthority, tlsutil.FailureExpired,
		tlsutil.FailureWrongKeyUsage, tlsutil.FailureServerRejected, tlsutil.FailureNotTLS,
		tlsutil.FailureTimeout, tlsutil.FailureClosed, tlsutil.FailureOther,
	}
	seen := map[tlsutil.HandshakeFailure]int{}
	for _, reason := range tlsutil.HandshakeFailures {
		seen[reason]++
	}
	for _, reason := range want {
		if seen[reason] != 1 {
			t.Errorf("HandshakeFailures lists %q %d times, want once", reason, seen[reason])
		}
	}
	if len(tlsutil.HandshakeFailures) != len(want) {
		t.Errorf("HandshakeFailures has %d entries, want %d", len(tlsutil.HandshakeFailures), len(want))
	}
}

// TestDialFailureReason checks each reason on the messages gRPC gives for
// a failed TLS dial, which quote crypto/tls and crypto/x509.
func TestDialFailureReason(t *testing.T) {
	tests := []struct {
		message string
		want    tlsutil.DialFailure
	}{
		{`connection error: desc = "transport: authentication handshake failed: tls: first record does not look like a TLS handshake"`, tlsutil.DialNotTLS},
		{`connection error: desc = "transport: authentication handshake failed: remote error: tls: expired certificate"`, tlsutil.DialClientExpired},
		{`connection error: desc = "error reading server preface: remote error: tls: unknown certificate authority"`, tlsutil.DialClientRejected},
		{`connection error: desc = "error reading server preface: remote error: tls: bad certificate"`, tlsutil.DialClientRejected},
		{`cannot connect: write tcp 127.0.0.1:5->127.0.0.1:6: write: broken pipe`, tlsutil.DialClosed},
		{`read tcp 127.0.0.1:5->127.0.0.1:6: read: connection reset by peer`, tlsutil.DialClosed},
		{`tls: failed to verify certificate: x509: certificate signed by unknown authority`, tlsutil.DialServerUnknownAuthority},
		{`x509: certificate is valid for localhost, not other.example`, tlsutil.DialServerName},
		{`x509: certificate is not valid for any names, but wanted to match other.example`, tlsutil.DialServerName},
		{`x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs`, tlsutil.DialServerName},
		{`tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time 2026-12-05T20:00:00Z is before 2026-12-06T20:00:00Z`, tlsutil.DialServerExpired},
		{`dial tcp 127.0.0.1:1: connect: connection refused`, tlsutil.DialOther},
	}
	for _, tt := range tests {
		if got := tlsutil.DialFailureReason(errors.New(tt.message)); got != tt.want {
			t.Errorf("DialFailureReason(%q) = %v, want %v", tt.message, got, tt.want)
		}
	}
}
