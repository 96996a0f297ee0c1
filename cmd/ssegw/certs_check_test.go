package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// certsCallTimeout bounds every call of these tests.
const certsCallTimeout = 10 * time.Second

// certsInit runs ssegw certs init with args and fails the test on an
// error.
func certsInit(t *testing.T, args ...string) {
	t.Helper()
	if out, err := runCommand(t, append([]string{"certs", "init"}, args...)...); err != nil {
		t.Fatalf("certs init %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// certsLoadCA loads the CA that certs init wrote below dir.
func certsLoadCA(t *testing.T, dir string) *tlsutil.Authority {
	t.Helper()
	caDir := filepath.Join(dir, tlsutil.CAFolder)
	ca, err := tlsutil.LoadAuthority(filepath.Join(caDir, tlsutil.RootCertFile), filepath.Join(caDir, tlsutil.CAKeyFile))
	if err != nil {
		t.Fatalf("loading the CA of certs init: %v", err)
	}
	return ca
}

// certsReadCert parses the first certificate of a PEM file.
func certsReadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cert
}

// certsPlugin is a test plugin that names, as its pluginIdentifier, the
// common name of the client certificate each call presented, and counts
// the calls other than the gateway's probes.
type certsPlugin struct {
	*ssetest.Plugin
	mu    sync.Mutex
	calls int
}

// startCertsPlugin serves a certsPlugin, with mutual TLS from a
// plugin-style folder when serverDir is not empty.
func startCertsPlugin(t *testing.T, serverDir string) *certsPlugin {
	t.Helper()
	p := &certsPlugin{}
	connector := &ssetest.Connector{
		Capabilities: func(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
			if !ssetest.IsProbe(ctx) {
				p.mu.Lock()
				p.calls++
				p.mu.Unlock()
			}
			identifier := "plaintext"
			if pr, ok := peer.FromContext(ctx); ok {
				if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
					identifier = "CN=" + info.State.PeerCertificates[0].Subject.CommonName
				}
			}
			return &ssepb.Capabilities{PluginIdentifier: identifier}, nil
		},
	}
	var options []grpc.ServerOption
	if serverDir != "" {
		cfg, err := tlsutil.ServerFilesInDir(serverDir, "", "", "").ServerConfig()
		if err != nil {
			t.Fatalf("plugin TLS: %v", err)
		}
		options = append(options, grpc.Creds(credentials.NewTLS(cfg)))
	}
	p.Plugin = ssetest.StartPlugin(t, connector, options...)
	return p
}

// callCount returns the calls the plugin served, probes left out.
func (p *certsPlugin) callCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// certsGateway starts a gateway for engine R with backend and the given
// listener TLS folder, or a plaintext listener for an empty one.
func certsGateway(t *testing.T, listenerDir string, backend config.Backend) *ssetest.Gateway {
	t.Helper()
	var serverTLS *config.ServerTLS
	if listenerDir != "" {
		serverTLS = &config.ServerTLS{Dir: listenerDir}
	}
	return ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", serverTLS)},
		// A call fails at once when the gateway cannot reach the plugin,
		// instead of waiting for it.
		Engines: map[string]*config.Engine{"R": ssetest.FailFast(&config.Engine{Backends: []config.Backend{backend}})},
	})
}

// certsCapabilities calls GetCapabilities with a deadline.
func certsCapabilities(t *testing.T, client ssepb.ConnectorClient) (*ssepb.Capabilities, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), certsCallTimeout)
	defer cancel()
	return client.GetCapabilities(ctx, &ssepb.Empty{})
}

// TestCertsInitWorksWithGo checks certificates made by certs init on both
// sides of the gateway. A Go client with the qlik folder calls the
// gateway, which listens with the gateway folder, and verifies 127.0.0.1
// against an IP subjectAltName. The gateway connects to a Go TLS plugin
// that listens with the gateway folder of a second set, and presents the
// client certificate that certs init --ca issued from that set's CA.
func TestCertsInitWorksWithGo(t *testing.T) {
	front, back, gatewayClient := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "to-plugin")
	certsInit(t, "--out", front, "--hosts", "localhost,127.0.0.1")
	certsInit(t, "--out", back, "--hosts", "127.0.0.1")
	certsInit(t, "--ca", filepath.Join(back, tlsutil.CAFolder), "--out", gatewayClient, "--client-name", "ssegw-gateway")

	plugin := startCertsPlugin(t, filepath.Join(back, tlsutil.GatewayFolder))
	gw := certsGateway(t, filepath.Join(front, tlsutil.GatewayFolder),
		config.Backend{Address: plugin.Addr, TLS: &config.ClientTLS{Dir: gatewayClient}})

	// No server name: the client checks the address, 127.0.0.1.
	var p peer.Peer
	client := ssetest.DialTLS(t, gw.Addrs[0], filepath.Join(front, tlsutil.QlikFolder), "")
	ctx, cancel := context.WithTimeout(context.Background(), certsCallTimeout)
	defer cancel()
	capabilities, err := client.GetCapabilities(ctx, &ssepb.Empty{}, grpc.Peer(&p))
	if err != nil {
		t.Fatalf("GetCapabilities() error = %v, want nil", err)
	}
	if got, want := capabilities.GetPluginIdentifier(), "CN=ssegw-gateway"; got != want {
		t.Errorf("plugin saw client certificate %q, want %q", got, want)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		t.Fatalf("client's peer AuthInfo = %T, want credentials.TLSInfo", p.AuthInfo)
	}
	if got := info.State.NegotiatedProtocol; got != "h2" {
		t.Errorf("client's negotiated protocol = %q, want h2", got)
	}
	if got := info.State.PeerCertificates[0].Subject.CommonName; got != "sse_server" {
		t.Errorf("gateway's certificate common name = %q, want sse_server", got)
	}
	if got := plugin.callCount(); got != 1 {
		t.Errorf("plugin calls = %d, want 1", got)
	}
}

// TestCertsInitHostsAsSubjectAltNames checks that --hosts puts addresses,
// IPv4 and IPv6, into IP subjectAltNames and names into DNS
// subjectAltNames, so that Go and Qlik both match them.
func TestCertsInitHostsAsSubjectAltNames(t *testing.T) {
	dir := t.TempDir()
	certsInit(t, "--out", dir, "--hosts", "localhost,127.0.0.1,::1,10.1.2.3,gw.example.test")
	cert := certsReadCert(t, filepath.Join(dir, tlsutil.GatewayFolder, tlsutil.ServerCertFile))

	var ips []string
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	if diff := cmp.Diff([]string{"127.0.0.1", "::1", "10.1.2.3"}, ips); diff != "" {
		t.Errorf("IP subjectAltNames (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"localhost", "gw.example.test"}, cert.DNSNames); diff != "" {
		t.Errorf("DNS subjectAltNames (-want +got):\n%s", diff)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("server certificate extended key usage = %v, want serverAuth", cert.ExtKeyUsage)
	}
	for _, ip := range []string{"127.0.0.1", "::1", "10.1.2.3"} {
		if err := cert.VerifyHostname(ip); err != nil {
			t.Errorf("VerifyHostname(%s) error: %v", ip, err)
		}
	}
}

// TestCertsInitNeverOverwrites checks both modes of certs init when a file
// it would write exists. Without --force it fails with an error that names
// --force, and it changes and creates no file. With --force it replaces
// the files.
func TestCertsInitNeverOverwrites(t *testing.T) {
	ca := t.TempDir()
	certsInit(t, "--out", ca, "--hosts", "localhost")
	caDir := filepath.Join(ca, tlsutil.CAFolder)

	tests := []struct {
		name string
		// existing is the one file, below the output folder, that exists
		// before the run.
		existing string
		// written are the files, below the output folder, that a run
		// with --force writes.
		written []string
		args    func(out string) []string
	}{
		{
			name:     "set",
			existing: filepath.Join(tlsutil.QlikFolder, tlsutil.ClientKeyFile),
			written: []string{
				filepath.Join(tlsutil.GatewayFolder, tlsutil.RootCertFile),
				filepath.Join(tlsutil.GatewayFolder, tlsutil.ServerCertFile),
				filepath.Join(tlsutil.GatewayFolder, tlsutil.ServerKeyFile),
				filepath.Join(tlsutil.QlikFolder, tlsutil.RootCertFile),
				filepath.Join(tlsutil.QlikFolder, tlsutil.ClientCertFile),
				filepath.Join(tlsutil.QlikFolder, tlsutil.ClientKeyFile),
				filepath.Join(tlsutil.CAFolder, tlsutil.RootCertFile),
				filepath.Join(tlsutil.CAFolder, tlsutil.CAKeyFile),
			},
			args: func(out string) []string { return []string{"--out", out, "--hosts", "localhost,127.0.0.1"} },
		},
		{
			name:     "client folder with --ca",
			existing: tlsutil.RootCertFile,
			written:  []string{tlsutil.RootCertFile, tlsutil.ClientCertFile, tlsutil.ClientKeyFile},
			args:     func(out string) []string { return []string{"--ca", caDir, "--out", out} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := t.TempDir()
			existing := filepath.Join(out, tt.existing)
			if err := os.MkdirAll(filepath.Dir(existing), 0o755); err != nil {
				t.Fatal(err)
			}
			original := []byte("kept by the user\n")
			ssetest.WriteFile(t, existing, original)

			output, err := runCommand(t, append([]string{"certs", "init"}, tt.args(out)...)...)
			if err == nil {
				t.Fatalf("certs init over an existing file: no error, want one; output:\n%s", output)
			}
			for _, want := range []string{existing, "--force"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("certs init error = %q, want it to contain %q", err, want)
				}
			}
			if got, err := os.ReadFile(existing); err != nil || !bytes.Equal(got, original) {
				t.Errorf("existing file after certs init = %q (%v), want %q", got, err, original)
			}
			for _, name := range tt.written {
				if name == tt.existing {
					continue
				}
				if _, err := os.Stat(filepath.Join(out, name)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("certs init without --force wrote %s (stat: %v), want nothing written", name, err)
				}
			}

			certsInit(t, append(tt.args(out), "--force")...)
			if got, err := os.ReadFile(existing); err != nil || bytes.Equal(got, original) {
				t.Errorf("existing file after certs init --force = %q (%v), want it replaced", got, err)
			}
			for _, name := range tt.written {
				if _, err := os.Stat(filepath.Join(out, name)); err != nil {
					t.Errorf("certs init --force did not write %s: %v", name, err)
				}
			}
		})
	}
}

// certsCheckOutput runs certs check on dir and returns its output by
// file: for each file, the lines that follow its name, trimmed.
func certsCheckOutput(t *testing.T, dir string) (map[string][]string, string, error) {
	t.Helper()
	output, err := runCommand(t, "certs", "check", dir)
	byFile := map[string][]string{}
	file := ""
	for line := range strings.SplitSeq(output, "\n") {
		switch {
		case line == "":
		case !strings.HasPrefix(line, "  "):
			file = line
		default:
			byFile[file] = append(byFile[file], strings.TrimSpace(line))
		}
	}
	return byFile, output, err
}

// certsProblemLines returns the output lines that are warnings or errors.
func certsProblemLines(byFile map[string][]string) []string {
	var lines []string
	for file, fileLines := range byFile {
		for _, line := range fileLines {
			if strings.HasPrefix(line, "WARNING: ") || strings.HasPrefix(line, "ERROR: ") {
				lines = append(lines, file+": "+line)
			}
		}
	}
	slices.Sort(lines)
	return lines
}

// certsQlikScriptFolders writes a plugin folder and a Qlik client folder
// as Qlik's usual OpenSSL script makes them: RSA keys in PKCS#1, and the
// server's addresses written as DNS names only.
func certsQlikScriptFolders(t *testing.T) (serverDir, clientDir string) {
	t.Helper()
	root, err := tlsutil.NewRootCA("sse_root", 10*365*24*time.Hour, tlsutil.KeyRSA2048)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM := tlsutil.EncodeCert(root.Cert)
	serverCert, serverKey := ssetest.IssueLeaf(t, root, tlsutil.LeafRequest{
		CommonName: "sse_server",
		Hosts:      []string{"localhost", "127.0.0.1"},
		IPsAsDNS:   true,
		Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyType:    tlsutil.KeyRSA2048,
		PKCS1:      true,
	})
	clientCert, clientKey := ssetest.IssueLeaf(t, root, tlsutil.LeafRequest{
		CommonName: "sse_client",
		Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyType:    tlsutil.KeyRSA2048,
		PKCS1:      true,
	})
	serverDir = ssetest.WriteFolder(t, map[string][]byte{
		tlsutil.RootCertFile:   rootPEM,
		tlsutil.ServerCertFile: serverCert,
		tlsutil.ServerKeyFile:  serverKey,
	})
	clientDir = ssetest.WriteFolder(t, map[string][]byte{
		tlsutil.RootCertFile:   rootPEM,
		tlsutil.ClientCertFile: clientCert,
		tlsutil.ClientKeyFile:  clientKey,
	})
	return serverDir, clientDir
}

// TestCertsCheck checks the exit status and the warning and error lines
// of certs check. The folders are those of certs init, one made as Qlik's
// usual OpenSSL script makes it, and folders broken in each way that
// certs check warns about.
func TestCertsCheck(t *testing.T) {
	set := t.TempDir()
	certsInit(t, "--out", set, "--hosts", "localhost,127.0.0.1")
	ca := certsLoadCA(t, set)
	rootPEM := tlsutil.EncodeCert(ca.Cert)
	serverRequest := func() tlsutil.LeafRequest {
		return tlsutil.LeafRequest{CommonName: "sse_server", Hosts: []string{"127.0.0.1"}, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	}
	pluginFolder := func(t *testing.T, req tlsutil.LeafRequest) string {
		t.Helper()
		cert, key := ssetest.IssueLeaf(t, ca, req)
		return ssetest.WriteFolder(t, map[string][]byte{tlsutil.RootCertFile: rootPEM, tlsutil.ServerCertFile: cert, tlsutil.ServerKeyFile: key})
	}

	tests := []struct {
		name  string
		build func(t *testing.T) string
		// wantProblems are the warning and error lines, each as
		// "file: SEVERITY: " and the start of its message.
		wantProblems []string
		wantExit     int
	}{
		{
			name:  "gateway folder of certs init",
			build: func(*testing.T) string { return filepath.Join(set, tlsutil.GatewayFolder) },
		},
		{
			name:  "qlik folder of certs init",
			build: func(*testing.T) string { return filepath.Join(set, tlsutil.QlikFolder) },
		},
		{
			name: "client folder of certs init --ca",
			build: func(t *testing.T) string {
				out := filepath.Join(t.TempDir(), "client")
				certsInit(t, "--ca", filepath.Join(set, tlsutil.CAFolder), "--out", out)
				return out
			},
		},
		{
			name:         "folder of Qlik's OpenSSL script",
			build:        func(t *testing.T) string { dir, _ := certsQlikScriptFolders(t); return dir },
			wantProblems: []string{"sse_server_cert.pem: WARNING: DNS:127.0.0.1 is an IP address written as a DNS name"},
		},
		{
			name: "expires within 30 days",
			build: func(t *testing.T) string {
				req := serverRequest()
				req.NotAfter = time.Now().Add(20 * 24 * time.Hour)
				return pluginFolder(t, req)
			},
			wantProblems: []string{"sse_server_cert.pem: WARNING: expires in 20 days"},
		},
		{
			name: "server certificate without serverAuth",
			build: func(t *testing.T) string {
				req := serverRequest()
				req.Usage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
				return pluginFolder(t, req)
			},
			wantProblems: []string{"sse_server_cert.pem: ERROR: a server certificate without the serverAuth extended key usage"},
			wantExit:     1,
		},
		{
			name: "key that does not match",
			build: func(t *testing.T) string {
				cert, _ := ssetest.IssueLeaf(t, ca, serverRequest())
				_, otherKey := ssetest.IssueLeaf(t, ca, serverRequest())
				return ssetest.WriteFolder(t, map[string][]byte{tlsutil.RootCertFile: rootPEM, tlsutil.ServerCertFile: cert, tlsutil.ServerKeyFile: otherKey})
			},
			wantProblems: []string{"sse_server_key.pem: ERROR: does not match its certificate"},
			wantExit:     1,
		},
		{
			name:  "CA folder of certs init",
			build: func(*testing.T) string { return filepath.Join(set, tlsutil.CAFolder) },
		},
		{
			name: "CA key of another CA",
			build: func(t *testing.T) string {
				other := t.TempDir()
				certsInit(t, "--out", other, "--hosts", "localhost")
				dir := filepath.Join(t.TempDir(), tlsutil.CAFolder)
				if err := os.CopyFS(dir, os.DirFS(filepath.Join(set, tlsutil.CAFolder))); err != nil {
					t.Fatal(err)
				}
				otherKey, err := os.ReadFile(filepath.Join(other, tlsutil.CAFolder, tlsutil.CAKeyFile))
				if err != nil {
					t.Fatal(err)
				}
				ssetest.ReplaceFile(t, filepath.Join(dir, tlsutil.CAKeyFile), otherKey)
				return dir
			},
			wantProblems: []string{"root_key.pem: ERROR: does not match its certificate root_cert.pem, so ssegw certs init cannot issue certificates with this CA"},
			wantExit:     1,
		},
		{
			name: "key readable by others",
			build: func(t *testing.T) string {
				dir := pluginFolder(t, serverRequest())
				if err := os.Chmod(filepath.Join(dir, tlsutil.ServerKeyFile), 0o644); err != nil {
					t.Fatal(err)
				}
				return dir
			},
			wantProblems: []string{"sse_server_key.pem: WARNING: readable or writable by other users (mode 0644); run chmod 600"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			byFile, output, err := certsCheckOutput(t, tt.build(t))

			exit := 0
			var exitErr exitError
			if errors.As(err, &exitErr) {
				exit = exitErr.code
			} else if err != nil {
				t.Fatalf("certs check error = %v, want an exit status", err)
			}
			if exit != tt.wantExit {
				t.Errorf("certs check exit status = %d, want %d; output:\n%s", exit, tt.wantExit, output)
			}
			got := certsProblemLines(byFile)
			for _, want := range tt.wantProblems {
				if !slices.ContainsFunc(got, func(line string) bool { return strings.HasPrefix(line, want) }) {
					t.Errorf("certs check printed no line starting with %q; output:\n%s", want, output)
				}
			}
			if len(got) != len(tt.wantProblems) {
				t.Errorf("certs check printed %d warnings and errors, want %d: %q", len(got), len(tt.wantProblems), got)
			}
		})
	}
}

// TestCertsCheckRejectsNegativeWarnWithin checks that a negative
// --warn-within, which would turn the expiry warnings off without saying
// so, is rejected before the folder is read, and that 0 is accepted.
func TestCertsCheckRejectsNegativeWarnWithin(t *testing.T) {
	set := t.TempDir()
	certsInit(t, "--out", set, "--hosts", "localhost")
	dir := filepath.Join(set, tlsutil.GatewayFolder)

	output, err := runCommand(t, "certs", "check", "--warn-within", "-1h", dir)
	if want := "invalid --warn-within -1h0m0s: give a duration of 0 or more"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("certs check --warn-within -1h error = %v, want one containing %q", err, want)
	}
	if output != "" {
		t.Errorf("certs check --warn-within -1h output = %q, want nothing", output)
	}

	if output, err := runCommand(t, "certs", "check", "--warn-within", "0s", dir); err != nil {
		t.Errorf("certs check --warn-within 0s error = %v, want nil; output:\n%s", err, output)
	}
}

// TestCertsCheckAdviceWorks follows the advice of certs check for a plugin
// folder made as Qlik's usual OpenSSL script makes it. Its certificate
// lists 127.0.0.1 only as a DNS name, so a gateway dialing 127.0.0.1
// cannot verify it. With server_name set to one of its DNS names, as the
// warning advises, the gateway reaches the plugin with the script's
// PKCS#1 client key.
func TestCertsCheckAdviceWorks(t *testing.T) {
	serverDir, clientDir := certsQlikScriptFolders(t)
	byFile, output, err := certsCheckOutput(t, serverDir)
	if err != nil {
		t.Fatalf("certs check error = %v; output:\n%s", err, output)
	}
	warning := ""
	for _, line := range byFile[tlsutil.ServerCertFile] {
		if strings.HasPrefix(line, "WARNING: ") {
			warning = line
		}
	}
	if !strings.Contains(warning, "server_name") {
		t.Errorf("certs check warning = %q, want it to advise server_name", warning)
	}
	if !slices.ContainsFunc(byFile[tlsutil.ServerKeyFile], func(line string) bool { return strings.Contains(line, "PKCS#1 RSA") }) {
		t.Errorf("certs check lines for %s = %q, want the key format PKCS#1 RSA", tlsutil.ServerKeyFile, byFile[tlsutil.ServerKeyFile])
	}

	plugin := startCertsPlugin(t, serverDir)
	t.Run("without server_name", func(t *testing.T) {
		// Once the probe has found the replica failing, calls fail
		// without a connection attempt. Their message must still name the
		// fix.
		gw := certsGateway(t, "", config.Backend{Address: plugin.Addr, TLS: &config.ClientTLS{Dir: clientDir}})
		gw.Logs.WaitFor(t, "replica failing", certsCallTimeout, nil)
		client := ssetest.Dial(t, gw.Addrs[0])
		for call := range 3 {
			_, err := certsCapabilities(t, client)
			if got := status.Code(err); got != codes.Unavailable {
				t.Fatalf("call %d: GetCapabilities() code = %v (%v), want Unavailable", call, got, err)
			}
			for _, want := range []string{"127.0.0.1", "server_name"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("call %d: GetCapabilities() error = %q, want it to contain %q", call, err, want)
				}
			}
		}
	})
	t.Run("with server_name", func(t *testing.T) {
		gw := certsGateway(t, "", config.Backend{Address: plugin.Addr, TLS: &config.ClientTLS{Dir: clientDir, ServerName: "localhost"}})
		capabilities, err := certsCapabilities(t, ssetest.Dial(t, gw.Addrs[0]))
		if err != nil {
			t.Fatalf("GetCapabilities() error = %v, want nil", err)
		}
		if got, want := capabilities.GetPluginIdentifier(), "CN=sse_client"; got != want {
			t.Errorf("plugin saw client certificate %q, want %q", got, want)
		}
	})
}

// certsClientConfig returns a client configuration that trusts rootFile.
// When certFile is not empty, it presents that pair whatever CAs the
// gateway lists, as the Qlik engine does. Go's client would otherwise send
// no certificate from another CA, and the gateway would get none.
func certsClientConfig(t *testing.T, rootFile, certFile, keyFile string) *tls.Config {
	t.Helper()
	cfg, err := tlsutil.ClientFiles{CAFile: rootFile}.ClientConfig("localhost")
	if err != nil {
		t.Fatal(err)
	}
	if certFile == "" {
		return cfg
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	return cfg
}

// TestCertsInitClientCertificates checks the gateway's mutual TLS with a
// set from certs init. A client with the qlik folder is served. A client
// without a certificate, with the qlik folder of another set, with an
// expired certificate from the set's CA, or with the gateway's own server
// certificate (serverAuth only) fails in the handshake and never reaches
// the plugin. Each refusal is logged once with the client's address and
// the reason, and counted (C05).
func TestCertsInitClientCertificates(t *testing.T) {
	set, other := t.TempDir(), t.TempDir()
	certsInit(t, "--out", set, "--hosts", "localhost,127.0.0.1")
	certsInit(t, "--out", other, "--hosts", "localhost,127.0.0.1")
	qlik, gatewayDir := filepath.Join(set, tlsutil.QlikFolder), filepath.Join(set, tlsutil.GatewayFolder)
	rootFile := filepath.Join(qlik, tlsutil.RootCertFile)

	expiredCert, expiredKey := ssetest.IssueLeaf(t, certsLoadCA(t, set), tlsutil.LeafRequest{
		CommonName: "sse_client",
		Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore:  time.Now().Add(-48 * time.Hour),
		NotAfter:   time.Now().Add(-24 * time.Hour),
	})
	expired := ssetest.WriteFolder(t, map[string][]byte{tlsutil.ClientCertFile: expiredCert, tlsutil.ClientKeyFile: expiredKey})

	tests := []struct {
		name              string
		certFile, keyFile string
		// wantReason is why the gateway refuses the handshake; empty
		// means the call succeeds.
		wantReason tlsutil.HandshakeFailure
	}{
		{
			name:     "qlik folder",
			certFile: filepath.Join(qlik, tlsutil.ClientCertFile),
			keyFile:  filepath.Join(qlik, tlsutil.ClientKeyFile),
		},
		{
			name:       "no client certificate",
			wantReason: tlsutil.FailureMissingClientCert,
		},
		{
			name:       "qlik folder of another set",
			certFile:   filepath.Join(other, tlsutil.QlikFolder, tlsutil.ClientCertFile),
			keyFile:    filepath.Join(other, tlsutil.QlikFolder, tlsutil.ClientKeyFile),
			wantReason: tlsutil.FailureUnknownAuthority,
		},
		{
			name:       "expired certificate",
			certFile:   filepath.Join(expired, tlsutil.ClientCertFile),
			keyFile:    filepath.Join(expired, tlsutil.ClientKeyFile),
			wantReason: tlsutil.FailureExpired,
		},
		{
			name:       "gateway's server certificate",
			certFile:   filepath.Join(gatewayDir, tlsutil.ServerCertFile),
			keyFile:    filepath.Join(gatewayDir, tlsutil.ServerKeyFile),
			wantReason: tlsutil.FailureWrongKeyUsage,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A gateway per case, so that counts start at zero and the
			// log's rate limit has seen no earlier refusal.
			plugin := startCertsPlugin(t, "")
			gw := certsGateway(t, gatewayDir, config.Backend{Address: plugin.Addr})
			dialer := &ssetest.SingleDialer{}
			creds := credentials.NewTLS(certsClientConfig(t, rootFile, tt.certFile, tt.keyFile))
			client := ssetest.Dial(t, gw.Addrs[0], grpc.WithTransportCredentials(creds), grpc.WithContextDialer(dialer.Dial))
			capabilities, err := certsCapabilities(t, client)

			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("GetCapabilities() error = %v, want nil", err)
				}
				if got := capabilities.GetPluginIdentifier(); got != "plaintext" {
					t.Errorf("GetCapabilities().PluginIdentifier = %q, want plaintext, from the test plugin", got)
				}
				if got := plugin.callCount(); got != 1 {
					t.Errorf("plugin calls = %d, want 1", got)
				}
				if records := gw.Logs.Records("TLS handshake refused"); len(records) != 0 {
					t.Errorf("got %d refused-handshake records, want 0: %v", len(records), records)
				}
				return
			}

			if err == nil {
				t.Fatalf("GetCapabilities() = %v, want an error", capabilities)
			}
			record := gw.Logs.WaitFor(t, "TLS handshake refused", certsCallTimeout, nil)
			if got := record["reason"]; got != string(tt.wantReason) {
				t.Errorf("log record reason = %v, want %q", got, tt.wantReason)
			}
			if got := record["peer"]; got != dialer.Address() {
				t.Errorf("log record peer = %v, want %s", got, dialer.Address())
			}
			if records := gw.Logs.Records("TLS handshake refused"); len(records) != 1 {
				t.Errorf("got %d refused-handshake records, want 1: %v", len(records), records)
			}
			counts := gw.HandshakeFailures()
			for _, reason := range tlsutil.HandshakeFailures {
				want := int64(0)
				if reason == tt.wantReason {
					want = 1
				}
				if counts[reason] != want {
					t.Errorf("HandshakeFailures()[%q] = %d, want %d", reason, counts[reason], want)
				}
			}
			if got := plugin.callCount(); got != 0 {
				t.Errorf("plugin calls = %d, want 0", got)
			}
		})
	}
}

// TestCertsCheckWarnsAboutUnmatchedNames checks that certs check warns
// about every DNS subjectAltName that no client matches: addresses in
// brackets or with a port, and names that are not DNS names.
func TestCertsCheckWarnsAboutUnmatchedNames(t *testing.T) {
	set := t.TempDir()
	certsInit(t, "--out", set, "--hosts", "localhost")
	ca := certsLoadCA(t, set)
	serverCert, serverKey := ssetest.IssueLeaf(t, ca, tlsutil.LeafRequest{
		CommonName: "sse_server",
		Hosts:      []string{"gw.example", "*.gw.example", "[::1]", "127.0.0.1:50051", "https://gw.example", "bad host!", "300.1.1.1"},
		Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	dir := ssetest.WriteFolder(t, map[string][]byte{
		tlsutil.RootCertFile:   tlsutil.EncodeCert(ca.Cert),
		tlsutil.ServerCertFile: serverCert,
		tlsutil.ServerKeyFile:  serverKey,
	})
	byFile, output, err := certsCheckOutput(t, dir)
	if err != nil {
		t.Errorf("certs check error = %v, want warnings only\n%s", err, output)
	}
	want := []string{
		"sse_server_cert.pem: WARNING: DNS:127.0.0.1:50051: has a port; give the host alone: 127.0.0.1. No client matches this name; reissue the certificate with it corrected",
		"sse_server_cert.pem: WARNING: DNS:300.1.1.1: neither a valid IP address nor a DNS name, whose last label cannot be all digits. No client matches this name; reissue the certificate with it corrected",
		"sse_server_cert.pem: WARNING: DNS:[::1] is an IP address written as a DNS name, as Qlik's usual script writes it: Go clients dialing ::1 refuse the certificate; have the gateway verify a DNS name with server_name, or reissue it with IP:::1",
		"sse_server_cert.pem: WARNING: DNS:bad host!: not a valid DNS name: ' ' is not allowed; use letters, digits, hyphens and dots (punycode, xn--, for other letters). No client matches this name; reissue the certificate with it corrected",
		"sse_server_cert.pem: WARNING: DNS:https://gw.example: a URL; give its host alone: gw.example. No client matches this name; reissue the certificate with it corrected",
	}
	if diff := cmp.Diff(want, certsProblemLines(byFile)); diff != "" {
		t.Errorf("certs check warnings (-want +got):\n%s", diff)
	}
}
