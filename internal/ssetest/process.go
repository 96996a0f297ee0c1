package ssetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]string{} // program paths by build flags and package, such as "-race ./cmd/ssegw"
)

// Binary builds the main package pkg (such as "./cmd/ssegw", relative to
// the module root) once per test process and returns the program's path.
// Under go test -race the program is built with -race too, so that the
// processes a test starts are checked for data races as well. StartProcess
// fails the test when one of them reports a race.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	return build(t, pkg, RaceEnabled)
}

// BinaryWithoutRace is Binary without -race, for a test that measures the
// program's memory use. The race detector changes that a lot: the Go
// documentation's Data Race Detector article (section Runtime Overhead)
// gives "memory usage may increase by 5-10x".
func BinaryWithoutRace(t testing.TB, pkg string) string {
	t.Helper()
	return build(t, pkg, false)
}

// build builds pkg, with -race if race is set, once per test process.
func build(t testing.TB, pkg string, race bool) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	args := []string{"build"}
	if race {
		args = append(args, "-race")
	}
	key := strings.Join(append(args[1:], pkg), " ")
	if path, ok := built[key]; ok {
		return path
	}
	if buildDir == "" {
		dir, err := os.MkdirTemp("", "ssegw-test-bin-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = dir
	}
	name := filepath.Base(pkg)
	if race {
		name += "-race"
	}
	path := filepath.Join(buildDir, name)
	cmd := exec.Command("go", append(args, "-o", path, pkg)...)
	cmd.Dir = ModuleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, out)
	}
	built[key] = path
	return path
}

// ModuleRoot returns the folder that holds go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("finding the module: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// Process is a program started by a test. It is killed, by its PID, when
// the test ends.
type Process struct {
	Cmd    *exec.Cmd
	stdout SyncBuffer
	stderr SyncBuffer
	done   chan struct{}
	err    error // set before done is closed
}

// raceReport is the first line of each report that the race detector
// prints to stderr. The program goes on running after a report. Only a
// program that exits by itself shows the race in its exit status (66 by
// default), so StartProcess looks for this text instead.
const raceReport = "WARNING: DATA RACE"

// StartProcess runs path with args and env added to the test's own
// environment. When the test ends, the program is killed and the test
// fails if the program reported a data race on stderr.
func StartProcess(t testing.TB, path string, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{Cmd: exec.Command(path, args...), done: make(chan struct{})}
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout = &p.stdout
	p.Cmd.Stderr = &p.stderr
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		<-p.done
		if stderr := p.stderr.String(); strings.Contains(stderr, raceReport) {
			t.Errorf("%s %s reported a data race; stderr:\n%s", path, strings.Join(args, " "), stderr)
		}
	})
	return p
}

// WaitForLine waits until the program prints a line to stdout that starts
// with prefix, and returns the rest of that line.
func (p *Process) WaitForLine(t testing.TB, prefix string, timeout time.Duration) string {
	t.Helper()
	line := p.waitForLine(t, &p.stdout, "stdout", fmt.Sprintf("starting with %q", prefix), timeout, func(line string) bool {
		return strings.HasPrefix(line, prefix)
	})
	return strings.TrimPrefix(line, prefix)
}

// WaitForStderr waits until match accepts a line that the program prints
// to stderr, such as a record of its log, and returns that line. match is
// called with each complete line once, in order, starting with the lines
// printed before the call. what describes the awaited line in the test's
// failure message when the program exits or timeout passes first.
func (p *Process) WaitForStderr(t testing.TB, what string, timeout time.Duration, match func(line string) bool) string {
	t.Helper()
	return p.waitForLine(t, &p.stderr, "stderr", what, timeout, match)
}

// waitForLine waits for a line in output, the program's stdout or stderr
// buffer, that match accepts.
func (p *Process) waitForLine(t testing.TB, output *SyncBuffer, name, what string, timeout time.Duration, match func(line string) bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	line, err := output.waitForLine(ctx, p.done, match)
	switch {
	case errors.Is(err, errOutputEnded):
		t.Fatalf("%s exited (%v) before printing a %s line %s\nstdout:\n%s\nstderr:\n%s", p.Cmd.Path, p.err, name, what, p.stdout.String(), p.stderr.String())
	case err != nil:
		t.Fatalf("%s printed no %s line %s within %v\nstdout:\n%s\nstderr:\n%s", p.Cmd.Path, name, what, timeout, p.stdout.String(), p.stderr.String())
	}
	return line
}

// Wait waits for the program to exit, up to timeout, and returns its
// error; it fails the test when the program is still running.
func (p *Process) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v\nstderr:\n%s", p.Cmd.Path, timeout, p.stderr.String())
		return nil
	}
}

// Signal sends sig to the program.
func (p *Process) Signal(sig syscall.Signal) error {
	return p.Cmd.Process.Signal(sig)
}

// Kill ends the program with SIGKILL, if it still runs.
func (p *Process) Kill() {
	select {
	case <-p.done:
	default:
		_ = p.Cmd.Process.Kill()
	}
}

// Stdout and Stderr return what the program printed so far.
func (p *Process) Stdout() string { return p.stdout.String() }
func (p *Process) Stderr() string { return p.stderr.String() }

// StartExamplePlugin builds and runs the example plugin on a free loopback
// port with the given extra flags, and returns the process and its
// address.
func StartExamplePlugin(t testing.TB, args ...string) (*Process, string) {
	t.Helper()
	path := Binary(t, "./examples/plugin")
	p := StartProcess(t, path, nil, append([]string{"--address", "127.0.0.1:0"}, args...)...)
	return p, strings.TrimSpace(p.WaitForLine(t, "listening on ", 30*time.Second))
}

// RestartablePlugin is an example plugin process on a fixed loopback
// address, which a test kills with SIGKILL and starts again there.
type RestartablePlugin struct {
	// Name is the plugin's name in its capabilities and in the
	// x-example-plugin response header.
	Name    string
	Address string
	Process *Process
}

// StartRestartablePlugin runs the example plugin named name on a free
// loopback port, with args as further flags, such as --delay.
func StartRestartablePlugin(t testing.TB, name string, args ...string) *RestartablePlugin {
	t.Helper()
	process, address := StartExamplePlugin(t, append([]string{"--name", name}, args...)...)
	return &RestartablePlugin{Name: name, Address: address, Process: process}
}

// Kill ends the plugin with SIGKILL and waits until it has exited, so that
// its port is free again.
func (p *RestartablePlugin) Kill(t testing.TB) {
	t.Helper()
	p.Process.Kill()
	if err := p.Process.Wait(t, 10*time.Second); err == nil {
		t.Fatalf("plugin %s exited cleanly after SIGKILL, want it killed", p.Name)
	}
}

// Restart starts the plugin again at its address, with args as its
// further flags, and waits until it listens.
func (p *RestartablePlugin) Restart(t testing.TB, args ...string) {
	t.Helper()
	binary := Binary(t, "./examples/plugin")
	p.Process = StartProcess(t, binary, nil, append([]string{"--address", p.Address, "--name", p.Name}, args...)...)
	p.Process.WaitForLine(t, "listening on ", 30*time.Second)
}

// RemoveBinaries deletes what Binary built. Call it from TestMain after the
// tests ran.
func RemoveBinaries() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
		buildDir, built = "", map[string]string{}
	}
}
