package tlsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ssegw/ssegw/internal/tempfile"
)

// writeFiles writes all files or, when it fails, none. It checks every
// path, creates the missing folders, writes each file to a temporary file
// in its folder, and renames those into place once all are written. A
// temporary file is created with mode 0600, so on Unix a key is never
// readable by others, and a symbolic link at a file's path is replaced,
// never followed. Without overwrite, an existing file stops it before it
// writes anything, with an error that wraps fs.ErrExist.
//
// On failure it removes what it made, and its error states what was
// written, if anything. Only a failed rename with overwrite can leave
// files written: the files renamed before it stay, in place of the old
// ones.
func writeFiles(files []pendingFile, overwrite bool) error {
	if err := checkPaths(files, overwrite); err != nil {
		return fmt.Errorf("%w\nnothing was written", err)
	}

	// Create the folders, and remember them to remove on failure.
	var created []string
	written := false
	defer func() {
		if !written {
			for _, dir := range slices.Backward(created) {
				os.Remove(dir) // fails, as intended, on a folder that another process filled meanwhile
			}
		}
	}()
	for _, dir := range folders(files) {
		madeFolders, err := makeFolder(dir)
		created = append(created, madeFolders...)
		if err != nil {
			return fmt.Errorf("creating folder %s: %w\nnothing was written", dir, err)
		}
	}

	// Write every file to a temporary file next to it.
	temporary := make([]string, 0, len(files))
	removeTemporary := func() {
		for _, path := range temporary {
			os.Remove(path)
		}
	}
	for _, f := range files {
		path, err := writeTemporary(f)
		if err != nil {
			removeTemporary()
			return fmt.Errorf("writing %s: %w\nnothing was written", f.path, err)
		}
		temporary = append(temporary, path)
	}

	// Move them into place.
	for i, f := range files {
		if err := os.Rename(temporary[i], f.path); err != nil {
			temporary = temporary[i:]
			removeTemporary()
			return renameError(files, i, overwrite, err)
		}
	}
	written = true
	return nil
}

// checkPaths checks, before anything is written, that each file's folder
// exists or can be created, and that no file's path is a folder or,
// without overwrite, an existing file.
func checkPaths(files []pendingFile, overwrite bool) error {
	var problems []error
	badFolders := map[string]bool{}
	for _, dir := range folders(files) {
		info, err := os.Stat(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			problems = append(problems, fmt.Errorf("folder %s: %w", dir, err))
			badFolders[dir] = true
		case !info.IsDir():
			problems = append(problems, fmt.Errorf("%s is a file, where a folder belongs; move it away or choose another folder", dir))
			badFolders[dir] = true
		}
	}
	for _, f := range files {
		if badFolders[filepath.Dir(f.path)] {
			continue
		}
		info, err := os.Lstat(f.path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			problems = append(problems, err)
		case info.IsDir():
			problems = append(problems, fmt.Errorf("%s is a folder, where a file belongs; move it away", f.path))
		case !overwrite:
			problems = append(problems, fmt.Errorf("%s: %w", f.path, fs.ErrExist))
		}
	}
	return errors.Join(problems...)
}

// folders returns the folders of files, each once, in order.
func folders(files []pendingFile) []string {
	var dirs []string
	for _, f := range files {
		if dir := filepath.Dir(f.path); !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	return dirs
}

// makeFolder creates dir and its missing parents, as os.MkdirAll does, and
// returns the folders it created, outermost first.
func makeFolder(dir string) ([]string, error) {
	var missing []string
	for path := dir; ; path = filepath.Dir(path) {
		if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
			break
		}
		missing = append(missing, path)
		if parent := filepath.Dir(path); parent == path {
			break
		}
	}
	var created []string
	for _, path := range slices.Backward(missing) {
		if err := os.Mkdir(path, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return created, err
		}
		created = append(created, path)
	}
	return created, nil
}

// writeTemporary writes f to a new temporary file in f's folder, with f's
// mode, and returns its path.
func writeTemporary(f pendingFile) (string, error) {
	path, err := tempfile.WriteBeside(f.path, f.data)
	if err != nil {
		return "", err
	}
	if f.mode != 0o600 {
		if err := os.Chmod(path, f.mode); err != nil {
			os.Remove(path)
			return "", err
		}
	}
	if err := keepOwner(path, f.path); err != nil {
		os.Remove(path)
		return "", err
	}
	return path, nil
}

// renameError returns the error for the rename of files[failed], after
// removing the files renamed before it when they were new.
func renameError(files []pendingFile, failed int, overwrite bool, err error) error {
	var done, notDone []string
	for _, f := range files[:failed] {
		done = append(done, f.path)
	}
	for _, f := range files[failed:] {
		notDone = append(notDone, f.path)
	}
	if !overwrite {
		// checkPaths found none of them, so these are all new.
		for _, path := range done {
			os.Remove(path)
		}
		return fmt.Errorf("moving %s into place: %w\nnothing was written", files[failed].path, err)
	}
	if len(done) == 0 {
		return fmt.Errorf("moving %s into place: %w\nnothing was written", files[failed].path, err)
	}
	return fmt.Errorf("moving %s into place: %w\nreplaced: %s\nnot written: %s",
		files[failed].path, err, strings.Join(done, ", "), strings.Join(notDone, ", "))
}
