package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/sseclient"
)

func TestMain(m *testing.M) {
	code := m.Run()
	ssetest.RemoveBinaries()
	os.Exit(code)
}

// TestPluginWithTLS runs the plugin program with --tls-dir and calls it
// with Qlik's client folder; a client without a certificate is refused.
func TestPluginWithTLS(t *testing.T) {
	certs := ssetest.NewCerts(t)
	_, address := ssetest.StartExamplePlugin(t, "--tls-dir", certs.GatewayDir, "--name", "secured")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	client, err := sseclient.Dial(address, sseclient.Options{TLSDir: certs.QlikDir, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	capabilities, header, err := client.Capabilities(ctx)
	if err != nil {
		t.Fatalf("GetCapabilities over mutual TLS: %v", err)
	}
	if got := capabilities.GetPluginIdentifier(); got != "secured" {
		t.Errorf("plugin identifier = %q, want secured", got)
	}
	if got := header.Get(example.InstanceHeader); len(got) != 1 || got[0] != "secured" {
		t.Errorf("header %s = %q, want [secured]", example.InstanceHeader, got)
	}

	plaintext, err := sseclient.Dial(address, sseclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer plaintext.Close()
	if _, _, err := plaintext.Capabilities(ctx); err == nil {
		t.Error("a plaintext client reached the TLS plugin")
	}
}
