package tlsutil

import (
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newGatewayFolder writes a set as certs init does, and returns its CA
// and the gateway folder's files.
func newGatewayFolder(t *testing.T) (*Authority, ServerFiles) {
	t.Helper()
	set, err := WriteSet(t.TempDir(), []string{"localhost"}, SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := LoadAuthority(filepath.Join(set.CADir, RootCertFile), filepath.Join(set.CADir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return ca, ServerFilesInDir(set.GatewayDir, "", "", "")
}

// TestFailedReloadArmsNoRetry checks that files that fail to load cancel
// the retry that files not valid yet had armed. The retry kept the time
// of those files, which had passed by then, and ran again at once, in a
// loop that logged an error each time.
func TestFailedReloadArmsNoRetry(t *testing.T) {
	ca, files := newGatewayFolder(t)
	source, err := NewServerSource("test listener", files)
	if err != nil {
		t.Fatal(err)
	}
	watcher := NewWatcher(slog.New(slog.DiscardHandler))
	watcher.Add(source)
	t.Cleanup(watcher.stopRetry)
	write := func(path string, data []byte) {
		t.Helper()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// Files valid from tomorrow: rejected, with a retry for then.
	now := time.Now()
	cert, key, err := ca.Issue(LeafRequest{
		CommonName: "sse_server", Hosts: []string{"localhost"}, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	write(files.CertFile, cert)
	write(files.KeyFile, key)
	watcher.Reload()
	if source.validFrom.Load() == 0 || watcher.retry == nil {
		t.Fatal("no retry armed for files valid from tomorrow")
	}

	// A key that does not fit: nothing to retry until the files change.
	_, otherKey, err := ca.Issue(LeafRequest{CommonName: "other", Hosts: []string{"localhost"}, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatal(err)
	}
	write(files.KeyFile, otherKey)
	watcher.Reload()
	if from := source.validFrom.Load(); from != 0 {
		t.Errorf("validFrom = %v after files that fail to load, want 0", time.Unix(0, from))
	}
	if watcher.retry != nil {
		t.Error("a retry is armed after files that fail to load, want none")
	}
}

// TestReloadWarnsStillUnusable checks that files that replace expired ones
// with another expired certificate are loaded, since nothing worked
// before, but with a warning and not only "certificates reloaded": an
// admin who copied the wrong file would otherwise take the renewal as
// done.
func TestReloadWarnsStillUnusable(t *testing.T) {
	ca, files := newGatewayFolder(t)
	writeExpired := func(name string) {
		t.Helper()
		cert, key, err := ca.Issue(LeafRequest{
			CommonName: name, Hosts: []string{"localhost"}, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		})
		if err != nil {
			t.Fatal(err)
		}
		for path, data := range map[string][]byte{files.CertFile: cert, files.KeyFile: key} {
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeExpired("first")
	source, err := NewServerSource("test listener", files)
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	watcher := NewWatcher(slog.New(slog.NewTextHandler(&logs, nil)))
	watcher.Add(source)

	writeExpired("second")
	watcher.reloadAndReport("test reload")
	for _, want := range []string{"every handshake still fails with them", `certificate \"second\" expired on`, "reloaded=1 failed=0"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log = %q, want it to contain %q", logs.String(), want)
		}
	}
}
