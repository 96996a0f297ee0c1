package main

import (
	"os"

	"golang.org/x/sys/windows"
)

// isTerminal reports whether file is a console: only a console has a
// console mode to read.
func isTerminal(file *os.File) bool {
	conn, err := file.SyscallConn()
	if err != nil {
		return false
	}
	var modeErr error
	if err := conn.Control(func(fd uintptr) {
		var mode uint32
		modeErr = windows.GetConsoleMode(windows.Handle(fd), &mode)
	}); err != nil {
		return false
	}
	return modeErr == nil
}
