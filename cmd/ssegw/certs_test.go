package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/tlsutil"
)

// runCommand runs the ssegw command line in-process with args and returns
// its output and error.
func runCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// TestCertsInitWritesQlikLayout checks the folders certs init writes, that
// they work together, and that a second run overwrites nothing without
// --force.
func TestCertsInitWritesQlikLayout(t *testing.T) {
	dir := t.TempDir()
	if _, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost,127.0.0.1"); err != nil {
		t.Fatalf("certs init: %v", err)
	}
	server := tlsutil.ServerFilesInDir(filepath.Join(dir, "gateway"), "", "", "")
	if _, err := server.ServerConfig(); err != nil {
		t.Errorf("gateway folder: %v", err)
	}
	client := tlsutil.ClientFilesInDir(filepath.Join(dir, "qlik"), "", "", "")
	if _, err := client.ClientConfig("localhost"); err != nil {
		t.Errorf("qlik folder: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca", "root_key.pem")); err != nil {
		t.Errorf("CA key: %v", err)
	}

	before, err := os.ReadFile(server.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	_, err = runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost")
	if err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("second certs init error = %v, want one that mentions --force", err)
	}
	after, err := os.ReadFile(server.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("second certs init without --force replaced the server key")
	}

	if _, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost", "--force"); err != nil {
		t.Fatalf("certs init --force: %v", err)
	}
	forced, err := os.ReadFile(server.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(before, forced) {
		t.Error("certs init --force kept the old server key")
	}
}

// TestCertsInitHostsWithSpaces checks that a host list written with
// spaces after its commas still makes the address an IP subjectAltName,
// and that a validity that is not positive is rejected.
func TestCertsInitHostsWithSpaces(t *testing.T) {
	dir := t.TempDir()
	if _, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "gateway.example.com, 10.0.0.5"); err != nil {
		t.Fatalf("certs init: %v", err)
	}
	server, err := tls.LoadX509KeyPair(filepath.Join(dir, "gateway", tlsutil.ServerCertFile), filepath.Join(dir, "gateway", tlsutil.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	leaf := server.Leaf
	if got := fmt.Sprint(leaf.IPAddresses); got != "[10.0.0.5]" {
		t.Errorf("IP subjectAltNames = %s, want [10.0.0.5]", got)
	}
	if got := fmt.Sprint(leaf.DNSNames); got != "[gateway.example.com]" {
		t.Errorf("DNS subjectAltNames = %s, want [gateway.example.com]", got)
	}

	_, err = runCommand(t, "certs", "init", "--out", t.TempDir(), "--hosts", "localhost", "--validity", "-48h")
	if err == nil || !strings.Contains(err.Error(), "must be positive") {
		t.Errorf("certs init --validity -48h error = %v, want one saying it must be positive", err)
	}
}

// TestExampleConfigIsValid checks that config.yaml at the repository root
// loads and validates once certs init has made the certificates it names,
// as its header comment describes.
func TestExampleConfigIsValid(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	if _, err := runCommand(t, "certs", "init", "--out", "certs", "--hosts", "localhost,127.0.0.1,python.sse.example,r.sse.example"); err != nil {
		t.Fatalf("certs init: %v", err)
	}
	cfg, err := config.Parse(data, nil)
	if err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	if got := cfg.EngineNames(); strings.Join(got, ",") != "R,SSEPython" {
		t.Errorf("engines = %v, want [R SSEPython]", got)
	}
}
