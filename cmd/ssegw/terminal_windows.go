package main

import (
	"os"

	"golang.org/x/sys/windows"
)

// isTerminal reports whether file is a console: only a console has a
// console mode to read.
func isTerminal(file *os.File) bool {
	return descriptorCheckSucceeds(file, func(fd uintptr) error {
		var mode uint32
		return windows.GetConsoleMode(windows.Handle(fd), &mode)
	})
}
