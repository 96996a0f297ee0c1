//go:build !linux && !windows

package main

import "os"

// isTerminal reports whether file is a character device, which a terminal
// is. NOTE: so are other devices, such as /dev/null; those only get a hint
// printed that they do not need.
func isTerminal(file *os.File) bool {
	info, err := file.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
