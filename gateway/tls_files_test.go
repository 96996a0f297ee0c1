package gateway_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// copyFile copies src to a new file named name in dir and returns its path.
func copyFile(t *testing.T, src, dir, name string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	ssetest.WriteFile(t, path, data)
	return path
}

// TestTLSExplicitFiles checks certificates named file by file, outside
// Qlik's folder layout: a listener with cert_file, key_file and
// client_ca_file, and a TLS plugin reached with ca_file, cert_file and
// key_file.
func TestTLSExplicitFiles(t *testing.T) {
	certs := ssetest.NewCerts(t)
	dir := t.TempDir()

	// A TLS plugin, reached with files under other names.
	pluginTLS, err := tlsutil.ServerFilesInDir(certs.GatewayDir, "", "", "").ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{PluginIdentifier: "explicit"}, nil
		},
	}, grpc.Creds(credentials.NewTLS(pluginTLS)))
	backendTLS := &config.ClientTLS{
		CAFile:     copyFile(t, filepath.Join(certs.QlikDir, tlsutil.RootCertFile), dir, "plugin-ca.crt"),
		CertFile:   copyFile(t, filepath.Join(certs.QlikDir, tlsutil.ClientCertFile), dir, "gateway-client.crt"),
		KeyFile:    copyFile(t, filepath.Join(certs.QlikDir, tlsutil.ClientKeyFile), dir, "gateway-client.key"),
		ServerName: "localhost",
	}

	// A listener with files under other names.
	listenerTLS := &config.ServerTLS{
		CertFile:     copyFile(t, filepath.Join(certs.GatewayDir, tlsutil.ServerCertFile), dir, "gateway.crt"),
		KeyFile:      copyFile(t, filepath.Join(certs.GatewayDir, tlsutil.ServerKeyFile), dir, "gateway.key"),
		ClientCAFile: copyFile(t, filepath.Join(certs.GatewayDir, tlsutil.RootCertFile), dir, "qlik-ca.crt"),
	}
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", listenerTLS)},
		Engines: map[string]*config.Engine{
			"R": {Backends: []config.Backend{{Address: plugin.Addr, TLS: backendTLS}}},
		},
	})

	client := ssetest.DialTLS(t, gw.Addrs[0], certs.QlikDir, "localhost")
	capabilities, err := client.GetCapabilities(testContext(t), &ssepb.Empty{})
	if err != nil {
		t.Fatalf("GetCapabilities: %v", err)
	}
	if got := capabilities.GetPluginIdentifier(); got != "explicit" {
		t.Errorf("plugin identifier = %q, want explicit", got)
	}
}
