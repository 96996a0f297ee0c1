package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether file is a terminal: only a terminal has
// terminal attributes to read. It uses SyscallConn rather than Fd, which
// would switch the file to blocking mode.
func isTerminal(file *os.File) bool {
	conn, err := file.SyscallConn()
	if err != nil {
		return false
	}
	var termErr error
	if err := conn.Control(func(fd uintptr) { _, termErr = unix.IoctlGetTermios(int(fd), unix.TCGETS) }); err != nil {
		return false
	}
	return termErr == nil
}
