//go:build unix

package tlsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// keepOwner gives the new file at path the owner and group of the file it
// will replace, old, if there is one, following a link to it. A renewal
// run as root would otherwise leave the gateway's key owned by root at
// mode 0600, so that a gateway running as its own user could not reload
// it, nor start again. Only root may give a file away: for anyone else the
// new file stays theirs, as a file they write is.
func keepOwner(path, old string) error {
	info, err := os.Stat(old)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	stat, ok := info.Sys().(*syscall.Stat_t)
	if !ok || int(stat.Uid) == os.Geteuid() && int(stat.Gid) == os.Getegid() {
		return nil
	}
	err = os.Lchown(path, int(stat.Uid), int(stat.Gid))
	if errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("keeping the owner of %s (uid %d, gid %d): %w", old, stat.Uid, stat.Gid, err)
	}
	return nil
}
