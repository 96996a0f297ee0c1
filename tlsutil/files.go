// Package tlsutil builds the TLS configurations of the gateway from
// certificate folders in the layout Qlik uses, generates such folders, and
// explains failed handshakes.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ssegw/ssegw/internal/shellquote"
)

// File names in Qlik's certificate folders. A plugin's folder holds the
// root and the server pair; the folder Qlik reads for an analytic
// connection holds the root and the client pair.
const (
	RootCertFile   = "root_cert.pem"
	ServerCertFile = "sse_server_cert.pem"
	ServerKeyFile  = "sse_server_key.pem"
	ClientCertFile = "sse_client_cert.pem"
	ClientKeyFile  = "sse_client_key.pem"
)

// ServerFiles locates a TLS server's key pair and the CA that must have
// signed its clients' certificates.
type ServerFiles struct {
	CertFile     string
	KeyFile      string
	ClientCAFile string
}

// ServerFilesInDir returns the files of a plugin-style folder. A non-empty
// explicit path replaces the folder's file of the same role.
func ServerFilesInDir(dir, certFile, keyFile, clientCAFile string) ServerFiles {
	return ServerFiles{
		CertFile:     pick(certFile, dir, ServerCertFile),
		KeyFile:      pick(keyFile, dir, ServerKeyFile),
		ClientCAFile: pick(clientCAFile, dir, RootCertFile),
	}
}

// ClientFiles locates what a TLS client needs: the CA that signed the
// server's certificate and, for mutual TLS, the client's own key pair.
type ClientFiles struct {
	CAFile   string
	CertFile string // empty with KeyFile for a client without certificate
	KeyFile  string
}

// ClientFilesInDir returns the files of a Qlik-style client folder. A
// non-empty explicit path replaces the folder's file of the same role.
func ClientFilesInDir(dir, caFile, certFile, keyFile string) ClientFiles {
	return ClientFiles{
		CAFile:   pick(caFile, dir, RootCertFile),
		CertFile: pick(certFile, dir, ClientCertFile),
		KeyFile:  pick(keyFile, dir, ClientKeyFile),
	}
}

// Kinds of certificate folder that FolderKind distinguishes.
const (
	ServerFolder = "server"
	ClientFolder = "client"
	SetFolder    = "set"
)

// FolderKind returns the kind of certificate folder dir is, so that error
// messages can point out a folder of the wrong kind. ServerFolder holds a
// server certificate and no client one, as the gateway's and a plugin's
// do. ClientFolder is the reverse, as Qlik's. SetFolder is the parent of
// a gateway and a qlik folder, as certs init makes it. Any other folder
// gives "".
func FolderKind(dir string) string {
	if dir == "" {
		return ""
	}
	server, client := fileExists(filepath.Join(dir, ServerCertFile)), fileExists(filepath.Join(dir, ClientCertFile))
	switch {
	case server && !client:
		return ServerFolder
	case client && !server:
		return ClientFolder
	case !server && !client && folderExists(filepath.Join(dir, GatewayFolder)) && folderExists(filepath.Join(dir, QlikFolder)):
		return SetFolder
	}
	return ""
}

func folderExists(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.IsDir()
}

func fileExists(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular()
}

func pick(explicit, dir, name string) string {
	if explicit != "" || dir == "" {
		return explicit
	}
	return filepath.Join(dir, name)
}

// ServerConfig loads the files into a TLS configuration that requires every
// client to present a certificate signed by the client CA. It allows TLS
// 1.2 and newer only; gRPC adds the "h2" protocol when it wraps the config.
func (f ServerFiles) ServerConfig() (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" || f.ClientCAFile == "" {
		return nil, errors.New("server TLS needs a certificate, a key and a client CA: set dir, or cert_file, key_file and client_ca_file")
	}
	pair, err := loadKeyPair("server", f.CertFile, f.KeyFile)
	if err == nil {
		err = requireUsage(pair, x509.ExtKeyUsageServerAuth, "server", f.CertFile)
	}
	pool, poolErr := loadPool("client CA", f.ClientCAFile)
	if err := errors.Join(err, poolErr); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// ClientConfig loads the files into a TLS configuration for connecting to
// a server whose certificate must be valid for serverName.
func (f ClientFiles) ClientConfig(serverName string) (*tls.Config, error) {
	if f.CAFile == "" {
		return nil, errors.New("client TLS needs the CA that signed the server's certificate: set dir or ca_file")
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("client TLS needs both cert_file and key_file, or neither")
	}
	pool, err := loadPool("CA", f.CAFile)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		ServerName: serverName,
	}
	if f.CertFile != "" {
		pair, pairErr := loadKeyPair("client", f.CertFile, f.KeyFile)
		if pairErr == nil {
			pairErr = requireUsage(pair, x509.ExtKeyUsageClientAuth, "client", f.CertFile)
		}
		err = errors.Join(err, pairErr)
		cfg.Certificates = []tls.Certificate{pair}
	}
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// loadKeyPair reads a certificate and its key, PKCS#1, PKCS#8 or SEC 1,
// and reports which file is missing, unreadable or mismatched.
func loadKeyPair(role, certFile, keyFile string) (tls.Certificate, error) {
	certPEM, certErr := readPEM(role+" certificate", certFile)
	keyPEM, keyErr := readPEM(role+" key", keyFile)
	if err := errors.Join(certErr, keyErr); err != nil {
		return tls.Certificate{}, err
	}
	if encryption := keyEncryption(keyPEM); encryption != "" {
		return tls.Certificate{}, fmt.Errorf("%s key %s is encrypted (%s), but %s", role, keyFile, encryption, decryptAdvice(keyFile))
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s certificate %s and key %s: %w", role, certFile, keyFile, err)
	}
	return pair, nil
}

// requireUsage returns an error when the certificate of pair lacks an
// extended key usage that its role needs, as lacksUsage reports. Every
// client checks a server certificate in every handshake. A plugin that
// requests no client certificate never receives the gateway's. But a
// folder with one is given for plugins that require it, as SSE plugins
// with mutual TLS do, and they reject it.
func requireUsage(pair tls.Certificate, usage x509.ExtKeyUsage, role, certFile string) error {
	if pair.Leaf == nil {
		return nil
	}
	if name, lacks := lacksUsage(pair.Leaf, usage); lacks {
		return fmt.Errorf("%s certificate %s lacks the %s extended key usage, so every TLS peer rejects it; use a %s certificate, such as ssegw certs init makes", role, certFile, name, role)
	}
	return nil
}

// lacksUsage reports whether cert lists extended key usages without
// usage, which TLS peers, Go's and the gRPC core's of Qlik alike, reject
// in every handshake, and returns the usage's name. A certificate that
// lists none may serve any purpose.
func lacksUsage(cert *x509.Certificate, usage x509.ExtKeyUsage) (name string, lacks bool) {
	name = map[x509.ExtKeyUsage]string{x509.ExtKeyUsageServerAuth: "serverAuth", x509.ExtKeyUsageClientAuth: "clientAuth"}[usage]
	lacks = len(cert.ExtKeyUsage) > 0 && !slices.Contains(cert.ExtKeyUsage, usage) && !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageAny)
	return name, lacks
}

// keyEncryption describes how the first private key block of keyPEM is
// encrypted: a PKCS#8 "ENCRYPTED PRIVATE KEY" block, or a "Proc-Type:
// 4,ENCRYPTED" header, as OpenSSL writes encrypted keys in its older
// formats. It returns "" for an unencrypted key, or when there is no
// private key block.
func keyEncryption(keyPEM []byte) string {
	for rest := keyPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return ""
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			continue
		}
		switch {
		case block.Type == "ENCRYPTED PRIVATE KEY":
			return fmt.Sprintf("PEM block %q", block.Type)
		case strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED"):
			return fmt.Sprintf("PEM block %q with the header Proc-Type: %s", block.Type, block.Headers["Proc-Type"])
		}
		return ""
	}
}

// decryptAdvice returns how to decrypt the key file at path, for an error
// message. Go's crypto/tls (Go 1.26) reads only unencrypted keys, and the
// gateway runs unattended, so it has no passphrase to give.
func decryptAdvice(path string) string {
	return fmt.Sprintf("ssegw needs an unencrypted key because it cannot ask for a passphrase; decrypt it, for instance with openssl pkey -in %s -out %s, which asks for the passphrase, then replace %s with %s",
		shellquote.Quote(path), shellquote.Quote(path+".plain"), path, path+".plain")
}

func loadPool(role, file string) (*x509.CertPool, error) {
	data, err := readPEM(role, file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s %s: no valid certificate in the file", role, file)
	}
	return pool, nil
}

func readPEM(role, file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", role, err)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("reading %s %s: the file is empty", role, file)
	}
	return data, nil
}
