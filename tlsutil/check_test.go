package tlsutil_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/tlsutil"
)

// checkWarnWithin is the expiry warning window of the folder checks, the
// default of ssegw certs check.
const checkWarnWithin = 30 * 24 * time.Hour

// wantFinding is a warning or error that a folder check must report: the
// file it names, its severity and a part of its message.
type wantFinding struct {
	file     string
	severity tlsutil.Severity
	text     string
}

// newRoot makes a root CA named sse_root with a key of keyType.
func newRoot(t *testing.T, keyType tlsutil.KeyType) *tlsutil.Authority {
	t.Helper()
	root, err := tlsutil.NewRootCA("sse_root", 10*365*24*time.Hour, keyType)
	if err != nil {
		t.Fatalf("NewRootCA() error: %v", err)
	}
	return root
}

// serverRequest returns the request for a server certificate of the
// plugin layout, valid for localhost and 127.0.0.1.
func serverRequest() tlsutil.LeafRequest {
	return tlsutil.LeafRequest{
		CommonName: "sse_server",
		Hosts:      []string{"localhost", "127.0.0.1"},
		Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

// pluginFolder writes a plugin-layout folder with root's certificate and a
// server certificate issued by root as req describes.
func pluginFolder(t *testing.T, root *tlsutil.Authority, req tlsutil.LeafRequest) string {
	t.Helper()
	cert, key := ssetest.IssueLeaf(t, root, req)
	return ssetest.WriteFolder(t, map[string][]byte{
		tlsutil.RootCertFile:   tlsutil.EncodeCert(root.Cert),
		tlsutil.ServerCertFile: cert,
		tlsutil.ServerKeyFile:  key,
	})
}

// problems returns the findings that are warnings or errors.
func problems(findings []tlsutil.Finding) []tlsutil.Finding {
	var out []tlsutil.Finding
	for _, finding := range findings {
		if finding.Severity != tlsutil.Info {
			out = append(out, finding)
		}
	}
	return out
}

// TestCheckFolder checks what CheckFolder reports about folders made by
// WriteSet, made as Qlik's usual OpenSSL script makes them, and broken in
// each of the ways it warns about.
func TestCheckFolder(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	set := newFixture(t)
	root := newRoot(t, tlsutil.KeyECDSAP256)
	otherRoot := newRoot(t, tlsutil.KeyECDSAP256)

	tests := []struct {
		name  string
		build func(t *testing.T) string
		// want lists every warning and error; any other is a failure.
		want []wantFinding
		// wantInfo lists parts of informational messages that must be
		// reported too.
		wantInfo []string
	}{
		{
			name:     "gateway folder of WriteSet",
			build:    func(*testing.T) string { return set.GatewayDir },
			wantInfo: []string{"matches its certificate", "signed by the root in root_cert.pem", "IP:127.0.0.1", "PKCS#8"},
		},
		{
			name:     "Qlik folder of WriteSet",
			build:    func(*testing.T) string { return set.QlikDir },
			wantInfo: []string{"matches its certificate", "signed by the root in root_cert.pem"},
		},
		{
			name: "IP written as DNS name with PKCS#1 keys",
			build: func(t *testing.T) string {
				rsaRoot := newRoot(t, tlsutil.KeyRSA2048)
				req := serverRequest()
				req.IPsAsDNS, req.KeyType, req.PKCS1 = true, tlsutil.KeyRSA2048, true
				return pluginFolder(t, rsaRoot, req)
			},
			want: []wantFinding{
				{tlsutil.ServerCertFile, tlsutil.Warning, "DNS:127.0.0.1 is an IP address written as a DNS name"},
			},
			wantInfo: []string{"private key, PKCS#1 RSA", "matches its certificate"},
		},
		{
			name: "expires within the warning window",
			build: func(t *testing.T) string {
				req := serverRequest()
				req.NotAfter = now.Add(10*24*time.Hour + time.Hour)
				return pluginFolder(t, root, req)
			},
			want: []wantFinding{{tlsutil.ServerCertFile, tlsutil.Warning, "expires in 10 days"}},
		},
		{
			name: "expires after the warning window",
			build: func(t *testing.T) string {
				req := serverRequest()
				req.NotAfter = now.Add(checkWarnWithin + 24*time.Hour)
				return pluginFolder(t, root, req)
			},
		},
		{
			name: "expired",
			build: func(t *testing.T) string {
				req := serverRequest()
				req.NotBefore, req.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
				return pluginFolder(t, root, req)
			},
			want: []wantFinding{
				{tlsutil.ServerCertFile, tlsutil.Error, "expired on"},
				{tlsutil.ServerCertFile, tlsutil.Error, "not verified by root_cert.pem"},
			},
		},
		{
			name: "server certificate without serverAuth",
			build: func(t *testing.T) string {
				req := serverRequest()
				req.Usage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
				return pluginFolder(t, root, req)
			},
			want: []wantFinding{{tlsutil.ServerCertFile, tlsutil.Error, "server certificate without the serverAuth extended key usage"}},
		},
		{
			name: "client certificate without clientAuth",
			build: func(t *testing.T) string {
				cert, key := ssetest.IssueLeaf(t, root, tlsutil.LeafRequest{CommonName: "sse_client", Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
				return ssetest.WriteFolder(t, map[string][]byte{
					tlsutil.RootCertFile:   tlsutil.EncodeCert(root.Cert),
					tlsutil.ClientCertFile: cert,
					tlsutil.ClientKeyFile:  key,
				})
			},
			want: []wantFinding{{tlsutil.ClientCertFile, tlsutil.Error, "client certificate without the clientAuth extended key usage"}},
		},
		{
			name: "key of another certificate",
			build: func(t *testing.T) string {
				cert, _ := ssetest.IssueLeaf(t, root, serverRequest())
				_, otherKey := ssetest.IssueLeaf(t, root, serverRequest())
				return ssetest.WriteFolder(t, map[string][]byte{
					tlsutil.RootCertFile:   tlsutil.EncodeCert(root.Cert),
					tlsutil.ServerCertFile: cert,
					tlsutil.ServerKeyFile:  otherKey,
				})
			},
			want: []wantFinding{{tlsutil.ServerKeyFile, tlsutil.Error, "does not match its certificate"}},
		},
		{
			name: "key readable by others",
			build: func(t *testing.T) string {
				dir := pluginFolder(t, root, serverRequest())
				if err := os.Chmod(filepath.Join(dir, tlsutil.ServerKeyFile), 0o644); err != nil {
					t.Fatal(err)
				}
				return dir
			},
			want: []wantFinding{{tlsutil.ServerKeyFile, tlsutil.Warning, "readable or writable by other users (mode 0644)"}},
		},
		{
			// As a Kubernetes Secret mounted for the pod's fsGroup is.
			name: "key readable by its group",
			build: func(t *testing.T) string {
				dir := pluginFolder(t, root, serverRequest())
				if err := os.Chmod(filepath.Join(dir, tlsutil.ServerKeyFile), 0o440); err != nil {
					t.Fatal(err)
				}
				return dir
			},
			wantInfo: []string{"readable by its group (mode 0440)"},
		},
		{
			name: "signed by another root",
			build: func(t *testing.T) string {
				cert, key := ssetest.IssueLeaf(t, otherRoot, serverRequest())
				return ssetest.WriteFolder(t, map[string][]byte{
					tlsutil.RootCertFile:   tlsutil.EncodeCert(root.Cert),
					tlsutil.ServerCertFile: cert,
					tlsutil.ServerKeyFile:  key,
				})
			},
			want: []wantFinding{{tlsutil.ServerCertFile, tlsutil.Error, "not verified by root_cert.pem"}},
		},
		{
			name: "root missing",
			build: func(t *testing.T) string {
				dir := pluginFolder(t, root, serverRequest())
				if err := os.Remove(filepath.Join(dir, tlsutil.RootCertFile)); err != nil {
					t.Fatal(err)
				}
				return dir
			},
			want: []wantFinding{{tlsutil.RootCertFile, tlsutil.Error, "missing"}},
		},
		{
			name: "key file without PEM",
			build: func(t *testing.T) string {
				dir := pluginFolder(t, root, serverRequest())
				writeFile(t, filepath.Join(dir, tlsutil.ServerKeyFile), []byte("not a key\n"))
				return dir
			},
			want: []wantFinding{{tlsutil.ServerKeyFile, tlsutil.Error, "no PEM private key block"}},
		},
		{
			// As openssl ecparam -genkey writes it.
			name: "key after EC parameters",
			build: func(t *testing.T) string {
				dir := pluginFolder(t, root, serverRequest())
				path := filepath.Join(dir, tlsutil.ServerKeyFile)
				key, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				writeFile(t, path, append([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"), key...))
				return dir
			},
			wantInfo: []string{"matches its certificate"},
		},
		{
			name: "server certificate without subjectAltName",
			build: func(t *testing.T) string {
				req := serverRequest()
				req.Hosts = nil
				return pluginFolder(t, root, req)
			},
			want: []wantFinding{{tlsutil.ServerCertFile, tlsutil.Warning, "no subjectAltName: Go clients, such as the gateway, match no name against the common name"}},
		},
		{
			name: "CA key of another CA",
			build: func(t *testing.T) string {
				other := newFixture(t)
				dir := ssetest.WriteFolder(t, map[string][]byte{
					tlsutil.RootCertFile: readFile(t, filepath.Join(set.CADir, tlsutil.RootCertFile)),
					tlsutil.CAKeyFile:    readFile(t, filepath.Join(other.CADir, tlsutil.CAKeyFile)),
				})
				return dir
			},
			want: []wantFinding{{tlsutil.CAKeyFile, tlsutil.Error, "does not match its certificate root_cert.pem"}},
		},
		{
			name:     "CA folder of WriteSet",
			build:    func(*testing.T) string { return set.CADir },
			wantInfo: []string{"the CA folder that certs init writes", "matches its certificate"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.build(t)
			findings, err := tlsutil.CheckFolder(dir, now, checkWarnWithin)
			if err != nil {
				t.Fatalf("CheckFolder() error: %v", err)
			}

			got := problems(findings)
			for _, want := range tt.want {
				if !slices.ContainsFunc(got, func(f tlsutil.Finding) bool {
					return f.File == want.file && f.Severity == want.severity && strings.Contains(f.Message, want.text)
				}) {
					t.Errorf("CheckFolder() has no %v for %s containing %q; problems: %+v", want.severity, want.file, want.text, got)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("CheckFolder() reported %d warnings and errors, want %d: %+v", len(got), len(tt.want), got)
			}
			for _, text := range tt.wantInfo {
				if !slices.ContainsFunc(findings, func(f tlsutil.Finding) bool { return strings.Contains(f.Message, text) }) {
					t.Errorf("CheckFolder() reported nothing containing %q; findings: %+v", text, findings)
				}
			}
			wantErrors := slices.ContainsFunc(tt.want, func(w wantFinding) bool { return w.severity == tlsutil.Error })
			if got := tlsutil.HasErrors(findings); got != wantErrors {
				t.Errorf("HasErrors() = %v, want %v", got, wantErrors)
			}
		})
	}
}

// TestCheckFolderAdvice checks that the warning about an IP address
// written as a DNS name names server_name and IP subjectAltNames as fixes,
// and that the warning about a readable key gives the chmod command.
func TestCheckFolderAdvice(t *testing.T) {
	root := newRoot(t, tlsutil.KeyECDSAP256)
	req := serverRequest()
	req.IPsAsDNS = true
	dir := pluginFolder(t, root, req)
	keyPath := filepath.Join(dir, tlsutil.ServerKeyFile)
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}

	findings, err := tlsutil.CheckFolder(dir, time.Now(), checkWarnWithin)
	if err != nil {
		t.Fatalf("CheckFolder() error: %v", err)
	}
	messages := map[string]string{}
	for _, finding := range problems(findings) {
		messages[finding.File] = finding.Message
	}
	for _, want := range []string{"server_name", "IP:127.0.0.1"} {
		if got := messages[tlsutil.ServerCertFile]; !strings.Contains(got, want) {
			t.Errorf("warning for %s = %q, want it to contain %q", tlsutil.ServerCertFile, got, want)
		}
	}
	if got, want := messages[tlsutil.ServerKeyFile], "chmod 600 "+keyPath; !strings.Contains(got, want) {
		t.Errorf("warning for %s = %q, want it to contain %q", tlsutil.ServerKeyFile, got, want)
	}
}

// TestCheckFolderMissing checks that a folder that does not exist is an
// error of CheckFolder itself, not a finding.
func TestCheckFolderMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	findings, err := tlsutil.CheckFolder(dir, time.Now(), checkWarnWithin)
	if err == nil {
		t.Fatalf("CheckFolder(%s) = %+v, want an error", dir, findings)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("CheckFolder(%s) error = %q, want it to name the folder", dir, err)
	}
}

// TestCheckFolderWholeSet checks that the parent folder of a set that
// certs init made gets one error naming the folders to check instead, and
// not an error for each file it lacks.
func TestCheckFolderWholeSet(t *testing.T) {
	set, err := tlsutil.WriteSet(t.TempDir(), []string{"localhost"}, tlsutil.SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	top := filepath.Dir(set.GatewayDir)
	findings, err := tlsutil.CheckFolder(top, time.Now(), checkWarnWithin)
	if err != nil {
		t.Fatalf("CheckFolder() error: %v", err)
	}
	if len(findings) != 1 || findings[0].Severity != tlsutil.Error {
		t.Fatalf("CheckFolder(%s) = %+v, want one error", top, findings)
	}
	for _, want := range []string{"a whole certificate set", "ssegw certs check " + set.GatewayDir, set.QlikDir} {
		if !strings.Contains(findings[0].Message, want) {
			t.Errorf("CheckFolder(%s) message = %q, want it to contain %q", top, findings[0].Message, want)
		}
	}
}

// TestCheckFolderTimesInUTC checks that the validity that CheckFolder
// reports is in UTC and says so, whatever the local zone: the times once
// came without a zone, to be compared with a local clock.
func TestCheckFolderTimesInUTC(t *testing.T) {
	root := newRoot(t, tlsutil.KeyECDSAP256)
	req := serverRequest()
	req.NotBefore = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("UTC+5", 5*3600))
	req.NotAfter = time.Now().Add(400 * 24 * time.Hour)
	findings, err := tlsutil.CheckFolder(pluginFolder(t, root, req), time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := "valid from 2026-01-01 22:04:05 UTC to " + req.NotAfter.UTC().Format(time.DateTime) + " UTC"
	if !slices.ContainsFunc(findings, func(f tlsutil.Finding) bool { return f.File == tlsutil.ServerCertFile && f.Message == want }) {
		t.Errorf("CheckFolder() findings = %v, want %q for %s", findings, want, tlsutil.ServerCertFile)
	}
}
