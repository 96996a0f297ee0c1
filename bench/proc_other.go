//go:build !linux

package bench

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// childProcessAttributes returns nil: process groups and parent-death
// signals are Linux features here.
func childProcessAttributes() *syscall.SysProcAttr {
	return nil
}

// terminate ends a process; without SIGTERM it is killed at once.
func terminate(process *os.Process) error {
	return process.Kill()
}

// killGroup does nothing where children have no process group of their
// own.
func killGroup(int) {}

// residentBytes reports that resident memory is read from /proc, which
// only Linux has.
func residentBytes(int) (int64, error) {
	return 0, errors.ErrUnsupported
}

// cpuTime reports that CPU time is read from /proc, which only Linux has.
func cpuTime(int) (time.Duration, error) {
	return 0, errors.ErrUnsupported
}

// descendants returns nil: child processes are listed from /proc.
func descendants(int) []int {
	return nil
}
