package tlsutil_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ssegw/ssegw/tlsutil"
)

// setFiles lists the files WriteSet writes, relative to its directory,
// with the permission bits each must have at most.
var setFiles = []struct {
	path    string
	maxMode fs.FileMode
}{
	{filepath.Join(tlsutil.GatewayFolder, tlsutil.RootCertFile), 0o644},
	{filepath.Join(tlsutil.GatewayFolder, tlsutil.ServerCertFile), 0o644},
	{filepath.Join(tlsutil.GatewayFolder, tlsutil.ServerKeyFile), 0o600},
	{filepath.Join(tlsutil.QlikFolder, tlsutil.RootCertFile), 0o644},
	{filepath.Join(tlsutil.QlikFolder, tlsutil.ClientCertFile), 0o644},
	{filepath.Join(tlsutil.QlikFolder, tlsutil.ClientKeyFile), 0o600},
	{filepath.Join(tlsutil.CAFolder, tlsutil.RootCertFile), 0o644},
	{filepath.Join(tlsutil.CAFolder, tlsutil.CAKeyFile), 0o600},
}

// TestWriteSet checks the folders and files WriteSet writes, the mode of
// the keys, and the names and usages in the certificates.
func TestWriteSet(t *testing.T) {
	dir := t.TempDir()
	set, err := tlsutil.WriteSet(dir, []string{"localhost", "127.0.0.1", "::1", "Plugin.Example"}, tlsutil.SetOptions{})
	if err != nil {
		t.Fatalf("WriteSet() error: %v", err)
	}

	wantSet := tlsutil.Set{
		GatewayDir: filepath.Join(dir, "gateway"),
		QlikDir:    filepath.Join(dir, "qlik"),
		CADir:      filepath.Join(dir, "ca"),
	}
	if diff := cmp.Diff(wantSet, set); diff != "" {
		t.Errorf("WriteSet() mismatch (-want +got):\n%s", diff)
	}

	// Exactly the expected files, each with no more permissions than its
	// role allows.
	var got []string
	err = filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err == nil && !entry.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			got = append(got, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, file := range setFiles {
		want = append(want, file.path)
		info, err := os.Stat(filepath.Join(dir, file.path))
		if err != nil {
			t.Errorf("WriteSet() did not write %s: %v", file.path, err)
			continue
		}
		if mode := info.Mode().Perm(); mode&^file.maxMode != 0 {
			t.Errorf("mode of %s = %v, want at most %v", file.path, mode, file.maxMode)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files below %s mismatch (-want +got):\n%s", dir, diff)
	}

	// One root in all three folders.
	root := readFile(t, filepath.Join(set.CADir, tlsutil.RootCertFile))
	for _, folder := range []string{set.GatewayDir, set.QlikDir} {
		if duplicate := readFile(t, filepath.Join(folder, tlsutil.RootCertFile)); !bytes.Equal(duplicate, root) {
			t.Errorf("%s differs from the CA's root certificate", filepath.Join(folder, tlsutil.RootCertFile))
		}
	}
	rootCert := parseCert(t, root)
	if rootCert.Subject.CommonName != "sse_root" {
		t.Errorf("root certificate CN = %q, want sse_root", rootCert.Subject.CommonName)
	}
	if !rootCert.IsCA {
		t.Errorf("root certificate IsCA = false, want true")
	}

	// The server certificate: IP addresses as IP names, host names as DNS
	// names, for servers only.
	server := parseCert(t, readFile(t, filepath.Join(set.GatewayDir, tlsutil.ServerCertFile)))
	if server.Subject.CommonName != "sse_server" {
		t.Errorf("server certificate CN = %q, want sse_server", server.Subject.CommonName)
	}
	if diff := cmp.Diff([]string{"localhost", "Plugin.Example"}, server.DNSNames); diff != "" {
		t.Errorf("server certificate DNSNames mismatch (-want +got):\n%s", diff)
	}
	wantIPs := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	if !slices.EqualFunc(wantIPs, server.IPAddresses, net.IP.Equal) {
		t.Errorf("server certificate IPAddresses = %v, want %v", server.IPAddresses, wantIPs)
	}
	if diff := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, server.ExtKeyUsage); diff != "" {
		t.Errorf("server certificate ExtKeyUsage mismatch (-want +got):\n%s", diff)
	}
	if err := server.CheckSignatureFrom(rootCert); err != nil {
		t.Errorf("server certificate is not signed by the root: %v", err)
	}

	// The client certificate: for clients only, with no names.
	client := parseCert(t, readFile(t, filepath.Join(set.QlikDir, tlsutil.ClientCertFile)))
	if client.Subject.CommonName != "sse_client" {
		t.Errorf("client certificate CN = %q, want sse_client", client.Subject.CommonName)
	}
	if diff := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, client.ExtKeyUsage); diff != "" {
		t.Errorf("client certificate ExtKeyUsage mismatch (-want +got):\n%s", diff)
	}
	if len(client.DNSNames) != 0 || len(client.IPAddresses) != 0 {
		t.Errorf("client certificate names = %v %v, want none", client.DNSNames, client.IPAddresses)
	}
}

// TestWriteSetValidity checks the default lifetimes and that options
// change them.
func TestWriteSetValidity(t *testing.T) {
	tests := []struct {
		name      string
		opts      tlsutil.SetOptions
		wantRoot  time.Duration
		wantLeafs time.Duration
	}{
		{name: "defaults", wantRoot: 10 * 365 * 24 * time.Hour, wantLeafs: 365 * 24 * time.Hour},
		{name: "options", opts: tlsutil.SetOptions{RootValidity: 48 * time.Hour, LeafValidity: 24 * time.Hour}, wantRoot: 48 * time.Hour, wantLeafs: 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			set, err := tlsutil.WriteSet(t.TempDir(), []string{"localhost"}, tt.opts)
			if err != nil {
				t.Fatalf("WriteSet() error: %v", err)
			}
			files := map[string]time.Duration{
				filepath.Join(set.CADir, tlsutil.RootCertFile):        tt.wantRoot,
				filepath.Join(set.GatewayDir, tlsutil.ServerCertFile): tt.wantLeafs,
				filepath.Join(set.QlikDir, tlsutil.ClientCertFile):    tt.wantLeafs,
			}
			for path, validity := range files {
				cert := parseCert(t, readFile(t, path))
				// NotAfter is truncated to the second in the certificate.
				if got := cert.NotAfter.Sub(start); got < validity-time.Minute || got > validity+time.Minute {
					t.Errorf("%s NotAfter = %v from now, want %v", path, got, validity)
				}
				if !cert.NotBefore.Before(start) {
					t.Errorf("%s NotBefore = %v, want before %v", path, cert.NotBefore, start)
				}
			}
		})
	}
}

// TestWriteSetKeyTypes checks that the key type option applies to every
// key of the set.
func TestWriteSetKeyTypes(t *testing.T) {
	set, err := tlsutil.WriteSet(t.TempDir(), []string{"localhost"}, tlsutil.SetOptions{KeyType: tlsutil.KeyECDSAP384})
	if err != nil {
		t.Fatalf("WriteSet() error: %v", err)
	}
	for _, path := range []string{
		filepath.Join(set.CADir, tlsutil.RootCertFile),
		filepath.Join(set.GatewayDir, tlsutil.ServerCertFile),
		filepath.Join(set.QlikDir, tlsutil.ClientCertFile),
	} {
		public := parseCert(t, readFile(t, path)).PublicKey
		if key, ok := public.(*ecdsa.PublicKey); !ok || key.Curve != elliptic.P384() {
			t.Errorf("%s public key = %T, want an ECDSA P-384 key", path, public)
		}
	}
}

// TestWriteSetExistingFile checks that without Overwrite one existing file
// makes WriteSet fail with fs.ErrExist, write nothing and leave the file
// as it was.
func TestWriteSetExistingFile(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, tlsutil.QlikFolder, tlsutil.ClientKeyFile)
	if err := os.MkdirAll(filepath.Dir(existing), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, existing, []byte("old key\n"))

	_, err := tlsutil.WriteSet(dir, []string{"localhost"}, tlsutil.SetOptions{})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("WriteSet() error = %v, want fs.ErrExist", err)
	}
	if !strings.Contains(err.Error(), existing) {
		t.Errorf("WriteSet() error = %q, want it to name %s", err, existing)
	}
	if got := readFile(t, existing); string(got) != "old key\n" {
		t.Errorf("%s = %q after WriteSet, want it unchanged", existing, got)
	}
	for _, file := range setFiles {
		path := filepath.Join(dir, file.path)
		if path == existing {
			continue
		}
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Lstat(%s) error = %v after a failed WriteSet, want fs.ErrNotExist", path, err)
		}
	}
}

// TestWriteSetOverwrite checks that with Overwrite a new set replaces an
// old one, and that a replaced key loses permissions it had gained.
func TestWriteSetOverwrite(t *testing.T) {
	dir := t.TempDir()
	if _, err := tlsutil.WriteSet(dir, []string{"localhost"}, tlsutil.SetOptions{}); err != nil {
		t.Fatalf("first WriteSet() error: %v", err)
	}
	key := filepath.Join(dir, tlsutil.GatewayFolder, tlsutil.ServerKeyFile)
	oldKey := readFile(t, key)
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}

	if _, err := tlsutil.WriteSet(dir, []string{"localhost"}, tlsutil.SetOptions{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteSet() without Overwrite error = %v, want fs.ErrExist", err)
	}
	set, err := tlsutil.WriteSet(dir, []string{"localhost"}, tlsutil.SetOptions{Overwrite: true})
	if err != nil {
		t.Fatalf("WriteSet() with Overwrite error: %v", err)
	}
	if bytes.Equal(readFile(t, key), oldKey) {
		t.Errorf("%s unchanged after WriteSet with Overwrite, want a new key", key)
	}
	info, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("mode of %s = %v after WriteSet with Overwrite, want -rw-------", key, mode)
	}
	if _, err := tlsutil.ServerFilesInDir(set.GatewayDir, "", "", "").ServerConfig(); err != nil {
		t.Errorf("ServerConfig() of the new set error: %v", err)
	}
}

// TestWriteSetHandshake checks that the gateway folder and the Qlik folder
// of one set load and complete a mutual TLS handshake with each other,
// by host name and by IP address.
func TestWriteSetHandshake(t *testing.T) {
	set, err := tlsutil.WriteSet(t.TempDir(), testHosts, tlsutil.SetOptions{})
	if err != nil {
		t.Fatalf("WriteSet() error: %v", err)
	}
	serverConfig, err := tlsutil.ServerFilesInDir(set.GatewayDir, "", "", "").ServerConfig()
	if err != nil {
		t.Fatalf("ServerConfig() error: %v", err)
	}

	for _, serverName := range []string{"localhost", "127.0.0.1"} {
		t.Run(serverName, func(t *testing.T) {
			clientConfig, err := tlsutil.ClientFilesInDir(set.QlikDir, "", "", "").ClientConfig(serverName)
			if err != nil {
				t.Fatalf("ClientConfig(%q) error: %v", serverName, err)
			}
			var clientErr error
			serverErr := serverHandshake(t, serverConfig, handshakeTimeout, tlsClient(clientConfig, &clientErr))
			if serverErr != nil {
				t.Errorf("server handshake error: %v", serverErr)
			}
			if clientErr != nil {
				t.Errorf("client handshake error: %v", clientErr)
			}
		})
	}
}

// TestIssueHosts checks where Issue puts each host, with and without
// IPsAsDNS.
func TestIssueHosts(t *testing.T) {
	ca, err := tlsutil.NewRootCA("sse_root", time.Hour, "")
	if err != nil {
		t.Fatalf("NewRootCA() error: %v", err)
	}
	hosts := []string{"plugin.example", "10.0.0.5", "fd00::5"}
	ips := []net.IP{net.ParseIP("10.0.0.5"), net.ParseIP("fd00::5")}
	tests := []struct {
		name     string
		ipsAsDNS bool
		wantDNS  []string
		wantIPs  []net.IP
	}{
		{name: "IPs as IP names", wantDNS: []string{"plugin.example"}, wantIPs: ips},
		{name: "IPs as DNS names only, as Qlik's script writes them", ipsAsDNS: true,
			wantDNS: []string{"plugin.example", "10.0.0.5", "fd00::5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, _, err := ca.Issue(tlsutil.LeafRequest{CommonName: "sse_server", Hosts: hosts, IPsAsDNS: tt.ipsAsDNS})
			if err != nil {
				t.Fatalf("Issue() error: %v", err)
			}
			cert := parseCert(t, certPEM)
			if diff := cmp.Diff(tt.wantDNS, cert.DNSNames); diff != "" {
				t.Errorf("Issue(IPsAsDNS %v) DNSNames mismatch (-want +got):\n%s", tt.ipsAsDNS, diff)
			}
			if !slices.EqualFunc(tt.wantIPs, cert.IPAddresses, net.IP.Equal) {
				t.Errorf("Issue(IPsAsDNS %v) IPAddresses = %v, want %v", tt.ipsAsDNS, cert.IPAddresses, tt.wantIPs)
			}
		})
	}
}

// TestIssueKeyUsage checks that only RSA leaves get key encipherment,
// which ECDSA keys cannot do.
func TestIssueKeyUsage(t *testing.T) {
	ca, err := tlsutil.NewRootCA("sse_root", time.Hour, "")
	if err != nil {
		t.Fatalf("NewRootCA() error: %v", err)
	}
	tests := []struct {
		name    string
		keyType tlsutil.KeyType
		want    x509.KeyUsage
	}{
		{name: "ECDSA", keyType: tlsutil.KeyECDSAP256, want: x509.KeyUsageDigitalSignature},
		{name: "RSA", keyType: tlsutil.KeyRSA2048, want: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, _, err := ca.Issue(tlsutil.LeafRequest{CommonName: "sse_server", KeyType: tt.keyType})
			if err != nil {
				t.Fatalf("Issue() error: %v", err)
			}
			if got := parseCert(t, certPEM).KeyUsage; got != tt.want {
				t.Errorf("Issue(%s) KeyUsage = %b, want %b", tt.keyType, got, tt.want)
			}
		})
	}
}

// TestGenerateKey checks each key type that is quick to generate, the
// default, and that an unknown type is rejected.
func TestGenerateKey(t *testing.T) {
	tests := []struct {
		keyType  tlsutil.KeyType
		wantBits int
		wantRSA  bool
	}{
		{keyType: "", wantBits: 256},
		{keyType: tlsutil.KeyECDSAP256, wantBits: 256},
		{keyType: tlsutil.KeyECDSAP384, wantBits: 384},
		{keyType: tlsutil.KeyRSA2048, wantBits: 2048, wantRSA: true},
	}
	for _, tt := range tests {
		t.Run(string(tt.keyType), func(t *testing.T) {
			key, err := tlsutil.GenerateKey(tt.keyType)
			if err != nil {
				t.Fatalf("GenerateKey(%q) error: %v", tt.keyType, err)
			}
			var bits int
			switch public := key.Public().(type) {
			case *ecdsa.PublicKey:
				bits = public.Curve.Params().BitSize
			case *rsa.PublicKey:
				bits = public.N.BitLen()
			}
			if _, isRSA := key.(*rsa.PrivateKey); isRSA != tt.wantRSA {
				t.Errorf("GenerateKey(%q) = %T, want an RSA key: %v", tt.keyType, key, tt.wantRSA)
			}
			if bits != tt.wantBits {
				t.Errorf("GenerateKey(%q) key size = %d bits, want %d", tt.keyType, bits, tt.wantBits)
			}
		})
	}

	t.Run("unknown", func(t *testing.T) {
		if key, err := tlsutil.GenerateKey("ed25519"); err == nil {
			t.Errorf("GenerateKey(%q) = %T, want an error", "ed25519", key)
		}
	})
}

// TestLoadAuthority checks that a set's CA folder loads into an authority
// whose certificates verify against the root, and that a leaf
// certificate or a mismatched key is rejected.
func TestLoadAuthority(t *testing.T) {
	f := newFixture(t)
	caCert := filepath.Join(f.CADir, tlsutil.RootCertFile)
	caKey := filepath.Join(f.CADir, tlsutil.CAKeyFile)

	t.Run("CA folder", func(t *testing.T) {
		ca, err := tlsutil.LoadAuthority(caCert, caKey)
		if err != nil {
			t.Fatalf("LoadAuthority(%s, %s) error: %v", caCert, caKey, err)
		}
		certPEM, _ := issueClient(t, ca, nil)
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(readFile(t, caCert))
		opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if _, err := parseCert(t, certPEM).Verify(opts); err != nil {
			t.Errorf("certificate issued by the loaded CA does not verify against its root: %v", err)
		}
	})

	t.Run("leaf certificate", func(t *testing.T) {
		cert := filepath.Join(f.GatewayDir, tlsutil.ServerCertFile)
		key := filepath.Join(f.GatewayDir, tlsutil.ServerKeyFile)
		ca, err := tlsutil.LoadAuthority(cert, key)
		if err == nil {
			t.Fatalf("LoadAuthority(%s, %s) = %v, want an error", cert, key, ca)
		}
		if !strings.Contains(err.Error(), cert) {
			t.Errorf("LoadAuthority(%s, %s) error = %q, want it to name %s", cert, key, err, cert)
		}
		if !strings.Contains(err.Error(), "not a CA") {
			t.Errorf("LoadAuthority(%s, %s) error = %q, want it to say the certificate is not a CA", cert, key, err)
		}
	})

	t.Run("key of another certificate", func(t *testing.T) {
		key := filepath.Join(f.GatewayDir, tlsutil.ServerKeyFile)
		ca, err := tlsutil.LoadAuthority(caCert, key)
		if err == nil {
			t.Fatalf("LoadAuthority(%s, %s) = %v, want an error", caCert, key, ca)
		}
		if !strings.Contains(err.Error(), key) {
			t.Errorf("LoadAuthority(%s, %s) error = %q, want it to name %s", caCert, key, err, key)
		}
	})
}
