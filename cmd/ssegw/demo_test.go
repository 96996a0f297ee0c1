package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
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

// TestDemoOutputClosedEarly checks that a reader of the demo's output that
// goes away after the first line, as `ssegw demo | head -1` does, neither
// kills the demo by SIGPIPE nor leaves its temporary folder, with the
// private keys, behind.
func TestDemoOutputClosedEarly(t *testing.T) {
	binary := ssetest.Binary(t, "./cmd/ssegw")
	tmp := t.TempDir()
	cmd := exec.Command(binary, "demo")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	output, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	if _, err := bufio.NewReader(output).ReadString('\n'); err != nil {
		t.Errorf("reading the demo's first line: %v", err)
	}
	output.Close()
	go func() { done <- cmd.Wait() }()

	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			if status, ok := exit.Sys().(syscall.WaitStatus); ok && status.Signaled() {
				t.Errorf("demo ended by signal %v once its output closed, want it to run to its end", status.Signal())
			}
		}
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatal("demo still running a minute after its output closed")
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("%s holds %d entries after the demo ended, want none", tmp, len(entries))
	}
}
