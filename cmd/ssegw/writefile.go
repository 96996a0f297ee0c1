package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ssegw/ssegw/internal/tempfile"
)

// writeConfigFile writes data to path. Without force, it fails with an
// error that wraps fs.ErrExist when path exists. A regular file is
// replaced in one step, by renaming a complete temporary file over it, so
// a failed write leaves the old file as it was. A symbolic link at path
// keeps pointing to the new file. A path that exists and is not a regular
// file, such as /dev/stdout, is written in place.
func writeConfigFile(path string, data []byte, force bool) error {
	info, err := os.Stat(path)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if exists && !force {
		return fmt.Errorf("%s: %w", path, fs.ErrExist)
	}
	if exists && !info.Mode().IsRegular() {
		return writeInPlace(path, data)
	}

	target, mode := path, fs.FileMode(0o644)
	if exists {
		if target, err = filepath.EvalSymlinks(path); err != nil {
			return err
		}
		mode = info.Mode().Perm()
	} else {
		// A symbolic link to a missing file exists as a name: with force,
		// the file it names is written.
		if link, err := os.Lstat(path); err == nil && link.Mode()&fs.ModeSymlink != 0 {
			if !force {
				return fmt.Errorf("%s: %w", path, fs.ErrExist)
			}
			if target, err = os.Readlink(path); err != nil {
				return err
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(path), target)
			}
		}
		// Claim the name, so that a file made meanwhile is never replaced
		// without force. Its mode is 0644 less the umask, as for any new
		// file.
		placeholder, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		placeholder.Close()
		if info, err := os.Stat(target); err == nil {
			mode = info.Mode().Perm()
		}
	}
	if err := replaceFile(target, data, mode); err != nil {
		if !exists {
			os.Remove(target)
		}
		return err
	}
	return nil
}

// replaceFile writes data with mode to a temporary file in the folder of
// path, and renames it to path.
func replaceFile(path string, data []byte, mode fs.FileMode) error {
	temporary, err := tempfile.WriteBeside(path, data)
	if err != nil {
		return err
	}
	err = os.Chmod(temporary, mode)
	if err == nil {
		err = os.Rename(temporary, path)
	}
	if err != nil {
		os.Remove(temporary)
	}
	return err
}

// writeInPlace writes data to the existing file at path, such as a device
// or a pipe, which cannot be replaced by a rename.
func writeInPlace(path string, data []byte) error {
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = file.Write(data)
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	return err
}
