package tlsutil_test

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ssegw/ssegw/tlsutil"
)

// testHosts are the hosts of every test server certificate.
var testHosts = []string{"localhost", "127.0.0.1"}

// fixture is a certificate set in Qlik's layout and its CA, loaded back
// from the set's CA folder.
type fixture struct {
	tlsutil.Set
	ca *tlsutil.Authority
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	set, err := tlsutil.WriteSet(t.TempDir(), testHosts, tlsutil.SetOptions{})
	if err != nil {
		t.Fatalf("WriteSet() error: %v", err)
	}
	ca, err := tlsutil.LoadAuthority(filepath.Join(set.CADir, tlsutil.RootCertFile), filepath.Join(set.CADir, tlsutil.CAKeyFile))
	if err != nil {
		t.Fatalf("LoadAuthority() error: %v", err)
	}
	return fixture{Set: set, ca: ca}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestServerFilesInDir checks that explicit files win over the folder's,
// role by role.
func TestServerFilesInDir(t *testing.T) {
	tests := []struct {
		name                     string
		dir, cert, key, clientCA string
		want                     tlsutil.ServerFiles
	}{
		{
			name: "folder only",
			dir:  "/certs",
			want: tlsutil.ServerFiles{CertFile: "/certs/sse_server_cert.pem", KeyFile: "/certs/sse_server_key.pem", ClientCAFile: "/certs/root_cert.pem"},
		},
		{
			name: "explicit key",
			dir:  "/certs",
			key:  "/keys/gw.key",
			want: tlsutil.ServerFiles{CertFile: "/certs/sse_server_cert.pem", KeyFile: "/keys/gw.key", ClientCAFile: "/certs/root_cert.pem"},
		},
		{
			name:     "every file explicit",
			dir:      "/certs",
			cert:     "/a/cert.pem",
			key:      "/a/key.pem",
			clientCA: "/a/ca.pem",
			want:     tlsutil.ServerFiles{CertFile: "/a/cert.pem", KeyFile: "/a/key.pem", ClientCAFile: "/a/ca.pem"},
		},
		{
			name:     "no folder",
			cert:     "/a/cert.pem",
			clientCA: "/a/ca.pem",
			want:     tlsutil.ServerFiles{CertFile: "/a/cert.pem", ClientCAFile: "/a/ca.pem"},
		},
		{
			name: "nothing",
			want: tlsutil.ServerFiles{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tlsutil.ServerFilesInDir(tt.dir, tt.cert, tt.key, tt.clientCA)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ServerFilesInDir(%q, %q, %q, %q) mismatch (-want +got):\n%s", tt.dir, tt.cert, tt.key, tt.clientCA, diff)
			}
		})
	}
}

// TestClientFilesInDir checks that explicit files win over the folder's,
// role by role.
func TestClientFilesInDir(t *testing.T) {
	tests := []struct {
		name               string
		dir, ca, cert, key string
		want               tlsutil.ClientFiles
	}{
		{
			name: "folder only",
			dir:  "/qlik",
			want: tlsutil.ClientFiles{CAFile: "/qlik/root_cert.pem", CertFile: "/qlik/sse_client_cert.pem", KeyFile: "/qlik/sse_client_key.pem"},
		},
		{
			name: "explicit CA",
			dir:  "/qlik",
			ca:   "/pki/ca.pem",
			want: tlsutil.ClientFiles{CAFile: "/pki/ca.pem", CertFile: "/qlik/sse_client_cert.pem", KeyFile: "/qlik/sse_client_key.pem"},
		},
		{
			name: "every file explicit",
			dir:  "/qlik",
			ca:   "/a/ca.pem",
			cert: "/a/cert.pem",
			key:  "/a/key.pem",
			want: tlsutil.ClientFiles{CAFile: "/a/ca.pem", CertFile: "/a/cert.pem", KeyFile: "/a/key.pem"},
		},
		{
			name: "CA only",
			ca:   "/a/ca.pem",
			want: tlsutil.ClientFiles{CAFile: "/a/ca.pem"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tlsutil.ClientFilesInDir(tt.dir, tt.ca, tt.cert, tt.key)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ClientFilesInDir(%q, %q, %q, %q) mismatch (-want +got):\n%s", tt.dir, tt.ca, tt.cert, tt.key, diff)
			}
		})
	}
}

// TestConfigKeyFormats checks that server and client configurations load
// ECDSA keys and RSA keys in both PKCS#1 and PKCS#8, as OpenSSL writes
// them depending on its version.
func TestConfigKeyFormats(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name      string
		keyType   tlsutil.KeyType
		pkcs1     bool
		wantBlock string
		wantKey   any
	}{
		{name: "ECDSA P-256", keyType: tlsutil.KeyECDSAP256, wantBlock: "PRIVATE KEY", wantKey: &ecdsa.PrivateKey{}},
		{name: "ECDSA P-384", keyType: tlsutil.KeyECDSAP384, wantBlock: "PRIVATE KEY", wantKey: &ecdsa.PrivateKey{}},
		{name: "RSA PKCS#1", keyType: tlsutil.KeyRSA2048, pkcs1: true, wantBlock: "RSA PRIVATE KEY", wantKey: &rsa.PrivateKey{}},
		{name: "RSA PKCS#8", keyType: tlsutil.KeyRSA2048, wantBlock: "PRIVATE KEY", wantKey: &rsa.PrivateKey{}},
		{name: "ECDSA with PKCS1 set", keyType: tlsutil.KeyECDSAP256, pkcs1: true, wantBlock: "PRIVATE KEY", wantKey: &ecdsa.PrivateKey{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, keyPEM, err := f.ca.Issue(tlsutil.LeafRequest{
				CommonName: "sse_server",
				Hosts:      testHosts,
				Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
				KeyType:    tt.keyType,
				PKCS1:      tt.pkcs1,
			})
			if err != nil {
				t.Fatalf("Issue() error: %v", err)
			}
			block, _ := pem.Decode(keyPEM)
			if block == nil || block.Type != tt.wantBlock {
				t.Fatalf("Issue() key PEM = %q, want a %q block", keyPEM, tt.wantBlock)
			}

			// One pair serves as both the server's and the client's.
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, tlsutil.RootCertFile), tlsutil.EncodeCert(f.ca.Cert))
			for _, name := range []string{tlsutil.ServerCertFile, tlsutil.ClientCertFile} {
				writeFile(t, filepath.Join(dir, name), certPEM)
			}
			for _, name := range []string{tlsutil.ServerKeyFile, tlsutil.ClientKeyFile} {
				writeFile(t, filepath.Join(dir, name), keyPEM)
			}

			server, err := tlsutil.ServerFilesInDir(dir, "", "", "").ServerConfig()
			if err != nil {
				t.Fatalf("ServerConfig() error: %v", err)
			}
			if got := reflect.TypeOf(server.Certificates[0].PrivateKey); got != reflect.TypeOf(tt.wantKey) {
				t.Errorf("ServerConfig() key type = %v, want %T", got, tt.wantKey)
			}
			client, err := tlsutil.ClientFilesInDir(dir, "", "", "").ClientConfig("localhost")
			if err != nil {
				t.Fatalf("ClientConfig() error: %v", err)
			}
			if got := reflect.TypeOf(client.Certificates[0].PrivateKey); got != reflect.TypeOf(tt.wantKey) {
				t.Errorf("ClientConfig() key type = %v, want %T", got, tt.wantKey)
			}
		})
	}
}

// TestServerConfigSettings checks that the server requires and verifies
// client certificates against the folder's root, with TLS 1.2 or newer.
func TestServerConfigSettings(t *testing.T) {
	f := newFixture(t)
	cfg, err := tlsutil.ServerFilesInDir(f.GatewayDir, "", "", "").ServerConfig()
	if err != nil {
		t.Fatalf("ServerConfig() error: %v", err)
	}

	if cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("ServerConfig().ClientAuth = %v, want RequireAndVerifyClientCert", cfg.ClientAuth)
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("ServerConfig().MinVersion = %s, want TLS 1.2", tls.VersionName(cfg.MinVersion))
	}
	if len(cfg.Certificates) != 1 {
		t.Fatalf("ServerConfig().Certificates has %d entries, want 1", len(cfg.Certificates))
	}
	leaf := parseCert(t, readFile(t, filepath.Join(f.GatewayDir, tlsutil.ServerCertFile)))
	if !cfg.Certificates[0].Leaf.Equal(leaf) {
		t.Errorf("ServerConfig() certificate CN = %q, want %q", cfg.Certificates[0].Leaf.Subject.CommonName, leaf.Subject.CommonName)
	}
	client := parseCert(t, readFile(t, filepath.Join(f.QlikDir, tlsutil.ClientCertFile)))
	opts := x509.VerifyOptions{Roots: cfg.ClientCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := client.Verify(opts); err != nil {
		t.Errorf("Qlik's client certificate does not verify against ServerConfig().ClientCAs: %v", err)
	}
}

// TestClientConfigSettings checks that the client trusts the folder's
// root, checks the given server name and presents its own pair.
func TestClientConfigSettings(t *testing.T) {
	f := newFixture(t)

	t.Run("mutual TLS", func(t *testing.T) {
		cfg, err := tlsutil.ClientFilesInDir(f.QlikDir, "", "", "").ClientConfig("plugin.example")
		if err != nil {
			t.Fatalf("ClientConfig() error: %v", err)
		}
		if cfg.ServerName != "plugin.example" {
			t.Errorf("ClientConfig().ServerName = %q, want %q", cfg.ServerName, "plugin.example")
		}
		if cfg.MinVersion != tls.VersionTLS12 {
			t.Errorf("ClientConfig().MinVersion = %s, want TLS 1.2", tls.VersionName(cfg.MinVersion))
		}
		if len(cfg.Certificates) != 1 {
			t.Fatalf("ClientConfig().Certificates has %d entries, want 1", len(cfg.Certificates))
		}
		if cn := cfg.Certificates[0].Leaf.Subject.CommonName; cn != "sse_client" {
			t.Errorf("ClientConfig() certificate CN = %q, want %q", cn, "sse_client")
		}
		server := parseCert(t, readFile(t, filepath.Join(f.GatewayDir, tlsutil.ServerCertFile)))
		if _, err := server.Verify(x509.VerifyOptions{Roots: cfg.RootCAs, DNSName: "localhost"}); err != nil {
			t.Errorf("gateway's server certificate does not verify against ClientConfig().RootCAs: %v", err)
		}
	})

	t.Run("CA only", func(t *testing.T) {
		ca := filepath.Join(f.QlikDir, tlsutil.RootCertFile)
		cfg, err := tlsutil.ClientFilesInDir("", ca, "", "").ClientConfig("")
		if err != nil {
			t.Fatalf("ClientConfig() error: %v", err)
		}
		if len(cfg.Certificates) != 0 {
			t.Errorf("ClientConfig().Certificates has %d entries, want 0", len(cfg.Certificates))
		}
		if cfg.RootCAs == nil {
			t.Errorf("ClientConfig().RootCAs = nil, want the CA of %s", ca)
		}
	})
}

// TestServerConfigErrors checks that each unusable file is named in the
// error, and that every unusable file is reported at once.
func TestServerConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		// setup returns the files to load and the texts the error must
		// contain.
		setup func(t *testing.T, f fixture) (tlsutil.ServerFiles, []string)
	}{
		{
			name: "no files",
			setup: func(t *testing.T, f fixture) (tlsutil.ServerFiles, []string) {
				return tlsutil.ServerFiles{}, []string{"needs a certificate, a key and a client CA"}
			},
		},
		{
			name: "no client CA",
			setup: func(t *testing.T, f fixture) (tlsutil.ServerFiles, []string) {
				files := tlsutil.ServerFilesInDir(f.GatewayDir, "", "", "")
				files.ClientCAFile = ""
				return files, []string{"client_ca_file"}
			},
		},
		{
			name: "folder missing",
			setup: func(t *testing.T, f fixture) (tlsutil.ServerFiles, []string) {
				dir := filepath.Join(f.GatewayDir, "missing")
				return tlsutil.ServerFilesInDir(dir, "", "", ""), []string{
					filepath.Join(dir, tlsutil.ServerCertFile),
					filepath.Join(dir, tlsutil.ServerKeyFile),
					filepath.Join(dir, tlsutil.RootCertFile),
				}
			},
		},
		{
			name: "key missing",
			setup: func(t *testing.T, f fixture) (tlsutil.ServerFiles, []string) {
				key := filepath.Join(f.GatewayDir, tlsutil.ServerKeyFile)
				if err := os.Remove(key); err != nil {
					t.Fatal(err)
				}
				return tlsutil.ServerFilesInDir(f.GatewayDir, "", "", ""), []string{"server key", key}
			},
		},
		{
			name: "key of another certificate",
			setup: func(t *testing.T, f fixture) (tlsutil.ServerFiles, []string) {
				key := filepath.Join(f.QlikDir, tlsutil.ClientKeyFile)
				cert := filepath.Join(f.GatewayDir, tlsutil.ServerCertFile)
				return tlsutil.ServerFilesInDir(f.GatewayDir, "", key, ""), []string{cert, key, "does not match"}
			},
		},
		{
			name: "empty certificate",
			setup: func(t *testing.T, f fixture) (tlsutil.ServerFiles, []string) {
				cert := filepath.Join(f.GatewayDir, tlsutil.ServerCertFile)
				writeFile(t, cert, nil)
				return tlsutil.ServerFilesInDir(f.GatewayDir, "", "", ""), []string{cert, "empty"}
			},
		},
		{
			name: "client certificate",
			setup: func(t *testing.T, f fixture) (tlsutil.ServerFiles, []string) {
				cert := filepath.Join(f.QlikDir, tlsutil.ClientCertFile)
				key := filepath.Join(f.QlikDir, tlsutil.ClientKeyFile)
				return tlsutil.ServerFilesInDir(f.GatewayDir, cert, key, ""), []string{cert, "lacks the serverAuth extended key usage"}
			},
		},
		{
			name: "client CA not PEM",
			setup: func(t *testing.T, f fixture) (tlsutil.ServerFiles, []string) {
				ca := filepath.Join(f.GatewayDir, tlsutil.RootCertFile)
				writeFile(t, ca, []byte("root\n"))
				return tlsutil.ServerFilesInDir(f.GatewayDir, "", "", ""), []string{ca, "no valid certificate"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, wantTexts := tt.setup(t, newFixture(t))
			cfg, err := files.ServerConfig()
			if err == nil {
				t.Fatalf("%+v.ServerConfig() = %v, want an error", files, cfg)
			}
			for _, text := range wantTexts {
				if !strings.Contains(err.Error(), text) {
					t.Errorf("%+v.ServerConfig() error = %q, want it to contain %q", files, err, text)
				}
			}
		})
	}
}

// TestClientConfigErrors checks that incomplete or unusable client files
// are rejected with the file or the missing key named.
func TestClientConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, f fixture) (tlsutil.ClientFiles, []string)
	}{
		{
			name: "no CA",
			setup: func(t *testing.T, f fixture) (tlsutil.ClientFiles, []string) {
				files := tlsutil.ClientFilesInDir(f.QlikDir, "", "", "")
				files.CAFile = ""
				return files, []string{"ca_file"}
			},
		},
		{
			name: "certificate without key",
			setup: func(t *testing.T, f fixture) (tlsutil.ClientFiles, []string) {
				files := tlsutil.ClientFilesInDir(f.QlikDir, "", "", "")
				files.KeyFile = ""
				return files, []string{"both cert_file and key_file"}
			},
		},
		{
			name: "key without certificate",
			setup: func(t *testing.T, f fixture) (tlsutil.ClientFiles, []string) {
				files := tlsutil.ClientFilesInDir(f.QlikDir, "", "", "")
				files.CertFile = ""
				return files, []string{"both cert_file and key_file"}
			},
		},
		{
			name: "CA missing",
			setup: func(t *testing.T, f fixture) (tlsutil.ClientFiles, []string) {
				ca := filepath.Join(f.QlikDir, "other_root.pem")
				return tlsutil.ClientFilesInDir(f.QlikDir, ca, "", ""), []string{ca}
			},
		},
		{
			name: "CA and key missing",
			setup: func(t *testing.T, f fixture) (tlsutil.ClientFiles, []string) {
				ca := filepath.Join(f.QlikDir, "other_root.pem")
				key := filepath.Join(f.QlikDir, "other_key.pem")
				return tlsutil.ClientFilesInDir(f.QlikDir, ca, "", key), []string{ca, key}
			},
		},
		{
			name: "server certificate",
			setup: func(t *testing.T, f fixture) (tlsutil.ClientFiles, []string) {
				cert := filepath.Join(f.GatewayDir, tlsutil.ServerCertFile)
				key := filepath.Join(f.GatewayDir, tlsutil.ServerKeyFile)
				return tlsutil.ClientFilesInDir(f.QlikDir, "", cert, key), []string{cert, "lacks the clientAuth extended key usage"}
			},
		},
		{
			name: "key of another certificate",
			setup: func(t *testing.T, f fixture) (tlsutil.ClientFiles, []string) {
				key := filepath.Join(f.GatewayDir, tlsutil.ServerKeyFile)
				cert := filepath.Join(f.QlikDir, tlsutil.ClientCertFile)
				return tlsutil.ClientFilesInDir(f.QlikDir, "", "", key), []string{cert, key, "does not match"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, wantTexts := tt.setup(t, newFixture(t))
			cfg, err := files.ClientConfig("localhost")
			if err == nil {
				t.Fatalf("%+v.ClientConfig() = %v, want an error", files, cfg)
			}
			for _, text := range wantTexts {
				if !strings.Contains(err.Error(), text) {
					t.Errorf("%+v.ClientConfig() error = %q, want it to contain %q", files, err, text)
				}
			}
		})
	}
}

// parseCert decodes the first certificate of a PEM file.
func parseCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("no CERTIFICATE block in %q", data)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestFolderKind checks each kind of folder, and that an empty folder
// name, as for TLS without dir, is no folder: not the current one, which
// here holds a server certificate.
func TestFolderKind(t *testing.T) {
	set, err := tlsutil.WriteSet(t.TempDir(), []string{"localhost"}, tlsutil.SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ dir, want string }{
		{set.GatewayDir, tlsutil.ServerFolder},
		{set.QlikDir, tlsutil.ClientFolder},
		{set.CADir, ""},
		{filepath.Dir(set.GatewayDir), tlsutil.SetFolder},
		{filepath.Join(set.CADir, "missing"), ""},
	} {
		if got := tlsutil.FolderKind(tt.dir); got != tt.want {
			t.Errorf("FolderKind(%s) = %q, want %q", tt.dir, got, tt.want)
		}
	}
	t.Chdir(set.GatewayDir)
	if got := tlsutil.FolderKind(""); got != "" {
		t.Errorf(`FolderKind("") in a server folder = %q, want ""`, got)
	}
}
