package gateway_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
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

// replicaHeader is the response header in which a test replica names
// itself.
const replicaHeader = "x-replica"

// namedReplica returns a connector whose ExecuteFunction sends name in
// replicaHeader. Its GetCapabilities returns, as PluginIdentifier, name
// and how the gateway connected: "tls CN=<client certificate's common
// name>" or "plaintext".
func namedReplica(name string) *ssetest.Connector {
	return &ssetest.Connector{
		Execute: func(s ssetest.Stream) error {
			if err := s.SendHeader(metadata.Pairs(replicaHeader, name)); err != nil {
				return err
			}
			for {
				if _, err := s.Recv(); errors.Is(err, io.EOF) {
					return nil
				} else if err != nil {
					return err
				}
			}
		},
		Capabilities: func(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
			security := "plaintext"
			if p, ok := peer.FromContext(ctx); ok {
				if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
					security = "tls CN=" + info.State.PeerCertificates[0].Subject.CommonName
				}
			}
			return &ssepb.Capabilities{PluginIdentifier: name + " " + security}, nil
		},
	}
}

// servedBy makes one ExecuteFunction call and returns the name of the
// replica that served it.
func servedBy(t *testing.T, client ssepb.ConnectorClient) string {
	t.Helper()
	out := exchange(functionContext(t, testContext(t), 0), client, ssetest.Raw{})
	if out.err != io.EOF {
		t.Fatalf("call = %v, want OK", out.err)
	}
	names := out.header.Get(replicaHeader)
	if len(names) != 1 {
		t.Fatalf("response header %s = %q, want one replica name", replicaHeader, names)
	}
	return names[0]
}

// TestReplicasShareCalls checks that sequential calls on one client
// connection alternate between an engine's two ready replicas, so that one
// Qlik engine, which keeps a single connection, uses both of them.
func TestReplicasShareCalls(t *testing.T) {
	first := ssetest.StartPlugin(t, namedReplica("first"))
	second := ssetest.StartPlugin(t, namedReplica("second"))
	engine := ssetest.Engine(first.Addr, second.Addr)
	engine.Balancer = config.BalancerRoundRobin
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	client := ssetest.Dial(t, gw.Addrs[0])

	// Round robin uses only replicas already connected, so count only once
	// both have served a call.
	// The pool logs no record when a connection is ready, so call until
	// both replicas have served.
	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("only replicas %v served calls within 10s, want both", seen)
		}
		seen[servedBy(t, client)] = true
	}

	const calls = 20
	counts := map[string]int{}
	previous := ""
	for i := range calls {
		name := servedBy(t, client)
		counts[name]++
		if name == previous {
			t.Errorf("calls %d and %d both went to replica %s, want alternating replicas", i-1, i, name)
		}
		previous = name
	}
	for _, name := range []string{"first", "second"} {
		if counts[name] != calls/2 {
			t.Errorf("replica %s served %d of %d calls, want %d", name, counts[name], calls, calls/2)
		}
	}
}

// startTLSPlugin serves connector with mutual TLS from a plugin-style
// certificate folder.
func startTLSPlugin(t *testing.T, serverDir string, connector *ssetest.Connector) *ssetest.Plugin {
	t.Helper()
	tlsConfig, err := tlsutil.ServerFilesInDir(serverDir, "", "", "").ServerConfig()
	if err != nil {
		t.Fatalf("plugin TLS: %v", err)
	}
	return ssetest.StartPlugin(t, connector, grpc.Creds(credentials.NewTLS(tlsConfig)))
}

// dnsOnlyServerDir writes a plugin-style folder whose server certificate,
// signed by the set's CA, lists names only as DNS subjectAltNames and has
// no IP subjectAltName, as Qlik's usual OpenSSL script makes them with
// "DNS:127.0.0.1". tlsutil.Authority.Issue cannot make this, because it
// always writes an IP address as an IP subjectAltName.
func dnsOnlyServerDir(t *testing.T, certs *ssetest.Certs, names ...string) string {
	t.Helper()
	return certs.TemplateDir(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "sse_server"},
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    names,
	}, tlsutil.ServerCertFile, tlsutil.ServerKeyFile)
}

// gatewayWithBackends starts a gateway with a plaintext listener for
// engine R, served by backends, and returns a client of it.
func gatewayWithBackends(t *testing.T, backends ...config.Backend) ssepb.ConnectorClient {
	t.Helper()
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		// A call fails at once when the TLS handshake does, instead of
		// waiting reconnect_buffer for the replica.
		Engines: map[string]*config.Engine{"R": ssetest.FailFast(&config.Engine{Backends: backends})},
	})
	return ssetest.Dial(t, gw.Addrs[0])
}

// fetchPluginIdentifier calls GetCapabilities with a deadline of 10 s and
// returns the plugin's identifier.
func fetchPluginIdentifier(t *testing.T, client ssepb.ConnectorClient) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testContext(t), 10*time.Second)
	defer cancel()
	capabilities, err := client.GetCapabilities(ctx, &ssepb.Empty{})
	return capabilities.GetPluginIdentifier(), err
}

// TestTLSToPlugin checks that the gateway reaches plugins over mutual TLS
// with a Qlik-style client folder, presenting its client certificate.
func TestTLSToPlugin(t *testing.T) {
	certs := ssetest.NewCerts(t)
	plugin := startTLSPlugin(t, certs.ServerDir(t, tlsutil.LeafRequest{Hosts: []string{"127.0.0.1"}}), namedReplica("secure"))
	client := gatewayWithBackends(t, config.Backend{Address: plugin.Addr, TLS: &config.ClientTLS{Dir: certs.QlikDir}})

	identifier, err := fetchPluginIdentifier(t, client)
	if err != nil {
		t.Fatalf("GetCapabilities = %v, want OK", err)
	}
	if want := "secure tls CN=sse_client"; identifier != want {
		t.Errorf("plugin identifier = %q, want %q", identifier, want)
	}
}

// TestTLSToPluginIPAsDNSName checks a plugin certificate that lists
// 127.0.0.1 only as a DNS name, as Qlik's usual script makes it. Go never
// matches an IP address against DNS names, so the call fails with
// Unavailable and a message naming the certificate problem. It succeeds
// once server_name names one of the certificate's DNS names.
func TestTLSToPluginIPAsDNSName(t *testing.T) {
	certs := ssetest.NewCerts(t)
	plugin := startTLSPlugin(t, dnsOnlyServerDir(t, certs, "127.0.0.1", "plugin.gw.test"), namedReplica("dns"))

	t.Run("without server_name", func(t *testing.T) {
		client := gatewayWithBackends(t, config.Backend{Address: plugin.Addr, TLS: &config.ClientTLS{Dir: certs.QlikDir}})
		_, err := fetchPluginIdentifier(t, client)
		st := status.Convert(err)
		if st.Code() != codes.Unavailable {
			t.Fatalf("GetCapabilities = %v, want Unavailable", err)
		}
		for _, want := range []string{"certificate", "127.0.0.1", "IP SANs", "set tls.server_name"} {
			if !strings.Contains(st.Message(), want) {
				t.Errorf("status message = %q, want it to contain %q", st.Message(), want)
			}
		}
	})

	t.Run("waiting for a replica", func(t *testing.T) {
		// The message of a call that waited reconnect_buffer names the
		// replica's last error, and the hint must follow it there too.
		engine := &config.Engine{Backends: []config.Backend{{Address: plugin.Addr, TLS: &config.ClientTLS{Dir: certs.QlikDir}}}}
		gw := ssetest.StartGateway(t, &config.Config{
			Listeners: []config.Listener{ssetest.Listen("R", nil)},
			Engines:   map[string]*config.Engine{"R": ssetest.ReconnectBuffer(engine, time.Second)},
		})
		_, err := fetchPluginIdentifier(t, ssetest.Dial(t, gw.Addrs[0]))
		st := status.Convert(err)
		if st.Code() != codes.Unavailable {
			t.Fatalf("GetCapabilities = %v, want Unavailable", err)
		}
		for _, want := range []string{"reconnect_buffer", "IP SANs", "set tls.server_name"} {
			if !strings.Contains(st.Message(), want) {
				t.Errorf("status message = %q, want it to contain %q", st.Message(), want)
			}
		}
	})

	t.Run("with server_name", func(t *testing.T) {
		client := gatewayWithBackends(t, config.Backend{Address: plugin.Addr, TLS: &config.ClientTLS{Dir: certs.QlikDir, ServerName: "plugin.gw.test"}})
		if _, err := fetchPluginIdentifier(t, client); err != nil {
			t.Fatalf("GetCapabilities = %v, want OK", err)
		}
	})
}

// TestTLSClientKeyFormats checks that the gateway's client key may be
// PKCS#1 or PKCS#8, since older and newer OpenSSL versions write
// different ones.
func TestTLSClientKeyFormats(t *testing.T) {
	certs := ssetest.NewCerts(t)
	plugin := startTLSPlugin(t, certs.ServerDir(t, tlsutil.LeafRequest{Hosts: []string{"127.0.0.1"}}), namedReplica("tls"))

	tests := []struct {
		name      string
		pkcs1     bool
		wantBlock string
	}{
		{name: "PKCS#1", pkcs1: true, wantBlock: "-----BEGIN RSA PRIVATE KEY-----"},
		{name: "PKCS#8", pkcs1: false, wantBlock: "-----BEGIN PRIVATE KEY-----"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := certs.ClientDir(t, nil, tlsutil.LeafRequest{KeyType: tlsutil.KeyRSA2048, PKCS1: tt.pkcs1})
			key, err := os.ReadFile(filepath.Join(dir, tlsutil.ClientKeyFile))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(key, []byte(tt.wantBlock)) {
				t.Fatalf("client key starts with %q, want %q", strings.SplitN(string(key), "\n", 2)[0], tt.wantBlock)
			}

			client := gatewayWithBackends(t, config.Backend{Address: plugin.Addr, TLS: &config.ClientTLS{Dir: dir}})
			if _, err := fetchPluginIdentifier(t, client); err != nil {
				t.Fatalf("GetCapabilities = %v, want OK", err)
			}
		})
	}
}

// TestMixedBackendSecurity checks that one engine with a plaintext replica
// and a TLS replica serves calls on both, each with its own security.
func TestMixedBackendSecurity(t *testing.T) {
	certs := ssetest.NewCerts(t)
	plain := ssetest.StartPlugin(t, namedReplica("plain"))
	secure := startTLSPlugin(t, certs.ServerDir(t, tlsutil.LeafRequest{Hosts: []string{"127.0.0.1"}}), namedReplica("secure"))
	client := gatewayWithBackends(t,
		config.Backend{Address: plain.Addr},
		config.Backend{Address: secure.Addr, TLS: &config.ClientTLS{Dir: certs.QlikDir}},
	)

	want := map[string]bool{"plain plaintext": true, "secure tls CN=sse_client": true}
	// The pool logs no record when a connection is ready, so call until
	// both backends have served.
	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < len(want) && time.Now().Before(deadline) {
		identifier, err := fetchPluginIdentifier(t, client)
		if err != nil {
			t.Fatalf("GetCapabilities = %v, want OK", err)
		}
		if !want[identifier] {
			t.Fatalf("plugin identifier = %q, want one of %v", identifier, want)
		}
		seen[identifier] = true
	}
	for identifier := range want {
		if !seen[identifier] {
			t.Errorf("no call served as %q within 10s", identifier)
		}
	}
}
