// Package tempfile writes the temporary files that are renamed into place
// to replace a file in one step.
package tempfile

import (
	"os"
	"path/filepath"
)

// WriteBeside writes data to a new temporary file in the folder of path,
// named after it, syncs it to disk and returns its path. The file has mode
// 0600, less the umask. On failure it removes the file.
func WriteBeside(path string, data []byte) (string, error) {
	file, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	_, err = file.Write(data)
	if err == nil {
		err = file.Sync()
	}
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		os.Remove(file.Name())
		return "", err
	}
	return file.Name(), nil
}
