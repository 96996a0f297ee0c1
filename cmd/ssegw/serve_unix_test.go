//go:build unix

package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ssegw/ssegw/internal/ssetest"
)

// TestServeRejectsSpecialConfigFiles checks that serve exits at once with
// status 2, naming the file, for a FIFO, whose read would block until a
// writer came, and for /dev/zero, whose read never ends. A signal cannot
// stop serve during such a read, so serve must not start it.
func TestServeRejectsSpecialConfigFiles(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "ssegw.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	binary := ssetest.Binary(t, "./cmd/ssegw")
	tests := []struct {
		path, kind string
	}{
		{fifo, "a named pipe (FIFO)"},
		{"/dev/zero", "a device"},
	}
	for _, tt := range tests {
		p := ssetest.StartProcess(t, binary, nil, "serve", "--config", tt.path)
		if code := exitCode(t, p.Wait(t, 5*time.Second)); code != 2 {
			t.Errorf("serve --config %s exit status = %d, want 2", tt.path, code)
		}
		if want := tt.path + " is " + tt.kind + ", not a regular file"; !strings.Contains(p.Stderr(), want) {
			t.Errorf("serve --config %s stderr = %q, want it to contain %q", tt.path, p.Stderr(), want)
		}
	}
}
