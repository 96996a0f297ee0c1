//go:build linux || windows

package main

import "os"

// descriptorCheckSucceeds runs check on the descriptor of file and reports
// whether it returned nil. It uses SyscallConn rather than Fd, which on
// Unix would switch the file to blocking mode.
func descriptorCheckSucceeds(file *os.File, check func(fd uintptr) error) bool {
	conn, err := file.SyscallConn()
	if err != nil {
		return false
	}
	var checkErr error
	if err := conn.Control(func(fd uintptr) { checkErr = check(fd) }); err != nil {
		return false
	}
	return checkErr == nil
}
