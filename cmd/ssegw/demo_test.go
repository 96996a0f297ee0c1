package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ssegw/ssegw/internal/ssetest"
)

// TestDemoStopsOnSignals checks that demo --keep-running stops with exit
// status 0 on SIGHUP, as from a closed terminal, and on SIGINT and
// SIGTERM, and removes its temporary folder with the private keys each
// time.
func TestDemoStopsOnSignals(t *testing.T) {
	binary := ssetest.Binary(t, "./cmd/ssegw")
	for _, signal := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM} {
		t.Run(signal.String(), func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			p := ssetest.StartProcess(t, binary, []string{"TMPDIR=" + tmp}, "demo", "--keep-running")
			p.WaitForLine(t, "The gateway keeps running", 30*time.Second)
			if folders, _ := filepath.Glob(filepath.Join(tmp, "ssegw-demo-*")); len(folders) != 1 {
				t.Fatalf("temporary folders of the running demo: %v, want one", folders)
			}
			if err := p.Signal(signal); err != nil {
				t.Fatal(err)
			}
			if code := exitCode(t, p.Wait(t, 10*time.Second)); code != 0 {
				t.Errorf("demo exit status after %v = %d, want 0; stderr:\n%s", signal, code, p.Stderr())
			}
			if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
				t.Errorf("%s holds %d entries after the demo stopped, want none", tmp, len(entries))
			}
		})
	}
}
