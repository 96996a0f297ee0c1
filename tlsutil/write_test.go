package tlsutil_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssegw/ssegw/tlsutil"
)

// checkNoTemporaryFiles fails the test if a temporary file of writeFiles
// is left below dir.
func checkNoTemporaryFiles(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err == nil && strings.Contains(filepath.Base(path), ".tmp-") {
			t.Errorf("temporary file %s left behind", path)
		}
		return nil
	})
}

// TestWriteSetFileAtFolder checks that a file where a folder of the set
// belongs stops WriteSet before it writes any other folder.
func TestWriteSetFileAtFolder(t *testing.T) {
	dir := t.TempDir()
	blocking := filepath.Join(dir, tlsutil.CAFolder)
	writeFile(t, blocking, []byte("not a folder\n"))

	_, err := tlsutil.WriteSet(dir, []string{"localhost"}, tlsutil.SetOptions{Overwrite: true})
	if err == nil {
		t.Fatal("WriteSet() with a file at ca/ succeeded, want an error")
	}
	for _, want := range []string{blocking + " is a file, where a folder belongs", "nothing was written"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("WriteSet() error = %q, want it to contain %q", err, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%s holds %d entries after the failed WriteSet, want only ca", dir, len(entries))
	}
}

// TestWriteSetFolderAtFile checks that with Overwrite a folder where a key
// belongs stops WriteSet before it replaces any file, and that no
// temporary file stays.
func TestWriteSetFolderAtFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := tlsutil.WriteSet(dir, []string{"localhost"}, tlsutil.SetOptions{}); err != nil {
		t.Fatalf("first WriteSet() error: %v", err)
	}
	caKey := filepath.Join(dir, tlsutil.CAFolder, tlsutil.CAKeyFile)
	oldCAKey := readFile(t, caKey)
	clientKey := filepath.Join(dir, tlsutil.QlikFolder, tlsutil.ClientKeyFile)
	if err := os.Remove(clientKey); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(clientKey, 0o755); err != nil {
		t.Fatal(err)
	}

	_, err := tlsutil.WriteSet(dir, []string{"localhost"}, tlsutil.SetOptions{Overwrite: true})
	if err == nil || !strings.Contains(err.Error(), clientKey+" is a folder, where a file belongs") {
		t.Errorf("WriteSet() error = %v, want one naming the folder %s", err, clientKey)
	}
	if !bytes.Equal(readFile(t, caKey), oldCAKey) {
		t.Errorf("%s replaced by a failed WriteSet, want it unchanged", caKey)
	}
	checkNoTemporaryFiles(t, dir)
}

// TestWriteSetReplacesLink checks that with Overwrite a symbolic link at a
// key's path is replaced by the key, and the file it pointed to stays as it
// was.
func TestWriteSetReplacesLink(t *testing.T) {
	dir := t.TempDir()
	if _, err := tlsutil.WriteSet(dir, []string{"localhost"}, tlsutil.SetOptions{}); err != nil {
		t.Fatalf("first WriteSet() error: %v", err)
	}
	other := filepath.Join(t.TempDir(), "other.txt")
	writeFile(t, other, []byte("someone else's file\n"))
	key := filepath.Join(dir, tlsutil.GatewayFolder, tlsutil.ServerKeyFile)
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, key); err != nil {
		t.Skipf("cannot make a symbolic link here: %v", err)
	}

	if _, err := tlsutil.WriteSet(dir, []string{"localhost"}, tlsutil.SetOptions{Overwrite: true}); err != nil {
		t.Fatalf("WriteSet() with Overwrite error: %v", err)
	}
	if got := readFile(t, other); string(got) != "someone else's file\n" {
		t.Errorf("file behind the link = %q after WriteSet, want it unchanged", got)
	}
	info, err := os.Lstat(key)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Mode().IsRegular() || info.Mode().Perm() != 0o600 {
		t.Errorf("%s after WriteSet has mode %v, want a regular file -rw-------", key, info.Mode())
	}
	checkNoTemporaryFiles(t, dir)
}

// TestWriteSetRejectsBadOptions checks that hosts that are not host names
// and leaves that would outlive their root stop WriteSet before it writes
// anything.
func TestWriteSetRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name  string
		hosts []string
		opts  tlsutil.SetOptions
		want  string
	}{
		{"host with a port", []string{"localhost", "127.0.0.1:50051"}, tlsutil.SetOptions{}, `"127.0.0.1:50051": has a port`},
		{"leaves outliving the root", []string{"localhost"}, tlsutil.SetOptions{RootValidity: time.Hour, LeafValidity: 2 * time.Hour}, "would outlive the root"},
		{"default leaves outliving the root", []string{"localhost"}, tlsutil.SetOptions{RootValidity: time.Hour}, "would outlive the root"},
		{"negative validity", []string{"localhost"}, tlsutil.SetOptions{LeafValidity: -time.Hour}, "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := tlsutil.WriteSet(dir, tt.hosts, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("WriteSet() error = %v, want one containing %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("WriteSet() wrote %d entries, want none", len(entries))
			}
		})
	}
}

// TestWriteClientFolderCAExpiringWithinHour checks that a CA with less
// than an hour left is named as such, rather than with a suggested
// validity of 0s, which would mean the default of a year.
func TestWriteClientFolderCAExpiringWithinHour(t *testing.T) {
	set := t.TempDir()
	if _, err := tlsutil.WriteSet(set, []string{"localhost"}, tlsutil.SetOptions{RootValidity: 30 * time.Minute, LeafValidity: 10 * time.Minute}); err != nil {
		t.Fatalf("WriteSet() error: %v", err)
	}
	caDir := filepath.Join(set, tlsutil.CAFolder)
	_, err := tlsutil.WriteClientFolder(filepath.Join(t.TempDir(), "client"), caDir, "ssegw", tlsutil.SetOptions{LeafValidity: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "expires within the hour") {
		t.Errorf("WriteClientFolder() with a CA of 30 minutes = %v, want an error saying it expires within the hour", err)
	}
}

// TestWriteClientFolderRejectsBadOptions checks that an empty common name
// and a certificate that would outlive its CA are rejected with nothing
// written, and that one that expires before the CA is made.
func TestWriteClientFolderRejectsBadOptions(t *testing.T) {
	set := t.TempDir()
	if _, err := tlsutil.WriteSet(set, []string{"localhost"}, tlsutil.SetOptions{RootValidity: 48 * time.Hour, LeafValidity: 24 * time.Hour}); err != nil {
		t.Fatalf("WriteSet() error: %v", err)
	}
	caDir := filepath.Join(set, tlsutil.CAFolder)
	tests := []struct {
		name       string
		commonName string
		opts       tlsutil.SetOptions
		want       string
	}{
		{"empty common name", " ", tlsutil.SetOptions{LeafValidity: time.Hour}, "needs a common name"},
		{"outliving the CA", "ssegw", tlsutil.SetOptions{LeafValidity: 72 * time.Hour}, "would outlive the CA in " + caDir},
		{"default validity outliving the CA", "ssegw", tlsutil.SetOptions{}, "would outlive the CA in " + caDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "client")
			_, err := tlsutil.WriteClientFolder(dir, caDir, tt.commonName, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("WriteClientFolder() error = %v, want one containing %q", err, tt.want)
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Stat(%s) after a rejected WriteClientFolder = %v, want fs.ErrNotExist", dir, err)
			}
		})
	}

	dir := filepath.Join(t.TempDir(), "client")
	if _, err := tlsutil.WriteClientFolder(dir, caDir, "ssegw", tlsutil.SetOptions{LeafValidity: 24 * time.Hour}); err != nil {
		t.Fatalf("WriteClientFolder() within the CA's validity: %v", err)
	}
	cert := parseCert(t, readFile(t, filepath.Join(dir, tlsutil.ClientCertFile)))
	if cert.Subject.CommonName != "ssegw" {
		t.Errorf("client certificate common name = %q, want ssegw", cert.Subject.CommonName)
	}
}
