package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/internal/ssetest"
)

// openTerminal opens a new pseudo-terminal and returns its two ends: the
// terminal, which a program reads as from a keyboard, and the end that
// types into it.
func openTerminal(t *testing.T) (terminal, keyboard *os.File) {
	t.Helper()
	keyboard, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	t.Cleanup(func() { keyboard.Close() })
	fd := int(keyboard.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking the pseudo-terminal: %v", err)
	}
	number, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("numbering the pseudo-terminal: %v", err)
	}
	terminal, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", number), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { terminal.Close() })
	return terminal, keyboard
}

// TestCallHintsAtTerminal checks that call, reading its rows from a
// terminal, prints a hint to stderr, and that the rows typed there, ended
// with Ctrl-D, are sent, even when typing them took longer than --timeout.
func TestCallHintsAtTerminal(t *testing.T) {
	const timeout = time.Second
	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("p"))
	terminal, keyboard := openTerminal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout bytes.Buffer
	var stderr ssetest.SyncBuffer
	root := newRootCommand()
	root.SetArgs([]string{"call", plugin.Addr, "function", "SumOfRows", "--timeout", timeout.String()})
	root.SetIn(terminal)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	done := executeInBackground(ctx, root, &stderr)

	const hint = "Reading the rows from standard input as CSV, one row a line; end them with Ctrl-D, or give them with --arg instead.\n"
	stderr.WaitForLine(t, "with the hint", 10*time.Second, func(string) bool { return true })
	if got := stderr.String(); got != hint {
		t.Errorf("stderr = %q, want %q", got, hint)
	}
	// The typist's pause, longer than --timeout: the behaviour under test,
	// not a wait for an event.
	time.Sleep(timeout + 500*time.Millisecond)
	// Ctrl-D at the start of a line ends the input.
	if _, err := keyboard.Write([]byte("1,2\n\x04")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("call error = %v; stderr:\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatal("call still runs 10s after it started")
	}
	if !strings.Contains(stdout.String(), "Request: 1 row in 1 bundle") {
		t.Errorf("stdout = %q, want the typed row sent", stdout.String())
	}
}
