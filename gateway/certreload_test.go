package gateway_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// rotWait bounds the wait for replaced certificate files to take effect:
// the gateway must use them within 10 s, without a restart.
const rotWait = 10 * time.Second

// opensslPath is where the TLS probe of these tests is installed.
const opensslPath = "/usr/bin/openssl"

// rotFile is a file to replace and its new content.
type rotFile struct {
	path string
	data []byte
}

// rotReplace writes each file to a temporary name in its folder and then
// renames it over the old one, as certificate renewal tools do, in order.
func rotReplace(t *testing.T, files ...rotFile) {
	t.Helper()
	for _, f := range files {
		ssetest.ReplaceFile(t, f.path, f.data)
	}
}

// rotIssueServer issues a new server certificate for the test hosts from
// the set's CA, as a renewal would.
func rotIssueServer(t *testing.T, certs *ssetest.Certs, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := certs.CA.Issue(tlsutil.LeafRequest{
		CommonName: "sse_server",
		Hosts:      ssetest.TestHosts,
		Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotAfter:   notAfter,
	})
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// rotHandshake connects to address with TLS as the client of clientDir,
// offering ALPN h2 and checking the name localhost, and returns the state
// of the connection.
func rotHandshake(t *testing.T, address, clientDir string) tls.ConnectionState {
	t.Helper()
	cfg, err := tlsutil.ClientFilesInDir(clientDir, "", "", "").ClientConfig("localhost")
	if err != nil {
		t.Fatal(err)
	}
	cfg.NextProtos = []string{"h2"}
	ctx, cancel := context.WithTimeout(context.Background(), rotWait)
	defer cancel()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", address)
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", address, err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState()
}

// rotWaitForSerial waits for the certificate watcher's record, after the
// first mark records of gw's log, of a reload that changed a source, then
// checks that a new TLS connection to address gets the certificate with
// serial. It returns how long the wait took.
func rotWaitForSerial(t *testing.T, gw *ssetest.Gateway, mark int, address, clientDir string, serial *big.Int) time.Duration {
	t.Helper()
	start := time.Now()
	// A reload that reads the new key with the old certificate fails and
	// logs reloaded=0, so only reloaded=1 or more shows the new pair in use.
	waitForRecordAfter(t, gw, mark, rotWait, "recording a reload of the replaced certificate files", func(record map[string]any) bool {
		reloaded, _ := record["reloaded"].(float64)
		return reloaded >= 1
	}, "certificates reloaded")
	took := time.Since(start)
	if got := rotHandshake(t, address, clientDir).PeerCertificates[0].SerialNumber; got.Cmp(serial) != 0 {
		t.Fatalf("new connections get serial %x after the watcher reloaded the files, want %x", got, serial)
	}
	return took
}

// opensslVersionPattern finds the protocol version in s_client's output,
// as in "New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256".
var opensslVersionPattern = regexp.MustCompile(`New, (TLSv1\.[0-9]), Cipher is`)

// rotOpenSSLProbe runs openssl s_client against address, offering ALPN
// h2 with the client certificate of clientDir, and returns its output.
// Without openssl the check is skipped, unless CI is set.
func rotOpenSSLProbe(t *testing.T, address, clientDir string) string {
	t.Helper()
	if _, err := os.Stat(opensslPath); err != nil {
		message := fmt.Sprintf("%s not found (%v); apt-get install openssl", opensslPath, err)
		if os.Getenv("CI") != "" {
			t.Fatal(message)
		}
		t.Skip(message)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rotWait)
	defer cancel()
	// With stdin at its end, s_client closes right after the handshake.
	cmd := exec.CommandContext(ctx, opensslPath, "s_client",
		"-connect", address,
		"-alpn", "h2",
		"-servername", "localhost",
		"-verify_hostname", "localhost",
		"-verify_return_error",
		"-cert", filepath.Join(clientDir, tlsutil.ClientCertFile),
		"-key", filepath.Join(clientDir, tlsutil.ClientKeyFile),
		"-CAfile", filepath.Join(clientDir, tlsutil.RootCertFile))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	return string(out)
}

// rotCheckALPN checks that a new connection to a gateway listener
// negotiates h2 with TLS 1.2 or newer, for a gRPC client that enforces
// ALPN (grpc-go since 1.67), for crypto/tls and for openssl s_client.
func rotCheckALPN(t *testing.T, address, clientDir string) {
	t.Helper()

	// grpc-go refuses a server that negotiates no protocol, so the call
	// succeeds only with h2.
	var p peer.Peer
	client := ssetest.DialTLS(t, address, clientDir, "localhost")
	ctx, cancel := context.WithTimeout(testContext(t), rotWait)
	defer cancel()
	if _, err := client.GetCapabilities(ctx, &ssepb.Empty{}, grpc.Peer(&p)); err != nil {
		t.Errorf("gRPC client: GetCapabilities() error = %v, want nil", err)
	} else if info, ok := p.AuthInfo.(credentials.TLSInfo); !ok {
		t.Errorf("gRPC client: peer AuthInfo = %T, want credentials.TLSInfo", p.AuthInfo)
	} else {
		if got := info.State.NegotiatedProtocol; got != "h2" {
			t.Errorf("gRPC client: negotiated protocol = %q, want h2", got)
		}
		if got := info.State.Version; got < tls.VersionTLS12 {
			t.Errorf("gRPC client: TLS version = %s, want 1.2 or newer", tls.VersionName(got))
		}
	}

	state := rotHandshake(t, address, clientDir)
	if state.NegotiatedProtocol != "h2" {
		t.Errorf("crypto/tls: negotiated protocol = %q, want h2", state.NegotiatedProtocol)
	}
	if state.Version < tls.VersionTLS12 {
		t.Errorf("crypto/tls: TLS version = %s, want 1.2 or newer", tls.VersionName(state.Version))
	}

	out := rotOpenSSLProbe(t, address, clientDir)
	if !strings.Contains(out, "ALPN protocol: h2") {
		t.Errorf("openssl s_client printed no \"ALPN protocol: h2\"; output:\n%s", out)
	}
	if !strings.Contains(out, "Verify return code: 0 (ok)") {
		t.Errorf("openssl s_client did not verify the gateway's certificate; output:\n%s", out)
	}
	if match := opensslVersionPattern.FindStringSubmatch(out); match == nil || (match[1] != "TLSv1.2" && match[1] != "TLSv1.3") {
		t.Errorf("openssl s_client protocol = %q, want TLSv1.2 or TLSv1.3; output:\n%s", match, out)
	}
}

// rotLoad runs calls through a gateway until stopped and counts them.
type rotLoad struct {
	stop chan struct{}
	wg   sync.WaitGroup

	succeeded atomic.Int64
	mu        sync.Mutex // guards failures
	failures  []error
}

func (l *rotLoad) record(err error) {
	if err == nil {
		l.succeeded.Add(1)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, err)
}

func (l *rotLoad) failed() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.failures)
}

// run calls call in a loop on a goroutine until Stop.
func (l *rotLoad) run(call func() error) {
	l.wg.Go(func() {
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			l.record(call())
		}
	})
}

// rotWaitForCalls polls until calls of load have succeeded, or fails the
// test after rotWait.
func rotWaitForCalls(t *testing.T, load *rotLoad, calls int64) {
	t.Helper()
	// A count reached by many loops at once signals nothing, so poll it.
	deadline := time.Now().Add(rotWait)
	for load.succeeded.Load() < calls {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls succeeded within %v, want %d; failures: %v", load.succeeded.Load(), rotWait, calls, load.failed())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stopAll ends the loops and waits for their last calls.
func (l *rotLoad) stopAll() {
	close(l.stop)
	l.wg.Wait()
}

// TestCertificateRotationUnderLoad checks that replacing a listener's
// certificate files, by renaming new ones into place, fails no call
// running at the time, that new connections get the new certificate
// within 10 s without a restart, and that a stream opened before keeps
// working on its connection with the old certificate. Before and after,
// a gRPC client that enforces ALPN, crypto/tls and openssl s_client all
// negotiate h2 with TLS 1.2 or newer. Servers that build their TLS
// configuration in GetConfigForClient, as certificate reload does, have
// lost ALPN elsewhere, and grpc-go clients since 1.67 refuse them (C25).
func TestCertificateRotationUnderLoad(t *testing.T) {
	certs := ssetest.NewCerts(t)
	plugin := startSecPlugin(t)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", &config.ServerTLS{Dir: certs.GatewayDir})},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
	})
	address := gw.Addrs[0]
	oldSerial := rotHandshake(t, address, certs.QlikDir).PeerCertificates[0].SerialNumber

	t.Run("ALPN before", func(t *testing.T) { rotCheckALPN(t, address, certs.QlikDir) })

	// A stream opened before the replacement, with one exchange.
	md := secFunctionMetadata(t, 20)
	var longPeer peer.Peer
	longCtx, cancelLong := context.WithTimeout(metadata.NewOutgoingContext(testContext(t), md), time.Minute)
	defer cancelLong()
	long, err := ssetest.DialTLS(t, address, certs.QlikDir, "localhost").ExecuteFunction(longCtx, grpc.Peer(&longPeer))
	if err != nil {
		t.Fatalf("opening the long stream: %v", err)
	}
	if err := long.Send(ssetest.NumericBundle(10, 1)); err != nil {
		t.Fatalf("long stream Send() error: %v", err)
	}
	if _, err := long.Recv(); err != nil {
		t.Fatalf("long stream Recv() error: %v", err)
	}

	// Calls run all along: two loops share one connection, and one dials
	// a new connection, with a new handshake, for each call.
	load := &rotLoad{stop: make(chan struct{})}
	shared := ssetest.DialTLS(t, address, certs.QlikDir, "localhost")
	loadCtx := testContext(t)
	for range 2 {
		load.run(func() error {
			received, err := secStream(loadCtx, shared.ExecuteFunction, md, ssetest.NumericBundle(20, 1))
			if err == nil && (len(received) != 1 || len(received[0].GetRows()) != 20) {
				err = fmt.Errorf("ExecuteFunction() returned %d bundles, want 1 of 20 rows", len(received))
			}
			return err
		})
	}
	clientTLS, err := tlsutil.ClientFilesInDir(certs.QlikDir, "", "", "").ClientConfig("localhost")
	if err != nil {
		t.Fatal(err)
	}
	load.run(func() error {
		conn, err := grpc.NewClient("passthrough:///"+address, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(loadCtx, rotWait)
		defer cancel()
		_, err = ssepb.NewConnectorClient(conn).GetCapabilities(ctx, &ssepb.Empty{})
		return err
	})
	stopped := false
	stopLoad := func() {
		if !stopped {
			stopped = true
			load.stopAll()
		}
	}
	defer stopLoad()

	// Let the calls run a little with the old files.
	rotWaitForCalls(t, load, 30)

	// Renew: the key first, then the certificate, each renamed into place.
	newCert, newKey := rotIssueServer(t, certs, time.Time{})
	newSerial := ssetest.CertSerial(t, newCert)
	files := tlsutil.ServerFilesInDir(certs.GatewayDir, "", "", "")
	before := load.succeeded.Load()
	mark := logMark(gw)
	rotReplace(t, rotFile{files.KeyFile, newKey}, rotFile{files.CertFile, newCert})
	took := rotWaitForSerial(t, gw, mark, address, certs.QlikDir, newSerial)
	t.Logf("new certificate reloaded %v after the files were replaced", took)

	// Let the calls go on a little with the new files, then stop them.
	rotWaitForCalls(t, load, before+30)
	stopLoad()
	if failures := load.failed(); len(failures) != 0 {
		t.Errorf("%d calls failed during the replacement, want none; first: %v", len(failures), failures[0])
	}
	if got := load.succeeded.Load(); got <= before {
		t.Errorf("calls succeeded after the replacement = %d, want some", got-before)
	}
	t.Logf("%d calls succeeded, %d of them after the replacement began", load.succeeded.Load(), load.succeeded.Load()-before)

	// The long stream goes on, on its connection with the old certificate.
	if err := long.Send(ssetest.NumericBundle(10, 1)); err != nil {
		t.Errorf("long stream Send() after the replacement: %v", err)
	}
	if _, err := long.Recv(); err != nil {
		t.Errorf("long stream Recv() after the replacement: %v", err)
	}
	if err := long.CloseSend(); err != nil {
		t.Errorf("long stream CloseSend(): %v", err)
	}
	if _, err := long.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("long stream end = %v, want io.EOF", err)
	}
	if info, ok := longPeer.AuthInfo.(credentials.TLSInfo); !ok {
		t.Errorf("long stream peer AuthInfo = %T, want credentials.TLSInfo", longPeer.AuthInfo)
	} else if got := info.State.PeerCertificates[0].SerialNumber; got.Cmp(oldSerial) != 0 {
		t.Errorf("long stream's certificate serial = %x, want the old %x", got, oldSerial)
	}

	t.Run("ALPN after", func(t *testing.T) { rotCheckALPN(t, address, certs.QlikDir) })

	for reason, count := range gw.HandshakeFailures() {
		if count != 0 {
			t.Errorf("HandshakeFailures()[%q] = %d, want 0", reason, count)
		}
	}
	secCheckLogClean(t, gw)
}

// rotTLSPlugin is a TLS test plugin whose GetCapabilities returns, as its
// pluginIdentifier, the common name of the client certificate and the
// protocol negotiated by ALPN on the connection it came on.
func rotTLSPlugin(t *testing.T, address, serverDir string) *ssetest.Plugin {
	t.Helper()
	cfg, err := tlsutil.ServerFilesInDir(serverDir, "", "", "").ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	return ssetest.StartPluginAt(t, address, &ssetest.Connector{
		Capabilities: func(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
			identifier := "unknown"
			if p, ok := peer.FromContext(ctx); ok {
				if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
					identifier = "CN=" + info.State.PeerCertificates[0].Subject.CommonName + " ALPN=" + info.State.NegotiatedProtocol
				}
			}
			return &ssepb.Capabilities{PluginIdentifier: identifier}, nil
		},
	}, grpc.Creds(credentials.NewTLS(cfg)))
}

// rotNoALPNServer is a TLS server without ALPN that sends nothing after
// the handshake, like a plugin with a hand-made TLS setup.
type rotNoALPNServer struct {
	address    string
	handshakes atomic.Int64
}

// startNoALPNServer serves TLS with the plugin-style folder serverDir,
// requiring client certificates and negotiating no protocol, until the
// test ends.
func startNoALPNServer(t *testing.T, serverDir string) *rotNoALPNServer {
	t.Helper()
	cfg, err := tlsutil.ServerFilesInDir(serverDir, "", "", "").ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.NextProtos) != 0 {
		t.Fatalf("server NextProtos = %q, want none", cfg.NextProtos)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rotNoALPNServer{address: lis.Addr().String()}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		for _, conn := range conns {
			conn.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			raw, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, raw)
			mu.Unlock()
			wg.Go(func() {
				defer raw.Close()
				conn := tls.Server(raw, cfg)
				if conn.Handshake() != nil {
					return
				}
				s.handshakes.Add(1)
				_, _ = io.Copy(io.Discard, conn)
			})
		}
	})
	return s
}

// TestBackendALPN checks the gateway as a TLS client. It negotiates h2
// with a plugin that offers ALPN. A plugin that negotiates no protocol is
// rejected by grpc-go clients since 1.67. Then the gateway logs one
// "replica failing" record that names the cause, however often it
// reconnects, and fails calls with Unavailable instead of hanging (C25).
func TestBackendALPN(t *testing.T) {
	certs := ssetest.NewCerts(t)
	serverDir := certs.ServerDir(t, tlsutil.LeafRequest{Hosts: []string{"127.0.0.1"}})

	t.Run("plugin with ALPN", func(t *testing.T) {
		plugin := rotTLSPlugin(t, "127.0.0.1:0", serverDir)
		client := gatewayWithBackends(t, config.Backend{Address: plugin.Addr, TLS: &config.ClientTLS{Dir: certs.QlikDir}})
		identifier, err := fetchPluginIdentifier(t, client)
		if err != nil {
			t.Fatalf("GetCapabilities() error = %v, want nil", err)
		}
		if want := "CN=sse_client ALPN=h2"; identifier != want {
			t.Errorf("plugin saw %q, want %q", identifier, want)
		}
	})

	t.Run("plugin without ALPN", func(t *testing.T) {
		server := startNoALPNServer(t, serverDir)
		plugin := ssetest.FailFast(ssetest.Engine(server.address))
		plugin.Backends[0].TLS = &config.ClientTLS{Dir: certs.QlikDir}
		gw := ssetest.StartGateway(t, &config.Config{
			Listeners: []config.Listener{ssetest.Listen("R", nil)},
			Engines:   map[string]*config.Engine{"R": plugin},
		})

		// The gateway connects, and connects again, each time completing
		// the TLS handshake before it rejects the missing ALPN. The gateway
		// logs only the first failure, so only the server's count shows the
		// retries.
		deadline := time.Now().Add(rotWait)
		for server.handshakes.Load() < 3 {
			if time.Now().After(deadline) {
				t.Fatalf("handshakes at the plugin = %d after %v, want 3 or more", server.handshakes.Load(), rotWait)
			}
			time.Sleep(10 * time.Millisecond)
		}
		record := gw.Logs.WaitFor(t, "replica failing", rotWait, nil)
		if got := record["backend"]; got != server.address {
			t.Errorf("replica failing backend = %v, want %s", got, server.address)
		}
		if message, _ := record["error"].(string); !strings.Contains(message, "ALPN") {
			t.Errorf("replica failing error = %q, want it to name the missing ALPN", message)
		}

		client := ssetest.Dial(t, gw.Addrs[0])
		ctx, cancel := context.WithTimeout(testContext(t), rotWait)
		defer cancel()
		_, err := client.GetCapabilities(ctx, &ssepb.Empty{})
		if got := status.Code(err); got != codes.Unavailable {
			t.Errorf("GetCapabilities() code = %v (%v), want Unavailable", got, err)
		}
		if !strings.Contains(status.Convert(err).Message(), "ALPN") {
			t.Errorf("GetCapabilities() message = %q, want it to name the missing ALPN", status.Convert(err).Message())
		}

		seen := server.handshakes.Load()
		for server.handshakes.Load() < seen+2 {
			if time.Now().After(deadline) {
				t.Fatalf("handshakes at the plugin = %d after %v, want %d or more", server.handshakes.Load(), rotWait, seen+2)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if records := gw.Logs.Records("replica failing"); len(records) != 1 {
			t.Errorf("got %d replica failing records after %d handshakes, want 1: %v", len(records), server.handshakes.Load(), records)
		}
	})
}

// TestBackendCertificateRotation checks that replacing the client
// certificate files of a TLS backend reaches the plugin on new
// connections, without a restart of the gateway, while the open
// connection keeps the old certificate.
func TestBackendCertificateRotation(t *testing.T) {
	certs := ssetest.NewCerts(t)
	serverDir := certs.ServerDir(t, tlsutil.LeafRequest{Hosts: []string{"127.0.0.1"}})
	clientDir := certs.ClientDir(t, nil, tlsutil.LeafRequest{CommonName: "gateway-old"})
	plugin := rotTLSPlugin(t, "127.0.0.1:0", serverDir)
	engine := ssetest.FailFast(ssetest.Engine(plugin.Addr))
	engine.Backends[0].TLS = &config.ClientTLS{Dir: clientDir}
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	client := ssetest.Dial(t, gw.Addrs[0])
	identifier, err := fetchPluginIdentifier(t, client)
	if err != nil {
		t.Fatalf("GetCapabilities() error = %v, want nil", err)
	}
	if identifier != "CN=gateway-old ALPN=h2" {
		t.Fatalf("plugin saw %q, want CN=gateway-old ALPN=h2", identifier)
	}

	rotRenewClientCert(t, gw, certs, clientDir)

	// The open connection keeps the certificate of its handshake.
	identifier, err = fetchPluginIdentifier(t, client)
	if err != nil {
		t.Errorf("GetCapabilities() on the open connection error = %v, want nil", err)
	} else if identifier != "CN=gateway-old ALPN=h2" {
		t.Errorf("plugin saw %q on the open connection, want CN=gateway-old ALPN=h2", identifier)
	}

	// A restart of the plugin ends the connections; the new ones present
	// the new certificate.
	plugin.Server.Stop()
	rotTLSPlugin(t, plugin.Addr, serverDir)
	// Only a call shows that the pool has a new connection: the gateway
	// logs the probe connection's recovery, not the pool's.
	deadline := time.Now().Add(rotWait)
	for {
		identifier, err := fetchPluginIdentifier(t, client)
		if err == nil && identifier == "CN=gateway-new ALPN=h2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin saw %q (%v) %v after its restart, want CN=gateway-new ALPN=h2", identifier, err, rotWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	secCheckLogClean(t, gw)
}

// rotReadyz returns the status code and body of the gateway's /readyz.
func rotReadyz(t *testing.T, gw *ssetest.Gateway) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: rotWait}
	response, err := client.Get("http://" + gw.AdminAddr().String() + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		t.Fatalf("reading /readyz: %v", err)
	}
	return response.StatusCode, string(body)
}

// rotWaitReady polls /readyz until its status is 200, and returns its
// body.
func rotWaitReady(t *testing.T, gw *ssetest.Gateway) string {
	t.Helper()
	// The gateway logs no record when it becomes ready, so poll /readyz.
	deadline := time.Now().Add(rotWait)
	for {
		code, body := rotReadyz(t, gw)
		if code == http.StatusOK {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %q after %v, want 200", code, body, rotWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rotWarningFor returns the /readyz warning line about the certificate
// named commonName, or "".
func rotWarningFor(body, commonName string) string {
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, "warning: ") && strings.Contains(line, fmt.Sprintf("certificate %q", commonName)) {
			return line
		}
	}
	return ""
}

// TestReadyzExpiringCertificates checks that /readyz lists, as warnings
// that leave the gateway ready, the listener and backend certificates
// that expire within certificate_expiry_warning, and only those, and that
// the gateway logs the same at start.
func TestReadyzExpiringCertificates(t *testing.T) {
	now := time.Now()
	certs := ssetest.NewCerts(t)
	listenerDir := certs.ServerDir(t, tlsutil.LeafRequest{Hosts: ssetest.TestHosts, NotAfter: now.Add(7*24*time.Hour + time.Hour)})
	backendClient := certs.ClientDir(t, nil, tlsutil.LeafRequest{CommonName: "gateway-client", NotAfter: now.Add(20*24*time.Hour + time.Hour)})
	plugin := rotTLSPlugin(t, "127.0.0.1:0", certs.ServerDir(t, tlsutil.LeafRequest{Hosts: []string{"127.0.0.1"}}))

	tests := []struct {
		name   string
		window time.Duration // 0 keeps the default, 30 days
		// want and wantNot are common names of certificates that must
		// and must not be listed.
		want, wantNot []string
	}{
		{name: "default 30 days", want: []string{"sse_server", "gateway-client"}},
		{name: "14 days", window: 14 * 24 * time.Hour, want: []string{"sse_server"}, wantNot: []string{"gateway-client"}},
		{name: "3 days", window: 3 * 24 * time.Hour, wantNot: []string{"sse_server", "gateway-client"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engine := ssetest.Engine(plugin.Addr)
			engine.Backends[0].TLS = &config.ClientTLS{Dir: backendClient}
			gw := ssetest.StartGateway(t, &config.Config{
				Listeners:                []config.Listener{ssetest.Listen("R", &config.ServerTLS{Dir: listenerDir})},
				Engines:                  map[string]*config.Engine{"R": engine},
				CertificateExpiryWarning: tt.window,
			})
			body := rotWaitReady(t, gw)

			if !strings.HasPrefix(body, "ready\n") {
				t.Errorf("/readyz body = %q, want it to start with ready", body)
			}
			for _, name := range tt.want {
				if line := rotWarningFor(body, name); line == "" {
					t.Errorf("/readyz lists no warning for %q; body:\n%s", name, body)
				}
				gw.Logs.WaitFor(t, "certificate expires soon; renew it (ssegw certs init --force keeps the CA of a set it made), the gateway reloads it without a restart", rotWait, func(r map[string]any) bool {
					warning, _ := r["warning"].(string)
					return strings.Contains(warning, fmt.Sprintf("certificate %q", name))
				})
			}
			if line := rotWarningFor(body, "sse_server"); line != "" && !strings.HasSuffix(line, "in 7 days") {
				t.Errorf("/readyz warning = %q, want it to end with the days left, in 7 days", line)
			}
			for _, name := range tt.wantNot {
				if line := rotWarningFor(body, name); line != "" {
					t.Errorf("/readyz lists %q, want no warning for %q", line, name)
				}
			}
			if got, want := strings.Count(body, "warning: "), len(tt.want); got != want {
				t.Errorf("/readyz lists %d warnings, want %d; body:\n%s", got, want, body)
			}
		})
	}
}

// TestReadyzAfterRenewal checks that once an expiring listener
// certificate is replaced, /readyz stops listing it without a restart.
func TestReadyzAfterRenewal(t *testing.T) {
	certs := ssetest.NewCerts(t)
	listenerDir := certs.ServerDir(t, tlsutil.LeafRequest{Hosts: ssetest.TestHosts, NotAfter: time.Now().Add(5 * 24 * time.Hour)})
	plugin := startSecPlugin(t)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", &config.ServerTLS{Dir: listenerDir})},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
	})
	if line := rotWarningFor(rotWaitReady(t, gw), "sse_server"); line == "" {
		t.Fatal("/readyz lists no warning for the listener's certificate before the renewal")
	}

	cert, key := rotIssueServer(t, certs, time.Now().Add(365*24*time.Hour))
	files := tlsutil.ServerFilesInDir(listenerDir, "", "", "")
	mark := logMark(gw)
	rotReplace(t, rotFile{files.KeyFile, key}, rotFile{files.CertFile, cert})
	rotWaitForSerial(t, gw, mark, gw.Addrs[0], certs.QlikDir, ssetest.CertSerial(t, cert))
	// /readyz checks the certificates in use on each request, so one
	// request after the reload suffices.
	code, body := rotReadyz(t, gw)
	if code != http.StatusOK {
		t.Errorf("/readyz = %d %q after the renewal, want 200", code, body)
	}
	if line := rotWarningFor(body, "sse_server"); line != "" {
		t.Errorf("/readyz still lists the replaced certificate after the watcher reloaded it: %q; body:\n%s", line, body)
	}
}

// TestReloadedBackendCertificatesWatched checks that the gateway reloads
// the client certificate of a TLS backend added by a reload when it is
// renewed in place, as it does for the configuration it started with.
func TestReloadedBackendCertificatesWatched(t *testing.T) {
	certs := ssetest.NewCerts(t)
	clientDir := certs.ClientDir(t, nil, tlsutil.LeafRequest{CommonName: "gateway-old"})
	gw := ssetest.StartGateway(t, reloadConfig(time.Second, "127.0.0.1:1"))
	next := reloadConfig(time.Second, "127.0.0.1:1")
	next.Engines["T"] = &config.Engine{Backends: []config.Backend{{
		Address: "127.0.0.1:1", TLS: &config.ClientTLS{Dir: clientDir, ServerName: "localhost"},
	}}}
	next.ApplyDefaults()
	reloadApply(t, gw, next)

	rotRenewClientCert(t, gw, certs, clientDir)
}

// rotRenewClientCert replaces the client certificate in clientDir with one
// for CN gateway-new, and waits until the gateway has reloaded it.
func rotRenewClientCert(t *testing.T, gw *ssetest.Gateway, certs *ssetest.Certs, clientDir string) {
	t.Helper()
	cert, key, err := certs.CA.Issue(tlsutil.LeafRequest{CommonName: "gateway-new", Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	files := tlsutil.ClientFilesInDir(clientDir, "", "", "")
	rotReplace(t, rotFile{files.KeyFile, key}, rotFile{files.CertFile, cert})
	gw.Logs.WaitFor(t, "certificates reloaded", rotWait, func(r map[string]any) bool {
		reloaded, _ := r["reloaded"].(float64)
		return reloaded >= 1
	})
}

// TestReadyzExpiredListenerCertificate checks that /readyz returns 503,
// naming the certificate, when the listener's certificate in use has
// expired, because every Qlik engine rejects it. An expired old root kept
// beside the current one in the client CA file leaves it at 200, and so
// does an expired certificate put in place of a working one, which the
// gateway rejects.
func TestReadyzExpiredListenerCertificate(t *testing.T) {
	certs := ssetest.NewCerts(t)
	listenerDir := certs.ServerDir(t, tlsutil.LeafRequest{Hosts: ssetest.TestHosts})
	plugin := startSecPlugin(t)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", &config.ServerTLS{Dir: listenerDir})},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
	})
	rotWaitReady(t, gw)

	// An expired old root kept beside the current one in the client CA
	// file leaves the gateway ready: the listener still works.
	files := tlsutil.ServerFilesInDir(listenerDir, "", "", "")
	oldRootKey, err := tlsutil.GenerateKey(tlsutil.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	oldRootTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "old_root"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	oldRoot, err := x509.CreateCertificate(rand.Reader, oldRootTemplate, oldRootTemplate, oldRootKey.Public(), oldRootKey)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := os.ReadFile(files.ClientCAFile)
	if err != nil {
		t.Fatal(err)
	}
	mark := logMark(gw)
	rotReplace(t, rotFile{files.ClientCAFile, append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: oldRoot})...)})
	waitForRecordAfter(t, gw, mark, rotWait, "the client CA file reloaded", func(map[string]any) bool { return true }, "certificates reloaded")
	if code, body := rotReadyz(t, gw); code != http.StatusOK || rotWarningFor(body, "old_root") == "" {
		t.Errorf("/readyz = %d %q with an expired old root in the client CA file, want 200 with a warning about it", code, body)
	}

	// An expired certificate, as one that was never renewed becomes.
	cert, key, err := certs.CA.Issue(tlsutil.LeafRequest{
		CommonName: "sse_server", Hosts: ssetest.TestHosts, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	mark = logMark(gw)
	rotReplace(t, rotFile{files.KeyFile, key}, rotFile{files.CertFile, cert})
	waitForRecordAfter(t, gw, mark, rotWait, "the expired certificate rejected", func(record map[string]any) bool {
		return strings.Contains(fmt.Sprint(record["error"]), `certificate "sse_server" expired on`)
	}, "certificates not reloaded; the current ones stay")
	if code, body := rotReadyz(t, gw); code != http.StatusOK {
		t.Errorf("/readyz = %d %q after an expired certificate was rejected, want 200", code, body)
	}
	if cert := rotHandshake(t, gw.Addrs[0], certs.QlikDir).PeerCertificates[0]; !time.Now().Before(cert.NotAfter) {
		t.Errorf("the listener presents a certificate that expired on %s after an expired one was rejected, want the working one", cert.NotAfter)
	}

	// A gateway that starts with it, as one left running past its
	// certificate's end would have it, is not ready.
	expired := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", &config.ServerTLS{Dir: listenerDir})},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
	})
	code, body := rotReadyz(t, expired)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `certificate "sse_server" expired on`) {
		t.Errorf("/readyz = %d %q with the listener's certificate expired, want 503 naming it", code, body)
	}
	if n := strings.Count(body, `certificate "sse_server" expired on`); n != 1 {
		t.Errorf("/readyz body names the expired certificate %d times, want once: %q", n, body)
	}
}

// TestRenewedCertificateWithoutHostWarns checks that a listener
// certificate renewed without a name that an engine's hosts list is
// warned about once the watcher has reloaded it, without waiting for a
// restart or a reload of the configuration.
func TestRenewedCertificateWithoutHostWarns(t *testing.T) {
	const message = "engine host name missing from the gateway's certificate"
	certs := ssetest.NewCerts(t)
	listenerDir := certs.ServerDir(t, tlsutil.LeafRequest{Hosts: []string{"localhost", "py.gateway.example"}})
	engine := ssetest.Engine(ssetest.FreeAddress(t))
	engine.Hosts = []string{"py.gateway.example"}
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("Py", &config.ServerTLS{Dir: listenerDir})},
		Engines:   map[string]*config.Engine{"Py": engine},
	})
	if got := len(gw.Logs.Records(message)); got != 0 {
		t.Fatalf("got %d %q records at start, want none: the certificate lists the name", got, message)
	}

	cert, key, err := certs.CA.Issue(tlsutil.LeafRequest{CommonName: "renewed", Hosts: []string{"localhost"}, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatal(err)
	}
	files := tlsutil.ServerFilesInDir(listenerDir, "", "", "")
	rotReplace(t, rotFile{files.KeyFile, key}, rotFile{files.CertFile, cert})
	record := gw.Logs.WaitFor(t, message, rotWait, nil)
	if warning, _ := record["warning"].(string); !strings.HasPrefix(warning, "engines.Py.hosts: py.gateway.example is not a name in the certificate of listeners[0].tls") {
		t.Errorf("record warning = %q, want it to name engine Py's host", warning)
	}
}

// TestRenewedBackendCertificateKeepsQuiet checks that renewing only a
// backend's client certificate does not log the host-name warnings
// again: the listener's certificate, which they are about, is unchanged.
func TestRenewedBackendCertificateKeepsQuiet(t *testing.T) {
	const message = "engine host name missing from the gateway's certificate"
	certs := ssetest.NewCerts(t)
	clientDir := certs.ClientDir(t, nil, tlsutil.LeafRequest{CommonName: "gateway"})
	engine := ssetest.Engine()
	engine.Hosts = []string{"py.gateway.example"}
	engine.Backends = []config.Backend{{Address: "127.0.0.1:1", TLS: &config.ClientTLS{Dir: clientDir, ServerName: "localhost"}}}
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("Py", &config.ServerTLS{Dir: certs.GatewayDir})},
		Engines:   map[string]*config.Engine{"Py": engine},
	})
	if got := len(gw.Logs.Records(message)); got != 1 {
		t.Fatalf("got %d %q records at start, want 1", got, message)
	}

	rotRenewClientCert(t, gw, certs, clientDir)
	if got := len(gw.Logs.Records(message)); got != 1 {
		t.Errorf("got %d %q records after a backend's certificate was renewed, want still 1", got, message)
	}
}
