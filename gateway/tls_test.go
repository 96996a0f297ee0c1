package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// refusedHandshakeMessage is the message of the gateway's log record for a
// refused TLS handshake.
const refusedHandshakeMessage = "TLS handshake refused"

// startTLSGateway starts plugin as engine R behind a gateway whose only
// listener requires mutual TLS with the gateway folder of certs.
func startTLSGateway(t *testing.T, certs *ssetest.Certs, plugin *countedPlugin) *ssetest.Gateway {
	t.Helper()
	return ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", &config.ServerTLS{Dir: certs.GatewayDir})},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
	})
}

// qlikLikeConfig returns a client TLS configuration for files that always
// sends its client certificate, whatever CAs the server lists as
// acceptable, so that the gateway judges every certificate. Go's client
// by default sends none when its issuer's name is not on that list, and
// the gateway would then see a missing certificate instead of an unknown
// authority.
func qlikLikeConfig(t *testing.T, files tlsutil.ClientFiles) *tls.Config {
	t.Helper()
	// The certificate is loaded apart, since ClientConfig rejects one
	// that the gateway's own connections could not use, and a Qlik server
	// may still present it.
	cfg, err := tlsutil.ClientFiles{CAFile: files.CAFile}.ClientConfig("localhost")
	if err != nil {
		t.Fatalf("client TLS: %v", err)
	}
	if files.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
		if err != nil {
			t.Fatalf("client TLS: %v", err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &pair, nil
		}
	}
	return cfg
}

// waitForHandshakeFailure waits for the gateway's log record of a refused
// handshake for reason, or fails the test after timeout. The gateway counts
// the failure before it logs it. The log rate limit passes only the first
// refusal per reason, so gw must be a gateway that has refused none yet.
func waitForHandshakeFailure(t *testing.T, gw *ssetest.Gateway, reason tlsutil.HandshakeFailure, timeout time.Duration) {
	t.Helper()
	gw.Logs.WaitFor(t, refusedHandshakeMessage, timeout, func(record map[string]any) bool {
		return record["reason"] == string(reason)
	})
	if got := gw.HandshakeFailures()[reason]; got == 0 {
		t.Fatalf("HandshakeFailures()[%q] = 0 after the log recorded the refusal, want 1", reason)
	}
}

// handshakeCounts returns the failure counts a gateway should report: one
// for reason, zero for every other reason, all zero for an empty reason.
func handshakeCounts(reason tlsutil.HandshakeFailure) map[tlsutil.HandshakeFailure]int64 {
	counts := map[tlsutil.HandshakeFailure]int64{}
	for _, r := range tlsutil.HandshakeFailures {
		counts[r] = 0
	}
	if reason != "" {
		counts[reason] = 1
	}
	return counts
}

// checkRefusedHandshakeLogged checks that the gateway logged exactly one
// refused handshake, from peer and for reason.
func checkRefusedHandshakeLogged(t *testing.T, gw *ssetest.Gateway, peer string, reason tlsutil.HandshakeFailure) {
	t.Helper()
	gw.Logs.WaitFor(t, refusedHandshakeMessage, 5*time.Second, nil)
	records := gw.Logs.Records(refusedHandshakeMessage)
	if len(records) != 1 {
		t.Fatalf("got %d %q log records, want 1; log:\n%s", len(records), refusedHandshakeMessage, gw.Logs)
	}
	if got := records[0]["peer"]; got != peer {
		t.Errorf("log record peer = %v, want %s", got, peer)
	}
	if got := records[0]["reason"]; got != string(reason) {
		t.Errorf("log record reason = %v, want %q", got, reason)
	}
	if got := records[0]["level"]; got != "WARN" {
		t.Errorf("log record level = %v, want WARN", got)
	}
}

// TestMutualTLSClientCertificates checks that the gateway's mutual TLS
// listener serves a Qlik-style client certificate, and that a client
// without a certificate, or with one from another CA, expired, or made for
// servers only, never reaches the plugin, each refusal being logged once
// with the peer and counted under its reason. Elsewhere a plugin with
// certificates set up listened, yet Qlik showed nothing and the plugin
// logged no call (C05).
func TestMutualTLSClientCertificates(t *testing.T) {
	certs := ssetest.NewCerts(t)
	otherCA := ssetest.NewCerts(t).CA
	rootFile := filepath.Join(certs.QlikDir, tlsutil.RootCertFile)
	expired := certs.ClientDir(t, nil, tlsutil.LeafRequest{
		NotBefore: time.Now().Add(-48 * time.Hour),
		NotAfter:  time.Now().Add(-24 * time.Hour),
	})
	serverOnly := certs.ClientDir(t, nil, tlsutil.LeafRequest{Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})

	tests := []struct {
		name  string
		files tlsutil.ClientFiles
		// wantReason is why the gateway refuses the handshake; empty means
		// the call succeeds.
		wantReason tlsutil.HandshakeFailure
	}{
		{
			name:  "Qlik client certificate",
			files: tlsutil.ClientFilesInDir(certs.QlikDir, "", "", ""),
		},
		{
			name:       "no client certificate",
			files:      tlsutil.ClientFiles{CAFile: rootFile},
			wantReason: tlsutil.FailureMissingClientCert,
		},
		{
			name:       "certificate from another CA",
			files:      tlsutil.ClientFilesInDir(certs.ClientDir(t, otherCA, tlsutil.LeafRequest{}), "", "", ""),
			wantReason: tlsutil.FailureUnknownAuthority,
		},
		{
			name:       "expired certificate",
			files:      tlsutil.ClientFilesInDir(expired, "", "", ""),
			wantReason: tlsutil.FailureExpired,
		},
		{
			name:       "serverAuth only",
			files:      tlsutil.ClientFilesInDir(serverOnly, "", "", ""),
			wantReason: tlsutil.FailureWrongKeyUsage,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A fresh gateway per case: its counters start at zero, and the
			// rate limit of its log has seen no earlier refusal.
			plugin := startCountedPlugin(t, "plugin-a")
			gw := startTLSGateway(t, certs, plugin)
			dialer := &ssetest.SingleDialer{}
			creds := credentials.NewTLS(qlikLikeConfig(t, tt.files))
			// These credentials replace the plaintext ones that Dial sets first.
			client := ssetest.Dial(t, gw.Addrs[0], grpc.WithTransportCredentials(creds), grpc.WithContextDialer(dialer.Dial))

			ctx, cancel := context.WithTimeout(testContext(t), 10*time.Second)
			defer cancel()
			caps, err := client.GetCapabilities(ctx, &ssepb.Empty{})

			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("GetCapabilities() error = %v, want nil", err)
				}
				if got := caps.GetPluginIdentifier(); got != "plugin-a" {
					t.Errorf("GetCapabilities().PluginIdentifier = %q, want %q", got, "plugin-a")
				}
				if got := plugin.calls.Load(); got != 1 {
					t.Errorf("plugin calls = %d, want 1", got)
				}
				if diff := cmp.Diff(handshakeCounts(""), gw.HandshakeFailures()); diff != "" {
					t.Errorf("HandshakeFailures() (-want +got):\n%s", diff)
				}
				if records := gw.Logs.Records(refusedHandshakeMessage); len(records) != 0 {
					t.Errorf("got %d %q log records, want 0: %v", len(records), refusedHandshakeMessage, records)
				}
				return
			}

			// With TLS 1.3 the client may finish its side of the handshake
			// before the gateway checks its certificate, so the call fails
			// on the connection, not necessarily in the client's handshake.
			if err == nil {
				t.Fatalf("GetCapabilities() = %v, want an error", caps)
			}
			if got := plugin.calls.Load(); got != 0 {
				t.Errorf("plugin calls = %d, want 0", got)
			}
			waitForHandshakeFailure(t, gw, tt.wantReason, 5*time.Second)
			if diff := cmp.Diff(handshakeCounts(tt.wantReason), gw.HandshakeFailures()); diff != "" {
				t.Errorf("HandshakeFailures() (-want +got):\n%s", diff)
			}
			checkRefusedHandshakeLogged(t, gw, dialer.Address(), tt.wantReason)
		})
	}
}

// TestTLSListenerRefusesPlaintext checks that a plaintext client sending
// the HTTP/2 preface to a mutual TLS listener is disconnected, logged with
// its address and counted as "not TLS", like any other refused handshake
// (C05).
func TestTLSListenerRefusesPlaintext(t *testing.T) {
	certs := ssetest.NewCerts(t)
	plugin := startCountedPlugin(t, "plugin-a")
	gw := startTLSGateway(t, certs, plugin)

	conn, err := net.Dial("tcp", gw.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		t.Fatalf("writing the HTTP/2 preface: %v", err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(make([]byte, 1024))
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("Read() after the preface: %v, want the gateway to close the connection within 5s", err)
	}
	if err == nil {
		t.Errorf("Read() after the preface = %d bytes, want the connection closed", n)
	}

	waitForHandshakeFailure(t, gw, tlsutil.FailureNotTLS, 5*time.Second)
	if diff := cmp.Diff(handshakeCounts(tlsutil.FailureNotTLS), gw.HandshakeFailures()); diff != "" {
		t.Errorf("HandshakeFailures() (-want +got):\n%s", diff)
	}
	checkRefusedHandshakeLogged(t, gw, conn.LocalAddr().String(), tlsutil.FailureNotTLS)
	if got := plugin.calls.Load(); got != 0 {
		t.Errorf("plugin calls = %d, want 0", got)
	}
}

// TestTLSListenerProbeNotCounted checks that a connection closed before
// it sends anything, as a TCP health check or a port scan closes, is not
// counted or logged as a refused handshake, while one closed after the
// start of a ClientHello is, with the hint about Qlik's root_cert.pem.
func TestTLSListenerProbeNotCounted(t *testing.T) {
	certs := ssetest.NewCerts(t)
	plugin := startCountedPlugin(t, "plugin-a")
	gw := startTLSGateway(t, certs, plugin)

	// The probe comes from another address, so that the log's limit of a
	// record per address and reason cannot hide it.
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	probe, err := dialer.Dial("tcp", gw.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	probe.Close()
	// A whole call, and then a connection that starts a handshake and
	// whose refusal the test waits for: the probe's close, which the
	// gateway reads at once, is long handled by then.
	client := ssetest.DialTLS(t, gw.Addrs[0], certs.QlikDir, "localhost")
	if _, err := client.GetCapabilities(testContext(t), &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities() after the probe: %v", err)
	}
	started, err := net.Dial("tcp", gw.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := started.Write([]byte{0x16, 0x03, 0x01}); err != nil { // a TLS record header
		t.Fatal(err)
	}
	started.Close()

	waitForHandshakeFailure(t, gw, tlsutil.FailureClosed, 5*time.Second)
	if diff := cmp.Diff(handshakeCounts(tlsutil.FailureClosed), gw.HandshakeFailures()); diff != "" {
		t.Errorf("HandshakeFailures() (-want +got):\n%s", diff)
	}
	records := gw.Logs.Records(refusedHandshakeMessage)
	if len(records) != 1 || records[0]["peer"] != started.LocalAddr().String() {
		t.Fatalf("refused handshake records = %v, want one, of %s", records, started.LocalAddr())
	}
	if hint, _ := records[0]["hint"].(string); !strings.Contains(hint, "root_cert.pem") {
		t.Errorf("hint = %q, want it to point at root_cert.pem", hint)
	}
}

// TestTLSListenerSilentNotCounted checks that a connection that sends
// nothing until the handshake's timeout (10s) is not counted as a refused
// handshake, while one that stalls within its ClientHello is, as timed
// out. Both start together, and the test waits for the second.
func TestTLSListenerSilentNotCounted(t *testing.T) {
	t.Parallel()
	certs := ssetest.NewCerts(t)
	plugin := startCountedPlugin(t, "plugin-a")
	gw := startTLSGateway(t, certs, plugin)

	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	silent, err := dialer.Dial("tcp", gw.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	stalled, err := net.Dial("tcp", gw.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := stalled.Write([]byte{0x16, 0x03, 0x01}); err != nil { // a TLS record header
		t.Fatal(err)
	}

	waitForHandshakeFailure(t, gw, tlsutil.FailureTimeout, 20*time.Second)
	if diff := cmp.Diff(handshakeCounts(tlsutil.FailureTimeout), gw.HandshakeFailures()); diff != "" {
		t.Errorf("HandshakeFailures() (-want +got):\n%s", diff)
	}
	for _, record := range gw.Logs.Records(refusedHandshakeMessage) {
		if record["peer"] == silent.LocalAddr().String() {
			t.Errorf("silent connection logged as a refused handshake: %v", record)
		}
	}
}

// TestClientClosingAfterHandshakeLogged checks that a client that
// completes the TLS handshake and closes before any call, as Qlik's gRPC
// core does when the gateway's certificate does not name the host it
// dials, is logged with a hint. It is not a failed handshake: certificate
// checkers close so too.
func TestClientClosingAfterHandshakeLogged(t *testing.T) {
	certs := ssetest.NewCerts(t)
	plugin := startCountedPlugin(t, "plugin-a")
	gw := startTLSGateway(t, certs, plugin)

	cfg := qlikLikeConfig(t, tlsutil.ClientFilesInDir(certs.QlikDir, "", "", ""))
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.Dial("tcp", gw.Addrs[0], cfg)
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	peer := conn.LocalAddr().String()
	conn.Close()

	record := gw.Logs.WaitFor(t, "client closed the connection after the TLS handshake, before any call: it probably does not accept the gateway's certificate for the name it dials; compare that name with the certificate's subjectAltNames", 5*time.Second, nil)
	if got := record["peer"]; got != peer {
		t.Errorf("log record peer = %v, want %s", got, peer)
	}
	if diff := cmp.Diff(handshakeCounts(""), gw.HandshakeFailures()); diff != "" {
		t.Errorf("HandshakeFailures() (-want +got):\n%s", diff)
	}
}

// TestPlaintextListenerFailsTLSClient checks that a TLS client connecting
// to a listener configured with insecure: true fails within 2s instead of
// waiting for its deadline (C04).
func TestPlaintextListenerFailsTLSClient(t *testing.T) {
	certs := ssetest.NewCerts(t)
	plugin := startCountedPlugin(t, "plugin-a")
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
	})
	address := gw.Addrs[0]
	const limit = 2 * time.Second

	t.Run("gRPC client", func(t *testing.T) {
		client := ssetest.DialTLS(t, address, certs.QlikDir, "localhost")
		ctx, cancel := context.WithTimeout(testContext(t), 10*time.Second)
		defer cancel()
		start := time.Now()
		_, err := client.GetCapabilities(ctx, &ssepb.Empty{})
		elapsed := time.Since(start)
		if err == nil {
			t.Fatal("GetCapabilities() error = nil, want a failed connection")
		}
		if got := status.Code(err); got == codes.DeadlineExceeded {
			t.Errorf("GetCapabilities() code = %v (%v), want a connection failure before the deadline", got, err)
		}
		if elapsed > limit {
			t.Errorf("GetCapabilities() failed after %v, want within %v", elapsed, limit)
		}
	})

	t.Run("crypto/tls client", func(t *testing.T) {
		tlsConfig, err := tlsutil.ClientFilesInDir(certs.QlikDir, "", "", "").ClientConfig("localhost")
		if err != nil {
			t.Fatal(err)
		}
		tlsConfig.NextProtos = []string{"h2"}
		raw, err := net.Dial("tcp", address)
		if err != nil {
			t.Fatal(err)
		}
		conn := tls.Client(raw, tlsConfig)
		defer conn.Close()
		if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = conn.Handshake()
		elapsed := time.Since(start)
		if err == nil {
			t.Fatal("Handshake() error = nil, want a failed handshake")
		}
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			t.Errorf("Handshake() error = %v, want a failure before the deadline", err)
		}
		if elapsed > limit {
			t.Errorf("Handshake() failed after %v, want within %v", elapsed, limit)
		}
	})

	if got := plugin.calls.Load(); got != 0 {
		t.Errorf("plugin calls = %d, want 0", got)
	}
}
