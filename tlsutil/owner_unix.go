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
// will replace, old, if there is one. A renewal run as root would
// otherwise leave the gateway's key owned by root at mode 0600, so that a
// gateway running as its own user could not reload it, nor start again.
func keepOwner(path, old string) error {
	info, err := os.Lstat(old)
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
	if err := os.Lchown(path, int(stat.Uid), int(stat.Gid)); err != nil {
		return fmt.Errorf("keeping the owner of %s (uid %d, gid %d), so that the process that reads it still can: %w", old, stat.Uid, stat.Gid, err)
	}
	return nil
}
