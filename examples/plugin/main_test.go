package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
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

// TestPluginRejectsMaxMessageSize checks that the plugin program exits
// with status 1 and a message, without listening, when -max-message-size
// would fail every call. A plugin that serves instead is killed after 10s.
func TestPluginRejectsMaxMessageSize(t *testing.T) {
	binary := ssetest.Binary(t, "./examples/plugin")
	for _, size := range []string{"0", "-1"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		output, err := exec.CommandContext(ctx, binary, "-address", "127.0.0.1:0", "-max-message-size", size).CombinedOutput()
		cancel()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Errorf("plugin -max-message-size %s: %v, want exit status 1; output:\n%s", size, err, output)
		}
		if want := "invalid -max-message-size " + size; !strings.Contains(string(output), want) {
			t.Errorf("plugin -max-message-size %s output = %q, want it to contain %q", size, output, want)
		}
		if strings.Contains(string(output), "listening on") {
			t.Errorf("plugin -max-message-size %s output = %q, want no listener", size, output)
		}
	}
}
