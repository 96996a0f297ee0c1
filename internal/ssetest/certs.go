package ssetest

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssegw/ssegw/tlsutil"
)

// Hosts in every test certificate set: loopback, and host names that
// select engines by name in routing tests. Nothing resolves the names;
// clients dial 127.0.0.1 and send them as server name and :authority.
var TestHosts = []string{"localhost", "127.0.0.1", "::1", "r.gw.test", "py.gw.test"}

// Certs is a certificate set in Qlik's layout, with its CA at hand for
// issuing more.
type Certs struct {
	tlsutil.Set
	CA *tlsutil.Authority
}

// NewCerts writes a fresh set below a temporary folder of the test.
func NewCerts(t testing.TB) *Certs {
	t.Helper()
	set, err := tlsutil.WriteSet(t.TempDir(), TestHosts, tlsutil.SetOptions{})
	if err != nil {
		t.Fatalf("writing certificates: %v", err)
	}
	ca, err := tlsutil.LoadAuthority(filepath.Join(set.CADir, tlsutil.RootCertFile), filepath.Join(set.CADir, tlsutil.CAKeyFile))
	if err != nil {
		t.Fatalf("loading test CA: %v", err)
	}
	return &Certs{Set: set, CA: ca}
}

// ClientDir issues a client certificate as req describes, signed by issuer
// (nil for the set's own CA), and writes it with the set's root into a new
// Qlik-style client folder.
func (c *Certs) ClientDir(t testing.TB, issuer *tlsutil.Authority, req tlsutil.LeafRequest) string {
	t.Helper()
	if issuer == nil {
		issuer = c.CA
	}
	if req.CommonName == "" {
		req.CommonName = "sse_client"
	}
	if req.Usage == nil {
		req.Usage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	cert, key, err := issuer.Issue(req)
	if err != nil {
		t.Fatalf("issuing client certificate: %v", err)
	}
	dir := t.TempDir()
	root, err := os.ReadFile(filepath.Join(c.QlikDir, tlsutil.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	WriteFile(t, filepath.Join(dir, tlsutil.RootCertFile), root)
	WriteFile(t, filepath.Join(dir, tlsutil.ClientCertFile), cert)
	WriteFile(t, filepath.Join(dir, tlsutil.ClientKeyFile), key)
	return dir
}

// ServerDir issues a server certificate as req describes, signed by the
// set's CA, into a new plugin-style folder.
func (c *Certs) ServerDir(t testing.TB, req tlsutil.LeafRequest) string {
	t.Helper()
	if req.CommonName == "" {
		req.CommonName = "sse_server"
	}
	if req.Usage == nil {
		req.Usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	cert, key, err := c.CA.Issue(req)
	if err != nil {
		t.Fatalf("issuing server certificate: %v", err)
	}
	dir := t.TempDir()
	WriteFile(t, filepath.Join(dir, tlsutil.RootCertFile), tlsutil.EncodeCert(c.CA.Cert))
	WriteFile(t, filepath.Join(dir, tlsutil.ServerCertFile), cert)
	WriteFile(t, filepath.Join(dir, tlsutil.ServerKeyFile), key)
	return dir
}

// TemplateDir signs template by the set's CA, with a new key and serial
// number. It writes the certificate and key as certFile and keyFile, with
// the set's root, into a new folder. It serves certificates that
// tlsutil.Authority.Issue does not make, such as one that lists an IP
// address only as a DNS name.
func (c *Certs) TemplateDir(t testing.TB, template *x509.Certificate, certFile, keyFile string) string {
	t.Helper()
	key, err := tlsutil.GenerateKey(tlsutil.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	template.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, template, c.CA.Cert, key.Public(), c.CA.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := tlsutil.EncodeKey(key, false)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	WriteFile(t, filepath.Join(dir, tlsutil.RootCertFile), tlsutil.EncodeCert(c.CA.Cert))
	WriteFile(t, filepath.Join(dir, certFile), tlsutil.EncodeCert(cert))
	WriteFile(t, filepath.Join(dir, keyFile), keyPEM)
	return dir
}

// WriteFolder writes files, by name, into a new folder: keys (*_key.pem)
// readable by their owner only and certificates by everyone, as
// `ssegw certs init` writes them.
func WriteFolder(t testing.TB, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, "_key.pem") {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// IssueLeaf issues a certificate from ca as req describes, or fails the
// test.
func IssueLeaf(t testing.TB, ca *tlsutil.Authority, req tlsutil.LeafRequest) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(req)
	if err != nil {
		t.Fatalf("issuing %q: %v", req.CommonName, err)
	}
	return certPEM, keyPEM
}

// ReplaceFile writes data to a temporary name in path's folder and renames
// it over path, as tools that renew certificates do.
func ReplaceFile(t testing.TB, path string, data []byte) {
	t.Helper()
	temporary := path + ".tmp"
	if err := os.WriteFile(temporary, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(temporary, path); err != nil {
		t.Fatal(err)
	}
}

// CertSerial returns the serial number of the first certificate in PEM
// data.
func CertSerial(t testing.TB, certPEM []byte) *big.Int {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM block in the certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.SerialNumber
}

// WriteFile writes data to path or fails the test.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
