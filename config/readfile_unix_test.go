//go:build unix

package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ssegw/ssegw/config"
)

// TestLoadRejectsSpecialFiles checks that Load returns at once for a FIFO,
// which would block the read until a writer came, and for /dev/zero,
// which never ends.
func TestLoadRejectsSpecialFiles(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "ssegw.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		kind string
	}{
		{fifo, "a named pipe (FIFO)"},
		{"/dev/zero", "a device"},
	}
	for _, test := range tests {
		done := make(chan error, 1)
		go func() {
			_, err := config.Load(test.path, nil)
			done <- err
		}()
		select {
		case err := <-done:
			want := test.path + " is " + test.kind + ", not a regular file"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Load(%q) = %v, want an error containing %q", test.path, err, want)
			}
		case <-time.After(5 * time.Second):
			// Let the blocked read end with the test.
			if writer, err := os.OpenFile(test.path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				writer.Close()
			}
			t.Errorf("Load(%q) still running after 5s, want an error at once", test.path)
		}
	}
}
