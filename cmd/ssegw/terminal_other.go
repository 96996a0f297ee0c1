//go:build !linux && !windows

package main

import "os"

// isTerminal reports whether file is a character device, as a terminal is.
// NOTE: other character devices, such as /dev/null, pass too. The only
// effect is an input hint printed where nobody reads it.
func isTerminal(file *os.File) bool {
	info, err := file.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
