package ssetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain deletes the programs that Binary built.
func TestMain(m *testing.M) {
	code := m.Run()
	RemoveBinaries()
	os.Exit(code)
}

// cleanupTB is the test's testing.TB, but it keeps the cleanups and the
// errors that a helper registers, so that the test can run the cleanups
// itself and check what they report.
type cleanupTB struct {
	testing.TB
	cleanups []func()
	errors   []string
}

func (c *cleanupTB) Cleanup(f func()) { c.cleanups = append(c.cleanups, f) }

func (c *cleanupTB) Errorf(format string, args ...any) {
	c.errors = append(c.errors, fmt.Sprintf(format, args...))
}

// runCleanups runs the kept cleanups, last registered first, as the
// testing package does.
func (c *cleanupTB) runCleanups() {
	for i := len(c.cleanups) - 1; i >= 0; i-- {
		c.cleanups[i]()
	}
}

// TestStartProcessReportsDataRace checks that a process that printed a
// data race report fails the test when the test ends, and that one
// without a report does not.
func TestStartProcessReportsDataRace(t *testing.T) {
	racy := filepath.Join(t.TempDir(), "racy")
	build := exec.Command("go", "build", "-race", "-o", racy, "./internal/ssetest/testdata/racy")
	build.Dir = ModuleRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the racy program: %v\n%s", err, out)
	}

	tests := []struct {
		name      string
		path      string
		args      []string
		wantError bool
	}{
		{name: "race reported", path: racy, wantError: true},
		{name: "no race", path: "/bin/sh", args: []string{"-c", "echo no race here >&2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := &cleanupTB{TB: t}
			p := StartProcess(tb, tt.path, nil, tt.args...)
			p.Wait(t, time.Minute)
			tb.runCleanups()

			switch {
			case tt.wantError && len(tb.errors) != 1:
				t.Errorf("errors at the end of the test = %q, want one about the data race; stderr:\n%s", tb.errors, p.Stderr())
			case tt.wantError && !strings.Contains(tb.errors[0], "reported a data race"):
				t.Errorf("error at the end of the test = %q, want it to say that the program reported a data race", tb.errors[0])
			case !tt.wantError && len(tb.errors) != 0:
				t.Errorf("errors at the end of the test = %q, want none", tb.errors)
			}
		})
	}
}

// TestBinaryRaceMatchesTest checks that Binary builds with -race exactly
// when the test binary has it, so that go test -race also checks the
// programs that the tests start, and that BinaryWithoutRace never does.
func TestBinaryRaceMatchesTest(t *testing.T) {
	tests := []struct {
		name     string
		build    func(testing.TB, string) string
		wantRace bool
	}{
		{"Binary", Binary, RaceEnabled},
		{"BinaryWithoutRace", BinaryWithoutRace, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.build(t, "./examples/plugin")
			out, err := exec.Command("go", "version", "-m", path).Output()
			if err != nil {
				t.Fatalf("go version -m %s: %v", path, err)
			}
			if got := strings.Contains(string(out), "\tbuild\t-race=true\n"); got != tt.wantRace {
				t.Errorf("program built with -race = %v, want %v; go version -m:\n%s", got, tt.wantRace, out)
			}
		})
	}
}
