package tlsutil

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Severity grades a Finding.
type Severity int

// Severities, from harmless to blocking.
const (
	Info Severity = iota
	Warning
	Error
)

func (s Severity) String() string {
	return [...]string{"info", "warning", "error"}[s]
}

// Finding is one fact a folder check reports about one file.
type Finding struct {
	File     string
	Severity Severity
	Message  string
}

// CheckFolder reads a certificate folder in either of Qlik's layouts (a
// plugin's: root_cert.pem, sse_server_cert.pem, sse_server_key.pem; or an
// analytic connection's: root_cert.pem, sse_client_cert.pem,
// sse_client_key.pem) and describes every file it holds: subjects,
// issuers, subjectAltNames, validity and whether keys match. It warns
// about what breaks connections in the field: certificates that expire
// within warnWithin, IP addresses written as DNS names and other DNS
// names that clients never match, a server certificate without serverAuth,
// keys open to other users.
func CheckFolder(dir string, now time.Time, warnWithin time.Duration) ([]Finding, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading certificate folder: %w", err)
	}
	var findings []Finding
	add := func(file string, severity Severity, format string, args ...any) {
		findings = append(findings, Finding{File: file, Severity: severity, Message: fmt.Sprintf(format, args...)})
	}
	if FolderKind(dir) == SetFolder {
		// Read as one folder, it lacks every file, which names none of
		// the folders to check instead.
		add(dir, Error, "a whole certificate set, as ssegw certs init makes it; check each of its folders: ssegw certs check %s, then %s",
			filepath.Join(dir, GatewayFolder), filepath.Join(dir, QlikFolder))
		return findings, nil
	}

	// The root first: the others are checked against it.
	var roots *x509.CertPool
	var root *x509.Certificate
	if certs, err := readCertificates(filepath.Join(dir, RootCertFile)); err == nil {
		// A CA key must match the first certificate, the one that
		// LoadAuthority signs with.
		root = certs[0]
		roots = x509.NewCertPool()
		for _, cert := range certs {
			roots.AddCert(cert)
			describeCertificate(add, RootCertFile, cert, now, warnWithin)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		add(RootCertFile, Error, "%v", err)
	} else {
		add(RootCertFile, Error, "missing: without it, the other certificates cannot be verified")
	}

	// Then each pair of the layouts found in the folder.
	found := false
	for _, pair := range []struct {
		certFile, keyFile string
		usage             x509.ExtKeyUsage
		role              string
	}{
		{ServerCertFile, ServerKeyFile, x509.ExtKeyUsageServerAuth, "server"},
		{ClientCertFile, ClientKeyFile, x509.ExtKeyUsageClientAuth, "client"},
	} {
		certPath, keyPath := filepath.Join(dir, pair.certFile), filepath.Join(dir, pair.keyFile)
		_, certErr := os.Stat(certPath)
		_, keyErr := os.Stat(keyPath)
		if certErr != nil && keyErr != nil {
			continue
		}
		found = true
		certs, err := readCertificates(certPath)
		if err != nil {
			add(pair.certFile, Error, "%v", err)
		}
		var leaf *x509.Certificate
		if len(certs) > 0 {
			leaf = certs[0]
			describeCertificate(add, pair.certFile, leaf, now, warnWithin)
			checkUsage(add, pair.certFile, leaf, pair.usage, pair.role)
			if pair.role == "server" {
				checkDNSNames(add, pair.certFile, leaf)
			}
			if roots != nil {
				intermediates := x509.NewCertPool()
				for _, cert := range certs[1:] {
					intermediates.AddCert(cert)
				}
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, CurrentTime: now,
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
					add(pair.certFile, Error, "not verified by %s: %v", RootCertFile, err)
				} else {
					add(pair.certFile, Info, "signed by the root in %s", RootCertFile)
				}
			}
		}
		checkKey(add, pair.keyFile, keyPath, leaf, pair.certFile)
	}
	_, caKeyErr := os.Stat(filepath.Join(dir, CAKeyFile))
	switch {
	case !found && caKeyErr == nil:
		// The CA folder of certs init: its files are checked below.
		add(dir, Info, "the CA folder that certs init writes, with %s and %s; the gateway's and Qlik's folders are beside it",
			RootCertFile, CAKeyFile)
	case !found:
		add(dir, Error, "no %s/%s or %s/%s pair: not a certificate folder in Qlik's layout", ServerCertFile, ServerKeyFile, ClientCertFile, ClientKeyFile)
	}

	// The CA key, where ssegw certs init keeps it.
	if caKeyErr == nil {
		checkKey(add, CAKeyFile, filepath.Join(dir, CAKeyFile), root, RootCertFile)
	}
	for _, entry := range entries {
		name := entry.Name()
		known := []string{RootCertFile, ServerCertFile, ServerKeyFile, ClientCertFile, ClientKeyFile, CAKeyFile}
		if !entry.IsDir() && !slices.Contains(known, name) && strings.HasSuffix(name, ".pem") {
			add(name, Info, "not a file of Qlik's layouts; not checked")
		}
	}
	return findings, nil
}

// HasErrors reports whether any finding is an error.
func HasErrors(findings []Finding) bool {
	return slices.ContainsFunc(findings, func(f Finding) bool { return f.Severity == Error })
}

func describeCertificate(add func(string, Severity, string, ...any), file string, cert *x509.Certificate, now time.Time, warnWithin time.Duration) {
	add(file, Info, "subject %q, issuer %q", cert.Subject.String(), cert.Issuer.String())
	var names []string
	for _, name := range cert.DNSNames {
		names = append(names, "DNS:"+name)
	}
	for _, ip := range cert.IPAddresses {
		names = append(names, "IP:"+ip.String())
	}
	for _, uri := range cert.URIs {
		names = append(names, "URI:"+uri.String())
	}
	if len(names) > 0 {
		add(file, Info, "subjectAltNames %s", strings.Join(names, ", "))
	}
	// Certificates contain UTC times. The output names the zone, since a
	// reader compares the times with a local clock.
	add(file, Info, "valid from %s to %s", cert.NotBefore.UTC().Format(dateTimeUTC), cert.NotAfter.UTC().Format(dateTimeUTC))
	switch left := cert.NotAfter.Sub(now); {
	case left <= 0:
		add(file, Error, "expired on %s", cert.NotAfter.Format(time.DateOnly))
	case now.Before(cert.NotBefore):
		add(file, Error, "not valid before %s", cert.NotBefore.UTC().Format(dateTimeUTC))
	case left < warnWithin:
		add(file, Warning, "expires in %s, on %s", TimeLeft(left), cert.NotAfter.Format(time.DateOnly))
	}
}

func checkUsage(add func(string, Severity, string, ...any), file string, cert *x509.Certificate, usage x509.ExtKeyUsage, role string) {
	if name, lacks := lacksUsage(cert, usage); lacks {
		add(file, Error, "a %s certificate without the %s extended key usage: TLS peers refuse it", role, name)
	}
}

// checkDNSNames warns about DNS subjectAltNames that clients never match.
// Go clients, such as the gateway, never match an IP address written as a
// DNS name against the address they dial, and no client matches a name
// that is not a valid DNS name, such as 127.0.0.1:50051.
func checkDNSNames(add func(string, Severity, string, ...any), file string, cert *x509.Certificate) {
	if len(cert.DNSNames) == 0 && len(cert.IPAddresses) == 0 {
		// Go refuses a name found only in the common name (since Go 1.15),
		// and so do recent browsers and OpenSSL-based clients.
		add(file, Warning, "no subjectAltName: Go clients, such as the gateway, match no name against the common name %q, and refuse the certificate; reissue it with the names clients dial as subjectAltNames", cert.Subject.CommonName)
	}
	for _, name := range cert.DNSNames {
		ip, err := parseIP(name)
		if err == nil && ip.IsValid() {
			if slices.ContainsFunc(cert.IPAddresses, net.IP(ip.AsSlice()).Equal) {
				continue
			}
			add(file, Warning, "DNS:%s is an IP address written as a DNS name, as Qlik's usual script writes it: "+
				"Go clients dialing %s refuse the certificate; have the gateway verify a DNS name with server_name, or reissue it with IP:%s", name, ip, ip)
			continue
		}
		if _, err := ParseHost(name); err != nil {
			add(file, Warning, "DNS:%s: %v. No client matches this name; reissue the certificate with it corrected", name, err)
		}
	}
}

// checkKey checks the key file at path, and that it matches cert, read
// from certFile, unless cert is nil.
func checkKey(add func(string, Severity, string, ...any), file, path string, cert *x509.Certificate, certFile string) {
	info, err := os.Stat(path)
	if err != nil {
		add(file, Error, "missing: %v", err)
		return
	}
	switch mode := info.Mode().Perm(); {
	case mode&0o007 != 0, mode&0o030 != 0:
		add(file, Warning, "readable or writable by other users (mode %04o); run chmod 600 %s", mode, path)
	case mode&0o040 != 0:
		// A Kubernetes Secret mounted for a pod's fsGroup is so on purpose.
		add(file, Info, "readable by its group (mode %04o): right where that group is the gateway's, as with a Kubernetes Secret's fsGroup; otherwise run chmod 600 %s", mode, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		add(file, Error, "%v", err)
		return
	}
	if encryption := keyEncryption(data); encryption != "" {
		add(file, Error, "%s is encrypted (%s), but %s", path, encryption, decryptAdvice(path))
		return
	}
	key, format, err := parsePrivateKey(data)
	if err != nil {
		add(file, Error, "%v", err)
		return
	}
	add(file, Info, "private key, %s", format)
	if cert == nil {
		return
	}
	public, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !public.Equal(cert.PublicKey) {
		if file == CAKeyFile {
			add(file, Error, "does not match its certificate %s, so ssegw certs init cannot issue certificates with this CA; put back the %s made with this %s, or make a new CA with ssegw certs init --force --new-ca",
				certFile, CAKeyFile, RootCertFile)
			return
		}
		add(file, Error, "does not match its certificate %s", certFile)
		return
	}
	add(file, Info, "matches its certificate")
}

// parsePrivateKey reads a PEM private key in any of the formats OpenSSL
// writes, and names the format.
func parsePrivateKey(data []byte) (crypto.Signer, string, error) {
	// Other blocks may come first, such as the EC PARAMETERS that
	// openssl ecparam -genkey writes; Go's TLS stack skips them too.
	var block *pem.Block
	for {
		block, data = pem.Decode(data)
		if block == nil {
			return nil, "", errors.New("no PEM private key block: not a key file")
		}
		if strings.HasSuffix(block.Type, "PRIVATE KEY") {
			break
		}
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		return key, "PKCS#1 RSA", err
	case "EC PRIVATE KEY":
		key, err := x509.ParseECPrivateKey(block.Bytes)
		return key, "SEC 1 EC", err
	case "PRIVATE KEY":
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, "", err
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, "", fmt.Errorf("a %T key cannot sign", key)
		}
		return signer, "PKCS#8", nil
	}
	return nil, "", fmt.Errorf("PEM block %q is not a private key", block.Type)
}

// readCertificates reads every certificate of a PEM file.
func readCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for rest := bytes.TrimSpace(data); len(rest) > 0; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", filepath.Base(path), err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", filepath.Base(path))
	}
	return certs, nil
}

// dateTimeUTC is the layout of the times that CheckFolder reports.
const dateTimeUTC = time.DateTime + " UTC"
