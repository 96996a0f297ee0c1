package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether file is a terminal: only a terminal has
// terminal attributes to read.
func isTerminal(file *os.File) bool {
	return descriptorCheckSucceeds(file, func(fd uintptr) error {
		_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		return err
	})
}
