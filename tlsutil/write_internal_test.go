package tlsutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRenameErrorReportsWhatWasWritten checks renameError for a rename
// that fails half-way. Without overwrite it removes the files already
// renamed, and its error ends with "nothing was written". With overwrite
// it keeps them, and its error lists what was replaced and not written.
func TestRenameErrorReportsWhatWasWritten(t *testing.T) {
	dir := t.TempDir()
	files := []pendingFile{
		{path: filepath.Join(dir, "a.pem")},
		{path: filepath.Join(dir, "b.pem")},
		{path: filepath.Join(dir, "c.pem")},
	}
	renameFailed := errors.New("rename failed")

	for _, f := range files[:1] {
		if err := os.WriteFile(f.path, []byte("new\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	err := renameError(files, 1, false, renameFailed)
	if !errors.Is(err, renameFailed) || !strings.HasSuffix(err.Error(), "\nnothing was written") {
		t.Errorf("renameError without overwrite = %q, want the cause and nothing was written", err)
	}
	if _, statErr := os.Stat(files[0].path); statErr == nil {
		t.Errorf("%s still exists after renameError without overwrite, want it removed", files[0].path)
	}

	for _, f := range files[:2] {
		if err := os.WriteFile(f.path, []byte("new\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	err = renameError(files, 2, true, renameFailed)
	want := "\nreplaced: " + files[0].path + ", " + files[1].path + "\nnot written: " + files[2].path
	if !errors.Is(err, renameFailed) || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("renameError with overwrite = %q, want it to end with %q", err, want)
	}
	for _, f := range files[:2] {
		if _, statErr := os.Stat(f.path); statErr != nil {
			t.Errorf("%s after renameError with overwrite: %v, want it kept", f.path, statErr)
		}
	}
}
