//go:build unix

package tlsutil

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRenewalKeepsOwner checks that files a renewal replaces keep their
// owner and group: renewed as root, the gateway's key at mode 0600 went to
// root, and a gateway running as its own user could neither reload it nor
// start again. New files belong to whoever writes them. Changing a file's
// owner needs root.
func TestRenewalKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing a file's owner needs root")
	}
	const uid, gid = 65534, 65534 // nobody, nogroup
	dir := t.TempDir()
	set, err := WriteSet(dir, []string{"localhost"}, SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(set.GatewayDir, ServerKeyFile)
	if err := os.Chown(key, uid, gid); err != nil {
		t.Fatal(err)
	}
	// The client key is a link, owned by root, to a file of nobody's, as
	// a secret store may lay it out: the file's owner counts.
	clientKey := filepath.Join(set.QlikDir, ClientKeyFile)
	target := filepath.Join(t.TempDir(), "client-key.pem")
	if err := os.Rename(clientKey, target); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(target, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, clientKey); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadAuthority(filepath.Join(set.CADir, RootCertFile), filepath.Join(set.CADir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}

	if _, err := WriteSet(dir, []string{"localhost", "gw.example"}, SetOptions{Overwrite: true, CA: ca}); err != nil {
		t.Fatal(err)
	}
	owner := func(path string) (uint32, uint32) {
		t.Helper()
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		stat := info.Sys().(*syscall.Stat_t)
		return stat.Uid, stat.Gid
	}
	if u, g := owner(key); u != uid || g != gid {
		t.Errorf("renewed %s belongs to %d:%d, want %d:%d as before", key, u, g, uid, gid)
	}
	if u, g := owner(clientKey); u != uid || g != gid {
		t.Errorf("renewed %s, which was a link to a file of %d:%d, belongs to %d:%d", clientKey, uid, gid, u, g)
	}
	cert := filepath.Join(set.GatewayDir, ServerCertFile)
	if u, g := owner(cert); u != 0 || g != 0 {
		t.Errorf("renewed %s belongs to %d:%d, want root's, as before", cert, u, g)
	}
}
