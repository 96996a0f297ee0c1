package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
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

// TestCertsInitForceNewCA checks that certs init --force renews a set
// from its own CA and prints that it kept the CA. The old Qlik client
// folder and the new gateway folder must still trust each other. --new-ca
// replaces the CA, with a notice to copy Qlik's folder again, and a first
// set gets neither notice.
func TestCertsInitForceNewCA(t *testing.T) {
	dir := t.TempDir()
	const keptNotice, newNotice = "The CA is the one that was there", "The CA is new"
	read := func(folder, file string) []byte {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, folder, file))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	first, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost")
	if err != nil {
		t.Fatalf("certs init: %v", err)
	}
	if strings.Contains(first, keptNotice) || strings.Contains(first, newNotice) {
		t.Errorf("certs init into an empty folder printed %q, want no notice about the CA", first)
	}
	oldRoot, oldClient, oldServer := read("ca", "root_cert.pem"), read("qlik", "sse_client_cert.pem"), read("gateway", "sse_server_cert.pem")

	renewed, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost", "--force")
	if err != nil {
		t.Fatalf("certs init --force: %v", err)
	}
	if !strings.Contains(renewed, keptNotice) {
		t.Errorf("certs init --force printed %q, want it to say the CA was kept", renewed)
	}
	if !bytes.Equal(read("ca", "root_cert.pem"), oldRoot) || !bytes.Equal(read("gateway", "root_cert.pem"), oldRoot) {
		t.Error("certs init --force changed the CA, want it kept")
	}
	newServer := read("gateway", "sse_server_cert.pem")
	if bytes.Equal(newServer, oldServer) {
		t.Error("certs init --force kept the gateway's certificate, want a new one")
	}
	// A Qlik server with the old folder trusts the new server certificate,
	// and the gateway trusts its old client certificate.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(oldRoot)
	verify := func(name string, certPEM []byte, options x509.VerifyOptions) {
		t.Helper()
		block, _ := pem.Decode(certPEM)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		options.Roots = roots
		if _, err := cert.Verify(options); err != nil {
			t.Errorf("%s against the old root: %v", name, err)
		}
	}
	verify("new server certificate", newServer, x509.VerifyOptions{DNSName: "localhost"})
	verify("old client certificate", oldClient, x509.VerifyOptions{KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	for _, args := range [][]string{{"--new-ca"}, {"--force", "--root-validity", "87600h"}} {
		if _, err := runCommand(t, append([]string{"certs", "init", "--out", dir, "--hosts", "localhost"}, args...)...); err == nil {
			t.Errorf("certs init %q = nil error, want one: it would replace the CA without --force --new-ca", args)
		}
	}
	// With the CA moved off the host, a renewal needs it back, or --new-ca.
	moved := t.TempDir()
	if err := os.Rename(filepath.Join(dir, "ca"), filepath.Join(moved, "ca")); err != nil {
		t.Fatal(err)
	}
	if _, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost", "--force"); err == nil || !strings.Contains(err.Error(), "put the CA's root_cert.pem and root_key.pem back") {
		t.Errorf("certs init --force without ca/ = %v, want an error asking for the CA or --new-ca", err)
	}
	if !bytes.Equal(read("gateway", "root_cert.pem"), oldRoot) {
		t.Error("certs init --force without ca/ replaced the gateway's root, want nothing written")
	}
	if out, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost", "--force", "--new-ca"); err != nil || !strings.Contains(out, newNotice) {
		t.Errorf("certs init --force --new-ca without ca/ = %q, %v; want the notice that the CA is new", out, err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "ca")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(moved, "ca"), filepath.Join(dir, "ca")); err != nil {
		t.Fatal(err)
	}

	again, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost", "--force", "--new-ca")
	if err != nil {
		t.Fatalf("certs init --force --new-ca: %v", err)
	}
	if !strings.Contains(again, newNotice+": copy "+filepath.Join(dir, "qlik")) {
		t.Errorf("certs init --force --new-ca printed %q, want it to say the CA is new and to copy the qlik folder again", again)
	}
	if bytes.Equal(read("ca", "root_cert.pem"), oldRoot) {
		t.Error("certs init --force --new-ca kept the CA, want a new one")
	}
}

// TestCertsInitRenewalNewCAAdvice checks that a failed renewal advises
// --new-ca only when the kept CA expires too soon, and not for an error
// that a new CA does not fix, such as a folder where a file belongs.
func TestCertsInitRenewalNewCAAdvice(t *testing.T) {
	dir := t.TempDir()
	certsInit(t, "--out", dir, "--hosts", "localhost", "--root-validity", "1000h", "--validity", "24h")

	_, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost", "--force", "--validity", "2000h")
	if err == nil {
		t.Fatal("certs init --force --validity 2000h under a CA valid for 1000h succeeded, want an error")
	}
	if want := "make a new CA with --new-ca, after which every Qlik server needs the new qlik folder"; !strings.Contains(err.Error(), want) {
		t.Errorf("certs init --force --validity 2000h error = %q, want it to contain %q", err, want)
	}

	serverCert := filepath.Join(dir, tlsutil.GatewayFolder, tlsutil.ServerCertFile)
	if err := os.Remove(serverCert); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(serverCert, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost", "--force", "--validity", "24h")
	if err == nil {
		t.Fatalf("certs init --force with a folder at %s succeeded, want an error", serverCert)
	}
	if want := serverCert + " is a folder"; !strings.Contains(err.Error(), want) {
		t.Errorf("certs init --force error = %q, want it to contain %q", err, want)
	}
	if strings.Contains(err.Error(), "--new-ca") {
		t.Errorf("certs init --force error = %q, want no advice about --new-ca, which does not move a folder away", err)
	}
}

// TestCertsInitValidityAgainstCA checks that a --validity longer than
// the root's is compared with --root-validity for a new CA, and with the
// kept CA's expiry for a renewal, which rejects --root-validity.
func TestCertsInitValidityAgainstCA(t *testing.T) {
	dir := t.TempDir()
	_, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost", "--validity", "90000h")
	if want := "--validity (90000h0m0s) is longer than --root-validity (87600h0m0s)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("certs init --validity 90000h error = %v, want one containing %q", err, want)
	}

	certsInit(t, "--out", dir, "--hosts", "localhost")
	caDir := filepath.Join(dir, tlsutil.CAFolder)
	caEnd := certsLoadCA(t, dir).Cert.NotAfter.Format(time.DateTime)
	_, err = runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost", "--force", "--validity", "90000h")
	if err == nil {
		t.Fatal("certs init --force --validity 90000h succeeded, want an error: the certificates would outlive the CA")
	}
	if want := "would outlive the CA in " + caDir + ", which expires on " + caEnd; !strings.Contains(err.Error(), want) {
		t.Errorf("certs init --force --validity 90000h error = %q, want it to contain %q", err, want)
	}
	if strings.Contains(err.Error(), "--root-validity") {
		t.Errorf("certs init --force --validity 90000h error = %q, want no mention of --root-validity, which a renewal rejects", err)
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

// TestCertsInitRejectsInvalidHosts checks that host names that are neither
// IP addresses nor DNS names are rejected, each named, with nothing
// written, and that an IPv6 address in brackets and a wildcard are taken.
func TestCertsInitRejectsInvalidHosts(t *testing.T) {
	dir := t.TempDir()
	_, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "[::1],127.0.0.1:50051,https://gw.example,bad host!,300.1.1.1")
	if err == nil {
		t.Fatal("certs init with invalid hosts succeeded, want an error")
	}
	for _, want := range []string{
		`"127.0.0.1:50051": has a port; give the host alone: 127.0.0.1`,
		`"https://gw.example": a URL; give its host alone: gw.example`,
		`"bad host!": not a valid DNS name`,
		`"300.1.1.1": neither a valid IP address nor a DNS name`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("certs init error = %q, want it to contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), `"[::1]"`) {
		t.Errorf("certs init error = %q, want [::1] accepted", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("certs init with invalid hosts wrote %d entries into %s, want none", len(entries), dir)
	}

	if _, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "[::1],*.gw.example"); err != nil {
		t.Fatalf("certs init --hosts [::1],*.gw.example: %v", err)
	}
	server, err := tls.LoadX509KeyPair(filepath.Join(dir, "gateway", tlsutil.ServerCertFile), filepath.Join(dir, "gateway", tlsutil.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(server.Leaf.IPAddresses); got != "[::1]" {
		t.Errorf("IP subjectAltNames = %s, want [::1]", got)
	}
	if got := fmt.Sprint(server.Leaf.DNSNames); got != "[*.gw.example]" {
		t.Errorf("DNS subjectAltNames = %s, want [*.gw.example]", got)
	}
}

// TestCertsInitFailureWritesNothing checks that a failure found after the
// first folder could have been written leaves no new file behind, and
// that the error states it.
func TestCertsInitFailureWritesNothing(t *testing.T) {
	dir := t.TempDir()
	ssetest.WriteFile(t, filepath.Join(dir, "ca"), []byte("not a folder"))
	_, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost")
	if err == nil {
		t.Fatal("certs init with a file at ca/ succeeded, want an error")
	}
	for _, want := range []string{filepath.Join(dir, "ca") + " is a file", "nothing was written"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("certs init error = %q, want it to contain %q", err, want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%s after the failed certs init has %d entries, want only ca", dir, len(entries))
	}
}

// TestCertsInitRejectsIgnoredFlags checks that flags that would have no
// effect, or make an unusable certificate, are rejected before anything
// is written.
func TestCertsInitRejectsIgnoredFlags(t *testing.T) {
	caSet := t.TempDir()
	if _, err := runCommand(t, "certs", "init", "--out", caSet, "--hosts", "localhost", "--root-validity", "48h", "--validity", "24h"); err != nil {
		t.Fatalf("certs init: %v", err)
	}
	caDir := filepath.Join(caSet, "ca")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"hosts with --ca", []string{"--ca", caDir, "--hosts", "foo"}, "--hosts does not apply with --ca"},
		{"root validity with --ca", []string{"--ca", caDir, "--root-validity", "100h"}, "--root-validity does not apply with --ca"},
		{"new CA with --ca", []string{"--ca", caDir, "--force", "--new-ca"}, "--new-ca does not apply with --ca"},
		{"empty client name", []string{"--ca", caDir, "--client-name", ""}, "--client-name is empty"},
		{"client name without --ca", []string{"--hosts", "localhost", "--client-name", "gw"}, "--client-name applies only with --ca"},
		{"leaves outliving the root", []string{"--hosts", "localhost", "--validity", "200h", "--root-validity", "100h"}, "--validity (200h0m0s) is longer than --root-validity (100h0m0s)"},
		{"client outliving the CA", []string{"--ca", caDir, "--validity", "72h"}, "would outlive the CA in " + caDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := t.TempDir()
			_, err := runCommand(t, append([]string{"certs", "init", "--out", out}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("certs init %q error = %v, want one containing %q", tt.args, err, tt.want)
			}
			if entries, _ := os.ReadDir(out); len(entries) != 0 {
				t.Errorf("certs init %q wrote %d entries, want none", tt.args, len(entries))
			}
		})
	}
}

// TestCertsInitForceReplacesLinks checks that --force replaces a key file
// that others can read with one only its owner reads, and replaces a
// symbolic link at a key's path instead of writing through it.
func TestCertsInitForceReplacesLinks(t *testing.T) {
	dir := t.TempDir()
	if _, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost"); err != nil {
		t.Fatalf("certs init: %v", err)
	}
	clientKey := filepath.Join(dir, "qlik", tlsutil.ClientKeyFile)
	if err := os.Chmod(clientKey, 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other.txt")
	ssetest.WriteFile(t, other, []byte("someone else's file\n"))
	serverKey := filepath.Join(dir, "gateway", tlsutil.ServerKeyFile)
	if err := os.Remove(serverKey); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, serverKey); err != nil {
		t.Skipf("cannot make a symbolic link here: %v", err)
	}

	if _, err := runCommand(t, "certs", "init", "--out", dir, "--hosts", "localhost", "--force"); err != nil {
		t.Fatalf("certs init --force: %v", err)
	}
	if data, err := os.ReadFile(other); err != nil || string(data) != "someone else's file\n" {
		t.Errorf("file behind the link after certs init --force = %q, %v; want it unchanged", data, err)
	}
	info, err := os.Lstat(serverKey)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Mode().IsRegular() {
		t.Errorf("%s after certs init --force has mode %v, want a regular file", serverKey, info.Mode())
	}
	for _, key := range []string{serverKey, clientKey} {
		if info, err := os.Stat(key); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("mode of %s after certs init --force = %v, %v; want -rw-------", key, info.Mode(), err)
		}
	}
}
