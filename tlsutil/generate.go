package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"time"
)

// KeyType selects the algorithm and size of a generated key.
type KeyType string

// Key types that GenerateKey supports. ECDSA P-256 is the default: Qlik's
// gRPC core and Go both support it, and it is much faster than RSA.
const (
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyECDSAP384 KeyType = "ecdsa-p384"
	KeyRSA2048   KeyType = "rsa-2048"
	KeyRSA3072   KeyType = "rsa-3072"
	KeyRSA4096   KeyType = "rsa-4096"
)

// GenerateKey makes a new private key of the given type; empty means
// KeyECDSAP256.
func GenerateKey(keyType KeyType) (crypto.Signer, error) {
	switch keyType {
	case KeyECDSAP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case KeyRSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("unknown key type %q: use %s, %s, %s, %s or %s", keyType, KeyECDSAP256, KeyECDSAP384, KeyRSA2048, KeyRSA3072, KeyRSA4096)
}

// Authority is a certificate authority that issues certificates.
type Authority struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewRootCA makes a self-signed root certificate authority.
func NewRootCA(commonName string, validity time.Duration, keyType KeyType) (*Authority, error) {
	key, err := GenerateKey(keyType)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	template := &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour), // tolerates clocks a little behind
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	cert, err := createCertificate(template, template, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return &Authority{Cert: cert, Key: key}, nil
}

// LoadAuthority reads a CA's certificate and key, as kept by WriteSet.
func LoadAuthority(certFile, keyFile string) (*Authority, error) {
	pair, err := loadKeyPair("CA", certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate %s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("CA certificate %s is not a CA certificate (basic constraints CA:FALSE)", certFile)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA key %s cannot sign", keyFile)
	}
	return &Authority{Cert: cert, Key: signer}, nil
}

// LeafRequest describes a server or client certificate to issue.
type LeafRequest struct {
	CommonName string

	// Hosts are DNS names and IP addresses; addresses become IP
	// subjectAltNames.
	Hosts []string

	// IPsAsDNS writes IP addresses as DNS subjectAltNames only, as Qlik's
	// usual OpenSSL script does, so that Go cannot match them. Only for
	// reproducing such sets in tests.
	IPsAsDNS bool

	// Usage is x509.ExtKeyUsageServerAuth or x509.ExtKeyUsageClientAuth.
	Usage []x509.ExtKeyUsage

	// NotBefore and NotAfter default to one hour ago and one year ahead.
	NotBefore, NotAfter time.Time

	KeyType KeyType

	// PKCS1 writes an RSA key as "RSA PRIVATE KEY" (PKCS#1), as older
	// OpenSSL versions do, instead of PKCS#8.
	PKCS1 bool
}

// Issue makes a key and a certificate signed by the authority, both PEM
// encoded.
func (a *Authority) Issue(req LeafRequest) (certPEM, keyPEM []byte, err error) {
	key, err := GenerateKey(req.KeyType)
	if err != nil {
		return nil, nil, err
	}
	notBefore, notAfter := req.NotBefore, req.NotAfter
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().AddDate(1, 0, 0)
	}
	keyUsage := x509.KeyUsageDigitalSignature
	if _, isRSA := key.(*rsa.PrivateKey); isRSA {
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	template := &x509.Certificate{
		Subject:     pkix.Name{CommonName: req.CommonName},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    keyUsage,
		ExtKeyUsage: req.Usage,
	}
	for _, host := range req.Hosts {
		if ip := net.ParseIP(host); ip != nil && !req.IPsAsDNS {
			template.IPAddresses = append(template.IPAddresses, ip)
			continue
		}
		template.DNSNames = append(template.DNSNames, host)
	}
	cert, err := createCertificate(template, a.Cert, key.Public(), a.Key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = EncodeKey(key, req.PKCS1)
	if err != nil {
		return nil, nil, err
	}
	return EncodeCert(cert), keyPEM, nil
}

func createCertificate(template, parent *x509.Certificate, public crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("making a serial number: %w", err)
	}
	template.SerialNumber = serial
	// A subject key id lets verifiers match the leaf to this CA even after
	// the CA is reissued with the same name.
	if template.IsCA {
		spki, err := x509.MarshalPKIXPublicKey(public)
		if err != nil {
			return nil, fmt.Errorf("encoding public key: %w", err)
		}
		sum := sha256.Sum256(spki)
		template.SubjectKeyId = sum[:20]
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, public, signer)
	if err != nil {
		return nil, fmt.Errorf("signing certificate for %q: %w", template.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// EncodeCert returns the certificate in PEM.
func EncodeCert(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// EncodeKey returns the key in PEM: PKCS#8, or PKCS#1 for an RSA key when
// pkcs1 is set.
func EncodeKey(key crypto.Signer, pkcs1 bool) ([]byte, error) {
	if rsaKey, ok := key.(*rsa.PrivateKey); ok && pkcs1 {
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Set is a complete certificate set for Qlik, the gateway and the CA, as
// three folders below one directory.
type Set struct {
	// GatewayDir is the gateway's folder, in a plugin's layout:
	// root_cert.pem, sse_server_cert.pem, sse_server_key.pem.
	GatewayDir string
	// QlikDir is the folder to copy to the Qlik server and name in the
	// analytic connection: root_cert.pem, sse_client_cert.pem,
	// sse_client_key.pem.
	QlikDir string
	// CADir keeps the root's certificate and key, apart from the others,
	// for issuing more certificates later.
	CADir string
}

// Folder names below the directory given to WriteSet.
const (
	GatewayFolder = "gateway"
	QlikFolder    = "qlik"
	CAFolder      = "ca"
	CAKeyFile     = "root_key.pem"
)

// SetOptions tunes WriteSet. The zero value makes ECDSA P-256 keys, a root
// valid for ten years and leaves valid for one, and never overwrites.
type SetOptions struct {
	KeyType      KeyType
	RootValidity time.Duration
	LeafValidity time.Duration
	Overwrite    bool
	// CA, when set, signs the set's certificates instead of a new root,
	// and its files stay as they are: a renewal that keeps the CA lets
	// every Qlik server that holds the old client folder connect still.
	// RootValidity is ignored then, and LeafValidity must end before
	// the CA's certificate does.
	CA *Authority
}

// WriteSet makes a root CA (CN sse_root), a server certificate for the
// gateway valid for hosts (CN sse_server) and a client certificate for
// Qlik (CN sse_client), and writes them below dir. Each host must be an IP
// address or a DNS name, as ParseHosts checks. On Unix, keys are readable
// by their owner only. On failure it writes no file, unless a rename fails
// with Overwrite set. The files moved into place before that rename then
// stay, and the error lists them.
func WriteSet(dir string, hosts []string, opts SetOptions) (Set, error) {
	set := Set{
		GatewayDir: filepath.Join(dir, GatewayFolder),
		QlikDir:    filepath.Join(dir, QlikFolder),
		CADir:      filepath.Join(dir, CAFolder),
	}
	if opts.RootValidity == 0 {
		opts.RootValidity = 10 * 365 * 24 * time.Hour
	}
	if opts.LeafValidity == 0 {
		opts.LeafValidity = 365 * 24 * time.Hour
	}
	if opts.RootValidity < 0 || opts.LeafValidity < 0 {
		return Set{}, fmt.Errorf("the validities of the root (%v) and of the leaf certificates (%v) must be positive", opts.RootValidity, opts.LeafValidity)
	}
	if opts.CA == nil && opts.LeafValidity > opts.RootValidity {
		return Set{}, fmt.Errorf("leaf certificates valid for %v would outlive the root that signs them, valid for %v; make the leaves' validity at most the root's", opts.LeafValidity, opts.RootValidity)
	}
	hosts, err := ParseHosts(hosts)
	if err != nil {
		return Set{}, fmt.Errorf("invalid host names for the server certificate:\n%w", err)
	}

	// Make everything in memory first, so that a failure writes nothing.
	root := opts.CA
	if root == nil {
		root, err = NewRootCA("sse_root", opts.RootValidity, opts.KeyType)
		if err != nil {
			return Set{}, err
		}
	} else if err := checkOutlives(root, set.CADir, opts.LeafValidity, time.Now(), "certificates"); err != nil {
		return Set{}, err
	}
	notAfter := time.Now().Add(opts.LeafValidity)
	serverCert, serverKey, err := root.Issue(LeafRequest{
		CommonName: "sse_server",
		Hosts:      hosts,
		Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotAfter:   notAfter,
		KeyType:    opts.KeyType,
	})
	if err != nil {
		return Set{}, err
	}
	clientCert, clientKey, err := root.Issue(LeafRequest{
		CommonName: "sse_client",
		Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotAfter:   notAfter,
		KeyType:    opts.KeyType,
	})
	if err != nil {
		return Set{}, err
	}
	rootKey, err := EncodeKey(root.Key, false)
	if err != nil {
		return Set{}, err
	}
	rootCert := EncodeCert(root.Cert)

	// The CA comes first, so that if replacing the files stops half-way,
	// the key that signed the new certificates is kept.
	var files []pendingFile
	if opts.CA == nil {
		files = append(files,
			pendingFile{filepath.Join(set.CADir, RootCertFile), rootCert, 0o644},
			pendingFile{filepath.Join(set.CADir, CAKeyFile), rootKey, 0o600})
	}
	files = append(files, []pendingFile{
		{filepath.Join(set.GatewayDir, RootCertFile), rootCert, 0o644},
		{filepath.Join(set.GatewayDir, ServerCertFile), serverCert, 0o644},
		{filepath.Join(set.GatewayDir, ServerKeyFile), serverKey, 0o600},
		{filepath.Join(set.QlikDir, RootCertFile), rootCert, 0o644},
		{filepath.Join(set.QlikDir, ClientCertFile), clientCert, 0o644},
		{filepath.Join(set.QlikDir, ClientKeyFile), clientKey, 0o600},
	}...)
	if err := writeFiles(files, opts.Overwrite); err != nil {
		return Set{}, err
	}
	return set, nil
}

// CAExpiryError is the error of WriteSet and WriteClientFolder for a CA
// that has expired, or that would expire before the certificates it
// signs. A new CA fixes it, and its message ends with that advice: "make
// a new CA".
type CAExpiryError struct {
	message string
}

func (e *CAExpiryError) Error() string { return e.message }

// checkOutlives returns a *CAExpiryError when certificates valid for
// validity from now would outlive ca, whose files are in caDir. The
// argument certificates names them in the message.
func checkOutlives(ca *Authority, caDir string, validity time.Duration, now time.Time, certificates string) error {
	caEnd := ca.Cert.NotAfter
	if !now.Add(validity).After(caEnd) {
		return nil
	}
	if !caEnd.After(now) {
		return &CAExpiryError{fmt.Sprintf("the CA certificate in %s expired on %s; make a new CA", caDir, caEnd.Format(time.DateOnly))}
	}
	left := caEnd.Sub(now)
	if left < time.Hour {
		// A validity rounded down to 0 would read as the default of a
		// year; a CA this close to its end is no use anyway.
		return &CAExpiryError{fmt.Sprintf("the CA certificate in %s expires within the hour, on %s; make a new CA", caDir, caEnd.Format(time.DateTime))}
	}
	return &CAExpiryError{fmt.Sprintf("%s valid for %v would outlive the CA in %s, which expires on %s; make the validity at most %v, or make a new CA",
		certificates, validity, caDir, caEnd.Format(time.DateTime), left.Truncate(time.Hour))}
}

type pendingFile struct {
	path string
	data []byte
	mode fs.FileMode
}

// WriteClientFolder issues a client certificate named commonName, signed
// by the CA in caDir (root_cert.pem and root_key.pem), and writes it with
// the CA's certificate to dir in the layout of a Qlik client folder:
// root_cert.pem, sse_client_cert.pem, sse_client_key.pem. The gateway uses
// such a folder to reach a TLS plugin that trusts that CA.
//
// The certificate must expire before the CA's, and it is written as
// WriteSet writes its files: all or, on failure, none.
func WriteClientFolder(dir, caDir, commonName string, opts SetOptions) (string, error) {
	if strings.TrimSpace(commonName) == "" {
		return "", errors.New("the client certificate needs a common name, such as ssegw")
	}
	if opts.LeafValidity < 0 {
		return "", fmt.Errorf("the validity of the client certificate (%v) must be positive", opts.LeafValidity)
	}
	ca, err := LoadAuthority(filepath.Join(caDir, RootCertFile), filepath.Join(caDir, CAKeyFile))
	if err != nil {
		return "", err
	}
	if opts.LeafValidity == 0 {
		opts.LeafValidity = 365 * 24 * time.Hour
	}
	now := time.Now()
	notAfter := now.Add(opts.LeafValidity)
	if err := checkOutlives(ca, caDir, opts.LeafValidity, now, "a client certificate"); err != nil {
		return "", err
	}
	cert, key, err := ca.Issue(LeafRequest{
		CommonName: commonName,
		Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotAfter:   notAfter,
		KeyType:    opts.KeyType,
	})
	if err != nil {
		return "", err
	}
	files := []pendingFile{
		{filepath.Join(dir, RootCertFile), EncodeCert(ca.Cert), 0o644},
		{filepath.Join(dir, ClientCertFile), cert, 0o644},
		{filepath.Join(dir, ClientKeyFile), key, 0o600},
	}
	if err := writeFiles(files, opts.Overwrite); err != nil {
		return "", err
	}
	return dir, nil
}
