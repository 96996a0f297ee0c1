package tlsutil_test

import (
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssegw/ssegw/internal/shellquote"
	"github.com/ssegw/ssegw/tlsutil"
)

// testPassphrase encrypts the keys of these tests.
const testPassphrase = "pass:test passphrase"

// encryptedKeyFormats are the ways a key file can be encrypted. Each
// encrypt function encrypts the key at path in place, and wantType is how
// the error must describe the encryption.
var encryptedKeyFormats = []struct {
	name     string
	encrypt  func(t *testing.T, path string)
	wantType string
}{
	{
		// As openssl pkcs8 -topk8 writes it without -nocrypt.
		name: "PKCS#8",
		encrypt: func(t *testing.T, path string) {
			runOpenSSL(t, "pkcs8", "-topk8", "-in", path, "-out", path+".encrypted", "-passout", testPassphrase)
			replaceWith(t, path, path+".encrypted")
		},
		wantType: `PEM block "ENCRYPTED PRIVATE KEY"`,
	},
	{
		// OpenSSL's older format, with the encryption in PEM headers.
		name: "traditional EC",
		encrypt: func(t *testing.T, path string) {
			runOpenSSL(t, "ec", "-aes256", "-in", path, "-out", path+".encrypted", "-passout", testPassphrase)
			replaceWith(t, path, path+".encrypted")
		},
		wantType: `PEM block "EC PRIVATE KEY" with the header Proc-Type: 4,ENCRYPTED`,
	},
	{
		// The check reads only the block type, so this case runs where
		// openssl is missing too.
		name: "PKCS#8 block written by hand",
		encrypt: func(t *testing.T, path string) {
			writeFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("not decrypted")}))
		},
		wantType: `PEM block "ENCRYPTED PRIVATE KEY"`,
	},
}

// runOpenSSL runs openssl with args, and skips the test where openssl is
// not installed.
func runOpenSSL(t *testing.T, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skipf("openssl is not installed: %v", err)
	}
	if output, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, output)
	}
}

// replaceWith renames from over path.
func replaceWith(t *testing.T, path, from string) {
	t.Helper()
	if err := os.Rename(from, path); err != nil {
		t.Fatal(err)
	}
}

// TestServerConfigEncryptedKey checks that an encrypted key is named as
// encrypted, with the file and a command that decrypts it, rather than as
// a key that fails to parse. Where openssl is installed, it runs that
// command, and the decrypted key loads.
func TestServerConfigEncryptedKey(t *testing.T) {
	for _, format := range encryptedKeyFormats {
		t.Run(format.name, func(t *testing.T) {
			f := newFixture(t)
			key := filepath.Join(f.GatewayDir, tlsutil.ServerKeyFile)
			plain := readFile(t, key)
			format.encrypt(t, key)
			files := tlsutil.ServerFilesInDir(f.GatewayDir, "", "", "")

			_, err := files.ServerConfig()
			if err == nil {
				t.Fatal("ServerConfig() with an encrypted key error = nil, want one")
			}
			for _, want := range []string{
				"server key " + key + " is encrypted (" + format.wantType + ")",
				"ssegw needs an unencrypted key",
				"openssl pkey -in " + shellquote.Quote(key) + " -out " + shellquote.Quote(key+".plain"),
			} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("ServerConfig() error = %q, want it to contain %q", err, want)
				}
			}

			if format.name == "PKCS#8 block written by hand" {
				writeFile(t, key, plain)
			} else {
				// The advice, with the passphrase given on the command
				// line instead of typed.
				runOpenSSL(t, "pkey", "-in", key, "-out", key+".plain", "-passin", testPassphrase)
				replaceWith(t, key, key+".plain")
			}
			if _, err := files.ServerConfig(); err != nil {
				t.Errorf("ServerConfig() after decrypting the key: %v", err)
			}
		})
	}
}

// TestCheckFolderEncryptedKey checks that CheckFolder reports an encrypted
// key as an error naming the file and the way to decrypt it, rather than
// as a PEM block that is not a private key.
func TestCheckFolderEncryptedKey(t *testing.T) {
	for _, format := range encryptedKeyFormats {
		t.Run(format.name, func(t *testing.T) {
			f := newFixture(t)
			key := filepath.Join(f.GatewayDir, tlsutil.ServerKeyFile)
			format.encrypt(t, key)

			findings, err := tlsutil.CheckFolder(f.GatewayDir, time.Now(), checkWarnWithin)
			if err != nil {
				t.Fatalf("CheckFolder() error: %v", err)
			}
			got := problems(findings)
			want := key + " is encrypted (" + format.wantType + "), but ssegw needs an unencrypted key"
			if !slices.ContainsFunc(got, func(finding tlsutil.Finding) bool {
				return finding.File == tlsutil.ServerKeyFile && finding.Severity == tlsutil.Error && strings.HasPrefix(finding.Message, want)
			}) {
				t.Errorf("CheckFolder() problems = %+v, want an error for %s starting %q", got, tlsutil.ServerKeyFile, want)
			}
			if len(got) != 1 {
				t.Errorf("CheckFolder() reported %d warnings and errors, want 1: %+v", len(got), got)
			}
		})
	}
}
