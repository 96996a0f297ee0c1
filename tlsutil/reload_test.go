package tlsutil_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssegw/ssegw/internal/fswatch"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/tlsutil"
)

// reloadWait bounds every wait for a reload to take effect.
const reloadWait = 10 * time.Second

// tlsServer accepts TLS connections with cfg on 127.0.0.1 until the test
// ends, and completes each handshake.
func tlsServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		lis.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				if err := conn.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
					return
				}
				if conn.(*tls.Conn).Handshake() != nil {
					return
				}
				// Wait for the client to close, so that it can read the
				// session first.
				_, _ = conn.Read(make([]byte, 1))
			})
		}
	})
	return lis.Addr().String()
}

// handshakeState connects to address as the Qlik client of set, offering
// ALPN h2, and returns the connection's state.
func handshakeState(t *testing.T, set fixture, address string) tls.ConnectionState {
	t.Helper()
	cfg, err := tlsutil.ClientFilesInDir(set.QlikDir, "", "", "").ClientConfig("localhost")
	if err != nil {
		t.Fatalf("ClientConfig() error: %v", err)
	}
	cfg.NextProtos = []string{"h2"}
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: handshakeTimeout}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	conn, err := dialer.DialContext(ctx, "tcp", address)
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", address, err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState()
}

// newServerPair issues a new server certificate for the set's hosts.
func newServerPair(t *testing.T, set fixture) (certPEM, keyPEM []byte) {
	t.Helper()
	return ssetest.IssueLeaf(t, set.ca, tlsutil.LeafRequest{
		CommonName: "sse_server",
		Hosts:      testHosts,
		Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// TestServerSourceNegotiatesH2 checks that a server built on a source
// negotiates ALPN "h2" with TLS 1.2 or newer, although its configurations
// come from GetConfigForClient: gRPC clients since grpc-go 1.67 refuse a
// server that negotiates no protocol.
func TestServerSourceNegotiatesH2(t *testing.T) {
	set := newFixture(t)
	source, err := tlsutil.NewServerSource("test listener", tlsutil.ServerFilesInDir(set.GatewayDir, "", "", ""))
	if err != nil {
		t.Fatalf("NewServerSource() error: %v", err)
	}
	address := tlsServer(t, source.ServerConfig())

	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			cfg, err := tlsutil.ClientFilesInDir(set.QlikDir, "", "", "").ClientConfig("localhost")
			if err != nil {
				t.Fatal(err)
			}
			cfg.NextProtos = []string{"h2"}
			cfg.MinVersion, cfg.MaxVersion = version, version
			dialer := &tls.Dialer{Config: cfg}
			ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
			defer cancel()
			conn, err := dialer.DialContext(ctx, "tcp", address)
			if err != nil {
				t.Fatalf("TLS handshake: %v", err)
			}
			defer conn.Close()
			state := conn.(*tls.Conn).ConnectionState()
			if state.NegotiatedProtocol != "h2" {
				t.Errorf("NegotiatedProtocol = %q, want h2", state.NegotiatedProtocol)
			}
			if state.Version != version {
				t.Errorf("Version = %s, want %s", tls.VersionName(state.Version), tls.VersionName(version))
			}
		})
	}

	t.Run("TLS 1.1 refused", func(t *testing.T) {
		cfg, err := tlsutil.ClientFilesInDir(set.QlikDir, "", "", "").ClientConfig("localhost")
		if err != nil {
			t.Fatal(err)
		}
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
		dialer := &tls.Dialer{Config: cfg}
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		conn, err := dialer.DialContext(ctx, "tcp", address)
		if err == nil {
			conn.Close()
			t.Fatal("TLS 1.1 handshake succeeded, want it refused")
		}
	})
}

// TestSourceReload checks that Reload makes new connections use replaced
// files, that a connection open before keeps its certificate, and that
// files that do not fit together leave the current configuration in
// place.
func TestSourceReload(t *testing.T) {
	set := newFixture(t)
	files := tlsutil.ServerFilesInDir(set.GatewayDir, "", "", "")
	source, err := tlsutil.NewServerSource("test listener", files)
	if err != nil {
		t.Fatalf("NewServerSource() error: %v", err)
	}
	address := tlsServer(t, source.ServerConfig())
	before := handshakeState(t, set, address).PeerCertificates[0].SerialNumber

	// Replace both files, then reload.
	certPEM, keyPEM := newServerPair(t, set)
	ssetest.ReplaceFile(t, files.KeyFile, keyPEM)
	ssetest.ReplaceFile(t, files.CertFile, certPEM)
	if err := source.Reload(); err != nil {
		t.Fatalf("Reload() error: %v", err)
	}
	want := ssetest.CertSerial(t, certPEM)
	if got := handshakeState(t, set, address).PeerCertificates[0].SerialNumber; got.Cmp(want) != 0 {
		t.Errorf("serial after Reload() = %x, want %x (before: %x)", got, want, before)
	}

	// A certificate whose key is not in the folder: Reload fails and
	// the configuration stays.
	current := source.Config()
	otherCert, _ := newServerPair(t, set)
	ssetest.ReplaceFile(t, files.CertFile, otherCert)
	err = source.Reload()
	if err == nil {
		t.Fatal("Reload() with a mismatched key = nil, want an error")
	}
	if !strings.Contains(err.Error(), "test listener") {
		t.Errorf("Reload() error = %q, want it to name the source", err)
	}
	if source.Config() != current {
		t.Error("Config() changed after a failed Reload(), want the previous configuration")
	}
	if got := handshakeState(t, set, address).PeerCertificates[0].SerialNumber; got.Cmp(want) != 0 {
		t.Errorf("serial after a failed Reload() = %x, want %x", got, want)
	}
}

// TestClientSourceReload checks that a client source presents a replaced
// client certificate after Reload.
func TestClientSourceReload(t *testing.T) {
	set := newFixture(t)
	files := tlsutil.ClientFilesInDir(set.QlikDir, "", "", "")
	source, err := tlsutil.NewClientSource("test backend", files, "localhost")
	if err != nil {
		t.Fatalf("NewClientSource() error: %v", err)
	}
	if got := source.Config().ServerName; got != "localhost" {
		t.Errorf("Config().ServerName = %q, want localhost", got)
	}

	certPEM, keyPEM := ssetest.IssueLeaf(t, set.ca, tlsutil.LeafRequest{CommonName: "renewed", Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	ssetest.ReplaceFile(t, files.KeyFile, keyPEM)
	ssetest.ReplaceFile(t, files.CertFile, certPEM)
	if err := source.Reload(); err != nil {
		t.Fatalf("Reload() error: %v", err)
	}
	var names []string
	for _, cert := range source.Certificates() {
		names = append(names, cert.Subject.CommonName)
	}
	slices.Sort(names)
	if want := []string{"renewed", "sse_root"}; !slices.Equal(names, want) {
		t.Errorf("Certificates() common names = %q, want %q: the renewed client certificate and its CA", names, want)
	}
}

// runWatcher loads a server source of files and runs a watcher of it, with
// its log, until the test ends.
func runWatcher(t *testing.T, files tlsutil.ServerFiles) (*tlsutil.Source, *ssetest.SyncBuffer) {
	t.Helper()
	source, err := tlsutil.NewServerSource("test listener", files)
	if err != nil {
		t.Fatalf("NewServerSource() error: %v", err)
	}
	logs := &ssetest.SyncBuffer{}
	watcher := tlsutil.NewWatcher(slog.New(slog.NewTextHandler(logs, nil)))
	watcher.Add(source)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := watcher.Run(ctx); err != nil {
		t.Fatalf("Run() error: %v", err)
	}
	return source, logs
}

// TestWatcherReloadsRenamedFiles checks that a running watcher notices
// certificate files renamed into place and serves the new certificate to
// new connections within 10 s, logging the reload.
func TestWatcherReloadsRenamedFiles(t *testing.T) {
	set := newFixture(t)
	files := tlsutil.ServerFilesInDir(set.GatewayDir, "", "", "")
	source, logs := runWatcher(t, files)
	address := tlsServer(t, source.ServerConfig())

	certPEM, keyPEM := newServerPair(t, set)
	ssetest.ReplaceFile(t, files.KeyFile, keyPEM)
	ssetest.ReplaceFile(t, files.CertFile, certPEM)
	want := ssetest.CertSerial(t, certPEM)

	// A reload that reads the new key with the old certificate fails and
	// logs reloaded=0, so only reloaded=1 shows the new pair in use.
	logs.WaitForLine(t, "recording a reload of the source", reloadWait, func(line string) bool {
		return strings.Contains(line, `msg="certificates reloaded"`) && strings.Contains(line, "reloaded=1")
	})
	if got := handshakeState(t, set, address).PeerCertificates[0].SerialNumber; got.Cmp(want) != 0 {
		t.Errorf("serial = %x after the watcher reloaded the files, want %x; log:\n%s", got, want, logs)
	}
	if !strings.Contains(logs.String(), "certificate files changed; reloading") {
		t.Errorf("log = %q, want a record of the reload", logs)
	}
}

// TestWatcherIgnoresOtherFiles checks that a file written into a
// certificate folder that is not one of its sources' files, such as a
// log, reloads nothing. Absence has no event to wait for, so the test watches
// the log for ten times the watcher's settle time.
func TestWatcherIgnoresOtherFiles(t *testing.T) {
	set := newFixture(t)
	_, logs := runWatcher(t, tlsutil.ServerFilesInDir(set.GatewayDir, "", "", ""))

	if err := os.WriteFile(filepath.Join(set.GatewayDir, "gateway.log"), []byte("a line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * fswatch.Settle)
	if strings.Contains(logs.String(), "certificate files changed") {
		t.Errorf("log = %q, want no reload for a file that is no certificate", logs)
	}
}

// TestWatcherReloadLogsBadFiles checks that Watcher.Reload keeps a
// source's configuration when its files are bad, logs why as an error,
// and counts only the sources whose certificates changed: neither the
// bad one nor the good one that stayed the same.
func TestWatcherReloadLogsBadFiles(t *testing.T) {
	good, bad := newFixture(t), newFixture(t)
	goodSource, err := tlsutil.NewServerSource("good listener", tlsutil.ServerFilesInDir(good.GatewayDir, "", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	badFiles := tlsutil.ServerFilesInDir(bad.GatewayDir, "", "", "")
	badSource, err := tlsutil.NewServerSource("bad listener", badFiles)
	if err != nil {
		t.Fatal(err)
	}
	logs := &ssetest.SyncBuffer{}
	watcher := tlsutil.NewWatcher(slog.New(slog.NewTextHandler(logs, nil)))
	watcher.Add(goodSource)
	watcher.Add(badSource)

	originalKey := readFile(t, badFiles.KeyFile)
	ssetest.ReplaceFile(t, badFiles.KeyFile, []byte("not a key\n"))
	current := badSource.Config()
	if got := watcher.Reload(); got != 0 {
		t.Errorf("Reload() = %d, want 0", got)
	}
	if badSource.Config() != current {
		t.Error("bad source's Config() changed, want the previous configuration")
	}
	for _, want := range []string{"level=ERROR", "certificates not reloaded; the current ones stay", "bad listener"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log = %q, want it to contain %q", logs, want)
		}
	}
	for _, secret := range []string{"PRIVATE KEY", "not a key"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log = %q, want no %q in it", logs, secret)
		}
	}

	// The key put back as it was loads again, which the log reports once,
	// because the certificates did not change and nothing else would.
	ssetest.ReplaceFile(t, badFiles.KeyFile, originalKey)
	watcher.Reload()
	watcher.Reload()
	if got := strings.Count(logs.String(), "certificate files load again"); got != 1 {
		t.Errorf("log has %d records of files that load again, want 1:\n%s", got, logs)
	}
	if !strings.Contains(logs.String(), `msg="certificate files load again" source="bad listener"`) {
		t.Errorf("log = %q, want the record to name the bad listener", logs)
	}
}

// TestWatcherExpiring checks which certificates Expiring lists: those
// that expire within the window or have expired, of every registered
// source, and none of a removed source.
func TestWatcherExpiring(t *testing.T) {
	now := time.Now()
	set := newFixture(t)
	source := func(name string, notAfter time.Time) *tlsutil.Source {
		t.Helper()
		certPEM, keyPEM := ssetest.IssueLeaf(t, set.ca, tlsutil.LeafRequest{
			CommonName: name,
			Hosts:      testHosts,
			Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			NotBefore:  now.Add(-72 * time.Hour),
			NotAfter:   notAfter,
		})
		dir := ssetest.WriteFolder(t, map[string][]byte{
			tlsutil.RootCertFile:   tlsutil.EncodeCert(set.ca.Cert),
			tlsutil.ServerCertFile: certPEM,
			tlsutil.ServerKeyFile:  keyPEM,
		})
		s, err := tlsutil.NewServerSource(name+" listener", tlsutil.ServerFilesInDir(dir, "", "", ""))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	watcher := tlsutil.NewWatcher(slog.New(slog.DiscardHandler))
	watcher.Add(source("soon", now.Add(5*24*time.Hour+time.Hour)))
	watcher.Add(source("later", now.Add(90*24*time.Hour)))
	expired := source("expired", now.Add(-24*time.Hour))
	watcher.Add(expired)

	warnings := watcher.Expiring(30*24*time.Hour, now)
	if len(warnings) != 2 {
		t.Fatalf("Expiring() = %q, want 2 warnings", warnings)
	}
	for _, want := range []string{`soon listener: certificate "soon" expires on`, `expired listener: certificate "expired" expired on`} {
		if !slices.ContainsFunc(warnings, func(w string) bool { return strings.HasPrefix(w, want) }) {
			t.Errorf("Expiring() = %q, want a warning starting with %q", warnings, want)
		}
	}
	if !slices.ContainsFunc(warnings, func(w string) bool { return strings.HasSuffix(w, "in 5 days") }) {
		t.Errorf("Expiring() = %q, want the days left, in 5 days", warnings)
	}

	watcher.Remove(expired)
	if got := watcher.Expiring(30*24*time.Hour, now); len(got) != 1 {
		t.Errorf("Expiring() after Remove() = %q, want 1 warning", got)
	}
}

// watchServerFolder returns the server source of a folder in Qlik's
// layout, labelled "test listener", and a watcher that has it.
func watchServerFolder(t *testing.T, dir string) (*tlsutil.Source, *tlsutil.Watcher) {
	t.Helper()
	source, err := tlsutil.NewServerSource("test listener", tlsutil.ServerFilesInDir(dir, "", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	watcher := tlsutil.NewWatcher(slog.New(slog.DiscardHandler))
	watcher.Add(source)
	return source, watcher
}

// TestWatcherExpiringRoot checks that a root certificate that expires
// within the window is listed, as Source.Certificates documents: when the
// root expires, every certificate it signed stops working with it.
func TestWatcherExpiringRoot(t *testing.T) {
	now := time.Now()
	root, err := tlsutil.NewRootCA("short_root", 5*24*time.Hour, tlsutil.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	req := serverRequest()
	req.NotAfter = now.Add(365 * 24 * time.Hour)
	_, watcher := watchServerFolder(t, pluginFolder(t, root, req))

	warnings := watcher.Expiring(30*24*time.Hour, now)
	if !slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, `"short_root"`) }) {
		t.Errorf("Expiring() = %q, want a warning about the root short_root", warnings)
	}
}

// TestWatcherExpiringIntermediate checks that an intermediate CA in the
// certificate file is listed when it expires within the window, and that
// Unusable names it once it has expired. Either ends the chain's validity,
// while the leaf and the root still have years left.
func TestWatcherExpiringIntermediate(t *testing.T) {
	now := time.Now()
	root, err := tlsutil.NewRootCA("long_root", 10*365*24*time.Hour, tlsutil.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		notAfter time.Time
		expired  bool
	}{
		{name: "expiring", notAfter: now.Add(5 * 24 * time.Hour)},
		{name: "expired", notAfter: now.Add(-24 * time.Hour), expired: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key, err := tlsutil.GenerateKey(tlsutil.KeyECDSAP256)
			if err != nil {
				t.Fatal(err)
			}
			template := &x509.Certificate{
				SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "short_intermediate"},
				NotBefore: now.Add(-48 * time.Hour), NotAfter: tt.notAfter,
				IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
			}
			der, err := x509.CreateCertificate(rand.Reader, template, root.Cert, key.Public(), root.Key)
			if err != nil {
				t.Fatal(err)
			}
			intermediate, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			req := serverRequest()
			req.NotAfter = now.Add(365 * 24 * time.Hour)
			leafPEM, keyPEM, err := (&tlsutil.Authority{Cert: intermediate, Key: key}).Issue(req)
			if err != nil {
				t.Fatal(err)
			}
			dir := ssetest.WriteFolder(t, map[string][]byte{
				tlsutil.RootCertFile:   tlsutil.EncodeCert(root.Cert),
				tlsutil.ServerCertFile: append(leafPEM, tlsutil.EncodeCert(intermediate)...),
				tlsutil.ServerKeyFile:  keyPEM,
			})
			source, watcher := watchServerFolder(t, dir)

			warnings := watcher.Expiring(30*24*time.Hour, now)
			if len(warnings) != 1 || !strings.HasPrefix(warnings[0], `test listener: certificate "short_intermediate"`) {
				t.Errorf("Expiring() = %q, want one warning about short_intermediate", warnings)
			}
			expired := source.Unusable(now)
			if tt.expired && (len(expired) != 1 || !strings.Contains(expired[0], `"short_intermediate" expired on`)) {
				t.Errorf("Unusable() = %q, want one warning about short_intermediate", expired)
			}
			if !tt.expired && len(expired) != 0 {
				t.Errorf("Unusable() = %q, want none", expired)
			}
			if tt.expired {
				return
			}

			// The intermediate in the CA file too, and the root in the
			// certificate file, as some tools write them, still give one
			// warning per certificate.
			certFile := filepath.Join(dir, tlsutil.ServerCertFile)
			ssetest.ReplaceFile(t, certFile, slices.Concat(leafPEM, tlsutil.EncodeCert(intermediate), tlsutil.EncodeCert(root.Cert)))
			ssetest.ReplaceFile(t, filepath.Join(dir, tlsutil.RootCertFile), slices.Concat(tlsutil.EncodeCert(root.Cert), tlsutil.EncodeCert(intermediate)))
			watcher.Reload()
			if got := watcher.Expiring(30*24*time.Hour, now); !slices.Equal(got, warnings) {
				t.Errorf("Expiring() with the root in the chain = %q, want %q", got, warnings)
			}

			// An intermediate renewed with the same key is a change, and
			// its warning goes.
			template.NotAfter = now.Add(5 * 365 * 24 * time.Hour)
			renewed, err := x509.CreateCertificate(rand.Reader, template, root.Cert, key.Public(), root.Key)
			if err != nil {
				t.Fatal(err)
			}
			ssetest.ReplaceFile(t, certFile, slices.Concat(leafPEM, tlsutil.EncodeCert(&x509.Certificate{Raw: renewed})))
			ssetest.ReplaceFile(t, filepath.Join(dir, tlsutil.RootCertFile), tlsutil.EncodeCert(root.Cert))
			if changed := watcher.Reload(); changed != 1 {
				t.Errorf("Reload() after renewing the intermediate = %d changed sources, want 1", changed)
			}
			if got := watcher.Expiring(30*24*time.Hour, now); len(got) != 0 {
				t.Errorf("Expiring() after renewing the intermediate = %q, want none", got)
			}
		})
	}
}

// expiredRootPEM returns a self-signed CA certificate that expired a day
// ago.
func expiredRootPEM(t *testing.T, name string) []byte {
	t.Helper()
	key, err := tlsutil.GenerateKey(tlsutil.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tlsutil.EncodeCert(&x509.Certificate{Raw: der})
}

// TestSourceUnusable checks which certificates Unusable names: the
// source's own when expired or not valid yet, and the CAs it trusts only
// when every one of them has expired, not an expired old root kept beside
// a valid one. A CA that the chain file repeats is named once.
func TestSourceUnusable(t *testing.T) {
	set := newFixture(t)
	validRoot := tlsutil.EncodeCert(set.ca.Cert)
	certPEM, keyPEM := newServerPair(t, set)
	oldRoot := expiredRootPEM(t, "old_root")
	expiredCert, expiredKey := ssetest.IssueLeaf(t, set.ca, tlsutil.LeafRequest{
		CommonName: "old_server", Hosts: testHosts, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
	})
	futureCert, futureKey := ssetest.IssueLeaf(t, set.ca, tlsutil.LeafRequest{
		CommonName: "next_server", Hosts: testHosts, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
	})
	tests := []struct {
		name      string
		cert, key []byte
		clientCAs []byte
		want      []string // the warnings' texts after the source's name
	}{
		{name: "all valid", cert: certPEM, key: keyPEM, clientCAs: validRoot},
		{name: "own certificate expired", cert: expiredCert, key: expiredKey, clientCAs: validRoot, want: []string{`certificate "old_server" expired on`}},
		{name: "own certificate not valid yet", cert: futureCert, key: futureKey, clientCAs: validRoot, want: []string{`certificate "next_server" is not valid before`}},
		{name: "only CA expired", cert: certPEM, key: keyPEM, clientCAs: expiredRootPEM(t, "old_root"), want: []string{`certificate "old_root" expired on`}},
		{name: "old CA beside a valid one", cert: certPEM, key: keyPEM, clientCAs: append(expiredRootPEM(t, "old_root"), validRoot...)},
		{name: "expired CA in the chain too", cert: slices.Concat(certPEM, oldRoot), key: keyPEM, clientCAs: oldRoot, want: []string{`certificate "old_root" expired on`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := ssetest.WriteFolder(t, map[string][]byte{tlsutil.RootCertFile: tt.clientCAs, tlsutil.ServerCertFile: tt.cert, tlsutil.ServerKeyFile: tt.key})
			source, err := tlsutil.NewServerSource("test listener", tlsutil.ServerFilesInDir(dir, "", "", ""))
			if err != nil {
				t.Fatal(err)
			}
			got := source.Unusable(time.Now())
			if len(got) != len(tt.want) {
				t.Fatalf("Unusable() = %q, want %d: %q", got, len(tt.want), tt.want)
			}
			for i, want := range tt.want {
				if !strings.HasPrefix(got[i], "test listener: "+want) {
					t.Errorf("Unusable()[%d] = %q, want it to start with %q", i, got[i], want)
				}
			}
		})
	}
}

// TestSourceReloadRejectsUnusable checks that Reload keeps a working
// certificate when the new files hold one that has expired or is not
// valid yet, since every handshake would fail with it, and that the error
// says which and until when.
func TestSourceReloadRejectsUnusable(t *testing.T) {
	set := newFixture(t)
	files := tlsutil.ServerFilesInDir(set.GatewayDir, "", "", "")
	source, err := tlsutil.NewServerSource("test listener", files)
	if err != nil {
		t.Fatal(err)
	}
	address := tlsServer(t, source.ServerConfig())
	serial := handshakeState(t, set, address).PeerCertificates[0].SerialNumber
	now := time.Now()
	for _, tt := range []struct {
		name                string
		notBefore, notAfter time.Time
		want                []string
	}{
		{"expired", now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), []string{`certificate "sse_server" expired on`, "the current certificates stay; renew the files"}},
		{"not valid yet", now.Add(24 * time.Hour), now.Add(48 * time.Hour), []string{`certificate "sse_server" is not valid before`, "the current certificates stay until " + now.Add(24*time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cert, key := ssetest.IssueLeaf(t, set.ca, tlsutil.LeafRequest{
				CommonName: "sse_server", Hosts: testHosts, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				NotBefore: tt.notBefore, NotAfter: tt.notAfter,
			})
			ssetest.ReplaceFile(t, files.KeyFile, key)
			ssetest.ReplaceFile(t, files.CertFile, cert)
			current := source.Config()
			err := source.Reload()
			if err == nil {
				t.Fatal("Reload() = nil, want an error")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Reload() error = %q, want it to contain %q", err, want)
				}
			}
			if source.Config() != current {
				t.Error("Config() changed after Reload() with unusable files, want the previous configuration")
			}
			if got := handshakeState(t, set, address).PeerCertificates[0].SerialNumber; got.Cmp(serial) != 0 {
				t.Errorf("serial after Reload() = %x, want the previous %x", got, serial)
			}
		})
	}
}

// TestWatcherLoadsFilesOnceValid checks that a running watcher, having
// rejected files not valid yet, loads them when they become valid,
// without another change of the files.
func TestWatcherLoadsFilesOnceValid(t *testing.T) {
	set := newFixture(t)
	files := tlsutil.ServerFilesInDir(set.GatewayDir, "", "", "")
	source, logs := runWatcher(t, files)
	address := tlsServer(t, source.ServerConfig())

	// Certificates count whole seconds: valid from the second after next.
	notBefore := time.Now().Truncate(time.Second).Add(2 * time.Second)
	cert, key := ssetest.IssueLeaf(t, set.ca, tlsutil.LeafRequest{
		CommonName: "sse_server", Hosts: testHosts, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: notBefore, NotAfter: notBefore.Add(24 * time.Hour),
	})
	ssetest.ReplaceFile(t, files.KeyFile, key)
	ssetest.ReplaceFile(t, files.CertFile, cert)
	// A start seconds ahead is a clock a little behind, not an error.
	logs.WaitForLine(t, "the rejection of files not valid yet", reloadWait, func(line string) bool {
		return strings.Contains(line, "level=WARN") && strings.Contains(line, "is not valid before")
	})
	logs.WaitForLine(t, "the reload once they are valid", reloadWait, func(line string) bool {
		return strings.Contains(line, `msg="certificates reloaded"`) && strings.Contains(line, "reloaded=1")
	})
	if time.Now().Before(notBefore) {
		t.Errorf("files loaded at %s, before they became valid at %s", time.Now().Format(time.RFC3339Nano), notBefore.Format(time.RFC3339))
	}
	if got, want := handshakeState(t, set, address).PeerCertificates[0].SerialNumber, ssetest.CertSerial(t, cert); got.Cmp(want) != 0 {
		t.Errorf("serial = %x once the files became valid, want %x; log:\n%s", got, want, logs)
	}
}

// TestSourceVerifyHostname checks the names a server source's certificate
// is valid for, and that its certificates include its own, also when Go
// leaves the parsed certificate out of the key pair
// (GODEBUG=x509keypairleaf=0), so that they must be parsed.
func TestSourceVerifyHostname(t *testing.T) {
	set, err := tlsutil.WriteSet(t.TempDir(), []string{"gw.example", "*.apps.example", "10.0.0.5"}, tlsutil.SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, godebug := range []string{"", "x509keypairleaf=0"} {
		t.Run("GODEBUG="+godebug, func(t *testing.T) {
			t.Setenv("GODEBUG", godebug)
			source, err := tlsutil.NewServerSource("listener", tlsutil.ServerFilesInDir(set.GatewayDir, "", "", ""))
			if err != nil {
				t.Fatal(err)
			}
			// Its own certificate and the client CA, so that a renewal of
			// either counts as a change.
			if got := len(source.Certificates()); got != 2 {
				t.Errorf("Certificates() has %d certificates, want 2", got)
			}
			for _, host := range []string{"gw.example", "r.apps.example", "10.0.0.5"} {
				if err := source.VerifyHostname(host); err != nil {
					t.Errorf("VerifyHostname(%s) = %v, want nil", host, err)
				}
			}
			for _, host := range []string{"other.example", "a.b.apps.example", "10.0.0.6"} {
				if err := source.VerifyHostname(host); err == nil {
					t.Errorf("VerifyHostname(%s) = nil, want an error", host)
				}
			}
		})
	}
}

// TestTimeLeft checks how warnings write the time until a certificate
// expires. A certificate of 10 days, checked a second after it was issued,
// once read "in 9 days", and one of a day "in 0 days".
func TestTimeLeft(t *testing.T) {
	tests := []struct {
		left time.Duration
		want string
	}{
		{10*24*time.Hour - time.Second, "10 days"},
		{10*24*time.Hour + 11*time.Hour, "10 days"},
		{10*24*time.Hour + 13*time.Hour, "11 days"},
		{48 * time.Hour, "2 days"},
		{48*time.Hour - time.Second, "47 hours"},
		{24*time.Hour - time.Second, "23 hours"},
		{2 * time.Hour, "2 hours"},
		{2*time.Hour - time.Second, "119 minutes"},
		{2 * time.Minute, "2 minutes"},
		{119 * time.Second, "less than 2 minutes"},
	}
	for _, tt := range tests {
		if got := tlsutil.TimeLeft(tt.left); got != tt.want {
			t.Errorf("TimeLeft(%v) = %q, want %q", tt.left, got, tt.want)
		}
	}
}
